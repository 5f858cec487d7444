//! What the kiosk's window shows, as plain data: the controller fills it in from the engine,
//! the window draws it and decides nothing.

pub use crate::backend::AccountStatus;
use crate::backend::TariffStep;
use crate::money::{Fen, Wh};
use crate::receipt_printer::PrinterStatus;
use crate::sale::{Resolution, Step};

/// The whole picture: a screen, and how long it waits for the customer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct View {
    pub screen: Screen,
    /// Seconds left before an idle screen moves on (never when money is in and unsold).
    pub countdown: Option<u64>,
    /// Counts every change, so a window repaints only when something changed.
    pub seq: u64,
}

/// One screen of the kiosk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Screen {
    /// Recovering what the journal shows unfinished, signing on: not yet taking cards.
    Starting,
    /// Waiting for a meter card.
    Attract,
    /// The kiosk cannot sell: a device or the journal failed. Why, for the operator.
    OutOfService {
        why: String,
    },
    /// A card went in and is being read.
    Reading,
    /// The account, and the amount to buy.
    Account(AccountView),
    /// The amount is chosen: how to pay it. `notice` says why a bank-card try ended.
    Method {
        due: Fen,
        price: PriceView,
        bank: bool,
        notice: Option<CardNotice>,
    },
    /// Banknotes going in.
    Paying {
        due: Fen,
        price: PriceView,
        paid: Fen,
    },
    /// Waiting for the bank card.
    BankCard {
        due: Fen,
    },
    /// The customer types the PIN on the pad; the host sees only how many digits.
    Pin {
        due: Fen,
        digits: u8,
    },
    /// The debit is with the bank.
    Debiting {
        due: Fen,
    },
    /// The bank card is still in its reader: take it.
    TakeBankCard,
    /// A meter card was in the reader when the kiosk started: take it out to begin.
    TakeCard,
    /// The sale under way: the step it is at.
    Processing(Step),
    /// 缴费 without a card: the account number (户号) is typed; `refusal` says why the last one
    /// was not taken.
    AccountEntry {
        refusal: Option<String>,
    },
    /// An account's open bills (缴费), and what paying them in banknotes or by bank card takes.
    Bills(BillsView),
    /// How a bill payment ended; the customer goes on to buy.
    BillResult(BillResultView),
    /// How it ended.
    Result(ResultView),
    /// The operator's PIN is asked for; `refused` says why the last one was not taken.
    OperatorPin {
        refused: Option<String>,
    },
    Operator(Box<OperatorView>),
}

/// What `due` buys, as it was quoted: "100.00 元 = 欠费 12.50 元 + 电费 87.50 元 → 156.25 kWh".
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PriceView {
    /// The part of the amount that settles arrears first.
    pub arrears: Fen,
    pub energy: Wh,
    /// A stepped tariff's steps, when the backend priced the energy at more than one.
    pub steps: Vec<TariffStep>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountView {
    pub customer_name: String,
    pub customer_number: String,
    pub meter_number: String,
    pub address: String,
    /// Only an active account can buy; the others are shown with why.
    pub status: AccountStatus,
    /// As the backend recorded it (amount, energy, date).
    pub last_purchase: Option<String>,
    pub arrears: Fen,
    pub price_fen_per_kwh: u32,
    pub min: Fen,
    pub max: Fen,
    /// Why this account cannot buy now, in the backend's words.
    pub refusal: Option<String>,
    /// An earlier purchase was written onto the card as it came in (its serial).
    pub rewritten: Option<u64>,
}

/// An account's open bills, as the backend listed them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BillsView {
    pub customer_name: String,
    pub customer_number: String,
    /// Each bill: its period, amount and late fee.
    pub bills: Vec<(String, Fen, Fen)>,
    /// Everything owed.
    pub total: Fen,
    /// Whether a bank card is taken (it pays exactly what is owed).
    pub bank: bool,
    /// Why the last bank-card payment took nothing.
    pub notice: Option<CardNotice>,
}

/// Why a bank-card try took nothing (or why what it took is being given back), for the window
/// to word in the customer's language.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CardNotice {
    /// Bank cards are not taken now.
    NotTaken,
    /// The customer went back before inserting a card.
    Cancelled,
    /// No bank card went in before the wait ran out.
    NoCard,
    PinCancelled,
    PinTimedOut,
    /// The meter card left before the debit: nothing was debited.
    MeterCardOut,
    /// The bank declined, in its own words.
    Declined(String),
    /// The utility's backend will not sell or book it, in its own words.
    Refused(String),
    /// The bank did not confirm the debit of this much: it is being reversed, nothing is taken.
    Reversed(Fen),
    /// The card could not be read or the payment could not be made; the detail is logged.
    Failed(String),
}

