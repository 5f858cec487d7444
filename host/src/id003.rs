//! The cash acceptor over JCM's ID-003 bill-validator protocol, spoken on a serial port at
//! 9600 baud, 8 data bits, even parity, 1 stop bit.
//!
//! Every message is a frame `FC LNG CMD [DATA] CRC_L CRC_H`: LNG counts the whole frame, the CRC
//! is CRC-16/KERMIT over everything before it. The host asks, the validator answers: a status
//! request (11) is answered with the validator's status, an operation command (reset, stack,
//! return) with ACK (50), a setting command (C0, C3) with an echo of itself. The host answers
//! VEND VALID with an ACK of its own, which the validator does not answer.
//!
//! The validator's currency table (how its escrow codes map to banknotes) is the kiosk's:
//!
//! | escrow code | 61 | 62 | 63 | 64 | 65 | 66 |
//! |---|---|---|---|---|---|---|
//! | banknote | CNY 1 | CNY 5 | CNY 10 | CNY 20 | CNY 50 | CNY 100 |
//!
//! and bit `n` of the two-byte denomination mask of command C0 (low byte first) inhibits
//! escrow code `61 + n`.
//!
//! A banknote goes: accepting (12) → escrow (13 + code) → the host sends stack-1 or return →
//! stacking (14) → vend valid (15) → the host ACKs → stacked (16) → idling (11). The driver
//! reports each step to the [`CashHandler`] before it answers the validator, and it counts a
//! banknote once: if its ACK is lost, the validator says VEND VALID again, and the driver
//! acknowledges it again without crediting anything.

use std::io::{Read, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use serialport::{ClearBuffer, DataBits, FlowControl, Parity, SerialPort, StopBits, TTYPort};

use crate::cash_acceptor::{
    CashAcceptor, CashError, CashEvent, CashHandler, Denomination, EscrowDecision, Fault,
    RejectReason,
};

const SYNC: u8 = 0xFC;
/// FC, LNG, CMD and two CRC bytes.
const MIN_FRAME: usize = 5;
/// The answers to the commands this driver sends are at most 7 bytes; anything much longer is
/// line noise that happened to start with FC.
const MAX_FRAME: usize = 64;

/// Host commands.
mod command {
    pub const STATUS_REQUEST: u8 = 0x11;
    pub const RESET: u8 = 0x40;
    pub const STACK_1: u8 = 0x41;
    pub const RETURN: u8 = 0x43;
    pub const ACK: u8 = 0x50;
    pub const ENABLE_DENOMINATIONS: u8 = 0xC0;
    pub const INHIBIT: u8 = 0xC3;
}

/// Escrow codes of the validator's currency table, in [`Denomination::ALL`] order.
const ESCROW_CODES: [u8; 6] = [0x61, 0x62, 0x63, 0x64, 0x65, 0x66];

/// CRC-16/KERMIT: reflected polynomial 0x1021 (0x8408), initial value 0, no final XOR.
fn crc16_kermit(bytes: &[u8]) -> u16 {
    let mut crc = 0u16;
    for &b in bytes {
        crc ^= u16::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0x8408
            } else {
                crc >> 1
            };
        }
    }
    crc
}

/// A frame to send; commands carry at most two data bytes.
struct Outgoing {
    bytes: [u8; 7],
    len: usize,
}

impl Outgoing {
    fn new(cmd: u8, data: &[u8]) -> Outgoing {
        let len = MIN_FRAME + data.len();
        let mut bytes = [0; 7];
        bytes[0] = SYNC;
        bytes[1] = len as u8;
        bytes[2] = cmd;
        bytes[3..3 + data.len()].copy_from_slice(data);
        let crc = crc16_kermit(&bytes[..len - 2]);
        bytes[len - 2..len].copy_from_slice(&crc.to_le_bytes());
        Outgoing { bytes, len }
    }

    fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

/// A frame received whole with a good CRC.
struct Reply {
    bytes: [u8; MAX_FRAME],
    len: usize,
}

impl Reply {
    fn code(&self) -> u8 {
        self.bytes[2]
    }

    fn data(&self) -> &[u8] {
        &self.bytes[3..self.len - 2]
    }

    /// Whether this is exactly `sent` echoed back.
    fn echoes(&self, sent: &Outgoing) -> bool {
        self.bytes[..self.len] == *sent.as_bytes()
    }

    /// The frame in hex with what it means, for error messages.
    fn describe(&self) -> String {
        let meaning = match Status::parse(self) {
            Some(status) => format!("{status:?}"),
            None if self.code() == command::ACK => "ACK".into(),
            None => "an unknown code".into(),
        };
        format!("{} ({meaning})", hex::encode_upper(&self.bytes[..self.len]))
    }
}

/// What the validator says it is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Idling,
    Accepting,
    Escrow(u8),
    Stacking,
    VendValid,
    Stacked,
    Rejecting(u8),
    Returning,
    Holding,
    Disabled,
    Initializing,
    PowerUp,
    PowerUpWithBillInAcceptor,
    PowerUpWithBillInStacker,
    Fault(Fault),
    InvalidCommand,
}

impl Status {
    fn parse(reply: &Reply) -> Option<Status> {
        let data = reply.data();
        let one = || data.first().copied();
        Some(match (reply.code(), data.len()) {
            (0x11, 0) => Status::Idling,
            (0x12, 0) => Status::Accepting,
            (0x13, 1) => Status::Escrow(one()?),
            (0x14, 0) => Status::Stacking,
            (0x15, 0) => Status::VendValid,
            (0x16, 0) => Status::Stacked,
            (0x17, 1) => Status::Rejecting(one()?),
            (0x18, 0) => Status::Returning,
            (0x19, 0) => Status::Holding,
            (0x1A, 0) => Status::Disabled,
            (0x1B, 0) => Status::Initializing,
            (0x40, 0) => Status::PowerUp,
            (0x41, 0) => Status::PowerUpWithBillInAcceptor,
            (0x42, 0) => Status::PowerUpWithBillInStacker,
            (0x43, 0) => Status::Fault(Fault::CashBoxFull),
            (0x44, 0) => Status::Fault(Fault::CashBoxRemoved),
            (0x45, 0) => Status::Fault(Fault::AcceptorJam),
            (0x46, 0) => Status::Fault(Fault::StackerJam),
            (0x47, 0) => Status::Fault(Fault::Paused),
            (0x48, 0) => Status::Fault(Fault::Cheated),
            (0x49, 0) => Status::Fault(Fault::Failure(0)),
            (0x49, 1) => Status::Fault(Fault::Failure(one()?)),
            (0x4A, 0) => Status::Fault(Fault::CommunicationError),
            (0x4B, 0) => Status::InvalidCommand,
            _ => return None,
        })
    }
}

fn reject_reason(code: u8) -> RejectReason {
    match code {
        0x71 => RejectReason::Insertion,
        0x72 => RejectReason::MagneticPattern,
        0x73 => RejectReason::RemainingInHead,
        0x74 => RejectReason::Compensation,
        0x75 => RejectReason::Conveying,
        0x76 => RejectReason::DenominationAssessing,
        0x77 => RejectReason::PhotoPattern,
        0x78 => RejectReason::PhotoLevel,
        0x79 => RejectReason::Inhibited,
        0x7B => RejectReason::Operation,
        0x7C => RejectReason::RemainingInStacker,
        0x7D => RejectReason::Length,
        0x7E => RejectReason::PhotoPatternSecond,
        other => RejectReason::Other(other),
    }
}

fn denomination(escrow_code: u8) -> Option<Denomination> {
    let index = ESCROW_CODES.iter().position(|&c| c == escrow_code)?;
    Some(Denomination::ALL[index])
}

