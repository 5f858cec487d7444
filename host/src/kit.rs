//! The vendor's conformance kit (`selfvend plugin test`): a plugin run on the kiosk's own
//! runtime and limits against a virtual card or a scripted peer, and a report of what it did.
//!
//! `codec_checks` runs a card codec against `memory_card`s (or a vendor's `card_sim`),
//! cutting the power at every byte of a credit write; `dialect_checks` runs a backend or
//! acquirer dialect against `peer`, which replays a vendor's `transcript` and the kit's faults.

pub mod card_bench;
pub mod card_sim;
pub mod codec_checks;
pub mod dialect_checks;
pub mod memory_card;
pub mod peer;
pub mod soft_pin_pad;
pub mod transcript;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;

/// One check the kit ran.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: String,
    pub passed: bool,
    /// What was seen: on a failure, what was wrong and where.
    pub detail: String,
    /// The APDUs or bytes of the scenario that failed.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub trace: Vec<String>,
    /// What the plugin logged in that scenario.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub log: String,
}

impl Check {
    pub fn pass(name: &str, detail: impl Into<String>) -> Check {
        Check {
            name: name.into(),
            passed: true,
            detail: detail.into(),
            trace: Vec::new(),
            log: String::new(),
        }
    }

    pub fn fail(name: &str, detail: impl Into<String>) -> Check {
        Check {
            passed: false,
            ..Check::pass(name, detail)
        }
    }

    pub fn with_trace(mut self, trace: Vec<String>) -> Check {
        self.trace = trace;
        self
    }

    pub fn with_log(mut self, log: String) -> Check {
        self.log = log;
        self
    }
}

/// How long one kind of call took, over every time the kit made it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Timing {
    pub calls: u32,
    pub p50_us: u64,
    pub max_us: u64,
}

/// Durations per call name, summarised as `Timing`s.
#[derive(Debug, Default)]
pub struct Stopwatch(BTreeMap<String, Vec<Duration>>);

impl Stopwatch {
    pub fn record(&mut self, call: &str, took: Duration) {
        self.0.entry(call.to_string()).or_default().push(took);
    }

    pub fn slowest(&self) -> Option<(&str, Duration)> {
        self.0
            .iter()
            .filter_map(|(call, d)| d.iter().max().map(|m| (call.as_str(), *m)))
            .max_by_key(|(_, d)| *d)
    }

    pub fn timings(&self) -> BTreeMap<String, Timing> {
        self.0
            .iter()
            .map(|(call, durations)| {
                let mut d = durations.clone();
                d.sort();
                let us = |d: Duration| d.as_micros() as u64;
                let timing = Timing {
                    calls: d.len() as u32,
                    p50_us: us(d[d.len() / 2]),
                    max_us: us(*d.last().expect("recorded at least once")),
                };
                (call.clone(), timing)
            })
            .collect()
    }
}

/// What the kit found.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub plugin: String,
    pub kind: String,
    pub contract: String,
    /// The first line: every check passed, or the first that failed and why.
    pub summary: String,
    pub passed: bool,
    pub checks: Vec<Check>,
    /// APDUs (or connections) per call in a clean run.
    pub counts: BTreeMap<String, u32>,
    pub timings: BTreeMap<String, Timing>,
}

impl Report {
    pub fn new(
        plugin: &str,
        kind: &str,
        contract: &str,
        checks: Vec<Check>,
        counts: BTreeMap<String, u32>,
        timings: BTreeMap<String, Timing>,
    ) -> Report {
        let failed: Vec<&Check> = checks.iter().filter(|c| !c.passed).collect();
        let summary = match failed.first() {
            None => format!("PASS {plugin}: all {} checks passed", checks.len()),
            Some(first) => format!(
                "FAIL {plugin}: {}: {} ({} of {} checks failed)",
                first.name,
                first.detail,
                failed.len(),
                checks.len()
            ),
        };
        Report {
            plugin: plugin.into(),
            kind: kind.into(),
            contract: contract.into(),
            passed: failed.is_empty(),
            summary,
            checks,
            counts,
            timings,
        }
    }

    /// The report on `plugin`.
    pub fn of(
        plugin: &crate::plugin::Plugin,
        checks: Vec<Check>,
        counts: BTreeMap<String, u32>,
        timings: BTreeMap<String, Timing>,
    ) -> Report {
        let contract = format!("{}@{}", plugin.kind().package(), plugin.inspection.version);
        let kind = plugin.kind().to_string();
        Report::new(&plugin.name, &kind, &contract, checks, counts, timings)
    }

    /// One report of several runs of the same plugin (a codec on several cards): each check
    /// and count named after its run.
    pub fn combine(runs: Vec<(String, Report)>) -> Report {
        let Some((_, first)) = runs.first() else {
            return Report::new("", "", "", Vec::new(), BTreeMap::new(), BTreeMap::new());
        };
        let (plugin, kind, contract) = (
            first.plugin.clone(),
            first.kind.clone(),
            first.contract.clone(),
        );
        let mut checks = Vec::new();
        let mut counts = BTreeMap::new();
        let mut timings = BTreeMap::new();
        for (label, report) in runs {
            for mut check in report.checks {
                check.name = format!("{label}: {}", check.name);
                checks.push(check);
            }
            for (k, v) in report.counts {
                counts.insert(format!("{label}: {k}"), v);
            }
            for (k, v) in report.timings {
                timings.insert(format!("{label}: {k}"), v);
            }
        }
        Report::new(&plugin, &kind, &contract, checks, counts, timings)
    }

    /// The report as a person reads it: the summary first, then each check.
    pub fn text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "{}", self.summary);
        let _ = writeln!(
            out,
            "plugin {} ({}, {})",
            self.plugin, self.kind, self.contract
        );
        for check in &self.checks {
            let mark = if check.passed { "pass" } else { "FAIL" };
            let _ = writeln!(out, "  {mark}  {}: {}", check.name, check.detail);
            if !check.trace.is_empty() {
                let _ = writeln!(out, "        trace:");
                for line in &check.trace {
                    let _ = writeln!(out, "          {line}");
                }
            }
            if !check.log.trim().is_empty() {
                let _ = writeln!(out, "        plugin log:");
                for line in check.log.trim_end().lines() {
                    let _ = writeln!(out, "          {line}");
                }
            }
        }
        if !self.counts.is_empty() {
            let counts: Vec<String> = self
                .counts
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect();
            let _ = writeln!(out, "counts in a clean run: {}", counts.join(", "));
        }
        if !self.timings.is_empty() {
            let _ = writeln!(out, "timings per call (the plugin and its card or peer):");
            for (call, t) in &self.timings {
                let _ = writeln!(
                    out,
                    "  {call}: {} calls, p50 {:.2} ms, max {:.2} ms",
                    t.calls,
                    t.p50_us as f64 / 1000.0,
                    t.max_us as f64 / 1000.0
                );
            }
        }
        let failed = self.checks.iter().filter(|c| !c.passed).count();
        let _ = writeln!(
            out,
            "{} checks: {} passed, {failed} failed",
            self.checks.len(),
            self.checks.len() - failed
        );
        out
    }
}

/// Bytes as the report shows them: upper-case hex in pairs.
pub fn spaced_hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(" ")
}
