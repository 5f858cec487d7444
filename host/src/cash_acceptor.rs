//! The cash acceptor as the sale engine sees it, whatever protocol the device speaks: which
//! banknotes it takes, what happens to each one, and the engine's answer to a banknote held in
//! escrow. The ID-003 driver (`id003`) is the real implementation.
//!
//! A banknote's money moves at two points: the engine decides in [`CashHandler::decide`]
//! whether to take a note held in escrow, and [`CashEvent::Credited`] says the acceptor has
//! taken it. A driver reports every event to the handler *before* it answers the device, so the
//! engine can journal a banknote before the device counts it as taken, and it reports each
//! banknote's credit exactly once, however often the device repeats itself.

use std::fmt;
use std::time::Duration;

pub use crate::money::Denomination;

/// The engine's answer to a banknote held in escrow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EscrowDecision {
    /// Take it into the cash box; a [`CashEvent::Credited`] follows once it is taken.
    Stack,
    /// Give it back to the customer; nothing is credited.
    Return,
}

/// Why the acceptor gave a banknote back on its own (the ID-003 reject reasons).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectReason {
    Insertion,
    MagneticPattern,
    RemainingInHead,
    Compensation,
    Conveying,
    DenominationAssessing,
    PhotoPattern,
    PhotoLevel,
    Inhibited,
    Operation,
    RemainingInStacker,
    Length,
    PhotoPatternSecond,
    /// A reason code the protocol's table does not name.
    Other(u8),
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RejectReason::Insertion => f.write_str("insertion error (inserted skewed or pulled)"),
            RejectReason::MagneticPattern => f.write_str("magnetic pattern error"),
            RejectReason::RemainingInHead => {
                f.write_str("a banknote was left in the acceptor head")
            }
            RejectReason::Compensation => f.write_str("compensation error (sensor calibration)"),
            RejectReason::Conveying => f.write_str("conveying error"),
            RejectReason::DenominationAssessing => {
                f.write_str("the denomination could not be assessed")
            }
            RejectReason::PhotoPattern => f.write_str("photo pattern error"),
            RejectReason::PhotoLevel => f.write_str("photo level error"),
            RejectReason::Inhibited => {
                f.write_str("the denomination or insertion direction is inhibited")
            }
            RejectReason::Operation => f.write_str("operation error"),
            RejectReason::RemainingInStacker => {
                f.write_str("a banknote was left in the stacker path")
            }
            RejectReason::Length => f.write_str("length error"),
            RejectReason::PhotoPatternSecond => f.write_str("photo pattern error (second check)"),
            RejectReason::Other(code) => write!(f, "reason code {code:02X}"),
        }
    }
}

/// A condition that stops the acceptor until it clears (by an operator, mostly).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    AcceptorJam,
    StackerJam,
    CashBoxRemoved,
    CashBoxFull,
    /// A second banknote was pushed in while the first was on its way to the cash box.
    Paused,
    /// The acceptor saw a cheat attempt (a note pulled back on a string, say).
    Cheated,
    /// A hardware failure, with the device's own failure code.
    Failure(u8),
    /// The acceptor itself saw garbled commands from the host.
    CommunicationError,
}

impl Fault {
    /// What the fault means for whoever has to see to it, when its name does not say.
    fn detail(self) -> Option<&'static str> {
        match self {
            Fault::AcceptorJam => Some("a banknote is stuck in the acceptor"),
            Fault::StackerJam => Some("a banknote is stuck on its way to the cash box"),
            Fault::Paused => Some("a second banknote was inserted while the first was stacked"),
            Fault::Cheated => Some("a banknote was pulled back or tampered with"),
            Fault::CommunicationError => Some("the acceptor could not read the host's commands"),
            Fault::CashBoxRemoved | Fault::CashBoxFull | Fault::Failure(_) => None,
        }
    }
}

impl fmt::Display for Fault {
    /// The fault's name: `stacker jam`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::AcceptorJam => f.write_str("acceptor jam"),
            Fault::StackerJam => f.write_str("stacker jam"),
            Fault::CashBoxRemoved => f.write_str("cash box removed"),
            Fault::CashBoxFull => f.write_str("cash box full"),
            Fault::Paused => f.write_str("paused"),
            Fault::Cheated => f.write_str("cheat attempt"),
            Fault::Failure(code) => write!(f, "acceptor failure (code {code:02X})"),
            Fault::CommunicationError => f.write_str("communication error"),
        }
    }
}

