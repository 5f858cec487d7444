//! The CUP-8583 wire format (docs/acquirers/iso8583.md): a 2-byte length, the TPDU, a BCD MTI,
//! a primary bitmap and the fields in order, each in its layout from the spec's table.
//!
//! Decoding is strict (pad nibbles must be zero, digits must be digits, nothing may follow the
//! last field), so a decoded message encodes back to exactly the bytes that came in, and the
//! MAC input can be rebuilt from the parsed message.

use std::collections::BTreeMap;
use std::io::Read;

/// The most bytes a message may have after its length header.
pub(super) const MAX_LEN: usize = 2048;
/// A terminal's TPDU: ID `60`, destination `0001`, source `0000`.
#[cfg(test)]
const REQUEST_TPDU: [u8; 5] = [0x60, 0x00, 0x01, 0x00, 0x00];
const TPDU_ID: u8 = 0x60;
const TPDU_LEN: usize = 5;
const HEADER_LEN: usize = TPDU_LEN + 2 + 8;
/// The MAC field; always the last one.
pub(super) const MAC_FIELD: u8 = 64;

/// How one field sits on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layout {
    /// `n w`: packed BCD, right-aligned, left-padded with a zero nibble.
    Numeric(usize),
    /// `LLVAR n ..max`: 1-byte BCD digit count, digits left-aligned, right-padded with zero.
    LlvarNumeric(usize),
    /// `LLVAR z ..max`: as `LLVAR n`, with the separator `D` allowed.
    LlvarTrack(usize),
    /// `an w` / `ans w`: exactly `w` printable ASCII bytes.
    Text(usize),
    /// `b w`: exactly `w` bytes.
    Binary(usize),
    /// `LLLVAR ans ..max`: 2-byte BCD byte count, then printable ASCII.
    LllvarText(usize),
    /// `LLLVAR b ..max`: 2-byte BCD byte count, then the bytes.
    LllvarBinary(usize),
}

/// The layout of each field the dialect uses; any other field in a bitmap is malformed,
/// because its length cannot be known.
fn layout(field: u8) -> Option<Layout> {
    use Layout::*;
    Some(match field {
        2 => LlvarNumeric(19),
        3 | 11 | 12 => Numeric(6),
        4 => Numeric(12),
        13 | 14 => Numeric(4),
        22 => Numeric(3),
        25 | 26 => Numeric(2),
        35 => LlvarTrack(37),
        37 => Text(12),
        38 => Text(6),
        39 => Text(2),
        41 => Text(8),
        42 => Text(15),
        48 => LllvarText(62),
        49 => Text(3),
        52 | 64 => Binary(8),
        53 => Numeric(16),
        60 => LllvarText(11),
        62 => LllvarBinary(40),
        _ => return None,
    })
}

/// Why bytes are not a CUP-8583 message (or a message cannot be put on the wire).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(super) enum CodecError {
    #[error("the message is {0} bytes; it must be {HEADER_LEN} to {MAX_LEN}")]
    Length(usize),
    #[error("the TPDU does not start with 60")]
    Tpdu,
    #[error("the MTI is not 4 BCD digits")]
    Mti,
    #[error("bit 1 of the bitmap is set (no secondary bitmap in this dialect)")]
    SecondaryBitmap,
    #[error("field {0} is in the bitmap but not in the dialect")]
    UnknownField(u8),
    #[error("the message ends inside field {0}")]
    Truncated(u8),
    #[error("field {field}: {why}")]
    Field { field: u8, why: &'static str },
    #[error("{0} bytes follow the last field")]
    Trailing(usize),
}

/// One message. Numeric fields (`n`, `z`) hold their digits as ASCII (`D` for the track
/// separator); text and binary fields hold their bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Message {
    pub(super) tpdu: [u8; 5],
    /// The MTI as a number: 800 for `0800`.
    pub(super) mti: u16,
    fields: BTreeMap<u8, Vec<u8>>,
}

impl Message {
    /// A request, with the terminal's TPDU (only the tests' terminal makes requests).
    #[cfg(test)]
    pub(super) fn new(mti: u16) -> Message {
        Message {
            tpdu: REQUEST_TPDU,
            mti,
            fields: BTreeMap::new(),
        }
    }

    /// The empty answer to `request`: MTI + 10, destination and source swapped.
    pub(super) fn answer_to(request: &Message) -> Message {
        let t = request.tpdu;
        Message {
            tpdu: [t[0], t[3], t[4], t[1], t[2]],
            mti: request.mti + 10,
            fields: BTreeMap::new(),
        }
    }

