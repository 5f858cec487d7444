//! A JCM ID-003 bill validator on the far end of a pty, written from the wire specification
//! alone (nothing shared with the host's driver).
//!
//! Frames are `FC LNG CMD [DATA] CRC_L CRC_H` with a CRC-16/KERMIT. The validator answers a
//! status request (11) with its status, an operation command (reset 40, stack 41/42, return 43,
//! hold 44, wait 45) with ACK (50) or, out of place, with INVALID COMMAND (4B), and a setting
//! command (C0 denominations, C3 inhibit) by echoing it. The host's ACK (50) to VEND VALID
//! gets no answer. Frames with a bad CRC are not heard at all.
//!
//! Time is counted in status requests: each one reports the current status and then moves a
//! passing state (accepting, stacking, stacked, rejecting, returning, initializing) one step on,
//! so a host sees every step of a banknote however fast it polls. States that wait for someone
//! (escrow, vend valid, power up, faults) stay until the host or the operator acts.
//!
//! Currency table: escrow codes 61–66 are the CNY 1, 5, 10, 20, 50 and 100 notes; bit `n` of
//! C0's two-byte mask (low byte first) inhibits code `61 + n`. A note of any other value is
//! rejected as not recognised (76).

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use serialport::{SerialPort, TTYPort};

/// The validator's currency table: escrow code and the banknote's value in yuan.
pub const CURRENCY: [(u8, u32); 6] = [
    (0x61, 1),
    (0x62, 5),
    (0x63, 10),
    (0x64, 20),
    (0x65, 50),
    (0x66, 100),
];

const SYNC: u8 = 0xFC;
const ACK: u8 = 0x50;
const INVALID_COMMAND: u8 = 0x4B;

/// Reject reason: the denomination is not recognised.
pub const REJECT_UNKNOWN_DENOMINATION: u8 = 0x76;
/// Reject reason: the denomination is inhibited.
pub const REJECT_INHIBITED: u8 = 0x79;

/// What the validator answers instead of a frame when told to send garbage.
pub const GARBAGE: &[u8] = b"\x00\x13garbage\r\n";

/// Something a customer, an operator or the line does to the validator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// A genuine banknote of this many yuan (one outside the currency table is rejected).
    Insert(u32),
    /// A forged banknote, rejected with this reason code (71–7E).
    Counterfeit(u8),
    /// A banknote that jams in the acceptor head.
    JamInAcceptor,
    /// A genuine banknote that jams on its way to the cash box once the host stacks it.
    JamInStacker(u32),
    /// A genuine banknote; the power goes right after the host answers its escrow, with the
    /// note still in the head.
    PowerCycleWithBillInAcceptor(u32),
    /// A genuine banknote; the power goes while it is being stacked.
    PowerCycleWithBillInStacker(u32),
    /// A genuine banknote; the power goes just as it drops into the cash box, before the
    /// validator says VEND VALID (it powers up with its path empty).
    PowerCycleAsBillReachesBox(u32),
    /// A banknote the validator reports in escrow under `code` (a currency table the host
    /// does not share).
    MisreportedBanknote(u8),
    /// The operator pulls the cash box out.
    RemoveBox,
    /// The operator puts the cash box back.
    ReplaceBox,
    /// The cash box fills up.
    BoxFull,
    /// The operator clears a jam (a note stuck on its way to the cash box is pushed into it)
    /// or empties a full cash box.
    Clear,
    /// The power goes and comes back (a note in the path stays there).
    PowerCycle,
    /// The validator does not hear the host's next ACK, and says VEND VALID again.
    LoseNextAck,
    /// The next answer is line noise instead of a frame.
    Garbage,
    /// The next answer has a wrong CRC.
    BadCrc,
    /// The validator hears nothing for the next this many frames.
    Silence(u32),
}

