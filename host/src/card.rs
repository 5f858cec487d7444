//! Meter cards as the host sees them: the channel a codec talks through, the utility's
//! authority for a write, and what a codec reads and writes. Plugin bindings convert their
//! generated types into these; the rest of the host uses only these.

use crate::money::{Fen, Wh};

/// What kind of interface the reader offers to the card.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReaderKind {
    Contact,
    MemoryCard,
    Contactless,
}

/// Why an APDU could not be carried.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChannelError {
    #[error("card removed")]
    CardRemoved,
    #[error("reader fault: {0}")]
    ReaderFault(String),
    #[error("refused by the host: {0}")]
    Refused(String),
}

/// The card in a reader, as a codec may use it: ATR and APDUs, nothing else.
pub trait CardChannel: Send {
    fn atr(&self) -> Vec<u8>;
    fn reader_kind(&self) -> ReaderKind;
    /// Sends one command APDU; the response includes SW1 SW2.
    fn transmit(&mut self, command: &[u8]) -> Result<Vec<u8>, ChannelError>;
}

/// Why the authority for a card write could not help.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthorityError {
    #[error("refused: {0}")]
    Refused(String),
    #[error("unavailable: {0}")]
    Unavailable(String),
    #[error("not allowed: {0}")]
    NotAllowed(String),
}

/// Why a codec asks the encryption machine for a cryptogram.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum AuthPurpose {
    ExternalAuthenticate,
    CommandMac,
    VerifyCardMac,
}

/// One request to the utility's encryption machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthRequest {
    pub purpose: AuthPurpose,
    pub challenge: Vec<u8>,
    pub data: Vec<u8>,
}

/// The utility's secrets for the card being written (its backend, relayed by the host).
pub trait CardAuthority: Send {
    /// The card's PSC. The plugin runtime lets a session ask at most once.
    fn card_password(&mut self) -> Result<Vec<u8>, AuthorityError>;
    fn authenticate(&mut self, request: AuthRequest) -> Result<Vec<u8>, AuthorityError>;
}

/// What writing a credit onto a card needs from the utility.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum WriteAuth {
    None,
    Psc,
    EncryptionMachine,
}

/// A codec's claim on a card.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Identification {
    pub card_type: String,
    pub write_auth: WriteAuth,
}

/// A codec's description of itself.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CodecInfo {
    pub vendor: String,
    pub name: String,
    pub version: String,
}

/// Role of a card as the utility issued it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CardRole {
    User,
    OpenAccount,
    Replacement,
    Check,
    Tool,
}

/// A credit on the card that the meter has not taken yet. In JSON its fields are the WIT's
/// names (`amount-fen`, `energy-wh`), as in every card type here.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct PendingCredit {
    pub purchase_count: u32,
    #[serde(rename = "amount-fen")]
    pub amount: Fen,
    #[serde(rename = "energy-wh")]
    pub energy: Wh,
}

/// What the meter wrote back onto the card.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct ReturnData {
    pub meter_purchase_count: u32,
    #[serde(rename = "remaining-fen")]
    pub remaining: Option<Fen>,
    #[serde(rename = "remaining-wh")]
    pub remaining_energy: Option<Wh>,
    #[serde(rename = "total-energy-wh")]
    pub total_energy: Option<Wh>,
    pub status_flags: Vec<String>,
    #[serde(serialize_with = "as_hex")]
    pub raw: Vec<u8>,
}

/// Everything a codec reads off a card.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct CardData {
    pub card_serial: String,
    pub utility_code: String,
    pub customer_number: String,
    pub meter_number: String,
    pub role: CardRole,
    pub purchase_count: u32,
    pub pending: Option<PendingCredit>,
    pub return_data: Option<ReturnData>,
}

/// A credit the backend granted for one card.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CreditGrant {
    pub card_serial: String,
    pub purchase_count: u32,
    pub amount: Fen,
    pub energy: Wh,
    #[serde(serialize_with = "as_hex")]
    pub token: Vec<u8>,
}

/// What reading a card back after a write found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum VerifyOutcome {
    Written,
    NotWritten,
}

/// A command the card refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApduFailure {
    pub step: String,
    pub header: Vec<u8>,
    pub status: u16,
}

/// Why a codec call failed, as the codec reported it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CardError {
    #[error("card removed")]
    CardRemoved,
    #[error("reader fault: {0}")]
    ReaderFault(String),
    #[error("wrong card: {0}")]
    WrongCard(String),
    #[error("the card refused the PSC ({0} tries left)")]
    PscRefused(u8),
    #[error("the card is locked")]
    CardLocked,
    #[error("the utility's authority could not help: {0}")]
    AuthorityFailed(String),
    #[error("the card refused the write's authentication: {0}")]
    AuthRefused(String),
    #[error("{step}: APDU {header} answered {status:04X}", header = hex::encode_upper(&.0.header), step = .0.step, status = .0.status)]
    UnexpectedStatus(ApduFailure),
    #[error("card contents do not parse: {0}")]
    Malformed(String),
    #[error("grant rejected: {0}")]
    GrantRejected(String),
}

fn as_hex<S: serde::Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&hex::encode_upper(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn card_json_uses_the_wit_names() {
        let pending = PendingCredit {
            purchase_count: 2,
            amount: Fen(5000),
            energy: Wh(8928),
        };
        assert_eq!(
            serde_json::to_string(&pending).unwrap(),
            r#"{"purchase-count":2,"amount-fen":5000,"energy-wh":8928}"#
        );
        let back = ReturnData {
            meter_purchase_count: 1,
            remaining: Some(Fen(120)),
            remaining_energy: None,
            total_energy: Some(Wh(99)),
            status_flags: vec![],
            raw: vec![0xAB],
        };
        assert_eq!(
            serde_json::to_string(&back).unwrap(),
            r#"{"meter-purchase-count":1,"remaining-fen":120,"remaining-wh":null,"total-energy-wh":99,"status-flags":[],"raw":"AB"}"#
        );
    }
}
