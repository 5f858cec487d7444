//! Field encoding: `N(w)` digits, `A(w)` GB18030 text, `B` counted hex and `O` optional `B`
//! (only requests carry an `O`, so only the writer has one).
//!
//! A `Writer` builds a request body and refuses, before anything is sent, a value that does not
//! fit its field. A `Reader` walks a reply body by the fixed widths and names the field that does
//! not parse.

use std::fmt::Display;

use encoding_rs::GB18030;

use crate::exports::selfvend::backend::dialect::BackendError;

pub type Result<T> = std::result::Result<T, BackendError>;

/// The largest body a four-digit length header can announce.
pub const MAX_BODY: usize = 9999;
/// The largest byte count a `B` field's three-digit count can carry.
const MAX_BINARY: usize = 999;
const HEX: &[u8; 16] = b"0123456789ABCDEF";

/// Builds one request body: transaction code, terminal id, then the transaction's fields.
pub struct Writer {
    tx: &'static str,
    body: Vec<u8>,
}

impl Writer {
    /// Starts a body for transaction `tx`; calls without a terminal id pass "" (sixteen spaces).
    pub fn new(tx: &'static str, terminal_id: &str) -> Result<Self> {
        let mut w = Writer {
            tx,
            body: tx.as_bytes().to_vec(),
        };
        w.a(16, terminal_id, "terminal id")?;
        Ok(w)
    }

    pub fn tx(&self) -> &'static str {
        self.tx
    }

    /// `N(width)`: zero-padded decimal.
    pub fn n(&mut self, width: usize, value: u64, name: &str) -> Result<&mut Self> {
        let digits = format!("{value:0width$}");
        if digits.len() > width {
            return Err(self.refuse(format_args!("{name} {value} is over {width} digits")));
        }
        self.body.extend_from_slice(digits.as_bytes());
        Ok(self)
    }

    /// `A(width)`: GB18030, right-padded with spaces.
    pub fn a(&mut self, width: usize, text: &str, name: &str) -> Result<&mut Self> {
        let (bytes, _, had_unmappable) = GB18030.encode(text);
        if had_unmappable {
            return Err(self.refuse(format_args!("{name} cannot be written in GB18030")));
        }
        if bytes.len() > width {
            return Err(self.refuse(format_args!(
                "{name} is {} bytes in GB18030; the field holds {width}",
                bytes.len()
            )));
        }
        self.body.extend_from_slice(&bytes);
        self.body
            .resize(self.body.len() + (width - bytes.len()), b' ');
        Ok(self)
    }

    /// `B`: three-digit byte count, then upper-case hex.
    pub fn b(&mut self, data: &[u8], name: &str) -> Result<&mut Self> {
        if data.len() > MAX_BINARY {
            return Err(self.refuse(format_args!(
                "{name} is {} bytes; the field holds {MAX_BINARY}",
                data.len()
            )));
        }
        self.n(3, data.len() as u64, name)?;
        for byte in data {
            self.body.push(HEX[usize::from(byte >> 4)]);
            self.body.push(HEX[usize::from(byte & 0x0f)]);
        }
        Ok(self)
    }

    /// `O`: presence flag, then a `B` when present.
    pub fn o(&mut self, data: Option<&[u8]>, name: &str) -> Result<&mut Self> {
        match data {
            None => self.n(1, 0, name),
            Some(data) => self.n(1, 1, name)?.b(data, name),
        }
    }

    /// The whole frame: the four-digit length header, then the body.
    pub fn finish(self) -> Result<Vec<u8>> {
        let len = self.body.len();
        if len > MAX_BODY {
            return Err(self.refuse(format_args!(
                "the body is {len} bytes; a frame holds {MAX_BODY}"
            )));
        }
        let mut frame = format!("{len:04}").into_bytes();
        frame.extend_from_slice(&self.body);
        Ok(frame)
    }

    /// A value that cannot be sent: nothing has reached the backend.
    fn refuse(&self, what: impl Display) -> BackendError {
        BackendError::Unreachable(format!("{} request: {what}", self.tx))
    }
}

