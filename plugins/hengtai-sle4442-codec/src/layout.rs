//! The HT01 memory map: the card's identity fields, the two credit slots and which of them is
//! current, and the meter's return record.

use crate::crc::crc16;
use crate::exports::selfvend::card::codec::{CardData, CardError, CreditGrant};
use crate::selfvend::card::log::{Level, log};
use crate::selfvend::card::types::{CardRole, PendingCredit, ReturnData};

/// `N` bytes of card memory at a fixed address, named for error messages.
#[derive(Clone, Copy)]
pub struct Field<const N: usize> {
    pub addr: u8,
    name: &'static str,
}

impl<const N: usize> Field<N> {
    const fn at(addr: u8, name: &'static str) -> Self {
        Field { addr, name }
    }

    /// The field's length as a read command's Le.
    pub const fn size(self) -> u8 {
        const { assert!(N <= 255) };
        N as u8
    }

    /// The field's bytes in `image`, which was read from address 00.
    fn of(self, image: &[u8]) -> Result<&[u8; N], CardError> {
        image
            .get(usize::from(self.addr)..)
            .and_then(<[u8]>::first_chunk)
            .ok_or_else(|| {
                CardError::Malformed(format!(
                    "the card image of {} bytes does not reach the {} at {:02X}",
                    image.len(),
                    self.name,
                    self.addr
                ))
            })
    }
}

/// 00–8F: everything the codec needs, read in one command.
pub const IMAGE: Field<0x90> = Field::at(0x00, "card image");
/// 04–07: the layout tag.
pub const LAYOUT_TAG: Field<4> = Field::at(0x04, "layout tag");
/// 08–0F: 16 BCD digits.
const SERIAL: Field<8> = Field::at(0x08, "card serial");
/// 10–11: 4 BCD digits.
const UTILITY_CODE: Field<2> = Field::at(0x10, "utility code");
/// 12: the card's role.
const ROLE: Field<1> = Field::at(0x12, "card role");
/// 20–2B: ASCII, right-padded with spaces.
const CUSTOMER_NUMBER: Field<12> = Field::at(0x20, "customer number");
/// 2C–37: ASCII, right-padded with spaces.
const METER_NUMBER: Field<12> = Field::at(0x2C, "meter number");
/// 40–5F: credit slot A.
const SLOT_A: Field<SLOT_LEN> = Field::at(0x40, "credit slot A");
/// 60–7F: credit slot B.
const SLOT_B: Field<SLOT_LEN> = Field::at(0x60, "credit slot B");
/// 80–8D: written by the meter each time the card is in it.
const RETURN_RECORD: Field<RETURN_LEN> = Field::at(0x80, "return record");

/// The layout tag of this codec's cards.
pub const HT01: [u8; 4] = *b"HT01";

pub const SLOT_LEN: usize = 32;
/// Slot bytes 0–29, which the CRC at 30–31 covers.
pub const SLOT_BODY_LEN: usize = SLOT_CRC_OFFSET as usize;
/// The CRC's offset in a slot, for the write that seals it.
const SLOT_CRC_OFFSET: u8 = 30;
/// Slot status byte: the meter has not taken the credit yet.
const PENDING: u8 = 0x00;
/// Slot status byte: the meter has taken the credit.
const TAKEN: u8 = 0x01;

const RETURN_LEN: usize = 14;
/// Return record bytes 0–11: what its CRC covers and what the kiosk forwards as `raw`.
const RETURN_BODY_LEN: usize = 12;
/// Return record byte 0.
const RETURN_TAG: u8 = b'R';
/// Return record status bits, low bit first, with the names the kiosk shows.
const STATUS_FLAGS: [&str; 3] = ["relay-open", "cover-opened", "battery-low"];

/// Which credit slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlotId {
    A,
    B,
}

impl SlotId {
    pub fn addr(self) -> u8 {
        self.field().addr
    }

    /// Where the slot's CRC (bytes 30–31) is.
    pub fn crc_addr(self) -> u8 {
        self.addr() + SLOT_CRC_OFFSET
    }

    fn field(self) -> Field<SLOT_LEN> {
        match self {
            SlotId::A => SLOT_A,
            SlotId::B => SLOT_B,
        }
    }

    fn other(self) -> SlotId {
        match self {
            SlotId::A => SlotId::B,
            SlotId::B => SlotId::A,
        }
    }
}

