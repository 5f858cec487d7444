//! The kit's checks of a backend dialect: each call of the vendor's transcript replayed, then
//! again with the kit's faults (no reply after the request, a late reply, garbage, half the
//! reply, a refused connection), and every call of the contract tried: implemented, or
//! honestly not supported.
//!
//! The rules: a call that changes state and got no complete answer is `outcome-unknown`; no
//! fault is ever a refusal or a success; a reply that does not parse is `malformed-reply`,
//! saying what; nothing traps.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::backend::BackendError;
use crate::config::Endpoint;
use crate::payment::AcquirerError;
use crate::plugin::{
    AcquirerCallError, AcquirerSession, BackendSession, DialectError, Plugin, PluginError,
};

use super::peer::{Answer, Peer, Seen, closed_port};
use super::soft_pin_pad::SoftPinPad;
use super::spaced_hex;
use super::transcript::{AcquirerCall, BackendCall, Call, Exchange, Transcript};
use super::{Check, Report, Stopwatch};
use crate::plugin::log::mask_digits;

/// A contract the kit can drive: how to open a session and make each call.
pub trait Contract {
    type Call: Call;
    type Session;
    fn open(&self, plugin: &Plugin, endpoint: Endpoint) -> Result<Self::Session, PluginError>;
    fn about(&self, session: &mut Self::Session) -> Result<String, PluginError>;
    fn invoke(&self, session: &mut Self::Session, call: &Self::Call) -> Outcome;
    fn log(&self, session: &Self::Session) -> String;
    /// What the dialect answered to the last call that the kiosk did not take, as no answer
    /// came (a refusal, "not found").
    fn overruled(&self, session: &Self::Session) -> Option<String>;
    /// Secrets the calls so far returned (a PSC), each with what it is: never logged, never
    /// in an error.
    fn learned_secrets(&self) -> Vec<(&'static str, String)> {
        Vec::new()
    }
}

/// A utility backend's dialect (`selfvend:backend`).
#[derive(Default)]
pub struct Backend {
    /// Each PSC `card-password` returned, in upper and lower hex.
    pscs: Mutex<Vec<String>>,
}

impl Contract for Backend {
    type Call = BackendCall;
    type Session = BackendSession;

    fn open(&self, plugin: &Plugin, endpoint: Endpoint) -> Result<BackendSession, PluginError> {
        plugin.backend_session(endpoint)
    }

    fn about(&self, session: &mut BackendSession) -> Result<String, PluginError> {
        session
            .about()
            .map(|i| format!("{} {} {}", i.vendor, i.name, i.version))
    }

    fn invoke(&self, session: &mut BackendSession, call: &BackendCall) -> Outcome {
        Outcome::of(invoke(session, call, &self.pscs))
    }

    fn log(&self, session: &BackendSession) -> String {
        session.log()
    }

    fn overruled(&self, session: &BackendSession) -> Option<String> {
        session.overruled().map(str::to_string)
    }

    fn learned_secrets(&self) -> Vec<(&'static str, String)> {
        let pscs = self.pscs.lock().unwrap_or_else(|p| p.into_inner());
        pscs.iter().map(|p| ("the PSC", p.clone())).collect()
    }
}

/// An acquirer's dialect (`selfvend:payment`), MACing through the kit's software PIN pad.
pub struct Acquirer {
    pub pin_pad: Arc<Mutex<SoftPinPad>>,
}

impl Contract for Acquirer {
    type Call = AcquirerCall;
    type Session = AcquirerSession;

    fn open(&self, plugin: &Plugin, endpoint: Endpoint) -> Result<AcquirerSession, PluginError> {
        let security: Arc<Mutex<dyn crate::payment::Security>> = self.pin_pad.clone();
        plugin.acquirer_session(endpoint, Some(security))
    }

    fn about(&self, session: &mut AcquirerSession) -> Result<String, PluginError> {
        session
            .about()
            .map(|i| format!("{} {} {}", i.vendor, i.name, i.version))
    }

