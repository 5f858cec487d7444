//! The ID-003 cash acceptor driver against the simulated validator over real ptys: what the
//! sale engine is told about each banknote and fault, what the validator ends up holding, and
//! `selfvend cash watch` against `selfvend-validator` as the README starts them.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use selfvend_host::cash_acceptor::{
    CashAcceptor, CashError, CashEvent, CashHandler, Denomination, EscrowDecision, Fault,
    NotRecorded, RejectReason,
};
use selfvend_host::id003::{Id003Acceptor, Id003Settings};
use selfvend_sim::id003_validator::{Action, GARBAGE, SimulatedValidator};
use selfvend_tests::selfvend_bin;

use CashEvent::{Accepting, Credited, Escrow, Returned, Stacked};
use Denomination::{Cny5, Cny10, Cny20, Cny50, Cny100};

const REPLY_TIMEOUT: Duration = Duration::from_millis(300);
/// "Returned within the deadline", with room for a loaded machine.
const PROMPTLY: Duration = Duration::from_secs(5);

/// The sale engine's stand-in: records every event and answers escrow as told.
struct Recorder {
    events: Vec<CashEvent>,
    decision: EscrowDecision,
    /// Refuse to record this many credits (a journal that is down).
    refuse_credits: u32,
    /// When set, how many banknotes the validator had counted as taken at each credit.
    validator: Option<Arc<SimulatedValidator>>,
    taken_when_credited: Vec<usize>,
}

impl Recorder {
    fn stacking() -> Recorder {
        Recorder {
            events: Vec::new(),
            decision: EscrowDecision::Stack,
            refuse_credits: 0,
            validator: None,
            taken_when_credited: Vec::new(),
        }
    }
}

impl CashHandler for Recorder {
    fn event(&mut self, event: &CashEvent) -> Result<(), NotRecorded> {
        if let Credited(_) = event {
            if let Some(validator) = &self.validator {
                self.taken_when_credited
                    .push(validator.tally().credited.len());
            }
            if self.refuse_credits > 0 {
                self.refuse_credits -= 1;
                return Err(NotRecorded("the journal is not writable".into()));
            }
        }
        self.events.push(*event);
        Ok(())
    }

    fn decide(&mut self, _: Denomination) -> EscrowDecision {
        self.decision
    }
}

struct Rig {
    validator: Arc<SimulatedValidator>,
    acceptor: Id003Acceptor,
    handler: Recorder,
}

impl Rig {
    /// A validator just powered up, and the driver on the other end of the pty with every
    /// denomination enabled, past the power up.
    fn new() -> Rig {
        let validator = Arc::new(SimulatedValidator::start().expect("start the validator"));
        let settings = Id003Settings {
            reply_timeout: REPLY_TIMEOUT,
            poll_interval: Duration::from_millis(1),
        };
        let acceptor =
            Id003Acceptor::open(Path::new(validator.path()), 9600, settings).expect("open");
        let mut rig = Rig {
            validator,
            acceptor,
            handler: Recorder::stacking(),
        };
        rig.acceptor.enable(&Denomination::ALL).expect("enable");
        assert_eq!(rig.settle(), [CashEvent::PowerUp { note: None }]);
        rig
    }

    fn act(&self, action: Action) {
        self.validator.act(action);
    }

    fn poll(&mut self) -> Result<(), CashError> {
        self.acceptor.poll(&mut self.handler)
    }

    /// Polls until the validator has dealt with everything scripted and is idle, and the
    /// driver has seen it idle; returns the events since the last call.
    fn settle(&mut self) -> Vec<CashEvent> {
        let mut seen_idle = false;
        for _ in 0..100 {
            self.poll().expect("poll");
            if seen_idle {
                return std::mem::take(&mut self.handler.events);
            }
            seen_idle = self.validator.is_idle();
        }
        panic!(
            "the validator did not settle; events so far: {:?}",
            self.handler.events
        );
    }

    /// Polls until an event matches `last`; returns the events since the last call.
    fn until(&mut self, last: impl Fn(&CashEvent) -> bool) -> Vec<CashEvent> {
        for _ in 0..100 {
            self.poll().expect("poll");
            if self.handler.events.last().is_some_and(&last) {
                return std::mem::take(&mut self.handler.events);
            }
        }
        panic!("no such event; events so far: {:?}", self.handler.events);
    }
}

fn yuan(d: Denomination) -> u32 {
    (d.value().0 / 100) as u32
}

