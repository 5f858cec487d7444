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
    if cash.capacity > 0
        && u64::from(cash.count()) * 100
            >= u64::from(cash.capacity) * u64::from(CASH_BOX_ALERT_PERCENT)
    {
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
/// `any_open` says whether the kiosk has an open alert (nothing to close when it has none).
pub async fn from_heartbeat(
    db: &impl GenericClient,
    kiosk: &str,
    beat: &Heartbeat,
    any_open: bool,
) -> Result<(), ApiError> {
    let now_open = device_alerts(beat);
    for (kind, detail) in &now_open {
        open(db, kiosk, kind, detail).await?;
    }
    if any_open {
        let closable: Vec<&str> = DEVICE_KINDS.iter().copied().chain(["down"]).collect();
        let still: Vec<&str> = now_open.iter().map(|(k, _)| *k).collect();
        db.execute(
            "UPDATE alerts SET closed_at = now(), closed_by = 'kiosk', next_attempt_at = now()
             WHERE kiosk_id = $1 AND closed_at IS NULL
               AND kind = ANY($2) AND NOT (kind = ANY($3))",
            &[&kiosk, &closable, &still],
        )
        .await?;
    }
    Ok(())
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