/// One 32-byte credit slot, as read or as about to be written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Slot {
    pub sequence: u8,
    pub purchase_count: u16,
    pub amount_fen: u32,
    pub energy_wh: u32,
    /// `PENDING` or `TAKEN`; anything else only on a card this codec does not understand.
    pub status: u8,
    pub token: [u8; 5],
    /// Bytes 17–29, zero in a slot this codec writes; kept as read so the CRC can be checked.
    reserved: [u8; 13],
    pub crc: u16,
}

impl Slot {
    /// Any 32 bytes decode; `is_empty` and `crc_ok` say what they are.
    pub fn decode(raw: &[u8; SLOT_LEN]) -> Slot {
        let [
            sequence,
            c0,
            c1,
            a0,
            a1,
            a2,
            a3,
            e0,
            e1,
            e2,
            e3,
            status,
            t0,
            t1,
            t2,
            t3,
            t4,
            reserved @ ..,
            k0,
            k1,
        ] = *raw;
        Slot {
            sequence,
            purchase_count: u16::from_be_bytes([c0, c1]),
            amount_fen: u32::from_be_bytes([a0, a1, a2, a3]),
            energy_wh: u32::from_be_bytes([e0, e1, e2, e3]),
            status,
            token: [t0, t1, t2, t3, t4],
            reserved,
            crc: u16::from_be_bytes([k0, k1]),
        }
    }

    pub fn encode(&self) -> [u8; SLOT_LEN] {
        let mut raw = [0; SLOT_LEN];
        let (body, crc) = raw.split_at_mut(SLOT_BODY_LEN);
        body.copy_from_slice(&self.body());
        crc.copy_from_slice(&self.crc.to_be_bytes());
        raw
    }

    /// A new card's slot: 32 zero bytes.
    pub fn is_empty(&self) -> bool {
        self.encode() == [0; SLOT_LEN]
    }

    pub fn crc_ok(&self) -> bool {
        crc16(&self.body()) == self.crc
    }

    /// A slot the current one can be chosen from.
    fn is_valid(&self) -> bool {
        !self.is_empty() && self.crc_ok()
    }

    /// Bytes 0–29: everything but the CRC.
    fn body(&self) -> [u8; SLOT_BODY_LEN] {
        let mut body = [0; SLOT_BODY_LEN];
        body[0] = self.sequence;
        body[1..3].copy_from_slice(&self.purchase_count.to_be_bytes());
        body[3..7].copy_from_slice(&self.amount_fen.to_be_bytes());
        body[7..11].copy_from_slice(&self.energy_wh.to_be_bytes());
        body[11] = self.status;
        body[12..17].copy_from_slice(&self.token);
        body[17..].copy_from_slice(&self.reserved);
        body
    }

    /// The pending slot that carries `grant`, or why the layout cannot hold it.
    pub fn for_grant(sequence: u8, grant: &CreditGrant) -> Result<Slot, CardError> {
        let purchase_count = u16::try_from(grant.purchase_count).map_err(|_| {
            CardError::GrantRejected(format!(
                "grant carries purchase count {}; the card's counter stops at {}",
                grant.purchase_count,
                u16::MAX
            ))
        })?;
        let amount_fen = u32::try_from(grant.amount_fen).map_err(|_| {
            CardError::GrantRejected(format!(
                "grant amount {} fen is over the card's limit of {} fen",
                grant.amount_fen,
                u32::MAX
            ))
        })?;
        let energy_wh = u32::try_from(grant.energy_wh).map_err(|_| {
            CardError::GrantRejected(format!(
                "grant energy {} Wh is over the card's limit of {} Wh",
                grant.energy_wh,
                u32::MAX
            ))
        })?;
        let token = <[u8; 5]>::try_from(grant.token.as_slice()).map_err(|_| {
            CardError::GrantRejected(format!(
                "grant token is {} bytes; an HT01 token is 5",
                grant.token.len()
            ))
        })?;
        let mut slot = Slot {
            sequence,
            purchase_count,
            amount_fen,
            energy_wh,
            status: PENDING,
            token,
            reserved: [0; 13],
            crc: 0,
        };
        slot.crc = crc16(&slot.body());
        Ok(slot)
    }

    /// Whether this slot holds exactly `grant`'s credit, whether or not the meter took it.
    pub fn carries(&self, grant: &CreditGrant) -> bool {
        u32::from(self.purchase_count) == grant.purchase_count
            && u64::from(self.amount_fen) == grant.amount_fen
            && u64::from(self.energy_wh) == grant.energy_wh
            && self.token[..] == grant.token[..]
    }
}

