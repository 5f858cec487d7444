//! Pairing: an admin makes a one-time code (valid for an hour); a kiosk sends it with its public
//! key and gets its kiosk id. A code pairs one kiosk, once.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use rand_core::{OsRng, RngCore};
use selfvend_fleet_wire::{GENESIS, PairReply, PairRequest};

use crate::Fleet;
use crate::error::{ApiError, json_body};

/// Letters and digits a person cannot confuse (no 0/O, 1/I/L).
const CODE_ALPHABET: &[u8] = b"ABCDEFGHJKMNPQRSTUVWXYZ23456789";
const CODE_LENGTH: usize = 12;

/// A new pairing code, valid for an hour.
pub async fn new_code(fleet: &Fleet) -> Result<String, ApiError> {
    let mut bytes = [0u8; CODE_LENGTH];
    OsRng.fill_bytes(&mut bytes);
    let code: String = bytes
        .iter()
        .map(|b| CODE_ALPHABET[*b as usize % CODE_ALPHABET.len()] as char)
        .collect();
    fleet
        .db
        .get()
        .await?
        .execute(
            "INSERT INTO pairing_codes (code, expires_at) VALUES ($1, now() + interval '1 hour')",
            &[&code],
        )
        .await?;
    Ok(code)
}

/// `POST /api/pair`.
pub async fn pair(State(fleet): State<Fleet>, body: Bytes) -> Result<Json<PairReply>, ApiError> {
    let request: PairRequest = json_body(&body)?;
    request.check().map_err(ApiError::BadRequest)?;
    let public_key = hex::decode(&request.public_key).expect("checked");
    let mut id = [0u8; 8];
    OsRng.fill_bytes(&mut id);
    let kiosk_id = format!("K{}", hex::encode_upper(id));
    let mut client = fleet.db.get().await?;
    let tx = client.transaction().await?;
    let code = request.code.trim().to_ascii_uppercase();
    let usable = tx
        .query_opt(
            "SELECT 1 FROM pairing_codes
             WHERE code = $1 AND used_at IS NULL AND expires_at > now() FOR UPDATE",
            &[&code],
        )
        .await?;
    if usable.is_none() {
        return Err(ApiError::Forbidden(
            "the pairing code is unknown, used already or expired: ask for a new one".into(),
        ));
    }
    let already = || ApiError::Conflict("this key is already paired with the fleet".into());
    let taken = tx
        .query_opt("SELECT 1 FROM kiosks WHERE public_key = $1", &[&public_key])
        .await?;
    if taken.is_some() {
        return Err(already());
    }
    tx.execute(
        "INSERT INTO kiosks (id, terminal_id, region, public_key, software_version,
                             journal_head_hash)
         VALUES ($1, $2, $3, $4, $5, $6)",
        &[
            &kiosk_id,
            &request.terminal_id,
            &request.region,
            &public_key,
            &request.software_version,
            &GENESIS,
        ],
    )
    .await
    .map_err(|e| {
        // The same key sent with two codes at once: the second finds it paired.
        if e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) {
            already()
        } else {
            e.into()
        }
    })?;
    tx.execute(
        "UPDATE pairing_codes SET used_at = now(), kiosk_id = $2 WHERE code = $1",
        &[&code, &kiosk_id],
    )
    .await?;
    tx.commit().await?;
    tracing::info!("kiosk {kiosk_id} ({}) paired", request.terminal_id);
    Ok(Json(PairReply { kiosk_id }))
}
