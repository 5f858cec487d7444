//! Plugin rollouts. An admin uploads a build as its vendor shipped it (component and detached
//! signature) and rolls it out to kiosks chosen by region, tag or id: the canaries first, then
//! the rest once every canary reports it running. A kiosk that fails to verify, compile or
//! self-check it rolls the whole rollout back: every kiosk running it goes back to the build it
//! ran before. The server is not trusted for code: it only carries builds and the root's
//! endorsements, and each kiosk checks them against its own trust store.
//!
//! A kiosk learns what to run from its heartbeat's reply ([`desired_sql`]) and reports each step
//! in its next heartbeats ([`record`]), which also moves the rollout on.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use deadpool_postgres::GenericClient;
use selfvend_fleet_wire::{
    MAX_PLUGIN_BYTES, PluginDownload, PluginPart, RolloutStep, Step, is_sha256,
};
use sha2::{Digest, Sha256};

use crate::error::{ApiError, json_body};
use crate::{Fleet, auth};

/// What a detached signature's key line starts with (`selfvend plugin sign` writes it).
const SIGNATURE_TAG: &str = "selfvend-ed25519-signature ";
/// What a root's endorsement's statement line starts with (`selfvend trust endorse`).
const ENDORSEMENT_TAG: &str = "selfvend-vendor-endorsement ";
/// A WebAssembly component's first eight bytes: the magic and the component layer's version.
const COMPONENT_PREAMBLE: [u8; 8] = [0x00, 0x61, 0x73, 0x6d, 0x0d, 0x00, 0x01, 0x00];

/// Stores a build; returns its SHA-256. Uploading the same build again changes nothing.
pub async fn upload(
    fleet: &Fleet,
    file_name: &str,
    component: &[u8],
    signature: &str,
    by: &str,
) -> Result<String, ApiError> {
    if component.len() > MAX_PLUGIN_BYTES {
        return Err(ApiError::BadRequest(format!(
            "{file_name}: {} bytes, more than a kiosk downloads ({MAX_PLUGIN_BYTES})",
            component.len()
        )));
    }
    if !component.starts_with(&COMPONENT_PREAMBLE) {
        return Err(ApiError::BadRequest(format!(
            "{file_name}: not a WebAssembly component (a plugin is a component built for \
             wasm32-wasip2)"
        )));
    }
    if signature.len() > 4096 || !signature.lines().any(|l| l.starts_with(SIGNATURE_TAG)) {
        return Err(ApiError::BadRequest(format!(
            "{file_name}.sig: not a selfvend signature (no `{}` line)",
            SIGNATURE_TAG.trim_end()
        )));
    }
    let sha256 = hex::encode(Sha256::digest(component));
    fleet
        .db
        .get()
        .await?
        .execute(
            "INSERT INTO plugin_builds (sha256, component, signature, file_name, uploaded_by)
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (sha256) DO NOTHING",
            &[&sha256, &component, &signature, &file_name, &by],
        )
        .await?;
    Ok(sha256)
}

/// Which kiosks a rollout goes to.
#[derive(Debug, Clone, Default)]
pub struct Targets {
    pub region: Option<String>,
    pub tag: Option<String>,
    /// Kiosks by id (with or without a region or tag).
    pub kiosks: Vec<String>,
    /// The canaries, by id; each must be one of the targets.
    pub canaries: Vec<String>,
    /// Or this many canaries, the first targets by id.
    pub canary_count: usize,
}