/// Bytes 00–8F of an HT01 card, decoded.
pub struct CardImage {
    pub serial: String,
    utility_code: String,
    customer_number: String,
    meter_number: String,
    role: CardRole,
    slot_a: Slot,
    slot_b: Slot,
    current: Option<SlotId>,
    return_data: Option<ReturnData>,
}

impl CardImage {
    /// Decodes bytes 00–8F; fails on another layout, a bad identity field or no usable slot.
    pub fn decode(image: &[u8]) -> Result<CardImage, CardError> {
        let tag = LAYOUT_TAG.of(image)?;
        if *tag != HT01 {
            return Err(CardError::Malformed(format!(
                "layout tag at 04–07 is {}, not \"HT01\" (48 54 30 31)",
                hex(tag)
            )));
        }
        let slot_a = Slot::decode(SLOT_A.of(image)?);
        let slot_b = Slot::decode(SLOT_B.of(image)?);
        let current = current_slot(&slot_a, &slot_b)?;
        let decoded = CardImage {
            serial: bcd(SERIAL, image)?,
            utility_code: bcd(UTILITY_CODE, image)?,
            customer_number: ascii(CUSTOMER_NUMBER, image)?,
            meter_number: ascii(METER_NUMBER, image)?,
            role: role(image)?,
            slot_a,
            slot_b,
            current,
            return_data: return_data(RETURN_RECORD.of(image)?),
        };
        if let Some(slot) = decoded.current()
            && slot.status != PENDING
            && slot.status != TAKEN
        {
            return Err(CardError::Malformed(format!(
                "the current credit slot has status byte {:02X}; 00 is pending, 01 taken",
                slot.status
            )));
        }
        Ok(decoded)
    }

    /// The slot with the card's latest credit; none on a card never written.
    pub fn current(&self) -> Option<&Slot> {
        self.current.map(|id| self.slot(id))
    }

    /// Purchases written onto the card so far.
    pub fn purchase_count(&self) -> u16 {
        self.current().map_or(0, |slot| slot.purchase_count)
    }

    /// The current slot, when it holds a credit the meter has not taken yet.
    pub fn pending(&self) -> Option<&Slot> {
        self.current()
            .filter(|slot| slot.status == PENDING && slot.purchase_count > 0)
    }

    /// Where the next credit goes, and its sequence number: never over the current slot.
    pub fn next_slot(&self) -> (SlotId, u8) {
        match self.current {
            Some(id) => (id.other(), self.slot(id).sequence.wrapping_add(1)),
            // No valid slot: rewrite a torn slot rather than the empty one, so that a second
            // tear cannot leave two bad slots and a malformed card.
            None if self.slot_a.is_empty() && !self.slot_b.is_empty() => (SlotId::B, 1),
            None => (SlotId::A, 1),
        }
    }

    /// What `read` reports.
    pub fn card_data(self) -> CardData {
        let pending = self.pending().map(|slot| PendingCredit {
            purchase_count: u32::from(slot.purchase_count),
            amount_fen: u64::from(slot.amount_fen),
            energy_wh: u64::from(slot.energy_wh),
        });
        CardData {
            purchase_count: u32::from(self.purchase_count()),
            pending,
            card_serial: self.serial,
            utility_code: self.utility_code,
            customer_number: self.customer_number,
            meter_number: self.meter_number,
            role: self.role,
            return_data: self.return_data,
        }
    }

    fn slot(&self, id: SlotId) -> &Slot {
        match id {
            SlotId::A => &self.slot_a,
            SlotId::B => &self.slot_b,
        }
    }
}

/// The valid slot with the newer sequence number; none when both are empty or one is torn
/// and the other empty.
fn current_slot(a: &Slot, b: &Slot) -> Result<Option<SlotId>, CardError> {
    for (id, slot) in [(SlotId::A, a), (SlotId::B, b)] {
        if !slot.is_empty() && !slot.crc_ok() {
            log(
                Level::Warn,
                &format!(
                    "{} fails its CRC (a torn write?); ignoring it",
                    id.field().name
                ),
            );
        }
    }
    match (a.is_valid(), b.is_valid()) {
        (true, true) if newer(b.sequence, a.sequence) => Ok(Some(SlotId::B)),
        (true, true) if newer(a.sequence, b.sequence) => Ok(Some(SlotId::A)),
        (true, true) => Err(CardError::Malformed(format!(
            "both credit slots are valid, with sequence numbers {} and {}; neither is newer",
            a.sequence, b.sequence
        ))),
        (true, false) => Ok(Some(SlotId::A)),
        (false, true) => Ok(Some(SlotId::B)),
        (false, false) if !a.is_empty() && !b.is_empty() => Err(CardError::Malformed(
            "both credit slots fail their CRC".into(),
        )),
        (false, false) => Ok(None),
    }
}

