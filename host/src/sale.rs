//! The cash sale, step by step, with a durable journal row of intent before every external
//! effect: card read → account query → purchase choice (can-buy check, the backend's price) →
//! banknotes (each journaled at escrow before it is stacked, credited before it is ACKed) →
//! backend sale under a kiosk serial from the journal → card write → read-back verify → write
//! confirmation → receipt.
//!
//! The `fail_point!`s name the places the crash tests kill the kiosk; they compile to nothing
//! unless the tests crate turns on `fail/failpoints`.
//!
//! Each outcome is journaled and printed on the receipt. A sale granted but not written is
//! written when its card comes back; a sale whose outcome is unknown is asked about by
//! [`SaleEngine::recover`] at start. Every state change is one commit with its audit row,
//! compare-and-set on the state it leaves.
//!
//! This file holds the session's steps and the backend sale; beside it: `card_write` (the sale
//! onto the card), `cashier` (banknotes), `bank` (the bank-card payment), `recovery` (what is
//! finished between customers), `operator` (operator items), `receipt` and `error`.

use std::cell::Cell;
use std::time::{Duration, Instant};

use rusqlite::OptionalExtension;
use serde_json::json;

use crate::backend::{
    Account, BackendError, BackendGrant, CardRef, PaymentKind, Purchase, Refusal, SaleRequest,
    SaleStatus, TariffStep,
};
use crate::card::CardData;
use crate::clearing;
use crate::codecs;
use crate::config::{BackendEntry, KioskConfig, Policy};
use crate::journal::{Batch, BatchResult, Journal, JournalError, NewItem, NewSale};
use crate::money::{Fen, Wh};
use crate::plugin::{BackendSession, CardCodecSession, DialectError, Plugin, SharedCard};
use crate::receipt_printer::{Receipt, ReceiptPrinter};

mod bank;
mod bill;
mod bill_recovery;
mod can_buy;
mod card_write;
mod cashier;
mod error;
mod operator;
mod receipt;
mod recovery;
pub use bank::{BankLink, CardPayment};
pub use bill::{BillCompletion, BillOutcome, BillSession, cash_due};
pub use error::SaleError;
pub use receipt::ReceiptOf;
use receipt::yuan;

/// What the customer is buying and what it costs: priced by the backend's `quote` when its
/// dialect has one (contract 1.1), else from the account's price.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quote {
    pub purchase: Purchase,
    /// What the customer pays: `arrears` first, the rest buys `energy`.
    pub amount: Fen,
    pub energy: Wh,
    /// The part of `amount` the backend takes for the account's arrears (欠费).
    pub arrears: Fen,
}

/// How a completed session ended for the customer's money.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Sold and written onto the card.
    Credited { serial: u64, grant: BackendGrant },
    /// The backend sold, but the card does not carry it: re-written when the card returns.
    GrantedNotWritten { serial: u64, grant: BackendGrant },
    /// The backend refused the sale: the money is owed back.
    Refused { serial: u64, refusal: Refusal },
    /// The sale's outcome at the backend is not known yet: resolved by asking the backend.
    Pending { serial: u64, why: String },
    /// Less was paid than quoted, and what was paid cannot be sold (below the purchase limits,
    /// or the backend will not sell it): no sale was sent, and the money is owed back.
    Unsold { payment: i64, reason: String },
}

/// What an operator does with an item the kiosk could not finish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolution {
    Refund,
    Resell,
    /// Nothing is owed (a caught banknote the operator did not find): the item is closed.
    Dismiss,
}

/// Every state a sale can be in (the journal's `sales.state`).
pub const SALE_STATES: &[&str] = &[
    "intent",
    "pending",
    "granted",
    "written",
    "refused",
    "never-reached",
    "refunded",
    "manual",
];

/// Where [`SaleEngine::complete`] is, for a screen to show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Sell,
    Write,
    Print,
}

/// The sale's end, with the receipt the customer takes away.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completion {
    pub outcome: Outcome,
    pub receipt: Receipt,
    /// Whether the receipt came out whole (if not, it is in the journal for a reprint).
    pub printed: bool,
}

/// One customer at the kiosk, from the card going in to the card coming out.
pub struct CashSession {
    card: SharedCard,
    codec: CardCodecSession,
    codec_name: String,
    data: CardData,
    backend: BackendEntry,
    dialect: usize,
    pub account: Account,
    quote: Option<Quote>,
    /// The steps of a stepped tariff the quote's energy falls in, as the backend priced it.
    pub tariff_steps: Vec<TariffStep>,
    /// The purchase limits for this account: the kiosk's, narrowed by the backend's can-buy.
    limits: (Fen, Fen),
    paid: Fen,
    /// The serial of an earlier sale written onto this card as it came in.
    pub rewritten: Option<u64>,
    /// This session's payment in the journal, once the acceptor was enabled.
    payment: Option<i64>,
    /// Banknotes the acceptor did not credit that may be in the kiosk: each operator item and
    /// the note's value.
    pub caught: Vec<(i64, Fen)>,
    /// A bank-card payment: the approved debit, whose sale's intent is already journaled.
    bank: Option<BankPaid<SaleRequest>>,
}

