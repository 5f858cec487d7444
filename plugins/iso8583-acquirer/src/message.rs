//! CUP-8583 messages: an MTI and its fields by number, framed by a two-byte length and a TPDU
//! (`docs/acquirers/iso8583.md`, "Framing" and "Fields used").
//!
//! A request is built field by field and framed once, its MAC computed last over what precedes
//! it. An answer is parsed whole, each field its bitmap marks read by the field table, so that
//! a field the table lacks, a secondary bitmap, a short field or bytes after the last field are
//! refused with the field named before anything in the answer is looked at.

use std::collections::BTreeMap;
use std::fmt::{self, Display};

use crate::selfvend::payment::types::AcquirerError;
use crate::wire::{self, BITMAP_LEN, Cursor, FieldError, Format};

pub type Result<T> = std::result::Result<T, AcquirerError>;

/// Field 64, which carries the MAC of everything from the MTI up to it.
pub const MAC: u8 = 64;
pub const MAC_LEN: usize = 8;
/// The most bytes a length header may announce.
const MAX_LEN: usize = 2048;
const HEADER_LEN: usize = 2;
const TPDU_LEN: usize = 5;
const MTI_LEN: usize = 2;
/// TPDU, MTI and bitmap: the least a message can be.
const MIN_LEN: usize = TPDU_LEN + MTI_LEN + BITMAP_LEN;
/// Protocol id `60`, destination `0001` (the acquirer), source `0000` (the terminal).
const REQUEST_TPDU: [u8; TPDU_LEN] = [0x60, 0x00, 0x01, 0x00, 0x00];
/// An answer's TPDU swaps destination and source.
const ANSWER_TPDU: [u8; TPDU_LEN] = [0x60, 0x00, 0x00, 0x00, 0x01];

/// Every field CUP-8583 uses, with its name for errors. An answer with any other is refused.
const FIELDS: &[(u8, &str, Format)] = &[
    (2, "PAN", Format::llvar_n(19)),
    (3, "processing code", Format::n(6)),
    (4, "amount", Format::n(12)),
    (11, "STAN", Format::n(6)),
    (12, "local time", Format::n(6)),
    (13, "local date", Format::n(4)),
    (14, "card expiry", Format::n(4)),
    (22, "POS entry mode", Format::n(3)),
    (25, "POS condition code", Format::n(2)),
    (26, "PIN capture code", Format::n(2)),
    (35, "Track 2 equivalent data", Format::llvar_z(37)),
    (37, "retrieval reference number", Format::an(12)),
    (38, "authorization code", Format::an(6)),
    (39, "response code", Format::an(2)),
    (41, "terminal id", Format::ans(8)),
    (42, "merchant id", Format::ans(15)),
    (48, "settlement totals", Format::lllvar_ans(62)),
    (49, "currency", Format::an(3)),
    (52, "PIN block", Format::b(8)),
    (53, "security control", Format::n(16)),
    (60, "batch", Format::lllvar_ans(11)),
    (62, "working keys", Format::lllvar_b(40)),
    (MAC, "MAC", Format::b(MAC_LEN)),
];

fn format_of(number: u8) -> Option<Format> {
    FIELDS
        .iter()
        .find(|(n, _, _)| *n == number)
        .map(|&(_, _, format)| format)
}

/// A field's name for an error message.
pub fn field_name(number: u8) -> &'static str {
    if number == 1 {
        return "secondary bitmap";
    }
    FIELDS
        .iter()
        .find(|(n, _, _)| *n == number)
        .map_or("unknown", |&(_, name, _)| name)
}

/// A request value that cannot be sent. Nothing has reached the acquirer, so it is
/// `unreachable`, and the text names the field.
pub fn unsendable(mti: Mti, field: u8, what: impl Display) -> AcquirerError {
    AcquirerError::Unreachable(format!(
        "{mti} request: field {field} ({}): {what}",
        field_name(field)
    ))
}

/// A message type indicator, e.g. `Mti(200)` for `0200`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mti(u16);

impl Mti {
    pub const SIGN_ON: Mti = Mti(800);
    pub const PURCHASE: Mti = Mti(200);
    pub const REVERSAL: Mti = Mti(400);
    pub const SETTLEMENT: Mti = Mti(500);

    /// The MTI of the answer to this request: 0200 is answered by 0210.
    pub fn answer(self) -> Mti {
        Mti(self.0 + 10)
    }

