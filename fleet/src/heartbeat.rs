//! Heartbeats: what a kiosk shows and holds, every few seconds. The latest is kept with its
//! time; a kiosk whose heartbeats stop is down.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use selfvend_fleet_wire::{Heartbeat, HeartbeatReply};

use crate::error::{ApiError, json_body};
use crate::{Fleet, alerts, auth};

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
    let mut client = fleet.db.get().await?;
    let tx = client.transaction().await?;
    // A heartbeat is a state the next one replaces: losing the last one to a crash of the
    // database costs nothing, so its commit does not wait for the disk.
    tx.batch_execute("SET LOCAL synchronous_commit = off")
        .await?;
    // The replay check is folded into the one write a heartbeat makes.
    let Some(row) = tx
        .query_opt(
            "UPDATE kiosks SET last_heartbeat_at = now(), heartbeat = $2::text::jsonb,
                    software_version = $3, last_request_ms = $4
             WHERE id = $1 AND last_request_ms < $4
             RETURNING journal_head,
                       EXISTS (SELECT 1 FROM alerts WHERE kiosk_id = $1 AND closed_at IS NULL)",
            &[kiosk, &json, &beat.software_version, &caller.time_ms],
        )
        .await?
    else {
        return Err(auth::replayed(&tx, &caller).await);
    };
    let any_open: bool = row.get(1);
    alerts::from_heartbeat(&tx, kiosk, &beat, any_open).await?;
    tx.commit().await?;
    Ok(Json(HeartbeatReply {
        journal_head: row.get(0),
    }))
}
