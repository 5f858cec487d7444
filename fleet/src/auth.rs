//! Who is asking: a kiosk's signed request checked against the key it paired with. An unknown
//! or revoked kiosk, a signature that does not verify, or a clock too far off is refused. Each
//! request must be signed later than the kiosk's last one ([`claim`]), so none can be replayed.

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::http::HeaderMap;
use deadpool_postgres::GenericClient;
use selfvend_fleet_wire::{KIOSK_HEADER, MAX_CLOCK_SKEW_MS, SIGNATURE_HEADER, TIME_HEADER, verify};

use crate::Fleet;
use crate::error::ApiError;

/// A kiosk whose signature verified, the key it verified with, and the time it signed at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub kiosk: String,
    pub public_key: Vec<u8>,
    pub time_ms: i64,
}

/// The kiosks' public keys as last read, so a request's signature is checked without a read.
/// Only a shortcut: every write a request makes is conditioned on the kiosk still having that
/// key and not being revoked ([`claim`], the heartbeat's update), so a revocation or a new key
/// takes effect at once on every instance.
#[derive(Default)]
pub struct Keys(RwLock<HashMap<String, Vec<u8>>>);

impl Keys {
    fn get(&self, kiosk: &str) -> Option<Vec<u8>> {
        self.0
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(kiosk)
            .cloned()
    }

    fn put(&self, kiosk: &str, key: Vec<u8>) {
        self.0
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(kiosk.to_string(), key);
    }

    pub fn forget(&self, kiosk: &str) {
        self.0
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(kiosk);
    }
}

/// Records `caller`'s request as its latest, in the transaction that acts on it, if the kiosk
/// still has the key it signed with and is not revoked; refuses one no later than the last
/// (compare-and-set on the kiosk's row).
pub async fn claim(
    fleet: &Fleet,
    db: &impl GenericClient,
    caller: &Caller,
) -> Result<(), ApiError> {
    let claimed = db
        .execute(
            "UPDATE kiosks SET last_request_ms = $2
             WHERE id = $1 AND last_request_ms < $2 AND revoked_at IS NULL AND public_key = $3",
            &[&caller.kiosk, &caller.time_ms, &caller.public_key],
        )
        .await?;
    if claimed == 1 {
        return Ok(());
    }
    Err(refusal(fleet, db, caller).await)
}

/// Why a write conditioned on `caller` matched nothing: revoked, paired again with another key,
/// or a request no later than its last one (replayed or out of order).
pub async fn refusal(fleet: &Fleet, db: &impl GenericClient, caller: &Caller) -> ApiError {
    let kiosk = &caller.kiosk;
    let row = match db
        .query_opt(
            "SELECT revoked_at IS NOT NULL, public_key, last_request_ms FROM kiosks WHERE id = $1",
            &[kiosk],
        )
        .await
    {
        Ok(row) => row,
        Err(e) => return e.into(),
    };
    let Some(row) = row else {
        fleet.keys.forget(kiosk);
        return ApiError::Unauthorized(format!("kiosk {kiosk} is not paired"));
    };
    let (revoked, key, last): (bool, Vec<u8>, i64) = (row.get(0), row.get(1), row.get(2));
    if revoked {
        fleet.keys.forget(kiosk);
        ApiError::Forbidden(format!("kiosk {kiosk} is revoked"))
    } else if key != caller.public_key {
        fleet.keys.forget(kiosk);
        ApiError::Unauthorized(format!("kiosk {kiosk}: its key has changed"))
    } else {
        ApiError::Replayed {
            kiosk: kiosk.clone(),
            time: caller.time_ms,
            last,
        }
    }
}

/// The kiosk that signed this request, the key it verified with, and when.
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
    let checked = |key: &[u8]| verify(key, signature, method, path, time, body);
    // A key as last read verifies without a read; one that does not is read again.
    if let Some(key) = fleet.keys.get(kiosk)
        && checked(&key).is_ok()
    {
        return Ok(Caller {
            kiosk: kiosk.to_string(),
            public_key: key,
            time_ms: time,
        });
    }
    let row = fleet
        .db
        .get()
        .await?
        .query_opt(
            "SELECT public_key, revoked_at IS NOT NULL FROM kiosks WHERE id = $1",
            &[&kiosk],
        )
        .await?
        .ok_or_else(|| ApiError::Unauthorized(format!("kiosk {kiosk} is not paired")))?;
    let (public_key, revoked): (Vec<u8>, bool) = (row.get(0), row.get(1));
    if revoked {
        fleet.keys.forget(kiosk);
        return Err(ApiError::Forbidden(format!("kiosk {kiosk} is revoked")));
    }
    checked(&public_key).map_err(|e| ApiError::Unauthorized(format!("kiosk {kiosk}: {e}")))?;
    fleet.keys.put(kiosk, public_key.clone());
    Ok(Caller {
        kiosk: kiosk.to_string(),
        public_key,
        time_ms: time,
    })
}
