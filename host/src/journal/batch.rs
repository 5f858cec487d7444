//! One commit's worth of journal writes ([`Journal::commit`](super::Journal::commit)): audit
//! rows appended to the chain, and each state change as a compare-and-set on the state it
//! leaves. A batch that meets a row in another state writes nothing.

use rusqlite::{OptionalExtension, params};
use selfvend_fleet_wire::row_hash;

use super::{AUDIT_ROWS, NewDebit, NewItem, NewSale};

/// Why a commit's batch was not written.
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    /// The database failed: the journal stops.
    #[error(transparent)]
    Sql(#[from] rusqlite::Error),
    /// A row was not in the state the batch expected (someone else acted on it first): nothing
    /// of the batch is written and the journal carries on.
    #[error("{0}")]
    Conflict(String),
}

/// What a step of a batch returns.
pub type BatchResult<T> = Result<T, BatchError>;

/// A list of states as the JSON array the compare-and-set statements read with `json_each`.
pub(super) fn states_json(states: &[&str]) -> String {
    serde_json::to_string(states).expect("a list of names is JSON")
}

/// Writes one commit's worth of entries; see [`Journal::commit`].
pub struct Batch<'j> {
    pub(super) tx: rusqlite::Transaction<'j>,
    pub(super) last_hash: String,
}

