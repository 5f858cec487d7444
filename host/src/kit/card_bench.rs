//! The kit's reader: a virtual card behind the host's `CardChannel`, with the power cut, the
//! faults and the trace the kit's checks need, and the utility's side of a write.

use std::sync::{Arc, Mutex, MutexGuard};

use crate::card::{
    AuthRequest, AuthorityError, CardAuthority, CardChannel, ChannelError, ReaderKind,
};
use crate::plugin::{SharedAuthority, SharedCard};

use super::memory_card::{Answer, MemoryCard};
use super::spaced_hex;

/// A card as a scenario starts with it, and its issuer.
pub type FreshCard = (Box<dyn VirtualCard>, Box<dyn Issuer>);

/// A card the kit can put in its reader.
pub trait VirtualCard: Send {
    fn atr(&self) -> Vec<u8>;
    fn reader_kind(&self) -> ReaderKind;
    /// A new insert: what the card held in RAM is gone, what it wrote stays.
    fn power_on(&mut self);
    /// One command; `Err` is the simulator itself failing.
    fn command(&mut self, apdu: &[u8]) -> Result<Answer, String>;
    /// The chip, when the kit plays a memory card (for its witnesses: bytes, PSC tries).
    fn as_memory(&self) -> Option<&MemoryCard> {
        None
    }
    fn as_memory_mut(&mut self) -> Option<&mut MemoryCard> {
        None
    }
}

impl VirtualCard for MemoryCard {
    fn atr(&self) -> Vec<u8> {
        MemoryCard::atr(self)
    }

    fn reader_kind(&self) -> ReaderKind {
        ReaderKind::MemoryCard
    }

    fn power_on(&mut self) {
        MemoryCard::power_on(self)
    }

    fn command(&mut self, apdu: &[u8]) -> Result<Answer, String> {
        Ok(MemoryCard::command(self, apdu))
    }

    fn as_memory(&self) -> Option<&MemoryCard> {
        Some(self)
    }

    fn as_memory_mut(&mut self) -> Option<&mut MemoryCard> {
        Some(self)
    }
}

/// A CPU card that is nobody's: it answers every SELECT "file not found".
pub struct ForeignCpuCard;

impl VirtualCard for ForeignCpuCard {
    fn atr(&self) -> Vec<u8> {
        vec![
            0x3B, 0x68, 0x00, 0x00, 0x4B, 0x49, 0x54, 0x2D, 0x43, 0x50, 0x55,
        ]
    }

    fn reader_kind(&self) -> ReaderKind {
        ReaderKind::Contact
    }

    fn power_on(&mut self) {}

    fn command(&mut self, apdu: &[u8]) -> Result<Answer, String> {
        let sw: u16 = match apdu {
            [0x00, 0xA4, ..] => 0x6A82,
            [0xFF, ..] => 0x6E00,
            _ => 0x6D00,
        };
        Ok(Answer::Response(sw.to_be_bytes().to_vec()))
    }
}

/// What the reader does to one answer instead of passing it on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// One byte, too short for a status word.
    Short,
    /// Bytes that mean nothing, status word included.
    Garbage,
    /// `6F 00`: the card failed with no precise diagnosis.
    BadStatus,
    /// The card is pulled before it answers.
    Removed,
    /// The card carries the command out, then is pulled before its answer arrives.
    PulledAfter,
    /// The reader itself fails.
    ReaderFault,
    /// The host refuses the command (as it does one too long, or too many in a call).
    HostRefused,
}

impl Fault {
    pub const ALL: [Fault; 7] = [
        Fault::Short,
        Fault::Garbage,
        Fault::BadStatus,
        Fault::Removed,
        Fault::PulledAfter,
        Fault::ReaderFault,
        Fault::HostRefused,
    ];

    pub fn describe(self) -> &'static str {
        match self {
            Fault::Short => "a 1-byte answer",
            Fault::Garbage => "a garbage answer",
            Fault::BadStatus => "status 6F00",
            Fault::Removed => "the card pulled",
            Fault::PulledAfter => "the card pulled after it carried the command out",
            Fault::ReaderFault => "a reader fault",
            Fault::HostRefused => "the host refusing the command",
        }
    }
}

/// The reader's state, shared between the channel the plugin holds and the kit.
pub struct Bench {
    pub card: Box<dyn VirtualCard>,
    powered: bool,
    /// Commands since the last `mark`.
    pub apdus: u32,
    /// Cut the power instead of carrying command number `n` (0-based, since `mark`).
    pub cut_before_apdu: Option<u32>,
    /// Replace the answer to command number `n` (0-based, since `mark`).
    pub fault: Option<(u32, Fault)>,
    trace: Vec<String>,
}

const TRACE_LINES: usize = 400;

impl Bench {
    pub fn new(card: Box<dyn VirtualCard>) -> Arc<Mutex<Bench>> {
        Arc::new(Mutex::new(Bench {
            card,
            powered: true,
            apdus: 0,
            cut_before_apdu: None,
            fault: None,
            trace: Vec::new(),
        }))
    }

    /// Starts counting commands afresh.
    pub fn mark(&mut self) {
        self.apdus = 0;
    }

    /// Pull the card and put it back.
    pub fn reinsert(&mut self) {
        self.powered = true;
        self.cut_before_apdu = None;
        self.fault = None;
        self.card.power_on();
        self.note("-- card inserted again".into());
    }

    pub fn note(&mut self, line: String) {
        if self.trace.len() < TRACE_LINES {
            self.trace.push(line);
        } else if self.trace.len() == TRACE_LINES {
            self.trace.push("… (trace cut)".into());
        }
    }