/// An approved bank-card debit and what it paid for (a sale's or a bill payment's request),
/// recorded with it.
struct BankPaid<R> {
    pan_masked: String,
    rrn: String,
    serial: u64,
    request: R,
}

impl CashSession {
    pub fn card(&self) -> &CardData {
        &self.data
    }

    pub fn paid(&self) -> Fen {
        self.paid
    }
}

/// The kiosk's sale engine: its journal and the plugins its config names.
pub struct SaleEngine {
    /// Time spent waiting on the card, the backend, the acceptor and the printer.
    waited: Cell<Duration>,
    terminal_id: String,
    journal: Journal,
    codecs: Vec<Plugin>,
    dialects: Vec<Plugin>,
    backends: Vec<BackendEntry>,
    min_purchase: Fen,
    max_purchase: Fen,
    policy: Policy,
    progress: Option<Box<dyn FnMut(Step) + Send>>,
}

impl SaleEngine {
    /// An engine over `journal` with the config's backends; `codecs` and `dialects` are the
    /// loaded plugins, named as in the config.
    pub fn new(
        config: &KioskConfig,
        journal: Journal,
        codecs: Vec<Plugin>,
        dialects: Vec<Plugin>,
    ) -> SaleEngine {
        SaleEngine {
            waited: Cell::new(Duration::ZERO),
            terminal_id: config.kiosk.terminal_id.as_str().to_string(),
            journal,
            codecs,
            dialects,
            backends: config.backends.clone(),
            min_purchase: config.limits.min_purchase_fen,
            max_purchase: config.limits.max_purchase_fen,
            policy: config.policy.clone(),
            progress: None,
        }
    }

    /// Takes a new config's backends, purchase limits and policy (the fleet's next version,
    /// between customers).
    pub fn apply_config(&mut self, config: &KioskConfig) {
        self.backends = config.backends.clone();
        self.min_purchase = config.limits.min_purchase_fen;
        self.max_purchase = config.limits.max_purchase_fen;
        self.policy = config.policy.clone();
    }

    /// The backends `config` moves (a new address or limits) that this kiosk still has
    /// business with: a sale whose outcome is unknown, or a period report queued. Asked at a
    /// new address, a backend that does not share the old one's books would answer "no such
    /// sale" for a sale the old one granted.
    pub fn moved_with_open_business(
        &self,
        config: &KioskConfig,
    ) -> Result<Vec<String>, crate::journal::JournalError> {
        let moved: Vec<&BackendEntry> = self
            .backends
            .iter()
            .filter(|b| {
                config
                    .backends
                    .iter()
                    .any(|n| n.name == b.name && n.endpoint != b.endpoint)
            })
            .collect();
        if moved.is_empty() {
            return Ok(Vec::new());
        }
        let open = self.journal.sales(&["intent", "pending"], None)?;
        let queued = self.journal.reconciliations(true)?;
        Ok(moved
            .into_iter()
            .filter(|b| {
                open.iter().any(|s| b.utility_codes.contains(&s.utility))
                    || queued.iter().any(|r| r.backend == b.name)
            })
            .map(|b| b.name.clone())
            .collect())
    }

    /// Has `progress` hear each step [`complete`](Self::complete) starts.
    pub fn on_progress(&mut self, progress: impl FnMut(Step) + Send + 'static) {
        self.progress = Some(Box::new(progress));
    }

    fn step(&mut self, step: Step) {
        if let Some(progress) = &mut self.progress {
            progress(step);
        }
    }

    pub fn journal(&self) -> &Journal {
        &self.journal
    }

    /// The journal, for an operator's clearing in this process.
    pub fn journal_mut(&mut self) -> &mut Journal {
        &mut self.journal
    }

    /// The loaded card codecs, then the backend dialects.
    pub fn plugins(&self) -> impl Iterator<Item = &Plugin> {
        self.codecs.iter().chain(&self.dialects)
    }

    pub fn dialects(&self) -> &[Plugin] {
        &self.dialects
    }

    /// Runs `plugin` in place of the codec or dialect of the same name (a rollout's switch,
    /// between customers).
    pub fn replace_plugin(&mut self, plugin: Plugin) {
        let list = match plugin.kind() {
            crate::plugin::inspect::PluginKind::CardCodec => &mut self.codecs,
            _ => &mut self.dialects,
        };
        match list.iter_mut().find(|p| p.name == plugin.name) {
            Some(old) => *old = plugin,
            None => list.push(plugin),
        }
    }

