//! What the fleet link reads from the journal: audit rows exactly as stored (the body as the
//! text that was hashed), and the current period's banknotes by denomination.

use rusqlite::params;
use selfvend_fleet_wire::AuditRow;

use super::{Journal, JournalError};

impl Journal {
    /// Up to `limit` audit rows from `from_id` on, as stored.
    pub fn raw_rows(&self, from_id: i64, limit: usize) -> Result<Vec<AuditRow>, JournalError> {
        let read = |cause| self.read_error(cause);
        let mut stmt = self
            .db
            .prepare_cached(
                "SELECT id, at, kind, body, prev_hash, hash FROM audit WHERE id >= ?1
                 ORDER BY id LIMIT ?2",
            )
            .map_err(read)?;
        stmt.query_map(params![from_id, limit as i64], |r| {
            Ok(AuditRow {
                id: r.get(0)?,
                at: r.get(1)?,
                kind: r.get(2)?,
                body: r.get(3)?,
                prev_hash: r.get(4)?,
                hash: r.get(5)?,
            })
        })
        .map_err(read)?
        .collect::<rusqlite::Result<_>>()
        .map_err(read)
    }

    /// The banknotes stacked in period `period`: (yuan, count), smallest first.
    pub fn banknotes_by_value(&self, period: i64) -> Result<Vec<(u32, u32)>, JournalError> {
        let read = |cause| self.read_error(cause);
        let mut stmt = self
            .db
            .prepare_cached(
                "SELECT fen / 100, count(*) FROM banknotes WHERE period_id = ?1
                 GROUP BY fen ORDER BY fen",
            )
            .map_err(read)?;
        stmt.query_map([period], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(read)?
            .collect::<rusqlite::Result<_>>()
            .map_err(read)
    }
}

impl Journal {
    /// Period `period`'s sales and bill payments taken so far, refused and refunded ones aside:
    /// (sales, their fen, bill payments, their fen).
    pub fn period_takings(&self, period: i64) -> Result<(u32, u64, u32, u64), JournalError> {
        self.db
            .query_row(
                "SELECT
                   (SELECT count(*) FROM sales WHERE period_id = ?1
                       AND state NOT IN ('refused', 'refunded')),
                   (SELECT coalesce(sum(paid_fen), 0) FROM sales WHERE period_id = ?1
                       AND state NOT IN ('refused', 'refunded')),
                   (SELECT count(*) FROM bill_payments WHERE period_id = ?1
                       AND state NOT IN ('refused', 'refunded')),
                   (SELECT coalesce(sum(paid_fen), 0) FROM bill_payments WHERE period_id = ?1
                       AND state NOT IN ('refused', 'refunded'))",
                [period],
                |r| {
                    Ok((
                        r.get(0)?,
                        r.get::<_, i64>(1)? as u64,
                        r.get(2)?,
                        r.get::<_, i64>(3)? as u64,
                    ))
                },
            )
            .map_err(|cause| self.read_error(cause))
    }
}