fn through_escrow(d: Denomination) -> [CashEvent; 4] {
    [Accepting, Escrow(d), Credited(d), Stacked(d)]
}

#[test]
fn every_denomination_goes_through_escrow_into_the_cash_box() {
    let mut rig = Rig::new();
    for d in Denomination::ALL {
        rig.act(Action::Insert(yuan(d)));
        assert_eq!(rig.settle(), through_escrow(d), "{d}");
    }
    let tally = rig.validator.tally();
    assert_eq!(tally.credited, [1, 5, 10, 20, 50, 100]);
    assert_eq!(tally.cash_box, [1, 5, 10, 20, 50, 100]);
    assert!(tally.returned.is_empty());
}

#[test]
fn a_host_return_gives_the_banknote_back_uncredited() {
    let mut rig = Rig::new();
    rig.handler.decision = EscrowDecision::Return;
    for d in Denomination::ALL {
        rig.act(Action::Insert(yuan(d)));
        assert_eq!(rig.settle(), [Accepting, Escrow(d), Returned(d)], "{d}");
    }
    assert_eq!(
        Returned(Cny50).to_string(),
        "returned: CNY 50 given back, not credited"
    );
    let tally = rig.validator.tally();
    assert_eq!(tally.returned, [1, 5, 10, 20, 50, 100]);
    assert!(tally.credited.is_empty() && tally.cash_box.is_empty());
}

#[test]
fn a_credit_is_acknowledged_only_after_the_engine_recorded_it() {
    let mut rig = Rig::new();
    rig.handler.validator = Some(rig.validator.clone());
    rig.handler.refuse_credits = 1;
    rig.act(Action::Insert(20));
    let refused = loop {
        match rig.poll() {
            Ok(()) => continue,
            Err(e) => break e,
        }
    };
    assert!(
        matches!(
            refused,
            CashError::NotRecorded {
                event: Credited(Cny20),
                ..
            }
        ),
        "{refused:?}"
    );
    assert_eq!(
        refused.to_string(),
        format!(
            "{}: credited: CNY 20: not recorded: the journal is not writable",
            rig.validator.path()
        )
    );
    assert!(rig.validator.tally().credited.is_empty());

    // The validator keeps saying VEND VALID; the driver asks again, and only then ACKs.
    assert_eq!(rig.settle(), through_escrow(Cny20));
    assert_eq!(rig.handler.taken_when_credited, [0, 0]);
    assert_eq!(rig.validator.tally().credited, [20]);
}

#[test]
fn a_lost_acknowledgement_credits_one_banknote() {
    let mut rig = Rig::new();
    rig.act(Action::LoseNextAck);
    rig.act(Action::Insert(50));
    assert_eq!(rig.settle(), through_escrow(Cny50));
    let tally = rig.validator.tally();
    assert_eq!(tally.acks_ignored, 1);
    assert_eq!(tally.credited, [50]);

    // A second banknote of the same value is a second credit.
    rig.act(Action::Insert(50));
    assert_eq!(rig.settle(), through_escrow(Cny50));
    assert_eq!(rig.validator.tally().cash_box, [50, 50]);
}

#[test]
fn rejected_banknotes_are_reported_with_their_reason() {
    let mut rig = Rig::new();
    let reasons = [
        (0x71, RejectReason::Insertion),
        (0x72, RejectReason::MagneticPattern),
        (0x73, RejectReason::RemainingInHead),
        (0x74, RejectReason::Compensation),
        (0x75, RejectReason::Conveying),
        (0x76, RejectReason::DenominationAssessing),
        (0x77, RejectReason::PhotoPattern),
        (0x78, RejectReason::PhotoLevel),
        (0x79, RejectReason::Inhibited),
        (0x7A, RejectReason::Other(0x7A)),
        (0x7B, RejectReason::Operation),
        (0x7C, RejectReason::RemainingInStacker),
        (0x7D, RejectReason::Length),
        (0x7E, RejectReason::PhotoPatternSecond),
    ];
    for (code, reason) in reasons {
        rig.act(Action::Counterfeit(code));
        assert_eq!(
            rig.settle(),
            [Accepting, CashEvent::Rejected(reason)],
            "{code:02X}"
        );
    }
    assert_eq!(
        CashEvent::Rejected(RejectReason::PhotoPattern).to_string(),
        "rejected: photo pattern error"
    );
    assert_eq!(
        CashEvent::Rejected(RejectReason::Other(0x7A)).to_string(),
        "rejected: reason code 7A"
    );

    // A note the validator does not know, and one the host has not enabled.
    rig.act(Action::Insert(2));
    assert_eq!(
        rig.settle(),
        [
            Accepting,
            CashEvent::Rejected(RejectReason::DenominationAssessing)
        ]
    );
    rig.acceptor.enable(&[Cny10, Cny20]).unwrap();
    rig.act(Action::Insert(5));
    assert_eq!(
        rig.settle(),
        [Accepting, CashEvent::Rejected(RejectReason::Inhibited)]
    );
    rig.act(Action::Insert(10));
    assert_eq!(rig.settle(), through_escrow(Cny10));
    assert_eq!(rig.validator.tally().credited, [10]);
}