    pub(super) fn set(&mut self, field: u8, value: impl Into<Vec<u8>>) -> &mut Message {
        self.fields.insert(field, value.into());
        self
    }

    pub(super) fn get(&self, field: u8) -> Option<&[u8]> {
        self.fields.get(&field).map(Vec::as_slice)
    }

    /// A numeric or text field as a string (every decoded `n`, `z`, `an` and `ans` field is
    /// ASCII, so only binary fields can be `None` here).
    pub(super) fn text(&self, field: u8) -> Option<&str> {
        std::str::from_utf8(self.get(field)?).ok()
    }

    /// A numeric field's value.
    pub(super) fn number(&self, field: u8) -> Option<u64> {
        self.text(field)?.parse().ok()
    }

    /// Copies `fields` that `from` has into this message.
    pub(super) fn echo(&mut self, from: &Message, fields: &[u8]) -> &mut Message {
        for &f in fields {
            if let Some(v) = from.get(f) {
                self.set(f, v);
            }
        }
        self
    }

    /// Parses the bytes after the length header.
    pub(super) fn decode(body: &[u8]) -> Result<Message, CodecError> {
        if !(HEADER_LEN..=MAX_LEN).contains(&body.len()) {
            return Err(CodecError::Length(body.len()));
        }
        let tpdu: [u8; 5] = body[..TPDU_LEN].try_into().expect("length checked");
        if tpdu[0] != TPDU_ID {
            return Err(CodecError::Tpdu);
        }
        let mti = bcd_digits(&body[TPDU_LEN..TPDU_LEN + 2])
            .and_then(|d| d.parse().ok())
            .ok_or(CodecError::Mti)?;
        let bitmap = &body[TPDU_LEN + 2..HEADER_LEN];
        if bitmap[0] & 0x80 != 0 {
            return Err(CodecError::SecondaryBitmap);
        }
        let mut rest = &body[HEADER_LEN..];
        let mut fields = BTreeMap::new();
        for field in 2..=64u8 {
            let bit = usize::from(field - 1);
            if bitmap[bit / 8] & (0x80 >> (bit % 8)) == 0 {
                continue;
            }
            let layout = layout(field).ok_or(CodecError::UnknownField(field))?;
            let (value, used) = decode_field(field, layout, rest)?;
            fields.insert(field, value);
            rest = &rest[used..];
        }
        if !rest.is_empty() {
            return Err(CodecError::Trailing(rest.len()));
        }
        Ok(Message { tpdu, mti, fields })
    }

    /// The bytes after the length header.
    pub(super) fn encode(&self) -> Result<Vec<u8>, CodecError> {
        let mut out = self.tpdu.to_vec();
        out.extend(self.encode_from_mti(self.fields.contains_key(&MAC_FIELD))?);
        if let Some(mac) = self.fields.get(&MAC_FIELD) {
            out.extend(encode_field(MAC_FIELD, Layout::Binary(8), mac)?);
        }
        if out.len() > MAX_LEN {
            return Err(CodecError::Length(out.len()));
        }
        Ok(out)
    }

    /// What the MAC is computed over: every byte from the MTI to the end of the last field
    /// before 64, with bit 64 set in the bitmap (as it is on the wire).
    pub(super) fn mac_input(&self) -> Result<Vec<u8>, CodecError> {
        self.encode_from_mti(true)
    }

    /// Length header + [`encode`](Self::encode).
    pub(super) fn frame(&self) -> Result<Vec<u8>, CodecError> {
        let body = self.encode()?;
        let mut out = u16::try_from(body.len())
            .expect("at most MAX_LEN")
            .to_be_bytes()
            .to_vec();
        out.extend(body);
        Ok(out)
    }

    fn encode_from_mti(&self, mac_bit: bool) -> Result<Vec<u8>, CodecError> {
        let mut out = pack_right(&format!("{:04}", self.mti)).ok_or(CodecError::Mti)?;
        if out.len() != 2 {
            return Err(CodecError::Mti);
        }
        let mut bitmap = [0u8; 8];
        let mut data = Vec::new();
        for (&field, value) in &self.fields {
            if field == MAC_FIELD {
                continue;
            }
            let layout = match field {
                2..=63 => layout(field),
                _ => None,
            }
            .ok_or(CodecError::UnknownField(field))?;
            set_bit(&mut bitmap, field);
            data.extend(encode_field(field, layout, value)?);
        }
        if mac_bit {
            set_bit(&mut bitmap, MAC_FIELD);
        }
        out.extend(bitmap);
        out.extend(data);
        Ok(out)
    }
}

