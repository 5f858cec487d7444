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
//! [`SaleEngine::recover`] at start. Automatic re-sell, refunds, manual handling and clearing
//! build on the same rows.

use std::cell::Cell;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::authority::BackendAuthority;
use crate::backend::{
    Account, BackendError, BackendGrant, CardRef, PaymentKind, Purchase, Refusal, SaleRequest,
    SaleStatus, WriteConfirmation,
};
use crate::card::{CardData, CreditGrant, VerifyOutcome};
use crate::cash_acceptor::{
    CashAcceptor, CashError, CashEvent, CashHandler, Denomination, EscrowDecision, NotRecorded,
};
use crate::clearing;
use crate::codecs::{self, IdentifyError};
use crate::config::{BackendEntry, KioskConfig};
use crate::journal::{Journal, JournalError, NewItem, NewSale};
use crate::money::{Fen, Wh};
use crate::plugin::{
    BackendSession, CardCodecSession, CodecError, DialectError, Plugin, PluginError, SharedCard,
};
use crate::receipt_printer::{Line, Receipt, ReceiptPrinter};

mod bank;
pub use bank::{BankLink, CardPayment};

/// Why a step of the sale could not be taken. Every one leaves the journal consistent.
#[derive(Debug, thiserror::Error)]
pub enum SaleError {
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error("this card: {0}")]
    Identify(Box<IdentifyError>),
    #[error("reading the card with `{codec}`: {cause}")]
    Card { codec: String, cause: CodecError },
    /// The card belongs to a utility this kiosk does not serve.
    #[error("this kiosk does not sell for utility {utility} (card {card_serial})")]
    NotServed {
        utility: String,
        card_serial: String,
    },
    #[error("backend `{backend}`: {cause}")]
    Backend {
        backend: String,
        cause: DialectError,
    },
    /// The backend answered and will not sell; its words are for the customer.
    #[error("{}", .0.message)]
    Refused(Refusal),
    #[error("the purchase of {0} is outside what this kiosk sells ({1} to {2})")]
    OutOfLimits(Fen, Fen, Fen),
    #[error("cash acceptor: {0}")]
    Cash(#[from] CashError),
    #[error("{0}")]
    Plugin(#[from] PluginError),
    #[error("no open operator item {0}")]
    NoSuchItem(i64),
    /// A refund needs proof the sale never took place at the backend.
    #[error(
        "sale {serial} is {state}: the backend sold it, or may have; no refund (re-write the card, \
         or wait for the outcome)"
    )]
    RefundRefused { serial: u64, state: String },
    #[error("sale {serial} is {state}: only a sale handed to an operator is re-sold by hand")]
    ResellRefused { serial: u64, state: String },
    #[error("nothing has been paid in this session: there is nothing to sell")]
    NothingPaid,
    #[error("item {item} is about {what}, not a sale: it is refunded, never re-sold")]
    NotASale { item: i64, what: String },
    #[error(
        "item {0} is about a bank-card reversal: confirm it with the acquirer, then dismiss it"
    )]
    ReversalItem(i64),
    #[error("the journal holds a sale it cannot read back: {0}")]
    Corrupt(String),
    #[error(
        "item {0} is about money the customer paid: settle it by refund or re-sell, not by \
         dismissing it"
    )]
    DismissRefused(i64),
    /// An operator is clearing the kiosk (period `0`): no sales until it ends.
    #[error("the kiosk is being cleared (period {0}); sales resume when clearing ends")]
    Clearing(i64),
    #[error("acquirer `{acquirer}`: {cause}")]
    Acquirer {
        acquirer: String,
        cause: crate::payment::AcquirerError,
    },
    /// The debit's outcome is not known: it is being reversed, so nothing is taken.
    #[error(
        "the bank did not confirm the debit of {0}; it is being reversed and nothing is taken \
         (try again, or pay in cash)"
    )]
    DebitReversed(Fen),
    #[error("PIN pad: {0}")]
    PinPad(#[from] crate::pin_pad::PinPadError),
    #[error("the kiosk has not signed on with its acquirer; bank cards are not taken until it has")]
    NotSignedOn,
    #[error("bank-card batch {0} is full (999 purchases): settle it (`selfvend bank settle`)")]
    BatchFull(u32),
    #[error(
        "{0} bank-card reversals are not acknowledged yet; the batch is not settled until they \
         are (`selfvend bank reversals`)"
    )]
    ReversalsPending(usize),
    #[error("{0}")]
    WrongStep(&'static str),
}

/// What the customer is buying, priced by the backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quote {
    pub purchase: Purchase,
    pub amount: Fen,
    pub energy: Wh,
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
}

/// What an operator does with an item the kiosk could not finish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolution {
    Refund,
    Resell,
    /// Nothing is owed (a caught banknote the operator did not find): the item is closed.
    Dismiss,
}

/// How often a sale that never reached its backend is sent again before an operator is asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResellPolicy {
    pub max_attempts: u32,
    /// The wait before the second try; each later wait doubles.
    pub first_delay: Duration,
}

impl Default for ResellPolicy {
    fn default() -> Self {
        ResellPolicy {
            max_attempts: 3,
            first_delay: Duration::from_secs(30),
        }
    }
}

/// How long a banknote already drawn in is waited for once the customer stops paying.
const NOTE_IN_FLIGHT_LIMIT: Duration = Duration::from_secs(30);

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
    paid: Fen,
    /// The serial of an earlier sale written onto this card as it came in.
    pub rewritten: Option<u64>,
    /// This session's payment in the journal, once the acceptor was enabled.
    payment: Option<i64>,
    /// Banknotes the acceptor did not credit that may be in the kiosk: each operator item and
    /// the note's value.
    pub caught: Vec<(i64, Fen)>,
    /// A bank-card payment: the approved debit, whose sale's intent is already journaled.
    bank: Option<BankPaid>,
}