/// Starts rolling build `sha256` of `plugin` out to `targets`; returns the rollout's id.
pub async fn create(
    fleet: &Fleet,
    plugin: &str,
    sha256: &str,
    targets: &Targets,
    by: &str,
) -> Result<i64, ApiError> {
    let bad = |why: String| Err(ApiError::BadRequest(why));
    if plugin.is_empty() || plugin.len() > 64 || plugin.chars().any(char::is_control) {
        return bad(format!(
            "plugin name {plugin:?}: 1 to 64 printable characters"
        ));
    }
    if !is_sha256(sha256) {
        return bad(format!("build {sha256:?}: not a SHA-256 in hex"));
    }
    if targets.region.is_none() && targets.tag.is_none() && targets.kiosks.is_empty() {
        return bad("no kiosks chosen: name a region, a tag or kiosks".into());
    }
    let mut client = fleet.db.get().await?;
    let tx = client.transaction().await?;
    if tx
        .query_opt("SELECT 1 FROM plugin_builds WHERE sha256 = $1", &[&sha256])
        .await?
        .is_none()
    {
        return bad(format!("no uploaded build has SHA-256 {sha256}"));
    }
    let chosen: Vec<String> = tx
        .query(
            "SELECT id FROM kiosks
             WHERE revoked_at IS NULL
               AND ($1::text IS NULL OR region = $1)
               AND ($2::text IS NULL OR $2 = ANY(tags))
               AND (cardinality($3::text[]) = 0 OR id = ANY($3))
             ORDER BY id",
            &[&targets.region, &targets.tag, &targets.kiosks],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    if chosen.is_empty() {
        return bad("no paired kiosk matches the region, tag and kiosks chosen".into());
    }
    if let Some(missing) = targets.kiosks.iter().find(|k| !chosen.contains(k)) {
        return bad(format!(
            "kiosk {missing} is not paired, is revoked, or is outside the region or tag"
        ));
    }
    let canaries: Vec<String> = if targets.canaries.is_empty() {
        chosen
            .iter()
            .take(targets.canary_count.max(1))
            .cloned()
            .collect()
    } else {
        if let Some(stray) = targets.canaries.iter().find(|c| !chosen.contains(c)) {
            return bad(format!("canary {stray} is not one of the rollout's kiosks"));
        }
        targets.canaries.clone()
    };
    // One past its canaries gives way: those of its kiosks not on it yet take the new one.
    let superseded: Vec<i64> = tx
        .query(
            "UPDATE rollouts SET state = 'superseded', why = 'superseded by the next rollout'
             WHERE plugin = $1 AND state = 'fleet' RETURNING id",
            &[&plugin],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let id: i64 = match tx
        .query_one(
            "INSERT INTO rollouts (plugin, sha256, state, created_by)
             VALUES ($1, $2, 'canary', $3) RETURNING id",
            &[&plugin, &sha256, &by],
        )
        .await
    {
        Ok(row) => row.get(0),
        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) => {
            return Err(ApiError::Conflict(format!(
                "a rollout of {plugin} is in its canaries or paused: roll it back, or resume \
                 it until its canaries run it, first"
            )));
        }
        Err(e) => return Err(e.into()),
    };
    tx.execute(
        "INSERT INTO rollout_kiosks (rollout_id, kiosk_id, canary)
         SELECT $1, k, k = ANY($3) FROM unnest($2::text[]) AS k",
        &[&id, &chosen, &canaries],
    )
    .await?;
    event(
        &tx,
        id,
        &format!(
            "created: {} kiosks, canaries {}",
            chosen.len(),
            canaries.join(", ")
        ),
        by,
    )
    .await?;
    for old in superseded {
        event(&tx, old, &format!("superseded by rollout {id}"), by).await?;
    }
    tx.commit().await?;
    Ok(id)
}

async fn event(db: &impl GenericClient, id: i64, what: &str, by: &str) -> Result<(), ApiError> {
    db.execute(
        "INSERT INTO rollout_events (rollout_id, what, by_whom) VALUES ($1, $2, $3)",
        &[&id, &what, &by],
    )
    .await?;
    Ok(())
}

/// What an admin does to a rollout under way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// No kiosk starts on it; those running it keep it.
    Pause,
    Resume,
    /// Every kiosk running it goes back to the build before.
    RollBack,
}

