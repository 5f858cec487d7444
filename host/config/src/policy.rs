//! `[policy]`: how hard the kiosk tries on its own before it hands something to an operator, and
//! what it takes from customers. Every key is optional; its default is the kiosk's long-standing
//! behaviour. Each value is bounded, and a bad one is refused with its line.

use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::Bounded;
use crate::money::Denomination;

/// The kiosk's own policy, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Automatic re-sells (补售电) of a sale that never reached its backend before an operator.
    pub resell_max_attempts: u32,
    /// The wait before the second re-sell; each later wait doubles.
    pub resell_first_delay: Duration,
    /// Times a granted sale's card may refuse its re-write before an operator.
    pub rewrite_max_attempts: u32,
    /// How long a banknote already drawn in is waited for (and the line settled) once the
    /// customer stops paying; past it the note is an operator item.
    pub note_in_flight_limit: Duration,
    /// A backend's "no such sale" proves a sale never reached it only once its request can no
    /// longer be in flight: this long after it was sent.
    pub unknown_outcome_settle: Duration,
    /// How long a sale's outcome may stay unknown (its backend not answering) before an
    /// operator is told; the kiosk keeps asking.
    pub unanswered_sale_alert: Duration,
    /// Failed tries at a reversal after which an operator is asked to check with the acquirer.
    pub reversal_alert_attempts: u32,
    /// How often a paired kiosk sends its fleet a heartbeat (and the journal it lacks).
    pub fleet_heartbeat: Duration,
    /// Wrong operator PINs in a row that lock PIN entry.
    pub operator_pin_tries: u32,
    pub operator_lockout: Duration,
    /// The banknotes the acceptor takes; it inhibits the others.
    pub accepted_notes: Vec<Denomination>,
    /// The customer's bank-card PIN length.
    pub customer_pin_min_digits: u8,
    pub customer_pin_max_digits: u8,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            resell_max_attempts: 3,
            resell_first_delay: Duration::from_secs(30),
            rewrite_max_attempts: 3,
            note_in_flight_limit: Duration::from_secs(30),
            unknown_outcome_settle: Duration::from_secs(60),
            unanswered_sale_alert: Duration::from_secs(3600),
            reversal_alert_attempts: 5,
            fleet_heartbeat: Duration::from_secs(5),
            operator_pin_tries: 5,
            operator_lockout: Duration::from_secs(15 * 60),
            accepted_notes: Denomination::ALL.to_vec(),
            customer_pin_min_digits: 4,
            customer_pin_max_digits: 12,
        }
    }
}

/// `[policy]` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PolicyFile {
    resell_max_attempts: Option<Bounded<1, 100>>,
    resell_first_delay_secs: Option<Bounded<0, 86_400>>,
    rewrite_max_attempts: Option<Bounded<1, 100>>,
    note_in_flight_limit_secs: Option<Bounded<1, 600>>,
    unknown_outcome_settle_secs: Option<Bounded<0, 86_400>>,
    unanswered_sale_alert_secs: Option<Bounded<1, 604_800>>,
    reversal_alert_attempts: Option<Bounded<1, 1000>>,
    fleet_heartbeat_secs: Option<Bounded<1, 3600>>,
    operator_pin_tries: Option<Bounded<1, 20>>,
    operator_lockout_secs: Option<Bounded<1, 86_400>>,
    accepted_yuan: Option<Spanned<Vec<Spanned<u64>>>>,
    customer_pin_min_digits: Option<Spanned<Bounded<4, 12>>>,
    customer_pin_max_digits: Option<Bounded<4, 12>>,
}

impl PolicyFile {
    /// The policy, or the span of the bad value and why.
    pub(super) fn check(self) -> Result<Policy, (std::ops::Range<usize>, String)> {
        let d = Policy::default();
        let secs = |b: Option<Bounded<0, 86_400>>, default: Duration| {
            b.map_or(default, |b| Duration::from_secs(b.0))
        };
        let mut accepted = Vec::new();
        if let Some(list) = self.accepted_yuan {
            let span = list.span();
            for yuan in list.into_inner() {
                let note = Denomination::from_yuan(*yuan.get_ref()).ok_or_else(|| {
                    (
                        yuan.span(),
                        format!(
                            "accepted_yuan: {} is not a banknote the kiosk takes (1, 5, 10, 20, \
                             50 or 100)",
                            yuan.get_ref()
                        ),
                    )
                })?;
                if accepted.contains(&note) {
                    return Err((
                        yuan.span(),
                        format!("accepted_yuan: {note} is listed twice"),
                    ));
                }
                accepted.push(note);
            }
            if accepted.is_empty() {
                return Err((
                    span,
                    "accepted_yuan: at least one banknote must be taken".into(),
                ));
            }
            accepted.sort();
        } else {
            accepted = d.accepted_notes.clone();
        }
        let min_pin = self
            .customer_pin_min_digits
            .as_ref()
            .map_or(d.customer_pin_min_digits, |m| m.get_ref().0 as u8);
        let max_pin = self
            .customer_pin_max_digits
            .map_or(d.customer_pin_max_digits, |m| m.0 as u8);
        if min_pin > max_pin {
            let span = self.customer_pin_min_digits.map_or(0..0, |m| m.span());
            return Err((
                span,
                format!(
                    "customer_pin_min_digits {min_pin} is above customer_pin_max_digits {max_pin}"
                ),
            ));
        }
        Ok(Policy {
            resell_max_attempts: self
                .resell_max_attempts
                .map_or(d.resell_max_attempts, |b| b.0 as u32),
            resell_first_delay: secs(self.resell_first_delay_secs, d.resell_first_delay),
            rewrite_max_attempts: self
                .rewrite_max_attempts
                .map_or(d.rewrite_max_attempts, |b| b.0 as u32),
            note_in_flight_limit: self
                .note_in_flight_limit_secs
                .map_or(d.note_in_flight_limit, |b| Duration::from_secs(b.0)),
            unknown_outcome_settle: secs(
                self.unknown_outcome_settle_secs,
                d.unknown_outcome_settle,
            ),
            unanswered_sale_alert: self
                .unanswered_sale_alert_secs
                .map_or(d.unanswered_sale_alert, |b| Duration::from_secs(b.0)),
            fleet_heartbeat: self
                .fleet_heartbeat_secs
                .map_or(d.fleet_heartbeat, |b| Duration::from_secs(b.0)),
            reversal_alert_attempts: self
                .reversal_alert_attempts
                .map_or(d.reversal_alert_attempts, |b| b.0 as u32),
            operator_pin_tries: self
                .operator_pin_tries
                .map_or(d.operator_pin_tries, |b| b.0 as u32),
            operator_lockout: self
                .operator_lockout_secs
                .map_or(d.operator_lockout, |b| Duration::from_secs(b.0)),
            accepted_notes: accepted,
            customer_pin_min_digits: min_pin,
            customer_pin_max_digits: max_pin,
        })
    }
}