/// An approved bank-card debit and the sale recorded with it.
struct BankPaid {
    pan_masked: String,
    rrn: String,
    serial: u64,
    request: SaleRequest,
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
    resell: ResellPolicy,
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
            resell: ResellPolicy::default(),
            progress: None,
        }
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

    /// Sets how automatic re-sell retries.
    pub fn with_resell_policy(mut self, policy: ResellPolicy) -> Self {
        self.resell = policy;
        self
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

    /// Ends the operator's clearing through this engine's journal and dialects.
    pub fn end_clearing(
        &mut self,
        config: &KioskConfig,
        pin: &str,
        counted: Option<Fen>,
    ) -> Result<clearing::Ended, clearing::ClearingError> {
        clearing::end(&mut self.journal, config, pin, counted, &self.dialects)
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
        let price = u64::from(s.account.price_fen_per_kwh.max(1));
        let (amount, energy) = match purchase {
            Purchase::Money(fen) => (fen, Wh(fen.0.saturating_mul(1000) / price)),
            Purchase::Energy(wh) => (Fen(wh.0.saturating_mul(price).div_ceil(1000)), wh),
        };
        if amount < self.min_purchase || amount > self.max_purchase {
            return Err(SaleError::OutOfLimits(
                amount,
                self.min_purchase,
                self.max_purchase,
            ));
        }
        let mut session = self.backend_session(&s.backend, s.dialect)?;
        let check = self
            .wait(|| session.can_buy(&card_ref(&s.data), purchase))
            .map_err(|cause| backend_error(&s.backend, cause))?;
        if let Some(refusal) = check.refusal {
            self.journal
                .append("purchase-refused", json!({"reason": refusal.message}))?;
            return Err(SaleError::Refused(refusal));
        }
        let quote = Quote {
            purchase,
            amount,
            energy,
        };
        self.journal.note(
            "purchase-quoted",
            json!({"amount_fen": amount.0, "energy_wh": energy.0}),
        );
        s.quote = Some(quote);
        Ok(quote)
    }

    /// Takes banknotes until the quote is paid or `patience` passes without one; returns what
    /// was paid. A note worth more than what is left is given back (the kiosk gives no change).
    pub fn take_cash(
        &mut self,
        s: &mut CashSession,
        acceptor: &mut dyn CashAcceptor,
        patience: Duration,
    ) -> Result<Fen, SaleError> {
        self.take_cash_watched(s, acceptor, patience, &mut |_| true)
    }

    /// [`take_cash`](Self::take_cash), with `go_on` told what is paid after every poll of the
    /// acceptor; it stops taking banknotes when `go_on` says `false`.
    pub fn take_cash_watched(
        &mut self,
        s: &mut CashSession,
        acceptor: &mut dyn CashAcceptor,
        patience: Duration,
        go_on: &mut dyn FnMut(Fen) -> bool,
    ) -> Result<Fen, SaleError> {
        let due = s.quote.map_or(Fen(0), |q| q.amount);
        if s.bank.is_some() {
            return Err(SaleError::WrongStep("this session is paid by bank card"));
        }
        if s.payment.is_none() {
            let card = s.data.card_serial.clone();
            let opened = self.journal.commit(|b| {
                // Checked in the commit itself: an operator's CLI may start clearing at any
                // moment, and then the acceptor stays inhibited.
                let (period, state): (i64, String) = b.sql().query_row(
                    "SELECT id, state FROM periods ORDER BY id DESC LIMIT 1",
                    [],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )?;
                if state != "open" {
                    return Ok(Err(SaleError::Clearing(period)));
                }
                let id = b.append("payment-opened", &json!({"card": card, "due_fen": due.0}))?;
                Ok(Ok(b.open_payment(&card, id)?))
            })?;
            s.payment = Some(opened?);
            fail::fail_point!("sale.after-payment-opened");
        }
        acceptor.enable(&Denomination::ALL)?;
        let mut last_note = Instant::now();
        let mut in_flight = false;
        let mut stop = false;
        while !stop && s.paid < due && last_note.elapsed() < patience {
            let before = s.paid;
            self.poll_cash(s, acceptor, due, &mut in_flight)?;
            if s.paid > before {
                last_note = Instant::now();
            }
            stop = !go_on(s.paid);
        }
        let inhibited = acceptor.enable(&[]);
        // A banknote already drawn in finishes here, credited to this customer or given back;
        // left in the acceptor, it would be offered to the next customer's session.
        let draining = Instant::now();
        loop {
            self.poll_cash(s, acceptor, due, &mut in_flight)?;
            if !in_flight || draining.elapsed() > NOTE_IN_FLIGHT_LIMIT {
                break;
            }
        }
        inhibited?;
        Ok(s.paid)
    }

    /// One poll of the acceptor for session `s`; `in_flight` follows a banknote from being
    /// drawn in until it is credited or given back.
    fn poll_cash(
        &mut self,
        s: &mut CashSession,
        acceptor: &mut dyn CashAcceptor,
        due: Fen,
        in_flight: &mut bool,
    ) -> Result<(), SaleError> {
        let mut handler = Cashier {
            journal: &mut self.journal,
            payment: s.payment,
            card: &s.data.card_serial,
            caught: &mut s.caught,
            paid: &mut s.paid,
            due,
            in_flight,
            failed: None,
        };
        // The poll's time, less the journal's inside it, is waiting on the acceptor.
        let started = Instant::now();
        let journal_before = handler.journal.stats().commit_time;
        let polled = acceptor.poll(&mut handler);
        let journal_time = handler.journal.stats().commit_time - journal_before;
        self.waited
            .set(self.waited.get() + started.elapsed().saturating_sub(journal_time));
        if let Some(e) = handler.failed.take() {
            let _ = acceptor.enable(&[]);
            return Err(e.into());
        }
        if let Err(e) = polled {
            let _ = acceptor.enable(&[]);
            return Err(e.into());
        }
        Ok(())
    }

    /// Sells what was paid, writes it onto the card, confirms it and prints the receipt.
    pub fn complete(
        &mut self,
        s: &mut CashSession,
        printer: &mut dyn ReceiptPrinter,
    ) -> Result<Completion, SaleError> {
        let (serial, request) = match &s.bank {
            // Paid by bank card: the sale's intent went into the journal with the approval.
            Some(bank) => (bank.serial, bank.request.clone()),
            None => {
                if s.paid == Fen(0) {
                    return Err(SaleError::NothingPaid);
                }
                let (terminal_id, payment) = (self.terminal_id.as_str(), s.payment);
                let session: &CashSession = s;
                self.journal.commit(|b| {
                    let (serial, request, id) =
                        sale_intent(b, terminal_id, session, PaymentKind::Cash)?;
                    if let Some(payment) = payment {
                        b.close_payment(payment, "sold", Some(serial), id)?;
                    }
                    Ok((serial, request))
                })?
            }
        };
        fail::fail_point!("sale.after-sale-intent");
        self.step(Step::Sell);
        let outcome = match self.sell(s, &request) {
            Ok(grant) => {
                fail::fail_point!("sale.after-grant-recorded");
                self.step(Step::Write);
                let written = self.write_card(s, serial, &grant)?;
                if written {
                    Outcome::Credited { serial, grant }
                } else {
                    Outcome::GrantedNotWritten { serial, grant }
                }
            }
            Err(SaleOutcome::Refused(refusal)) => {
                // The backend's refusal is the proof a refund needs: an operator pays it out.
                self.journal.commit(|b| {
                    let id = b.append(
                        "refund-owed",
                        &json!({"serial": serial, "fen": s.paid.0, "reason": refusal.message}),
                    )?;
                    b.open_manual_item(
                        &NewItem {
                            serial: Some(serial),
                            payment: None,
                            caught_fen: None,
                            card_serial: Some(&s.data.card_serial),
                            reason: &format!(
                                "退款 {} 元：售电被拒（{}）",
                                yuan(s.paid),
                                refusal.message
                            ),
                        },
                        id,
                    )
                })?;
                Outcome::Refused { serial, refusal }
            }
            // Never reached the backend: sold again automatically (补售电) under the same serial.
            Err(SaleOutcome::NeverReached(why)) | Err(SaleOutcome::Unknown(why)) => {
                Outcome::Pending { serial, why }
            }
        };
        let receipt = self.receipt(s, &outcome);
        // The receipt itself is kept with its intent, so it can be printed again.
        self.journal.append(
            "receipt-intent",
            json!({"serial": serial, "receipt": receipt}),
        )?;
        fail::fail_point!("sale.after-receipt-intent");
        self.step(Step::Print);
        let printed = self.print(printer, serial, &receipt)?;
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
                b.close_payment(payment, "abandoned", None, id)
            })?;
        }
        if s.caught.is_empty() {
            return Ok(None);
        }
        let mut r = Receipt::new()
            .with(Line::new("自助售电凭证").bold().double().centred())
            .with(Line::new(format!("终端号：{}", self.terminal_id)))
            .with(Line::new(format!("卡号：{}", s.data.card_serial)))
            .with(Line::new("未售电"));
        caught_lines(&mut r, &s.caught);
        self.journal.append(
            "receipt-intent",
            json!({"payment": s.payment, "receipt": r}),
        )?;
        let printed = self.wait(|| printer.print(&r));
        match printed {
            Ok(_) => {
                self.journal
                    .note("receipt-printed", json!({"payment": s.payment}));
                self.journal.flush()?;
                Ok(Some(true))
            }
            Err(e) => {
                self.journal.append(
                    "receipt-unfinished",
                    json!({"payment": s.payment, "why": e.to_string()}),
                )?;
                Ok(Some(false))
            }
        }
    }

    /// Prints `receipt`; a receipt cut short is journaled for a reprint, not lost.
    fn print(
        &mut self,
        printer: &mut dyn ReceiptPrinter,
        serial: u64,
        receipt: &Receipt,
    ) -> Result<bool, SaleError> {
        match self.wait(|| printer.print(receipt)) {
            Ok(_) => {
                self.journal
                    .note("receipt-printed", json!({"serial": serial}));
                Ok(true)
            }
            Err(e) => {
                self.journal.append(
                    "receipt-unfinished",
                    json!({"serial": serial, "why": e.to_string()}),
                )?;
                Ok(false)
            }
        }
    }

    /// Prints the last sale's receipt again, marked as a copy; `None` when there was none.
    /// Returns the sale's serial and whether the copy came out whole.
    pub fn reprint_last(
        &mut self,
        printer: &mut dyn ReceiptPrinter,
    ) -> Result<Option<(u64, bool)>, SaleError> {
        let Some(entry) = self.journal.last_entry("receipt-intent")? else {
            return Ok(None);
        };
        let serial = entry.body["serial"].as_u64().unwrap_or_default();
        let original: Receipt = serde_json::from_value(entry.body["receipt"].clone())
            .map_err(|e| SaleError::Corrupt(format!("receipt of sale {serial}: {e}")))?;
        let mut copy = Receipt::new().with(Line::new("（重印 / COPY）").centred());
        for line in original.lines() {
            copy.push(line.clone());
        }
        self.journal
            .append("receipt-reprint-intent", json!({"serial": serial}))?;
        let printed = self.print(printer, serial, &copy)?;
        self.journal.flush()?;
        Ok(Some((serial, printed)))
    }

    /// The backend sale under `request.kiosk_serial`; an unknown outcome is asked about once.
    fn sell(
        &mut self,
        s: &CashSession,
        request: &SaleRequest,
    ) -> Result<BackendGrant, SaleOutcome> {
        let serial = request.kiosk_serial;
        let answer = self.send(&s.backend, s.dialect, request);
        fail::fail_point!("sale.after-sale-sent");
        let answer = match answer {
            Err(SaleOutcome::Unknown(why)) => {
                let _ = self
                    .journal
                    .append("sale-unknown", json!({"serial": serial, "why": why}));
                self.ask_status(s, serial)
                    .unwrap_or(Err(SaleOutcome::Unknown(why)))
            }
            other => other,
        };
        self.record_answer(serial, &answer)
            .map_err(|e| SaleOutcome::Unknown(e.to_string()))?;
        answer
    }

    /// Journals what the backend said of sale `serial`, and moves the sale to match.
    fn record_answer(
        &mut self,
        serial: u64,
        answer: &Result<BackendGrant, SaleOutcome>,
    ) -> Result<(), JournalError> {
        self.journal.commit(|b| {
            match answer {
                Ok(grant) => {
                    let id = b.append(
                        "sale-granted",
                        &json!({"serial": serial, "sale_id": grant.backend_sale_id,
                                "purchase_count": grant.purchase_count,
                                "amount_fen": grant.amount.0, "energy_wh": grant.energy.0}),
                    )?;
                    let grant = serde_json::to_string(grant).unwrap_or_default();
                    b.sale_state(serial, "granted", Some(&grant), id)?;
                }
                Err(SaleOutcome::Refused(r)) => {
                    let id = b.append(
                        "sale-refused",
                        &json!({"serial": serial, "reason": r.message}),
                    )?;
                    b.sale_state(serial, "refused", None, id)?;
                }
                Err(SaleOutcome::NeverReached(why)) => {
                    let id =
                        b.append("sale-never-reached", &json!({"serial": serial, "why": why}))?;
                    b.sale_state(serial, "never-reached", None, id)?;
                }
                Err(SaleOutcome::Unknown(why)) => {
                    let id = b.append("sale-pending", &json!({"serial": serial, "why": why}))?;
                    b.sale_state(serial, "pending", None, id)?;
                }
            }
            Ok(())
        })
    }

    /// Finishes what the journal shows unfinished: open payments go to an operator, write
    /// confirmations and closed periods' reports are sent again, and a sale whose outcome at
    /// the backend is not known is asked about. Run at start, before the first customer.
    pub fn recover(&mut self) -> Result<Vec<(u64, String)>, SaleError> {
        self.recover_payments()?;
        self.retry_confirmations()?;
        // Each answer, or why there is none, is in the journal; an unanswered one stays queued.
        clearing::send_queued(&mut self.journal, &self.backends, &self.dialects)?;
        let mut resolved = Vec::new();
        for sale in self.journal.sales(&["intent", "pending"], None)? {
            let Some(backend) = self
                .backends
                .iter()
                .find(|b| b.utility_codes.contains(&sale.utility))
                .cloned()
            else {
                continue;
            };
            let Some(dialect) = self.dialects.iter().position(|d| d.name == backend.dialect) else {
                continue;
            };
            let status = self
                .backend_session(&backend, dialect)?
                .sale_status(&self.terminal_id, sale.serial);
            let answer = match status {
                Ok(SaleStatus::Granted(g)) => Ok(g),
                Ok(SaleStatus::Refused(r)) => Err(SaleOutcome::Refused(r)),
                // The backend has never seen this serial, and the kiosk will not send it again.
                Ok(SaleStatus::NotFound) => Err(SaleOutcome::NeverReached(
                    "the backend has no sale under this serial".into(),
                )),
                // Still unknown: asked again at the next start.
                Err(_) => continue,
            };
            self.record_answer(sale.serial, &answer)?;
            let state = match answer {
                Ok(_) => "granted",
                Err(SaleOutcome::Refused(_)) => "refused",
                Err(_) => "never-reached",
            };
            resolved.push((sale.serial, state.to_string()));
        }
        Ok(resolved)
    }

    /// A payment still open at start belongs to a session that stopped before its sale had a
    /// serial: nothing was sent to a backend, so the money goes to an operator, who may refund
    /// it. Returns the payments handed over: (payment id, fen).
    pub fn recover_payments(&mut self) -> Result<Vec<(i64, Fen)>, SaleError> {
        let mut handed = Vec::new();
        for (id, card, paid) in self.journal.open_payments()? {
            self.journal.commit(|b| {
                let audit = b.append(
                    "payment-abandoned",
                    &json!({"payment": id, "card": card, "paid_fen": paid}),
                )?;
                b.close_payment(id, "abandoned", None, audit)?;
                if paid > 0 {
                    b.open_manual_item(
                        &NewItem {
                            serial: None,
                            payment: Some(id),
                            caught_fen: None,
                            card_serial: Some(&card),
                            reason: &format!(
                                "顾客已投币 {} 元，未售电（卡号 {card}）：请退款或到营业厅购电",
                                yuan(Fen(paid))
                            ),
                        },
                        audit,
                    )?;
                }
                Ok(())
            })?;
            if paid > 0 {
                handed.push((id, Fen(paid)));
            }
        }
        Ok(handed)
    }

    /// Automatic re-sell (补售电): each sale that never reached its backend is sent again,
    /// unchanged and under its own serial, once its backoff has passed; after the policy's
    /// tries it goes to an operator. Returns each sale tried and where it stands now.
    pub fn resell(&mut self) -> Result<Vec<(u64, String)>, SaleError> {
        let mut tried = Vec::new();
        for sale in self.journal.sales(&["never-reached"], None)? {
            if !sale.resell_due {
                continue;
            }
            let Ok(request) = serde_json::from_str::<SaleRequest>(&sale.request_json) else {
                continue;
            };
            let Some((backend, dialect)) = self.route(&sale.utility) else {
                continue;
            };
            let attempt = sale.resell_attempts + 1;
            let delay = self.resell.first_delay.as_secs() << sale.resell_attempts.min(16);
            self.journal.commit(|b| {
                b.append(
                    "resell-attempt",
                    &json!({"serial": sale.serial, "attempt": attempt}),
                )?;
                b.count_resell_attempt(sale.serial, delay)
            })?;
            let answer = self.send(&backend, dialect, &request);
            self.record_answer(sale.serial, &answer)?;
            let state = match answer {
                Ok(_) => "granted",
                Err(SaleOutcome::Refused(refusal)) => {
                    self.journal.commit(|b| {
                        let id = b.append(
                            "refund-owed",
                            &json!({"serial": sale.serial, "fen": sale.paid_fen,
                                    "reason": refusal.message}),
                        )?;
                        b.open_manual_item(
                            &NewItem {
                                serial: Some(sale.serial),
                                payment: None,
                                caught_fen: None,
                                card_serial: Some(&sale.card_serial),
                                reason: &format!(
                                    "退款 {} 元：补售电被拒（{}）",
                                    yuan(Fen(sale.paid_fen)),
                                    refusal.message
                                ),
                            },
                            id,
                        )
                    })?;
                    "refused"
                }
                Err(SaleOutcome::NeverReached(_)) if attempt >= self.resell.max_attempts => {
                    self.journal.commit(|b| {
                        let id = b.append(
                            "resell-exhausted",
                            &json!({"serial": sale.serial, "attempts": attempt}),
                        )?;
                        b.sale_state(sale.serial, "manual", None, id)?;
                        b.open_manual_item(
                            &NewItem {
                                serial: Some(sale.serial),
                                payment: None,
                                caught_fen: None,
                                card_serial: Some(&sale.card_serial),
                                reason: &format!(
                                    "补售电 {attempt} 次未成功：请人工补售电或退款 {} 元",
                                    yuan(Fen(sale.paid_fen))
                                ),
                            },
                            id,
                        )
                    })?;
                    "manual"
                }
                Err(SaleOutcome::NeverReached(_)) => "never-reached",
                Err(SaleOutcome::Unknown(_)) => "pending",
            };
            tried.push((sale.serial, state.to_string()));
        }
        Ok(tried)
    }

    /// An operator settles item `id`. A refund is paid only with proof the sale never took
    /// place at the backend (it refused, or it was never reached); a re-sell sends the sale
    /// once more under its own serial.
    pub fn resolve_manual(
        &mut self,
        id: i64,
        resolution: Resolution,
        operator_note: &str,
    ) -> Result<String, SaleError> {
        let item = self
            .journal
            .manual_items(false)?
            .into_iter()
            .find(|i| i.id == id)
            .ok_or(SaleError::NoSuchItem(id))?;
        if let Some(caught) = item.caught_fen {
            return self.resolve_caught(id, caught, resolution, operator_note);
        }
        if let Some((payment, paid, state)) = self.journal.item_payment(id)? {
            // Money taken with no sale ever sent: a refund is all there is to do.
            if resolution != Resolution::Refund || state != "abandoned" {
                return Err(SaleError::NotASale {
                    item: id,
                    what: format!("a payment with no sale ({state})"),
                });
            }
            self.journal.commit(|b| {
                let audit = b.append(
                    "refund-paid",
                    &json!({"payment": payment, "fen": paid, "item": id, "note": operator_note}),
                )?;
                b.close_payment(payment, "refunded", None, audit)?;
                b.count("lifetime.refunded_fen", paid as i64)?;
                b.resolve_manual_item(id, &format!("refunded: {operator_note}"), audit)
            })?;
            return Ok(format!(
                "item {id}: {} yuan refunded for payment {payment}",
                yuan(Fen(paid))
            ));
        }
        // No sale, payment or banknote: a reversal the acquirer never acknowledged. The operator
        // confirms it with the acquirer and closes the item; it is still sent until then.
        if item.serial.is_none() {
            if resolution != Resolution::Dismiss {
                return Err(SaleError::ReversalItem(id));
            }
            self.journal.commit(|b| {
                let audit = b.append(
                    "manual-dismissed",
                    &json!({"item": id, "note": operator_note}),
                )?;
                b.resolve_manual_item(id, &format!("dismissed: {operator_note}"), audit)
            })?;
            return Ok(format!("item {id}: closed"));
        }
        let sale = match item.serial {
            Some(serial) => self
                .journal
                .sales(SALE_STATES, None)?
                .into_iter()
                .find(|s| s.serial == serial),
            None => None,
        };
        match (resolution, sale) {
            (Resolution::Refund, Some(sale))
                if matches!(sale.state.as_str(), "refused" | "never-reached" | "manual") =>
            {
                self.journal.commit(|b| {
                    let audit = b.append(
                        "refund-paid",
                        &json!({"serial": sale.serial, "fen": sale.paid_fen,
                                "item": id, "note": operator_note}),
                    )?;
                    b.sale_state(sale.serial, "refunded", None, audit)?;
                    b.count("lifetime.refunded_fen", sale.paid_fen as i64)?;
                    b.resolve_manual_item(id, &format!("refunded: {operator_note}"), audit)
                })?;
                Ok(format!(
                    "item {id}: {} yuan refunded for sale {}",
                    yuan(Fen(sale.paid_fen)),
                    sale.serial
                ))
            }
            (Resolution::Refund, Some(sale)) => Err(SaleError::RefundRefused {
                serial: sale.serial,
                state: sale.state,
            }),
            (Resolution::Resell, Some(sale)) if sale.state == "manual" => {
                let request = serde_json::from_str::<SaleRequest>(&sale.request_json)
                    .map_err(|e| SaleError::Corrupt(e.to_string()))?;
                let (backend, dialect) =
                    self.route(&sale.utility)
                        .ok_or_else(|| SaleError::NotServed {
                            utility: sale.utility.clone(),
                            card_serial: sale.card_serial.clone(),
                        })?;
                let answer = self.send(&backend, dialect, &request);
                self.record_answer(sale.serial, &answer)?;
                match answer {
                    Ok(grant) => {
                        self.journal.commit(|b| {
                            let audit = b.append(
                                "manual-resell",
                                &json!({"serial": sale.serial, "item": id, "note": operator_note}),
                            )?;
                            b.resolve_manual_item(id, &format!("re-sold: {operator_note}"), audit)
                        })?;
                        Ok(format!(
                            "item {id}: sale {} re-sold ({}); it is written when card {} is next inserted",
                            sale.serial, grant.backend_sale_id, sale.card_serial
                        ))
                    }
                    Err(SaleOutcome::Refused(r)) => Err(SaleError::Refused(r)),
                    Err(SaleOutcome::NeverReached(why) | SaleOutcome::Unknown(why)) => {
                        Err(SaleError::Backend {
                            backend: backend.name.clone(),
                            cause: DialectError::Backend(BackendError::Unreachable(why)),
                        })
                    }
                }
            }
            (Resolution::Resell, Some(sale)) => Err(SaleError::ResellRefused {
                serial: sale.serial,
                state: sale.state,
            }),
            (Resolution::Dismiss, Some(_)) => Err(SaleError::DismissRefused(id)),
            (_, None) => Err(SaleError::NoSuchItem(id)),
        }
    }

    /// Settles a banknote the acceptor did not credit: paid back (the operator found it in
    /// the kiosk) or dismissed (it was not there); it was never sold, so never re-sold.
    fn resolve_caught(
        &mut self,
        id: i64,
        fen: u64,
        resolution: Resolution,
        operator_note: &str,
    ) -> Result<String, SaleError> {
        let (kind, done) = match resolution {
            Resolution::Refund => ("refund-paid", "refunded"),
            Resolution::Dismiss => ("manual-dismissed", "dismissed"),
            Resolution::Resell => {
                return Err(SaleError::NotASale {
                    item: id,
                    what: "a banknote the acceptor did not credit".into(),
                });
            }
        };
        self.journal.commit(|b| {
            let audit = b.append(
                kind,
                &json!({"item": id, "caught_fen": fen, "note": operator_note}),
            )?;
            if resolution == Resolution::Refund {
                b.count("lifetime.caught_refunded_fen", fen as i64)?;
            }
            b.resolve_manual_item(id, &format!("{done}: {operator_note}"), audit)
        })?;
        Ok(match resolution {
            Resolution::Refund => format!(
                "item {id}: {} yuan refunded for a banknote the acceptor did not credit",
                yuan(Fen(fen))
            ),
            _ => format!("item {id}: closed, nothing paid back"),
        })
    }

    /// An operator raises an item about sale `serial` (a customer's complaint, say).
    pub fn raise_manual(&mut self, serial: u64, reason: &str) -> Result<i64, SaleError> {
        let card = self
            .journal
            .sales(SALE_STATES, None)?
            .into_iter()
            .find(|s| s.serial == serial)
            .map(|s| s.card_serial);
        Ok(self.journal.commit(|b| {
            let id = b.append(
                "manual-raised",
                &json!({"serial": serial, "reason": reason}),
            )?;
            b.open_manual_item(
                &NewItem {
                    serial: Some(serial),
                    payment: None,
                    caught_fen: None,
                    card_serial: card.as_deref(),
                    reason,
                },
                id,
            )
        })?)
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

    /// Writes a grant sold earlier but never written onto this card, before anything else.
    fn rewrite_outstanding(&mut self, s: &mut CashSession) -> Result<Option<u64>, SaleError> {
        let outstanding = self
            .journal
            .sales(&["granted"], Some(&s.data.card_serial))?;
        let Some(sale) = outstanding.into_iter().next() else {
            return Ok(None);
        };
        let Some(grant) = sale
            .grant_json
            .as_deref()
            .and_then(|g| serde_json::from_str::<BackendGrant>(g).ok())
        else {
            return Ok(None);
        };
        self.journal.append(
            "rewrite-started",
            json!({"serial": sale.serial, "card": s.data.card_serial}),
        )?;
        if self.write_card(s, sale.serial, &grant)? {
            s.data = self
                .wait(|| s.codec.read(&s.card))
                .map_err(|cause| SaleError::Card {
                    codec: s.codec_name.clone(),
                    cause,
                })?;
            return Ok(Some(sale.serial));
        }
        Ok(None)
    }

    /// Asks the backend what became of the sale under `serial`.
    fn ask_status(
        &mut self,
        s: &CashSession,
        serial: u64,
    ) -> Option<Result<BackendGrant, SaleOutcome>> {
        let mut b = self.backend_session(&s.backend, s.dialect).ok()?;
        match self
            .wait(|| b.sale_status(&self.terminal_id, serial))
            .ok()?
        {
            SaleStatus::Granted(g) => Some(Ok(g)),
            SaleStatus::Refused(r) => Some(Err(SaleOutcome::Refused(r))),
            // Never reached the backend: the same serial can be sold again, once.
            SaleStatus::NotFound => None,
        }
    }

    /// Writes the grant, reads it back and confirms it to the backend.
    fn write_card(
        &mut self,
        s: &mut CashSession,
        serial: u64,
        grant: &BackendGrant,
    ) -> Result<bool, SaleError> {
        let credit = CreditGrant {
            card_serial: s.data.card_serial.clone(),
            purchase_count: grant.purchase_count,
            amount: grant.amount,
            energy: grant.energy,
            token: grant.token.clone(),
        };
        self.journal
            .append("card-write-intent", json!({"serial": serial}))?;
        fail::fail_point!("sale.after-card-write-intent");
        let authority = Arc::new(Mutex::new(BackendAuthority::new(
            self.backend_session(&s.backend, s.dialect)?,
            card_ref(&s.data),
        )));
        let authority: crate::plugin::SharedAuthority = authority;
        let written = self.wait(|| {
            s.codec
                .write_credit(&s.card, &credit, &authority)
                .and_then(|()| s.codec.verify(&s.card, &credit))
        });
        fail::fail_point!("sale.after-card-written");
        let written = match written {
            Ok(VerifyOutcome::Written) => true,
            Ok(VerifyOutcome::NotWritten) => false,
            Err(e) => {
                self.journal.append(
                    "card-write-failed",
                    json!({"serial": serial, "codec": s.codec_name, "why": e.to_string()}),
                )?;
                false
            }
        };
        if written {
            self.journal.commit(|b| {
                let id = b.append("card-written", &json!({"serial": serial}))?;
                b.sale_state(serial, "written", None, id)?;
                b.count("lifetime.credited_fen", grant.amount.0 as i64)
            })?;
        }
        let confirmation = WriteConfirmation {
            terminal_id: self.terminal_id.clone(),
            kiosk_serial: serial,
            card_serial: s.data.card_serial.clone(),
            written,
            return_data: s.data.return_data.as_ref().map(|r| r.raw.clone()),
        };
        let (backend, dialect) = (s.backend.clone(), s.dialect);
        self.confirm(&backend, dialect, &confirmation)?;
        Ok(written)
    }

    /// Sends a write confirmation; one the backend did not acknowledge is sent again by
    /// [`SaleEngine::recover`]. The customer's credit does not depend on it.
    fn confirm(
        &mut self,
        backend: &BackendEntry,
        dialect: usize,
        confirmation: &WriteConfirmation,
    ) -> Result<(), SaleError> {
        let serial = confirmation.kiosk_serial;
        self.journal.append(
            "write-confirm-intent",
            json!({"serial": serial, "written": confirmation.written}),
        )?;
        fail::fail_point!("sale.after-confirm-intent");
        let sent = self
            .backend_session(backend, dialect)
            .map_err(|e| e.to_string())
            .and_then(|mut b| {
                self.wait(|| b.confirm_write(confirmation))
                    .map_err(|e| e.to_string())
            });
        match sent {
            Ok(()) => self.journal.commit(|b| {
                b.append("write-confirmed", &json!({"serial": serial}))?;
                b.sale_confirmed(serial)
            })?,
            Err(why) => self.journal.note(
                "write-confirm-failed",
                json!({"serial": serial, "why": why}),
            ),
        }
        Ok(())
    }

    /// Sends again every write confirmation the backend has not acknowledged; returns the
    /// serials now confirmed.
    pub fn retry_confirmations(&mut self) -> Result<Vec<u64>, SaleError> {
        let mut confirmed = Vec::new();
        for sale in self.journal.sales(&["granted", "written"], None)? {
            if sale.confirmed {
                continue;
            }
            let Some((backend, dialect)) = self.route(&sale.utility) else {
                continue;
            };
            let confirmation = WriteConfirmation {
                terminal_id: self.terminal_id.clone(),
                kiosk_serial: sale.serial,
                card_serial: sale.card_serial.clone(),
                written: sale.state == "written",
                return_data: None,
            };
            self.confirm(&backend, dialect, &confirmation)?;
            if self
                .journal
                .sales(&[sale.state.as_str()], Some(&sale.card_serial))?
                .iter()
                .any(|s| s.serial == sale.serial && s.confirmed)
            {
                confirmed.push(sale.serial);
            }
        }
        self.journal.flush()?;
        Ok(confirmed)
    }

    fn backend_session(
        &self,
        backend: &BackendEntry,
        dialect: usize,
    ) -> Result<BackendSession, SaleError> {
        Ok(self.dialects[dialect].backend_session(backend.endpoint.clone())?)
    }

    /// The receipt: what was bought and exactly what happens to the customer's money.
    fn receipt(&self, s: &CashSession, outcome: &Outcome) -> Receipt {
        let serial = match outcome {
            Outcome::Credited { serial, .. }
            | Outcome::GrantedNotWritten { serial, .. }
            | Outcome::Refused { serial, .. }
            | Outcome::Pending { serial, .. } => *serial,
        };
        let mut r = Receipt::new()
            .with(Line::new("自助售电凭证").bold().double().centred())
            .with(Line::new(format!("终端号：{}", self.terminal_id)))
            .with(Line::new(format!("流水号：{serial:08}")))
            .with(Line::new(format!("户名：{}", s.account.customer_name)))
            .with(Line::new(format!("户号：{}", s.account.customer_number)))
            .with(Line::new(format!("表号：{}", s.data.meter_number)))
            .with(Line::new(format!("卡号：{}", s.data.card_serial)))
            .with(Line::new(format!("实收金额：{}元", yuan(s.paid))));
        if let Some(bank) = &s.bank {
            r.push(Line::new(format!("银行卡支付：{}", bank.pan_masked)));
            r.push(Line::new(format!("参考号：{}", bank.rrn)));
        }
        match outcome {
            Outcome::Credited { grant, .. } => {
                r.push(Line::new(format!("购电电量：{}kWh", kwh(grant.energy))));
                r.push(Line::new(format!("购电次数：{}", grant.purchase_count)));
                r.push(Line::new(format!("交易编号：{}", grant.backend_sale_id)));
                r.push(Line::new("购电成功，请将电卡插入电表").bold());
            }
            Outcome::GrantedNotWritten { grant, .. } => {
                r.push(Line::new(format!("购电电量：{}kWh", kwh(grant.energy))));
                r.push(Line::new(format!("交易编号：{}", grant.backend_sale_id)));
                r.push(Line::new("已购电但未写入电卡：请再次插卡补写").bold());
                r.push(Line::new("请保留此凭条"));
            }
            Outcome::Refused { refusal, .. } => {
                r.push(Line::new(format!("售电失败：{}", refusal.message)).bold());
                r.push(Line::new("款项待退还，请保留此凭条联系营业厅"));
            }
            Outcome::Pending { .. } => {
                r.push(Line::new("交易待处理：结果确认后自动补售电").bold());
                r.push(Line::new("请保留此凭条"));
            }
        }
        caught_lines(&mut r, &s.caught);
        r
    }
}