    fn invoke(&self, session: &mut AcquirerSession, call: &AcquirerCall) -> Outcome {
        let result = match call {
            AcquirerCall::SignOn {
                terminal,
                stan,
                batch,
            } => match session.sign_on(&terminal.terminal(), *stan, *batch) {
                Ok(keys) => {
                    let mut pad = self.pin_pad.lock().unwrap_or_else(|p| p.into_inner());
                    return match pad.load(&keys) {
                        Ok(()) => Outcome::Ok("working keys, loaded into the kit's PIN pad".into()),
                        Err(e) => Outcome::Malformed(format!(
                            "working keys the kit's PIN pad cannot load (--master-key): {e}"
                        )),
                    };
                }
                Err(e) => Err(e),
            },
            AcquirerCall::Purchase {
                terminal,
                stan,
                batch,
                amount,
                card,
                pin_block_hex,
            } => {
                let card = match card.card() {
                    Ok(c) => c,
                    Err(e) => return Outcome::Malformed(format!("the transcript's card: {e}")),
                };
                let pin_block = match pin_block_hex.as_deref().map(hex::decode) {
                    Some(Ok(b)) if b.len() == 8 => Some(b.try_into().expect("8 bytes")),
                    Some(_) => {
                        return Outcome::Malformed(
                            "the transcript's pin_block_hex: not 8 bytes of hex".into(),
                        );
                    }
                    None => None,
                };
                let request = crate::payment::PurchaseRequest {
                    terminal: terminal.terminal(),
                    stan: *stan,
                    batch: *batch,
                    amount: *amount,
                    card,
                    pin_block,
                };
                session.purchase(&request).map(|o| format!("{o:?}"))
            }
            AcquirerCall::Reversal {
                terminal,
                stan,
                batch,
                amount,
                card,
                reason,
            } => {
                let card = match card.card() {
                    Ok(c) => c,
                    Err(e) => return Outcome::Malformed(format!("the transcript's card: {e}")),
                };
                let request = crate::payment::ReversalRequest {
                    terminal: terminal.terminal(),
                    stan: *stan,
                    batch: *batch,
                    amount: *amount,
                    card,
                    reason: *reason,
                };
                session.reversal(&request).map(|()| "accepted".to_string())
            }
            AcquirerCall::Settle {
                terminal,
                stan,
                batch,
                count,
                amount,
            } => {
                let request = crate::payment::SettlementRequest {
                    terminal: terminal.terminal(),
                    stan: *stan,
                    batch: *batch,
                    count: *count,
                    amount: *amount,
                };
                session.settle(&request).map(|s| format!("{s:?}"))
            }
        };
        match result {
            Ok(v) => Outcome::Ok(short(&v)),
            Err(AcquirerCallError::Plugin(e)) => Outcome::Plugin(e.to_string()),
            Err(AcquirerCallError::Acquirer(e)) => match e {
                AcquirerError::Refused(t) => Outcome::Refused(t),
                AcquirerError::OutcomeUnknown(t) => Outcome::Unknown(t),
                AcquirerError::Unreachable(t) => Outcome::Unreachable(t),
                AcquirerError::MalformedReply(t) => Outcome::Malformed(t),
                AcquirerError::Security(t) => Outcome::Unreachable(format!("the PIN pad: {t}")),
            },
        }
    }

    fn log(&self, session: &AcquirerSession) -> String {
        session.log()
    }

    fn overruled(&self, session: &AcquirerSession) -> Option<String> {
        session.overruled().map(str::to_string)
    }
}

/// How long the kit's kiosk waits on each send and receive; a late reply comes after it.
const IO_TIMEOUT: Duration = Duration::from_millis(700);
const LATE_BY: Duration = Duration::from_millis(1200);

/// What a call came to, as the checks judge it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Ok(String),
    Refused(String),
    /// An answer the dialect made up with no answer from the peer (a refusal, "not found"),
    /// which the kiosk does not take (it is an unknown outcome there); judged as the dialect's
    /// own verdict.
    Overruled(String),
    Unknown(String),
    Unreachable(String),
    Malformed(String),
    NotSupported,
    Plugin(String),
}