impl Action {
    /// Whether the action is a banknote in the customer's hand.
    fn is_banknote(self) -> bool {
        matches!(
            self,
            Action::Insert(_)
                | Action::Counterfeit(_)
                | Action::JamInAcceptor
                | Action::JamInStacker(_)
                | Action::PowerCycleWithBillInAcceptor(_)
                | Action::PowerCycleWithBillInStacker(_)
                | Action::PowerCycleAsBillReachesBox(_)
                | Action::MisreportedBanknote(_)
        )
    }

    /// Whether the action waits its turn behind banknotes (physical) or happens at once.
    fn queued(self) -> bool {
        self.is_banknote() || matches!(self, Action::RemoveBox | Action::BoxFull)
    }
}

/// What became of the banknotes, as the validator knows it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tally {
    /// Yuan of each banknote whose VEND VALID the host acknowledged.
    pub credited: Vec<u32>,
    /// Yuan of each banknote that reached the cash box, credited or not.
    pub cash_box: Vec<u32>,
    /// Yuan of each banknote given back from escrow (by the host, or by a reset).
    pub returned: Vec<u32>,
    /// Reason codes of the banknotes rejected.
    pub rejected: Vec<u8>,
    /// ACKs the validator did not hear (by [`Action::LoseNextAck`]).
    pub acks_ignored: u32,
}

/// Where the validator tells what it does, for a person watching it.
type Log = Box<dyn FnMut(&str) + Send>;

/// What is scripted to go wrong with a banknote on its way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mishap {
    None,
    JamInStacker,
    PowerCutAtEscrow,
    PowerCutWhileStacking,
    PowerCutInBox,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Note {
    code: u8,
    /// 0 for a banknote outside the currency table.
    yuan: u32,
    mishap: Mishap,
}

/// Where a banknote was when the power came back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BillAt {
    Nowhere,
    Acceptor(u32),
    Stacker(u32),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    PowerUp(BillAt),
    Initializing,
    /// Idling, or disabled while inhibited.
    Ready,
    Accepting(Action),
    Escrow(Note),
    Stacking(Note),
    VendValid(Note),
    Stacked,
    Rejecting(u8),
    Returning(Note),
    /// Stacker full (43), stacker open (44), acceptor jam (45), stacker jam (46).
    Fault(u8),
}

/// The validator's logic, without the pty.
struct Validator {
    state: State,
    /// C0's mask: a set bit inhibits a denomination.
    mask: u16,
    /// C3: inhibited (no banknote is taken in at all).
    inhibited: bool,
    queue: VecDeque<Action>,
    /// The yuan of the note stuck on its way to the cash box (stacker jam), if any.
    jammed: Option<u32>,
    lose_next_ack: bool,
    garbage_next: bool,
    bad_crc_next: bool,
    deaf_for: u32,
    tally: Tally,
    log: Option<Log>,
}

fn crc16_kermit(bytes: &[u8]) -> u16 {
    bytes.iter().fold(0u16, |mut crc, &b| {
        crc ^= u16::from(b);
        for _ in 0..8 {
            let carry = crc & 1;
            crc >>= 1;
            if carry == 1 {
                crc ^= 0x8408;
            }
        }
        crc
    })
}