    /// Sign-on and its answer carry no MAC: the MAC key is what a sign-on fetches.
    pub fn is_maced(self) -> bool {
        !matches!(self.0, 800 | 810)
    }

    fn to_bcd(self) -> Vec<u8> {
        wire::pack_digits(&self.to_string()).expect("an MTI is four digits")
    }
}

impl Display for Mti {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}", self.0)
    }
}

/// An MTI and its fields by number, each held as `wire` holds values. No `Debug`: a message
/// holds a PAN, Track 2 data or a PIN block, which must never be printed.
pub struct Message {
    mti: Mti,
    fields: BTreeMap<u8, Vec<u8>>,
}

impl Message {
    pub fn new(mti: Mti) -> Self {
        Message {
            mti,
            fields: BTreeMap::new(),
        }
    }

    pub fn mti(&self) -> Mti {
        self.mti
    }

    /// Sets field `number`; the value is checked against the field's format when framed.
    pub fn set(&mut self, number: u8, value: impl Into<Vec<u8>>) -> &mut Self {
        self.fields.insert(number, value.into());
        self
    }

    pub fn field(&self, number: u8) -> Option<&[u8]> {
        self.fields.get(&number).map(Vec::as_slice)
    }

    /// The request as sent: length, TPDU, MTI, bitmap, the fields in order and, for every MTI
    /// that carries one, field 64 with the MAC that `mac` computes over the bytes from the MTI to
    /// the end of the last field before it. A value that does not fit its field is refused
    /// before `mac` is asked.
    pub fn frame(&self, mac: impl FnOnce(&[u8]) -> Result<[u8; MAC_LEN]>) -> Result<Vec<u8>> {
        if self.fields.contains_key(&MAC) {
            return Err(unsendable(
                self.mti,
                MAC,
                "is computed when the request is framed",
            ));
        }
        let maced = self.mti.is_maced();
        let numbers = self.fields.keys().copied().chain(maced.then_some(MAC));
        let bitmap = wire::bitmap(numbers).map_err(|e| self.unsendable(e))?;
        let mut frame = vec![0; HEADER_LEN];
        frame.extend_from_slice(&REQUEST_TPDU);
        let mti_at = frame.len();
        frame.extend(self.mti.to_bcd());
        frame.extend_from_slice(&bitmap);
        for (&number, value) in &self.fields {
            let format = format_of(number)
                .ok_or_else(|| unsendable(self.mti, number, "is not a field CUP-8583 uses"))?;
            format
                .encode(number, value, &mut frame)
                .map_err(|e| self.unsendable(e))?;
        }
        let len = frame.len() - HEADER_LEN + if maced { MAC_LEN } else { 0 };
        let header = u16::try_from(len)
            .ok()
            .filter(|_| len <= MAX_LEN)
            .ok_or_else(|| {
                AcquirerError::Unreachable(format!(
                    "{} request: it is {len} bytes; a message holds at most {MAX_LEN}",
                    self.mti
                ))
            })?;
        frame[..HEADER_LEN].copy_from_slice(&header.to_be_bytes());
        if maced {
            let mac = mac(frame.get(mti_at..).unwrap_or_default())?;
            frame.extend_from_slice(&mac);
        }
        Ok(frame)
    }

    fn unsendable(&self, e: FieldError) -> AcquirerError {
        unsendable(self.mti, e.field, e.problem)
    }
}

/// The byte count an answer's length header announces, checked before it is read.
pub fn announced_len(answer: Mti, header: &[u8]) -> Result<usize> {
    match *header {
        [hi, lo] => {
            let len = usize::from(u16::from_be_bytes([hi, lo]));
            if (MIN_LEN..=MAX_LEN).contains(&len) {
                Ok(len)
            } else {
                Err(malformed(
                    answer,
                    format_args!(
                        "the length header says {len} bytes; a message is {MIN_LEN} to {MAX_LEN}"
                    ),
                ))
            }
        }
        _ => Err(malformed(
            answer,
            format_args!("the length header is {} bytes, not 2", header.len()),
        )),
    }
}

fn malformed(answer: Mti, what: impl Display) -> AcquirerError {
    AcquirerError::MalformedReply(format!("{answer} answer: {what}"))
}

/// An answer, parsed. Nothing in it is to be believed until its MAC has been verified.
pub struct Answer {
    message: Message,
    /// The answer from its MTI on: what its MAC covers, and the MAC.
    body: Vec<u8>,
    /// Where field 64 starts in `body`, when the answer has one.
    mac_at: Option<usize>,
}