impl Batch<'_> {
    /// Appends one audit row to the chain.
    pub fn append(&mut self, kind: &str, body: &serde_json::Value) -> BatchResult<i64> {
        let (id, at): (i64, String) = self
            .tx
            .prepare_cached(
                "SELECT coalesce(max(id), 0) + 1, strftime('%Y-%m-%dT%H:%M:%fZ', 'now') FROM audit",
            )?
            .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        let body = body.to_string();
        let hash = row_hash(&self.last_hash, id, &at, kind, &body);
        self.tx
            .prepare_cached(
                "INSERT INTO audit (id, at, kind, body, prev_hash, hash)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(params![id, at, kind, body, self.last_hash, hash])?;
        self.last_hash = hash;
        self.count(AUDIT_ROWS, 1)?;
        Ok(id)
    }

    /// Allocates the next kiosk serial, recorded by the audit row `audit_id`.
    pub fn allocate_serial(&mut self, audit_id: i64) -> BatchResult<u64> {
        self.tx
            .execute("INSERT INTO serials (audit_id) VALUES (?1)", [audit_id])?;
        Ok(self.tx.last_insert_rowid() as u64)
    }

    /// Adds `by` to a counter (names starting `lifetime.` can never go down).
    pub fn count(&mut self, name: &str, by: i64) -> BatchResult<()> {
        self.tx
            .prepare_cached(
                "INSERT INTO counters (name, value) VALUES (?1, ?2)
                 ON CONFLICT (name) DO UPDATE SET value = value + excluded.value",
            )?
            .execute(params![name, by])?;
        Ok(())
    }

    /// Sets a counter outright (period counters are reset when a period closes).
    pub fn set_counter(&mut self, name: &str, value: i64) -> BatchResult<()> {
        self.tx
            .prepare_cached(
                "INSERT INTO counters (name, value) VALUES (?1, ?2)
             ON CONFLICT (name) DO UPDATE SET value = excluded.value",
            )?
            .execute(params![name, value])?;
        Ok(())
    }

    /// Records a new backend sale under `serial`, in state `intent`, in the current period.
    pub fn record_sale(&mut self, sale: &NewSale<'_>, audit_id: i64) -> BatchResult<()> {
        self.tx.prepare_cached("INSERT INTO sales (serial, period_id, payment, card_serial, utility, paid_fen, state,
                                request_json, audit_id)
             VALUES (?1, (SELECT max(id) FROM periods), ?2, ?3, ?4, ?5, 'intent', ?6, ?7)")?.execute(params![
                sale.serial as i64,
                sale.payment,
                sale.card_serial,
                sale.utility,
                sale.paid_fen as i64,
                sale.request_json,
                audit_id
            ])?;
        Ok(())
    }

    /// Counts one more automatic re-sell attempt of sale `serial` and sets when the next may
    /// be made, `delay_secs` from now; returns the attempts so far.
    pub fn count_resell_attempt(&mut self, serial: u64, delay_secs: u64) -> BatchResult<u32> {
        Ok(self.tx.query_row(
            "UPDATE sales SET resell_attempts = resell_attempts + 1,
                    next_resell_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now', ?2)
             WHERE serial = ?1 RETURNING resell_attempts",
            params![serial as i64, format!("+{delay_secs} seconds")],
            |r| r.get(0),
        )?)
    }

    /// Marks sale `serial`'s write confirmation as acknowledged by the backend, if the sale is
    /// still in `state`, the fact the confirmation told; returns whether it was.
    pub fn sale_confirmed(&mut self, serial: u64, state: &str) -> BatchResult<bool> {
        let changed = self
            .tx
            .prepare_cached("UPDATE sales SET confirmed = 1 WHERE serial = ?1 AND state = ?2")?
            .execute(params![serial as i64, state])?;
        Ok(changed == 1)
    }

    /// Records a banknote the acceptor took, in the current period.
    pub fn record_banknote(&mut self, fen: u64, audit_id: i64) -> BatchResult<()> {
        self.tx
            .prepare_cached(
                "INSERT INTO banknotes (period_id, fen, audit_id)
             VALUES ((SELECT max(id) FROM periods), ?1, ?2)",
            )?
            .execute(params![fen as i64, audit_id])?;
        Ok(())
    }

    /// Opens the payment of a session for `card_serial`; returns its id.
    pub fn open_payment(&mut self, payer: &str, for_bill: bool, audit_id: i64) -> BatchResult<i64> {
        self.tx
            .prepare_cached(
                "INSERT INTO payments (period_id, card_serial, for_bill, state, audit_id)
             VALUES ((SELECT max(id) FROM periods), ?1, ?2, 'open', ?3)",
            )?
            .execute(params![payer, for_bill, audit_id])?;
        Ok(self.tx.last_insert_rowid())
    }

    /// Adds a credited banknote to payment `id`, which must be open; the note is no longer in
    /// escrow.
    pub fn add_to_payment(&mut self, id: i64, fen: u64) -> BatchResult<()> {
        let changed = self
            .tx
            .prepare_cached(
                "UPDATE payments SET paid_fen = paid_fen + ?2, escrow_fen = NULL
                 WHERE id = ?1 AND state = 'open'",
            )?
            .execute(params![id, fen as i64])?;
        self.expect_one(
            changed,
            || self.state_of("payments", "id", id, "payment"),
            "open",
        )
    }

    /// Records the banknote payment `id` is about to take (`Some`), or that none is between
    /// escrow and credit any more (`None`).
    pub fn set_escrow(&mut self, id: i64, fen: Option<u64>) -> BatchResult<()> {
        self.tx
            .prepare_cached("UPDATE payments SET escrow_fen = ?2 WHERE id = ?1")?
            .execute(params![id, fen.map(|f| f as i64)])?;
        Ok(())
    }

    /// Moves payment `id` from `from` to `state` (`sold` with the sale's serial, `abandoned`,
    /// `refunded`); a payment no longer in `from` is a [`BatchError::Conflict`].
    pub fn close_payment(
        &mut self,
        id: i64,
        from: &str,
        state: &str,
        serial: Option<u64>,
        audit_id: i64,
    ) -> BatchResult<()> {
        let changed = self
            .tx
            .prepare_cached(
                "UPDATE payments SET state = ?2, serial = coalesce(?3, serial), audit_id = ?4,
                        escrow_fen = NULL
             WHERE id = ?1 AND state = ?5",
            )?
            .execute(params![id, state, serial.map(|s| s as i64), audit_id, from])?;
        self.expect_one(
            changed,
            || self.state_of("payments", "id", id, "payment"),
            from,
        )
    }

    /// Opens an item for an operator about a sale or, when no sale was allocated, a payment;
    /// returns its id.
    pub fn open_manual_item(&mut self, item: &NewItem<'_>, audit_id: i64) -> BatchResult<i64> {
        self.tx
            .prepare_cached(
                "INSERT INTO manual_items
                    (serial, payment_id, card_serial, reason, state, audit_id, caught_fen,
                     debit_id, awaiting_note, bill_serial)
                 VALUES (?1, ?2, ?3, ?4, 'open', ?5, ?6, ?7, ?8, ?9)",
            )?
            .execute(params![
                item.serial.map(|s| s as i64),
                item.payment,
                item.card_serial,
                item.reason,
                audit_id,
                item.caught_fen.map(|f| f as i64),
                item.debit,
                item.awaiting_note,
                item.bill.map(|s| s as i64)
            ])?;
        Ok(self.tx.last_insert_rowid())
    }

    /// A note nobody's session owns came out of the acceptor (`fen`, 0 when unknown): the
    /// oldest open item awaiting a note of that value, else of unknown value, stops waiting
    /// and learns the value. Returns that item, if any.
    pub fn note_arrived(&mut self, fen: u64) -> BatchResult<Option<i64>> {
        let item: Option<i64> = self
            .tx
            .query_row(
                "SELECT id FROM manual_items
                 WHERE state = 'open' AND awaiting_note = 1
                   AND (caught_fen = ?1 OR caught_fen = 0 OR ?1 = 0)
                 ORDER BY caught_fen = ?1 DESC, id LIMIT 1",
                [fen as i64],
                |r| r.get(0),
            )
            .optional()?;
        if let Some(item) = item {
            self.tx.execute(
                "UPDATE manual_items SET awaiting_note = 0,
                        caught_fen = CASE WHEN caught_fen = 0 THEN ?2 ELSE caught_fen END
                 WHERE id = ?1",
                params![item, fen as i64],
            )?;
        }
        Ok(item)
    }

    /// Closes an open operator item with what was done; an item no longer open (settled by
    /// someone else meanwhile) is a [`BatchError::Conflict`].
    pub fn resolve_manual_item(
        &mut self,
        id: i64,
        resolution: &str,
        audit_id: i64,
    ) -> BatchResult<()> {
        let changed = self
            .tx
            .prepare_cached(
                "UPDATE manual_items SET state = 'resolved', resolution = ?2, audit_id = ?3
             WHERE id = ?1 AND state = 'open'",
            )?
            .execute(params![id, resolution, audit_id])?;
        self.expect_one(
            changed,
            || self.state_of("manual_items", "id", id, "operator item"),
            "open",
        )
    }

    /// Moves period `id` from `from` to `state` (`open` → `clearing`).
    pub fn set_period_state(&mut self, id: i64, from: &str, state: &str) -> BatchResult<()> {
        let changed = self
            .tx
            .prepare_cached("UPDATE periods SET state = ?2 WHERE id = ?1 AND state = ?3")?
            .execute(params![id, state, from])?;
        self.expect_one(
            changed,
            || self.state_of("periods", "id", id, "period"),
            from,
        )
    }

    /// `Ok` when a compare-and-set changed its one row; otherwise the row was not in `expected`
    /// (`now` says what it is): someone else acted on it first.
    pub(super) fn expect_one(
        &self,
        changed: usize,
        now: impl FnOnce() -> String,
        expected: &str,
    ) -> BatchResult<()> {
        if changed == 1 {
            return Ok(());
        }
        Err(BatchError::Conflict(format!(
            "{}, not {expected}: it was acted on meanwhile",
            now()
        )))
    }

    /// `what 5 is `state``, for a conflict's message.
    pub(super) fn state_of(&self, table: &str, key: &str, id: i64, what: &str) -> String {
        let state: Option<String> = self
            .tx
            .query_row(
                &format!("SELECT state FROM {table} WHERE {key} = ?1"),
                [id],
                |r| r.get(0),
            )
            .optional()
            .unwrap_or(None);
        match state {
            Some(state) => format!("{what} {id} is {state}"),
            None => format!("there is no {what} {id}"),
        }
    }

    /// Closes period `id` with its report (and the operator's count, if entered) and opens the
    /// next; returns the new period's id.
    pub fn close_period(
        &mut self,
        id: i64,
        counted_fen: Option<u64>,
        report: &str,
    ) -> BatchResult<i64> {
        let changed = self
            .tx
            .prepare_cached(
                "UPDATE periods SET state = 'closed',
                    closed_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now'),
                    counted_fen = ?2, report = ?3
             WHERE id = ?1 AND state = 'clearing'",
            )?
            .execute(params![id, counted_fen.map(|c| c as i64), report])?;
        self.expect_one(
            changed,
            || self.state_of("periods", "id", id, "period"),
            "clearing",
        )?;
        self.tx
            .prepare_cached(
                "INSERT INTO periods (opened_at, state)
             VALUES (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'), 'open')",
            )?
            .execute([])?;
        Ok(self.tx.last_insert_rowid())
    }

    /// Queues period `period`'s report to `backend` for sending (again, if it was sent before).
    pub fn queue_reconciliation(
        &mut self,
        period: i64,
        backend: &str,
        request_json: &str,
        audit_id: i64,
    ) -> BatchResult<()> {
        self.tx
            .prepare_cached(
                "INSERT INTO reconciliations (period_id, backend, request_json, state, audit_id)
                 VALUES (?1, ?2, ?3, 'queued', ?4)
                 ON CONFLICT (period_id, backend) DO UPDATE SET
                    request_json = excluded.request_json, state = 'queued', answer_json = NULL,
                    audit_id = excluded.audit_id",
            )?
            .execute(params![period, backend, request_json, audit_id])?;
        Ok(())
    }

    /// Records `backend`'s answer to period `period`'s report: `matched` or `differs`.
    pub fn reconciliation_answered(
        &mut self,
        period: i64,
        backend: &str,
        state: &str,
        answer_json: &str,
        audit_id: i64,
    ) -> BatchResult<()> {
        self.tx
            .prepare_cached(
                "UPDATE reconciliations SET state = ?3, answer_json = ?4, audit_id = ?5
                 WHERE period_id = ?1 AND backend = ?2",
            )?
            .execute(params![period, backend, state, answer_json, audit_id])?;
        Ok(())
    }

    /// Records a bank-card debit about to be sent, in state `intent`, in the current period;
    /// returns its id.
    pub fn record_debit(&mut self, d: &NewDebit<'_>, audit_id: i64) -> BatchResult<i64> {
        self.tx
            .prepare_cached(
                "INSERT INTO debits (period_id, batch, stan, amount_fen, pan_masked, card_json,
                                     state, audit_id)
                 VALUES ((SELECT max(id) FROM periods), ?1, ?2, ?3, ?4, ?5, 'intent', ?6)",
            )?
            .execute(params![
                d.batch,
                d.stan,
                d.amount_fen as i64,
                d.pan_masked,
                d.card_json,
                audit_id
            ])?;
        Ok(self.tx.last_insert_rowid())
    }

    /// Moves debit `id` from one of `from` to `state`, with its sale and approval once there
    /// are; a debit that can no longer be reversed (`declined`, `failed`, `reversed`,
    /// `reversal-ended`, or sold) forgets the card.
    pub fn debit_state(
        &mut self,
        id: i64,
        from: &[&str],
        state: &str,
        serial: Option<u64>,
        rrn: Option<&str>,
        audit_id: i64,
    ) -> BatchResult<()> {
        let changed = self
            .tx
            .prepare_cached(
                "UPDATE debits SET state = ?2, serial = coalesce(?3, serial),
                        rrn = coalesce(?4, rrn), audit_id = ?5,
                        card_json = CASE WHEN ?2 IN ('intent', 'reversing') THEN card_json END
                 WHERE id = ?1 AND state IN (SELECT value FROM json_each(?6))",
            )?
            .execute(params![
                id,
                state,
                serial.map(|s| s as i64),
                rrn,
                audit_id,
                states_json(from)
            ])?;
        self.expect_one(
            changed,
            || self.state_of("debits", "id", id, "debit"),
            &from.join(" or "),
        )
    }

    /// Counts one more try at reversing debit `id`, `refused` by the acquirer or not; returns
    /// the refusals so far.
    pub fn count_reversal_attempt(&mut self, id: i64, refused: bool) -> BatchResult<u32> {
        Ok(self.tx.query_row(
            "UPDATE debits SET reversal_attempts = reversal_attempts + 1,
                    reversal_refusals = reversal_refusals + ?2
             WHERE id = ?1 RETURNING reversal_refusals",
            params![id, i64::from(refused)],
            |r| r.get(0),
        )?)
    }

    /// Moves a sale from one of `from` to `state` (with its grant, once there is one), as audit
    /// row `audit_id` says. A sale that becomes `written` owes the backend a new confirmation.
    /// A sale in none of `from` is a [`BatchError::Conflict`].
    pub fn sale_state(
        &mut self,
        serial: u64,
        from: &[&str],
        state: &str,
        grant_json: Option<&str>,
        audit_id: i64,
    ) -> BatchResult<()> {
        let changed = self
            .tx
            .prepare_cached(
                "UPDATE sales SET state = ?2, grant_json = coalesce(?3, grant_json), audit_id = ?4,
                        confirmed = CASE WHEN ?2 = 'written' THEN 0 ELSE confirmed END
             WHERE serial = ?1 AND state IN (SELECT value FROM json_each(?5))",
            )?
            .execute(params![
                serial as i64,
                state,
                grant_json,
                audit_id,
                states_json(from)
            ])?;
        self.expect_one(
            changed,
            || self.state_of("sales", "serial", serial as i64, "sale"),
            &from.join(" or "),
        )
    }

    /// Counts one more re-write of sale `serial` the card refused; returns the count so far.
    pub fn count_rewrite_attempt(&mut self, serial: u64) -> BatchResult<u32> {
        Ok(self.tx.query_row(
            "UPDATE sales SET rewrite_attempts = rewrite_attempts + 1 WHERE serial = ?1
             RETURNING rewrite_attempts",
            [serial as i64],
            |r| r.get(0),
        )?)
    }

    /// The statement-level access the engine's own tables will need.
    pub fn sql(&self) -> &rusqlite::Transaction<'_> {
        &self.tx
    }
}
