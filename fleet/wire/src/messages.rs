//! The messages, as JSON bodies. Each one the server takes is checked field by field
//! ([`PairRequest::check`] and siblings): the error names the field and what is wrong with it.

use serde::{Deserialize, Serialize};

use crate::AuditRow;
use crate::rollout::{Desired, RolloutStep, is_sha256};

/// Rows in one journal batch, at most.
pub const MAX_BATCH_ROWS: usize = 500;
/// A request body, at most.
pub const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;
/// A short text field (names, states, versions), at most, in characters.
const MAX_TEXT: usize = 200;
/// A count, an amount in fen or a serial, at most (far beyond any real one, and within what a
/// database's `bigint` and a JavaScript number hold exactly).
const MAX_NUMBER: u64 = 1 << 52;
/// Devices, plugins or denominations in one heartbeat, at most.
pub const MAX_LIST: usize = 64;

/// A kiosk pairs with a one-time code an admin made in the console.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PairRequest {
    pub code: String,
    pub terminal_id: String,
    pub region: String,
    /// The kiosk's Ed25519 public key, 32 bytes in hex.
    pub public_key: String,
    pub software_version: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PairReply {
    /// The kiosk's id at the fleet, sent with every later request.
    pub kiosk_id: String,
}

/// Audit rows in chain order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JournalBatch {
    pub rows: Vec<AuditRow>,
}

/// What the server holds of a kiosk's journal after a batch: the kiosk resumes after `head`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JournalAck {
    pub head: i64,
}

/// One device as the kiosk sees it now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceReport {
    /// `card-reader`, `bank-card-reader`, `validator`, `printer`, `pin-pad`, `backend`,
    /// `acquirer`.
    pub device: String,
    /// Which one, when there can be several (a backend's name).
    pub name: String,
    /// `ok`, `fault`, `paper-near-end`, `paper-out`, `jammed`, `cash-box-full`, `absent`, ….
    pub state: String,
    /// What the kiosk says of it, as text.
    pub detail: String,
}

/// The cash box: banknotes by denomination (yuan) and what it holds at most.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct CashBox {
    pub notes: Vec<(u32, u32)>,
    pub capacity: u32,
}

impl CashBox {
    pub fn count(&self) -> u32 {
        self.notes
            .iter()
            .fold(0u32, |sum, (_, n)| sum.saturating_add(*n))
    }

    pub fn fen(&self) -> u64 {
        self.notes.iter().fold(0u64, |sum, (yuan, n)| {
            sum.saturating_add(u64::from(*yuan) * 100 * u64::from(*n))
        })
    }
}

/// The clearing period's totals so far.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct PeriodTotals {
    pub period: i64,
    pub sales: u32,
    pub sales_fen: u64,
    pub bill_payments: u32,
    pub bill_payments_fen: u64,
}

/// A loaded plugin, its version and who signed it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginReport {
    pub name: String,
    pub version: String,
    pub signer: String,
    /// The component's SHA-256 in hex (an older kiosk sends none).
    #[serde(default)]
    pub sha256: String,
}

/// An operator item open at the kiosk (money the kiosk could not settle by itself).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenItem {
    pub id: i64,
    /// The sale or bill payment it is about, if any.
    pub serial: Option<u64>,
    /// The card's serial, or a bill payment's account number.
    pub card: String,
    /// Why it is open, in the kiosk's words.
    pub reason: String,
    /// A banknote the acceptor caught and did not credit, in fen (0: none, or of unknown value).
    pub caught_fen: u64,
}

/// Every few seconds: what the kiosk shows and holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// The screen shown (`attract`, `paying`, `out-of-service`, …) and for how long.
    pub screen: String,
    pub screen_secs: u64,
    /// Money in the customer session under way, if any.
    pub money_in_fen: u64,
    pub devices: Vec<DeviceReport>,
    pub cash_box: CashBox,
    pub open_items: u32,
    /// The open operator items, the oldest first, at most [`MAX_LIST`] of them (an older
    /// kiosk sends none).
    #[serde(default)]
    pub items: Vec<OpenItem>,
    pub period: PeriodTotals,
    pub software_version: String,
    pub plugins: Vec<PluginReport>,
    /// The newest audit row the kiosk has written.
    pub journal_head: i64,
    /// How far the kiosk is with each rollout the server last asked of it.
    #[serde(default)]
    pub rollouts: Vec<RolloutStep>,
    /// Remote commands done since the server last listed them.
    #[serde(default)]
    pub commands_done: Vec<crate::CommandDone>,
    /// Which version of the fleet's config the kiosk runs (an older kiosk sends none).
    #[serde(default)]
    pub config: Option<crate::ConfigReport>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeartbeatReply {
    /// What the server holds of the kiosk's journal.
    pub journal_head: i64,
    /// What the fleet wants the kiosk to run.
    #[serde(default)]
    pub desired: Desired,
}

