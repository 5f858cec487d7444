//! {{name}}: a card codec for the "DEMO" layout on an SLE4442 memory card. Replace the layout
//! with your card's; keep the rules each function states, which `selfvend plugin test` checks.
//!
//! The layout (addresses in the card's 256 bytes):
//!   20..24  "DEMO", the layout tag `identify` looks for
//!   24..2C  card serial, 16 BCD digits
//!   2C..2E  utility code, 4 BCD digits
//!   30..3C  customer number, ASCII, space-padded
//!   3C..48  meter number, ASCII, space-padded
//!   80..90  credit slot A;  90..A0  credit slot B
//! A slot is: sequence (1), purchase count (2), amount in fen (4), energy in Wh (4), taken by
//! the meter (1), unused (2), CRC-16/CCITT of the first 14 bytes (2), all big-endian.
//! The current slot is the valid one with the newer sequence. A credit is written into the
//! other slot in one command, so a card pulled mid-write leaves the old slot current: that is
//! what makes the write tear-safe.

use exports::selfvend::card::codec::{
    CardAuthority, CardChannel, CardData, CardError, CodecInfo, CreditGrant, Guest, Identification,
    VerifyOutcome,
};
use selfvend::card::authority::AuthorityError;
use selfvend::card::log::{Level, log};
use selfvend::card::types::{ApduFailure, CardRole, ChannelError, PendingCredit, ReaderKind, WriteAuth};

wit_bindgen::generate!({ path: "wit", world: "card-codec" });

/// What an ACS-style reader reports as an SLE4442's ATR.
const ATR: [u8; 6] = [0x3B, 0x04, 0xA2, 0x13, 0x10, 0x91];
const TAG: &[u8; 4] = b"DEMO";
const SLOTS: [u8; 2] = [0x80, 0x90];
const SLOT_LEN: usize = 16;

struct Codec;

impl Guest for Codec {
    fn about() -> CodecInfo {
        CodecInfo {
            vendor: "Your Meter Company".into(),
            name: "{{name}}".into(),
            version: "0.1.0".into(),
        }
    }

    /// Only its own card: the ATR, then one read-only probe. `None` for anything else.
    fn identify(channel: &CardChannel) -> Result<Option<Identification>, CardError> {
        if channel.reader_kind() != ReaderKind::MemoryCard || channel.atr() != ATR {
            return Ok(None);
        }
        select(channel)?;
        let tag = read(channel, 0x20, 4, "read layout tag")?;
        Ok((tag == TAG).then(|| Identification {
            card_type: "{{name}}-demo".into(),
            write_auth: WriteAuth::Psc,
        }))
    }

    fn read(channel: &CardChannel) -> Result<CardData, CardError> {
        let image = Image::read(channel)?;
        log(Level::Debug, &format!("read card {}, purchase count {}", image.serial, image.purchase_count()));
        Ok(image.card_data())
    }

    /// Refuses a grant for another card, or not for count + 1, before it touches the card;
    /// asks for the PSC once and presents it once.
    fn write_credit(channel: &CardChannel, grant: CreditGrant, authority: &CardAuthority) -> Result<(), CardError> {
        let image = Image::read(channel)?;
        image.check_serial(&grant)?;
        if image.current.as_ref().is_some_and(|s| s.carries(&grant)) {
            return Ok(()); // Already on the card: a re-write after a tear that finished.
        }
        let next = image.purchase_count() + 1;
        if grant.purchase_count != next {
            return Err(CardError::GrantRejected(format!(
                "grant carries purchase count {}; the card's next is {next}",
                grant.purchase_count
            )));
        }
        let purchase_count = u16::try_from(grant.purchase_count)
            .map_err(|_| CardError::GrantRejected("the card counts 65535 purchases at most".into()))?;
        let amount = u32::try_from(grant.amount_fen)
            .map_err(|_| CardError::GrantRejected(format!("{} fen does not fit the card", grant.amount_fen)))?;
        let energy = u32::try_from(grant.energy_wh)
            .map_err(|_| CardError::GrantRejected(format!("{} Wh does not fit the card", grant.energy_wh)))?;
        let slot = Slot {
            sequence: image.current.as_ref().map_or(1, |s| s.sequence.wrapping_add(1)),
            purchase_count,
            amount,
            energy,
            taken: false,
        };
        let psc = authority.card_password().map_err(|e| {
            CardError::AuthorityFailed(match e {
                AuthorityError::Refused(t) | AuthorityError::Unavailable(t) | AuthorityError::NotAllowed(t) => t,
            })
        })?;
        present_psc(channel, &psc)?;
        write(channel, image.free_slot(), &slot.encode(), "write credit slot")?;
        log(Level::Info, &format!("wrote purchase {} onto card {}", grant.purchase_count, image.serial));
        Ok(())
    }

