//! Journal ingest: a kiosk's audit rows, in chain order, stored once each. A batch continues the
//! chain the server holds (its last row's id and hash); rows it holds already are skipped if
//! they are the same rows, so a batch sent twice is stored once. A gap, a fork or an edited row
//! opens a tamper alert and holds the kiosk's ingest until an admin acts: nothing after the
//! break is stored. An admin's [`release`] accepts the break: the one row after the received
//! head is stored as the kiosk sends it, marked with the break, and the chain goes on from it.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use deadpool_postgres::Transaction;
use selfvend_fleet_wire::{AuditRow, ChainBreak, JournalAck, JournalBatch, check_next};

use crate::error::{ApiError, json_body};
use crate::{Fleet, auth};

/// `POST /api/journal`.
pub async fn journal(
    State(fleet): State<Fleet>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<JournalAck>, ApiError> {
    let caller = auth::kiosk(&fleet, &headers, "POST", "/api/journal", &body).await?;
    let kiosk = caller.kiosk.clone();
    let batch: JournalBatch = json_body(&body)?;
    batch.check().map_err(ApiError::BadRequest)?;
    let _slot = fleet
        .ingest_slots
        .acquire()
        .await
        .map_err(|_| ApiError::Database("the server is stopping".into()))?;
    let mut client = fleet.db.get().await?;
    let tx = client.transaction().await?;
    let row = tx
        .query_one(
            "SELECT journal_head, journal_head_hash, ingest_held, break_accepted FROM kiosks
             WHERE id = $1 FOR UPDATE",
            &[&kiosk],
        )
        .await?;
    let (mut head, mut head_hash, held, mut break_accepted): (i64, String, bool, bool) =
        (row.get(0), row.get(1), row.get(2), row.get(3));
    auth::claim(&fleet, &tx, &caller).await?;
    if held {
        return Err(ApiError::Conflict(format!(
            "kiosk {kiosk}: its journal's chain is broken; ingest is held until an admin acts"
        )));
    }
    let (known, new): (Vec<&AuditRow>, Vec<&AuditRow>) =
        batch.rows.iter().partition(|r| r.id <= head);
    if let Some(broken) = differing(&tx, &kiosk, &known).await? {
        return hold(tx, &kiosk, &broken).await;
    }
    let mut fresh = Vec::with_capacity(new.len());
    let mut accepted = None;
    for row in new {
        if let Err(broken) = check_next(head, &head_hash, row) {
            if break_accepted && fresh.is_empty() {
                accepted = Some((row.id, broken.to_string()));
            } else {
                // What came before the break is kept; nothing after it.
                store(&tx, &kiosk, &fresh).await?;
                advance(&tx, &kiosk, head, &head_hash, break_accepted).await?;
                return hold(tx, &kiosk, &broken.to_string()).await;
            }
        }
        // An acceptance covers the first row after the head only, broken or not.
        break_accepted = false;
        head = row.id;
        head_hash.clone_from(&row.hash);
        fresh.push(row);
    }
    store(&tx, &kiosk, &fresh).await?;
    if let Some((id, why)) = &accepted {
        tx.execute(
            "UPDATE journal_rows SET accepted_break = $3 WHERE kiosk_id = $1 AND id = $2",
            &[&kiosk, id, why],
        )
        .await?;
    }
    advance(&tx, &kiosk, head, &head_hash, break_accepted).await?;
    tx.commit().await?;
    Ok(Json(JournalAck { head }))
}

/// The first of `rows` (all at or below the stored head) that is not the row stored under its
/// id, said in words.
async fn differing(
    tx: &Transaction<'_>,
    kiosk: &str,
    rows: &[&AuditRow],
) -> Result<Option<String>, ApiError> {
    let (Some(first), Some(last)) = (rows.first(), rows.last()) else {
        return Ok(None);
    };
    let stored = tx
        .query(
            "SELECT id, hash FROM journal_rows WHERE kiosk_id = $1 AND id BETWEEN $2 AND $3",
            &[&kiosk, &first.id, &last.id],
        )
        .await?;
    let stored: std::collections::HashMap<i64, String> =
        stored.iter().map(|r| (r.get(0), r.get(1))).collect();
    for row in rows {
        match stored.get(&row.id) {
            Some(hash) if *hash == row.hash => {}
            Some(hash) => {
                return Ok(Some(
                    ChainBreak::Edited {
                        id: row.id,
                        stated: row.hash.clone(),
                        computed: hash.clone(),
                    }
                    .to_string()
                        + " (the server received it before with the second hash)",
                ));
            }
            None => {
                return Ok(Some(format!(
                    "row {} is below the received head but was never received",
                    row.id
                )));
            }
        }
    }
    Ok(None)
}

async fn store(tx: &Transaction<'_>, kiosk: &str, rows: &[&AuditRow]) -> Result<(), ApiError> {
    if rows.is_empty() {
        return Ok(());
    }
    let column = |f: fn(&AuditRow) -> String| rows.iter().map(|r| f(r)).collect::<Vec<_>>();
    let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
    tx.execute(
        "INSERT INTO journal_rows (kiosk_id, id, at, kind, body, prev_hash, hash)
         SELECT $1, * FROM unnest($2::bigint[], $3::text[], $4::text[], $5::text[],
                                  $6::text[], $7::text[])",
        &[
            &kiosk,
            &ids,
            &column(|r| r.at.clone()),
            &column(|r| r.kind.clone()),
            &column(|r| r.body.clone()),
            &column(|r| r.prev_hash.clone()),
            &column(|r| r.hash.clone()),
        ],
    )
    .await?;
    Ok(())
}

async fn advance(
    tx: &Transaction<'_>,
    kiosk: &str,
    head: i64,
    head_hash: &str,
    break_accepted: bool,
) -> Result<(), ApiError> {
    tx.execute(
        "UPDATE kiosks SET journal_head = $2, journal_head_hash = $3, break_accepted = $4
         WHERE id = $1",
        &[&kiosk, &head, &head_hash, &break_accepted],
    )
    .await?;
    Ok(())
}

/// Holds `kiosk`'s ingest and opens its tamper alert (once), in the same commit.
async fn hold(tx: Transaction<'_>, kiosk: &str, why: &str) -> Result<Json<JournalAck>, ApiError> {
    tx.execute(
        "UPDATE kiosks SET ingest_held = true WHERE id = $1",
        &[&kiosk],
    )
    .await?;
    tx.execute(
        "INSERT INTO alerts (kiosk_id, kind, detail) VALUES ($1, 'chain-broken', $2)
         ON CONFLICT (kiosk_id, kind) WHERE closed_at IS NULL DO NOTHING",
        &[&kiosk, &why],
    )
    .await?;
    tx.commit().await?;
    tracing::warn!("kiosk {kiosk}: journal chain broken: {why}");
    Err(ApiError::Conflict(format!(
        "kiosk {kiosk}: the journal's chain is broken ({why}); ingest is held until an admin acts"
    )))
}

/// An admin (`by`) accepts the break that holds `kiosk`'s ingest: the tamper alert closes, the
/// release is recorded with the break, and ingest resumes with the row after the received
/// head, stored as the kiosk sends it. Returns false if the kiosk's ingest was not held.
pub async fn release(fleet: &Fleet, kiosk: &str, by: &str) -> Result<bool, ApiError> {
    let mut client = fleet.db.get().await?;
    let tx = client.transaction().await?;
    let Some(row) = tx
        .query_opt(
            "SELECT journal_head FROM kiosks WHERE id = $1 AND ingest_held FOR UPDATE",
            &[&kiosk],
        )
        .await?
    else {
        return Ok(false);
    };
    let head: i64 = row.get(0);
    let detail: String = tx
        .query_opt(
            "UPDATE alerts SET closed_at = now(), closed_by = $2, next_attempt_at = now()
             WHERE kiosk_id = $1 AND kind = 'chain-broken' AND closed_at IS NULL
             RETURNING detail",
            &[&kiosk, &by],
        )
        .await?
        .map_or_else(String::new, |r| r.get(0));
    tx.execute(
        "UPDATE kiosks SET ingest_held = false, break_accepted = true WHERE id = $1",
        &[&kiosk],
    )
    .await?;
    tx.execute(
        "INSERT INTO chain_releases (kiosk_id, head, detail, released_by)
         VALUES ($1, $2, $3, $4)",
        &[&kiosk, &head, &detail, &by],
    )
    .await?;
    tx.commit().await?;
    tracing::warn!("kiosk {kiosk}: {by} released its held ingest at row {head} ({detail})");
    Ok(true)
}
