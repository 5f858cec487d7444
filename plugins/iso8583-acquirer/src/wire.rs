//! CUP-8583 field encodings (`docs/acquirers/iso8583.md`, "Field encodings") and the bitmap.
//!
//! A field's value is held as bytes whatever its encoding: the ASCII digits of an `n` or `z`
//! field (`D` for the Track 2 separator), the bytes themselves of an `an`, `ans` or `b` field.
//! Encoding checks a value against its format before anything is sent; decoding takes one field
//! off the front of a message. Errors name the field by number and never quote its value, so a
//! PAN or a PIN block cannot reach a log through an error.

use std::fmt;

/// The primary bitmap's size. Bit 1 (a secondary bitmap) is never set, so it is the only one.
pub const BITMAP_LEN: usize = 8;

/// A field that does not fit its format: the field's number and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub field: u8,
    pub problem: String,
}

impl FieldError {
    fn new(field: u8, problem: impl Into<String>) -> Self {
        FieldError {
            field,
            problem: problem.into(),
        }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "field {}: {}", self.field, self.problem)
    }
}

/// How a field is written: its length rule and its content, named as the spec names them
/// (`Format::llvar_n(19)` is `LLVAR n ..19`). Widths count digits for `n` and `z`, bytes for
/// the rest (so `b 64`, 64 bits, is `Format::b(8)`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Format {
    length: Length,
    content: Content,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Length {
    /// Exactly this many digits or bytes.
    Fixed(usize),
    /// A one-byte BCD count (`LLVAR`), at most this many.
    Ll(usize),
    /// A two-byte BCD count (`LLLVAR`), at most this many.
    Lll(usize),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Content {
    /// `n`: decimal digits, packed BCD.
    Digits,
    /// `z`: digits and the separator `D`, packed BCD.
    Track,
    /// `an`: ASCII letters and digits; spaces are accepted too, as the padding acquirers use.
    Alphanumeric,
    /// `ans`: printable ASCII.
    Text,
    /// `b`: any bytes.
    Binary,
}

impl Format {
    /// `n w`: right-aligned, a zero nibble in front of an odd count.
    pub const fn n(width: usize) -> Self {
        Format::new(Length::Fixed(width), Content::Digits)
    }

    /// `LLVAR n ..max`: left-aligned, a zero nibble after an odd count.
    pub const fn llvar_n(max: usize) -> Self {
        Format::new(Length::Ll(max), Content::Digits)
    }

    /// `LLVAR z ..max`: as `llvar_n`, with `D` allowed.
    pub const fn llvar_z(max: usize) -> Self {
        Format::new(Length::Ll(max), Content::Track)
    }

    /// `an w`.
    pub const fn an(width: usize) -> Self {
        Format::new(Length::Fixed(width), Content::Alphanumeric)
    }

    /// `ans w`.
    pub const fn ans(width: usize) -> Self {
        Format::new(Length::Fixed(width), Content::Text)
    }

    /// `b` of `bytes` bytes.
    pub const fn b(bytes: usize) -> Self {
        Format::new(Length::Fixed(bytes), Content::Binary)
    }

    /// `LLLVAR ans ..max`.
    pub const fn lllvar_ans(max: usize) -> Self {
        Format::new(Length::Lll(max), Content::Text)
    }

    /// `LLLVAR b ..max`.
    pub const fn lllvar_b(max: usize) -> Self {
        Format::new(Length::Lll(max), Content::Binary)
    }

    const fn new(length: Length, content: Content) -> Self {
        Format { length, content }
    }

    /// Appends field `field` holding `value` to `out`, or says why `value` does not fit.
    pub fn encode(self, field: u8, value: &[u8], out: &mut Vec<u8>) -> Result<(), FieldError> {
        let count = value.len();
        let unit = self.content.unit();
        match self.length {
            Length::Fixed(width) if count != width => {
                return Err(FieldError::new(
                    field,
                    format!("is {count} {unit}; the field is {width}"),
                ));
            }
            Length::Ll(max) | Length::Lll(max) if count > max => {
                return Err(FieldError::new(
                    field,
                    format!("is {count} {unit}; the field holds at most {max}"),
                ));
            }
            _ => {}
        }
        if !value.iter().all(|&b| self.content.allows(b)) {
            return Err(FieldError::new(
                field,
                format!("holds a character that is not {}", self.content.describe()),
            ));
        }
        if let Some(digits) = self.length.prefix_digits() {
            let prefix = pack_digits(&format!("{count:0digits$}"))
                .filter(|prefix| prefix.len() * 2 == digits)
                .ok_or_else(|| {
                    FieldError::new(field, format!("its length {count} is over {digits} digits"))
                })?;
            out.extend_from_slice(&prefix);
        }
        if self.content.is_packed() {
            // Fixed `n` is right-aligned, variable `n` and `z` left-aligned.
            let mut nibbles: Vec<u8> = value.iter().filter_map(|&c| to_nibble(c)).collect();
            if nibbles.len() % 2 == 1 {
                match self.length {
                    Length::Fixed(_) => nibbles.insert(0, 0),
                    Length::Ll(_) | Length::Lll(_) => nibbles.push(0),
                }
            }
            out.extend(nibbles.chunks_exact(2).map(|pair| (pair[0] << 4) | pair[1]));
        } else {
            out.extend_from_slice(value);
        }
        Ok(())
    }

    /// Takes field `field` off the front of `input` and returns its value.
    pub fn decode(self, field: u8, input: &mut Cursor<'_>) -> Result<Vec<u8>, FieldError> {
        let count = match self.length {
            Length::Fixed(width) => width,
            Length::Ll(max) | Length::Lll(max) => {
                let digits = self.length.prefix_digits().unwrap_or(0);
                let raw = take(field, input, digits / 2, "its length")?;
                let count: usize = unpack_digits(raw)
                    .and_then(|digits| digits.parse().ok())
                    .ok_or_else(|| FieldError::new(field, "its length is not BCD"))?;
                if count > max {
                    return Err(FieldError::new(
                        field,
                        format!(
                            "its length is {count} {}; the field holds at most {max}",
                            self.content.unit()
                        ),
                    ));
                }
                count
            }
        };
        if !self.content.is_packed() {
            let raw = take(field, input, count, "its value")?;
            if !raw.iter().all(|&b| self.content.allows(b)) {
                return Err(FieldError::new(
                    field,
                    format!("holds a byte that is not {}", self.content.describe()),
                ));
            }
            return Ok(raw.to_vec());
        }
        let raw = take(field, input, count.div_ceil(2), "its value")?;
        let nibbles: Vec<u8> = raw.iter().flat_map(|&b| [b >> 4, b & 0x0f]).collect();
        let digits = if count % 2 == 0 {
            &nibbles[..]
        } else {
            let split = match self.length {
                Length::Fixed(_) => nibbles.split_first(),
                Length::Ll(_) | Length::Lll(_) => nibbles.split_last(),
            };
            match split {
                Some((0, digits)) => digits,
                _ => return Err(FieldError::new(field, "its pad nibble is not 0")),
            }
        };
        digits
            .iter()
            .map(|&nibble| self.content.char_of(nibble))
            .collect::<Option<Vec<u8>>>()
            .ok_or_else(|| {
                FieldError::new(
                    field,
                    format!("holds a nibble that is not {}", self.content.describe()),
                )
            })
    }
}

impl Length {
    /// How many BCD digits announce a variable field's length.
    fn prefix_digits(self) -> Option<usize> {
        match self {
            Length::Fixed(_) => None,
            Length::Ll(_) => Some(2),
            Length::Lll(_) => Some(4),
        }
    }
}

impl Content {
    fn is_packed(self) -> bool {
        matches!(self, Content::Digits | Content::Track)
    }

    fn allows(self, byte: u8) -> bool {
        match self {
            Content::Digits => byte.is_ascii_digit(),
            Content::Track => byte.is_ascii_digit() || byte == b'D',
            Content::Alphanumeric => byte.is_ascii_alphanumeric() || byte == b' ',
            Content::Text => byte == b' ' || byte.is_ascii_graphic(),
            Content::Binary => true,
        }
    }

    /// The character a packed nibble stands for, if this content has one for it.
    fn char_of(self, nibble: u8) -> Option<u8> {
        match (self, nibble) {
            (Content::Digits | Content::Track, 0..=9) => Some(b'0' + nibble),
            (Content::Track, 0xd) => Some(b'D'),
            _ => None,
        }
    }

    fn unit(self) -> &'static str {
        if self.is_packed() { "digits" } else { "bytes" }
    }

    fn describe(self) -> &'static str {
        match self {
            Content::Digits => "a decimal digit",
            Content::Track => "a digit or the separator D",
            Content::Alphanumeric => "an ASCII letter, digit or space",
            Content::Text => "printable ASCII",
            Content::Binary => "a byte",
        }
    }
}