#[test]
fn a_banknote_outside_the_currency_table_is_given_back() {
    let mut rig = Rig::new();
    rig.act(Action::MisreportedBanknote(0x67));
    assert_eq!(
        rig.settle(),
        [Accepting, CashEvent::UnknownBanknote { code: 0x67 }]
    );
    let tally = rig.validator.tally();
    assert_eq!(tally.returned.len(), 1);
    assert!(tally.credited.is_empty());
}

#[test]
fn jams_are_reported_with_the_banknote_caught_in_them() {
    let mut rig = Rig::new();
    rig.act(Action::JamInAcceptor);
    let jam = CashEvent::Fault {
        fault: Fault::AcceptorJam,
        note: None,
    };
    assert_eq!(
        rig.until(|e| matches!(e, CashEvent::Fault { .. })),
        [Accepting, jam]
    );
    assert_eq!(
        jam.to_string(),
        "fault: acceptor jam: a banknote is stuck in the acceptor"
    );
    rig.act(Action::Clear);
    assert_eq!(rig.settle(), [CashEvent::FaultCleared(Fault::AcceptorJam)]);

    rig.act(Action::JamInStacker(20));
    let jam = CashEvent::Fault {
        fault: Fault::StackerJam,
        note: Some(Cny20),
    };
    assert_eq!(
        rig.until(|e| matches!(e, CashEvent::Fault { .. })),
        [Accepting, Escrow(Cny20), jam]
    );
    assert_eq!(
        jam.to_string(),
        "fault: stacker jam: a banknote is stuck on its way to the cash box \
         (the CNY 20 banknote seen in escrow was not credited)"
    );
    rig.act(Action::Clear);
    assert_eq!(rig.settle(), [CashEvent::FaultCleared(Fault::StackerJam)]);
    assert_eq!(
        CashEvent::FaultCleared(Fault::StackerJam).to_string(),
        "cleared: stacker jam"
    );
    assert!(rig.validator.tally().credited.is_empty());
}

#[test]
fn a_removed_or_full_cash_box_stops_the_acceptor_until_seen_to() {
    let mut rig = Rig::new();
    rig.act(Action::RemoveBox);
    rig.act(Action::Insert(100));
    let removed = CashEvent::Fault {
        fault: Fault::CashBoxRemoved,
        note: None,
    };
    assert_eq!(
        rig.until(|e| matches!(e, CashEvent::Fault { .. })),
        [removed]
    );
    assert_eq!(removed.to_string(), "fault: cash box removed");
    for _ in 0..5 {
        rig.poll().unwrap();
    }
    assert!(rig.handler.events.is_empty(), "{:?}", rig.handler.events);

    // The banknote waiting in the customer's hand goes in once the box is back.
    rig.act(Action::ReplaceBox);
    let mut expected = vec![CashEvent::FaultCleared(Fault::CashBoxRemoved)];
    expected.extend(through_escrow(Cny100));
    assert_eq!(rig.settle(), expected);

    rig.act(Action::BoxFull);
    let full = CashEvent::Fault {
        fault: Fault::CashBoxFull,
        note: None,
    };
    assert_eq!(rig.until(|e| matches!(e, CashEvent::Fault { .. })), [full]);
    assert_eq!(full.to_string(), "fault: cash box full");
    rig.act(Action::Clear);
    assert_eq!(rig.settle(), [CashEvent::FaultCleared(Fault::CashBoxFull)]);
}