/// Applies `action` to rollout `id`, compare-and-set on the states it leaves.
pub async fn act(fleet: &Fleet, id: i64, action: Action, by: &str) -> Result<(), ApiError> {
    let mut client = fleet.db.get().await?;
    let client = client.transaction().await?;
    let (sql, what) = match action {
        Action::Pause => (
            "UPDATE rollouts SET paused_in = state, state = 'paused'
             WHERE id = $1 AND state IN ('canary', 'fleet')",
            "paused",
        ),
        Action::Resume => (
            "UPDATE rollouts SET state = paused_in, paused_in = NULL
             WHERE id = $1 AND state = 'paused'",
            "resumed",
        ),
        Action::RollBack => (
            "UPDATE rollouts SET state = 'rolled-back', paused_in = NULL,
                    why = 'rolled back by ' || $2
             WHERE id = $1 AND state IN ('canary', 'fleet', 'complete', 'paused', 'superseded')",
            "rolled back",
        ),
    };
    let params: &[&(dyn tokio_postgres::types::ToSql + Sync)] = match action {
        Action::RollBack => &[&id, &by],
        _ => &[&id],
    };
    if client.execute(sql, params).await? != 1 {
        let state: Option<String> = client
            .query_opt("SELECT state FROM rollouts WHERE id = $1", &[&id])
            .await?
            .map(|r| r.get(0));
        return Err(match state {
            None => ApiError::BadRequest(format!("there is no rollout {id}")),
            Some(state) => ApiError::Conflict(format!("rollout {id} is {state}: not {what}")),
        });
    }
    event(&client, id, what, by).await?;
    // What the kiosks reported while it was paused moves it on now.
    if action == Action::Resume {
        advance(&client, id).await?;
    }
    client.commit().await?;
    Ok(())
}

/// A rollout and where each of its kiosks is.
#[derive(Debug, Clone)]
pub struct Status {
    pub id: i64,
    pub plugin: String,
    pub sha256: String,
    pub file_name: String,
    pub state: String,
    pub why: String,
    pub created_by: String,
    pub created_at: String,
    pub kiosks: Vec<KioskStep>,
}

#[derive(Debug, Clone)]
pub struct KioskStep {
    pub kiosk: String,
    pub terminal_id: String,
    pub canary: bool,
    /// The last step reported; none before the kiosk heard of the rollout.
    pub step: Option<String>,
    pub detail: String,
}

impl Status {
    /// Kiosks that run the build now.
    pub fn active(&self) -> usize {
        self.kiosks
            .iter()
            .filter(|k| k.step.as_deref() == Some(Step::Active.as_str()))
            .count()
    }
}

/// Rollouts, the newest first; only `id` if given.
pub async fn status(fleet: &Fleet, id: Option<i64>) -> Result<Vec<Status>, ApiError> {
    let client = fleet.db.get().await?;
    let rows = client
        .query(
            "SELECT r.id, r.plugin, r.sha256, b.file_name, r.state, r.why, r.created_by,
                    to_char(r.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI')
             FROM rollouts r JOIN plugin_builds b USING (sha256)
             WHERE $1::bigint IS NULL OR r.id = $1
             ORDER BY r.id DESC LIMIT 100",
            &[&id],
        )
        .await?;
    let mut out = Vec::new();
    for r in rows {
        let id: i64 = r.get(0);
        let kiosks = client
            .query(
                "SELECT rk.kiosk_id, k.terminal_id, rk.canary, rk.step, rk.detail
                 FROM rollout_kiosks rk JOIN kiosks k ON k.id = rk.kiosk_id
                 WHERE rk.rollout_id = $1 ORDER BY NOT rk.canary, rk.kiosk_id",
                &[&id],
            )
            .await?
            .iter()
            .map(|k| KioskStep {
                kiosk: k.get(0),
                terminal_id: k.get(1),
                canary: k.get(2),
                step: k.get(3),
                detail: k.get(4),
            })
            .collect();
        out.push(Status {
            id,
            plugin: r.get(1),
            sha256: r.get(2),
            file_name: r.get(3),
            state: r.get(4),
            why: r.get(5),
            created_by: r.get(6),
            created_at: r.get(7),
            kiosks,
        });
    }
    Ok(out)
}

/// What `kiosk` ($1) is to run, as the JSON of a `Desired`: for each plugin, the newest
/// rollout it is part of, unless that one has nothing left for it to do; every rolled-back
/// rollout the kiosk has not yet reported rolled back (so one rolled back after a newer one
/// began still reaches it); the newest 32 endorsements (a kiosk keeps those it took); and
/// `{commands}`, the kiosk's pending remote commands (`commands::pending_sql`).
pub const DESIRED_SQL: &str = "json_build_object(
    'commands', {commands},
    'config', {config},
    'plugins', (SELECT coalesce(json_agg(json_build_object('rollout', d.id, 'name', d.plugin,
                    'sha256', d.sha256, 'roll_back', d.state = 'rolled-back')
                    ORDER BY d.id), '[]'::json)
                FROM (SELECT r.id, r.plugin, r.sha256, r.state, rk.canary, rk.step,
                             r.id = max(r.id) OVER (PARTITION BY r.plugin) AS newest
                      FROM rollout_kiosks rk JOIN rollouts r ON r.id = rk.rollout_id
                      WHERE rk.kiosk_id = $1) d
                WHERE (d.newest AND d.state = 'canary' AND d.canary
                       AND d.step IS DISTINCT FROM 'active')
                   OR (d.newest AND d.state IN ('fleet', 'complete')
                       AND d.step IS DISTINCT FROM 'active')
                   OR (d.state = 'rolled-back' AND d.step IS NOT NULL
                       AND d.step NOT IN ('rolled-back', 'failed'))),
    'endorsements', (SELECT coalesce(json_agg(statement ORDER BY id), '[]'::json)
                     FROM (SELECT id, statement FROM endorsements
                           ORDER BY id DESC LIMIT 32) e))";