/// The nibble of a digit or of the Track 2 separator; callers have checked the character.
fn to_nibble(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'D' => Some(0xd),
        _ => None,
    }
}

/// Packs an even number of decimal digits as BCD (an MTI, a length prefix).
pub fn pack_digits(digits: &str) -> Option<Vec<u8>> {
    if digits.len() % 2 == 1 || !digits.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    Some(
        digits
            .as_bytes()
            .chunks_exact(2)
            .map(|pair| ((pair[0] - b'0') << 4) | (pair[1] - b'0'))
            .collect(),
    )
}

/// The decimal digits packed in `bytes`, if every nibble is one.
pub fn unpack_digits(bytes: &[u8]) -> Option<String> {
    bytes
        .iter()
        .flat_map(|&b| [b >> 4, b & 0x0f])
        .map(|nibble| (nibble <= 9).then(|| char::from(b'0' + nibble)))
        .collect()
}

/// The primary bitmap marking `fields`. Only 2 to 64 can be marked: bit 1 would announce a
/// secondary bitmap, which CUP-8583 never uses.
pub fn bitmap(fields: impl IntoIterator<Item = u8>) -> Result<[u8; BITMAP_LEN], FieldError> {
    let mut bitmap = [0; BITMAP_LEN];
    for field in fields {
        if !(2..=64).contains(&field) {
            return Err(FieldError::new(
                field,
                "only fields 2 to 64 fit the primary bitmap",
            ));
        }
        let bit = usize::from(field - 1);
        bitmap[bit / 8] |= 0x80 >> (bit % 8);
    }
    Ok(bitmap)
}

