//! Alerts: each opens once and closes once per kiosk and kind (a unique index allows one open),
//! never re-opened by every heartbeat that still shows the fault. Heartbeats open and close the
//! device alerts; the sweep opens `down` for kiosks whose heartbeats stopped; ingest opens
//! `chain-broken`.

use deadpool_postgres::GenericClient;
use selfvend_fleet_wire::Heartbeat;

use crate::Fleet;
use crate::error::ApiError;

/// A cash box this full (of its capacity) is an alert.
const CASH_BOX_ALERT_PERCENT: u32 = 90;

/// Opens `kind` for `kiosk` unless it is open already.
pub async fn open(
    db: &impl GenericClient,
    kiosk: &str,
    kind: &str,
    detail: &str,
) -> Result<(), ApiError> {
    db.execute(
        "INSERT INTO alerts (kiosk_id, kind, detail) VALUES ($1, $2, $3)
         ON CONFLICT (kiosk_id, kind) WHERE closed_at IS NULL DO NOTHING",
        &[&kiosk, &kind, &detail],
    )
    .await?;
    Ok(())
}

/// Closes `kind` for `kiosk` if it is open.
pub async fn close(db: &impl GenericClient, kiosk: &str, kind: &str) -> Result<(), ApiError> {
    db.execute(
        "UPDATE alerts SET closed_at = now(), closed_by = 'kiosk', next_attempt_at = now()
         WHERE kiosk_id = $1 AND kind = $2 AND closed_at IS NULL",
        &[&kiosk, &kind],
    )
    .await?;
    Ok(())
}

/// The device alerts a heartbeat says are open now (kind, detail); every other device alert
/// closes.
fn device_alerts(beat: &Heartbeat) -> Vec<(&'static str, String)> {
    let mut open = Vec::new();
    for d in &beat.devices {
        match (d.device.as_str(), d.state.as_str()) {
            ("validator", "fault" | "jammed") => {
                open.push(("validator-fault", d.detail.clone()));
            }
            ("printer", "paper-out") => open.push(("printer-paper-out", d.detail.clone())),
            _ => {}
        }
    }
    let cash = &beat.cash_box;
    if cash.capacity > 0 && cash.count() * 100 >= cash.capacity * CASH_BOX_ALERT_PERCENT {
        open.push((
            "cash-box-full",
            format!("{} of {} notes", cash.count(), cash.capacity),
        ));
    }
    if beat.open_items > 0 {
        open.push(("operator-items", format!("{} open", beat.open_items)));
    }
    open
}

const DEVICE_KINDS: &[&str] = &[
    "validator-fault",
    "printer-paper-out",
    "cash-box-full",
    "operator-items",
];

/// Opens and closes `kiosk`'s alerts by what its heartbeat says; a heartbeat closes `down`.
pub async fn from_heartbeat(
    db: &impl GenericClient,
    kiosk: &str,
    beat: &Heartbeat,
) -> Result<(), ApiError> {
    let now_open = device_alerts(beat);
    for kind in DEVICE_KINDS {
        match now_open.iter().find(|(k, _)| k == kind) {
            Some((_, detail)) => open(db, kiosk, kind, detail).await?,
            None => close(db, kiosk, kind).await?,
        }
    }
    close(db, kiosk, "down").await
}

/// Opens `down` for every kiosk whose heartbeats stopped (three missed). Safe to run from every
/// instance at once: an open alert is not opened again.
pub async fn sweep(fleet: &Fleet) -> Result<u64, ApiError> {
    let missed = fleet.limits.heartbeat.as_secs_f64() * 3.0;
    let opened = fleet
        .db
        .get()
        .await?
        .execute(
            "INSERT INTO alerts (kiosk_id, kind, detail)
             SELECT id, 'down', 'no heartbeat since ' || coalesce(last_heartbeat_at::text, 'pairing')
             FROM kiosks
             WHERE revoked_at IS NULL
               AND coalesce(last_heartbeat_at, paired_at) < now() - make_interval(secs => $1)
             ON CONFLICT (kiosk_id, kind) WHERE closed_at IS NULL DO NOTHING",
            &[&missed],
        )
        .await?;
    Ok(opened)
}