enum SaleOutcome {
    Refused(Refusal),
    /// Nothing reached the backend: it cannot have sold.
    NeverReached(String),
    Unknown(String),
}

/// The engine's side of the cash acceptor for one session: a banknote is journaled at escrow
/// before it is stacked, and credited in the journal before the validator is acknowledged.
struct Cashier<'a> {
    journal: &'a mut Journal,
    payment: Option<i64>,
    card: &'a str,
    caught: &'a mut Vec<(i64, Fen)>,
    paid: &'a mut Fen,
    due: Fen,
    /// A banknote is between being drawn in and being credited or given back.
    in_flight: &'a mut bool,
    failed: Option<JournalError>,
}

impl CashHandler for Cashier<'_> {
    fn event(&mut self, event: &CashEvent) -> Result<(), NotRecorded> {
        *self.in_flight = match event {
            CashEvent::Accepting | CashEvent::Escrow(_) => true,
            CashEvent::Stacked(_) => *self.in_flight,
            _ => false,
        };
        let recorded = match event {
            CashEvent::Credited(note) => {
                let fen = note.value();
                let payment = self.payment;
                let r = self.journal.commit(|b| {
                    let id = b.append("banknote-credited", &json!({"fen": fen.0}))?;
                    b.record_banknote(fen.0, id)?;
                    if let Some(payment) = payment {
                        b.add_to_payment(payment, fen.0)?;
                    }
                    b.count("lifetime.cash_fen", fen.0 as i64)
                });
                if r.is_ok() {
                    *self.paid = Fen(self.paid.0 + fen.0);
                    fail::fail_point!("sale.after-banknote-credited");
                }
                r.map(|_| ())
            }
            CashEvent::Returned(note) => self
                .journal
                .append("banknote-returned", json!({"fen": note.value().0}))
                .map(|_| ()),
            // The customer's banknote may be in the kiosk without having been credited: an
            // operator checks the box and pays it back (the receipt says so).
            CashEvent::Fault {
                note: Some(note), ..
            }
            | CashEvent::PowerUpWithBillInStacker { note: Some(note) } => {
                let fen = note.value();
                let (payment, card) = (self.payment, self.card);
                let reason = format!(
                    "纸币器故障，{} 元纸币可能在机内且未入账（卡号 {card}）：请开箱核实后退还",
                    yuan(fen)
                );
                let r = self.journal.commit(|b| {
                    let audit = b.append(
                        "banknote-caught",
                        &json!({"fen": fen.0, "payment": payment, "event": event.to_string()}),
                    )?;
                    b.open_manual_item(
                        &NewItem {
                            serial: None,
                            payment,
                            caught_fen: Some(fen.0),
                            card_serial: Some(card),
                            reason: &reason,
                        },
                        audit,
                    )
                });
                r.map(|item| self.caught.push((item, fen)))
            }
            CashEvent::Accepting | CashEvent::Escrow(_) | CashEvent::Stacked(_) => Ok(()),
            other => self
                .journal
                .append("cash-acceptor", json!({"event": other.to_string()}))
                .map(|_| ()),
        };
        recorded.map_err(|e| {
            let why = e.to_string();
            self.failed = Some(e);
            NotRecorded(why)
        })
    }

    fn decide(&mut self, note: Denomination) -> EscrowDecision {
        if Fen(self.paid.0 + note.value().0) > self.due {
            return EscrowDecision::Return;
        }
        match self
            .journal
            .append("banknote-escrowed", json!({"fen": note.value().0}))
        {
            Ok(_) => EscrowDecision::Stack,
            Err(e) => {
                self.failed = Some(e);
                EscrowDecision::Return
            }
        }
    }
}

