//! The journal: the kiosk's durable memory of money, in SQLite (WAL, `synchronous=FULL`, both
//! read back at open). Every entry is an audit row in one hash chain: each row carries the hash
//! of the row before it, so an edited, inserted or deleted row is found by [`Journal::verify`].
//! Serials are allocated here, never from the clock. Lifetime counters never decrease.
//!
//! A commit that fails (an I/O error, a full disk) stops the journal: every later call is refused
//! with the reason, so nothing carries on as if the commit had succeeded.

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

mod batch;
mod bill_payments;
mod fleet_rows;
mod remote_commands;
mod schema;

use batch::states_json;
pub use batch::{Batch, BatchError, BatchResult};
pub use bill_payments::{BILL_STATES, BillPaymentRow, NewBillPayment};
use schema::MIGRATIONS;
pub use schema::SCHEMA_VERSION;

/// A new backend sale, as [`Batch::record_sale`] records it.
pub struct NewSale<'a> {
    pub serial: u64,
    /// `cash` or `bank-card`.
    pub payment: &'a str,
    pub card_serial: &'a str,
    pub utility: &'a str,
    pub paid_fen: u64,
    /// The backend request as sent, JSON.
    pub request_json: &'a str,
}

/// A bank-card debit, as [`Batch::record_debit`] records it.
pub struct NewDebit<'a> {
    pub batch: u32,
    pub stan: u32,
    pub amount_fen: u64,
    pub pan_masked: &'a str,
    /// The card a reversal repeats, JSON.
    pub card_json: &'a str,
}

/// A bank-card debit and where it stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DebitRow {
    pub id: i64,
    pub batch: u32,
    pub stan: u32,
    pub amount_fen: u64,
    pub pan_masked: String,
    pub card_json: Option<String>,
    /// `intent`, `approved`, `declined`, `failed`, `reversing` or `reversed`.
    pub state: String,
    /// The sale it paid for, once approved.
    pub serial: Option<u64>,
    /// The bill payment it paid for, once approved.
    pub bill_serial: Option<u64>,
    pub reversal_attempts: u32,
}

/// An operator item, as [`Batch::open_manual_item`] records it.
pub struct NewItem<'a> {
    pub serial: Option<u64>,
    pub payment: Option<i64>,
    /// A banknote the acceptor did not credit, which may be in the kiosk.
    pub caught_fen: Option<u64>,
    /// The debit a reversal item is about.
    pub debit: Option<i64>,
    pub card_serial: Option<&'a str>,
    pub reason: &'a str,
    /// The note may still be in the acceptor: its arrival is matched to this item.
    pub awaiting_note: bool,
    /// The bill payment the item is about.
    pub bill: Option<u64>,
}

impl<'a> NewItem<'a> {
    /// An item about sale `serial`, for the customer with `card`.
    pub fn sale(serial: u64, card: Option<&'a str>, reason: &'a str) -> Self {
        NewItem {
            serial: Some(serial),
            payment: None,
            caught_fen: None,
            debit: None,
            card_serial: card,
            reason,
            awaiting_note: false,
            bill: None,
        }
    }

    /// An item about a banknote of `fen` (0: of unknown value) the acceptor may hold without
    /// having credited it; `payment` and `card` when it is a known customer's.
    pub fn caught(fen: u64, payment: Option<i64>, card: Option<&'a str>, reason: &'a str) -> Self {
        NewItem {
            serial: None,
            payment,
            caught_fen: Some(fen),
            debit: None,
            card_serial: card,
            reason,
            awaiting_note: false,
            bill: None,
        }
    }

    /// As [`NewItem::caught`], for a note that may still be in the acceptor (left in escrow,
    /// or handed over mid-flight): when it lands in the cash box or is given back, the item
    /// learns so.
    pub fn note_in_acceptor(
        fen: u64,
        payment: Option<i64>,
        card: Option<&'a str>,
        reason: &'a str,
    ) -> Self {
        NewItem {
            awaiting_note: true,
            ..NewItem::caught(fen, payment, card, reason)
        }
    }

    /// An item about the reversal of debit `debit`.
    pub fn reversal(debit: i64, reason: &'a str) -> Self {
        NewItem {
            serial: None,
            payment: None,
            caught_fen: None,
            debit: Some(debit),
            card_serial: None,
            reason,
            awaiting_note: false,
            bill: None,
        }
    }

    /// An item about bill payment `serial`, for account `account`.
    pub fn bill(serial: u64, account: &'a str, reason: &'a str) -> Self {
        NewItem {
            serial: None,
            payment: None,
            caught_fen: None,
            debit: None,
            card_serial: Some(account),
            reason,
            awaiting_note: false,
            bill: Some(serial),
        }
    }

    /// An item about payment `payment`, money taken with no sale made.
    pub fn payment(payment: i64, card: &'a str, reason: &'a str) -> Self {
        NewItem {
            serial: None,
            payment: Some(payment),
            caught_fen: None,
            debit: None,
            card_serial: Some(card),
            reason,
            awaiting_note: false,
            bill: None,
        }
    }
}