    /// Ends the operator's clearing through this engine's journal and dialects.
    pub fn end_clearing(
        &mut self,
        config: &KioskConfig,
        pin: &str,
        counted: Option<Fen>,
    ) -> Result<clearing::Ended, clearing::ClearingError> {
        clearing::end(&mut self.journal, config, pin, counted, &self.dialects)
    }

    /// Sends closed period `period`'s report again to each backend that has not matched it.
    pub fn reconcile_period(
        &mut self,
        config: &KioskConfig,
        period: i64,
    ) -> Result<Vec<clearing::BackendReconciliation>, clearing::ClearingError> {
        let report = clearing::report(&self.journal, config, Some(period))?;
        clearing::reconcile(&mut self.journal, config, &self.dialects, &report)
    }

    /// Pings each configured backend through its dialect: its name, and whether it answered.
    pub fn ping_backends(&self) -> Vec<(String, Result<(), String>)> {
        self.backends
            .iter()
            .map(|b| {
                let answer = match self.dialects.iter().position(|d| d.name == b.dialect) {
                    Some(dialect) => self
                        .backend_session(b, dialect)
                        .map_err(|e| e.to_string())
                        .and_then(|mut s| s.ping().map_err(|e| e.to_string())),
                    None => Err(format!("dialect `{}` is not loaded", b.dialect)),
                };
                (b.name.clone(), answer)
            })
            .collect()
    }

    /// Time this engine has spent waiting on devices and backends (for `selfvend bench sale`).
    pub fn waited(&self) -> Duration {
        self.waited.get()
    }

    /// Runs `f`, an exchange with a device or a backend, counting its time as waiting.
    fn wait<R>(&self, f: impl FnOnce() -> R) -> R {
        let started = Instant::now();
        let r = f();
        self.waited.set(self.waited.get() + started.elapsed());
        r
    }

    /// A card went in: identify it, read it, find its backend, look its account up.
    pub fn start(&mut self, card: SharedCard) -> Result<CashSession, SaleError> {
        let period = self.journal.current_period()?;
        if period.state != "open" {
            return Err(SaleError::Clearing(period.id));
        }
        let found = self
            .wait(|| codecs::identify(&self.codecs, &card))
            .map_err(|e| SaleError::Identify(Box::new(e)))?;
        let codec_name = found.codec.name.clone();
        let mut codec = found.session;
        let data = self
            .wait(|| codec.read(&card))
            .map_err(|cause| SaleError::Card {
                codec: codec_name.clone(),
                cause,
            })?;
        let Some(backend) = self
            .backends
            .iter()
            .find(|b| b.utility_codes.contains(&data.utility_code))
            .cloned()
        else {
            self.journal.append(
                "card-not-served",
                json!({"card": data.card_serial, "utility": data.utility_code, "codec": codec_name}),
            )?;
            return Err(SaleError::NotServed {
                utility: data.utility_code.clone(),
                card_serial: data.card_serial.clone(),
            });
        };
        let dialect = self
            .dialects
            .iter()
            .position(|d| d.name == backend.dialect)
            .ok_or_else(|| SaleError::Backend {
                backend: backend.name.clone(),
                cause: DialectError::Backend(BackendError::Unreachable(format!(
                    "dialect `{}` is not loaded",
                    backend.dialect
                ))),
            })?;
        self.journal.note(
            "session-started",
            json!({
                "card": data.card_serial, "utility": data.utility_code, "codec": codec_name,
                "backend": backend.name, "purchase_count": data.purchase_count,
            }),
        );
        let account = self.account(&backend, dialect, &data)?;
        let mut s = CashSession {
            card,
            codec,
            codec_name,
            data,
            backend,
            dialect,
            account,
            quote: None,
            tariff_steps: Vec::new(),
            limits: (self.min_purchase, self.max_purchase),
            paid: Fen(0),
            rewritten: None,
            caught: Vec::new(),
            bank: None,
            payment: None,
        };
        s.rewritten = self.rewrite_outstanding(&mut s)?;
        if s.rewritten.is_some() {
            s.account = self.account(&s.backend, s.dialect, &s.data)?;
        }
        self.journal.note(
            "account-shown",
            json!({"customer": s.account.customer_number, "arrears_fen": s.account.arrears.0}),
        );
        Ok(s)
    }

    fn account(
        &self,
        backend: &BackendEntry,
        dialect: usize,
        data: &CardData,
    ) -> Result<Account, SaleError> {
        let mut session = self.backend_session(backend, dialect)?;
        self.wait(|| session.account_query(&card_ref(data)))
            .map_err(|cause| backend_error(backend, cause))
    }

