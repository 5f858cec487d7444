//! Heartbeats: what a kiosk shows and holds, every few seconds. The latest is kept with its
//! time; a kiosk whose heartbeats stop is down.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use selfvend_fleet_wire::{Heartbeat, HeartbeatReply};

use crate::error::{ApiError, json_body};
use crate::{Fleet, alerts, auth, commands, kiosk_config, rollouts};

/// The heartbeat's one statement: the kiosk's state in, what the fleet wants of it out.
static HEARTBEAT_SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "UPDATE kiosks SET last_heartbeat_at = now(), heartbeat = $2::text::jsonb,
                    software_version = $3, last_request_ms = $4, screen = $6,
                    screen_secs = $7, money_in_fen = $8, open_items = $9
             WHERE id = $1 AND last_request_ms < $4 AND revoked_at IS NULL AND public_key = $5
             RETURNING journal_head,
                       EXISTS (SELECT 1 FROM alerts WHERE kiosk_id = $1 AND closed_at IS NULL),
                       {desired}::text",
        desired = rollouts::DESIRED_SQL
            .replace("{commands}", &commands::pending_sql())
            .replace("{config}", kiosk_config::DESIRED_SQL)
    )
});

/// `POST /api/heartbeat`.
pub async fn heartbeat(
    State(fleet): State<Fleet>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<HeartbeatReply>, ApiError> {
    let caller = auth::kiosk(&fleet, &headers, "POST", "/api/heartbeat", &body).await?;
    let kiosk = &caller.kiosk;
    let beat: Heartbeat = json_body(&body)?;
    beat.check().map_err(ApiError::BadRequest)?;
    let json = serde_json::to_string(&beat).expect("a heartbeat serializes");
    // One statement on a connection that does not wait for the disk: a heartbeat is a state
    // the next one replaces, so losing the last one to a crash of the database costs nothing.
    // The replay check and the key and revocation checks are folded into it.
    let client = fleet.states.get().await?;
    // Planned once per connection: every kiosk's heartbeat is the same statement.
    let statement = client.prepare_cached(HEARTBEAT_SQL.as_str()).await?;
    let Some(row) = client
        .query_opt(
            &statement,
            &[
                kiosk,
                &json,
                &beat.software_version,
                &caller.time_ms,
                &caller.public_key,
                &beat.screen,
                &(beat.screen_secs.min(i64::MAX as u64) as i64),
                &(beat.money_in_fen.min(i64::MAX as u64) as i64),
                &i64::from(beat.open_items),
            ],
        )
        .await?
    else {
        return Err(auth::refusal(&fleet, &client, &caller).await);
    };
    let any_open: bool = row.get(1);
    alerts::from_heartbeat(&client, kiosk, &beat, any_open).await?;
    if !beat.commands_done.is_empty() {
        commands::record(&client, kiosk, &beat.commands_done).await?;
    }
    if !beat.rollouts.is_empty() {
        rollouts::record(&fleet, kiosk, &beat.rollouts).await?;
    }
    let desired: String = row.get(2);
    let desired = serde_json::from_str(&desired)
        .map_err(|e| ApiError::Database(format!("the desired state does not read back: {e}")))?;
    Ok(Json(HeartbeatReply {
        journal_head: row.get(0),
        desired,
    }))
}