/// A clearing period.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Period {
    pub id: i64,
    pub opened_at: String,
    pub closed_at: Option<String>,
    /// `open`, `clearing` or `closed`.
    pub state: String,
    pub counted_fen: Option<u64>,
    /// The closing report, as JSON.
    pub report: Option<String>,
}

/// A closed period's report to one backend, as [`Journal::reconciliations`] reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reconciliation {
    pub period: i64,
    pub backend: String,
    /// The period report sent, JSON.
    pub request_json: String,
    /// `queued`, `matched` or `differs`.
    pub state: String,
    /// The backend's answer, JSON, once it gave one.
    pub answer_json: Option<String>,
}

fn period_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Period> {
    Ok(Period {
        id: r.get(0)?,
        opened_at: r.get(1)?,
        closed_at: r.get(2)?,
        state: r.get(3)?,
        counted_fen: r.get::<_, Option<i64>>(4)?.map(|c| c as u64),
        report: r.get(5)?,
    })
}

/// Sales of one payment kind in one state, counted.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SalesByState {
    pub payment: String,
    pub state: String,
    pub count: u64,
    pub paid_fen: u64,
}

/// What one period took and sold.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PeriodTotals {
    pub period_id: i64,
    pub banknotes: u64,
    pub cash_in_fen: u64,
    pub sales: Vec<SalesByState>,
}

/// Something the kiosk could not finish on its own.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ManualItem {
    pub id: i64,
    pub serial: Option<u64>,
    pub card_serial: Option<String>,
    pub reason: String,
    pub state: String,
    pub resolution: Option<String>,
    /// A banknote the acceptor did not credit, which may be in the kiosk (0: of unknown value).
    pub caught_fen: Option<u64>,
    /// The payment with no sale the item is about.
    pub payment_id: Option<i64>,
    /// The debit whose reversal the item is about.
    pub debit_id: Option<i64>,
    /// The bill payment the item is about.
    pub bill_serial: Option<u64>,
}

/// A payment left open: money possibly taken, no sale allocated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenPayment {
    pub id: i64,
    /// The card's serial, or for a bill payment the account number.
    pub card_serial: String,
    /// For a bill payment (缴费), not a sale.
    pub for_bill: bool,
    pub paid_fen: u64,
    /// A banknote decided for stacking and never seen credited or given back.
    pub escrow_fen: Option<u64>,
}

/// The span [`Journal::card_bought`] counts over, in the kiosk's local time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CardSpan {
    Day,
    Month,
}

/// Where one backend sale stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaleRow {
    pub serial: u64,
    pub card_serial: String,
    pub utility: String,
    pub paid_fen: u64,
    /// `intent`, `pending`, `granted`, `written`, `refused`, `never-reached`, `refunded` or
    /// `manual`.
    pub state: String,
    pub grant_json: Option<String>,
    pub request_json: String,
    pub resell_attempts: u32,
    /// Whether an automatic re-sell may be tried now (its backoff has passed).
    pub resell_due: bool,
    /// Whether the backend acknowledged the write confirmation of the current state.
    pub confirmed: bool,
    /// Re-writes the card refused so far.
    pub rewrite_attempts: u32,
    /// When the sale entered its state (its audit row's time, UTC).
    pub state_at: String,
}

/// The lifetime counter of audit rows written.
const AUDIT_ROWS: &str = "lifetime.audit_rows";

/// The hash before the first row.
use selfvend_fleet_wire::GENESIS;

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("journal {path}: {cause}")]
    Open {
        path: PathBuf,
        cause: rusqlite::Error,
    },
    #[error(
        "journal {path}: not durable (journal_mode={journal_mode}, synchronous={synchronous}); \
         the kiosk needs WAL with synchronous=FULL"
    )]
    NotDurable {
        path: PathBuf,
        journal_mode: String,
        synchronous: i64,
    },
    #[error(
        "journal {path}: schema version {found} is newer than this kiosk's ({SCHEMA_VERSION}); \
         run the kiosk version that wrote it"
    )]
    SchemaTooNew { path: PathBuf, found: i64 },
    /// The commit did not happen; the journal is stopped.
    #[error("journal {path}: commit failed, the journal is stopped: {cause}")]
    CommitFailed { path: PathBuf, cause: String },
    /// A compare-and-set found a row in another state than expected: nothing was written.
    #[error("journal {path}: {what}")]
    Conflict { path: PathBuf, what: String },
    /// A commit failed earlier; nothing more is written until the kiosk restarts.
    #[error("journal {path} is stopped since a failed commit ({reason}); restart the kiosk")]
    Stopped { path: PathBuf, reason: String },
    #[error("journal {path}: {cause}")]
    Read {
        path: PathBuf,
        cause: rusqlite::Error,
    },
    #[error("journal {path}: entry body is not JSON: {cause}")]
    Body {
        path: PathBuf,
        cause: serde_json::Error,
    },
}