/// `field` must be one line of printable text, at most [`MAX_TEXT`] characters.
fn text(field: &str, value: &str) -> Result<(), String> {
    if value.chars().count() > MAX_TEXT {
        return Err(format!("{field}: longer than {MAX_TEXT} characters"));
    }
    if value.chars().any(char::is_control) {
        return Err(format!("{field}: contains a control character"));
    }
    Ok(())
}

/// `value` is a UTC time as the journal writes it: `YYYY-MM-DDTHH:MM:SS`, an optional fraction,
/// then `Z` (so it sorts and compares as text).
fn is_utc_time(value: &str) -> bool {
    let b = value.as_bytes();
    let shape = b"dddd-dd-ddTdd:dd:dd";
    b.len() > shape.len()
        && b.len() <= 32
        && b.iter().zip(shape).all(|(c, s)| match s {
            b'd' => c.is_ascii_digit(),
            s => c == s,
        })
        && b[b.len() - 1] == b'Z'
        && match &b[shape.len()..b.len() - 1] {
            [] => true,
            [b'.', digits @ ..] => !digits.is_empty() && digits.iter().all(u8::is_ascii_digit),
            _ => false,
        }
}

fn non_empty(field: &str, value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Err(format!("{field}: empty"));
    }
    text(field, value)
}

fn list<T>(field: &str, items: &[T]) -> Result<(), String> {
    if items.len() > MAX_LIST {
        return Err(format!("{field}: more than {MAX_LIST} entries"));
    }
    Ok(())
}

impl PairRequest {
    pub fn check(&self) -> Result<(), String> {
        non_empty("code", &self.code)?;
        non_empty("terminal_id", &self.terminal_id)?;
        text("region", &self.region)?;
        text("software_version", &self.software_version)?;
        match hex::decode(&self.public_key) {
            Ok(key) if key.len() == 32 => Ok(()),
            _ => Err("public_key: not 32 bytes of hex".into()),
        }
    }
}

impl JournalBatch {
    pub fn check(&self) -> Result<(), String> {
        if self.rows.len() > MAX_BATCH_ROWS {
            return Err(format!("rows: more than {MAX_BATCH_ROWS}"));
        }
        for (i, row) in self.rows.iter().enumerate() {
            let at = |what: &str| format!("rows[{i}].{what}");
            if row.id < 1 || row.id > i64::MAX / 2 {
                return Err(format!("{}: not a row id", at("id")));
            }
            if !is_utc_time(&row.at) {
                return Err(format!(
                    "{}: not a UTC time like 2026-12-04T10:00:00.000Z",
                    at("at")
                ));
            }
            text(&at("kind"), &row.kind)?;
            if serde_json::from_str::<serde::de::IgnoredAny>(&row.body).is_err() {
                return Err(format!("{}: not JSON", at("body")));
            }
            for (name, hash) in [("prev_hash", &row.prev_hash), ("hash", &row.hash)] {
                if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(format!("{}: not a SHA-256 in hex", at(name)));
                }
            }
            if i > 0 && row.id != self.rows[i - 1].id + 1 {
                return Err(format!("{}: rows are not consecutive", at("id")));
            }
        }
        Ok(())
    }
}

