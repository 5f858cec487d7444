//! The kit's checks of a card codec: it claims its card and no other, reads it, writes a
//! grant exactly once whatever moment the card is pulled, refuses grants that are not this
//! card's next, presents the PSC at most once, and answers every bad answer with a typed
//! error, within the kiosk's limits.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::card::{CardData, CardError, CreditGrant, Identification, VerifyOutcome, WriteAuth};
use crate::money::{Fen, Wh};
use crate::plugin::{CardCodecSession, CodecError, Plugin};

use super::card_bench::{
    Bench, Fault, ForeignCpuCard, FreshCard, KitAuthority, PscIssuer, VirtualCard, authority,
    channel, lock,
};
use super::card_sim::CardSim;
use super::memory_card::{MemoryCard, MemoryType};
use super::{Check, Report, Stopwatch};

/// The card the codec is tested on, as it is before every scenario.
pub enum CardSource {
    Memory {
        card: MemoryCard,
        psc: Vec<u8>,
    },
    /// A vendor's virtual card (`--card-sim`), a fresh instance each time.
    Sim(CardSim),
}

impl CardSource {
    fn fresh(&self) -> FreshCard {
        match self {
            CardSource::Memory { card, psc } => (
                Box::new(card.clone()),
                Box::new(PscIssuer((!psc.is_empty()).then(|| psc.clone()))),
            ),
            CardSource::Sim(sim) => sim
                .fresh()
                .unwrap_or_else(|e| (Box::new(BrokenCard(e.clone())), Box::new(PscIssuer(None)))),
        }
    }

    fn memory_type(&self) -> Option<MemoryType> {
        match self {
            CardSource::Memory { card, .. } => Some(card.kind),
            CardSource::Sim(_) => None,
        }
    }
}

/// A simulator that could not start: every command fails with why, as a reader fault.
struct BrokenCard(String);

impl VirtualCard for BrokenCard {
    fn atr(&self) -> Vec<u8> {
        Vec::new()
    }

    fn reader_kind(&self) -> crate::card::ReaderKind {
        crate::card::ReaderKind::Contact
    }

    fn power_on(&mut self) {}

    fn command(&mut self, _: &[u8]) -> Result<super::memory_card::Answer, String> {
        Err(self.0.clone())
    }
}

/// What the grants the kit writes carry.
#[derive(Debug, Clone)]
pub struct GrantTerms {
    pub amount: Fen,
    pub energy: Wh,
    pub token: Vec<u8>,
}

/// A card in the kit's reader, with the channel and authority a plugin gets for it.
struct Inserted {
    bench: Arc<Mutex<Bench>>,
    authority: Arc<Mutex<KitAuthority>>,
}

impl Inserted {
    fn memory<R>(&self, f: impl FnOnce(&MemoryCard) -> R) -> Option<R> {
        let bench = lock(&self.bench);
        bench.card.as_memory().map(f)
    }

    fn trace(&self) -> Vec<String> {
        lock(&self.bench).take_trace()
    }
}

pub struct CodecKit<'p> {
    plugin: &'p Plugin,
    source: CardSource,
    terms: GrantTerms,
    watch: Stopwatch,
    counts: BTreeMap<String, u32>,
}

impl<'p> CodecKit<'p> {
    pub fn new(plugin: &'p Plugin, source: CardSource, terms: GrantTerms) -> Self {
        CodecKit {
            plugin,
            source,
            terms,
            watch: Stopwatch::default(),
            counts: BTreeMap::new(),
        }
    }

    /// Runs every check and reports.
    pub fn run(mut self) -> Report {
        let mut checks = Vec::new();
        self.checks(&mut checks);
        let deadline = self.plugin_deadline();
        let limits = match self.watch.slowest() {
            Some((call, took)) if took >= deadline => Check::fail(
                "limits",
                format!(
                    "{call} took {:.1} ms, past the kiosk's {} ms deadline",
                    took.as_secs_f64() * 1000.0,
                    deadline.as_millis()
                ),
            ),
            Some((call, took)) => Check::pass(
                "limits",
                format!(
                    "slowest call {call}, {:.2} ms (deadline {} ms, memory cap {} MiB)",
                    took.as_secs_f64() * 1000.0,
                    deadline.as_millis(),
                    self.plugin_memory_mib()
                ),
            ),
            None => Check::pass("limits", "no call was made"),
        };
        checks.push(limits);
        Report::of(self.plugin, checks, self.counts, self.watch.timings())
    }