/// Records the steps a kiosk reported and moves each rollout on: a failure anywhere rolls it
/// back; every canary running it opens it to the rest; every kiosk running it completes it.
/// Each rollout's row is locked first, so kiosks reporting at once see each other's steps.
pub async fn record(fleet: &Fleet, kiosk: &str, steps: &[RolloutStep]) -> Result<(), ApiError> {
    let mut client = fleet.db.get().await?;
    for s in steps {
        let tx = client.transaction().await?;
        let locked = tx
            .query_opt(
                "SELECT 1 FROM rollouts WHERE id = $1 AND plugin = $2 AND sha256 = $3 FOR UPDATE",
                &[&s.rollout, &s.name, &s.sha256],
            )
            .await?;
        if locked.is_none() {
            continue;
        }
        let changed = tx
            .execute(
                "UPDATE rollout_kiosks SET step = $3, detail = $4, step_at = now()
                 WHERE rollout_id = $1 AND kiosk_id = $2
                   AND (step IS DISTINCT FROM $3 OR detail IS DISTINCT FROM $4)",
                &[&s.rollout, &kiosk, &s.step.as_str(), &s.detail],
            )
            .await?;
        if changed == 0 {
            continue;
        }
        match s.step {
            Step::Failed => {
                let why = format!("kiosk {kiosk}: {}", s.detail);
                let rolled = tx
                    .execute(
                        "UPDATE rollouts SET state = 'rolled-back', paused_in = NULL, why = $2
                         WHERE id = $1 AND state IN ('canary', 'fleet', 'paused')",
                        &[&s.rollout, &why],
                    )
                    .await?;
                if rolled == 1 {
                    tracing::warn!("rollout {} rolled back: {why}", s.rollout);
                    event(&tx, s.rollout, &format!("rolled back: {why}"), "the fleet").await?;
                }
            }
            Step::Active => advance(&tx, s.rollout).await?,
            _ => {}
        }
        tx.commit().await?;
    }
    Ok(())
}

/// Opens rollout `id` to the rest once every canary runs it, and completes it once every kiosk
/// does. The caller holds the rollout's row.
async fn advance(tx: &impl GenericClient, id: i64) -> Result<(), ApiError> {
    let opened = tx
        .execute(
            "UPDATE rollouts SET state = 'fleet' WHERE id = $1 AND state = 'canary'
               AND NOT EXISTS (SELECT 1 FROM rollout_kiosks
                               WHERE rollout_id = $1 AND canary
                                 AND step IS DISTINCT FROM 'active')",
            &[&id],
        )
        .await?;
    if opened == 1 {
        event(
            tx,
            id,
            "every canary runs it: opened to the rest",
            "the fleet",
        )
        .await?;
    }
    let done = tx
        .execute(
            "UPDATE rollouts SET state = 'complete' WHERE id = $1 AND state = 'fleet'
               AND NOT EXISTS (SELECT 1 FROM rollout_kiosks
                               WHERE rollout_id = $1 AND step IS DISTINCT FROM 'active')",
            &[&id],
        )
        .await?;
    if done == 1 {
        event(tx, id, "every kiosk runs it: complete", "the fleet").await?;
    }
    Ok(())
}