/// One audit row.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Entry {
    pub id: i64,
    /// UTC, ISO 8601 to the millisecond.
    pub at: String,
    pub kind: String,
    pub body: serde_json::Value,
    pub prev_hash: String,
    pub hash: String,
}

/// What is wrong with one row of the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub row: i64,
    pub what: String,
}

/// The result of walking the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verification {
    pub rows: u64,
    pub problems: Vec<Problem>,
}

fn sale_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<SaleRow> {
    Ok(SaleRow {
        serial: r.get::<_, i64>(0)? as u64,
        card_serial: r.get(1)?,
        utility: r.get(2)?,
        paid_fen: r.get::<_, i64>(3)? as u64,
        state: r.get(4)?,
        grant_json: r.get(5)?,
        request_json: r.get(6)?,
        resell_attempts: r.get(7)?,
        resell_due: r.get(8)?,
        confirmed: r.get(9)?,
        rewrite_attempts: r.get(10)?,
        state_at: r.get(11)?,
    })
}

fn item_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ManualItem> {
    Ok(ManualItem {
        id: r.get(0)?,
        serial: r.get::<_, Option<i64>>(1)?.map(|s| s as u64),
        card_serial: r.get(2)?,
        reason: r.get(3)?,
        state: r.get(4)?,
        resolution: r.get(5)?,
        caught_fen: r.get::<_, Option<i64>>(6)?.map(|f| f as u64),
        payment_id: r.get(7)?,
        debit_id: r.get(8)?,
        bill_serial: r.get::<_, Option<i64>>(9)?.map(|s| s as u64),
    })
}

/// An audit row as stored: id, at, kind, body, prev_hash, hash.
type RawRow = (i64, String, String, String, String, String);

fn raw_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RawRow> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
    ))
}

/// The chain's rule is the fleet's too: one definition, in the wire crate.
use selfvend_fleet_wire::row_hash;

/// The kiosk's journal.
pub struct Journal {
    db: Connection,
    path: PathBuf,
    stopped: Option<String>,
    stats: JournalStats,
    /// Entries that need not be durable on their own, written with the next commit.
    pending_notes: Vec<(String, serde_json::Value)>,
}

/// What the journal has cost this process: commits (each one fsync of the WAL) and their time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JournalStats {
    pub commits: u64,
    pub commit_time: std::time::Duration,
}