impl Answer {
    /// Parses `frame` (length header included) as the answer `mti`. Everything the bitmap marks
    /// must be in the field table and fit its format, and nothing may follow the last field.
    pub fn parse(mti: Mti, frame: Vec<u8>) -> Result<Answer> {
        let mut input = Cursor::new(&frame);
        let header = input.take(HEADER_LEN).unwrap_or_default();
        let len = announced_len(mti, header)?;
        if input.remaining() != len {
            return Err(malformed(
                mti,
                format_args!(
                    "the length header says {len} bytes, and {} follow it",
                    input.remaining()
                ),
            ));
        }
        let tpdu = input.take(TPDU_LEN).unwrap_or_default();
        if tpdu != ANSWER_TPDU {
            return Err(malformed(
                mti,
                format_args!("TPDU {} is not 60 0000 0001", hex(tpdu)),
            ));
        }
        let mti_at = input.position();
        let received = input
            .take(MTI_LEN)
            .and_then(wire::unpack_digits)
            .ok_or_else(|| malformed(mti, "the MTI is not BCD"))?;
        if received != mti.to_string() {
            return Err(malformed(mti, format_args!("MTI {received} is not {mti}")));
        }
        let bitmap: [u8; BITMAP_LEN] = input
            .take(BITMAP_LEN)
            .and_then(|bytes| bytes.try_into().ok())
            .ok_or_else(|| malformed(mti, "the message ends in the bitmap"))?;
        let field_error = |e: FieldError| {
            malformed(
                mti,
                format_args!("field {} ({}): {}", e.field, field_name(e.field), e.problem),
            )
        };
        let numbers = wire::bitmap_fields(&bitmap).map_err(field_error)?;
        let mut message = Message::new(mti);
        let mut mac_at = None;
        for number in numbers {
            let format = format_of(number).ok_or_else(|| {
                malformed(
                    mti,
                    format_args!(
                        "the bitmap marks field {number}, which is not a field CUP-8583 uses"
                    ),
                )
            })?;
            if number == MAC {
                mac_at = Some(input.position());
            }
            let value = format.decode(number, &mut input).map_err(field_error)?;
            message.set(number, value);
        }
        if input.remaining() > 0 {
            return Err(malformed(
                mti,
                format_args!("{} bytes follow the last field", input.remaining()),
            ));
        }
        let mac_at = mac_at.map(|at| at - mti_at);
        let body = frame.get(mti_at..).unwrap_or_default().to_vec();
        Ok(Answer {
            message,
            body,
            mac_at,
        })
    }

    pub fn mti(&self) -> Mti {
        self.message.mti
    }

    pub fn field(&self, number: u8) -> Option<&[u8]> {
        self.message.field(number)
    }

    /// Field `number`, which the answer must have.
    pub fn binary(&self, number: u8) -> Result<&[u8]> {
        self.field(number)
            .ok_or_else(|| self.field_error(number, "is missing"))
    }

    /// A digit or text field, which the answer must have.
    pub fn text(&self, number: u8) -> Result<&str> {
        std::str::from_utf8(self.binary(number)?)
            .map_err(|_| self.field_error(number, "is not ASCII"))
    }

    /// The bytes the acquirer's MAC covers (from the MTI to the end of the last field before
    /// 64) and the MAC, when the answer carries one.
    pub fn mac(&self) -> Option<(&[u8], &[u8])> {
        let data = self.body.get(..self.mac_at?)?;
        Some((data, self.field(MAC)?))
    }

    /// Checks that field `number` is the request's, as an answer to it must repeat it.
    pub fn echoes(&self, request: &Message, number: u8) -> Result<()> {
        match self.field(number) {
            None => Err(self.field_error(number, "is missing")),
            Some(value) if Some(value) == request.field(number) => Ok(()),
            Some(_) => Err(self.field_error(number, "is not the request's")),
        }
    }

    /// As `echoes`, for a field an answer may leave out.
    pub fn echoes_if_present(&self, request: &Message, number: u8) -> Result<()> {
        match self.field(number) {
            None => Ok(()),
            Some(_) => self.echoes(request, number),
        }
    }

    /// A `malformed-reply` naming field `number`.
    pub fn field_error(&self, number: u8, what: impl Display) -> AcquirerError {
        malformed(
            self.mti(),
            format_args!("field {number} ({}) {what}", field_name(number)),
        )
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect()
}