/// Reads a reply body field by field. Errors quote only short code and number fields, never text
/// or binary, so an error never carries reply bytes that could be secret or long.
pub struct Reader<'a> {
    body: &'a [u8],
    pos: usize,
    tx: &'static str,
}

impl<'a> Reader<'a> {
    /// A reader at byte `pos` of a reply body to transaction `tx`.
    pub fn new(body: &'a [u8], pos: usize, tx: &'static str) -> Self {
        Reader { body, pos, tx }
    }

    pub fn position(&self) -> usize {
        self.pos
    }

    /// `N(width)`.
    pub fn n(&mut self, width: usize, name: &str) -> Result<u64> {
        let digits = self.digits(width, name)?;
        digits
            .parse()
            .map_err(|_| self.malformed(format_args!("{name} {digits} is out of range")))
    }

    /// `N(width)` for a field the contract holds in 32 bits.
    pub fn n32(&mut self, width: usize, name: &str) -> Result<u32> {
        let value = self.n(width, name)?;
        u32::try_from(value)
            .map_err(|_| self.malformed(format_args!("{name} {value} is out of range")))
    }

    /// `N(width)` used as a count of bytes or entries.
    pub fn count(&mut self, width: usize, name: &str) -> Result<usize> {
        let value = self.n(width, name)?;
        usize::try_from(value)
            .map_err(|_| self.malformed(format_args!("{name} {value} is out of range")))
    }

    /// `N(width)` kept as its digits, for codes compared as text.
    pub fn digits(&mut self, width: usize, name: &str) -> Result<&'a str> {
        let raw = self.take(width, name)?;
        match std::str::from_utf8(raw) {
            Ok(digits) if digits.bytes().all(|b| b.is_ascii_digit()) => Ok(digits),
            _ => Err(self.malformed(format_args!(
                "{name} {:?} is not {width} digits",
                String::from_utf8_lossy(raw)
            ))),
        }
    }

    /// `A(width)`: decoded from GB18030, trailing spaces trimmed.
    pub fn a(&mut self, width: usize, name: &str) -> Result<String> {
        let raw = self.take(width, name)?;
        let text = GB18030
            .decode_without_bom_handling_and_without_replacement(raw)
            .ok_or_else(|| self.malformed(format_args!("{name} is not valid GB18030")))?;
        let text = text.trim_end_matches(' ');
        // The host refuses control characters in text; name the field here instead.
        if text.chars().any(char::is_control) {
            return Err(self.malformed(format_args!("{name} contains control characters")));
        }
        Ok(text.to_owned())
    }

    /// `B`: three-digit byte count, then hex (either case).
    pub fn b(&mut self, name: &str) -> Result<Vec<u8>> {
        let len = self.count(3, &format!("{name} length"))?;
        let hex = self.take(len * 2, name)?;
        hex.chunks_exact(2)
            .map(|pair| match pair {
                [hi, lo] => Some((nibble(*hi)? << 4) | nibble(*lo)?),
                _ => None,
            })
            .collect::<Option<Vec<u8>>>()
            .ok_or_else(|| self.malformed(format_args!("{name} is not hex")))
    }

    /// A one-byte `0`/`1` field, whether typed `N(1)` or `A(1)`.
    pub fn flag(&mut self, name: &str) -> Result<bool> {
        match self.take(1, name)? {
            b"0" => Ok(false),
            b"1" => Ok(true),
            other => Err(self.malformed(format_args!(
                "{name} {:?} is not 0 or 1",
                String::from_utf8_lossy(other)
            ))),
        }
    }

    pub fn malformed(&self, what: impl Display) -> BackendError {
        BackendError::MalformedReply(format!("{} reply: {what}", self.tx))
    }

    /// The next `width` bytes, or an error naming the field the body is too short for.
    fn take(&mut self, width: usize, name: &str) -> Result<&'a [u8]> {
        let end = self.pos.saturating_add(width);
        match self.body.get(self.pos..end) {
            Some(field) => {
                self.pos = end;
                Ok(field)
            }
            None => Err(self.malformed(format_args!(
                "the body ends before {name} ({} bytes; {name} needs {width} from byte {})",
                self.body.len(),
                self.pos
            ))),
        }
    }
}

fn nibble(hex: u8) -> Option<u8> {
    char::from(hex)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}