    /// The customer chose what to buy: the backend says whether they may, and the price.
    pub fn quote(&mut self, s: &mut CashSession, purchase: Purchase) -> Result<Quote, SaleError> {
        let mut session = self.backend_session(&s.backend, s.dialect)?;
        let priced = match self.wait(|| session.quote(&card_ref(&s.data), purchase)) {
            Ok(q) => Some(q),
            // A 1.0 dialect, or a backend without quotes: priced from the account's price.
            Err(DialectError::Backend(BackendError::NotSupported)) => None,
            Err(DialectError::Backend(BackendError::Refused(refusal))) => {
                self.journal
                    .append("purchase-refused", json!({"reason": refusal.message}))?;
                return Err(SaleError::Refused(refusal));
            }
            Err(cause) => return Err(backend_error(&s.backend, cause)),
        };
        let (amount, energy, arrears, steps) = match priced {
            Some(q) => (q.amount, q.energy, q.arrears, q.steps),
            None => {
                let price = u64::from(s.account.price_fen_per_kwh.max(1));
                let (amount, energy) = match purchase {
                    Purchase::Money(fen) => (fen, Wh(fen.0.saturating_mul(1000) / price)),
                    Purchase::Energy(wh) => (Fen(wh.0.saturating_mul(price).div_ceil(1000)), wh),
                };
                (amount, energy, Fen(0), Vec::new())
            }
        };
        // A quote must be for what the customer chose: that money, or that energy.
        let mismatch = match purchase {
            Purchase::Money(fen) if fen != amount => {
                Some(format!("{fen} yuan was asked for and {amount} yuan quoted"))
            }
            Purchase::Energy(wh) if wh != energy => Some(format!(
                "{} Wh were asked for and {} Wh quoted",
                wh.0, energy.0
            )),
            _ => None,
        };
        if let Some(why) = mismatch {
            return Err(backend_error(
                &s.backend,
                DialectError::Backend(BackendError::MalformedReply(format!("quote: {why}"))),
            ));
        }
        if amount < self.min_purchase || amount > self.max_purchase {
            return Err(SaleError::OutOfLimits(
                amount,
                self.min_purchase,
                self.max_purchase,
            ));
        }
        let check = match self.wait(|| session.can_buy(&card_ref(&s.data), purchase)) {
            // The dialect has no can-buy: the kiosk decides by its own policy.
            Err(DialectError::Backend(BackendError::NotSupported)) => {
                self.journal.note(
                    "can-buy-by-kiosk",
                    json!({"backend": s.backend.name, "amount_fen": amount.0}),
                );
                self.kiosk_can_buy(s, amount)?
            }
            answer => answer.map_err(|cause| backend_error(&s.backend, cause))?,
        };
        if let Some(refusal) = check.refusal {
            self.journal
                .append("purchase-refused", json!({"reason": refusal.message}))?;
            return Err(SaleError::Refused(refusal));
        }
        // The backend's own limits narrow the kiosk's (a maximum of 0 states none).
        let min = self.min_purchase.max(check.min);
        let max = match check.max {
            Fen(0) => self.max_purchase,
            backend => self.max_purchase.min(backend),
        };
        s.limits = (min, max);
        if amount < min || amount > max {
            return Err(SaleError::OutOfLimits(amount, min, max));
        }
        let quote = Quote {
            purchase,
            amount,
            energy,
            arrears,
        };
        self.journal.note(
            "purchase-quoted",
            json!({"amount_fen": amount.0, "energy_wh": energy.0, "arrears_fen": arrears.0,
                   "steps": steps.len()}),
        );
        s.quote = Some(quote);
        s.tariff_steps = steps;
        Ok(quote)
    }

    /// Sells what was paid, writes it onto the card, confirms it and prints the receipt.
    pub fn complete(
        &mut self,
        s: &mut CashSession,
        printer: &mut dyn ReceiptPrinter,
    ) -> Result<Completion, SaleError> {
        let (serial, request) = match &s.bank {
            // Paid by bank card: the sale's intent went into the journal with the approval,
            // maybe long ago (the customer took their card back since). Its request may be in
            // flight from now on, and "no such sale" is proof only once that has passed.
            Some(bank) => {
                let serial = bank.serial;
                self.journal.commit(|b| {
                    let id = b.append("sale-sending", &json!({"serial": serial}))?;
                    b.sale_state(serial, &["intent"], "intent", None, id)
                })?;
                (serial, bank.request.clone())
            }
            None => {
                if s.paid == Fen(0) {
                    return Err(SaleError::NothingPaid);
                }
                if let Some(reason) = self.unsellable(s)? {
                    return self.unsold(s, printer, reason);
                }
                let (terminal_id, payment) = (self.terminal_id.as_str(), s.payment);
                let session: &CashSession = s;
                self.journal.commit(|b| {
                    let (serial, request, id) =
                        sale_intent(b, terminal_id, session, PaymentKind::Cash)?;
                    if let Some(payment) = payment {
                        b.close_payment(payment, "open", "sold", Some(serial), id)?;
                    }
                    Ok((serial, request))
                })?
            }
        };
        fail::fail_point!("sale.after-sale-intent");
        self.step(Step::Sell);
        let outcome = match self.sell(s, &request)? {
            Ok(grant) => {
                fail::fail_point!("sale.after-grant-recorded");
                if let Some(q) = s.quote.filter(|q| q.amount == s.paid)
                    && (q.energy != grant.energy
                        || q.arrears.0.checked_add(grant.amount.0) != Some(s.paid.0))
                {
                    // What was sold is the grant; the receipt shows it, the journal says so.
                    self.journal.note(
                        "grant-differs-from-quote",
                        json!({"serial": serial, "quoted_wh": q.energy.0,
                               "granted_wh": grant.energy.0, "granted_fen": grant.amount.0}),
                    );
                }
                self.step(Step::Write);
                let written = self.write_card(s, serial, &grant)?;
                if written {
                    Outcome::Credited { serial, grant }
                } else {
                    Outcome::GrantedNotWritten { serial, grant }
                }
            }
            // The refund item was opened with the refusal, in the same commit.
            Err(SaleOutcome::Refused(refusal)) => Outcome::Refused { serial, refusal },
            // Never reached the backend: sold again automatically (补售电) under the same
            // serial; unknown: asked about by recovery.
            Err(SaleOutcome::NeverReached(why)) | Err(SaleOutcome::Unknown(why)) => {
                Outcome::Pending { serial, why }
            }
        };
        let receipt = self.receipt(s, &outcome);
        self.step(Step::Print);
        let printed = self.print_receipt(printer, ReceiptOf::Sale(serial), &receipt)?;
        self.journal.note(
            "session-ended",
            json!({"serial": serial, "outcome": outcome_name(&outcome)}),
        );
        self.journal.flush()?;
        Ok(Completion {
            outcome,
            receipt,
            printed,
        })
    }

