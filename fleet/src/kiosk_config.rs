//! The fleet's part of kiosks' configs: fleet-wide defaults and per-kiosk overrides, each
//! change a new version. A document is checked with the kiosk's own code
//! ([`selfvend_config::Overlay`]) before it is stored, alone and laid under or over every
//! document it meets, so a value a kiosk would refuse is refused here with its file, line, key
//! and reason. A kiosk is sent its config in its heartbeat's reply ([`desired_sql`]) until it
//! reports running that version or refusing it; it applies one between customers and keeps the
//! version before if the new one fails there.

use deadpool_postgres::GenericClient;
use selfvend_config::Overlay;

use crate::Fleet;
use crate::error::ApiError;

/// Whose config a document sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope<'a> {
    /// The fleet-wide defaults.
    Defaults,
    /// One kiosk's overrides, laid over the defaults.
    Kiosk(&'a str),
}

/// A config document the fleet holds.
#[derive(Debug, Clone)]
pub struct Shown {
    /// 0: nothing set.
    pub version: i64,
    pub toml: String,
    /// Who set it and when, for each document it is made of.
    pub set: Vec<String>,
}

/// Stores `text` (named `file` in errors) as the newest document of `scope`; returns its
/// version. Refused, and nothing stored, if it or any kiosk's config made with it does not
/// check.
pub async fn set(
    fleet: &Fleet,
    scope: Scope<'_>,
    file: &str,
    text: &str,
    by: &str,
) -> Result<i64, ApiError> {
    Overlay::parse(file, text).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let mut client = fleet.db.get().await?;
    let tx = client.transaction().await?;
    // One change at a time: each kiosk's config is made from the newest of both.
    tx.execute(
        "LOCK TABLE config_versions IN SHARE ROW EXCLUSIVE MODE",
        &[],
    )
    .await?;
    let kiosk = match scope {
        Scope::Defaults => None,
        Scope::Kiosk(id) => {
            let paired = tx
                .query_opt(
                    "SELECT 1 FROM kiosks WHERE id = $1 AND revoked_at IS NULL",
                    &[&id],
                )
                .await?;
            if paired.is_none() {
                return Err(ApiError::BadRequest(format!("no paired kiosk {id}")));
            }
            Some(id)
        }
    };
    let version: i64 = tx
        .query_one(
            "INSERT INTO config_versions (kiosk_id, toml, set_by) VALUES ($1, $2, $3)
             RETURNING version",
            &[&kiosk, &text, &by],
        )
        .await?
        .get(0);
    let overridden: Vec<String> = match kiosk {
        Some(id) => vec![id.to_string()],
        None => tx
            .query(
                "SELECT DISTINCT c.kiosk_id FROM config_versions c
                 JOIN kiosks k ON k.id = c.kiosk_id WHERE k.revoked_at IS NULL",
                &[],
            )
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect(),
    };
    let defaults = newest(&tx, None).await?;
    for id in overridden {
        let own = newest(&tx, Some(&id)).await?;
        let (made, made_version) = compose(defaults.as_ref(), own.as_ref())?;
        tx.execute(
            "INSERT INTO kiosk_configs (kiosk_id, version, toml) VALUES ($1, $2, $3)
             ON CONFLICT (kiosk_id) DO UPDATE SET version = $2, toml = $3",
            &[&id, &made_version, &made.to_toml()],
        )
        .await?;
    }
    tx.commit().await?;
    tracing::info!("config version {version} set by {by} ({file})");
    Ok(version)
}

/// The newest document of the defaults (`None`) or of one kiosk's overrides, checked again.
async fn newest(
    db: &impl GenericClient,
    kiosk: Option<&str>,
) -> Result<Option<(i64, Overlay)>, ApiError> {
    let row = db
        .query_opt(
            "SELECT version, toml FROM config_versions WHERE kiosk_id IS NOT DISTINCT FROM $1
             ORDER BY version DESC LIMIT 1",
            &[&kiosk],
        )
        .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let version: i64 = row.get(0);
    let origin = match kiosk {
        None => format!("the fleet's defaults, version {version}"),
        Some(id) => format!("kiosk {id}'s overrides, version {version}"),
    };
    let overlay = Overlay::parse(&origin, row.get(1))
        .map_err(|e| ApiError::Database(format!("a stored config does not check: {e}")))?;
    Ok(Some((version, overlay)))
}

/// The defaults under a kiosk's overrides, checked as the kiosk will check them; and its
/// version (the greater).
fn compose(
    defaults: Option<&(i64, Overlay)>,
    own: Option<&(i64, Overlay)>,
) -> Result<(Overlay, i64), ApiError> {
    let (made, version) = match (defaults, own) {
        (Some((dv, d)), Some((ov, o))) => (d.then(o), (*dv).max(*ov)),
        (None, Some((ov, o))) => (o.clone(), *ov),
        (Some((dv, d)), None) => (d.clone(), *dv),
        (None, None) => return Ok((Overlay::empty("nothing"), 0)),
    };
    Overlay::parse(made.origin(), &made.to_toml())
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    Ok((made, version))
}

/// What the fleet holds: the defaults, or what one kiosk is sent (its overrides laid over the
/// defaults).
pub async fn show(fleet: &Fleet, scope: Scope<'_>) -> Result<Shown, ApiError> {
    let client = fleet.db.get().await?;
    let (version, toml) = match scope {
        Scope::Defaults => newest(&client, None)
            .await?
            .map_or((0, String::new()), |(v, o)| (v, o.to_toml())),
        Scope::Kiosk(id) => {
            let row = client
                .query_opt(
                    "SELECT version, toml FROM kiosk_configs WHERE kiosk_id = $1",
                    &[&id],
                )
                .await?;
            match row {
                Some(row) => (row.get(0), row.get(1)),
                None => newest(&client, None)
                    .await?
                    .map_or((0, String::new()), |(v, o)| (v, o.to_toml())),
            }
        }
    };
    let kiosk = match scope {
        Scope::Defaults => None,
        Scope::Kiosk(id) => Some(id),
    };
    let set = client
        .query(
            "SELECT DISTINCT ON (kiosk_id) version, coalesce(kiosk_id, 'the fleet'), set_by,
                    to_char(set_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS')
             FROM config_versions WHERE kiosk_id IS NULL OR kiosk_id = $1
             ORDER BY kiosk_id, version DESC",
            &[&kiosk],
        )
        .await?
        .iter()
        .map(|r| {
            let (v, whose, by, at): (i64, String, String, String) =
                (r.get(0), r.get(1), r.get(2), r.get(3));
            format!("version {v} for {whose}, set by {by} at {at} UTC")
        })
        .collect();
    Ok(Shown { version, toml, set })
}

/// What `kiosk` ($1) is sent, as JSON (`null` for nothing): its config, unless the heartbeat
/// ($2) reports it running or refusing that version.
pub const DESIRED_SQL: &str = "(SELECT json_build_object('version', c.version, 'toml', c.toml)
      FROM (SELECT version, toml FROM kiosk_configs WHERE kiosk_id = $1
            UNION ALL
            (SELECT version, toml FROM config_versions
             WHERE kiosk_id IS NULL
               AND NOT EXISTS (SELECT 1 FROM kiosk_configs WHERE kiosk_id = $1)
             ORDER BY version DESC LIMIT 1)) c
      WHERE c.version > 0
        AND c.version IS DISTINCT FROM ($2::text::jsonb #>> '{config,running}')::bigint
        AND c.version IS DISTINCT FROM ($2::text::jsonb #>> '{config,refused}')::bigint)";
