//! Why a step of a sale, a bill payment or an operator's action could not be taken. Every one
//! leaves the journal consistent.

use crate::backend::Refusal;
use crate::cash_acceptor::CashError;
use crate::codecs::IdentifyError;
use crate::journal::JournalError;
use crate::money::Fen;
use crate::plugin::{CodecError, DialectError, PluginError};

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
    /// Someone else (the kiosk's housekeeping, another operator) acted on the item first.
    #[error("item {item}: {what}; nothing was done")]
    Conflict { item: i64, what: String },
    #[error(
        "item {0} is a banknote of unknown value: count the cash box at clearing, then dismiss it \
         (a customer's note of known value is refunded through its own item)"
    )]
    UnknownNote(i64),
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
    /// An account number typed or read is not one: what is wrong with it.
    #[error("{0}")]
    Account(String),
    #[error("item {item} is about {what}, not a sale: it is refunded, never re-sold")]
    NotASale { item: i64, what: String },
    #[error(
        "item {0} is about a bank-card reversal: ask the acquirer, then dismiss it (no debit \
         stands) or refund it (the debit stands; the customer is paid back here)"
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
    /// A settlement of this batch is out, or was left unanswered by a stop.
    #[error(
        "the settlement of bank-card batch {0} has no answer yet; run `selfvend bank settle` to \
         send it again before signing on"
    )]
    Settling(u32),
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
