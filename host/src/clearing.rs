//! Clearing (清机): an operator, authenticated by their PIN, stops sales, empties and counts the
//! cash box, and closes the period with a report; the next period opens in the same commit and
//! each backend is sent the period's sales of its own utilities to reconcile.
//!
//! The steps, each journaled: [`start`] (the period goes to `clearing`, so the sale engine
//! refuses new sales), [`box_removed`] / [`box_replaced`] and [`count`] in any order, then
//! [`end`]. A count that differs from what the acceptor stacked is recorded in the report and
//! as a `clearing-mismatch` row, never hidden. Lifetime counters are never touched here.

use hmac::{Hmac, Mac};
use rusqlite::OptionalExtension;
use serde_json::json;
use sha2::Sha256;

use crate::backend::{BusinessTotal, BusinessType, PeriodReport, Reconciliation};
use crate::config::{BackendEntry, KioskConfig, PinHash};
use crate::journal::{
    Batch, BatchResult, Journal, JournalError, Period, Reconciliation as JournalReconciliation,
};
use crate::money::Fen;
use crate::plugin::Plugin;
use crate::receipt_printer::{Line, Receipt};

/// Wrong operator PINs in a row so far; the policy says how many lock PIN entry, and for how
/// long (as a bank's PIN pad).
const PINS_REFUSED_IN_A_ROW: &str = "operator.pins_refused_in_a_row";

/// Rounds `selfvend clearing hash-pin` uses: a fraction of a second per PIN check on a kiosk.
pub const DEFAULT_PIN_ITERATIONS: u32 = 200_000;

#[derive(Debug, thiserror::Error)]
pub enum ClearingError {
    #[error(
        "no operator PIN is configured: add an [operator] table with pin_hash to {0} \
         (`selfvend clearing hash-pin` makes one)"
    )]
    NoOperatorPin(std::path::PathBuf),
    /// The attempt is in the journal as `clearing-pin-refused`.
    #[error("wrong operator PIN (the attempt is recorded in the journal)")]
    WrongPin,
    /// Too many wrong PINs in a row: no PIN is checked until the lockout ends.
    #[error(
        "{refused} wrong operator PINs in a row: PIN entry is locked for {minutes} more minutes"
    )]
    PinLocked { refused: i64, minutes: i64 },
    #[error(
        "payment {0} is open (a customer is paying, or the kiosk stopped mid-payment and has \
         not restarted since): clearing starts when it is closed"
    )]
    PaymentOpen(i64),
    #[error("an operator PIN is 4 to 12 digits")]
    BadPin,
    #[error("period {0} is already being cleared; count the cash box and end clearing")]
    AlreadyClearing(i64),
    #[error("period {0} is not being cleared; start clearing first")]
    NotClearing(i64),
    #[error("the journal has no period {0}")]
    NoSuchPeriod(i64),
    #[error("period {period}'s stored report cannot be read: {cause}")]
    CorruptReport { period: i64, cause: String },
    /// The journal holds a value this kiosk does not know how to total: nothing is guessed.
    #[error("period {period}: a sale has {what}, which clearing does not know how to total")]
    Unknown { period: i64, what: String },
    #[error("period {0}: the totals overflow")]
    Overflow(i64),
    #[error(transparent)]
    Journal(#[from] JournalError),
}

/// A kind of business the kiosk does, totalled on its own (the seed's 业务类型).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Business {
    CashSale,
    BankCardSale,
    CashBillPayment,
    BankCardBillPayment,
}

impl Business {
    const ALL: [Business; 4] = [
        Business::CashSale,
        Business::BankCardSale,
        Business::CashBillPayment,
        Business::BankCardBillPayment,
    ];

    /// The business of a sale (or, `bill`, a bill payment) paid by `payment` (`cash` or
    /// `bank-card`, as the journal has it).
    fn of(bill: bool, payment: &str) -> Option<Business> {
        match (bill, payment) {
            (false, "cash") => Some(Business::CashSale),
            (false, "bank-card") => Some(Business::BankCardSale),
            (true, "cash") => Some(Business::CashBillPayment),
            (true, "bank-card") => Some(Business::BankCardBillPayment),
            _ => None,
        }
    }

