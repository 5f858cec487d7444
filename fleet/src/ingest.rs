//! Journal ingest: a kiosk's audit rows, in chain order, stored once each. A batch continues the
//! chain the server holds (its last row's id and hash); rows it holds already are skipped if
//! they are the same rows, so a batch sent twice is stored once. A gap, a fork or an edited row
//! opens a tamper alert and holds the kiosk's ingest until an admin acts: nothing after the
//! break is stored. An admin's [`release`] accepts exactly the break the admin saw: the row that
//! broke the chain (its id and the hash it stated) is stored once as the kiosk sends it, marked
//! with the break, and the chain goes on from it; any other break holds ingest again.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use deadpool_postgres::Transaction;
use selfvend_fleet_wire::{AuditRow, ChainBreak, JournalAck, JournalBatch, check_next};

use crate::error::{ApiError, json_body};
use crate::{Fleet, auth};

/// How long a batch waits for one of the instance's ingest slots before it is turned away
/// (the kiosk sends it again next round).
const SLOT_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

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
    let busy =
        || ApiError::Busy("the fleet is storing other kiosks' journals; send it again".into());
    let _slot = tokio::time::timeout(SLOT_WAIT, fleet.ingest_slots.acquire())
        .await
        .map_err(|_| busy())?
        .map_err(|_| busy())?;
    let mut client = fleet.db.get().await?;
    let tx = client.transaction().await?;
    let row = tx
        .query_one(
            "SELECT journal_head, journal_head_hash, ingest_held, accept_row, accept_hash
             FROM kiosks WHERE id = $1 FOR UPDATE",
            &[&kiosk],
        )
        .await?;
    let (mut head, mut head_hash, held): (i64, String, bool) = (row.get(0), row.get(1), row.get(2));
    let accept: (Option<i64>, Option<String>) = (row.get(3), row.get(4));
    auth::claim(&fleet, &tx, &caller).await?;
    if held {
        return Err(ApiError::Conflict(format!(
            "kiosk {kiosk}: its journal's chain is broken; ingest is held until an admin acts"
        )));
    }
    let (known, new): (Vec<&AuditRow>, Vec<&AuditRow>) =
        batch.rows.iter().partition(|r| r.id <= head);
    if let Some((row, why)) = differing(&tx, &kiosk, &known).await? {
        return hold(tx, &kiosk, row, &why).await;
    }
    let mut fresh = Vec::with_capacity(new.len());
    let mut accepted = None;
    for row in new {
        if let Err(broken) = check_next(head, &head_hash, row) {
            let released = accept.0 == Some(row.id) && accept.1.as_deref() == Some(&row.hash);
            if fresh.is_empty() && released {
                accepted = Some((row.id, broken.to_string()));
            } else {
                // What came before the break is kept; nothing after it.
                store(&tx, &kiosk, &fresh).await?;
                advance(&tx, &kiosk, head, &head_hash).await?;
                return hold(tx, &kiosk, row, &broken.to_string()).await;
            }
        }
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
    if !fresh.is_empty() {
        advance(&tx, &kiosk, head, &head_hash).await?;
    }
    tx.commit().await?;
    Ok(Json(JournalAck { head }))
}