impl Outcome {
    fn of(result: Result<String, DialectError>) -> Outcome {
        match result {
            Ok(v) => Outcome::Ok(short(&v)),
            Err(DialectError::Plugin(e)) => Outcome::Plugin(e.to_string()),
            Err(DialectError::Backend(e)) => match e {
                BackendError::Refused(r) => Outcome::Refused(r.message),
                BackendError::OutcomeUnknown(t) => Outcome::Unknown(t),
                BackendError::Unreachable(t) => Outcome::Unreachable(t),
                BackendError::MalformedReply(t) => Outcome::Malformed(t),
                BackendError::NotSupported => Outcome::NotSupported,
            },
        }
    }

    fn describe(&self) -> String {
        match self {
            Outcome::Ok(v) => format!("success ({v})"),
            Outcome::Refused(t) => format!("refused: {t}"),
            Outcome::Overruled(t) => format!("{t}, not taken by the kiosk"),
            Outcome::Unknown(t) => format!("outcome-unknown: {t}"),
            Outcome::Unreachable(t) => format!("unreachable: {t}"),
            Outcome::Malformed(t) => format!("malformed-reply: {t}"),
            Outcome::NotSupported => "not-supported".into(),
            Outcome::Plugin(t) => t.clone(),
        }
    }
}

fn short(text: &str) -> String {
    if text.chars().count() > 160 {
        format!("{}…", text.chars().take(160).collect::<String>())
    } else {
        text.to_string()
    }
}

/// A fault the kit plays in place of the recorded reply.
#[derive(Debug, Clone, Copy)]
enum Fault {
    NoReply,
    Late,
    Garbage,
    Truncated,
    Refused,
}

impl Fault {
    const ALL: [Fault; 5] = [
        Fault::NoReply,
        Fault::Late,
        Fault::Garbage,
        Fault::Truncated,
        Fault::Refused,
    ];

    fn describe(self) -> &'static str {
        match self {
            Fault::NoReply => "no reply after the request",
            Fault::Late => "a reply later than the kiosk waits",
            Fault::Garbage => "a garbage reply",
            Fault::Truncated => "half the reply",
            Fault::Refused => "a refused connection",
        }
    }
}

pub struct DialectKit<'p, K: Contract> {
    contract: K,
    plugin: &'p Plugin,
    transcript: Transcript<K::Call>,
    watch: Stopwatch,
    counts: BTreeMap<String, u32>,
    /// Card data found in a log: the call, what it was, and the line.
    leaks: Vec<(String, &'static str, String)>,
    runs: u32,
}

impl<'p, K: Contract> DialectKit<'p, K> {
    pub fn new(contract: K, plugin: &'p Plugin, transcript: Transcript<K::Call>) -> Self {
        DialectKit {
            contract,
            plugin,
            transcript,
            watch: Stopwatch::default(),
            counts: BTreeMap::new(),
            leaks: Vec::new(),
            runs: 0,
        }
    }

    /// Runs each call of the transcript against a real backend through a recording proxy,
    /// and returns the transcript with the bytes each call exchanged.
    pub fn record(
        contract: &K,
        plugin: &Plugin,
        transcript: &Transcript<K::Call>,
        upstream: &str,
    ) -> Result<Transcript<K::Call>, String> {
        let mut out = transcript.clone();
        for entry in &mut out.calls {
            let script = (0..8)
                .map(|_| (Answer::Proxy(upstream.to_string()), None))
                .collect();
            let peer =
                Peer::start(script).map_err(|e| format!("starting the recording proxy: {e}"))?;
            let mut session = contract
                .open(plugin, endpoint(&peer.addr.to_string()))
                .map_err(|e| e.to_string())?;
            let result = contract.invoke(&mut session, &entry.call);
            if let Outcome::Plugin(e) = &result {
                return Err(format!("{}: {e}", entry.call.name()));
            }
            drop(session);
            // The proxy's threads finish as the connections close.
            std::thread::sleep(Duration::from_millis(100));
            entry.exchanges = peer
                .seen()
                .iter()
                .map(|s| Exchange::recorded(&s.sent, &s.reply))
                .collect();
        }
        Ok(out)
    }