/// Something that happened at the cash acceptor, in the order it happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CashEvent {
    /// The acceptor was powered up with its path empty; the driver reset and re-enabled it.
    /// `note` is a note the driver saw go to be stacked and never saw credited: it may be in
    /// the cash box.
    PowerUp { note: Option<Denomination> },
    /// The acceptor was powered up with a banknote in its head: the reset gives it back to the
    /// customer, nothing is credited. `note` is the note the driver last saw in escrow and never
    /// saw credited, when there was one.
    PowerUpWithBillInAcceptor { note: Option<Denomination> },
    /// The acceptor was powered up with a banknote on its way to the cash box: the reset stacks
    /// it, and the acceptor never credits it. Whether the customer is owed it is the engine's
    /// call; `note` is the note the driver last saw in escrow and never saw credited, if any.
    PowerUpWithBillInStacker { note: Option<Denomination> },
    /// A banknote is being drawn in and checked.
    Accepting,
    /// A banknote is held in escrow; [`CashHandler::decide`] is asked next.
    Escrow(Denomination),
    /// The acceptor has taken the banknote (it can no longer be given back): credit it.
    /// Reported once per banknote.
    Credited(Denomination),
    /// The acceptor took a banknote the driver never saw in escrow (the host restarted while
    /// one was on its way), so its value is unknown: for an operator to settle.
    CreditedUnknown,
    /// The credited banknote is in the cash box.
    Stacked(Denomination),
    /// The banknote in escrow is being given back to the customer; nothing was credited.
    Returned(Denomination),
    /// The acceptor gave a banknote back on its own; nothing was credited.
    Rejected(RejectReason),
    /// The acceptor held a banknote its currency table maps to a code the driver does not
    /// know; the driver gave it back. Nothing was credited.
    UnknownBanknote { code: u8 },
    /// A fault stopped the acceptor. `note` is a banknote the driver saw in escrow and never
    /// saw credited that may be caught in it.
    Fault {
        fault: Fault,
        note: Option<Denomination>,
    },
    /// The fault is over; the acceptor is back to idle (or to inhibited).
    FaultCleared(Fault),
    /// What became of a banknote after the engine handed it to an operator
    /// ([`CashAcceptor::hand_over`]): it reached the cash box (`stacked`) or was given back.
    /// Credited to no one: its operator item settles it.
    LateOutcome {
        note: Option<Denomination>,
        stacked: bool,
    },
}

impl fmt::Display for CashEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let uncredited = |note: &Option<Denomination>| match note {
            Some(d) => format!(" (the {d} banknote seen in escrow was not credited)"),
            None => String::new(),
        };
        match self {
            CashEvent::PowerUp { note } => write!(f, "power up{}", uncredited(note)),
            CashEvent::PowerUpWithBillInAcceptor { note } => write!(
                f,
                "power up with a banknote in the acceptor: given back to the customer{}",
                uncredited(note)
            ),
            CashEvent::PowerUpWithBillInStacker { note } => write!(
                f,
                "power up with a banknote in the stacker: stacked without credit{}",
                uncredited(note)
            ),
            CashEvent::Accepting => f.write_str("accepting a banknote"),
            CashEvent::Escrow(d) => write!(f, "escrow: {d}"),
            CashEvent::Credited(d) => write!(f, "credited: {d}"),
            CashEvent::CreditedUnknown => {
                f.write_str("credited: a banknote of unknown value (never seen in escrow)")
            }
            CashEvent::Stacked(d) => write!(f, "stacked: {d} in the cash box"),
            CashEvent::Returned(d) => write!(f, "returned: {d} given back, not credited"),
            CashEvent::Rejected(reason) => write!(f, "rejected: {reason}"),
            CashEvent::UnknownBanknote { code } => write!(
                f,
                "returned: a banknote with escrow code {code:02X}, not in the currency table"
            ),
            CashEvent::Fault { fault, note } => {
                write!(f, "fault: {fault}")?;
                if let Some(detail) = fault.detail() {
                    write!(f, ": {detail}")?;
                }
                f.write_str(&uncredited(note))
            }
            CashEvent::FaultCleared(fault) => write!(f, "cleared: {fault}"),
            CashEvent::LateOutcome { note, stacked } => {
                let note =
                    note.map_or_else(|| "a banknote".to_string(), |d| format!("the {d} banknote"));
                if *stacked {
                    write!(
                        f,
                        "{note} handed to an operator reached the cash box (not credited)"
                    )
                } else {
                    write!(
                        f,
                        "{note} handed to an operator was given back (not credited)"
                    )
                }
            }
        }
    }
}