/// Reads one message (length header and body) and nothing after it. `None` when the stream
/// ends early or the header claims more than [`MAX_LEN`].
pub(super) fn read_frame(stream: &mut impl Read) -> Option<Vec<u8>> {
    let mut header = [0u8; 2];
    stream.read_exact(&mut header).ok()?;
    let len = usize::from(u16::from_be_bytes(header));
    if len > MAX_LEN {
        return None;
    }
    let mut body = vec![0; len];
    stream.read_exact(&mut body).ok()?;
    Some(body)
}

fn set_bit(bitmap: &mut [u8; 8], field: u8) {
    let bit = usize::from(field - 1);
    bitmap[bit / 8] |= 0x80 >> (bit % 8);
}

fn field_error(field: u8, why: &'static str) -> CodecError {
    CodecError::Field { field, why }
}

/// Takes `n` bytes off the front of `data`.
fn take(field: u8, data: &[u8], n: usize) -> Result<&[u8], CodecError> {
    data.get(..n).ok_or(CodecError::Truncated(field))
}

/// Decodes one field at the front of `data`: its value and the bytes it took.
fn decode_field(field: u8, layout: Layout, data: &[u8]) -> Result<(Vec<u8>, usize), CodecError> {
    let bad_digits = field_error(field, "not BCD digits with zero padding");
    match layout {
        Layout::Numeric(w) => {
            let bytes = take(field, data, w.div_ceil(2))?;
            let digits = bcd_digits(bytes).ok_or(bad_digits.clone())?;
            let pad = digits.len() - w;
            if !digits[..pad].bytes().all(|d| d == b'0') {
                return Err(bad_digits);
            }
            Ok((digits.as_bytes()[pad..].to_vec(), bytes.len()))
        }
        Layout::LlvarNumeric(max) | Layout::LlvarTrack(max) => {
            let len = take(field, data, 1)?;
            let n = bcd_digits(len)
                .and_then(|d| d.parse::<usize>().ok())
                .filter(|&n| n <= max)
                .ok_or(field_error(
                    field,
                    "the length is not BCD within the maximum",
                ))?;
            let bytes = take(field, &data[1..], n.div_ceil(2))?;
            let mut nibbles: Vec<u8> = bytes.iter().flat_map(|b| [b >> 4, b & 0x0F]).collect();
            if nibbles.len() > n && nibbles.pop() != Some(0) {
                return Err(bad_digits);
            }
            let track = matches!(layout, Layout::LlvarTrack(_));
            let digits = nibbles
                .into_iter()
                .map(|d| match d {
                    0..=9 => Some(b'0' + d),
                    0xD if track => Some(b'D'),
                    _ => None,
                })
                .collect::<Option<Vec<u8>>>()
                .ok_or(bad_digits)?;
            Ok((digits, 1 + bytes.len()))
        }
        Layout::Text(w) => {
            let bytes = take(field, data, w)?;
            check_text(field, bytes)?;
            Ok((bytes.to_vec(), w))
        }
        Layout::Binary(w) => Ok((take(field, data, w)?.to_vec(), w)),
        Layout::LllvarText(max) | Layout::LllvarBinary(max) => {
            let len = take(field, data, 2)?;
            let n = bcd_digits(len)
                .and_then(|d| d.parse::<usize>().ok())
                .filter(|&n| n <= max)
                .ok_or(field_error(
                    field,
                    "the length is not BCD within the maximum",
                ))?;
            let bytes = take(field, &data[2..], n)?;
            if matches!(layout, Layout::LllvarText(_)) {
                check_text(field, bytes)?;
            }
            Ok((bytes.to_vec(), 2 + n))
        }
    }
}