#[test]
fn a_power_cycle_with_a_banknote_in_the_path_is_reported_and_not_credited() {
    let mut rig = Rig::new();
    rig.act(Action::PowerCycleWithBillInAcceptor(10));
    let in_acceptor = CashEvent::PowerUpWithBillInAcceptor { note: Some(Cny10) };
    assert_eq!(rig.settle(), [Accepting, Escrow(Cny10), in_acceptor]);
    assert_eq!(
        in_acceptor.to_string(),
        "power up with a banknote in the acceptor: given back to the customer \
         (the CNY 10 banknote seen in escrow was not credited)"
    );
    let tally = rig.validator.tally();
    assert_eq!(tally.returned, [10]);
    assert!(tally.credited.is_empty() && tally.cash_box.is_empty());

    rig.act(Action::PowerCycleWithBillInStacker(100));
    let in_stacker = CashEvent::PowerUpWithBillInStacker { note: Some(Cny100) };
    assert_eq!(rig.settle(), [Accepting, Escrow(Cny100), in_stacker]);
    assert_eq!(
        in_stacker.to_string(),
        "power up with a banknote in the stacker: stacked without credit \
         (the CNY 100 banknote seen in escrow was not credited)"
    );
    let tally = rig.validator.tally();
    assert_eq!(tally.cash_box, [100]);
    assert!(tally.credited.is_empty());

    // The driver reset the validator and enabled it again.
    rig.act(Action::PowerCycle);
    rig.act(Action::Insert(5));
    let mut expected = vec![CashEvent::PowerUp { note: None }];
    expected.extend(through_escrow(Cny5));
    assert_eq!(rig.settle(), expected);
    assert_eq!(rig.validator.tally().credited, [5]);
}