    /// Why what was paid cannot be sold when it is less than the quote (the quote itself was
    /// checked): below the purchase limits, or refused by the backend's can-buy check. A
    /// backend that cannot be asked is no reason: the sale goes ahead and is re-sold or
    /// refunded by the usual rules.
    fn unsellable(&mut self, s: &mut CashSession) -> Result<Option<String>, SaleError> {
        if s.quote.is_some_and(|q| q.amount == s.paid) {
            return Ok(None);
        }
        let (min, max) = s.limits;
        if s.paid < min || s.paid > max {
            return Ok(Some(format!(
                "实收金额 {} 元不在购电金额 {} 元至 {} 元之内",
                yuan(s.paid),
                yuan(min),
                yuan(max)
            )));
        }
        let Ok(mut b) = self.backend_session(&s.backend, s.dialect) else {
            return Ok(None);
        };
        let card = card_ref(&s.data);
        let paid = Purchase::Money(s.paid);
        let check = match self.wait(|| b.can_buy(&card, paid)) {
            Ok(check) => Some(check),
            Err(DialectError::Backend(BackendError::NotSupported)) => {
                Some(self.kiosk_can_buy(s, s.paid)?)
            }
            Err(_) => None,
        };
        if let Some(refusal) = check.and_then(|check| check.refusal) {
            return Ok(Some(refusal.message));
        }
        // What was paid, priced again: a backend that deducts arrears takes them first, and the
        // receipt shows the split of what is sold.
        match self.wait(|| b.quote(&card, paid)) {
            Ok(q) if q.amount == s.paid => {
                self.journal.note(
                    "purchase-quoted",
                    json!({"amount_fen": q.amount.0, "energy_wh": q.energy.0,
                           "arrears_fen": q.arrears.0, "steps": q.steps.len(), "as_paid": true}),
                );
                s.quote = Some(Quote {
                    purchase: paid,
                    amount: q.amount,
                    energy: q.energy,
                    arrears: q.arrears,
                });
                s.tariff_steps = q.steps;
            }
            Err(DialectError::Backend(BackendError::Refused(r))) => return Ok(Some(r.message)),
            // No quote, or none to be had now: the sale goes ahead by the usual rules.
            _ => {}
        }
        Ok(None)
    }

    /// Ends a paid session whose money cannot be sold: the payment goes to an operator for a
    /// refund, in one commit, and the receipt says so.
    fn unsold(
        &mut self,
        s: &mut CashSession,
        printer: &mut dyn ReceiptPrinter,
        reason: String,
    ) -> Result<Completion, SaleError> {
        let payment = s
            .payment
            .ok_or(SaleError::WrongStep("cash was paid with no payment open"))?;
        let (card, paid) = (s.data.card_serial.clone(), s.paid);
        self.journal.commit(|b| {
            let id = b.append(
                "sale-not-made",
                &json!({"payment": payment, "paid_fen": paid.0, "reason": reason}),
            )?;
            b.close_payment(payment, "open", "abandoned", None, id)?;
            b.open_manual_item(
                &NewItem::payment(
                    payment,
                    &card,
                    &format!(
                        "顾客已投币 {} 元，未售电（{reason}）：请退款（卡号 {card}）",
                        yuan(paid)
                    ),
                ),
                id,
            )?;
            Ok(())
        })?;
        let outcome = Outcome::Unsold { payment, reason };
        let receipt = self.receipt(s, &outcome);
        let printed = self.print_receipt(printer, ReceiptOf::Payment(Some(payment)), &receipt)?;
        self.journal.flush()?;
        Ok(Completion {
            outcome,
            receipt,
            printed,
        })
    }