    fn plugin_deadline(&self) -> std::time::Duration {
        self.plugin.limits().call_deadline
    }

    fn plugin_memory_mib(&self) -> usize {
        self.plugin.limits().memory_bytes >> 20
    }

    fn checks(&mut self, checks: &mut Vec<Check>) {
        let Some(mut session) = self.session(checks, "about") else {
            return;
        };
        match session.about() {
            Ok(info) => checks.push(Check::pass(
                "about",
                format!("{} {} {}", info.vendor, info.name, info.version),
            )),
            Err(e) => checks.push(Check::fail("about", e.to_string())),
        }

        // Its own card.
        let card = self.insert();
        let Some(mut session) = self.session(checks, "identify") else {
            return;
        };
        let id = match self.identify(&mut session, &card) {
            Ok(Some(id)) => {
                checks.push(Check::pass(
                    "identify",
                    format!(
                        "claims the card as {} (a write needs {})",
                        id.card_type,
                        match id.write_auth {
                            WriteAuth::None => "nothing",
                            WriteAuth::Psc => "the PSC",
                            WriteAuth::EncryptionMachine => "the encryption machine",
                        }
                    ),
                ));
                id
            }
            Ok(None) => {
                checks.push(
                    Check::fail("identify", "none: the codec does not claim its own card")
                        .with_trace(card.trace())
                        .with_log(session.log()),
                );
                return;
            }
            Err(e) => {
                checks.push(failed_call("identify", &Err::<(), _>(e), &card, &session));
                return;
            }
        };
        checks.push(self.identify_others());
        let data = match self.read(&mut session, &card) {
            Ok(data) => {
                checks.push(Check::pass(
                    "read",
                    format!(
                        "card {} of utility {}, purchase count {}, pending {}",
                        data.card_serial,
                        data.utility_code,
                        data.purchase_count,
                        data.pending
                            .as_ref()
                            .map_or("none".into(), |p| format!("purchase {}", p.purchase_count))
                    ),
                ));
                data
            }
            Err(e) => {
                checks.push(failed_call("read", &Err::<(), _>(e), &card, &session));
                return;
            }
        };
        let (Some(next), Some(past)) = (
            data.purchase_count.checked_add(1),
            data.purchase_count.checked_add(2),
        ) else {
            checks.push(Check::fail(
                "read",
                format!(
                    "purchase count {} leaves no next purchase",
                    data.purchase_count
                ),
            ));
            return;
        };
        let grant = self.grant(&data, next);
        let Some(write_bytes) = self.clean_write(checks, &id, &data, &grant) else {
            return;
        };
        checks.push(self.refused_grant(
            "grant for another card",
            CreditGrant {
                card_serial: other_serial(&data.card_serial),
                ..grant.clone()
            },
        ));
        checks
            .push(self.refused_grant("grant with a count past the next", self.grant(&data, past)));
        checks.push(self.refused_grant(
            "grant with the card's own count",
            CreditGrant {
                amount: Fen(self.terms.amount.0.saturating_add(100)),
                ..self.grant(&data, data.purchase_count)
            },
        ));
        if id.write_auth == WriteAuth::Psc {
            checks.push(self.wrong_psc(&grant));
        }
        checks.push(self.tears(&data, &grant, write_bytes));
        checks.push(self.faults(&grant));
    }

    fn grant(&self, data: &CardData, purchase_count: u32) -> CreditGrant {
        CreditGrant {
            card_serial: data.card_serial.clone(),
            purchase_count,
            amount: self.terms.amount,
            energy: self.terms.energy,
            token: self.terms.token.clone(),
        }
    }