fn encode_field(field: u8, layout: Layout, value: &[u8]) -> Result<Vec<u8>, CodecError> {
    let digits = || {
        std::str::from_utf8(value)
            .ok()
            .filter(|s| s.bytes().all(|b| b.is_ascii_digit()))
            .ok_or(field_error(field, "not decimal digits"))
    };
    let wrong_length = field_error(field, "the value has the wrong length");
    match layout {
        Layout::Numeric(w) => {
            let d = digits()?;
            if d.len() != w {
                return Err(wrong_length);
            }
            pack_right(d).ok_or(wrong_length)
        }
        Layout::LlvarNumeric(max) | Layout::LlvarTrack(max) => {
            let track = matches!(layout, Layout::LlvarTrack(_));
            let nibbles = value
                .iter()
                .map(|&c| match c {
                    b'0'..=b'9' => Some(c - b'0'),
                    b'D' if track => Some(0xD),
                    _ => None,
                })
                .collect::<Option<Vec<u8>>>()
                .ok_or(field_error(field, "not digits (or D in track data)"))?;
            if nibbles.len() > max {
                return Err(wrong_length);
            }
            let mut out = pack_right(&format!("{:02}", nibbles.len())).ok_or(wrong_length)?;
            out.extend(
                nibbles
                    .chunks(2)
                    .map(|p| p[0] << 4 | p.get(1).copied().unwrap_or(0)),
            );
            Ok(out)
        }
        Layout::Text(w) | Layout::Binary(w) => {
            if value.len() != w {
                return Err(wrong_length);
            }
            if matches!(layout, Layout::Text(_)) {
                check_text(field, value)?;
            }
            Ok(value.to_vec())
        }
        Layout::LllvarText(max) | Layout::LllvarBinary(max) => {
            if value.len() > max {
                return Err(wrong_length);
            }
            if matches!(layout, Layout::LllvarText(_)) {
                check_text(field, value)?;
            }
            let mut out = pack_right(&format!("{:04}", value.len())).ok_or(wrong_length)?;
            out.extend_from_slice(value);
            Ok(out)
        }
    }
}

fn check_text(field: u8, bytes: &[u8]) -> Result<(), CodecError> {
    if bytes.iter().all(|b| (0x20..=0x7E).contains(b)) {
        Ok(())
    } else {
        Err(field_error(field, "not printable ASCII"))
    }
}

/// The digits of packed BCD bytes, or `None` if a nibble is not a digit.
fn bcd_digits(bytes: &[u8]) -> Option<String> {
    bytes
        .iter()
        .flat_map(|b| [b >> 4, b & 0x0F])
        .map(|n| (n <= 9).then(|| char::from(b'0' + n)))
        .collect()
}