    pub fn take_trace(&mut self) -> Vec<String> {
        std::mem::take(&mut self.trace)
    }

    fn transmit(&mut self, command: &[u8]) -> Result<Vec<u8>, ChannelError> {
        let n = self.apdus;
        self.apdus += 1;
        self.note(format!("> {}", spaced_hex(command)));
        if !self.powered {
            self.note("< (no card)".into());
            return Err(ChannelError::CardRemoved);
        }
        if self.cut_before_apdu == Some(n) {
            self.powered = false;
            self.note("< (power cut: the card was pulled)".into());
            return Err(ChannelError::CardRemoved);
        }
        let fault = self.fault.filter(|(at, _)| *at == n).map(|(_, f)| f);
        if fault == Some(Fault::Removed) {
            self.powered = false;
            self.note("< (card pulled before it answered)".into());
            return Err(ChannelError::CardRemoved);
        }
        if fault == Some(Fault::ReaderFault) {
            self.note("< (reader fault)".into());
            return Err(ChannelError::ReaderFault("the kit's reader failed".into()));
        }
        if fault == Some(Fault::HostRefused) {
            self.note("< (refused by the host)".into());
            return Err(ChannelError::Refused("the kit refused this command".into()));
        }
        let answer = match self.card.command(command) {
            Ok(answer) => answer,
            Err(e) => {
                self.note(format!("< (the card simulator failed: {e})"));
                return Err(ChannelError::ReaderFault(format!("card simulator: {e}")));
            }
        };
        let response = match answer {
            Answer::Response(r) => r,
            Answer::Torn => {
                self.powered = false;
                self.note("< (power cut during the write: the card was pulled)".into());
                return Err(ChannelError::CardRemoved);
            }
        };
        if fault == Some(Fault::PulledAfter) {
            self.powered = false;
            self.note("< (carried out, then the card was pulled before it answered)".into());
            return Err(ChannelError::CardRemoved);
        }
        let response = match fault {
            Some(Fault::Short) => vec![response.first().copied().unwrap_or(0x90)],
            Some(Fault::Garbage) => garbage(command, response.len()),
            Some(Fault::BadStatus) => vec![0x6F, 0x00],
            _ => response,
        };
        self.note(format!("< {}", spaced_hex(&response)));
        Ok(response)
    }
}

/// Deterministic bytes that mean nothing, as long as the real answer and at least 3.
fn garbage(command: &[u8], len: usize) -> Vec<u8> {
    let mut x = command
        .iter()
        .fold(0x9E37_79B9u32, |h, b| h.rotate_left(5) ^ u32::from(*b));
    (0..len.max(3) + 5)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

pub fn lock<T: ?Sized>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The channel a plugin holds: the bench's reader.
struct KitChannel(Arc<Mutex<Bench>>);

impl CardChannel for KitChannel {
    fn atr(&self) -> Vec<u8> {
        lock(&self.0).card.atr()
    }

    fn reader_kind(&self) -> ReaderKind {
        lock(&self.0).card.reader_kind()
    }

    fn transmit(&mut self, command: &[u8]) -> Result<Vec<u8>, ChannelError> {
        lock(&self.0).transmit(command)
    }
}

pub fn channel(bench: &Arc<Mutex<Bench>>) -> SharedCard {
    Arc::new(Mutex::new(KitChannel(bench.clone())))
}

/// The utility's side of a write: the card's PSC, and the issuer's cryptograms for a
/// simulated CPU card.
pub trait Issuer: Send {
    fn card_password(&mut self) -> Result<Vec<u8>, AuthorityError>;
    fn authenticate(&mut self, request: AuthRequest) -> Result<Vec<u8>, AuthorityError>;
}

/// A memory card's issuer knows its PSC and nothing else.
pub struct PscIssuer(pub Option<Vec<u8>>);

impl Issuer for PscIssuer {
    fn card_password(&mut self) -> Result<Vec<u8>, AuthorityError> {
        self.0.clone().ok_or_else(|| {
            AuthorityError::Refused("this card has no PSC (the kit was given none)".into())
        })
    }

    fn authenticate(&mut self, _: AuthRequest) -> Result<Vec<u8>, AuthorityError> {
        Err(AuthorityError::Refused(
            "a memory card has no encryption machine".into(),
        ))
    }
}

/// The authority a plugin holds for one write: the issuer, counted, and able to lie.
pub struct KitAuthority {
    issuer: Box<dyn Issuer>,
    /// Hand out a PSC that is not the card's.
    pub wrong_psc: bool,
    pub psc_requests: u32,
}

impl KitAuthority {
    pub fn new(issuer: Box<dyn Issuer>) -> Arc<Mutex<KitAuthority>> {
        Arc::new(Mutex::new(KitAuthority {
            issuer,
            wrong_psc: false,
            psc_requests: 0,
        }))
    }
}

impl CardAuthority for KitAuthority {
    fn card_password(&mut self) -> Result<Vec<u8>, AuthorityError> {
        self.psc_requests += 1;
        let psc = self.issuer.card_password()?;
        Ok(if self.wrong_psc {
            psc.iter().map(|b| b ^ 0x5A).collect()
        } else {
            psc
        })
    }

    fn authenticate(&mut self, request: AuthRequest) -> Result<Vec<u8>, AuthorityError> {
        self.issuer.authenticate(request)
    }
}

pub fn authority(authority: &Arc<Mutex<KitAuthority>>) -> SharedAuthority {
    authority.clone()
}