    fn name_zh(self) -> &'static str {
        match self {
            Business::CashSale => "现金售电",
            Business::BankCardSale => "银行卡售电",
            Business::CashBillPayment => "现金缴费",
            Business::BankCardBillPayment => "银行卡缴费",
        }
    }
}

impl From<Business> for BusinessType {
    fn from(b: Business) -> BusinessType {
        match b {
            Business::CashSale => BusinessType::CashSale,
            Business::BankCardSale => BusinessType::BankCardSale,
            Business::CashBillPayment => BusinessType::CashBillPayment,
            Business::BankCardBillPayment => BusinessType::BankCardBillPayment,
        }
    }
}

/// A number of sales and what was paid for them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Tally {
    pub count: u64,
    pub fen: Fen,
}

impl Tally {
    fn add(&mut self, count: u64, fen: u64) -> Option<()> {
        self.count = self.count.checked_add(count)?;
        self.fen = self.fen.checked_add(Fen(fen))?;
        Some(())
    }
}

/// One business type's sales in a period, by where they stand.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BusinessTotals {
    pub business: Business,
    /// Sold at the backend (granted; written onto the card or to be written when it returns).
    pub sold: Tally,
    /// The backend's answer is not known yet.
    pub pending: Tally,
    /// Handed to an operator.
    pub manual: Tally,
    /// Refused, or never reached the backend: the money is owed back.
    pub refundable: Tally,
    /// Paid back by an operator.
    pub refunded: Tally,
}

/// What one utility sold in a period, by business type (each backend is told only its own).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct UtilitySales {
    pub utility: String,
    pub business: Business,
    pub sold: Tally,
}

/// How the operator's count compares with what the acceptor stacked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Difference {
    /// No count was entered.
    NotCounted,
    Matched,
    /// More in the box than the journal says (长款).
    Over(Fen),
    /// Less in the box than the journal says (短款).
    Short(Fen),
}

impl Difference {
    fn between(expected: Fen, counted: Option<Fen>) -> Difference {
        match counted {
            None => Difference::NotCounted,
            Some(c) if c == expected => Difference::Matched,
            Some(c) if c > expected => Difference::Over(Fen(c.0 - expected.0)),
            Some(c) => Difference::Short(Fen(expected.0 - c.0)),
        }
    }
}

/// The cash box: what should be in it and what the operator found.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CashBox {
    pub banknotes: u64,
    /// What the acceptor stacked this period: what the box should hold. (Refunds are paid by
    /// an operator, not from the box.)
    pub expected: Fen,
    pub counted: Option<Fen>,
    pub difference: Difference,
}

/// A period's clearing report: running while the period is open or being cleared, fixed (and
/// stored with the period) once it is closed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ClearingReport {
    pub terminal_id: String,
    pub period_id: i64,
    /// `open`, `clearing` or `closed`.
    pub state: String,
    /// The kiosk's local wall-clock time, to the second (the journal keeps UTC).
    pub opened_at: String,
    pub closed_at: Option<String>,
    pub businesses: Vec<BusinessTotals>,
    pub utilities: Vec<UtilitySales>,
    pub cash: CashBox,
    /// Banknotes the acceptor may hold uncredited (operator items still open when the report
    /// was made): to be checked against the count.
    #[serde(default)]
    pub caught: CaughtNotes,
}

/// Open operator items for banknotes the acceptor did not credit.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CaughtNotes {
    /// Notes of known value: how many, and their sum.
    pub known: u64,
    pub known_fen: Fen,
    /// Notes of unknown value.
    pub unknown: u64,
}

/// What a backend said to its period report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendReconciliation {
    pub period: i64,
    pub backend: String,
    /// The backend's answer, or why there is none (the period stays closed either way).
    pub result: Result<Reconciliation, String>,
}