/// The receipt's lines for banknotes caught in the acceptor: each note and its work order.
fn caught_lines(r: &mut Receipt, caught: &[(i64, Fen)]) {
    for (item, fen) in caught {
        r.push(Line::new(format!("{}元纸币卡在机内未入账", yuan(*fen))).bold());
        r.push(Line::new(format!(
            "已登记待核实退还（工单{item}），请保留此凭条"
        )));
    }
}

/// Journals the intent of session `s`'s backend sale under a fresh serial, paid by `payment`;
/// returns the serial, the request as it will be sent (and re-sent), and the audit row.
fn sale_intent(
    b: &mut crate::journal::Batch<'_>,
    terminal_id: &str,
    s: &CashSession,
    payment: PaymentKind,
) -> rusqlite::Result<(u64, SaleRequest, i64)> {
    let purchase = match s.quote {
        Some(q) if q.amount == s.paid => q.purchase,
        _ => Purchase::Money(s.paid),
    };
    let card = card_ref(&s.data);
    let paid = s.paid;
    let id = b.append(
        "sale-intent",
        &json!({"card": card.card_serial, "paid_fen": paid.0, "purchase": purchase}),
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
            request_json: &serde_json::to_string(&request).unwrap_or_default(),
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
    }
}

fn yuan(f: Fen) -> String {
    format!("{}.{:02}", f.0 / 100, f.0 % 100)
}

fn kwh(w: Wh) -> String {
    format!("{}.{:03}", w.0 / 1000, w.0 % 1000)
}