    fn insert(&self) -> Inserted {
        let (card, issuer) = self.source.fresh();
        Inserted {
            bench: Bench::new(card),
            authority: KitAuthority::new(issuer),
        }
    }

    fn session(&self, checks: &mut Vec<Check>, call: &str) -> Option<CardCodecSession> {
        match self.plugin.card_session() {
            Ok(s) => Some(s),
            Err(e) => {
                checks.push(Check::fail(
                    call,
                    format!("could not start an instance: {e}"),
                ));
                None
            }
        }
    }

    /// A fresh instance; a kit scenario that cannot start one reports it as its failure.
    fn fresh(&self) -> Result<CardCodecSession, String> {
        self.plugin
            .card_session()
            .map_err(|e| format!("could not start an instance: {e}"))
    }

    fn timed<R>(&mut self, call: &str, card: &Inserted, f: impl FnOnce() -> R) -> R {
        lock(&card.bench).mark();
        let started = Instant::now();
        let r = f();
        self.watch.record(call, started.elapsed());
        let apdus = lock(&card.bench).apdus;
        self.counts.entry(format!("{call} APDUs")).or_insert(apdus);
        r
    }

    fn identify(
        &mut self,
        s: &mut CardCodecSession,
        card: &Inserted,
    ) -> Result<Option<Identification>, CodecError> {
        let ch = channel(&card.bench);
        self.timed("identify", card, || s.identify(&ch))
    }

    fn read(&mut self, s: &mut CardCodecSession, card: &Inserted) -> Result<CardData, CodecError> {
        let ch = channel(&card.bench);
        self.timed("read", card, || s.read(&ch))
    }

    fn write(
        &mut self,
        s: &mut CardCodecSession,
        card: &Inserted,
        grant: &CreditGrant,
    ) -> Result<(), CodecError> {
        let ch = channel(&card.bench);
        let auth = authority(&card.authority);
        self.timed("write-credit", card, || s.write_credit(&ch, grant, &auth))
    }

    fn verify(
        &mut self,
        s: &mut CardCodecSession,
        card: &Inserted,
        grant: &CreditGrant,
    ) -> Result<VerifyOutcome, CodecError> {
        let ch = channel(&card.bench);
        self.timed("verify", card, || s.verify(&ch, grant))
    }

    /// Blank memory cards of every type and a CPU card of nobody's: none is the codec's.
    fn identify_others(&mut self) -> Check {
        let mut others: Vec<(String, Box<dyn VirtualCard>)> = MemoryType::ALL
            .iter()
            .map(|t| {
                let card: Box<dyn VirtualCard> = Box::new(MemoryCard::blank(*t));
                (format!("a blank {t}"), card)
            })
            .collect();
        others.push((
            "a CPU card of another vendor".into(),
            Box::new(ForeignCpuCard),
        ));
        let mut offered = Vec::new();
        for (what, card) in others {
            let card = Inserted {
                bench: Bench::new(card),
                authority: KitAuthority::new(Box::new(PscIssuer(None))),
            };
            let mut s = match self.fresh() {
                Ok(s) => s,
                Err(e) => return Check::fail("identify other cards", e),
            };
            match self.identify(&mut s, &card) {
                Ok(None) => offered.push(what),
                Ok(Some(id)) => {
                    return Check::fail(
                        "identify other cards",
                        format!("claims {what} as {}", id.card_type),
                    )
                    .with_trace(card.trace())
                    .with_log(s.log());
                }
                Err(e) => {
                    return Check::fail(
                        "identify other cards",
                        format!("{what}: an error where `none` belongs: {e}"),
                    )
                    .with_trace(card.trace())
                    .with_log(s.log());
                }
            }
        }
        Check::pass(
            "identify other cards",
            format!("none for {}", offered.join(", ")),
        )
    }