/// A clearing that ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ended {
    pub report: ClearingReport,
    pub next_period: i64,
    pub reconciliations: Vec<BackendReconciliation>,
}

/// Starts clearing the current period: checks the operator's PIN and stops sales. Returns the
/// totals so far (also journaled with `clearing-started`).
pub fn start(
    journal: &mut Journal,
    config: &KioskConfig,
    pin: &str,
) -> Result<ClearingReport, ClearingError> {
    let period = journal.current_period()?;
    authenticate(journal, config, pin, "start", period.id)?;
    if period.state != "open" {
        return Err(ClearingError::AlreadyClearing(period.id));
    }
    let mut report = tally(journal, config, &period)?;
    report.state = "clearing".into();
    journal
        .commit(|b| {
            // The acceptor is enabled only while a payment is open; none may be when sales
            // stop. Checked in this commit: the kiosk may open one at any moment.
            let open: Option<i64> = b
                .sql()
                .query_row(
                    "SELECT id FROM payments WHERE state = 'open' ORDER BY id LIMIT 1",
                    [],
                    |r| r.get(0),
                )
                .optional()?;
            if let Some(payment) = open {
                return Ok(Err(ClearingError::PaymentOpen(payment)));
            }
            b.append(
                "clearing-started",
                &json!({"period": period.id, "report": report}),
            )?;
            b.set_period_state(period.id, "open", "clearing")?;
            Ok(Ok(()))
        })
        .map_err(|e| match e {
            JournalError::Conflict { .. } => ClearingError::AlreadyClearing(period.id),
            e => e.into(),
        })??;
    fail::fail_point!("clearing.after-started");
    Ok(report)
}

/// Records what the operator counted in the cash box (a later count replaces it). Returns the
/// cash box with the difference.
pub fn count(journal: &mut Journal, counted: Fen) -> Result<CashBox, ClearingError> {
    let period = clearing_period(journal)?;
    journal.commit(|b| {
        b.append(
            "clearing-counted",
            &json!({"period": period.id, "counted_fen": counted.0}),
        )?;
        let changed = b.sql().execute(
            "UPDATE periods SET counted_fen = ?2 WHERE id = ?1 AND state = 'clearing'",
            rusqlite::params![period.id, counted.0 as i64],
        )?;
        if changed == 1 {
            Ok(Ok(()))
        } else {
            Ok(Err(ClearingError::NotClearing(period.id)))
        }
    })??;
    fail::fail_point!("clearing.after-counted");
    let (banknotes, taken) = journal.banknotes_taken(period.id)?;
    let expected = Fen(taken);
    Ok(CashBox {
        banknotes,
        expected,
        counted: Some(counted),
        difference: Difference::between(expected, Some(counted)),
    })
}

/// Records that the operator took the cash box out.
pub fn box_removed(journal: &mut Journal) -> Result<(), ClearingError> {
    box_event(journal, "cash-box-removed", "period.cash_box_removals")?;
    fail::fail_point!("clearing.after-box-removed");
    Ok(())
}

/// Records that the operator put the (emptied) cash box back.
pub fn box_replaced(journal: &mut Journal) -> Result<(), ClearingError> {
    box_event(journal, "cash-box-replaced", "period.cash_box_replacements")?;
    fail::fail_point!("clearing.after-box-replaced");
    Ok(())
}

fn box_event(journal: &mut Journal, kind: &str, counter: &str) -> Result<(), ClearingError> {
    let period = journal.current_period()?;
    // Outside clearing this is still recorded: the state in the row shows it was unexpected.
    journal.commit(|b| {
        b.append(kind, &json!({"period": period.id, "state": period.state}))?;
        b.count(counter, 1)
    })?;
    Ok(())
}