    pub fn run(mut self) -> Report {
        let mut checks = Vec::new();
        match self.contract.open(self.plugin, endpoint("127.0.0.1:9")) {
            Ok(mut s) => match self.contract.about(&mut s) {
                Ok(info) => checks.push(Check::pass("about", info)),
                Err(e) => checks.push(Check::fail("about", e.to_string())),
            },
            Err(e) => checks.push(Check::fail(
                "about",
                format!("could not start an instance: {e}"),
            )),
        }
        for entry in self.transcript.calls.clone() {
            let script: Vec<(Answer, Option<usize>)> = entry
                .exchanges
                .iter()
                .map(|x| {
                    let sent = x.sent_bytes().ok().flatten();
                    let len = sent.as_ref().map(Vec::len);
                    (Answer::Reply(x.reply_bytes().unwrap_or_default()), len)
                })
                .collect();
            checks.push(self.replay(&entry.call, &entry.exchanges, script.clone()));
            checks.push(self.faults(&entry.call, &script));
        }
        checks.push(self.contract_calls());
        if let Some(check) = self.leak_check() {
            checks.push(check);
        }
        Report::of(self.plugin, checks, self.counts, self.watch.timings())
    }

    /// Runs `call` against a peer playing `script`; returns the outcome, what the peer saw
    /// and the plugin's log.
    fn against(
        &mut self,
        call: &K::Call,
        script: Vec<(Answer, Option<usize>)>,
        address: Option<String>,
    ) -> Result<(Outcome, Vec<Seen>, String), String> {
        let peer = Peer::start(script).map_err(|e| format!("starting the kit's peer: {e}"))?;
        let address = address.unwrap_or_else(|| peer.addr.to_string());
        let mut session = self
            .contract
            .open(self.plugin, endpoint(&address))
            .map_err(|e| format!("could not start an instance: {e}"))?;
        let started = Instant::now();
        let mut outcome = self.contract.invoke(&mut session, call);
        self.watch.record(call.name(), started.elapsed());
        if let Some(refusal) = self.contract.overruled(&session) {
            outcome = Outcome::Overruled(refusal);
        }
        let log = self.contract.log(&session);
        drop(session);
        self.runs += 1;
        // Card data the call carries is masked in the report as the kiosk's log masks it; a
        // secret the peer returned (a PSC) is not shown at all.
        let secrets = call.secrets().into_iter().map(|(what, s)| (what, s, false));
        let learned = self.contract.learned_secrets().into_iter();
        let secrets = secrets.chain(learned.map(|(what, s)| (what, s, true)));
        // An error's text goes to the journal and the operator's screen, as a log line does.
        let error = match &outcome {
            Outcome::Ok(_) | Outcome::NotSupported => String::new(),
            o => o.describe(),
        };
        for (what, secret, hidden) in secrets {
            if let Some(line) = log
                .lines()
                .chain([error.as_str()])
                // Card data anywhere, a short PSC only as a token of its own.
                .find(|l| match hidden {
                    true => holds(l, &secret),
                    false => !secret.is_empty() && l.contains(&secret),
                })
            {
                let line = match hidden {
                    true => line.replace(&secret, "[…]"),
                    false => line.to_string(),
                };
                self.leaks.push((call.name().to_string(), what, line));
            }
        }
        Ok((outcome, peer.seen(), log))
    }

    fn replay(
        &mut self,
        call: &K::Call,
        recorded: &[Exchange],
        script: Vec<(Answer, Option<usize>)>,
    ) -> Check {
        let name = format!("{} replayed", call.name());
        let (outcome, seen, log) = match self.against(call, script, None) {
            Ok(r) => r,
            Err(e) => return Check::fail(&name, e),
        };
        self.counts
            .insert(format!("{} connections", call.name()), seen.len() as u32);
        let trace = trace(&seen);
        for (i, (x, s)) in recorded.iter().zip(&seen).enumerate() {
            if let Ok(Some(expected)) = x.sent_bytes()
                && expected != s.sent
            {
                let at = expected
                    .iter()
                    .zip(&s.sent)
                    .take_while(|(a, b)| a == b)
                    .count();
                return Check::fail(
                    &name,
                    format!(
                        "connection {}: the request differs from the transcript's at byte {at} \
                         (sent {} bytes, recorded {})",
                        i + 1,
                        s.sent.len(),
                        expected.len()
                    ),
                )
                .with_trace(trace)
                .with_log(log);
            }
        }
        if seen.len() != recorded.len() {
            return Check::fail(
                &name,
                format!(
                    "opened {} connection(s); the transcript recorded {}",
                    seen.len(),
                    recorded.len()
                ),
            )
            .with_trace(trace)
            .with_log(log);
        }
        match outcome {
            Outcome::Plugin(e) => Check::fail(&name, e).with_trace(trace).with_log(log),
            o @ (Outcome::Unknown(_)
            | Outcome::Unreachable(_)
            | Outcome::Malformed(_)
            | Outcome::Overruled(_)) => {
                Check::fail(&name, format!("the recorded reply gave {}", o.describe()))
                    .with_trace(trace)
                    .with_log(log)
            }
            o => Check::pass(&name, o.describe()).with_log(log),
        }
    }

