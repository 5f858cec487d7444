//! The three files of application `1001`: parameter (SFI 1), wallet (SFI 2) and return (SFI 3).
//! Numbers are big-endian; BCD packs two decimal digits per byte, high nibble first.

use crate::exports::selfvend::card::codec::{CardError, CreditGrant};
use crate::selfvend::card::types::{CardRole, PendingCredit, ReturnData};

/// The parameter file: who the card belongs to. Read free.
pub const PARAMETER_SFI: u8 = 1;
pub const PARAMETER_LEN: u8 = 35;
/// The wallet file: the last credit written. Read free, written only under secure messaging.
pub const WALLET_SFI: u8 = 2;
pub const WALLET_LEN: u8 = 18;
/// The return file: what the meter wrote back. Read free, written by the meter.
pub const RETURN_SFI: u8 = 3;
pub const RETURN_LEN: u8 = 12;

/// The length of the backend's credit token: version byte and 4-byte MAC.
const TOKEN_LEN: usize = 5;
/// The first byte of a return file the meter has written: `R`.
const RETURN_TAG: u8 = b'R';

/// SFI 1: the card's identity and the account it is bound to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParameterFile {
    pub card_serial: String,
    pub utility_code: String,
    pub role: CardRole,
    pub customer_number: String,
    pub meter_number: String,
}

impl ParameterFile {
    pub fn decode(bytes: &[u8]) -> Result<Self, CardError> {
        let mut f = Fields::new("parameter file", bytes, PARAMETER_LEN)?;
        let card_serial = bcd("card serial", &f.take::<8>()?)?;
        let utility_code = bcd("utility code", &f.take::<2>()?)?;
        let [role] = f.take::<1>()?;
        let role = match role {
            0x01 => CardRole::User,
            0x02 => CardRole::OpenAccount,
            0x03 => CardRole::Replacement,
            0x04 => CardRole::Check,
            0x05 => CardRole::Tool,
            other => {
                return Err(CardError::Malformed(format!(
                    "parameter file: card role {other:02X} is not one of 01-05"
                )));
            }
        };
        let customer_number = padded_ascii("customer number", &f.take::<12>()?)?;
        let meter_number = padded_ascii("meter number", &f.take::<12>()?)?;
        Ok(Self {
            card_serial,
            utility_code,
            role,
            customer_number,
            meter_number,
        })
    }
}

/// Whether the meter has taken the wallet's last credit (offset 12).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CreditStatus {
    /// `00`: written, not yet taken by the meter.
    Pending,
    /// `01`: taken by the meter.
    Taken,
}

/// SFI 2: the purchase count and the last credit written onto the card.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wallet {
    pub purchase_count: u32,
    pub amount_fen: u32,
    pub energy_wh: u32,
    pub status: CreditStatus,
    pub token: [u8; TOKEN_LEN],
}

impl Wallet {
    pub fn decode(bytes: &[u8]) -> Result<Self, CardError> {
        let mut f = Fields::new("wallet file", bytes, WALLET_LEN)?;
        let purchase_count = u32::from_be_bytes(f.take()?);
        let amount_fen = u32::from_be_bytes(f.take()?);
        let energy_wh = u32::from_be_bytes(f.take()?);
        let status = match f.take::<1>()? {
            [0x00] => CreditStatus::Pending,
            [0x01] => CreditStatus::Taken,
            [other] => {
                return Err(CardError::Malformed(format!(
                    "wallet file: credit status {other:02X} is neither 00 (pending) nor 01 (taken)"
                )));
            }
        };
        let token = f.take()?;
        Ok(Self {
            purchase_count,
            amount_fen,
            energy_wh,
            status,
            token,
        })
    }

    pub fn encode(&self) -> Vec<u8> {
        let status = match self.status {
            CreditStatus::Pending => 0x00,
            CreditStatus::Taken => 0x01,
        };
        let mut bytes = Vec::with_capacity(WALLET_LEN.into());
        bytes.extend_from_slice(&self.purchase_count.to_be_bytes());
        bytes.extend_from_slice(&self.amount_fen.to_be_bytes());
        bytes.extend_from_slice(&self.energy_wh.to_be_bytes());
        bytes.push(status);
        bytes.extend_from_slice(&self.token);
        bytes
    }

    /// The wallet a grant writes: its credit, pending for the meter.
    pub fn from_grant(grant: &CreditGrant) -> Result<Self, CardError> {
        let amount_fen = u32::try_from(grant.amount_fen).map_err(|_| {
            CardError::GrantRejected(format!(
                "grant amount {} fen is beyond the wallet's limit of {} fen",
                grant.amount_fen,
                u32::MAX
            ))
        })?;
        let energy_wh = u32::try_from(grant.energy_wh).map_err(|_| {
            CardError::GrantRejected(format!(
                "grant energy {} Wh is beyond the wallet's limit of {} Wh",
                grant.energy_wh,
                u32::MAX
            ))
        })?;
        let token = <[u8; TOKEN_LEN]>::try_from(grant.token.as_slice()).map_err(|_| {
            CardError::GrantRejected(format!(
                "grant token is {} bytes; this card takes exactly {TOKEN_LEN}",
                grant.token.len()
            ))
        })?;
        Ok(Self {
            purchase_count: grant.purchase_count,
            amount_fen,
            energy_wh,
            status: CreditStatus::Pending,
            token,
        })
    }