/// Ends clearing: closes the period with its report (`counted` replaces an earlier count) and
/// opens the next in one commit, resets the `period.*` counters, then sends each backend its
/// utilities' totals to reconcile. `dialects` are the loaded backend-dialect plugins.
pub fn end(
    journal: &mut Journal,
    config: &KioskConfig,
    pin: &str,
    counted: Option<Fen>,
    dialects: &[Plugin],
) -> Result<Ended, ClearingError> {
    let period = journal.current_period()?;
    authenticate(journal, config, pin, "end", period.id)?;
    if period.state != "clearing" {
        return Err(ClearingError::NotClearing(period.id));
    }
    let period = Period {
        counted_fen: counted.map(|c| c.0).or(period.counted_fen),
        ..period
    };
    let mut report = tally(journal, config, &period)?;
    report.state = "closed".into();
    let stored = serde_json::to_string(&report).expect("a report is plain data");
    let mut requests = requests(config, &report)?;
    let next_period = journal.commit(|b| {
        if let Difference::Over(_) | Difference::Short(_) = report.cash.difference {
            b.append(
                "clearing-mismatch",
                &json!({"period": period.id, "cash": report.cash}),
            )?;
        }
        b.append(
            "clearing-ended",
            &json!({"period": period.id, "report": report}),
        )?;
        let next = b.close_period(period.id, period.counted_fen, &stored)?;
        let names: Vec<String> = {
            let mut stmt = b
                .sql()
                .prepare("SELECT name FROM counters WHERE name LIKE 'period.%'")?;
            stmt.query_map([], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?
        };
        for name in names {
            b.set_counter(&name, 0)?;
        }
        b.append("period-opened", &json!({"period": next}))?;
        // The reports go out after this commit; queued in it, a stop before they are answered
        // leaves them to be sent at the next start.
        let closed_at: String = b.sql().query_row(
            "SELECT strftime('%Y-%m-%dT%H:%M:%S', closed_at, 'localtime') FROM periods
             WHERE id = ?1",
            [period.id],
            |r| r.get(0),
        )?;
        for (_, request) in &mut requests {
            request.closed_at = closed_at.clone();
        }
        report.closed_at = Some(closed_at);
        queue(b, period.id, &requests)?;
        Ok(next)
    })?;
    fail::fail_point!("clearing.after-closed");
    let reconciliations = send_queued(journal, &config.backends, dialects)?;
    Ok(Ended {
        report,
        next_period,
        reconciliations,
    })
}

/// Queues the closed period's report again for each backend that has not answered it with
/// matching totals, and sends every queued report (for `selfvend clearing reconcile`).
pub fn reconcile(
    journal: &mut Journal,
    config: &KioskConfig,
    dialects: &[Plugin],
    report: &ClearingReport,
) -> Result<Vec<BackendReconciliation>, ClearingError> {
    if report.closed_at.is_none() {
        return Err(ClearingError::NotClearing(report.period_id));
    }
    let requests = requests(config, report)?;
    journal.commit(|b| queue(b, report.period_id, &requests))?;
    Ok(send_queued(journal, &config.backends, dialects)?)
}

/// What each configured backend is told of the period: its own utilities' sales.
fn requests(
    config: &KioskConfig,
    report: &ClearingReport,
) -> Result<Vec<(String, PeriodReport)>, ClearingError> {
    config
        .backends
        .iter()
        .map(|backend| {
            Ok((
                backend.name.clone(),
                PeriodReport {
                    terminal_id: report.terminal_id.clone(),
                    period_id: report.period_id as u64,
                    opened_at: report.opened_at.clone(),
                    closed_at: report.closed_at.clone().unwrap_or_default(),
                    totals: backend_totals(report, backend)?,
                },
            ))
        })
        .collect()
}

/// Queues each backend's report of `period`, unless that backend already answered it with
/// matching totals; each is journaled `reconcile-intent`.
fn queue(b: &mut Batch<'_>, period: i64, requests: &[(String, PeriodReport)]) -> BatchResult<()> {
    for (backend, request) in requests {
        let matched: bool = b.sql().query_row(
            "SELECT count(*) FROM reconciliations
             WHERE period_id = ?1 AND backend = ?2 AND state = 'matched'",
            rusqlite::params![period, backend],
            |r| r.get(0),
        )?;
        if matched {
            continue;
        }
        let audit = b.append(
            "reconcile-intent",
            &json!({"backend": backend, "report": request}),
        )?;
        let request = serde_json::to_string(request).expect("a period report is plain data");
        b.queue_reconciliation(period, backend, &request, audit)?;
    }
    Ok(())
}

/// Sends every queued period report to its backend and journals each answer: `reconciled`, or
/// `reconcile-failed` with the backend's differences (answered: not sent again) or why it could
/// not answer (still queued: sent again at the next start or retry). Run at start, too.
pub fn send_queued(
    journal: &mut Journal,
    backends: &[BackendEntry],
    dialects: &[Plugin],
) -> Result<Vec<BackendReconciliation>, JournalError> {
    let mut answers = Vec::new();
    for queued in journal.reconciliations(true)? {
        let (period, name) = (queued.period, queued.backend.clone());
        let result = send(&queued, backends, dialects);
        match &result {
            Ok(r) => {
                let answer = serde_json::to_string(r).expect("an answer is plain data");
                let (kind, state) = if r.matched {
                    ("reconciled", "matched")
                } else {
                    ("reconcile-failed", "differs")
                };
                journal.commit(|b| {
                    let audit = b.append(
                        kind,
                        &json!({"period": period, "backend": name, "answer": r}),
                    )?;
                    b.reconciliation_answered(period, &name, state, &answer, audit)
                })?;
            }
            Err(why) => {
                journal.append(
                    "reconcile-failed",
                    json!({"period": period, "backend": name, "why": why}),
                )?;
            }
        }
        fail::fail_point!("clearing.after-reconcile-answer");
        answers.push(BackendReconciliation {
            period,
            backend: name,
            result,
        });
    }
    Ok(answers)
}

/// Sends one queued report; the error says why there is no answer.
fn send(
    queued: &JournalReconciliation,
    backends: &[BackendEntry],
    dialects: &[Plugin],
) -> Result<Reconciliation, String> {
    let request: PeriodReport = serde_json::from_str(&queued.request_json)
        .map_err(|e| format!("the queued report cannot be read: {e}"))?;
    let backend = backends
        .iter()
        .find(|b| b.name == queued.backend)
        .ok_or_else(|| format!("backend `{}` is no longer configured", queued.backend))?;
    let plugin = dialects
        .iter()
        .find(|d| d.name == backend.dialect)
        .ok_or_else(|| format!("its dialect plugin `{}` is not loaded", backend.dialect))?;
    plugin
        .backend_session(backend.endpoint.clone())
        .map_err(|e| e.to_string())?
        .reconcile(&request)
        .map_err(|e| e.to_string())
}

/// Period `id`'s report (the current period's when `None`): the stored one once it is closed,
/// else the running totals.
pub fn report(
    journal: &Journal,
    config: &KioskConfig,
    id: Option<i64>,
) -> Result<ClearingReport, ClearingError> {
    let period = match id {
        None => journal.current_period()?,
        Some(id) => journal.period(id)?.ok_or(ClearingError::NoSuchPeriod(id))?,
    };
    let (Some(stored), Some(closed_at)) = (&period.report, &period.closed_at) else {
        return tally(journal, config, &period);
    };
    let mut report: ClearingReport =
        serde_json::from_str(stored).map_err(|e| ClearingError::CorruptReport {
            period: period.id,
            cause: e.to_string(),
        })?;
    report.closed_at = Some(local_time(journal, period.id, closed_at)?);
    Ok(report)
}

/// The period's totals from the journal's own rows; its count as the period row holds it.
fn tally(
    journal: &Journal,
    config: &KioskConfig,
    period: &Period,
) -> Result<ClearingReport, ClearingError> {
    let overflow = || ClearingError::Overflow(period.id);
    let unknown = |what: String| ClearingError::Unknown {
        period: period.id,
        what,
    };
    let mut businesses: Vec<BusinessTotals> = Business::ALL
        .into_iter()
        .map(|business| BusinessTotals {
            business,
            sold: Tally::default(),
            pending: Tally::default(),
            manual: Tally::default(),
            refundable: Tally::default(),
            refunded: Tally::default(),
        })
        .collect();
    let mut utilities: Vec<UtilitySales> = Vec::new();
    for row in journal.sales_by_utility(period.id)? {
        let business = Business::of(row.bill, &row.payment)
            .ok_or_else(|| unknown(format!("payment `{}`", row.payment)))?;
        let totals = businesses
            .iter_mut()
            .find(|t| t.business == business)
            .expect("every business has its totals");
        // A bill payment the backend booked is `paid`; a sale it granted, `granted` or `written`.
        let sold = matches!(row.state.as_str(), "granted" | "written" | "paid");
        let tally = match row.state.as_str() {
            _ if sold => &mut totals.sold,
            "intent" | "pending" => &mut totals.pending,
            "manual" => &mut totals.manual,
            "refused" | "never-reached" => &mut totals.refundable,
            "refunded" => &mut totals.refunded,
            other => return Err(unknown(format!("state `{other}`"))),
        };
        tally.add(row.count, row.paid_fen).ok_or_else(overflow)?;
        if sold {
            let line = match utilities
                .iter_mut()
                .position(|u| u.utility == row.utility && u.business == business)
            {
                Some(i) => &mut utilities[i],
                None => {
                    utilities.push(UtilitySales {
                        utility: row.utility.clone(),
                        business,
                        sold: Tally::default(),
                    });
                    utilities.last_mut().expect("just pushed")
                }
            };
            line.sold
                .add(row.count, row.paid_fen)
                .ok_or_else(overflow)?;
        }
    }
    let (banknotes, taken) = journal.banknotes_taken(period.id)?;
    let expected = Fen(taken);
    let counted = period.counted_fen.map(Fen);
    Ok(ClearingReport {
        terminal_id: config.kiosk.terminal_id.as_str().to_string(),
        period_id: period.id,
        state: period.state.clone(),
        opened_at: local_time(journal, period.id, &period.opened_at)?,
        closed_at: None,
        businesses,
        utilities,
        cash: CashBox {
            banknotes,
            expected,
            counted,
            difference: Difference::between(expected, counted),
        },
        caught: journal.caught_notes()?,
    })
}

/// What `backend` is told: each business type's sales of its utilities (zero ones too, so a
/// backend that has sales the kiosk does not know of finds the difference).
fn backend_totals(
    report: &ClearingReport,
    backend: &BackendEntry,
) -> Result<Vec<BusinessTotal>, ClearingError> {
    Business::ALL
        .into_iter()
        .map(|business| {
            let mut sold = Tally::default();
            for u in &report.utilities {
                if u.business == business && backend.utility_codes.contains(&u.utility) {
                    sold.add(u.sold.count, u.sold.fen.0)
                        .ok_or(ClearingError::Overflow(report.period_id))?;
                }
            }
            Ok(BusinessTotal {
                business: business.into(),
                count: u32::try_from(sold.count)
                    .map_err(|_| ClearingError::Overflow(report.period_id))?,
                amount: sold.fen,
            })
        })
        .collect()
}

fn clearing_period(journal: &Journal) -> Result<Period, ClearingError> {
    let period = journal.current_period()?;
    if period.state != "clearing" {
        return Err(ClearingError::NotClearing(period.id));
    }
    Ok(period)
}

fn local_time(journal: &Journal, period: i64, utc: &str) -> Result<String, ClearingError> {
    journal
        .local_time(utc)?
        .ok_or_else(|| ClearingError::CorruptReport {
            period,
            cause: format!("`{utc}` is not a time"),
        })
}

/// Checks `pin` against the configured operator PIN; a wrong one is journaled and refused.
/// Checks an operator's PIN to open the kiosk's operator screens, under the same lockout as
/// clearing's.
pub fn sign_in(
    journal: &mut Journal,
    config: &KioskConfig,
    pin: &str,
) -> Result<(), ClearingError> {
    let period = journal.current_period()?;
    authenticate(journal, config, pin, "sign-in", period.id)
}

fn authenticate(
    journal: &mut Journal,
    config: &KioskConfig,
    pin: &str,
    action: &str,
    period: i64,
) -> Result<(), ClearingError> {
    let Some(operator) = &config.operator else {
        return Err(ClearingError::NoOperatorPin(config.path.clone()));
    };
    let refused = journal.counter(PINS_REFUSED_IN_A_ROW)?;
    if refused >= i64::from(config.policy.operator_pin_tries) {
        let since = match journal.last_entry("clearing-pin-refused")? {
            Some(last) => journal.seconds_since(&last.at)?,
            None => None,
        };
        // An unreadable time keeps the lock: it is never lifted by a guess.
        let left = config.policy.operator_lockout.as_secs() as i64 - since.unwrap_or(0);
        if left > 0 {
            return Err(ClearingError::PinLocked {
                refused,
                minutes: (left + 59) / 60,
            });
        }
    }
    if pin_matches(&operator.pin_hash, pin) {
        if refused > 0 {
            journal.commit(|b| b.set_counter(PINS_REFUSED_IN_A_ROW, 0))?;
        }
        return Ok(());
    }
    journal.commit(|b| {
        b.append(
            "clearing-pin-refused",
            &json!({"action": action, "period": period}),
        )?;
        b.count("lifetime.operator_pins_refused", 1)?;
        b.count("period.operator_pins_refused", 1)?;
        b.count(PINS_REFUSED_IN_A_ROW, 1)
    })?;
    Err(ClearingError::WrongPin)
}

/// Hashes a new operator PIN (4 to 12 digits) under a fresh random salt, for the config.
pub fn hash_pin(pin: &str, iterations: u32) -> Result<PinHash, ClearingError> {
    if !(4..=12).contains(&pin.len()) || !pin.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ClearingError::BadPin);
    }
    let mut salt = vec![0u8; 16];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut salt);
    let hash = pbkdf2_sha256(pin.as_bytes(), &salt, iterations);
    Ok(PinHash {
        iterations,
        salt,
        hash,
    })
}