impl Heartbeat {
    pub fn check(&self) -> Result<(), String> {
        non_empty("screen", &self.screen)?;
        text("software_version", &self.software_version)?;
        list("devices", &self.devices)?;
        for (i, d) in self.devices.iter().enumerate() {
            non_empty(&format!("devices[{i}].device"), &d.device)?;
            text(&format!("devices[{i}].name"), &d.name)?;
            non_empty(&format!("devices[{i}].state"), &d.state)?;
            text(&format!("devices[{i}].detail"), &d.detail)?;
        }
        list("cash_box.notes", &self.cash_box.notes)?;
        for (i, (yuan, count)) in self.cash_box.notes.iter().enumerate() {
            if !matches!(yuan, 1 | 5 | 10 | 20 | 50 | 100) {
                return Err(format!(
                    "cash_box.notes[{i}]: {yuan} yuan is not a banknote"
                ));
            }
            if *count > 100_000 {
                return Err(format!("cash_box.notes[{i}]: {count} notes"));
            }
        }
        if self.cash_box.capacity > 100_000 {
            return Err("cash_box.capacity: more than 100000 notes".into());
        }
        list("items", &self.items)?;
        for (i, item) in self.items.iter().enumerate() {
            if item.id < 1 {
                return Err(format!("items[{i}].id: not an item id"));
            }
            if item.serial.is_some_and(|s| s > MAX_NUMBER) {
                return Err(format!("items[{i}].serial: more than {MAX_NUMBER}"));
            }
            if item.caught_fen > MAX_NUMBER {
                return Err(format!("items[{i}].caught_fen: more than {MAX_NUMBER}"));
            }
            text(&format!("items[{i}].card"), &item.card)?;
            text(&format!("items[{i}].reason"), &item.reason)?;
        }
        for (field, n) in [
            ("screen_secs", self.screen_secs),
            ("money_in_fen", self.money_in_fen),
            ("period.sales_fen", self.period.sales_fen),
            ("period.bill_payments_fen", self.period.bill_payments_fen),
        ] {
            if n > MAX_NUMBER {
                return Err(format!("{field}: more than {MAX_NUMBER}"));
            }
        }
        list("plugins", &self.plugins)?;
        for (i, p) in self.plugins.iter().enumerate() {
            non_empty(&format!("plugins[{i}].name"), &p.name)?;
            text(&format!("plugins[{i}].version"), &p.version)?;
            text(&format!("plugins[{i}].signer"), &p.signer)?;
            if !p.sha256.is_empty() && !is_sha256(&p.sha256) {
                return Err(format!("plugins[{i}].sha256: not a SHA-256 in hex"));
            }
        }
        list("commands_done", &self.commands_done)?;
        for (i, c) in self.commands_done.iter().enumerate() {
            if c.id < 1 {
                return Err(format!("commands_done[{i}].id: not a command id"));
            }
            if c.outcome.chars().count() > 1000 || c.outcome.chars().any(char::is_control) {
                return Err(format!(
                    "commands_done[{i}].outcome: more than 1000 characters or a control character"
                ));
            }
        }
        if let Some(config) = &self.config {
            config.check()?;
        }
        list("rollouts", &self.rollouts)?;
        for (i, r) in self.rollouts.iter().enumerate() {
            if r.rollout < 1 {
                return Err(format!("rollouts[{i}].rollout: not a rollout id"));
            }
            non_empty(&format!("rollouts[{i}].name"), &r.name)?;
            if !is_sha256(&r.sha256) {
                return Err(format!("rollouts[{i}].sha256: not a SHA-256 in hex"));
            }
            if r.detail.chars().count() > 1000 || r.detail.chars().any(char::is_control) {
                return Err(format!(
                    "rollouts[{i}].detail: more than 1000 characters or a control character"
                ));
            }
        }
        if self.journal_head < 0 {
            return Err("journal_head: negative".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: i64, at: &str) -> AuditRow {
        AuditRow {
            id,
            at: at.into(),
            kind: "sale-intent".into(),
            body: "{}".into(),
            prev_hash: "0".repeat(64),
            hash: "a".repeat(64),
        }
    }

    #[test]
    fn a_heartbeat_names_a_number_beyond_any_real_one() {
        let mut beat = Heartbeat {
            screen: "attract".into(),
            screen_secs: 1,
            money_in_fen: 0,
            devices: Vec::new(),
            cash_box: CashBox::default(),
            open_items: 1,
            items: vec![OpenItem {
                id: 1,
                serial: Some(3),
                card: "3701".into(),
                reason: "caught".into(),
                caught_fen: 5000,
            }],
            period: PeriodTotals::default(),
            software_version: "0.1.0".into(),
            plugins: Vec::new(),
            journal_head: 9,
            rollouts: Vec::new(),
            commands_done: Vec::new(),
            config: None,
        };
        assert_eq!(beat.check(), Ok(()));
        beat.items[0].caught_fen = u64::MAX;
        assert_eq!(
            beat.check(),
            Err("items[0].caught_fen: more than 4503599627370496".into())
        );
        beat.items[0].caught_fen = 0;
        beat.money_in_fen = 1 << 60;
        assert_eq!(
            beat.check(),
            Err("money_in_fen: more than 4503599627370496".into())
        );
    }

    #[test]
    fn a_batch_names_the_row_and_field_that_is_wrong() {
        let batch = |rows| JournalBatch { rows }.check();
        assert_eq!(batch(vec![row(1, "2026-12-04T10:00:00.123Z")]), Ok(()));
        assert_eq!(batch(vec![row(1, "2026-12-04T10:00:00Z")]), Ok(()));
        for at in [
            "2026-12-04 10:00:00",
            "2026-12-04T10:00:00.Z",
            "'; DROP TABLE kiosks; --",
            "2026-12-04T10:00:00.1x2Z",
        ] {
            assert_eq!(
                batch(vec![row(1, "2026-12-04T10:00:00Z"), row(2, at)]),
                Err("rows[1].at: not a UTC time like 2026-12-04T10:00:00.000Z".into()),
                "{at}"
            );
        }
        assert_eq!(
            batch(vec![
                row(1, "2026-12-04T10:00:00Z"),
                row(3, "2026-12-04T10:00:00Z")
            ]),
            Err("rows[1].id: rows are not consecutive".into())
        );
    }
}