    /// Writes `grant` onto a fresh card and reads it back; returns the bytes (or APDUs) the
    /// write took, the points the tear check cuts at.
    fn clean_write(
        &mut self,
        checks: &mut Vec<Check>,
        id: &Identification,
        data: &CardData,
        grant: &CreditGrant,
    ) -> Option<u32> {
        let card = self.insert();
        let mut s = match self.fresh() {
            Ok(s) => s,
            Err(e) => {
                checks.push(Check::fail("write-credit", e));
                return None;
            }
        };
        let before = self.verify(&mut s, &card, grant);
        if !matches!(before, Ok(VerifyOutcome::NotWritten)) {
            checks.push(failed_call(
                "verify before a write",
                &before.map(|v| format!("{v:?} for a grant never written")),
                &card,
                &s,
            ));
            return None;
        }
        lock(&card.bench).take_trace();
        let wrote = self.write(&mut s, &card, grant);
        let apdus = lock(&card.bench).apdus;
        let bytes = card.memory(|m| m.bytes_written);
        let presented = card.memory(|m| m.psc_presentations);
        let log = s.log();
        let trace = card.trace();
        if let Err(e) = wrote {
            checks.push(
                Check::fail("write-credit", format!("the grant was not written: {e}"))
                    .with_trace(trace)
                    .with_log(log),
            );
            return None;
        }
        let verified = self.verify(&mut s, &card, grant);
        // The kiosk writes a grant again when it cannot tell it landed: that must be harmless.
        if let Err(e) = self.write(&mut s, &card, grant) {
            checks.push(
                Check::fail(
                    "write-credit",
                    format!(
                        "writing the same grant again, onto a card that carries it, failed: {e}"
                    ),
                )
                .with_trace(card.trace())
                .with_log(s.log()),
            );
            return None;
        }
        lock(&card.bench).reinsert();
        let mut again = match self.fresh() {
            Ok(s) => s,
            Err(e) => {
                checks.push(Check::fail("write-credit", e));
                return None;
            }
        };
        let after = self.read(&mut again, &card);
        let problem = match (&verified, &after) {
            (Ok(VerifyOutcome::Written), Ok(after)) => credit_problem(data, grant, after),
            (Ok(VerifyOutcome::Written), Err(e)) => {
                Some(format!("the card does not read after the write: {e}"))
            }
            (Ok(v), _) => Some(format!("verify says {v:?} right after the write")),
            (Err(e), _) => Some(format!("verify failed after the write: {e}")),
        };
        if let Some(problem) = problem {
            checks.push(
                Check::fail("write-credit", problem)
                    .with_trace(trace)
                    .with_log(log),
            );
            return None;
        }
        if id.write_auth == WriteAuth::Psc && presented.unwrap_or(0) > 1 {
            checks.push(Check::fail(
                "write-credit",
                format!(
                    "the PSC was presented {} times in one write",
                    presented.unwrap_or(0)
                ),
            ));
        }
        let what = match bytes {
            Some(b) => format!("{apdus} APDUs, {b} bytes written"),
            None => format!("{apdus} APDUs"),
        };
        checks.push(
            Check::pass(
                "write-credit",
                format!(
                    "purchase {} for {} fen / {} Wh written and verified ({what})",
                    grant.purchase_count, grant.amount.0, grant.energy.0
                ),
            )
            .with_log(log),
        );
        Some(bytes.unwrap_or(apdus))
    }