/// Where the banknote the driver knows of is, so each one is reported and credited once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// No banknote known in the path.
    Idle,
    Accepting,
    /// Reported in escrow; `decision` is what the host answered, once it has.
    Escrow {
        note: Denomination,
        decision: Option<EscrowDecision>,
    },
    Stacking(Denomination),
    /// Credited and acknowledged; a repeated VEND VALID means the ACK was lost.
    Credited(Denomination),
    CreditedUnknown,
    Returning,
    Rejecting,
    /// A banknote outside the currency table is being given back.
    ReturningUnknown,
    /// A note nobody in this session owns: the engine handed it to an operator
    /// ([`CashAcceptor::hand_over`]), or it was in escrow at the driver's first status (there
    /// before the driver started: the kiosk restarted, and the journal's escrow item says it
    /// may be in the kiosk). It is stacked, never credited, so it lands where its operator item
    /// says it is.
    HandedOver(Option<Denomination>),
}

impl Phase {
    /// The banknote seen in escrow and not (yet) credited.
    fn uncredited(self) -> Option<Denomination> {
        match self {
            Phase::Escrow { note, .. } | Phase::Stacking(note) => Some(note),
            _ => None,
        }
    }

    /// The note told to stack and not yet credited, if any: gone from an empty path, it may
    /// be in the cash box.
    fn sent_to_box(self) -> Option<Denomination> {
        match self {
            Phase::Escrow {
                note,
                decision: Some(EscrowDecision::Stack),
            }
            | Phase::Stacking(note) => Some(note),
            _ => None,
        }
    }
}

/// Timing of the conversation with the validator.
#[derive(Debug, Clone, Copy)]
pub struct Id003Settings {
    /// How long the validator has to answer a command.
    pub reply_timeout: Duration,
    /// The shortest time between two status requests (validators expect 100–200 ms).
    pub poll_interval: Duration,
}

impl Default for Id003Settings {
    fn default() -> Self {
        Id003Settings {
            reply_timeout: Duration::from_millis(500),
            poll_interval: Duration::from_millis(100),
        }
    }
}

/// An ID-003 bill validator on a serial port.
pub struct Id003Acceptor {
    port: TTYPort,
    name: String,
    settings: Id003Settings,
    /// The C0 denomination mask and the C3 inhibit flag last asked for; sent again after a
    /// power up, which forgets them.
    mask: u16,
    inhibited: bool,
    phase: Phase,
    fault: Option<Fault>,
    last_poll: Option<Instant>,
    waiting: Duration,
    /// No status has been read since the port was opened: a note in escrow now was drawn in
    /// before this driver was watching (the kiosk restarted with it there).
    fresh: bool,
}

impl Id003Acceptor {
    /// Opens the validator on `port` (9600 baud for ID-003). It starts inhibited until
    /// [`CashAcceptor::enable`].
    pub fn open(
        port: &Path,
        baud: u32,
        settings: Id003Settings,
    ) -> Result<Id003Acceptor, CashError> {
        let name = port.display().to_string();
        let serial = serialport::new(name.as_str(), baud)
            .data_bits(DataBits::Eight)
            .parity(Parity::Even)
            .stop_bits(StopBits::One)
            .flow_control(FlowControl::None)
            .timeout(settings.reply_timeout)
            .open_native()
            .map_err(|e| CashError::Open {
                port: name.clone(),
                source: e.into(),
            })?;
        Ok(Id003Acceptor {
            port: serial,
            name,
            settings,
            mask: 0,
            inhibited: true,
            phase: Phase::Idle,
            fault: None,
            last_poll: None,
            waiting: Duration::ZERO,
            fresh: true,
        })
    }

    /// The port's name, as errors show it.
    pub fn port_name(&self) -> &str {
        &self.name
    }

    /// The time spent since `open` blocked waiting for the validator's bytes or pacing the
    /// polls: the protocol's own waits, as opposed to the driver's work.
    pub fn time_waiting(&self) -> Duration {
        self.waiting
    }