    fn verify(channel: &CardChannel, grant: CreditGrant) -> Result<VerifyOutcome, CardError> {
        let image = Image::read(channel)?;
        image.check_serial(&grant)?;
        Ok(if image.current.as_ref().is_some_and(|s| s.carries(&grant)) {
            VerifyOutcome::Written
        } else {
            VerifyOutcome::NotWritten
        })
    }
}

struct Slot {
    sequence: u8,
    purchase_count: u16,
    amount: u32,
    energy: u32,
    taken: bool,
}

impl Slot {
    /// `None` when the CRC is wrong: a slot never written, or torn.
    fn decode(raw: &[u8]) -> Option<Slot> {
        if crc16(&raw[..14]) != u16::from_be_bytes([raw[14], raw[15]]) {
            return None;
        }
        Some(Slot {
            sequence: raw[0],
            purchase_count: u16::from_be_bytes([raw[1], raw[2]]),
            amount: u32::from_be_bytes([raw[3], raw[4], raw[5], raw[6]]),
            energy: u32::from_be_bytes([raw[7], raw[8], raw[9], raw[10]]),
            taken: raw[11] == 1,
        })
    }

    fn encode(&self) -> [u8; SLOT_LEN] {
        let mut raw = [0u8; SLOT_LEN];
        raw[0] = self.sequence;
        raw[1..3].copy_from_slice(&self.purchase_count.to_be_bytes());
        raw[3..7].copy_from_slice(&self.amount.to_be_bytes());
        raw[7..11].copy_from_slice(&self.energy.to_be_bytes());
        raw[11] = u8::from(self.taken);
        let crc = crc16(&raw[..14]);
        raw[14..].copy_from_slice(&crc.to_be_bytes());
        raw
    }

    fn carries(&self, grant: &CreditGrant) -> bool {
        u32::from(self.purchase_count) == grant.purchase_count
            && u64::from(self.amount) == grant.amount_fen
            && u64::from(self.energy) == grant.energy_wh
    }
}

struct Image {
    serial: String,
    utility: String,
    customer: String,
    meter: String,
    current: Option<Slot>,
    /// Which slot is current (0 or 1).
    current_at: usize,
}

impl Image {
    fn read(channel: &CardChannel) -> Result<Image, CardError> {
        select(channel)?;
        let m = read(channel, 0x20, 0x80, "read card memory")?; // 20..A0
        if &m[0..4] != TAG {
            return Err(CardError::Malformed("no DEMO layout tag at 20".into()));
        }
        let slots = [Slot::decode(&m[0x60..0x70]), Slot::decode(&m[0x70..0x80])];
        let (current, current_at) = match slots {
            [Some(a), Some(b)] if (b.sequence.wrapping_sub(a.sequence) as i8) > 0 => (Some(b), 1),
            [Some(a), _] => (Some(a), 0),
            [None, Some(b)] => (Some(b), 1),
            [None, None] => (None, 1),
        };
        Ok(Image {
            serial: bcd(&m[0x04..0x0C], "card serial")?,
            utility: bcd(&m[0x0C..0x0E], "utility code")?,
            customer: text(&m[0x10..0x1C], "customer number")?,
            meter: text(&m[0x1C..0x28], "meter number")?,
            current,
            current_at,
        })
    }

    fn purchase_count(&self) -> u32 {
        self.current.as_ref().map_or(0, |s| u32::from(s.purchase_count))
    }

    /// The slot a new credit goes into: never the current one.
    fn free_slot(&self) -> u8 {
        SLOTS[1 - self.current_at]
    }

    fn check_serial(&self, grant: &CreditGrant) -> Result<(), CardError> {
        if grant.card_serial == self.serial {
            Ok(())
        } else {
            Err(CardError::WrongCard(format!(
                "grant is for card {}; this card is {}",
                grant.card_serial.escape_debug(),
                self.serial
            )))
        }
    }

    fn card_data(&self) -> CardData {
        CardData {
            card_serial: self.serial.clone(),
            utility_code: self.utility.clone(),
            customer_number: self.customer.clone(),
            meter_number: self.meter.clone(),
            role: CardRole::User,
            purchase_count: self.purchase_count(),
            pending: self.current.as_ref().filter(|s| !s.taken).map(|s| PendingCredit {
                purchase_count: u32::from(s.purchase_count),
                amount_fen: u64::from(s.amount),
                energy_wh: u64::from(s.energy),
            }),
            return_data: None,
        }
    }
}