    /// A grant the codec must refuse, with the card untouched and no PSC spent.
    fn refused_grant(&mut self, name: &str, grant: CreditGrant) -> Check {
        let card = self.insert();
        let mut s = match self.fresh() {
            Ok(s) => s,
            Err(e) => return Check::fail(name, e),
        };
        let before = card.memory(|m| m.memory.clone());
        let result = self.write(&mut s, &card, &grant);
        let written = card.memory(|m| m.bytes_written).unwrap_or(0);
        let presented = card.memory(|m| m.psc_presentations).unwrap_or(0);
        let changed = card.memory(|m| m.memory.clone()) != before;
        let fail = |detail: String| {
            Check::fail(name, detail)
                .with_trace(card.trace())
                .with_log(s.log())
        };
        match result {
            Ok(()) => fail(format!(
                "accepted: card {} purchase {} was written",
                grant.card_serial, grant.purchase_count
            )),
            Err(CodecError::Plugin(e)) => fail(e.to_string()),
            Err(CodecError::Card(e)) if written > 0 || changed => fail(format!(
                "refused ({e}), but only after {written} bytes were written"
            )),
            Err(CodecError::Card(e)) if presented > 0 => {
                fail(format!("refused ({e}), but only after presenting the PSC"))
            }
            Err(CodecError::Card(e @ (CardError::WrongCard(_) | CardError::GrantRejected(_)))) => {
                Check::pass(name, format!("refused with nothing written: {e}"))
            }
            Err(CodecError::Card(e)) => fail(format!(
                "refused with `{e}`; a grant that is not for this card is wrong-card, one that \
                 does not fit it grant-rejected"
            )),
        }
    }

    /// A wrong PSC: presented once, refused, never again.
    fn wrong_psc(&mut self, grant: &CreditGrant) -> Check {
        let name = "PSC presented at most once";
        let card = self.insert();
        lock(&card.authority).wrong_psc = true;
        let mut s = match self.fresh() {
            Ok(s) => s,
            Err(e) => return Check::fail(name, e),
        };
        let tries_before = card.memory(|m| m.tries_left()).unwrap_or(0);
        let result = self.write(&mut s, &card, grant);
        let presented = card.memory(|m| m.psc_presentations).unwrap_or(0);
        let tries_after = card.memory(|m| m.tries_left()).unwrap_or(0);
        let asked = lock(&card.authority).psc_requests;
        let fail = |detail: String| {
            Check::fail(name, detail)
                .with_trace(card.trace())
                .with_log(s.log())
        };
        if presented > 1 {
            return fail(format!(
                "a refused PSC was presented {presented} times: the card went from {tries_before} \
                 tries left to {tries_after}"
            ));
        }
        match result {
            Ok(()) => fail("the write succeeded with a wrong PSC".into()),
            Err(CodecError::Plugin(e)) => fail(e.to_string()),
            Err(CodecError::Card(CardError::PscRefused(left))) => {
                if u32::from(left) != tries_after {
                    fail(format!(
                        "reports {left} tries left; the card has {tries_after}"
                    ))
                } else {
                    Check::pass(
                        name,
                        format!(
                            "a wrong PSC was asked for {asked} time(s), presented once and \
                             reported: {left} tries left"
                        ),
                    )
                }
            }
            Err(CodecError::Card(e)) => fail(format!(
                "a wrong PSC gave `{e}`; the card's refusal is psc-refused with the tries left"
            )),
        }
    }

    /// Cuts the power after each byte (memory cards) or APDU of the write, then puts the card
    /// back as a customer would: verify, write again if not written, and read.
    fn tears(&mut self, data: &CardData, grant: &CreditGrant, points: u32) -> Check {
        let name = "tear-safe write";
        let by_byte = self.source.memory_type().is_some();
        let unit = if by_byte { "byte" } else { "APDU" };
        for k in 0..points {
            let card = self.insert();
            {
                let mut bench = lock(&card.bench);
                match bench.card.as_memory_mut() {
                    Some(m) => m.tear_after_bytes = Some(k),
                    None => bench.cut_before_apdu = Some(k),
                }
            }
            let at = format!("power cut after {k} of the write's {points} {unit}s");
            let mut s = match self.fresh() {
                Ok(s) => s,
                Err(e) => return Check::fail(name, e),
            };
            let first = self.write(&mut s, &card, grant);
            let mut log = s.log();
            if let Err(CodecError::Plugin(e)) = &first {
                return Check::fail(name, format!("{at}: {e}"))
                    .with_trace(card.trace())
                    .with_log(log);
            }
            if first.is_ok() {
                return Check::fail(name, format!("{at}: write-credit said it wrote"))
                    .with_trace(card.trace())
                    .with_log(log);
            }
            let written = card.memory(|m| m.bytes_written).unwrap_or(0);
            if let Err(CodecError::Card(
                e @ (CardError::GrantRejected(_) | CardError::WrongCard(_)),
            )) = &first
                && written > 0
            {
                return Check::fail(
                    name,
                    format!(
                        "{at}: reported `{e}` after writing {written} bytes: the kiosk takes that \
                         as nothing written"
                    ),
                )
                .with_trace(card.trace())
                .with_log(log);
            }
            lock(&card.bench).reinsert();
            let outcome = self.after_tear(&card, grant, &mut log);
            let problem = match outcome {
                Ok(after) => credit_problem(data, grant, &after),
                Err(e) => Some(e),
            };
            if let Some(problem) = problem {
                return Check::fail(name, format!("{at}: {problem}"))
                    .with_trace(card.trace())
                    .with_log(log);
            }
        }
        Check::pass(
            name,
            format!(
                "cut after each of the write's {points} {unit}s: every time the card still read \
                 and, written again and verified as the kiosk does, carried the credit once"
            ),
        )
    }

