//! Bank-card payment as the kiosk sees it: what it asks an acquirer (sign-on, purchase,
//! reversal, settlement), what the acquirer answers, and the [`Security`] that holds the keys
//! the kiosk itself never sees (the PIN pad). An acquirer dialect plugin speaks the wire.

use crate::bank_card::BankCard;
use crate::money::Fen;

pub use selfvend_config::Terminal;

/// Working keys from a sign-on, each encrypted under the PIN pad's master key with its check
/// value; only the PIN pad can load them.
#[derive(Clone, PartialEq, Eq)]
pub struct WorkingKeys {
    pub pin_key: [u8; 16],
    pub pin_key_check: [u8; 4],
    pub mac_key: [u8; 16],
    pub mac_key_check: [u8; 4],
}

impl std::fmt::Debug for WorkingKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WorkingKeys(..)")
    }
}

#[derive(Clone, PartialEq, Eq)]
pub struct PurchaseRequest {
    pub terminal: Terminal,
    pub stan: u32,
    pub batch: u32,
    pub amount: Fen,
    pub card: BankCard,
    /// Encrypted by the PIN pad.
    pub pin_block: Option<[u8; 8]>,
}

impl std::fmt::Debug for PurchaseRequest {
    /// The card as `BankCard` shows it (masked), and never the PIN block.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PurchaseRequest")
            .field("terminal", &self.terminal)
            .field("stan", &self.stan)
            .field("batch", &self.batch)
            .field("amount", &self.amount)
            .field("card", &self.card)
            .field("pin_block", &self.pin_block.map(|_| ".."))
            .finish()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Approval {
    pub rrn: String,
    pub auth_code: String,
    pub amount: Fen,
    /// `MMDDhhmmss`, the acquirer's clock.
    pub acquirer_time: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DeclineCode {
    InsufficientFunds,
    WrongPin,
    PinTriesExceeded,
    CardBlocked,
    InvalidCard,
    ExpiredCard,
    Other,
}

/// The acquirer refused to debit; nothing was debited.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decline {
    pub code: DeclineCode,
    pub response_code: String,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PurchaseOutcome {
    Approved(Approval),
    Declined(Decline),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReversalReason {
    NoAnswer,
    Cancelled,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReversalRequest {
    pub terminal: Terminal,
    pub stan: u32,
    pub batch: u32,
    pub amount: Fen,
    pub card: BankCard,
    pub reason: ReversalReason,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettlementRequest {
    pub terminal: Terminal,
    pub stan: u32,
    pub batch: u32,
    pub count: u32,
    pub amount: Fen,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settlement {
    pub balanced: bool,
    pub acquirer_count: u32,
    pub acquirer_amount: Fen,
}

/// Why an acquirer call failed, in terms the sale engine acts on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AcquirerError {
    /// The acquirer answered and did nothing.
    #[error("the acquirer refused: {0}")]
    Refused(String),
    /// Sent, and no complete verified answer: the acquirer may have acted (a purchase in this
    /// state is reversed).
    #[error("outcome unknown: {0}")]
    OutcomeUnknown(String),
    #[error("the acquirer was not reached or did nothing: {0}")]
    Unreachable(String),
    #[error("the acquirer's answer is malformed: {0}")]
    MalformedReply(String),
    /// The PIN pad could not MAC the request; nothing was sent.
    #[error("the PIN pad could not secure the request: {0}")]
    Security(String),
}

/// What computes MACs under keys the host never holds: the PIN pad.
pub trait Security: Send {
    fn mac(&mut self, data: &[u8]) -> Result<[u8; 8], String>;
}

impl Security for crate::pin_pad::PinPad {
    fn mac(&mut self, data: &[u8]) -> Result<[u8; 8], String> {
        crate::pin_pad::PinPad::mac(self, data).map_err(|e| e.to_string())
    }
}