    /// The customer leaves with nothing paid (or gives up before paying): the session's payment
    /// closes. A banknote caught on the way in is on a receipt with its work order, printed now.
    /// Returns whether a receipt was printed in full (`None`: nothing to print).
    pub fn cancel(
        &mut self,
        s: CashSession,
        printer: &mut dyn ReceiptPrinter,
    ) -> Result<Option<bool>, SaleError> {
        if s.paid > Fen(0) || s.bank.is_some() {
            return Err(SaleError::WrongStep(
                "money is in: the sale is completed, not cancelled",
            ));
        }
        if let Some(payment) = s.payment {
            let card = s.data.card_serial.clone();
            self.journal.commit(|b| {
                let id = b.append(
                    "payment-cancelled",
                    &json!({"payment": payment, "card": card}),
                )?;
                b.close_payment(payment, "open", "abandoned", None, id)
            })?;
            fail::fail_point!("sale.after-cancel");
        }
        if s.caught.is_empty() {
            return Ok(None);
        }
        let receipt = self.unsold_receipt(&s);
        let printed = self.print_receipt(printer, ReceiptOf::Payment(s.payment), &receipt)?;
        self.journal.flush()?;
        Ok(Some(printed))
    }

    /// The backend sale under `request.kiosk_serial`; an unknown outcome is asked about once.
    /// The answer is journaled (a refusal with its refund item) before it is returned.
    fn sell(
        &mut self,
        s: &CashSession,
        request: &SaleRequest,
    ) -> Result<Result<BackendGrant, SaleOutcome>, SaleError> {
        let serial = request.kiosk_serial;
        let answer = self.send(&s.backend, s.dialect, request);
        fail::fail_point!("sale.after-sale-sent");
        let answer = match answer {
            Err(SaleOutcome::Unknown(why)) => {
                self.journal
                    .append("sale-unknown", json!({"serial": serial, "why": why}))?;
                match self.ask_status(&s.backend, s.dialect, serial) {
                    Some(SaleStatus::Granted(g)) => Ok(g),
                    Some(SaleStatus::Refused(r)) => Err(SaleOutcome::Refused(r)),
                    // "No such sale" may be a request still on its way: recovery asks again.
                    _ => Err(SaleOutcome::Unknown(why)),
                }
            }
            other => other,
        };
        let stands = self.record_answer(serial, &["intent"], &answer, "售电")?;
        if !stands {
            // Refunded meanwhile by another process: nothing is written; an operator has it.
            return Ok(Err(SaleOutcome::Unknown(
                "the sale was refunded before the backend's grant was recorded".into(),
            )));
        }
        Ok(answer)
    }

    /// Journals what the backend said of sale `serial`, which must still be in one of `from`,
    /// and moves the sale to match. A refusal opens its refund item in the same commit; `what`
    /// names the attempt on the item (售电, 补售电). Returns whether the sale stands as the
    /// answer says (a grant for a sale refunded meanwhile does not: it is an operator's).
    fn record_answer(
        &mut self,
        serial: u64,
        from: &[&str],
        answer: &Result<BackendGrant, SaleOutcome>,
        what: &str,
    ) -> Result<bool, JournalError> {
        let recorded = self.journal.commit(|b| {
            match answer {
                Ok(grant) => {
                    let (utility, paid, payment) = sale_facts(b, serial)?;
                    let id = b.append(
                        "sale-granted",
                        &json!({"serial": serial, "sale_id": grant.backend_sale_id,
                                "purchase_count": grant.purchase_count,
                                "amount_fen": grant.amount.0, "energy_wh": grant.energy.0,
                                "utility": utility, "paid_fen": paid, "payment": payment}),
                    )?;
                    let grant = serde_json::to_string(grant).expect("a grant serializes");
                    b.sale_state(serial, from, "granted", Some(&grant), id)?;
                }
                Err(SaleOutcome::Refused(r)) => {
                    let id = b.append(
                        "sale-refused",
                        &json!({"serial": serial, "reason": r.message}),
                    )?;
                    b.sale_state(serial, from, "refused", None, id)?;
                    // The backend's refusal is the proof a refund needs: an operator pays it.
                    owe_refund(b, serial, Some(&r.message), what)?;
                }
                Err(SaleOutcome::NeverReached(why)) => {
                    let id =
                        b.append("sale-never-reached", &json!({"serial": serial, "why": why}))?;
                    b.sale_state(serial, from, "never-reached", None, id)?;
                }
                Err(SaleOutcome::Unknown(why)) => {
                    let id = b.append("sale-pending", &json!({"serial": serial, "why": why}))?;
                    b.sale_state(serial, from, "pending", None, id)?;
                    return Ok(());
                }
            }
            // The backend answered: an alert that it had not is over.
            recovery::close_unanswered_alert(b, serial, answer_state(answer))
        });
        let stands = match (recorded, answer) {
            // The sale moved on meanwhile, but the backend sold it: that is never dropped.
            (Err(JournalError::Conflict { .. }), Ok(grant)) => self.late_grant(serial, grant)?,
            (recorded, _) => {
                recorded?;
                true
            }
        };
        if let Err(SaleOutcome::Refused(_)) = answer {
            fail::fail_point!("sale.after-refusal-recorded");
        }
        Ok(stands)
    }