    /// What the kiosk does when a card pulled mid-write comes back: it reads the card, writes
    /// the grant again and verifies (`sale/card_write.rs`); a `grant-rejected` there makes it
    /// tell the backend "not written".
    fn after_tear(
        &mut self,
        card: &Inserted,
        grant: &CreditGrant,
        log: &mut String,
    ) -> Result<CardData, String> {
        let mut s = self.fresh()?;
        let result = (|| {
            let read = self
                .read(&mut s, card)
                .map_err(|e| format!("the card no longer reads: {e}"))?;
            let before = grant.purchase_count - 1;
            if read.purchase_count < before {
                return Err(format!(
                    "the card's purchase count went back from {before} to {}: the torn write \
                     destroyed the credit the card held",
                    read.purchase_count
                ));
            }
            match self.write(&mut s, card, grant) {
                Ok(()) => {}
                Err(CodecError::Card(CardError::GrantRejected(r)))
                    if read.purchase_count >= grant.purchase_count =>
                {
                    return Err(format!(
                        "the re-write was refused (grant rejected: {r}), so the kiosk would tell \
                         the backend \"not written\", but the card's purchase count is {}",
                        read.purchase_count
                    ));
                }
                Err(e) => return Err(format!("the re-write failed: {e}")),
            }
            match self.verify(&mut s, card, grant) {
                Ok(VerifyOutcome::Written) => {}
                Ok(v) => return Err(format!("after the re-write, verify says {v:?}")),
                Err(e) => return Err(format!("after the re-write, verify failed: {e}")),
            }
            lock(&card.bench).reinsert();
            let mut last = self.fresh()?;
            let r = self
                .read(&mut last, card)
                .map_err(|e| format!("after the re-write the card does not read: {e}"));
            log.push_str(&last.log());
            r
        })();
        log.push_str(&s.log());
        result
    }