/// Whether `pin` is the one `hash` was made from, compared in constant time.
pub fn pin_matches(hash: &PinHash, pin: &str) -> bool {
    let derived = pbkdf2_sha256(pin.as_bytes(), &hash.salt, hash.iterations);
    let differing = derived
        .iter()
        .zip(&hash.hash)
        .fold(0u8, |acc, (a, b)| acc | (a ^ b));
    std::hint::black_box(differing) == 0
}

/// PBKDF2-HMAC-SHA256 (RFC 8018) with a 32-byte output: a single block.
fn pbkdf2_sha256(password: &[u8], salt: &[u8], iterations: u32) -> [u8; 32] {
    let keyed = Hmac::<Sha256>::new_from_slice(password).expect("HMAC takes a key of any length");
    let mut mac = keyed.clone();
    mac.update(salt);
    mac.update(&1u32.to_be_bytes());
    let mut u: [u8; 32] = mac.finalize().into_bytes().into();
    let mut out = u;
    for _ in 1..iterations {
        let mut mac = keyed.clone();
        mac.update(&u);
        u = mac.finalize().into_bytes().into();
        for (o, x) in out.iter_mut().zip(u) {
            *o ^= x;
        }
    }
    out
}

impl ClearingReport {
    /// The report as the kiosk prints it (清机报表).
    pub fn receipt(&self) -> Receipt {
        let tally = |t: &Tally| format!("{}笔 {}元", t.count, t.fen);
        let mut r = Receipt::new()
            .with(Line::new("清机报表").bold().double().centred())
            .with(Line::new(format!("终端号：{}", self.terminal_id)))
            .with(Line::new(format!("清机期号：{}", self.period_id)))
            .with(Line::new(format!("开始时间：{}", self.opened_at)));
        r.push(Line::new(match (&self.closed_at, self.state.as_str()) {
            (Some(at), _) => format!("结束时间：{at}"),
            (None, "clearing") => "结束时间：清机中".to_string(),
            (None, _) => "结束时间：营业中".to_string(),
        }));
        for b in &self.businesses {
            r.push(Line::new(format!("{}：{}", b.business.name_zh(), tally(&b.sold))).bold());
            for u in self.utilities.iter().filter(|u| u.business == b.business) {
                r.push(Line::new(format!(
                    "  单位{}：{}",
                    u.utility,
                    tally(&u.sold)
                )));
            }
            for (name, t) in [
                ("待定", &b.pending),
                ("人工处理", &b.manual),
                ("应退款", &b.refundable),
                ("已退款", &b.refunded),
            ] {
                if t.count > 0 {
                    r.push(Line::new(format!("  {name}：{}", tally(t))));
                }
            }
        }
        r.push(Line::new(format!("收入纸币：{}张", self.cash.banknotes)));
        if self.caught.known > 0 {
            r.push(Line::new(format!(
                "待核实纸币：{}张 {}元（未入账）",
                self.caught.known, self.caught.known_fen
            )));
        }
        if self.caught.unknown > 0 {
            r.push(Line::new(format!(
                "待核实纸币：{}张 面额未知（未入账）",
                self.caught.unknown
            )));
        }
        r.push(Line::new(format!("应有现金：{}元", self.cash.expected)));
        r.push(Line::new(match self.cash.counted {
            Some(c) => format!("清点现金：{c}元"),
            None => "清点现金：未清点".to_string(),
        }));
        r.push(
            Line::new(match self.cash.difference {
                Difference::NotCounted => "差额：未清点".to_string(),
                Difference::Matched => "差额：无".to_string(),
                Difference::Over(f) => format!("差额：长款{f}元"),
                Difference::Short(f) => format!("差额：短款{f}元"),
            })
            .bold(),
        );
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pbkdf2_matches_the_published_vectors() {
        // RFC 7914 section 11 / the widely published PBKDF2-HMAC-SHA256 vectors.
        assert_eq!(
            hex::encode(pbkdf2_sha256(b"password", b"salt", 1)),
            "120fb6cffcf8b32c43e7225256c4f837a86548c92ccc35480805987cb70be17b"
        );
        assert_eq!(
            hex::encode(pbkdf2_sha256(b"password", b"salt", 4096)),
            "c5e478d59288c841aa530db6845c4c8d962893a001ce4e11a4963873aa98134a"
        );
    }

    #[test]
    fn a_hashed_pin_matches_only_itself() {
        let hash = hash_pin("123456", PinHash::MIN_ITERATIONS).unwrap();
        assert!(pin_matches(&hash, "123456"));
        assert!(!pin_matches(&hash, "123457"));
        assert!(!pin_matches(&hash, ""));
        let again: PinHash = hash.to_string().try_into().unwrap();
        assert_eq!(again, hash);
        assert!(matches!(
            hash_pin("12a4", 10_000),
            Err(ClearingError::BadPin)
        ));
        assert!(matches!(
            hash_pin("123", 10_000),
            Err(ClearingError::BadPin)
        ));
    }

    #[test]
    fn the_difference_is_over_short_matched_or_not_counted() {
        assert_eq!(
            Difference::between(Fen(6000), Some(Fen(5000))),
            Difference::Short(Fen(1000))
        );
        assert_eq!(
            Difference::between(Fen(6000), Some(Fen(6050))),
            Difference::Over(Fen(50))
        );
        assert_eq!(
            Difference::between(Fen(6000), Some(Fen(6000))),
            Difference::Matched
        );
        assert_eq!(Difference::between(Fen(0), None), Difference::NotCounted);
    }
}