/// Packs ASCII digits as BCD, right-aligned (a zero nibble first when the count is odd).
fn pack_right(digits: &str) -> Option<Vec<u8>> {
    let mut nibbles = Vec::with_capacity(digits.len() + 1);
    if digits.len() % 2 == 1 {
        nibbles.push(0);
    }
    for c in digits.bytes() {
        nibbles.push(c.is_ascii_digit().then(|| c - b'0')?);
    }
    Some(nibbles.chunks(2).map(|p| p[0] << 4 | p[1]).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAN: &str = "6222021234567890128";

    /// A purchase as the kiosk sends it, with a placeholder MAC.
    fn purchase() -> Message {
        let mut m = Message::new(200);
        m.set(2, PAN)
            .set(3, "000000")
            .set(4, "000000001000")
            .set(11, "000123")
            .set(14, "3012")
            .set(22, "051")
            .set(25, "00")
            .set(26, "12")
            .set(35, "6222021234567890128D30122010000012345")
            .set(41, "SV000001")
            .set(42, "898110048990001")
            .set(49, "156")
            .set(52, [0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88])
            .set(53, "2600000000000000")
            .set(60, "22000007")
            .set(64, [0xA5; 8]);
        m
    }

    fn field_bytes(message: &Message, field: u8) -> Vec<u8> {
        let layout = layout(field).expect("a dialect field");
        encode_field(field, layout, message.get(field).expect("set")).expect("encodes")
    }

    #[test]
    fn pan_is_llvar_bcd_left_aligned_with_a_zero_pad_nibble() {
        assert_eq!(
            hex::encode(field_bytes(&purchase(), 2)),
            "1962220212345678901280"
        );
    }

    #[test]
    fn each_layout_is_the_one_in_the_spec_table() {
        let m = purchase();
        let expect = [
            (3, "000000"),
            (4, "000000001000"),
            (11, "000123"),
            (14, "3012"),
            // n 3: right-aligned, one zero nibble in front.
            (22, "0051"),
            (25, "00"),
            // LLVAR z, odd digit count: D is a nibble, the last nibble is a zero pad.
            (35, "376222021234567890128d301220100000123450"),
            (41, "5356303030303031"),
            (49, "313536"),
            (53, "2600000000000000"),
            // LLLVAR: a 2-byte BCD byte count.
            (60, "00083232303030303037"),
        ];
        for (field, hex) in expect {
            assert_eq!(hex::encode(field_bytes(&m, field)), hex, "field {field}");
        }
    }

    #[test]
    fn a_purchase_encodes_to_the_expected_frame_and_parses_back() {
        let m = purchase();
        let frame = m.frame().expect("encodes");
        let body = &frame[2..];
        assert_eq!(
            usize::from(u16::from_be_bytes([frame[0], frame[1]])),
            body.len()
        );
        assert_eq!(hex::encode(&body[..5]), "6000010000");
        assert_eq!(hex::encode(&body[5..7]), "0200");
        // Fields 2 3 4 11 14 22 25 26 35 41 42 49 52 53 60 64.
        assert_eq!(hex::encode(&body[7..15]), "702404c020c09811");
        let back = Message::decode(body).expect("parses");
        assert_eq!(back, m);
        assert_eq!(back.encode().expect("encodes"), body);
    }

    #[test]
    fn the_mac_input_is_the_wire_bytes_from_the_mti_to_before_field_64() {
        let m = purchase();
        let body = m.encode().expect("encodes");
        let input = Message::decode(&body)
            .expect("parses")
            .mac_input()
            .expect("encodes");
        assert_eq!(input, &body[5..body.len() - 8]);
    }

    #[test]
    fn an_answer_swaps_the_tpdu_addresses_and_adds_ten_to_the_mti() {
        let a = Message::answer_to(&purchase());
        assert_eq!(a.tpdu, [0x60, 0x00, 0x00, 0x00, 0x01]);
        assert_eq!(a.mti, 210);
    }

    #[test]
    fn malformed_bodies_are_named() {
        let good = purchase().encode().expect("encodes");
        let with = |at: usize, byte: u8| {
            let mut b = good.clone();
            b[at] = byte;
            Message::decode(&b)
        };
        assert_eq!(with(0, 0x61), Err(CodecError::Tpdu));
        assert_eq!(with(5, 0x0A), Err(CodecError::Mti));
        assert_eq!(with(7, 0xF0), Err(CodecError::SecondaryBitmap));
        // Field 1 of byte 8 of the bitmap is bit 57: not in the dialect.
        assert_eq!(with(14, good[14] | 0x80), Err(CodecError::UnknownField(57)));
        // The PAN's length byte, then a PAN digit that is not a digit.
        assert!(matches!(
            with(15, 0x1A),
            Err(CodecError::Field { field: 2, .. })
        ));
        assert!(matches!(
            with(15, 0x20),
            Err(CodecError::Field { field: 2, .. })
        ));
        assert!(matches!(
            with(16, 0x6B),
            Err(CodecError::Field { field: 2, .. })
        ));
        // The PAN's pad nibble must be zero.
        assert!(matches!(
            with(25, 0x8F),
            Err(CodecError::Field { field: 2, .. })
        ));
        let mut longer = good.clone();
        longer.push(0);
        assert_eq!(Message::decode(&longer), Err(CodecError::Trailing(1)));
        assert_eq!(
            Message::decode(&good[..good.len() - 1]),
            Err(CodecError::Truncated(64))
        );
        assert_eq!(Message::decode(&good[..10]), Err(CodecError::Length(10)));
    }

    #[test]
    fn no_prefix_or_noise_makes_the_decoder_panic() {
        let good = purchase().encode().expect("encodes");
        for n in 0..good.len() {
            let _ = Message::decode(&good[..n]);
        }
        // A small LCG: deterministic noise, with a valid header so the field decoders run.
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        for _ in 0..20_000 {
            let mut body = good[..7].to_vec();
            let len = 8 + (state % 120) as usize;
            for _ in 0..len {
                state = state
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1);
                body.push((state >> 33) as u8);
            }
            body[7] &= 0x7F;
            let _ = Message::decode(&body);
        }
    }

    #[test]
    fn encoding_refuses_values_that_do_not_fit_their_field() {
        let mut m = purchase();
        m.set(4, "1000");
        assert!(matches!(
            m.encode(),
            Err(CodecError::Field { field: 4, .. })
        ));
        let mut m = purchase();
        m.set(2, "62220212345678901234");
        assert!(matches!(
            m.encode(),
            Err(CodecError::Field { field: 2, .. })
        ));
        let mut m = purchase();
        m.set(7, "0101120000");
        assert_eq!(m.encode(), Err(CodecError::UnknownField(7)));
    }

    #[test]
    fn read_frame_takes_one_message_and_refuses_an_oversized_header() {
        let mut two = purchase().frame().expect("encodes");
        two.extend(b"after");
        let mut r = two.as_slice();
        let body = read_frame(&mut r).expect("one frame");
        assert_eq!(Message::decode(&body), Ok(purchase()));
        assert_eq!(r, b"after");
        assert_eq!(read_frame(&mut [0x08, 0x01, 0, 0].as_slice()), None);
    }
}
