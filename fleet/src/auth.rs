//! Who is asking: a kiosk's signed request checked against the key it paired with. An unknown
//! or revoked kiosk, a signature that does not verify, or a clock too far off is refused. Each
//! request must be signed later than the kiosk's last one ([`claim`]), so none can be replayed.

use std::time::{SystemTime, UNIX_EPOCH};

use axum::http::HeaderMap;
use deadpool_postgres::GenericClient;
use selfvend_fleet_wire::{KIOSK_HEADER, MAX_CLOCK_SKEW_MS, SIGNATURE_HEADER, TIME_HEADER, verify};

use crate::Fleet;
use crate::error::ApiError;

/// A kiosk whose signature verified, and the time it signed at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub kiosk: String,
    pub time_ms: i64,
}

/// Records `caller`'s request as its latest, in the transaction that acts on it; refuses one no
/// later than the last (compare-and-set on the kiosk's row).
pub async fn claim(db: &impl GenericClient, caller: &Caller) -> Result<(), ApiError> {
    let claimed = db
        .execute(
            "UPDATE kiosks SET last_request_ms = $2 WHERE id = $1 AND last_request_ms < $2",
            &[&caller.kiosk, &caller.time_ms],
        )
        .await?;
    if claimed == 1 {
        return Ok(());
    }
    Err(replayed(db, caller).await)
}

/// The refusal of `caller`'s request as replayed, with the kiosk's last request's time.
pub async fn replayed(db: &impl GenericClient, caller: &Caller) -> ApiError {
    match db
        .query_one(
            "SELECT last_request_ms FROM kiosks WHERE id = $1",
            &[&caller.kiosk],
        )
        .await
    {
        Ok(row) => ApiError::Replayed {
            kiosk: caller.kiosk.clone(),
            time: caller.time_ms,
            last: row.get(0),
        },
        Err(e) => e.into(),
    }
}

/// The kiosk that signed this request, and when.
pub async fn kiosk(
    fleet: &Fleet,
    headers: &HeaderMap,
    method: &str,
    path: &str,
    body: &[u8],
) -> Result<Caller, ApiError> {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| ApiError::Unauthorized(format!("the request has no {name} header")))
    };
    let kiosk = header(KIOSK_HEADER)?;
    let time: i64 = header(TIME_HEADER)?
        .parse()
        .map_err(|_| ApiError::Unauthorized(format!("{TIME_HEADER}: not a number")))?;
    let signature = header(SIGNATURE_HEADER)?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    if now.abs_diff(time) > MAX_CLOCK_SKEW_MS as u64 {
        return Err(ApiError::Unauthorized(format!(
            "{TIME_HEADER}: the kiosk's clock is {} s from the server's",
            now.abs_diff(time) / 1000
        )));
    }
    let client = fleet.db.get().await?;
    let row = client
        .query_opt(
            "SELECT public_key, revoked_at IS NOT NULL FROM kiosks WHERE id = $1",
            &[&kiosk],
        )
        .await?
        .ok_or_else(|| ApiError::Unauthorized(format!("kiosk {kiosk} is not paired")))?;
    let (public_key, revoked): (Vec<u8>, bool) = (row.get(0), row.get(1));
    if revoked {
        return Err(ApiError::Forbidden(format!("kiosk {kiosk} is revoked")));
    }
    verify(&public_key, signature, method, path, time, body)
        .map_err(|e| ApiError::Unauthorized(format!("kiosk {kiosk}: {e}")))?;
    Ok(Caller {
        kiosk: kiosk.to_string(),
        time_ms: time,
    })
}