// The reader's pseudo-APDUs for memory cards (ACS style): FF A4 select card type, FF B0 read,
// FF D0 write, FF 20 present the PSC.

fn select(channel: &CardChannel) -> Result<(), CardError> {
    command(channel, &[0xFF, 0xA4, 0x00, 0x00, 0x01, 0x06], "select SLE4442").map(|_| ())
}

fn read(channel: &CardChannel, addr: u8, len: u8, step: &str) -> Result<Vec<u8>, CardError> {
    let data = command(channel, &[0xFF, 0xB0, 0x00, addr, len], step)?;
    if data.len() != usize::from(len) {
        return Err(CardError::Malformed(format!("{step}: {} bytes where {len} were asked for", data.len())));
    }
    Ok(data)
}

fn write(channel: &CardChannel, addr: u8, data: &[u8], step: &str) -> Result<(), CardError> {
    let mut apdu = vec![0xFF, 0xD0, 0x00, addr, data.len() as u8];
    apdu.extend_from_slice(data);
    command(channel, &apdu, step).map(|_| ())
}

/// Presents the PSC once. The card spends a try on a wrong one, so this is never retried.
fn present_psc(channel: &CardChannel, psc: &[u8]) -> Result<(), CardError> {
    let header = [0xFF, 0x20, 0x00, 0x00];
    let mut apdu = header.to_vec();
    apdu.push(psc.len() as u8);
    apdu.extend_from_slice(psc);
    let (_, sw1, counter) = transmit(channel, &apdu, "present PSC")?;
    match (sw1, counter) {
        (0x90, 0x07) => Ok(()),
        (0x90, 0x00) => Err(CardError::CardLocked),
        (0x90, c) if c < 0x07 => Err(CardError::PscRefused(c.count_ones() as u8)),
        _ => Err(unexpected("present PSC", &header, sw1, counter)),
    }
}

/// Sends a command that must answer 90 00; returns its data.
fn command(channel: &CardChannel, apdu: &[u8], step: &str) -> Result<Vec<u8>, CardError> {
    match transmit(channel, apdu, step)? {
        (data, 0x90, 0x00) => Ok(data),
        (_, sw1, sw2) => Err(unexpected(step, apdu, sw1, sw2)),
    }
}

/// One APDU. Every channel error becomes a card error: a codec returns typed errors, never panics.
fn transmit(channel: &CardChannel, apdu: &[u8], step: &str) -> Result<(Vec<u8>, u8, u8), CardError> {
    let mut response = channel.transmit(apdu).map_err(|e| match e {
        ChannelError::CardRemoved => CardError::CardRemoved,
        ChannelError::ReaderFault(t) => CardError::ReaderFault(t),
        ChannelError::Refused(t) => CardError::ReaderFault(format!("the host refused the command: {t}")),
    })?;
    if response.len() < 2 {
        return Err(CardError::Malformed(format!("{step}: an answer of {} byte(s)", response.len())));
    }
    let sw2 = response.pop().unwrap_or_default();
    let sw1 = response.pop().unwrap_or_default();
    Ok((response, sw1, sw2))
}

fn unexpected(step: &str, apdu: &[u8], sw1: u8, sw2: u8) -> CardError {
    CardError::UnexpectedStatus(ApduFailure {
        step: step.into(),
        header: apdu.iter().take(4).copied().collect(),
        status: u16::from_be_bytes([sw1, sw2]),
    })
}

fn bcd(bytes: &[u8], field: &str) -> Result<String, CardError> {
    let mut out = String::new();
    for b in bytes {
        for digit in [b >> 4, b & 0x0F] {
            if digit > 9 {
                return Err(CardError::Malformed(format!("{field}: {b:02X} is not BCD")));
            }
            out.push(char::from(b'0' + digit));
        }
    }
    Ok(out)
}

fn text(bytes: &[u8], field: &str) -> Result<String, CardError> {
    std::str::from_utf8(bytes)
        .map(|s| s.trim_end().to_string())
        .map_err(|_| CardError::Malformed(format!("{field}: not text")))
}

/// CRC-16/CCITT-FALSE.
fn crc16(data: &[u8]) -> u16 {
    let mut crc = 0xFFFF_u16;
    for byte in data {
        crc ^= u16::from(*byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 { (crc << 1) ^ 0x1021 } else { crc << 1 };
        }
    }
    crc
}

export!(Codec);