/// How a bill payment ended, and what happens to the money.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BillResultView {
    /// Booked by the backend; `remaining` is still owed.
    Paid { paid: Fen, remaining: Fen },
    /// Not known yet, or not delivered yet: finished automatically.
    Pending { paid: Fen },
    /// Refused: the money is refunded by an operator.
    RefundOwed { paid: Fen, reason: String },
    /// Nothing could be paid: why.
    NotPaid { reason: String },
}

/// How a customer's session ended, and what happens to the money.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResultView {
    Credited {
        paid: Fen,
        energy_wh: u64,
    },
    /// Sold, but not on the card: written when the card comes back.
    NotWritten {
        paid: Fen,
        energy_wh: u64,
    },
    /// Paid, and the sale's outcome is not known yet: finished automatically.
    Pending {
        paid: Fen,
    },
    /// Paid, and the backend refused: the money is refunded by an operator.
    RefundOwed {
        paid: Fen,
        reason: String,
    },
    /// Nothing paid, nothing sold: why.
    Refused {
        reason: String,
    },
    /// The customer left before paying. `caught` banknotes are on a receipt with a work order.
    Cancelled {
        caught: Fen,
    },
    /// Paid, and the kiosk failed to finish: the payment is in its journal for an operator,
    /// found by the card's serial.
    Fault {
        paid: Fen,
        card: String,
    },
}

/// The operator's screens: the kiosk's devices, clearing, what needs a hand, the journal.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OperatorView {
    pub devices: Vec<DeviceLine>,
    pub plugins: Vec<PluginLine>,
    pub period: i64,
    /// `open` or `clearing`.
    pub period_state: String,
    /// The period's report so far, as printed.
    pub report: Vec<String>,
    pub items: Vec<ItemLine>,
    /// The newest journal rows, newest first.
    pub journal: Vec<String>,
    /// What the last command did, or why it could not.
    pub message: Option<OperatorMessage>,
    /// Who took the kiosk out of service from the fleet, while it is: the operator can put it
    /// back here (with no fleet to ask, say).
    pub taken_out: Option<String>,
}

/// A device on the operator's screen; the window names it in the chosen language.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Device {
    CardReader,
    BankCardReader,
    BanknoteValidator,
    ReceiptPrinter,
    PinPad,
    /// The acquirer, by its configured name.
    Acquirer(String),
    /// A utility's backend, by its configured name.
    Backend(String),
}

/// How a device answers now, for the window to say in the chosen language. `Failed` carries
/// the failure's own words (a device's, the OS's or a library's), shown as they are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceState {
    /// A reader pcscd lists, by its name.
    Present(String),
    /// A reader pcscd does not list.
    Missing(String),
    /// The validator answers and is inhibited between customers.
    Inhibited,
    /// The validator answers; its last failure was this.
    LastFailure(String),
    Printer(PrinterStatus),
    /// The PIN pad answers; whether its working keys are loaded.
    Keys {
        pin: bool,
        mac: bool,
    },
    SignedOn(u32),
    NotSignedOn,
    Answers,
    Failed(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceLine {
    pub device: Device,
    pub ok: bool,
    pub state: DeviceState,
}

/// What an operator's command did, for the window to say in the chosen language; `Failed`
/// carries why it could not, in the engine's words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OperatorMessage {
    ClearingStarted(i64),
    CashBoxRemoved,
    CashBoxReplaced,
    Counted {
        counted: Fen,
        expected: Fen,
    },
    PeriodClosed {
        closed: i64,
        next: i64,
        printed: bool,
        backends: Vec<(String, Reconciled)>,
    },
    Resolved(i64, Resolution),
    Reprinted,
    ReprintCutShort,
    NothingToReprint,
    SignedOn(u32),
    Settled {
        balanced: bool,
        count: u32,
        amount: Fen,
    },
    BackInService,
    Failed(String),
}

/// A backend's answer to a closed period's report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reconciled {
    Matched,
    /// The backend's differences, in its words.
    Differs(Vec<String>),
    /// Not answered (sent again later), and why.
    NotYet(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginLine {
    pub name: String,
    pub kind: String,
    pub version: String,
    pub signer: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemLine {
    pub id: i64,
    pub serial: Option<u64>,
    pub reason: String,
    /// A caught banknote (settled by refund or dismissal) rather than a sale.
    pub caught: Option<Fen>,
    /// What the engine accepts for this item.
    pub resolutions: Vec<Resolution>,
}