    /// The kit's faults in place of each connection's reply in turn: never a success, never a
    /// refusal, never a trap, and a request that changes state is never sent twice.
    fn faults(&mut self, call: &K::Call, script: &[(Answer, Option<usize>)]) -> Check {
        let name = format!("{} under faults", call.name());
        let mut seen_outcomes = Vec::new();
        let connections = script.len().max(1);
        for at in 0..connections {
            for fault in Fault::ALL {
                let mut faulty: Vec<(Answer, Option<usize>)> =
                    script[..at.min(script.len())].to_vec();
                let (reply, expect) = match script.get(at) {
                    Some((Answer::Reply(r), expect)) => (r.clone(), *expect),
                    Some((_, expect)) => (Vec::new(), *expect),
                    None => (Vec::new(), None),
                };
                let answer = match fault {
                    Fault::NoReply | Fault::Refused => Answer::Silence,
                    Fault::Late => Answer::Late(reply.clone(), LATE_BY),
                    Fault::Garbage => Answer::Reply(garbage(reply.len())),
                    Fault::Truncated => Answer::Reply(reply[..reply.len() / 2].to_vec()),
                };
                faulty.push((answer, expect));
                // A connection refused is the first one's: nothing else is reachable either.
                let address = match fault {
                    Fault::Refused if at == 0 => match closed_port() {
                        Ok(a) => Some(a.to_string()),
                        Err(e) => return Check::fail(&name, e.to_string()),
                    },
                    Fault::Refused => continue,
                    _ => None,
                };
                let (outcome, seen, log) = match self.against(call, faulty, address) {
                    Ok(r) => r,
                    Err(e) => return Check::fail(&name, e),
                };
                let sent = seen.iter().any(|s| !s.sent.is_empty());
                if outcome == Outcome::NotSupported && !sent {
                    // Honestly not supported: nothing reached the backend, whatever it would do.
                    return Check::pass(&name, "not-supported, with nothing sent");
                }
                let requests = seen.iter().filter(|s| !s.sent.is_empty()).count();
                let wrong = match &outcome {
                    Outcome::Plugin(e) => Some(e.clone()),
                    Outcome::Ok(v) => Some(format!("succeeded ({v})")),
                    Outcome::Refused(t) if call.changes_state() => Some(format!(
                        "reported as a refusal (\"{t}\"): the kiosk would refund money the backend \
                         may have taken"
                    )),
                    Outcome::Refused(t) => Some(format!(
                        "reported as a refusal (\"{t}\"): the backend never said no"
                    )),
                    Outcome::Overruled(t) => Some(format!(
                        "reported {t} with no answer: it must be outcome-unknown (the kiosk \
                         does not take it)"
                    )),
                    Outcome::NotSupported => Some("sent a request, then said not-supported".into()),
                    o if call.changes_state() && sent && !matches!(o, Outcome::Unknown(_)) => {
                        Some(format!(
                            "{}, where the request was sent: it must be outcome-unknown",
                            o.describe()
                        ))
                    }
                    Outcome::Malformed(t) if t.trim().is_empty() => {
                        Some("malformed-reply without saying what is malformed".into())
                    }
                    _ if call.changes_state() && requests > script.len().max(1) => Some(format!(
                        "sent the request again ({requests} requests where the transcript has {}): \
                         a repeated request may change state twice",
                        script.len().max(1)
                    )),
                    _ => None,
                };
                let which = if connections > 1 {
                    format!("{} at connection {}", fault.describe(), at + 1)
                } else {
                    fault.describe().to_string()
                };
                if let Some(wrong) = wrong {
                    return Check::fail(&name, format!("{which}: {wrong}"))
                        .with_trace(trace(&seen))
                        .with_log(log);
                }
                seen_outcomes.push(format!("{which}: {}", kind_of(&outcome)));
            }
        }
        Check::pass(&name, seen_outcomes.join("; "))
    }