/// Bytes as spaced hex, as the spec writes them.
fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|byte| format!("{byte:02X}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Sequence number `b` is newer than `a` when it is 1–127 ahead, counting mod 256.
fn newer(b: u8, a: u8) -> bool {
    (1..=127).contains(&b.wrapping_sub(a))
}

/// A BCD field as its decimal digits, two per byte, high nibble first.
fn bcd<const N: usize>(field: Field<N>, image: &[u8]) -> Result<String, CardError> {
    let bytes = field.of(image)?;
    let mut digits = String::with_capacity(N * 2);
    for (offset, &byte) in bytes.iter().enumerate() {
        for nibble in [byte >> 4, byte & 0x0F] {
            let digit = char::from_digit(u32::from(nibble), 10).ok_or_else(|| {
                CardError::Malformed(format!(
                    "{} byte {offset} is {byte:02X}, not two BCD digits",
                    field.name
                ))
            })?;
            digits.push(digit);
        }
    }
    Ok(digits)
}

/// A printable-ASCII field without its trailing space padding.
fn ascii<const N: usize>(field: Field<N>, image: &[u8]) -> Result<String, CardError> {
    let bytes = field.of(image)?;
    if let Some((offset, byte)) = bytes
        .iter()
        .enumerate()
        .find(|(_, byte)| !(b' '..=b'~').contains(*byte))
    {
        return Err(CardError::Malformed(format!(
            "{} byte {offset} is {byte:02X}, not printable ASCII",
            field.name
        )));
    }
    let text: String = bytes.iter().map(|&byte| char::from(byte)).collect();
    Ok(text.trim_end_matches(' ').to_owned())
}

fn role(image: &[u8]) -> Result<CardRole, CardError> {
    let [byte] = *ROLE.of(image)?;
    match byte {
        0x01 => Ok(CardRole::User),
        0x02 => Ok(CardRole::OpenAccount),
        0x03 => Ok(CardRole::Replacement),
        0x04 => Ok(CardRole::Check),
        0x05 => Ok(CardRole::Tool),
        other => Err(CardError::Malformed(format!(
            "{} byte {other:02X} is not a known role (01–05)",
            ROLE.name
        ))),
    }
}

/// The meter's return record; absent on a card not yet in the meter, and absent with a warning
/// when it does not check out, because the meter owns it and a sale must not wait on it.
fn return_data(raw: &[u8; RETURN_LEN]) -> Option<ReturnData> {
    if raw.iter().all(|&byte| byte == 0) {
        return None;
    }
    let [tag, c0, c1, r0, r1, r2, r3, u0, u1, u2, u3, status, k0, k1] = *raw;
    let problem = if tag != RETURN_TAG {
        Some(format!("starts with {tag:02X}, not 'R'"))
    } else if crc16(&raw[..RETURN_BODY_LEN]) != u16::from_be_bytes([k0, k1]) {
        Some("fails its CRC".to_owned())
    } else {
        None
    };
    if let Some(problem) = problem {
        log(
            Level::Warn,
            &format!("the meter's return record {problem}; ignoring it"),
        );
        return None;
    }
    let status_flags = STATUS_FLAGS
        .iter()
        .enumerate()
        .filter(|&(bit, _)| status & (1 << bit) != 0)
        .map(|(_, name)| (*name).to_owned())
        .collect();
    Some(ReturnData {
        meter_purchase_count: u32::from(u16::from_be_bytes([c0, c1])),
        remaining_fen: None,
        remaining_wh: Some(u64::from(u32::from_be_bytes([r0, r1, r2, r3]))),
        total_energy_wh: Some(u64::from(u32::from_be_bytes([u0, u1, u2, u3]))),
        status_flags,
        raw: raw[..RETURN_BODY_LEN].to_vec(),
    })
}