fn frame(cmd: u8, data: &[u8]) -> Vec<u8> {
    let mut out = vec![SYNC, (data.len() + 5) as u8, cmd];
    out.extend_from_slice(data);
    let crc = crc16_kermit(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

fn yuan_of(code: u8) -> Option<u32> {
    CURRENCY.iter().find(|(c, _)| *c == code).map(|(_, y)| *y)
}

fn code_of(yuan: u32) -> Option<u8> {
    CURRENCY.iter().find(|(_, y)| *y == yuan).map(|(c, _)| *c)
}

impl Validator {
    fn new() -> Validator {
        Validator {
            state: State::PowerUp(BillAt::Nowhere),
            mask: 0,
            inhibited: true,
            queue: VecDeque::new(),
            jammed: None,
            lose_next_ack: false,
            garbage_next: false,
            bad_crc_next: false,
            deaf_for: 0,
            tally: Tally::default(),
            log: None,
        }
    }

    fn say(&mut self, what: impl FnOnce() -> String) {
        if let Some(log) = &mut self.log {
            log(&what());
        }
    }

    fn act(&mut self, action: Action) {
        if action.queued() {
            self.queue.push_back(action);
            return;
        }
        match action {
            Action::ReplaceBox if self.state == State::Fault(0x44) => self.state = State::Ready,
            Action::Clear => {
                if let State::Fault(0x43 | 0x45 | 0x46) = self.state {
                    self.state = State::Ready;
                }
                if let Some(yuan) = self.jammed.take() {
                    self.tally.cash_box.push(yuan);
                    self.say(|| {
                        format!("the operator pushed the jammed CNY {yuan} into the cash box")
                    });
                }
            }
            Action::PowerCycle => self.cut_power(),
            Action::LoseNextAck => self.lose_next_ack = true,
            Action::Garbage => self.garbage_next = true,
            Action::BadCrc => self.bad_crc_next = true,
            Action::Silence(frames) => self.deaf_for = frames,
            _ => {}
        }
    }

    /// The power goes and comes back: the settings are forgotten, a banknote in the path stays.
    fn cut_power(&mut self) {
        let bill = match self.state {
            State::Escrow(n) | State::Returning(n) => BillAt::Acceptor(n.yuan),
            State::Stacking(n) | State::VendValid(n) => BillAt::Stacker(n.yuan),
            _ => BillAt::Nowhere,
        };
        self.state = State::PowerUp(bill);
        self.mask = 0;
        self.inhibited = true;
        self.lose_next_ack = false;
        self.say(|| match bill {
            BillAt::Nowhere => "power cycled".into(),
            BillAt::Acceptor(yuan) => format!("power cycled with CNY {yuan} in the acceptor head"),
            BillAt::Stacker(yuan) => {
                format!("power cycled with CNY {yuan} on its way to the cash box")
            }
        });
    }

    fn status(&self) -> Vec<u8> {
        match self.state {
            State::PowerUp(BillAt::Nowhere) => frame(0x40, &[]),
            State::PowerUp(BillAt::Acceptor(_)) => frame(0x41, &[]),
            State::PowerUp(BillAt::Stacker(_)) => frame(0x42, &[]),
            State::Initializing => frame(0x1B, &[]),
            State::Ready if self.inhibited => frame(0x1A, &[]),
            State::Ready => frame(0x11, &[]),
            State::Accepting(_) => frame(0x12, &[]),
            State::Escrow(n) => frame(0x13, &[n.code]),
            State::Stacking(_) => frame(0x14, &[]),
            State::VendValid(_) => frame(0x15, &[]),
            State::Stacked => frame(0x16, &[]),
            State::Rejecting(reason) => frame(0x17, &[reason]),
            State::Returning(_) => frame(0x18, &[]),
            State::Fault(code) => frame(code, &[]),
        }
    }

    /// One status request's worth of time passes.
    fn advance(&mut self) {
        self.state = match self.state {
            State::Initializing | State::Stacked => State::Ready,
            State::Ready => match self.queue.front().copied() {
                Some(Action::RemoveBox) => {
                    self.queue.pop_front();
                    State::Fault(0x44)
                }
                Some(Action::BoxFull) => {
                    self.queue.pop_front();
                    State::Fault(0x43)
                }
                Some(insertion) if !self.inhibited => {
                    self.queue.pop_front();
                    State::Accepting(insertion)
                }
                _ => State::Ready,
            },
            State::Accepting(insertion) => self.assess(insertion),
            State::Stacking(note) => match note.mishap {
                Mishap::JamInStacker => {
                    self.jammed = Some(note.yuan);
                    State::Fault(0x46)
                }
                Mishap::PowerCutWhileStacking => {
                    self.cut_power();
                    self.state
                }
                Mishap::PowerCutInBox => {
                    self.tally.cash_box.push(note.yuan);
                    self.state = State::Stacked;
                    self.cut_power();
                    self.state
                }
                _ => State::VendValid(note),
            },
            State::Rejecting(reason) => {
                self.tally.rejected.push(reason);
                State::Ready
            }
            State::Returning(note) => {
                self.tally.returned.push(note.yuan);
                self.say(|| format!("gave CNY {} back", note.yuan));
                State::Ready
            }
            waiting => waiting,
        };
    }

    /// What the validator makes of a banknote being drawn in.
    fn assess(&self, insertion: Action) -> State {
        let genuine = |yuan: u32, mishap: Mishap| match code_of(yuan) {
            None => State::Rejecting(REJECT_UNKNOWN_DENOMINATION),
            Some(code) if self.mask & (1 << (code - 0x61)) != 0 => {
                State::Rejecting(REJECT_INHIBITED)
            }
            Some(code) => State::Escrow(Note { code, yuan, mishap }),
        };
        match insertion {
            Action::Insert(yuan) => genuine(yuan, Mishap::None),
            Action::JamInStacker(yuan) => genuine(yuan, Mishap::JamInStacker),
            Action::PowerCycleWithBillInAcceptor(yuan) => genuine(yuan, Mishap::PowerCutAtEscrow),
            Action::PowerCycleWithBillInStacker(yuan) => {
                genuine(yuan, Mishap::PowerCutWhileStacking)
            }
            Action::PowerCycleAsBillReachesBox(yuan) => genuine(yuan, Mishap::PowerCutInBox),
            Action::Counterfeit(reason) => State::Rejecting(reason),
            Action::JamInAcceptor => State::Fault(0x45),
            Action::MisreportedBanknote(code) => State::Escrow(Note {
                code,
                yuan: yuan_of(code).unwrap_or(0),
                mishap: Mishap::None,
            }),
            _ => State::Ready,
        }
    }

    /// Handles one well-formed frame from the host; returns the answer, if any.
    fn hear(&mut self, cmd: u8, data: &[u8], whole: &[u8]) -> Option<Vec<u8>> {
        let answer = match (cmd, data.len()) {
            (0x11, 0) => {
                let status = self.status();
                self.advance();
                status
            }
            (0x40, 0) => {
                self.reset();
                frame(ACK, &[])
            }
            (0x41..=0x43, 0) => match self.state {
                State::Escrow(note) => {
                    let stack = cmd != 0x43;
                    self.say(|| {
                        format!(
                            "host {} CNY {}",
                            if stack { "stacks" } else { "returns" },
                            note.yuan
                        )
                    });
                    if note.mishap == Mishap::PowerCutAtEscrow {
                        // Still in escrow: the note is in the head when the power goes.
                        self.cut_power();
                    } else if stack {
                        self.state = State::Stacking(note);
                    } else {
                        self.state = State::Returning(note);
                    }
                    frame(ACK, &[])
                }
                _ => frame(INVALID_COMMAND, &[]),
            },
            (0x44 | 0x45, 0) => match self.state {
                State::Escrow(_) => frame(ACK, &[]),
                _ => frame(INVALID_COMMAND, &[]),
            },
            (ACK, 0) => {
                if let State::VendValid(note) = self.state {
                    if self.lose_next_ack {
                        self.lose_next_ack = false;
                        self.tally.acks_ignored += 1;
                        self.say(|| "did not hear the host's ACK".into());
                    } else {
                        self.tally.credited.push(note.yuan);
                        self.tally.cash_box.push(note.yuan);
                        self.state = State::Stacked;
                        self.say(|| {
                            format!("host acknowledged CNY {}: in the cash box", note.yuan)
                        });
                    }
                }
                return None;
            }
            (0xC0, 2) => {
                self.mask = u16::from_le_bytes([data[0], data[1]]);
                whole.to_vec()
            }
            (0xC3, 1) => {
                self.inhibited = data[0] != 0;
                whole.to_vec()
            }
            _ => frame(INVALID_COMMAND, &[]),
        };
        Some(answer)
    }

    /// The reset command: a banknote left in the head is given back, one past it is stacked
    /// (without VEND VALID); physical faults stay.
    fn reset(&mut self) {
        match self.state {
            State::PowerUp(BillAt::Acceptor(yuan)) => self.tally.returned.push(yuan),
            State::PowerUp(BillAt::Stacker(yuan)) => self.tally.cash_box.push(yuan),
            State::Escrow(n) | State::Returning(n) => self.tally.returned.push(n.yuan),
            State::Stacking(n) | State::VendValid(n) => self.tally.cash_box.push(n.yuan),
            State::Fault(_) => return,
            _ => {}
        }
        self.state = State::Initializing;
    }

    /// Line faults applied to an answer on its way out.
    fn garble(&mut self, mut answer: Vec<u8>) -> Vec<u8> {
        if std::mem::take(&mut self.garbage_next) {
            return GARBAGE.to_vec();
        }
        if std::mem::take(&mut self.bad_crc_next) {
            let last = answer.len() - 1;
            answer[last] ^= 0xFF;
        }
        answer
    }
}

/// Takes the next frame with a good CRC out of `rx`, dropping noise and frames with a bad CRC.
fn next_frame(rx: &mut Vec<u8>) -> Option<Vec<u8>> {
    loop {
        let start = rx.iter().position(|&b| b == SYNC);
        rx.drain(..start.unwrap_or(rx.len()));
        if rx.len() < 2 {
            return None;
        }
        let len = usize::from(rx[1]);
        if len < 5 {
            rx.remove(0);
            continue;
        }
        if rx.len() < len {
            return None;
        }
        let candidate: Vec<u8> = rx[..len].to_vec();
        let crc = u16::from_le_bytes([candidate[len - 2], candidate[len - 1]]);
        if crc == crc16_kermit(&candidate[..len - 2]) {
            rx.drain(..len);
            return Some(candidate);
        }
        rx.remove(0);
    }
}

fn lock(v: &Mutex<Validator>) -> MutexGuard<'_, Validator> {
    v.lock().unwrap_or_else(|p| p.into_inner())
}

/// A simulated validator serving one end of a pty pair; the host opens [`path`](Self::path).
/// Dropping it stops the validator.
pub struct SimulatedValidator {
    path: String,
    validator: Arc<Mutex<Validator>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    /// The host's end, held open so the validator's end never sees a hang-up while the host
    /// closes and reopens the port.
    _host_end: TTYPort,
}

impl SimulatedValidator {
    /// A validator just powered up (it reports POWER UP until the host resets it).
    pub fn start() -> std::io::Result<SimulatedValidator> {
        Self::start_inner(None)
    }

    /// As [`start`](Self::start), telling `log` what the validator does with the host's
    /// commands (stacks, returns, ACKs heard and missed, power cycles).
    pub fn start_logging(log: impl FnMut(&str) + Send + 'static) -> std::io::Result<Self> {
        Self::start_inner(Some(Box::new(log)))
    }

    fn start_inner(log: Option<Log>) -> std::io::Result<Self> {
        let (mut validator_end, host_end) = TTYPort::pair()?;
        let path = host_end
            .name()
            .ok_or_else(|| std::io::Error::other("the pty has no name"))?;
        validator_end.set_timeout(Duration::from_millis(20))?;
        let validator = Arc::new(Mutex::new(Validator {
            log,
            ..Validator::new()
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let validator = validator.clone();
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("id003-validator".into())
                .spawn(move || serve(validator_end, &validator, &stop))?
        };
        Ok(SimulatedValidator {
            path,
            validator,
            stop,
            thread: Some(thread),
            _host_end: host_end,
        })
    }

    /// The serial port the host opens (`/dev/pts/N`).
    pub fn path(&self) -> &str {
        &self.path
    }

    pub fn act(&self, action: Action) {
        lock(&self.validator).act(action);
    }

    pub fn tally(&self) -> Tally {
        lock(&self.validator).tally.clone()
    }

    /// Whether the host has inhibited the validator (C3): it takes no banknote in.
    pub fn inhibited(&self) -> bool {
        lock(&self.validator).inhibited
    }

    /// The customer walks away: the banknotes still in their hand (queued, not yet drawn in)
    /// are never inserted. Returns how many there were.
    pub fn walk_away(&self) -> usize {
        let mut v = lock(&self.validator);
        let before = v.queue.len();
        v.queue.retain(|a| !a.is_banknote());
        before - v.queue.len()
    }

    /// Whether every scripted banknote has been dealt with and the validator is idle.
    pub fn is_idle(&self) -> bool {
        let v = lock(&self.validator);
        v.queue.is_empty() && v.state == State::Ready
    }
}

impl Drop for SimulatedValidator {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn serve(mut port: TTYPort, validator: &Mutex<Validator>, stop: &AtomicBool) {
    let mut rx = Vec::new();
    let mut buf = [0u8; 256];
    while !stop.load(Ordering::Relaxed) {
        match port.read(&mut buf) {
            Ok(n) => rx.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => continue,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            // With the host's end held open this does not happen; if it does, the line is gone.
            Err(_) => return,
        }
        while let Some(frame) = next_frame(&mut rx) {
            let answer = {
                let mut v = lock(validator);
                if v.deaf_for > 0 {
                    v.deaf_for -= 1;
                    continue;
                }
                let len = frame.len();
                v.hear(frame[2], &frame[3..len - 2], &frame)
                    .map(|answer| v.garble(answer))
            };
            if let Some(answer) = answer
                && port.write_all(&answer).is_err()
            {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status_request() -> Vec<u8> {
        frame(0x11, &[])
    }

    #[test]
    fn the_status_request_frame_is_the_documented_one() {
        assert_eq!(status_request(), [0xFC, 0x05, 0x11, 0x27, 0x56]);
    }

    #[test]
    fn frames_are_found_in_noise_and_bad_crcs_are_dropped() {
        let mut bad = status_request();
        bad[4] ^= 1;
        let mut rx = b"noise".to_vec();
        rx.extend(&bad);
        rx.extend(frame(0x50, &[]));
        rx.extend(&status_request()[..3]);
        assert_eq!(next_frame(&mut rx), Some(frame(0x50, &[])));
        assert_eq!(next_frame(&mut rx), None);
        assert_eq!(rx, status_request()[..3]);
    }

    #[test]
    fn a_banknote_walks_through_escrow_one_status_request_at_a_time() {
        fn ask(v: &mut Validator, cmd: u8, data: &[u8]) -> Option<Vec<u8>> {
            v.hear(cmd, data, &frame(cmd, data))
        }
        let mut v = Validator::new();
        assert_eq!(ask(&mut v, 0x11, &[]), Some(frame(0x40, &[])));
        assert_eq!(ask(&mut v, 0x40, &[]), Some(frame(ACK, &[])));
        assert_eq!(ask(&mut v, 0xC3, &[0]), Some(frame(0xC3, &[0])));
        v.act(Action::Insert(20));
        let statuses: Vec<_> = (0..4).map(|_| ask(&mut v, 0x11, &[]).unwrap()).collect();
        assert_eq!(
            statuses,
            [
                frame(0x1B, &[]),
                frame(0x11, &[]),
                frame(0x12, &[]),
                frame(0x13, &[0x64])
            ]
        );
        assert_eq!(ask(&mut v, 0x41, &[]), Some(frame(ACK, &[])));
        assert_eq!(ask(&mut v, 0x11, &[]), Some(frame(0x14, &[])));
        assert_eq!(ask(&mut v, 0x11, &[]), Some(frame(0x15, &[])));
        assert_eq!(ask(&mut v, ACK, &[]), None);
        assert_eq!(ask(&mut v, 0x11, &[]), Some(frame(0x16, &[])));
        assert_eq!(v.tally.credited, [20]);
    }
}
