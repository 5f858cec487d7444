//! Bill payments (缴费) in the journal: each under a kiosk serial from the same sequence as
//! sales, so the backend's idempotence key is never shared, and compare-and-set on the state
//! it leaves, like a sale.

use rusqlite::{OptionalExtension, params};

use super::{Batch, BatchResult, Journal, JournalError, states_json};

/// Every state a bill payment can be in (the journal's `bill_payments.state`).
pub const BILL_STATES: &[&str] = &[
    "intent",
    "pending",
    "paid",
    "refused",
    "never-reached",
    "refunded",
    "manual",
];

/// A new bill payment, as [`Batch::record_bill_payment`] records it.
pub struct NewBillPayment<'a> {
    pub serial: u64,
    /// `cash` or `bank-card`.
    pub payment: &'a str,
    pub customer_number: &'a str,
    pub utility: &'a str,
    pub paid_fen: u64,
    /// The backend request as sent, JSON.
    pub request_json: &'a str,
}

/// A bill payment and where it stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BillPaymentRow {
    pub serial: u64,
    pub payment: String,
    pub customer_number: String,
    pub utility: String,
    pub paid_fen: u64,
    pub state: String,
    pub receipt_json: Option<String>,
    pub request_json: String,
    pub repay_attempts: u32,
    /// Whether an automatic re-pay may be tried now (its backoff has passed).
    pub repay_due: bool,
    /// When it entered its state (its audit row's time, UTC).
    pub state_at: String,
}

const COLUMNS: &str = "serial, payment, customer_number, utility, paid_fen, state, receipt_json,
    request_json, repay_attempts,
    coalesce(next_repay_at <= strftime('%Y-%m-%dT%H:%M:%fZ', 'now'), 1),
    (SELECT at FROM audit WHERE id = bill_payments.audit_id)";

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<BillPaymentRow> {
    Ok(BillPaymentRow {
        serial: r.get::<_, i64>(0)? as u64,
        payment: r.get(1)?,
        customer_number: r.get(2)?,
        utility: r.get(3)?,
        paid_fen: r.get::<_, i64>(4)? as u64,
        state: r.get(5)?,
        receipt_json: r.get(6)?,
        request_json: r.get(7)?,
        repay_attempts: r.get(8)?,
        repay_due: r.get(9)?,
        state_at: r.get(10)?,
    })
}

impl Batch<'_> {
    /// Records bill payment `p` in state `intent`, in the current period.
    pub fn record_bill_payment(
        &mut self,
        p: &NewBillPayment<'_>,
        audit_id: i64,
    ) -> BatchResult<()> {
        self.tx
            .prepare_cached(
                "INSERT INTO bill_payments (serial, period_id, payment, customer_number, utility,
                    paid_fen, state, request_json, audit_id)
                 VALUES (?1, (SELECT max(id) FROM periods), ?2, ?3, ?4, ?5, 'intent', ?6, ?7)",
            )?
            .execute(params![
                p.serial as i64,
                p.payment,
                p.customer_number,
                p.utility,
                p.paid_fen as i64,
                p.request_json,
                audit_id
            ])?;
        Ok(())
    }

    /// Moves bill payment `serial` from one of `from` to `state`, with the backend's receipt
    /// when there is one; `Conflict` when it is in another state.
    pub fn bill_payment_state(
        &mut self,
        serial: u64,
        from: &[&str],
        state: &str,
        receipt_json: Option<&str>,
        audit_id: i64,
    ) -> BatchResult<()> {
        let changed = self
            .tx
            .prepare_cached(
                "UPDATE bill_payments SET state = ?2, receipt_json = coalesce(?3, receipt_json),
                        audit_id = ?4
                 WHERE serial = ?1 AND state IN (SELECT value FROM json_each(?5))",
            )?
            .execute(params![
                serial as i64,
                state,
                receipt_json,
                audit_id,
                states_json(from)
            ])?;
        self.expect_one(
            changed,
            || self.state_of("bill_payments", "serial", serial as i64, "bill payment"),
            &from.join(" or "),
        )
    }

    /// Counts one more automatic re-pay of bill payment `serial` and sets when the next may be
    /// made, `delay_secs` from now; returns the attempts so far.
    pub fn count_repay_attempt(&mut self, serial: u64, delay_secs: u64) -> BatchResult<u32> {
        Ok(self.tx.query_row(
            "UPDATE bill_payments SET repay_attempts = repay_attempts + 1,
                    next_repay_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now', ?2)
             WHERE serial = ?1 RETURNING repay_attempts",
            params![serial as i64, format!("+{delay_secs} seconds")],
            |r| r.get(0),
        )?)
    }

    /// Records that debit `id`, approved in this commit, paid for bill payment `serial`.
    pub fn debit_paid_bill(&mut self, id: i64, serial: u64) -> BatchResult<()> {
        let changed = self
            .tx
            .prepare_cached(
                "UPDATE debits SET bill_serial = ?2
                 WHERE id = ?1 AND state = 'approved' AND serial IS NULL AND bill_serial IS NULL",
            )?
            .execute(params![id, serial as i64])?;
        self.expect_one(
            changed,
            || self.state_of("debits", "id", id, "debit"),
            "approved",
        )
    }

    /// Closes session payment `id` (`open` → `sold`) as the money of bill payment `serial`.
    pub fn close_payment_for_bill(
        &mut self,
        id: i64,
        serial: u64,
        audit_id: i64,
    ) -> BatchResult<()> {
        let changed = self
            .tx
            .prepare_cached(
                "UPDATE payments SET state = 'sold', bill_serial = ?2, audit_id = ?3,
                        escrow_fen = NULL
                 WHERE id = ?1 AND state = 'open'",
            )?
            .execute(params![id, serial as i64, audit_id])?;
        self.expect_one(
            changed,
            || self.state_of("payments", "id", id, "payment"),
            "open",
        )
    }
}

impl Journal {
    /// The bill payments in any of `states`, in serial order.
    pub fn bill_payments(&self, states: &[&str]) -> Result<Vec<BillPaymentRow>, JournalError> {
        let read = |cause| self.read_error(cause);
        let mut stmt = self
            .db
            .prepare_cached(&format!(
                "SELECT {COLUMNS} FROM bill_payments
                 WHERE state IN (SELECT value FROM json_each(?1)) ORDER BY serial"
            ))
            .map_err(read)?;
        stmt.query_map([states_json(states)], row)
            .map_err(read)?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(read)
    }

    /// Bill payment `serial`, in whatever state.
    pub fn bill_payment(&self, serial: u64) -> Result<Option<BillPaymentRow>, JournalError> {
        self.db
            .query_row(
                &format!("SELECT {COLUMNS} FROM bill_payments WHERE serial = ?1"),
                [serial as i64],
                row,
            )
            .optional()
            .map_err(|cause| self.read_error(cause))
    }
}