/// The first of `rows` (all at or below the stored head) that is not the row stored under its
/// id, said in words.
async fn differing<'a>(
    tx: &Transaction<'_>,
    kiosk: &str,
    rows: &[&'a AuditRow],
) -> Result<Option<(&'a AuditRow, String)>, ApiError> {
    let (Some(first), Some(last)) = (rows.first(), rows.last()) else {
        return Ok(None);
    };
    let stored = tx
        .query(
            "SELECT id, hash, body FROM journal_rows
             WHERE kiosk_id = $1 AND id BETWEEN $2 AND $3",
            &[&kiosk, &first.id, &last.id],
        )
        .await?;
    let stored: std::collections::HashMap<i64, (String, String)> = stored
        .iter()
        .map(|r| (r.get(0), (r.get(1), r.get(2))))
        .collect();
    for row in rows {
        match stored.get(&row.id) {
            Some((hash, body)) if *hash == row.hash && *body == row.body => {}
            // The same hash over another body: the fleet's own copy was altered.
            Some((hash, _)) if *hash == row.hash => {
                return Ok(Some((
                    row,
                    format!(
                        "row {}: the fleet holds it with another body than the kiosk wrote \
                         (its copy was altered)",
                        row.id
                    ),
                )));
            }
            Some((hash, _)) => {
                return Ok(Some((
                    row,
                    ChainBreak::Edited {
                        id: row.id,
                        stated: row.hash.clone(),
                        computed: hash.clone(),
                    }
                    .to_string()
                        + " (the server received it before with the second hash)",
                )));
            }
            None => {
                return Ok(Some((
                    row,
                    format!(
                        "row {} is below the received head but was never received",
                        row.id
                    ),
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

/// Moves `kiosk`'s received head; a release covered the row after the old head only, so any
/// acceptance ends here.
async fn advance(
    tx: &Transaction<'_>,
    kiosk: &str,
    head: i64,
    head_hash: &str,
) -> Result<(), ApiError> {
    tx.execute(
        "UPDATE kiosks SET journal_head = $2, journal_head_hash = $3, accept_row = NULL,
                accept_hash = NULL
         WHERE id = $1",
        &[&kiosk, &head, &head_hash],
    )
    .await?;
    Ok(())
}

/// Holds `kiosk`'s ingest at `row`, the row that broke its chain, and opens its tamper alert
/// (once), in the same commit.
async fn hold(
    tx: Transaction<'_>,
    kiosk: &str,
    row: &AuditRow,
    why: &str,
) -> Result<Json<JournalAck>, ApiError> {
    tx.execute(
        "UPDATE kiosks SET ingest_held = true, hold_row = $2, hold_hash = $3, accept_row = NULL,
                accept_hash = NULL
         WHERE id = $1",
        &[&kiosk, &row.id, &row.hash],
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

/// What an admin's release did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Released {
    /// The break is accepted; ingest resumes.
    Released,
    /// The kiosk's ingest was not held.
    NotHeld,
    /// The kiosk's received head is no longer the one the admin saw: nothing was done.
    Stale { head: i64 },
}

/// An admin (`by`) accepts the break that holds `kiosk`'s ingest, as seen at received head
/// `seen` (if given): the tamper alert closes and the release is recorded with the break. A
/// break in new rows lets in exactly the row that broke it (its id and stated hash), once; a
/// break in rows the server held already (a fork of received rows) keeps what it holds, and
/// ingest resumes after the head.
pub async fn release(
    fleet: &Fleet,
    kiosk: &str,
    seen: Option<i64>,
    by: &str,
) -> Result<Released, ApiError> {
    let mut client = fleet.db.get().await?;
    let tx = client.transaction().await?;
    let Some(row) = tx
        .query_opt(
            "SELECT journal_head, hold_row, hold_hash FROM kiosks
             WHERE id = $1 AND ingest_held FOR UPDATE",
            &[&kiosk],
        )
        .await?
    else {
        return Ok(Released::NotHeld);
    };
    let (head, hold_row, hold_hash): (i64, Option<i64>, Option<String>) =
        (row.get(0), row.get(1), row.get(2));
    if seen.is_some_and(|seen| seen != head) {
        return Ok(Released::Stale { head });
    }
    let (accept_row, accept_hash) = match hold_row {
        Some(id) if id > head => (Some(id), hold_hash),
        _ => (None, None),
    };
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
        "UPDATE kiosks SET ingest_held = false, hold_row = NULL, hold_hash = NULL,
                accept_row = $2, accept_hash = $3
         WHERE id = $1",
        &[&kiosk, &accept_row, &accept_hash],
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
    Ok(Released::Released)
}