    /// A grant that arrived after sale `serial` moved on (another process recorded another
    /// outcome meanwhile). A sale not yet paid back becomes granted (no refund can follow); one
    /// already refunded goes to an operator, to have the utility void the sale. Returns whether
    /// the sale is granted now.
    fn late_grant(&mut self, serial: u64, grant: &BackendGrant) -> Result<bool, JournalError> {
        let grant_json = serde_json::to_string(grant).expect("a grant serializes");
        self.journal.commit(|b| {
            let (state, card): (String, String) = b.sql().query_row(
                "SELECT state, card_serial FROM sales WHERE serial = ?1",
                [serial as i64],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?;
            let (utility, paid, payment) = sale_facts(b, serial)?;
            let body = json!({"serial": serial, "sale_id": grant.backend_sale_id,
                              "purchase_count": grant.purchase_count,
                              "amount_fen": grant.amount.0, "energy_wh": grant.energy.0,
                              "utility": utility, "paid_fen": paid, "payment": payment,
                              "late": true});
            match state.as_str() {
                "granted" | "written" => Ok(true),
                "refunded" => {
                    let id = b.append("sale-granted-after-refund", &body)?;
                    b.open_manual_item(
                        &NewItem::sale(serial, Some(&card), &format!(
                                "交易 {serial:08} 已退款，但后台随后售电（{}）：请联系供电单位冲销该笔售电",
                                grant.backend_sale_id
                            )),
                        id,
                    )?;
                    Ok(false)
                }
                from => {
                    let id = b.append("sale-granted", &body)?;
                    b.sale_state(serial, &[from], "granted", Some(&grant_json), id)?;
                    Ok(true)
                }
            }
        })
    }

    /// The backend and dialect that serve `utility`.
    fn route(&self, utility: &str) -> Option<(BackendEntry, usize)> {
        let backend = self
            .backends
            .iter()
            .find(|b| b.utility_codes.iter().any(|u| u == utility))?
            .clone();
        let dialect = self
            .dialects
            .iter()
            .position(|d| d.name == backend.dialect)?;
        Some((backend, dialect))
    }

    /// Sends one sale request and sorts the answer.
    fn send(
        &self,
        backend: &BackendEntry,
        dialect: usize,
        request: &SaleRequest,
    ) -> Result<BackendGrant, SaleOutcome> {
        let mut session = self
            .backend_session(backend, dialect)
            .map_err(|e| SaleOutcome::NeverReached(e.to_string()))?;
        match self.wait(|| session.sale(request)) {
            Ok(grant) => Ok(grant),
            Err(DialectError::Backend(BackendError::Refused(r))) => Err(SaleOutcome::Refused(r)),
            Err(DialectError::Backend(
                e @ (BackendError::Unreachable(_) | BackendError::NotSupported),
            )) => Err(SaleOutcome::NeverReached(e.to_string())),
            Err(e) => Err(SaleOutcome::Unknown(e.to_string())),
        }
    }

    /// Asks the backend what became of the sale under `serial`; `None` when it did not say
    /// (noted in the journal).
    fn ask_status(
        &mut self,
        backend: &BackendEntry,
        dialect: usize,
        serial: u64,
    ) -> Option<SaleStatus> {
        let asked = self
            .backend_session(backend, dialect)
            .map_err(|e| e.to_string())
            .and_then(|mut b| {
                self.wait(|| b.sale_status(&self.terminal_id, serial))
                    .map_err(|e| e.to_string())
            });
        match asked {
            Ok(status) => Some(status),
            Err(why) => {
                self.journal.note(
                    "sale-status-unanswered",
                    json!({"serial": serial, "why": why}),
                );
                None
            }
        }
    }

    fn backend_session(
        &self,
        backend: &BackendEntry,
        dialect: usize,
    ) -> Result<BackendSession, SaleError> {
        Ok(self.dialects[dialect].backend_session(backend.endpoint.clone())?)
    }
}

enum SaleOutcome {
    Refused(Refusal),
    /// Nothing reached the backend: it cannot have sold.
    NeverReached(String),
    Unknown(String),
}

/// The sale state an answer leaves a sale in.
fn answer_state(answer: &Result<BackendGrant, SaleOutcome>) -> &'static str {
    match answer {
        Ok(_) => "granted",
        Err(SaleOutcome::Refused(_)) => "refused",
        Err(SaleOutcome::NeverReached(_)) => "never-reached",
        Err(SaleOutcome::Unknown(_)) => "pending",
    }
}