/// The caller could not record an event (its journal is unavailable, say): the driver does not
/// answer the acceptor for it, and reports it again on a later poll.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct NotRecorded(pub String);

/// What a driver tells about each event, before it answers the acceptor.
pub trait CashHandler {
    /// Every event, in order. For [`CashEvent::Credited`] this is the moment to journal the
    /// banknote: the driver acknowledges it to the acceptor only after this returns `Ok`.
    fn event(&mut self, event: &CashEvent) -> Result<(), NotRecorded>;
    /// Called right after [`CashEvent::Escrow`] was reported: take the banknote or give it back.
    fn decide(&mut self, note: Denomination) -> EscrowDecision;
}

/// A cash acceptor driver.
pub trait CashAcceptor {
    /// Accept exactly these denominations; an empty list inhibits the acceptor.
    fn enable(&mut self, accept: &[Denomination]) -> Result<(), CashError>;
    /// Asks the acceptor what it is doing, reports what changed to `handler` and answers the
    /// acceptor as the handler decided. Call it in a loop; the driver paces the polls.
    fn poll(&mut self, handler: &mut dyn CashHandler) -> Result<(), CashError>;
    /// Stops following the banknote in flight: the engine has handed it to an operator because
    /// its fate could not be learnt in time. What the acceptor later says of it is reported as
    /// [`CashEvent::LateOutcome`], never as a credit, so it reaches no later session. Returns
    /// the note, when the driver knows its value.
    fn hand_over(&mut self) -> Option<Denomination>;
}

/// Why the acceptor could not be talked to. Each names the port.
#[derive(Debug, thiserror::Error)]
pub enum CashError {
    #[error("{port}: cannot open the cash acceptor: {source}")]
    Open {
        port: String,
        source: std::io::Error,
    },
    #[error("{port}: {source}")]
    Io {
        port: String,
        source: std::io::Error,
    },
    /// The acceptor did not answer (it is off, unplugged, or the wrong device).
    #[error("{port}: no answer from the cash acceptor within {} ms", .waited.as_millis())]
    Timeout { port: String, waited: Duration },
    /// Bytes that are not a frame of the protocol.
    #[error("{port}: expected a frame starting {expected:02X}, got {}", hex::encode_upper(.got))]
    Garbage {
        port: String,
        expected: u8,
        got: Vec<u8>,
    },
    #[error("{port}: frame CRC {received:04X} does not match {computed:04X}")]
    BadCrc {
        port: String,
        received: u16,
        computed: u16,
    },
    #[error("{port}: frame length {length} is outside {min}..={max}")]
    BadLength {
        port: String,
        length: u8,
        min: u8,
        max: u8,
    },
    /// A well-formed frame that is not an answer to what was sent.
    #[error("{port}: {command} was answered with {answer}")]
    Unexpected {
        port: String,
        command: &'static str,
        answer: String,
    },
    /// The handler could not record an event; the acceptor was not answered for it.
    #[error("{port}: {event}: not recorded: {reason}")]
    NotRecorded {
        port: String,
        event: CashEvent,
        reason: NotRecorded,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn denominations_are_worth_their_face_value_in_fen() {
        let values: Vec<u64> = Denomination::ALL.iter().map(|d| d.value().0).collect();
        assert_eq!(values, [100, 500, 1000, 2000, 5000, 10000]);
        assert_eq!(Denomination::from_yuan(50), Some(Denomination::Cny50));
        assert_eq!(Denomination::from_yuan(2), None);
        assert_eq!(Denomination::Cny100.to_string(), "CNY 100");
    }
}