#[test]
fn garbage_bad_crcs_and_silence_are_typed_errors_and_the_line_recovers() {
    let mut rig = Rig::new();
    let port = rig.validator.path().to_string();

    rig.act(Action::Garbage);
    let started = Instant::now();
    match rig.poll() {
        Err(CashError::Garbage { got, .. }) => assert_eq!(got, GARBAGE),
        other => panic!("expected garbage, got {other:?}"),
    }
    assert!(started.elapsed() < PROMPTLY);
    rig.poll().expect("the next poll is answered");

    rig.act(Action::BadCrc);
    let err = rig.poll().expect_err("a bad CRC");
    assert!(matches!(err, CashError::BadCrc { .. }), "{err:?}");
    // The idle status FC 05 11 has CRC 5627; the simulator flipped the high byte.
    assert_eq!(
        err.to_string(),
        format!("{port}: frame CRC A927 does not match 5627")
    );

    rig.act(Action::Silence(1));
    let started = Instant::now();
    let err = rig.poll().expect_err("silence");
    assert!(matches!(err, CashError::Timeout { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!("{port}: no answer from the cash acceptor within 300 ms")
    );
    assert!(started.elapsed() < PROMPTLY);

    rig.act(Action::Insert(20));
    assert_eq!(rig.settle(), through_escrow(Cny20));
    assert_eq!(rig.validator.tally().credited, [20]);
}

#[test]
fn a_device_that_never_answers_times_out() {
    let validator = SimulatedValidator::start().expect("start the validator");
    validator.act(Action::Silence(u32::MAX));
    let settings = Id003Settings {
        reply_timeout: REPLY_TIMEOUT,
        poll_interval: Duration::from_millis(1),
    };
    let mut acceptor = Id003Acceptor::open(Path::new(validator.path()), 9600, settings).unwrap();
    let started = Instant::now();
    let err = acceptor.enable(&Denomination::ALL).unwrap_err();
    assert!(matches!(err, CashError::Timeout { .. }), "{err:?}");
    let mut handler = Recorder::stacking();
    for _ in 0..3 {
        let err = acceptor.poll(&mut handler).unwrap_err();
        assert!(matches!(err, CashError::Timeout { .. }), "{err:?}");
    }
    assert!(started.elapsed() < PROMPTLY);
    assert!(handler.events.is_empty());
}

#[test]
fn opening_a_port_that_does_not_exist_names_it() {
    let err = Id003Acceptor::open(
        Path::new("/dev/no-such-validator"),
        9600,
        Id003Settings::default(),
    )
    .err()
    .expect("no such port");
    assert!(
        err.to_string()
            .starts_with("/dev/no-such-validator: cannot open the cash acceptor: "),
        "{err}"
    );
}

/// `selfvend-validator` as the README starts it: its pty and its stdin.
struct ValidatorProcess {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    path: String,
}

impl ValidatorProcess {
    fn start() -> ValidatorProcess {
        let bin = selfvend_bin().with_file_name("selfvend-validator");
        let mut child = Command::new(&bin)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{}: {e}", bin.display()));
        let stdin = child.stdin.take().expect("stdin");
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut first = String::new();
        stdout.read_line(&mut first).expect("first line");
        let path = first
            .strip_prefix("validator on ")
            .unwrap_or_else(|| panic!("unexpected first line {first:?}"))
            .trim()
            .to_string();
        ValidatorProcess {
            child,
            stdin,
            stdout,
            path,
        }
    }

    fn send(&mut self, line: &str) {
        writeln!(self.stdin, "{line}").expect("write to the validator");
    }

    /// The next line of its output starting with `prefix`.
    fn line_starting(&mut self, prefix: &str) -> String {
        loop {
            let mut line = String::new();
            let n = self
                .stdout
                .read_line(&mut line)
                .expect("read the validator");
            assert!(n > 0, "the validator ended before printing {prefix:?}");
            if line.starts_with(prefix) {
                return line.trim_end().to_string();
            }
        }
    }
}

impl Drop for ValidatorProcess {
    fn drop(&mut self) {
        let _ = writeln!(self.stdin, "quit");
        let _ = self.child.wait();
    }
}

fn cash_watch(config: &Path, args: &[&str]) -> (String, String) {
    let out = Command::new(selfvend_bin())
        .arg("--config")
        .arg(config)
        .args(["cash", "watch"])
        .args(args)
        .output()
        .expect("run selfvend");
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    assert!(out.status.success(), "{}", text(&out.stderr));
    (text(&out.stdout), text(&out.stderr))
}

fn kiosk_config(dir: &Path, cash_port: &str) -> PathBuf {
    let path = dir.join("kiosk.toml");
    std::fs::write(
        &path,
        format!(
            r#"
[kiosk]
terminal_id = "CASH-0001"
region = "3701"
data_dir = "data"

[trust]
dir = "trust"

[devices]
cash_acceptor = {{ port = "{cash_port}", baud = 9600 }}
"#
        ),
    )
    .unwrap();
    path
}

#[test]
fn an_operator_watches_the_simulated_validator() {
    let mut validator = ValidatorProcess::start();
    let dir = tempfile::tempdir().unwrap();
    let config = kiosk_config(dir.path(), &validator.path);
    validator.send("insert 10");
    validator.send("insert 100");
    let (stdout, stderr) = cash_watch(
        Path::new("/nonexistent.toml"),
        &["--port", &validator.path, "--events", "9"],
    );
    assert_eq!(
        stdout,
        format!(
            "cash acceptor on {} (ID-003, 9600 8E1): accepting CNY 1, 5, 10, 20, 50 and 100\n\
             power up\n\
             accepting a banknote\n\
             escrow: CNY 10, stacking it\n\
             credited: CNY 10\n\
             stacked: CNY 10 in the cash box\n\
             accepting a banknote\n\
             escrow: CNY 100, stacking it\n\
             credited: CNY 100\n\
             stacked: CNY 100 in the cash box\n\
             credited in total: 110.00 yuan\n",
            validator.path
        )
    );
    assert_eq!(stderr, "");

    // Again through the config's port, giving the note back; the validator was left
    // inhibited, so the note waits until the acceptor is enabled again.
    validator.send("insert 20");
    let (stdout, _) = cash_watch(&config, &["--return-all", "--events", "3"]);
    assert_eq!(
        stdout,
        format!(
            "cash acceptor on {} (ID-003, 9600 8E1): accepting CNY 1, 5, 10, 20, 50 and 100\n\
             accepting a banknote\n\
             escrow: CNY 20, returning it\n\
             returned: CNY 20 given back, not credited\n\
             credited in total: 0.00 yuan\n",
            validator.path
        )
    );

    validator.send("status");
    assert_eq!(
        validator.line_starting("credited"),
        "credited [10, 100], cash box [10, 100], returned [20], rejected [], ACKs missed 0"
    );
}

#[test]
fn cash_watch_without_a_configured_acceptor_says_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("kiosk.toml");
    std::fs::write(
        &config,
        "[kiosk]\nterminal_id = \"CASH-0002\"\nregion = \"3701\"\ndata_dir = \"data\"\n\
         [trust]\ndir = \"trust\"\n",
    )
    .unwrap();
    let out = Command::new(selfvend_bin())
        .arg("--config")
        .arg(&config)
        .args(["cash", "watch"])
        .output()
        .expect("run selfvend");
    assert!(!out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        format!(
            "selfvend: {} names no `[devices] cash_acceptor`; give --port\n",
            config.display()
        )
    );
}