    /// Every call of the contract: one the transcript leaves out either sends a request (and,
    /// with no reply, says so) or says not-supported without sending anything.
    fn contract_calls(&mut self) -> Check {
        let name = "every call implemented or not-supported";
        let covered: Vec<&str> = self
            .transcript
            .calls
            .iter()
            .map(|e| e.call.name())
            .collect();
        let mut lines = Vec::new();
        for call in K::Call::every_call() {
            if covered.contains(&call.name()) {
                continue;
            }
            let (outcome, seen, log) =
                match self.against(&call, vec![(Answer::Silence, None)], None) {
                    Ok(r) => r,
                    Err(e) => return Check::fail(name, e),
                };
            let sent: usize = seen.iter().map(|s| s.sent.len()).sum();
            match (&outcome, sent) {
                (Outcome::Plugin(e), _) => {
                    return Check::fail(name, format!("{}: {e}", call.name())).with_log(log);
                }
                (Outcome::NotSupported, 0) => lines.push(format!("{} not-supported", call.name())),
                (Outcome::NotSupported, n) => {
                    return Check::fail(
                        name,
                        format!("{}: sent {n} bytes, then said not-supported", call.name()),
                    )
                    .with_trace(trace(&seen))
                    .with_log(log);
                }
                (Outcome::Ok(v), _) => {
                    return Check::fail(
                        name,
                        format!(
                            "{}: succeeded with no reply from the backend ({v})",
                            call.name()
                        ),
                    )
                    .with_log(log);
                }
                (Outcome::Refused(t), n) if n > 0 => {
                    return Check::fail(
                        name,
                        format!("{}: no reply, reported as a refusal (\"{t}\")", call.name()),
                    )
                    .with_trace(trace(&seen))
                    .with_log(log);
                }
                (Outcome::Overruled(t), _) => {
                    return Check::fail(name, format!("{}: no reply, reported {t}", call.name()))
                        .with_trace(trace(&seen))
                        .with_log(log);
                }
                (o, _) => lines.push(format!("{} implemented ({})", call.name(), kind_of(o))),
            }
        }
        if lines.is_empty() {
            Check::pass(name, "the transcript covers every call")
        } else {
            Check::pass(
                name,
                format!("calls not in the transcript: {}", lines.join(", ")),
            )
        }
    }
}

impl<K: Contract> DialectKit<'_, K> {
    /// Card data in a plugin's log: none, in every run the kit made.
    fn leak_check(&self) -> Option<Check> {
        let name = "no card data in the log";
        let carries = self
            .transcript
            .calls
            .iter()
            .any(|e| !e.call.secrets().is_empty());
        let contract_carries = K::Call::every_call()
            .iter()
            .any(|c| !c.secrets().is_empty());
        let learned = self.contract.learned_secrets();
        if !carries && !contract_carries && learned.is_empty() && self.leaks.is_empty() {
            return None;
        }
        Some(match self.leaks.first() {
            Some((call, what, line)) => {
                Check::fail(name, format!("{call} logged {what}: {}", mask_digits(line)))
            }
            None if carries || contract_carries => Check::pass(
                name,
                format!(
                    "no PAN, Track 2 or PIN block in the log or an error of any of {} runs",
                    self.runs
                ),
            ),
            None => Check::pass(
                name,
                format!(
                    "no PSC in the log or an error of any run after card-password returned it \
                     ({} runs in all)",
                    self.runs
                ),
            ),
        })
    }
}

/// Whether `line` holds `secret` as a token of its own, not inside a longer run of digits and
/// letters (a PSC "000000" inside a card serial).
fn holds(line: &str, secret: &str) -> bool {
    !secret.is_empty()
        && line.match_indices(secret).any(|(at, _)| {
            let before = line[..at].chars().next_back();
            let after = line[at + secret.len()..].chars().next();
            !before.is_some_and(|c| c.is_ascii_alphanumeric())
                && !after.is_some_and(|c| c.is_ascii_alphanumeric())
        })
}