/// Opens the refund a refused sale owes: its `refund-owed` row and an operator item, in the
/// caller's commit. `reason` is the backend's words (the last `sale-refused` row's if `None`).
fn owe_refund(
    b: &mut Batch<'_>,
    serial: u64,
    reason: Option<&str>,
    what: &str,
) -> BatchResult<i64> {
    let (paid, card): (i64, String) = b.sql().query_row(
        "SELECT paid_fen, card_serial FROM sales WHERE serial = ?1",
        [serial as i64],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    let reason = match reason {
        Some(reason) => reason.to_string(),
        None => b
            .sql()
            .query_row(
                "SELECT json_extract(body, '$.reason') FROM audit WHERE kind = 'sale-refused'
                 AND json_extract(body, '$.serial') = ?1 ORDER BY id DESC LIMIT 1",
                [serial as i64],
                |r| r.get::<_, Option<String>>(0),
            )
            .optional()?
            .flatten()
            .unwrap_or_else(|| "后台拒绝".into()),
    };
    let id = b.append(
        "refund-owed",
        &json!({"serial": serial, "fen": paid, "reason": reason}),
    )?;
    b.open_manual_item(
        &NewItem::sale(
            serial,
            Some(&card),
            &format!("退款 {} 元：{what}被拒（{reason}）", yuan(Fen(paid as u64))),
        ),
        id,
    )
}

/// Sale `serial`'s utility, what was paid and how: what a grant's audit row carries, so that
/// whoever reads the journal (the fleet) can total sales per utility without the sales table.
fn sale_facts(
    b: &mut crate::journal::Batch<'_>,
    serial: u64,
) -> crate::journal::BatchResult<(String, i64, String)> {
    Ok(b.sql().query_row(
        "SELECT utility, paid_fen, payment FROM sales WHERE serial = ?1",
        [serial as i64],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )?)
}

/// Journals the intent of session `s`'s backend sale under a fresh serial, paid by `payment`;
/// returns the serial, the request as it will be sent (and re-sent), and the audit row.
fn sale_intent(
    b: &mut crate::journal::Batch<'_>,
    terminal_id: &str,
    s: &CashSession,
    payment: PaymentKind,
) -> BatchResult<(u64, SaleRequest, i64)> {
    let purchase = match s.quote {
        Some(q) if q.amount == s.paid => q.purchase,
        _ => Purchase::Money(s.paid),
    };
    let card = card_ref(&s.data);
    let paid = s.paid;
    let id = b.append(
        "sale-intent",
        &json!({"card": card.card_serial, "paid_fen": paid.0, "purchase": purchase,
                "customer_name": s.account.customer_name, "address": s.account.address}),
    )?;
    let serial = b.allocate_serial(id)?;
    let request = SaleRequest {
        terminal_id: terminal_id.to_string(),
        kiosk_serial: serial,
        card: card.clone(),
        purchase,
        payment,
        paid,
    };
    let id = b.append("serial-allocated", &json!({"serial": serial}))?;
    b.record_sale(
        &NewSale {
            serial,
            payment: match payment {
                PaymentKind::Cash => "cash",
                PaymentKind::BankCard => "bank-card",
            },
            card_serial: &card.card_serial,
            utility: &card.utility_code,
            paid_fen: paid.0,
            request_json: &serde_json::to_string(&request).expect("a sale request serializes"),
        },
        id,
    )?;
    Ok((serial, request, id))
}

fn card_ref(d: &CardData) -> CardRef {
    CardRef {
        card_serial: d.card_serial.clone(),
        utility_code: d.utility_code.clone(),
        customer_number: d.customer_number.clone(),
        meter_number: d.meter_number.clone(),
        purchase_count: d.purchase_count,
        pending: d.pending.as_ref().map_or(Fen(0), |p| p.amount),
        pending_energy: d.pending.as_ref().map_or(Wh(0), |p| p.energy),
        return_data: d.return_data.as_ref().map(|r| r.raw.clone()),
    }
}

fn backend_error(backend: &BackendEntry, cause: DialectError) -> SaleError {
    match cause {
        DialectError::Backend(BackendError::Refused(r)) => SaleError::Refused(r),
        cause => SaleError::Backend {
            backend: backend.name.clone(),
            cause,
        },
    }
}

fn outcome_name(o: &Outcome) -> &'static str {
    match o {
        Outcome::Credited { .. } => "credited",
        Outcome::GrantedNotWritten { .. } => "granted-not-written",
        Outcome::Refused { .. } => "refused",
        Outcome::Pending { .. } => "pending",
        Outcome::Unsold { .. } => "unsold",
    }
}