/// `POST /api/plugin`: a part of a build, for a kiosk that one of its rollouts goes to.
pub async fn download(
    State(fleet): State<Fleet>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Vec<u8>, ApiError> {
    let caller = auth::kiosk(&fleet, &headers, "POST", "/api/plugin", &body).await?;
    let wanted: PluginDownload = json_body(&body)?;
    if !is_sha256(&wanted.sha256) {
        return Err(ApiError::BadRequest("sha256: not a SHA-256 in hex".into()));
    }
    let client = fleet.db.get().await?;
    // In order like every other request, so a captured one cannot be sent again.
    auth::claim(&fleet, &client, &caller).await?;
    let component = wanted.part == PluginPart::Component;
    let row = client
        .query_opt(
            "SELECT CASE WHEN $4 THEN b.component END, b.signature FROM plugin_builds b
             WHERE b.sha256 = $1
               AND EXISTS (SELECT 1 FROM rollout_kiosks rk JOIN rollouts r ON r.id = rk.rollout_id
                           WHERE rk.kiosk_id = $2 AND r.sha256 = $1)
               AND EXISTS (SELECT 1 FROM kiosks
                           WHERE id = $2 AND revoked_at IS NULL AND public_key = $3)",
            &[
                &wanted.sha256,
                &caller.kiosk,
                &caller.public_key,
                &component,
            ],
        )
        .await?;
    let Some(row) = row else {
        return Err(ApiError::Forbidden(format!(
            "kiosk {}: no rollout of build {} goes to it",
            caller.kiosk, wanted.sha256
        )));
    };
    Ok(match wanted.part {
        PluginPart::Component => row.get::<_, Vec<u8>>(0),
        PluginPart::Signature => row.get::<_, String>(1).into_bytes(),
    })
}

/// Adds a root's endorsement for the fleet to carry to every kiosk. Only its shape is checked
/// here: whether a root the kiosk trusts signed it is each kiosk's own check.
pub async fn add_endorsement(fleet: &Fleet, statement: &str, by: &str) -> Result<(), ApiError> {
    if statement.len() > 4096 || !statement.lines().any(|l| l.starts_with(ENDORSEMENT_TAG)) {
        return Err(ApiError::BadRequest(format!(
            "not an endorsement (no `{}` line): make one with `selfvend trust endorse`",
            ENDORSEMENT_TAG.trim_end()
        )));
    }
    fleet
        .db
        .get()
        .await?
        .execute(
            "INSERT INTO endorsements (statement, added_by) VALUES ($1, $2)
             ON CONFLICT (statement) DO NOTHING",
            &[&statement, &by],
        )
        .await?;
    Ok(())
}

/// Sets a kiosk's tags (replacing those it had).
pub async fn tag(fleet: &Fleet, kiosk: &str, tags: &[String]) -> Result<(), ApiError> {
    if let Some(bad) = tags
        .iter()
        .find(|t| t.is_empty() || t.len() > 64 || t.chars().any(|c| c.is_control() || c == ','))
    {
        return Err(ApiError::BadRequest(format!(
            "tag {bad:?}: 1 to 64 characters, no commas"
        )));
    }
    let tagged = fleet
        .db
        .get()
        .await?
        .execute(
            "UPDATE kiosks SET tags = $2 WHERE id = $1",
            &[&kiosk, &tags],
        )
        .await?;
    if tagged != 1 {
        return Err(ApiError::BadRequest(format!("no paired kiosk {kiosk}")));
    }
    Ok(())
}