fn kind_of(o: &Outcome) -> &'static str {
    match o {
        Outcome::Ok(_) => "success",
        Outcome::Refused(_) => "refused",
        Outcome::Overruled(_) => "made up, overruled",
        Outcome::Unknown(_) => "outcome-unknown",
        Outcome::Unreachable(_) => "unreachable",
        Outcome::Malformed(_) => "malformed-reply",
        Outcome::NotSupported => "not-supported",
        Outcome::Plugin(_) => "trap",
    }
}

fn endpoint(address: &str) -> Endpoint {
    Endpoint {
        address: address.to_string(),
        connect_timeout: Duration::from_secs(2),
        io_timeout: IO_TIMEOUT,
        max_request_bytes: 1 << 20,
        max_reply_bytes: 1 << 20,
    }
}

/// Deterministic bytes that mean nothing: no protocol's framing, digits or braces.
fn garbage(len: usize) -> Vec<u8> {
    let mut x = 0x2545_F491u32;
    (0..len.max(16))
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            0x80 | (x as u8 & 0x7F)
        })
        .collect()
}

fn trace(seen: &[Seen]) -> Vec<String> {
    let mut lines = Vec::new();
    for (i, s) in seen.iter().enumerate() {
        lines.push(format!("-- connection {}", i + 1));
        lines.push(format!("> {}", shown(&s.sent)));
        lines.push(format!("< {}", shown(&s.reply)));
    }
    lines
}

/// Bytes as text when they read as text, else hex; cut at 600 characters.
fn shown(bytes: &[u8]) -> String {
    let text = match std::str::from_utf8(bytes) {
        Ok(t) if t.chars().all(|c| !c.is_control() || c == '\n' || c == '\r') => {
            t.escape_debug().to_string()
        }
        _ => spaced_hex(bytes),
    };
    if bytes.is_empty() {
        "(nothing)".into()
    } else {
        short_n(&text, 600)
    }
}

fn short_n(text: &str, n: usize) -> String {
    if text.chars().count() > n {
        format!("{}…", text.chars().take(n).collect::<String>())
    } else {
        text.to_string()
    }
}

/// One call of the contract on `session`.
fn invoke(
    session: &mut BackendSession,
    call: &BackendCall,
    pscs: &Mutex<Vec<String>>,
) -> Result<String, DialectError> {
    let d = |v: &dyn std::fmt::Debug| format!("{v:?}");
    Ok(match call {
        BackendCall::Ping => d(&session.ping()?),
        BackendCall::AccountQuery { card } => d(&session.account_query(card)?),
        BackendCall::CanBuy { card, purchase } => d(&session.can_buy(card, *purchase)?),
        BackendCall::Sale { sale } => d(&session.sale(sale)?),
        BackendCall::SaleStatus {
            terminal_id,
            kiosk_serial,
        } => d(&session.sale_status(terminal_id, *kiosk_serial)?),
        BackendCall::ConfirmWrite { confirmation } => d(&session.confirm_write(confirmation)?),
        BackendCall::CardPassword { card } => {
            let psc = session.card_password(card)?;
            // Shorter, and its hex would turn up in logs by chance.
            if psc.len() >= 3 {
                let mut pscs = pscs.lock().unwrap_or_else(|p| p.into_inner());
                pscs.push(hex::encode_upper(&psc));
                pscs.push(hex::encode(&psc));
            }
            format!("a PSC of {} bytes", psc.len())
        }
        BackendCall::Reconcile { report } => d(&session.reconcile(report)?),
        BackendCall::Quote { card, purchase } => d(&session.quote(card, *purchase)?),
        BackendCall::BillQuery { customer_number } => d(&session.bill_query(customer_number)?),
        BackendCall::BillPay { payment } => d(&session.bill_pay(payment)?),
        BackendCall::BillPaymentStatus {
            terminal_id,
            kiosk_serial,
        } => d(&session.bill_payment_status(terminal_id, *kiosk_serial)?),
    })
}