    fn report(&self, handler: &mut dyn CashHandler, event: CashEvent) -> Result<(), CashError> {
        handler
            .event(&event)
            .map_err(|reason| CashError::NotRecorded {
                port: self.name.clone(),
                event,
                reason,
            })
    }

    fn io(&self, source: std::io::Error) -> CashError {
        CashError::Io {
            port: self.name.clone(),
            source,
        }
    }

    /// Sends a frame (on its own, only the host's ACK, which gets no answer).
    fn send(&mut self, frame: &Outgoing) -> Result<(), CashError> {
        // Whatever arrived unasked (a late answer, noise) must not pass for the next answer.
        self.port
            .clear(ClearBuffer::Input)
            .map_err(|e| self.io(e.into()))?;
        self.port
            .write_all(frame.as_bytes())
            .map_err(|e| self.io(e))
    }

    /// Sends a command and reads the validator's answer.
    fn exchange(&mut self, cmd: u8, data: &[u8]) -> Result<(Outgoing, Reply), CashError> {
        let frame = Outgoing::new(cmd, data);
        self.send(&frame)?;
        let reply = self.receive().inspect_err(|_| {
            // Drop the rest of a bad answer so the next exchange starts clean; if this fails,
            // the next `send` says so.
            let _ = self.port.clear(ClearBuffer::Input);
        })?;
        Ok((frame, reply))
    }

    fn receive(&mut self) -> Result<Reply, CashError> {
        let deadline = Instant::now() + self.settings.reply_timeout;
        let mut reply = Reply {
            bytes: [0; MAX_FRAME],
            len: 0,
        };
        self.read_by(&mut reply.bytes[..1], deadline)?;
        if reply.bytes[0] != SYNC {
            return Err(self.garbage(reply.bytes[0], deadline));
        }
        self.read_by(&mut reply.bytes[1..2], deadline)?;
        let length = reply.bytes[1];
        if !(MIN_FRAME..=MAX_FRAME).contains(&usize::from(length)) {
            return Err(CashError::BadLength {
                port: self.name.clone(),
                length,
                min: MIN_FRAME as u8,
                max: MAX_FRAME as u8,
            });
        }
        reply.len = usize::from(length);
        self.read_by(&mut reply.bytes[2..reply.len], deadline)?;
        let computed = crc16_kermit(&reply.bytes[..reply.len - 2]);
        let received = u16::from_le_bytes([reply.bytes[reply.len - 2], reply.bytes[reply.len - 1]]);
        if received != computed {
            return Err(CashError::BadCrc {
                port: self.name.clone(),
                received,
                computed,
            });
        }
        Ok(reply)
    }

