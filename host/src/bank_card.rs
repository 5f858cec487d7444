//! Reading a UnionPay (PBOC/EMV contact) debit or credit card: select the payment application
//! from the kiosk's list of AIDs, get processing options, read the records the card's AFL
//! names, and take the Track 2 equivalent data (tag 57) apart. Nothing is written to the card.
//!
//! The full PAN leaves this module only inside [`BankCard`], whose `Debug` masks it; it is
//! never logged. Every byte from the card is checked, and an error names the command or tag.

use std::fmt;

use crate::card::{CardChannel, ChannelError};

/// UnionPay's AIDs the kiosk accepts, in order of preference: debit, credit, quasi-credit.
pub const UNIONPAY_AIDS: [&[u8]; 3] = [
    &[0xA0, 0x00, 0x00, 0x03, 0x33, 0x01, 0x01, 0x01],
    &[0xA0, 0x00, 0x00, 0x03, 0x33, 0x01, 0x01, 0x02],
    &[0xA0, 0x00, 0x00, 0x03, 0x33, 0x01, 0x01, 0x03],
];

/// Records read at most (an AFL naming more is refused as malformed).
const MAX_RECORDS: usize = 32;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BankCardError {
    #[error("the card has none of the payment applications this kiosk accepts")]
    NoPaymentApplication,
    /// The card answered a command with an error status.
    #[error("the card refused {command}: status {sw:04X}")]
    Status { command: &'static str, sw: u16 },
    /// The card's answer is not what EMV says it must be.
    #[error("the card's {what} is malformed: {why}")]
    Malformed { what: &'static str, why: String },
    #[error("the card's Track 2 data: {0}")]
    Track2(String),
    #[error(transparent)]
    Channel(#[from] ChannelError),
}

/// What the kiosk knows of a bank card: enough for the acquirer's purchase message.
#[derive(Clone, PartialEq, Eq)]
pub struct BankCard {
    /// The application selected.
    pub aid: Vec<u8>,
    /// The primary account number, digits only.
    pub pan: String,
    /// Expiry as YYMM.
    pub expiry: String,
    pub service_code: String,
    /// The Track 2 equivalent data as the card holds it (for the purchase message's field 35).
    pub track2: Vec<u8>,
}

impl BankCard {
    /// The PAN as a receipt or log may show it: first six, last four.
    pub fn masked_pan(&self) -> String {
        mask(&self.pan)
    }
}

impl fmt::Debug for BankCard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BankCard")
            .field("aid", &hex::encode_upper(&self.aid))
            .field("pan", &self.masked_pan())
            .field("expiry", &self.expiry)
            .field("service_code", &self.service_code)
            .finish_non_exhaustive()
    }
}

fn mask(pan: &str) -> String {
    if pan.len() < 10 {
        return "*".repeat(pan.len());
    }
    format!(
        "{}{}{}",
        &pan[..6],
        "*".repeat(pan.len() - 10),
        &pan[pan.len() - 4..]
    )
}

/// Reads the bank card on `card`.
pub fn read(card: &mut dyn CardChannel) -> Result<BankCard, BankCardError> {
    let (aid, fci) = select_application(card)?;
    let pdol = find(&fci, &[0x6F, 0xA5, 0x9F38]).unwrap_or_default();
    let gpo = command(
        card,
        "GET PROCESSING OPTIONS",
        &gpo_command(&pdol_data(&pdol)?),
    )?;
    let afl = afl(&gpo)?;
    let mut track2 = None;
    for (sfi, record) in afl {
        let data = command(
            card,
            "READ RECORD",
            &[0x00, 0xB2, record, (sfi << 3) | 4, 0x00],
        )?;
        let template = tlv(&data, "record")?;
        let Some((0x70, body)) = template.first().map(|(t, v)| (*t, *v)) else {
            return Err(malformed("record", "it is not a 70 template"));
        };
        if let Some(t2) = tlv(body, "record")?.into_iter().find(|(t, _)| *t == 0x57) {
            track2 = Some(t2.1.to_vec());
            break;
        }
    }
    let track2 = track2.ok_or_else(|| malformed("records", "no Track 2 equivalent data (57)"))?;
    let (pan, expiry, service_code) = parse_track2(&track2)?;
    Ok(BankCard {
        aid,
        pan,
        expiry,
        service_code,
        track2,
    })
}

/// Selects the first accepted AID the card has; returns it and its FCI.
fn select_application(card: &mut dyn CardChannel) -> Result<(Vec<u8>, Vec<u8>), BankCardError> {
    for aid in UNIONPAY_AIDS {
        let mut apdu = vec![0x00, 0xA4, 0x04, 0x00, aid.len() as u8];
        apdu.extend_from_slice(aid);
        apdu.push(0x00);
        let (data, sw) = exchange(card, &apdu)?;
        match sw {
            0x9000 => return Ok((aid.to_vec(), data)),
            // Not on this card (6A82), or a card that knows no SELECT at all.
            0x6A82 | 0x6A81 | 0x6D00 | 0x6E00 | 0x6900..=0x69FF => continue,
            sw => {
                return Err(BankCardError::Status {
                    command: "SELECT",
                    sw,
                });
            }
        }
    }
    Err(BankCardError::NoPaymentApplication)
}

/// Sends `apdu`, fetching a T=0 card's answer with GET RESPONSE (61xx) and repeating a command
/// with the right Le (6Cxx). Returns the data and the final status word.
fn exchange(card: &mut dyn CardChannel, apdu: &[u8]) -> Result<(Vec<u8>, u16), BankCardError> {
    let mut response = card.transmit(apdu)?;
    let mut data = Vec::new();
    for _ in 0..16 {
        if response.len() < 2 {
            return Err(malformed("answer", "shorter than a status word"));
        }
        let (body, sw) = response.split_at(response.len() - 2);
        data.extend_from_slice(body);
        match sw {
            [0x61, le] => response = card.transmit(&[0x00, 0xC0, 0x00, 0x00, *le])?,
            [0x6C, le] if data.is_empty() => {
                let mut again = apdu.to_vec();
                *again.last_mut().expect("an APDU has a header") = *le;
                response = card.transmit(&again)?;
            }
            [a, b] => return Ok((data, u16::from_be_bytes([*a, *b]))),
            _ => unreachable!("split_at leaves two bytes"),
        }
    }
    Err(malformed("answer", "more than 16 GET RESPONSE rounds"))
}

fn command(
    card: &mut dyn CardChannel,
    name: &'static str,
    apdu: &[u8],
) -> Result<Vec<u8>, BankCardError> {
    match exchange(card, apdu)? {
        (data, 0x9000) => Ok(data),
        (_, sw) => Err(BankCardError::Status { command: name, sw }),
    }
}

fn gpo_command(pdol_data: &[u8]) -> Vec<u8> {
    let mut apdu = vec![0x80, 0xA8, 0x00, 0x00, pdol_data.len() as u8 + 2, 0x83];
    apdu.push(pdol_data.len() as u8);
    apdu.extend_from_slice(pdol_data);
    apdu.push(0x00);
    apdu
}

/// The data the card's PDOL asks for. The kiosk reads the card before any amount is known, so
/// each requested element is sent as zeros of its length (EMV Book 3, 5.4: unknown data).
fn pdol_data(pdol: &[u8]) -> Result<Vec<u8>, BankCardError> {
    let mut out = Vec::new();
    let mut rest = pdol;
    while !rest.is_empty() {
        let (_, after_tag) = read_tag(rest, "PDOL")?;
        let (&len, after) = after_tag
            .split_first()
            .ok_or_else(|| malformed("PDOL", "a tag without its length"))?;
        out.resize(out.len() + usize::from(len), 0);
        rest = after;
    }
    if out.len() > 250 {
        return Err(malformed("PDOL", "it asks for more than 250 bytes"));
    }
    Ok(out)
}

/// The records named by the GPO answer's AFL: (SFI, record number), in order.
fn afl(gpo: &[u8]) -> Result<Vec<(u8, u8)>, BankCardError> {
    let what = "GET PROCESSING OPTIONS answer";
    let items = tlv(gpo, what)?;
    let afl: &[u8] = match items.first() {
        // Format 1: AIP (2 bytes) then the AFL.
        Some((0x80, v)) if v.len() >= 2 => &v[2..],
        Some((0x80, _)) => return Err(malformed(what, "format 1 without its AIP")),
        Some((0x77, v)) => tlv(v, what)?
            .into_iter()
            .find(|(t, _)| *t == 0x94)
            .map(|(_, v)| v)
            .ok_or_else(|| malformed(what, "no AFL (94)"))?,
        _ => return Err(malformed(what, "neither format 1 (80) nor format 2 (77)")),
    };
    if afl.is_empty() || !afl.len().is_multiple_of(4) {
        return Err(malformed("AFL", format!("{} bytes", afl.len())));
    }
    let mut records = Vec::new();
    for entry in afl.chunks(4) {
        let (sfi, first, last) = (entry[0] >> 3, entry[1], entry[2]);
        if !(1..=30).contains(&sfi) || first == 0 || last < first {
            return Err(malformed(
                "AFL",
                format!("entry {}", hex::encode_upper(entry)),
            ));
        }
        if records.len() + usize::from(last - first) + 1 > MAX_RECORDS {
            return Err(malformed("AFL", format!("more than {MAX_RECORDS} records")));
        }
        records.extend((first..=last).map(|r| (sfi, r)));
    }
    Ok(records)
}

/// Splits Track 2 equivalent data: PAN, separator D, YYMM, service code, discretionary data,
/// padded with F to whole bytes.
fn parse_track2(t2: &[u8]) -> Result<(String, String, String), BankCardError> {
    let nibbles: String = hex::encode_upper(t2);
    let digits = nibbles.trim_end_matches('F');
    let (pan, rest) = digits
        .split_once('D')
        .ok_or_else(|| BankCardError::Track2("no field separator (D)".into()))?;
    if !(13..=19).contains(&pan.len()) || !pan.bytes().all(|b| b.is_ascii_digit()) {
        return Err(BankCardError::Track2(format!(
            "the PAN is {} characters, not 13 to 19 digits",
            pan.len()
        )));
    }
    if !luhn(pan) {
        return Err(BankCardError::Track2(format!(
            "PAN {} fails its check digit",
            mask(pan)
        )));
    }
    if rest.len() < 7 || !rest[..7].bytes().all(|b| b.is_ascii_digit()) {
        return Err(BankCardError::Track2(
            "no expiry and service code after the separator".into(),
        ));
    }
    let (expiry, service_code) = (&rest[..4], &rest[4..7]);
    let month: u8 = expiry[2..].parse().unwrap_or(0);
    if !(1..=12).contains(&month) {
        return Err(BankCardError::Track2(format!(
            "expiry {expiry} has no month 01-12"
        )));
    }
    Ok((
        pan.to_string(),
        expiry.to_string(),
        service_code.to_string(),
    ))
}

/// The Luhn (ISO/IEC 7812-1) check digit holds.
fn luhn(digits: &str) -> bool {
    let sum: u32 = digits
        .bytes()
        .rev()
        .enumerate()
        .map(|(i, b)| {
            let d = u32::from(b - b'0');
            if i % 2 == 1 {
                let d = d * 2;
                if d > 9 { d - 9 } else { d }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// The value at `path` in nested BER-TLV (each step a constructed tag's child).
fn find(data: &[u8], path: &[u32]) -> Option<Vec<u8>> {
    let mut here = data;
    for tag in path {
        here = tlv(here, "FCI")
            .ok()?
            .into_iter()
            .find(|(t, _)| t == tag)
            .map(|(_, v)| v)?;
    }
    Some(here.to_vec())
}

/// One level of BER-TLV: each tag and its value. Padding bytes 00 and FF between objects are
/// skipped (EMV Book 3, annex B).
fn tlv<'a>(mut data: &'a [u8], what: &'static str) -> Result<Vec<(u32, &'a [u8])>, BankCardError> {
    let mut out = Vec::new();
    while let Some(&first) = data.first() {
        if first == 0x00 || first == 0xFF {
            data = &data[1..];
            continue;
        }
        let (tag, rest) = read_tag(data, what)?;
        let (len, rest) = read_length(rest, what)?;
        if rest.len() < len {
            return Err(malformed(
                what,
                format!("tag {tag:X} claims {len} bytes, {} remain", rest.len()),
            ));
        }
        out.push((tag, &rest[..len]));
        data = &rest[len..];
    }
    Ok(out)
}

fn read_tag<'a>(data: &'a [u8], what: &'static str) -> Result<(u32, &'a [u8]), BankCardError> {
    let (&first, mut rest) = data
        .split_first()
        .ok_or_else(|| malformed(what, "ends inside a tag"))?;
    let mut tag = u32::from(first);
    if first & 0x1F == 0x1F {
        loop {
            let (&b, after) = rest
                .split_first()
                .ok_or_else(|| malformed(what, "ends inside a tag"))?;
            if tag > 0xFF_FF {
                return Err(malformed(what, "a tag longer than three bytes"));
            }
            tag = (tag << 8) | u32::from(b);
            rest = after;
            if b & 0x80 == 0 {
                break;
            }
        }
    }
    Ok((tag, rest))
}

fn read_length<'a>(data: &'a [u8], what: &'static str) -> Result<(usize, &'a [u8]), BankCardError> {
    let (&first, rest) = data
        .split_first()
        .ok_or_else(|| malformed(what, "ends before a length"))?;
    match first {
        0..=0x7F => Ok((usize::from(first), rest)),
        0x81 if !rest.is_empty() => Ok((usize::from(rest[0]), &rest[1..])),
        0x82 if rest.len() >= 2 => Ok((
            usize::from(u16::from_be_bytes([rest[0], rest[1]])),
            &rest[2..],
        )),
        _ => Err(malformed(what, format!("length byte {first:02X}"))),
    }
}

fn malformed(what: &'static str, why: impl Into<String>) -> BankCardError {
    BankCardError::Malformed {
        what,
        why: why.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn track2_splits_into_pan_expiry_and_service_code() {
        let t2 = hex::decode("6222021234567890128D30122011234567890F").unwrap();
        let (pan, expiry, service) = parse_track2(&t2).unwrap();
        assert_eq!(
            (pan.as_str(), expiry.as_str(), service.as_str()),
            ("6222021234567890128", "3012", "201")
        );
        assert_eq!(mask(&pan), "622202*********0128");
    }

    #[test]
    fn a_bad_check_digit_or_month_is_refused() {
        let bad = hex::decode("6222021234567890124D30122011234F").unwrap();
        assert_eq!(
            parse_track2(&bad).unwrap_err().to_string(),
            "the card's Track 2 data: PAN 622202*********0124 fails its check digit"
        );
        let month = hex::decode("6222021234567890128D30132011234F").unwrap();
        assert_eq!(
            parse_track2(&month).unwrap_err().to_string(),
            "the card's Track 2 data: expiry 3013 has no month 01-12"
        );
    }

    #[test]
    fn tlv_reads_two_byte_tags_long_lengths_and_refuses_overruns() {
        let data = [0x9F, 0x38, 0x03, 0x9F, 0x66, 0x04, 0x70, 0x81, 0x01, 0xAA];
        let items = tlv(&data, "test").unwrap();
        assert_eq!(items[0], (0x9F38, &[0x9F, 0x66, 0x04][..]));
        assert_eq!(items[1], (0x70, &[0xAA][..]));
        assert_eq!(
            tlv(&[0x57, 0x05, 0x01], "record").unwrap_err().to_string(),
            "the card's record is malformed: tag 57 claims 5 bytes, 1 remain"
        );
        assert_eq!(
            pdol_data(&[0x9F, 0x66, 0x04, 0x9F, 0x02, 0x06]).unwrap(),
            [0; 10]
        );
    }
}