impl Journal {
    /// Opens (creating or migrating) the journal at `path` and checks it is durable.
    pub fn open(path: &Path) -> Result<Journal, JournalError> {
        let open = |cause| JournalError::Open {
            path: path.to_path_buf(),
            cause,
        };
        let mut db = Connection::open(path).map_err(open)?;
        // The kiosk and an operator's CLI write one journal: a commit waits for the other's.
        db.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(open)?;
        db.execute_batch(
            // secure_delete: a card number wiped from a debit does not linger in free pages.
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON;
             PRAGMA secure_delete=ON;",
        )
        .map_err(open)?;
        let journal_mode: String = db
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .map_err(open)?;
        let synchronous: i64 = db
            .query_row("PRAGMA synchronous", [], |r| r.get(0))
            .map_err(open)?;
        // synchronous: 2 = FULL, 3 = EXTRA (also durable).
        if !journal_mode.eq_ignore_ascii_case("wal") || synchronous < 2 {
            return Err(JournalError::NotDurable {
                path: path.to_path_buf(),
                journal_mode,
                synchronous,
            });
        }
        let found: i64 = db
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(open)?;
        if found > SCHEMA_VERSION {
            return Err(JournalError::SchemaTooNew {
                path: path.to_path_buf(),
                found,
            });
        }
        for (version, migration) in MIGRATIONS.iter().enumerate().skip(found as usize) {
            let tx = db.transaction().map_err(open)?;
            tx.execute_batch(migration).map_err(open)?;
            tx.pragma_update(None, "user_version", version as i64 + 1)
                .map_err(open)?;
            tx.commit().map_err(open)?;
        }
        Ok(Journal {
            db,
            path: path.to_path_buf(),
            stopped: None,
            stats: JournalStats::default(),
            pending_notes: Vec::new(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn stats(&self) -> JournalStats {
        self.stats
    }

    /// Runs `f` in one durable transaction. If the commit fails the journal stops: this call
    /// and every later one return an error, and the caller must make no further effect. A
    /// [`BatchError::Conflict`] rolls the batch back and leaves the journal running.
    pub fn commit<R>(
        &mut self,
        f: impl FnOnce(&mut Batch<'_>) -> BatchResult<R>,
    ) -> Result<R, JournalError> {
        if let Some(reason) = &self.stopped {
            return Err(JournalError::Stopped {
                path: self.path.clone(),
                reason: reason.clone(),
            });
        }
        let started = std::time::Instant::now();
        let result = (|| -> BatchResult<R> {
            let tx = self
                .db
                .transaction_with_behavior(TransactionBehavior::Immediate)?;
            // The chain's head is read inside the transaction: another process (an operator's
            // CLI beside the running kiosk) may have written since this one last did.
            let last_hash = tx
                .query_row("SELECT hash FROM audit ORDER BY id DESC LIMIT 1", [], |r| {
                    r.get(0)
                })
                .optional()?
                .unwrap_or_else(|| GENESIS.to_string());
            let mut batch = Batch { tx, last_hash };
            for (kind, body) in &self.pending_notes {
                batch.append(kind, body)?;
            }
            let r = f(&mut batch)?;
            batch.tx.commit()?;
            Ok(r)
        })();
        self.stats.commits += 1;
        self.stats.commit_time += started.elapsed();
        match result {
            Ok(r) => {
                self.pending_notes.clear();
                Ok(r)
            }
            Err(BatchError::Conflict(what)) => Err(JournalError::Conflict {
                path: self.path.clone(),
                what,
            }),
            Err(BatchError::Sql(cause)) => {
                self.stopped = Some(cause.to_string());
                Err(JournalError::CommitFailed {
                    path: self.path.clone(),
                    cause: cause.to_string(),
                })
            }
        }
    }

    /// Notes an entry that records no intent (nothing outside the kiosk depends on it): it is
    /// written, in order, with the next commit. Saves an fsync per step that needs none.
    pub fn note(&mut self, kind: &str, body: serde_json::Value) {
        self.pending_notes.push((kind.to_string(), body));
    }

    /// Writes the notes waiting for a commit.
    pub fn flush(&mut self) -> Result<(), JournalError> {
        if self.pending_notes.is_empty() {
            return Ok(());
        }
        self.commit(|_| Ok(()))
    }

    /// Appends one entry in its own commit.
    pub fn append(&mut self, kind: &str, body: serde_json::Value) -> Result<i64, JournalError> {
        self.commit(|b| b.append(kind, &body))
    }

    /// Entries from `from_id` on, at most `limit`.
    pub fn entries(&self, from_id: i64, limit: usize) -> Result<Vec<Entry>, JournalError> {
        let mut stmt = self
            .db
            .prepare(
                "SELECT id, at, kind, body, prev_hash, hash FROM audit WHERE id >= ?1
                 ORDER BY id LIMIT ?2",
            )
            .map_err(|cause| self.read_error(cause))?;
        let rows = stmt
            .query_map(params![from_id, limit as i64], raw_row)
            .map_err(|cause| self.read_error(cause))?;
        let mut out = Vec::new();
        for row in rows {
            let (id, at, kind, body, prev_hash, hash) = row.map_err(|c| self.read_error(c))?;
            out.push(Entry {
                id,
                at,
                kind,
                body: serde_json::from_str(&body).map_err(|cause| JournalError::Body {
                    path: self.path.clone(),
                    cause,
                })?,
                prev_hash,
                hash,
            });
        }
        Ok(out)
    }

    /// The newest audit row's id (0 for an empty journal).
    pub fn last_id(&self) -> Result<i64, JournalError> {
        self.db
            .query_row("SELECT coalesce(max(id), 0) FROM audit", [], |r| r.get(0))
            .map_err(|cause| self.read_error(cause))
    }

    /// The newest entry of `kind`.
    pub fn last_entry(&self, kind: &str) -> Result<Option<Entry>, JournalError> {
        let id: Option<i64> = self
            .db
            .query_row("SELECT max(id) FROM audit WHERE kind = ?1", [kind], |r| {
                r.get(0)
            })
            .map_err(|cause| self.read_error(cause))?;
        match id {
            Some(id) => Ok(self.entries(id, 1)?.into_iter().next()),
            None => Ok(None),
        }
    }

    /// A counter's value (0 when never counted).
    pub fn counter(&self, name: &str) -> Result<i64, JournalError> {
        self.db
            .query_row("SELECT value FROM counters WHERE name = ?1", [name], |r| {
                r.get(0)
            })
            .optional()
            .map(|v| v.unwrap_or(0))
            .map_err(|cause| self.read_error(cause))
    }

    /// Bank-card debits in any of `states`, oldest first.
    pub fn debits(&self, states: &[&str]) -> Result<Vec<DebitRow>, JournalError> {
        let read = |cause| self.read_error(cause);
        let mut stmt = self
            .db
            .prepare_cached(
                "SELECT id, batch, stan, amount_fen, pan_masked, card_json, state, serial,
                        reversal_attempts, bill_serial
                 FROM debits WHERE state IN (SELECT value FROM json_each(?1)) ORDER BY id",
            )
            .map_err(read)?;
        let states = serde_json::to_string(states).expect("a list of names is JSON");
        let rows = stmt
            .query_map([states], |r| {
                Ok(DebitRow {
                    id: r.get(0)?,
                    batch: r.get(1)?,
                    stan: r.get(2)?,
                    amount_fen: r.get::<_, i64>(3)? as u64,
                    pan_masked: r.get(4)?,
                    card_json: r.get(5)?,
                    state: r.get(6)?,
                    serial: r.get::<_, Option<i64>>(7)?.map(|s| s as u64),
                    reversal_attempts: r.get(8)?,
                    bill_serial: r.get::<_, Option<i64>>(9)?.map(|s| s as u64),
                })
            })
            .map_err(read)?;
        rows.collect::<rusqlite::Result<_>>().map_err(read)
    }

    /// Reconciliations of closed periods, oldest first: all of them, or only those still
    /// `queued` (not yet answered by their backend).
    pub fn reconciliations(&self, queued_only: bool) -> Result<Vec<Reconciliation>, JournalError> {
        let read = |cause| self.read_error(cause);
        let mut stmt = self
            .db
            .prepare_cached(
                "SELECT period_id, backend, request_json, state, answer_json FROM reconciliations
                 WHERE state = 'queued' OR NOT ?1 ORDER BY period_id, rowid",
            )
            .map_err(read)?;
        stmt.query_map([queued_only], |r| {
            Ok(Reconciliation {
                period: r.get(0)?,
                backend: r.get(1)?,
                request_json: r.get(2)?,
                state: r.get(3)?,
                answer_json: r.get(4)?,
            })
        })
        .and_then(|rows| rows.collect())
        .map_err(read)
    }

    /// Sales in any of `states`, oldest first; `card_serial` narrows them to one card.
    pub fn sales(
        &self,
        states: &[&str],
        card_serial: Option<&str>,
    ) -> Result<Vec<SaleRow>, JournalError> {
        let read = |cause| self.read_error(cause);
        let mut stmt = self
            .db
            .prepare_cached(
                "SELECT serial, card_serial, utility, paid_fen, state, grant_json, request_json,
                        resell_attempts,
                        coalesce(next_resell_at <= strftime('%Y-%m-%dT%H:%M:%fZ', 'now'), 1),
                        confirmed, rewrite_attempts,
                        (SELECT at FROM audit WHERE id = sales.audit_id)
                 FROM sales WHERE state IN (SELECT value FROM json_each(?1))
                   AND (?2 IS NULL OR card_serial = ?2)
                 ORDER BY serial",
            )
            .map_err(read)?;
        stmt.query_map(params![states_json(states), card_serial], sale_row)
            .map_err(read)?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(read)
    }

    /// What card `card_serial` bought at this kiosk in the current local day (or month), in
    /// fen: every sale that may stand (all but refused and refunded ones).
    pub fn card_bought(&self, card_serial: &str, span: CardSpan) -> Result<u64, JournalError> {
        let format = match span {
            CardSpan::Day => "%Y-%m-%d",
            CardSpan::Month => "%Y-%m",
        };
        self.db
            .query_row(
                "SELECT coalesce(sum(s.paid_fen), 0) FROM sales s
                   JOIN serials n ON n.serial = s.serial JOIN audit a ON a.id = n.audit_id
                 WHERE s.card_serial = ?1 AND s.state NOT IN ('refused', 'refunded')
                   AND strftime(?2, a.at, 'localtime') = strftime(?2, 'now', 'localtime')",
                params![card_serial, format],
                |r| r.get::<_, i64>(0),
            )
            .map(|fen| fen as u64)
            .map_err(|cause| self.read_error(cause))
    }

    /// Sale `serial`, in whatever state.
    pub fn sale(&self, serial: u64) -> Result<Option<SaleRow>, JournalError> {
        self.db
            .query_row(
                "SELECT serial, card_serial, utility, paid_fen, state, grant_json, request_json,
                        resell_attempts,
                        coalesce(next_resell_at <= strftime('%Y-%m-%dT%H:%M:%fZ', 'now'), 1),
                        confirmed, rewrite_attempts,
                        (SELECT at FROM audit WHERE id = sales.audit_id)
                 FROM sales WHERE serial = ?1",
                [serial as i64],
                sale_row,
            )
            .optional()
            .map_err(|cause| self.read_error(cause))
    }

    /// Sales in `state` that no operator item was ever opened about.
    pub fn sales_without_item(&self, state: &str) -> Result<Vec<SaleRow>, JournalError> {
        let read = |cause| self.read_error(cause);
        let mut stmt = self
            .db
            .prepare(
                "SELECT serial, card_serial, utility, paid_fen, state, grant_json, request_json,
                        resell_attempts,
                        coalesce(next_resell_at <= strftime('%Y-%m-%dT%H:%M:%fZ', 'now'), 1),
                        confirmed, rewrite_attempts,
                        (SELECT at FROM audit WHERE id = sales.audit_id)
                 FROM sales WHERE state = ?1
                   AND NOT EXISTS (SELECT 1 FROM manual_items m WHERE m.serial = sales.serial)
                 ORDER BY serial",
            )
            .map_err(read)?;
        stmt.query_map([state], sale_row)
            .map_err(read)?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(read)
    }

    /// The period money is counted in now (open, or being cleared).
    pub fn current_period(&self) -> Result<Period, JournalError> {
        self.db
            .query_row(
                "SELECT id, opened_at, closed_at, state, counted_fen, report FROM periods
                 ORDER BY id DESC LIMIT 1",
                [],
                period_row,
            )
            .map_err(|cause| self.read_error(cause))
    }

    /// A period by id.
    pub fn period(&self, id: i64) -> Result<Option<Period>, JournalError> {
        self.db
            .query_row(
                "SELECT id, opened_at, closed_at, state, counted_fen, report FROM periods
                 WHERE id = ?1",
                [id],
                period_row,
            )
            .optional()
            .map_err(|cause| self.read_error(cause))
    }

    /// What period `id` took and sold, from the journal's own rows.
    pub fn period_totals(&self, id: i64) -> Result<PeriodTotals, JournalError> {
        let read = |cause| self.read_error(cause);
        let (notes, cash_in): (i64, i64) = self
            .db
            .query_row(
                "SELECT count(*), coalesce(sum(fen), 0) FROM banknotes WHERE period_id = ?1",
                [id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .map_err(read)?;
        let mut stmt = self
            .db
            .prepare(
                "SELECT payment, state, count(*), coalesce(sum(paid_fen), 0) FROM sales
                 WHERE period_id = ?1 GROUP BY payment, state ORDER BY payment, state",
            )
            .map_err(read)?;
        let sales = stmt
            .query_map([id], |r| {
                Ok(SalesByState {
                    payment: r.get(0)?,
                    state: r.get(1)?,
                    count: r.get::<_, i64>(2)? as u64,
                    paid_fen: r.get::<_, i64>(3)? as u64,
                })
            })
            .map_err(read)?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(read)?;
        Ok(PeriodTotals {
            period_id: id,
            banknotes: notes as u64,
            cash_in_fen: cash_in as u64,
            sales,
        })
    }

    /// Payments left open (money possibly taken, no sale allocated).
    pub fn open_payments(&self) -> Result<Vec<OpenPayment>, JournalError> {
        let mut stmt = self
            .db
            .prepare(
                "SELECT id, card_serial, paid_fen, escrow_fen, for_bill FROM payments
                 WHERE state = 'open' ORDER BY id",
            )
            .map_err(|cause| self.read_error(cause))?;
        let rows = stmt
            .query_map([], |r| {
                Ok(OpenPayment {
                    id: r.get(0)?,
                    card_serial: r.get(1)?,
                    paid_fen: r.get::<_, i64>(2)? as u64,
                    escrow_fen: r.get::<_, Option<i64>>(3)?.map(|f| f as u64),
                    for_bill: r.get(4)?,
                })
            })
            .map_err(|cause| self.read_error(cause))?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .map_err(|cause| self.read_error(cause))
    }

    /// The payment an operator item is about, when it is about one: (id, paid fen, state).
    pub fn item_payment(&self, item: i64) -> Result<Option<(i64, u64, String)>, JournalError> {
        self.db
            .query_row(
                "SELECT p.id, p.paid_fen, p.state FROM manual_items m
                 JOIN payments p ON p.id = m.payment_id WHERE m.id = ?1",
                [item],
                |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64, r.get(2)?)),
            )
            .optional()
            .map_err(|cause| self.read_error(cause))
    }

    /// Operator items: the open ones, or all of them.
    pub fn manual_items(&self, all: bool) -> Result<Vec<ManualItem>, JournalError> {
        let mut stmt = self
            .db
            .prepare(
                "SELECT id, serial, card_serial, reason, state, resolution, caught_fen, payment_id,
                        debit_id, bill_serial
                 FROM manual_items
                 WHERE ?1 OR state = 'open' ORDER BY id",
            )
            .map_err(|cause| self.read_error(cause))?;
        let rows = stmt
            .query_map([all], item_row)
            .map_err(|cause| self.read_error(cause))?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .map_err(|cause| self.read_error(cause))
    }

    /// Operator item `id`, open or resolved.
    pub fn manual_item(&self, id: i64) -> Result<Option<ManualItem>, JournalError> {
        self.db
            .query_row(
                "SELECT id, serial, card_serial, reason, state, resolution, caught_fen, payment_id,
                        debit_id, bill_serial
                 FROM manual_items WHERE id = ?1",
                [id],
                item_row,
            )
            .optional()
            .map_err(|cause| self.read_error(cause))
    }

    /// Walks the whole chain and names every row that is not what was written.
    pub fn verify(&self) -> Result<Verification, JournalError> {
        let mut stmt = self
            .db
            .prepare("SELECT id, at, kind, body, prev_hash, hash FROM audit ORDER BY id")
            .map_err(|cause| self.read_error(cause))?;
        let rows = stmt
            .query_map([], raw_row)
            .map_err(|cause| self.read_error(cause))?;
        let mut problems = Vec::new();
        let mut expected_id = 1i64;
        let mut expected_prev = GENESIS.to_string();
        let mut count = 0u64;
        for row in rows {
            let (id, at, kind, body, prev, hash) = row.map_err(|c| self.read_error(c))?;
            count += 1;
            if id > expected_id {
                problems.push(Problem {
                    row: id,
                    what: format!(
                        "rows {expected_id} to {} before it are missing (deleted)",
                        id - 1
                    ),
                });
            } else if prev != expected_prev {
                problems.push(Problem {
                    row: id,
                    what: "does not follow the row before it (a row before it was inserted or \
                           rewritten)"
                        .into(),
                });
            }
            if row_hash(&prev, id, &at, &kind, &body) != hash {
                problems.push(Problem {
                    row: id,
                    what: format!("was edited: its contents ({kind}) do not match its hash"),
                });
            }
            expected_id = id + 1;
            expected_prev = hash;
        }
        // The row count is also kept as a lifetime counter, which can never go down: deleting
        // rows at the end of the chain shows as a shortfall.
        let written = self.counter(AUDIT_ROWS)?;
        if (count as i64) < written {
            problems.push(Problem {
                row: expected_id,
                what: format!(
                    "the journal wrote {written} rows but holds {count}: rows from {expected_id} \
                     on are missing (deleted)"
                ),
            });
        }
        Ok(Verification {
            rows: count,
            problems,
        })
    }

    fn read_error(&self, cause: rusqlite::Error) -> JournalError {
        JournalError::Read {
            path: self.path.clone(),
            cause,
        }
    }

    /// Limits the journal file to `pages` pages, as a full disk would (for tests of a failed
    /// commit).
    pub fn limit_pages(&self, pages: u64) -> Result<(), JournalError> {
        self.db
            .query_row(&format!("PRAGMA max_page_count = {pages}"), [], |_| Ok(()))
            .map_err(|cause| self.read_error(cause))
    }
}

// Reads for clearing (清机), kept together: `clearing` totals a period per business type and
// per utility (each backend is told only of its own utilities' sales).

/// Sales of one payment kind, utility and state in one period, counted.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SalesByUtility {
    /// A bill payment's rather than a sale's.
    pub bill: bool,
    /// `cash` or `bank-card`.
    pub payment: String,
    pub utility: String,
    pub state: String,
    pub count: u64,
    pub paid_fen: u64,
}

impl Journal {
    /// Period `id`'s sales and bill payments grouped by payment, utility and state.
    pub fn sales_by_utility(&self, id: i64) -> Result<Vec<SalesByUtility>, JournalError> {
        let read = |cause| self.read_error(cause);
        let mut stmt = self
            .db
            .prepare(
                "SELECT 0, payment, utility, state, count(*), coalesce(sum(paid_fen), 0)
                 FROM sales WHERE period_id = ?1 GROUP BY payment, utility, state
                 UNION ALL
                 SELECT 1, payment, utility, state, count(*), coalesce(sum(paid_fen), 0)
                 FROM bill_payments WHERE period_id = ?1 GROUP BY payment, utility, state
                 ORDER BY 1, 2, 3, 4",
            )
            .map_err(read)?;
        stmt.query_map([id], |r| {
            Ok(SalesByUtility {
                bill: r.get(0)?,
                payment: r.get(1)?,
                utility: r.get(2)?,
                state: r.get(3)?,
                count: r.get::<_, i64>(4)? as u64,
                paid_fen: r.get::<_, i64>(5)? as u64,
            })
        })
        .map_err(read)?
        .collect::<rusqlite::Result<Vec<_>>>()
        .map_err(read)
    }

    /// Open operator items for banknotes the acceptor did not credit.
    pub fn caught_notes(&self) -> Result<crate::clearing::CaughtNotes, JournalError> {
        self.db
            .query_row(
                "SELECT count(*) FILTER (WHERE caught_fen > 0),
                        coalesce(sum(caught_fen), 0),
                        count(*) FILTER (WHERE caught_fen = 0)
                 FROM manual_items WHERE state = 'open' AND caught_fen IS NOT NULL",
                [],
                |r| {
                    Ok(crate::clearing::CaughtNotes {
                        known: r.get::<_, i64>(0)? as u64,
                        known_fen: crate::money::Fen(r.get::<_, i64>(1)? as u64),
                        unknown: r.get::<_, i64>(2)? as u64,
                    })
                },
            )
            .map_err(|cause| self.read_error(cause))
    }

    /// The banknotes period `id` took: how many, and their sum in fen.
    pub fn banknotes_taken(&self, id: i64) -> Result<(u64, u64), JournalError> {
        self.db
            .query_row(
                "SELECT count(*), coalesce(sum(fen), 0) FROM banknotes WHERE period_id = ?1",
                [id],
                |r| Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64)),
            )
            .map_err(|cause| self.read_error(cause))
    }

    /// One of the journal's UTC times (`2026-11-24T01:30:00.123Z`) as the kiosk's local
    /// wall-clock time to the second (`2026-11-24T09:30:00`), as backends and receipts show it;
    /// `None` when `utc` is not a time.
    /// Whole seconds from `utc` (a time the journal wrote) to now, by the journal's clock.
    pub fn seconds_since(&self, utc: &str) -> Result<Option<i64>, JournalError> {
        self.db
            .query_row(
                "SELECT CAST(strftime('%s', 'now') AS INTEGER) - CAST(strftime('%s', ?1) AS INTEGER)",
                [utc],
                |r| r.get(0),
            )
            .map_err(|cause| self.read_error(cause))
    }

    pub fn local_time(&self, utc: &str) -> Result<Option<String>, JournalError> {
        self.db
            .query_row(
                "SELECT strftime('%Y-%m-%dT%H:%M:%S', ?1, 'localtime')",
                [utc],
                |r| r.get(0),
            )
            .map_err(|cause| self.read_error(cause))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A journal as a v3 kiosk left it: a reversal still owed, and a sale written after its
    /// failed write had been confirmed as "not written".
    fn v3_journal(path: &Path) {
        let db = Connection::open(path).unwrap();
        for migration in &MIGRATIONS[..3] {
            db.execute_batch(migration).unwrap();
        }
        db.pragma_update(None, "user_version", 3).unwrap();
        db.execute_batch(
            r#"
            INSERT INTO audit VALUES (1, '2026-11-30T01:00:00.000Z', 'write-confirm-intent',
                '{"serial":1,"written":false}', '0', 'h1');
            INSERT INTO audit VALUES (2, '2026-11-30T01:00:01.000Z', 'write-confirmed',
                '{"serial":1}', 'h1', 'h2');
            INSERT INTO serials VALUES (1, 1), (2, 1);
            INSERT INTO sales (serial, period_id, payment, card_serial, utility, paid_fen, state,
                request_json, confirmed, audit_id)
                VALUES (1, 1, 'cash', 'C1', '3701', 1000, 'written', '{}', 1, 2),
                       (2, 1, 'cash', 'C2', '3701', 500, 'written', '{}', 1, 2);
            INSERT INTO debits (id, period_id, batch, stan, amount_fen, pan_masked, card_json,
                state, reversal_attempts, audit_id)
                VALUES (7, 1, 1, 12, 2000, '622202*********0128', '{"pan":"x"}', 'reversing', 6, 2);
            "#,
        )
        .unwrap();
    }

    #[test]
    fn a_v3_journal_is_migrated_keeping_its_debits_and_owing_the_latest_confirmation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.sqlite");
        v3_journal(&path);
        let mut journal = Journal::open(&path).unwrap();
        let debits = journal.debits(&["reversing"]).unwrap();
        assert_eq!(debits.len(), 1);
        assert_eq!(
            (
                debits[0].id,
                debits[0].stan,
                debits[0].amount_fen,
                debits[0].reversal_attempts
            ),
            (7, 12, 2000, 6)
        );
        assert_eq!(debits[0].card_json.as_deref(), Some(r#"{"pan":"x"}"#));
        // Sale 1's last acknowledged word was "not written": it is confirmed again; sale 2's
        // was "written" and stands.
        let unconfirmed: Vec<u64> = journal
            .sales(&["written"], None)
            .unwrap()
            .into_iter()
            .filter(|s| !s.confirmed)
            .map(|s| s.serial)
            .collect();
        assert_eq!(unconfirmed, [1]);
        // The new ends of a reversal are states the table takes.
        journal
            .commit(|b| {
                b.debit_state(7, &["reversing"], "kept", None, None, 2)?;
                Ok(())
            })
            .unwrap();
        assert_eq!(journal.debits(&["kept"]).unwrap()[0].card_json, None);
    }

    #[test]
    fn a_state_change_from_a_state_the_row_has_left_is_a_conflict_and_the_journal_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.sqlite");
        v3_journal(&path);
        let mut journal = Journal::open(&path).unwrap();
        let conflict = journal.commit(|b| {
            let id = b.append("refund-paid", &serde_json::json!({"serial": 1}))?;
            b.sale_state(1, &["refused", "never-reached"], "refunded", None, id)
        });
        match conflict {
            Err(JournalError::Conflict { what, .. }) => assert_eq!(
                what,
                "sale 1 is written, not refused or never-reached: it was acted on meanwhile"
            ),
            other => panic!("expected a conflict, got {other:?}"),
        }
        // Nothing of the batch was written, and the journal still commits.
        assert_eq!(journal.last_entry("refund-paid").unwrap(), None);
        journal.append("note", serde_json::json!({})).unwrap();
    }
}