    /// Fills `buf` from the port, or fails at `deadline`. Time blocked here counts as waiting.
    fn read_by(&mut self, buf: &mut [u8], deadline: Instant) -> Result<(), CashError> {
        let mut filled = 0;
        while filled < buf.len() {
            let now = Instant::now();
            let Some(left) = deadline
                .checked_duration_since(now)
                .filter(|d| !d.is_zero())
            else {
                return Err(CashError::Timeout {
                    port: self.name.clone(),
                    waited: self.settings.reply_timeout,
                });
            };
            self.port.set_timeout(left).map_err(|e| self.io(e.into()))?;
            let result = self.port.read(&mut buf[filled..]);
            self.waiting += now.elapsed();
            match result {
                Ok(0) => {
                    return Err(self.io(std::io::ErrorKind::UnexpectedEof.into()));
                }
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.io(e)),
            }
        }
        Ok(())
    }

    /// The error for an answer that does not start with FC, showing what came instead (what
    /// arrives within a few milliseconds, at most 32 bytes).
    fn garbage(&mut self, first: u8, deadline: Instant) -> CashError {
        let mut got = vec![first];
        let until = deadline.min(Instant::now() + Duration::from_millis(20));
        let mut byte = [0];
        while got.len() < 32 && self.read_by(&mut byte, until).is_ok() {
            got.push(byte[0]);
        }
        CashError::Garbage {
            port: self.name.clone(),
            expected: SYNC,
            got,
        }
    }

    /// Sends an operation command, which the validator answers with ACK.
    fn operate(&mut self, cmd: u8, what: &'static str) -> Result<(), CashError> {
        let (_, reply) = self.exchange(cmd, &[])?;
        if reply.code() == command::ACK && reply.data().is_empty() {
            Ok(())
        } else {
            Err(self.unexpected(what, &reply))
        }
    }

    /// Sends a setting command, which the validator answers by echoing it.
    fn set(&mut self, cmd: u8, data: &[u8], what: &'static str) -> Result<(), CashError> {
        let (sent, reply) = self.exchange(cmd, data)?;
        if reply.echoes(&sent) {
            Ok(())
        } else {
            Err(self.unexpected(what, &reply))
        }
    }

    fn unexpected(&self, command: &'static str, reply: &Reply) -> CashError {
        CashError::Unexpected {
            port: self.name.clone(),
            command,
            answer: reply.describe(),
        }
    }

    /// Sends the denomination mask and the inhibit flag the caller last asked for.
    fn configure(&mut self) -> Result<(), CashError> {
        self.set(
            command::ENABLE_DENOMINATIONS,
            &self.mask.to_le_bytes(),
            "enable/disable denominations",
        )?;
        self.set(
            command::INHIBIT,
            &[u8::from(self.inhibited)],
            "inhibit/accept",
        )
    }

    fn answer_escrow(&mut self, decision: EscrowDecision) -> Result<(), CashError> {
        match decision {
            EscrowDecision::Stack => self.operate(command::STACK_1, "stack-1"),
            EscrowDecision::Return => self.operate(command::RETURN, "return"),
        }
    }

    fn acknowledge(&mut self) -> Result<(), CashError> {
        self.send(&Outgoing::new(command::ACK, &[]))
    }

    /// Waits out the rest of the poll interval since the last status request.
    fn pace(&mut self) {
        if let Some(last) = self.last_poll {
            let next = last + self.settings.poll_interval;
            let now = Instant::now();
            if next > now {
                std::thread::sleep(next - now);
                self.waiting += now.elapsed();
            }
        }
        self.last_poll = Some(Instant::now());
    }

    fn clear_fault(&mut self, handler: &mut dyn CashHandler) -> Result<(), CashError> {
        if let Some(fault) = self.fault {
            self.report(handler, CashEvent::FaultCleared(fault))?;
            self.fault = None;
        }
        Ok(())
    }

    /// Reports what `status` changes and answers the validator. The phase moves on only once
    /// the handler has taken the event, so an event it could not record is reported again.
    fn on_status(
        &mut self,
        status: Status,
        handler: &mut dyn CashHandler,
    ) -> Result<(), CashError> {
        match status {
            Status::Idling | Status::Disabled => {
                self.clear_fault(handler)?;
                match self.phase {
                    // The stacked status went by between two polls.
                    Phase::Credited(note) => self.report(handler, CashEvent::Stacked(note))?,
                    Phase::Escrow {
                        note,
                        decision: Some(EscrowDecision::Return),
                    } => self.report(handler, CashEvent::Returned(note))?,
                    _ => {}
                }
                self.phase = Phase::Idle;
            }
            Status::Initializing | Status::Holding => {}
            Status::Accepting => {
                self.clear_fault(handler)?;
                // The one note in the path is still the one handed over.
                if self.phase != Phase::Accepting && !matches!(self.phase, Phase::HandedOver(_)) {
                    self.report(handler, CashEvent::Accepting)?;
                    self.phase = Phase::Accepting;
                }
            }
            Status::Escrow(code) => {
                self.clear_fault(handler)?;
                let Some(note) = denomination(code) else {
                    if self.phase != Phase::ReturningUnknown {
                        self.report(handler, CashEvent::UnknownBanknote { code })?;
                        self.phase = Phase::ReturningUnknown;
                    }
                    return self.answer_escrow(EscrowDecision::Return);
                };
                match self.phase {
                    // Still in escrow after the host answered: that answer was lost, repeat it.
                    Phase::Escrow {
                        note: seen,
                        decision: Some(decision),
                    } if seen == note => self.answer_escrow(decision)?,
                    // There before this driver was watching, or handed to an operator: nobody's
                    // to decide, and never given to whoever stands at the kiosk now. Stacked,
                    // where its operator item says it may be.
                    Phase::Idle | Phase::HandedOver(_)
                        if self.fresh || self.phase != Phase::Idle =>
                    {
                        self.phase = Phase::HandedOver(Some(note));
                        self.answer_escrow(EscrowDecision::Stack)?;
                    }
                    _ => {
                        self.report(handler, CashEvent::Escrow(note))?;
                        let decision = handler.decide(note);
                        self.phase = Phase::Escrow {
                            note,
                            decision: Some(decision),
                        };
                        self.answer_escrow(decision)?;
                    }
                }
            }
            Status::Stacking => {
                if let Phase::Escrow { note, .. } = self.phase {
                    self.phase = Phase::Stacking(note);
                }
            }
            Status::VendValid => match self.phase {
                // Our ACK was lost and the validator says it again: the note is credited already.
                Phase::Credited(_) | Phase::CreditedUnknown => self.acknowledge()?,
                Phase::HandedOver(note) => {
                    self.report(
                        handler,
                        CashEvent::LateOutcome {
                            note,
                            stacked: true,
                        },
                    )?;
                    self.phase = Phase::CreditedUnknown;
                    self.acknowledge()?;
                }
                Phase::Escrow { note, .. } | Phase::Stacking(note) => {
                    self.report(handler, CashEvent::Credited(note))?;
                    self.phase = Phase::Credited(note);
                    self.acknowledge()?;
                }
                _ => {
                    self.report(handler, CashEvent::CreditedUnknown)?;
                    self.phase = Phase::CreditedUnknown;
                    self.acknowledge()?;
                }
            },
            Status::Stacked => {
                if let Phase::Credited(note) = self.phase {
                    self.report(handler, CashEvent::Stacked(note))?;
                }
                self.phase = Phase::Idle;
            }
            Status::Rejecting(code) => {
                if self.phase != Phase::Rejecting {
                    self.report(handler, CashEvent::Rejected(reject_reason(code)))?;
                    self.phase = Phase::Rejecting;
                }
            }
            Status::Returning => match self.phase {
                Phase::Escrow { note, .. } | Phase::Stacking(note) => {
                    self.report(handler, CashEvent::Returned(note))?;
                    self.phase = Phase::Returning;
                }
                Phase::HandedOver(note) => {
                    self.report(
                        handler,
                        CashEvent::LateOutcome {
                            note,
                            stacked: false,
                        },
                    )?;
                    self.phase = Phase::Returning;
                }
                _ => {}
            },
            Status::PowerUp
            | Status::PowerUpWithBillInAcceptor
            | Status::PowerUpWithBillInStacker => {
                let note = self.phase.uncredited();
                let event = match status {
                    Status::PowerUpWithBillInAcceptor => {
                        CashEvent::PowerUpWithBillInAcceptor { note }
                    }
                    Status::PowerUpWithBillInStacker => {
                        CashEvent::PowerUpWithBillInStacker { note }
                    }
                    _ => CashEvent::PowerUp {
                        note: self.phase.sent_to_box(),
                    },
                };
                self.report(handler, event)?;
                self.phase = Phase::Idle;
                self.fault = None;
                // The reset gives a banknote in the head back and stacks one past it; a power
                // up forgets the settings, so they are sent again.
                self.operate(command::RESET, "reset")?;
                self.configure()?;
            }
            Status::Fault(fault) => {
                if self.fault != Some(fault) {
                    let note = self.phase.uncredited();
                    self.report(handler, CashEvent::Fault { fault, note })?;
                    self.fault = Some(fault);
                    self.phase = Phase::Idle;
                }
            }
            Status::InvalidCommand => {
                return Err(CashError::Unexpected {
                    port: self.name.clone(),
                    command: "status request",
                    answer: "invalid command (4B)".into(),
                });
            }
        }
        Ok(())
    }
}