/// The fields a primary bitmap marks, in order. Bit 1 is refused: a secondary bitmap is never
/// sent, so one announced means the message is not CUP-8583.
pub fn bitmap_fields(bitmap: &[u8; BITMAP_LEN]) -> Result<Vec<u8>, FieldError> {
    if bitmap[0] & 0x80 != 0 {
        return Err(FieldError::new(
            1,
            "bit 1 is set, but CUP-8583 has no secondary bitmap",
        ));
    }
    Ok((2..=64u8)
        .filter(|&field| {
            let bit = usize::from(field - 1);
            bitmap[bit / 8] & (0x80 >> (bit % 8)) != 0
        })
        .collect())
}

/// Reads a message front to back.
pub struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        Cursor { bytes, pos: 0 }
    }

    pub fn position(&self) -> usize {
        self.pos
    }

    pub fn remaining(&self) -> usize {
        self.bytes.len().saturating_sub(self.pos)
    }

    /// The next `len` bytes, or `None` (and nothing taken) when fewer are left.
    pub fn take(&mut self, len: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(len)?;
        let taken = self.bytes.get(self.pos..end)?;
        self.pos = end;
        Some(taken)
    }
}

/// The next `len` bytes of field `field`, or an error saying the message ends first.
fn take<'a>(
    field: u8,
    input: &mut Cursor<'a>,
    len: usize,
    what: &str,
) -> Result<&'a [u8], FieldError> {
    let left = input.remaining();
    input.take(len).ok_or_else(|| {
        FieldError::new(
            field,
            format!("the message ends in {what}: {len} bytes needed, {left} left"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(format: Format, field: u8, value: &str) -> Result<Vec<u8>, FieldError> {
        let mut out = Vec::new();
        format.encode(field, value.as_bytes(), &mut out)?;
        Ok(out)
    }

    fn decode(format: Format, field: u8, bytes: &[u8]) -> Result<(String, usize), FieldError> {
        let mut cursor = Cursor::new(bytes);
        let value = format.decode(field, &mut cursor)?;
        Ok((
            String::from_utf8(value).expect("test values are ASCII"),
            cursor.remaining(),
        ))
    }

    #[test]
    fn fixed_numeric_is_right_aligned_bcd() {
        assert_eq!(
            encode(Format::n(6), 11, "000123"),
            Ok(vec![0x00, 0x01, 0x23])
        );
        assert_eq!(encode(Format::n(3), 22, "051"), Ok(vec![0x00, 0x51]));
        assert_eq!(
            decode(Format::n(12), 4, &[0, 0, 0, 0, 0x12, 0x34, 0xff]),
            Ok(("000000001234".into(), 1))
        );
        assert_eq!(
            decode(Format::n(3), 22, &[0x00, 0x52]),
            Ok(("052".into(), 0))
        );
    }

    #[test]
    fn fixed_numeric_refuses_wrong_widths_letters_and_pad() {
        assert_eq!(
            encode(Format::n(6), 11, "1000000").unwrap_err().to_string(),
            "field 11: is 7 digits; the field is 6"
        );
        assert_eq!(
            encode(Format::n(4), 14, "30A2").unwrap_err().to_string(),
            "field 14: holds a character that is not a decimal digit"
        );
        assert_eq!(
            decode(Format::n(3), 22, &[0x10, 0x51])
                .unwrap_err()
                .to_string(),
            "field 22: its pad nibble is not 0"
        );
        assert_eq!(
            decode(Format::n(4), 13, &[0x11, 0x2a])
                .unwrap_err()
                .to_string(),
            "field 13: holds a nibble that is not a decimal digit"
        );
    }

    #[test]
    fn llvar_numeric_is_counted_in_digits_and_left_aligned() {
        let pan = "6222021234567890128";
        let wire = [
            0x19, 0x62, 0x22, 0x02, 0x12, 0x34, 0x56, 0x78, 0x90, 0x12, 0x80,
        ];
        assert_eq!(encode(Format::llvar_n(19), 2, pan), Ok(wire.to_vec()));
        assert_eq!(decode(Format::llvar_n(19), 2, &wire), Ok((pan.into(), 0)));
        assert_eq!(
            encode(Format::llvar_n(19), 2, "62220212345678901280")
                .unwrap_err()
                .to_string(),
            "field 2: is 20 digits; the field holds at most 19"
        );
        assert_eq!(
            decode(Format::llvar_n(19), 2, &[0x20, 0x62])
                .unwrap_err()
                .to_string(),
            "field 2: its length is 20 digits; the field holds at most 19"
        );
        assert_eq!(
            decode(Format::llvar_n(19), 2, &[0x1a])
                .unwrap_err()
                .to_string(),
            "field 2: its length is not BCD"
        );
        assert_eq!(
            decode(Format::llvar_n(19), 2, &[0x03, 0x12, 0x31])
                .unwrap_err()
                .to_string(),
            "field 2: its pad nibble is not 0"
        );
    }

    #[test]
    fn llvar_track_carries_the_separator() {
        let track = "6222021234567890128D30122011234567890";
        let wire = encode(Format::llvar_z(37), 35, track).expect("fits");
        assert_eq!(&wire[..3], &[0x37, 0x62, 0x22]);
        assert_eq!(wire[9..12], [0x12, 0x8d, 0x30]);
        assert_eq!(wire.last(), Some(&0x00));
        assert_eq!(
            decode(Format::llvar_z(37), 35, &wire),
            Ok((track.into(), 0))
        );
        assert_eq!(
            encode(Format::llvar_n(19), 2, "6222D")
                .unwrap_err()
                .to_string(),
            "field 2: holds a character that is not a decimal digit"
        );
        assert_eq!(
            decode(Format::llvar_z(37), 35, &[0x02, 0x1f])
                .unwrap_err()
                .to_string(),
            "field 35: holds a nibble that is not a digit or the separator D"
        );
    }

    #[test]
    fn lllvar_is_counted_in_bytes() {
        assert_eq!(
            encode(Format::lllvar_ans(11), 60, "22000001"),
            Ok(b"\x00\x0822000001".to_vec())
        );
        assert_eq!(
            decode(Format::lllvar_ans(11), 60, b"\x00\x1100000001003"),
            Ok(("00000001003".into(), 0))
        );
        assert_eq!(
            decode(Format::lllvar_b(40), 62, b"\x00\x41")
                .unwrap_err()
                .to_string(),
            "field 62: its length is 41 bytes; the field holds at most 40"
        );
        assert_eq!(
            decode(Format::lllvar_ans(62), 48, b"\x00\x02A\x07")
                .unwrap_err()
                .to_string(),
            "field 48: holds a byte that is not printable ASCII"
        );
    }

    #[test]
    fn fixed_text_and_binary_are_exact() {
        assert_eq!(encode(Format::an(2), 39, "A0"), Ok(b"A0".to_vec()));
        assert_eq!(
            encode(Format::ans(8), 41, "KIOSK01")
                .unwrap_err()
                .to_string(),
            "field 41: is 7 bytes; the field is 8"
        );
        assert_eq!(
            decode(Format::an(2), 39, b"0-").unwrap_err().to_string(),
            "field 39: holds a byte that is not an ASCII letter, digit or space"
        );
        let mut cursor = Cursor::new(&[1, 2, 3, 4, 5, 6, 7, 8, 9]);
        assert_eq!(
            Format::b(8).decode(64, &mut cursor),
            Ok(vec![1, 2, 3, 4, 5, 6, 7, 8])
        );
        assert_eq!(cursor.remaining(), 1);
    }

    #[test]
    fn truncation_names_the_field() {
        assert_eq!(
            decode(Format::n(12), 4, &[0, 0, 0])
                .unwrap_err()
                .to_string(),
            "field 4: the message ends in its value: 6 bytes needed, 3 left"
        );
        assert_eq!(
            decode(Format::lllvar_b(40), 62, &[0x00])
                .unwrap_err()
                .to_string(),
            "field 62: the message ends in its length: 2 bytes needed, 1 left"
        );
    }

    #[test]
    fn bitmap_marks_fields_from_the_top_bit() {
        let map = bitmap([2, 3, 4, 11, 64]).expect("all fit");
        assert_eq!(map, [0x70, 0x20, 0, 0, 0, 0, 0, 0x01]);
        assert_eq!(bitmap_fields(&map), Ok(vec![2, 3, 4, 11, 64]));
        assert_eq!(
            bitmap([1]).unwrap_err().to_string(),
            "field 1: only fields 2 to 64 fit the primary bitmap"
        );
        assert_eq!(
            bitmap_fields(&[0x80, 0, 0, 0, 0, 0, 0, 0])
                .unwrap_err()
                .field,
            1
        );
    }

    #[test]
    fn digits_pack_in_pairs() {
        assert_eq!(pack_digits("0210"), Some(vec![0x02, 0x10]));
        assert_eq!(pack_digits("021"), None);
        assert_eq!(unpack_digits(&[0x08, 0x10]).as_deref(), Some("0810"));
        assert_eq!(unpack_digits(&[0x0a]), None);
    }
}