    /// Whether the wallet carries exactly this grant, taken by the meter or not. A wallet at
    /// count 0 carries no credit at all.
    pub fn holds(&self, grant: &CreditGrant) -> bool {
        self.purchase_count != 0
            && self.purchase_count == grant.purchase_count
            && u64::from(self.amount_fen) == grant.amount_fen
            && u64::from(self.energy_wh) == grant.energy_wh
            && self.token[..] == grant.token[..]
    }

    /// The credit the meter has not taken yet; a new card (count 0) has none.
    pub fn pending(&self) -> Option<PendingCredit> {
        (self.status == CreditStatus::Pending && self.purchase_count > 0).then(|| PendingCredit {
            purchase_count: self.purchase_count,
            amount_fen: self.amount_fen.into(),
            energy_wh: self.energy_wh.into(),
        })
    }
}

/// SFI 3 as found on the card.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReturnFile {
    /// All zero: the card has never been in the meter.
    Blank,
    /// Not all zero, yet not tagged `R`: not a return write this codec knows.
    Unknown { tag: u8 },
    /// The meter's return write.
    Written(MeterReturn),
}

/// The meter's return write: `R`, count taken (u16), remaining Wh, lifetime Wh, status bits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeterReturn {
    pub meter_purchase_count: u16,
    pub remaining_wh: u32,
    pub total_energy_wh: u32,
    pub status: u8,
    pub raw: [u8; RETURN_LEN as usize],
}

/// The meter's status bits and the names the backend knows them by.
const STATUS_FLAGS: [(u8, &str); 3] = [
    (0b001, "relay-open"),
    (0b010, "cover-opened"),
    (0b100, "battery-low"),
];

impl ReturnFile {
    pub fn decode(bytes: &[u8]) -> Result<Self, CardError> {
        let raw =
            Fields::new("return file", bytes, RETURN_LEN)?.take::<{ RETURN_LEN as usize }>()?;
        if raw.iter().all(|&b| b == 0) {
            return Ok(Self::Blank);
        }
        let mut f = Fields::new("return file", &raw, RETURN_LEN)?;
        let [tag] = f.take::<1>()?;
        if tag != RETURN_TAG {
            return Ok(Self::Unknown { tag });
        }
        let meter_purchase_count = u16::from_be_bytes(f.take()?);
        let remaining_wh = u32::from_be_bytes(f.take()?);
        let total_energy_wh = u32::from_be_bytes(f.take()?);
        let [status] = f.take::<1>()?;
        Ok(Self::Written(MeterReturn {
            meter_purchase_count,
            remaining_wh,
            total_energy_wh,
            status,
            raw,
        }))
    }
}

impl MeterReturn {
    /// The return data as the kiosk reports it; this meter counts energy, not money.
    pub fn to_return_data(&self) -> ReturnData {
        ReturnData {
            meter_purchase_count: self.meter_purchase_count.into(),
            remaining_fen: None,
            remaining_wh: Some(self.remaining_wh.into()),
            total_energy_wh: Some(self.total_energy_wh.into()),
            status_flags: STATUS_FLAGS
                .iter()
                .filter(|(bit, _)| self.status & bit != 0)
                .map(|(_, name)| (*name).to_owned())
                .collect(),
            raw: self.raw.to_vec(),
        }
    }
}

/// A file's bytes taken field by field, in layout order.
struct Fields<'a> {
    file: &'static str,
    rest: &'a [u8],
}

impl<'a> Fields<'a> {
    /// Starts on a file, which must be exactly `len` bytes long.
    fn new(file: &'static str, bytes: &'a [u8], len: u8) -> Result<Self, CardError> {
        if bytes.len() != usize::from(len) {
            return Err(CardError::Malformed(format!(
                "{file} is {} bytes; the layout has {len}",
                bytes.len()
            )));
        }
        Ok(Self { file, rest: bytes })
    }

    /// The next `N` bytes.
    fn take<const N: usize>(&mut self) -> Result<[u8; N], CardError> {
        let Some((field, rest)) = self.rest.split_first_chunk::<N>() else {
            return Err(CardError::Malformed(format!(
                "{} ends before its layout does",
                self.file
            )));
        };
        self.rest = rest;
        Ok(*field)
    }
}

/// Decimal digits packed two to a byte, high nibble first.
fn bcd(field: &str, bytes: &[u8]) -> Result<String, CardError> {
    bytes
        .iter()
        .flat_map(|b| [b >> 4, b & 0x0F])
        .map(|nibble| {
            char::from_digit(nibble.into(), 10).ok_or_else(|| {
                CardError::Malformed(format!(
                    "{field} is not BCD: it holds the nibble {nibble:X}"
                ))
            })
        })
        .collect()
}

/// Printable ASCII right-padded with spaces; the padding is dropped.
fn padded_ascii(field: &str, bytes: &[u8]) -> Result<String, CardError> {
    if let Some(bad) = bytes.iter().find(|b| !(0x20..=0x7E).contains(*b)) {
        return Err(CardError::Malformed(format!(
            "{field} holds byte {bad:02X}, which is not printable ASCII"
        )));
    }
    let text: String = bytes.iter().copied().map(char::from).collect();
    Ok(text.trim_end_matches(' ').to_owned())
}