impl CashAcceptor for Id003Acceptor {
    fn enable(&mut self, accept: &[Denomination]) -> Result<(), CashError> {
        let mut mask = 0u16;
        for (bit, d) in Denomination::ALL.iter().enumerate() {
            if !accept.contains(d) {
                mask |= 1 << bit;
            }
        }
        self.mask = mask;
        self.inhibited = accept.is_empty();
        self.configure()
    }

    fn hand_over(&mut self) -> Option<Denomination> {
        let note = self.phase.uncredited();
        self.phase = Phase::HandedOver(note);
        note
    }

    fn poll(&mut self, handler: &mut dyn CashHandler) -> Result<(), CashError> {
        self.pace();
        let (_, reply) = self.exchange(command::STATUS_REQUEST, &[])?;
        let status =
            Status::parse(&reply).ok_or_else(|| self.unexpected("status request", &reply))?;
        let handled = self.on_status(status, handler);
        if handled.is_ok() {
            self.fresh = false;
        }
        handled
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc_is_kermit() {
        assert_eq!(crc16_kermit(b"123456789"), 0x2189);
    }

    #[test]
    fn frames_carry_their_length_and_crc_low_byte_first() {
        assert_eq!(
            Outgoing::new(command::STATUS_REQUEST, &[]).as_bytes(),
            [0xFC, 0x05, 0x11, 0x27, 0x56]
        );
        assert_eq!(
            Outgoing::new(command::ACK, &[]).as_bytes(),
            [0xFC, 0x05, 0x50, 0xAA, 0x05]
        );
        let enable = Outgoing::new(command::ENABLE_DENOMINATIONS, &[0x3E, 0x00]);
        assert_eq!(enable.as_bytes()[..5], [0xFC, 0x07, 0xC0, 0x3E, 0x00]);
    }

    #[test]
    fn the_currency_table_maps_escrow_codes_61_to_66() {
        let notes: Vec<_> = (0x60..=0x67).map(denomination).collect();
        assert_eq!(
            notes,
            [
                None,
                Some(Denomination::Cny1),
                Some(Denomination::Cny5),
                Some(Denomination::Cny10),
                Some(Denomination::Cny20),
                Some(Denomination::Cny50),
                Some(Denomination::Cny100),
                None
            ]
        );
    }

    #[test]
    fn statuses_parse_with_their_data() {
        let reply = |bytes: &[u8]| {
            let mut r = Reply {
                bytes: [0; MAX_FRAME],
                len: bytes.len() + 4,
            };
            r.bytes[0] = SYNC;
            r.bytes[1] = r.len as u8;
            r.bytes[2..2 + bytes.len()].copy_from_slice(bytes);
            r
        };
        assert_eq!(
            Status::parse(&reply(&[0x13, 0x63])),
            Some(Status::Escrow(0x63))
        );
        assert_eq!(
            Status::parse(&reply(&[0x17, 0x77])),
            Some(Status::Rejecting(0x77))
        );
        assert_eq!(
            Status::parse(&reply(&[0x45])),
            Some(Status::Fault(Fault::AcceptorJam))
        );
        assert_eq!(Status::parse(&reply(&[0x13])), None);
        assert_eq!(Status::parse(&reply(&[0x99])), None);
    }
}