    /// Bad answers at every APDU of every call: typed errors, never a trap.
    fn faults(&mut self, grant: &CreditGrant) -> Check {
        let name = "bad answers give typed errors";
        let mut runs = 0;
        for call in ["identify", "read", "write-credit", "verify"] {
            let apdus = self
                .counts
                .get(&format!("{call} APDUs"))
                .copied()
                .unwrap_or(0);
            for k in 0..apdus {
                for fault in Fault::ALL {
                    let card = self.insert();
                    lock(&card.bench).fault = Some((k, fault));
                    let mut s = match self.fresh() {
                        Ok(s) => s,
                        Err(e) => return Check::fail(name, e),
                    };
                    let ch = channel(&card.bench);
                    let auth = authority(&card.authority);
                    let result = match call {
                        "identify" => s.identify(&ch).map(|_| ()),
                        "read" => s.read(&ch).map(|_| ()),
                        "write-credit" => s.write_credit(&ch, grant, &auth),
                        _ => s.verify(&ch, grant).map(|_| ()),
                    };
                    runs += 1;
                    let written = card.memory(|m| m.bytes_written).unwrap_or(0);
                    if let Err(CodecError::Card(
                        e @ (CardError::GrantRejected(_) | CardError::WrongCard(_)),
                    )) = &result
                        && written > 0
                    {
                        return Check::fail(
                            name,
                            format!(
                                "{} at APDU {} of {call}: reported `{e}` after writing {written} \
                                 bytes: the kiosk takes that as nothing written",
                                fault.describe(),
                                k + 1
                            ),
                        )
                        .with_trace(card.trace())
                        .with_log(s.log());
                    }
                    let presented = card.memory(|m| m.psc_presentations).unwrap_or(0);
                    if call != "write-credit" && (written > 0 || presented > 0) {
                        return Check::fail(
                            name,
                            format!(
                                "{call} wrote {written} bytes onto the card and presented the PSC \
                                 {presented} times: only write-credit may"
                            ),
                        )
                        .with_trace(card.trace())
                        .with_log(s.log());
                    }
                    if presented > 1 {
                        return Check::fail(
                            name,
                            format!(
                                "{} at APDU {} of {call}: the PSC was presented {presented} times",
                                fault.describe(),
                                k + 1
                            ),
                        )
                        .with_trace(card.trace())
                        .with_log(s.log());
                    }
                    if let Err(CodecError::Plugin(e)) = result {
                        return Check::fail(
                            name,
                            format!("{} at APDU {} of {call}: {e}", fault.describe(), k + 1),
                        )
                        .with_trace(card.trace())
                        .with_log(s.log());
                    }
                }
            }
        }
        Check::pass(
            name,
            format!(
                "{runs} runs with a short, garbage or 6F00 answer, the card pulled before or \
                 after the command, a reader fault or the host refusing, at each APDU: all typed \
                 errors or success"
            ),
        )
    }
}

/// What is wrong with the card as read after `grant` was written, if anything.
fn credit_problem(before: &CardData, grant: &CreditGrant, after: &CardData) -> Option<String> {
    if after.purchase_count != grant.purchase_count {
        return Some(format!(
            "the card's purchase count is {}, where one credit makes it {}",
            after.purchase_count, grant.purchase_count
        ));
    }
    if after.card_serial != before.card_serial {
        return Some(format!(
            "the card's serial reads {} where it was {}",
            after.card_serial, before.card_serial
        ));
    }
    match &after.pending {
        None => Some(format!(
            "the card reads no pending credit where purchase {} was just written (the kiosk \
             relies on it to never write over a credit the meter has not taken)",
            grant.purchase_count
        )),
        Some(p)
            if p.purchase_count != grant.purchase_count
                || p.amount != grant.amount
                || p.energy != grant.energy =>
        {
            Some(format!(
                "the pending credit reads purchase {}, {} fen, {} Wh; the grant was purchase {}, \
                 {} fen, {} Wh",
                p.purchase_count,
                p.amount.0,
                p.energy.0,
                grant.purchase_count,
                grant.amount.0,
                grant.energy.0
            ))
        }
        _ => None,
    }
}

/// The failure of a call the rest of the checks need.
fn failed_call<T: std::fmt::Debug>(
    name: &str,
    result: &Result<T, CodecError>,
    card: &Inserted,
    session: &CardCodecSession,
) -> Check {
    let detail = match result {
        Ok(v) => format!("{v:?}"),
        Err(e) => e.to_string(),
    };
    Check::fail(name, detail)
        .with_trace(card.trace())
        .with_log(session.log())
}

/// A serial that is not `serial`: its last character changed.
fn other_serial(serial: &str) -> String {
    let mut chars: Vec<char> = serial.chars().collect();
    match chars.last_mut() {
        Some(c) => {
            *c = if *c == '9' {
                '8'
            } else if c.is_ascii_digit() {
                '9'
            } else {
                'X'
            }
        }
        None => chars.push('X'),
    }
    chars.into_iter().collect()
}
