//! The kiosk's link to its fleet server. Pairing makes the kiosk's identity key and stores the
//! kiosk id the server gave (`fleet.json` beside the journal). From then on a thread of its own
//! sends a heartbeat every few seconds and ships the journal's audit rows in chain order, in
//! batches, from the row after the last one the server holds: at least once, resumable after
//! any stop on either side. A sale never waits for it; a kiosk offline for days catches up.

pub mod http;
mod identity;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use identity::Identity;
use selfvend_fleet_wire::{
    Heartbeat, HeartbeatReply, JournalAck, JournalBatch, KIOSK_HEADER, LAST_TIME_HEADER,
    MAX_BATCH_ROWS, MAX_BODY_BYTES, MAX_CLOCK_SKEW_MS, MAX_PLUGIN_BYTES, OpenItem, PairReply,
    PairRequest, PeriodTotals, PluginDownload, PluginPart, SIGNATURE_HEADER, TIME_HEADER,
};
use serde::{Deserialize, Serialize};

use crate::journal::{Journal, JournalError};

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Where the pairing is kept, beside the journal.
const PAIRED_FILE: &str = "fleet.json";
/// A request's deadline.
const TIMEOUT: Duration = Duration::from_secs(10);
/// A plugin download's deadline (up to [`MAX_PLUGIN_BYTES`] on a kiosk's slow line).
const DOWNLOAD_TIMEOUT: Duration = Duration::from_secs(300);

#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    #[error("this kiosk is not paired with a fleet server (`selfvend fleet pair`)")]
    NotPaired,
    #[error("the fleet identity: {0}")]
    Identity(String),
    #[error("the fleet server cannot be reached: {0}")]
    Unreachable(String),
    #[error("the fleet server did not answer: {0}")]
    NoReply(String),
    #[error("the fleet server: {0}")]
    Server(String),
    /// The server answered with an error status and its reason.
    #[error("the fleet server refused: {reason} (HTTP {status})")]
    Refused { status: u16, reason: String },
    #[error(transparent)]
    Journal(#[from] JournalError),
}

impl FleetError {
    fn identity(path: &Path, e: std::io::Error) -> FleetError {
        FleetError::Identity(format!("{}: {e}", path.display()))
    }
}

/// The kiosk's pairing: which server, and who the kiosk is there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Paired {
    pub server: String,
    pub kiosk_id: String,
}

impl Paired {
    /// The pairing in `data_dir`, if the kiosk is paired.
    pub fn load(data_dir: &Path) -> Result<Option<Paired>, FleetError> {
        let path = data_dir.join(PAIRED_FILE);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| FleetError::Identity(format!("{}: {e}", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(FleetError::identity(&path, e)),
        }
    }

    fn save(&self, data_dir: &Path) -> Result<(), FleetError> {
        let path = data_dir.join(PAIRED_FILE);
        let temp = data_dir.join(format!("{PAIRED_FILE}.new"));
        let json = serde_json::to_vec_pretty(self).expect("a pairing serializes");
        let written = (|| {
            let mut file = std::fs::File::create(&temp)?;
            std::io::Write::write_all(&mut file, &json)?;
            file.sync_all()?;
            std::fs::rename(&temp, &path)
        })();
        written.map_err(|e| FleetError::identity(&path, e))
    }
}

/// Carries the pairing (and the identity key, still `0600`) from data directory `from` to
/// `to`, if `from` has one: a demo kiosk runs each time on a fresh journal of its own.
pub fn carry_pairing(from: &Path, to: &Path) -> Result<(), FleetError> {
    if Paired::load(from)?.is_none() {
        return Ok(());
    }
    std::fs::create_dir_all(to).map_err(|e| FleetError::identity(to, e))?;
    for file in [PAIRED_FILE, identity::KEY_FILE] {
        let target = to.join(file);
        std::fs::copy(from.join(file), &target).map_err(|e| FleetError::identity(&target, e))?;
    }
    Ok(())
}

/// Pairs the kiosk whose data directory is `data_dir` with `server`, by a one-time `code`.
pub fn pair(
    data_dir: &Path,
    server: &str,
    code: &str,
    terminal_id: &str,
    region: &str,
) -> Result<Paired, FleetError> {
    let identity = Identity::load_or_make(data_dir)?;
    let paired = pair_identity(&identity, server, code, terminal_id, region)?;
    paired.save(data_dir)?;
    Ok(paired)
}

/// Pairs `identity` with `server` by a one-time `code`; the pairing is not stored.
pub fn pair_identity(
    identity: &Identity,
    server: &str,
    code: &str,
    terminal_id: &str,
    region: &str,
) -> Result<Paired, FleetError> {
    let request = PairRequest {
        code: code.to_string(),
        terminal_id: terminal_id.to_string(),
        region: region.to_string(),
        public_key: identity.public_key_hex(),
        software_version: env!("CARGO_PKG_VERSION").to_string(),
    };
    let body = serde_json::to_vec(&request).expect("a request serializes");
    let reply: PairReply = answer(http::post(
        server,
        "/api/pair",
        &[],
        &body,
        TIMEOUT,
        http::MAX_REPLY_BYTES,
    )?)?;
    // It goes into every later request's header: letters and digits only.
    if reply.kiosk_id.is_empty()
        || reply.kiosk_id.len() > 64
        || !reply.kiosk_id.bytes().all(|b| b.is_ascii_alphanumeric())
    {
        return Err(FleetError::Server(format!(
            "a kiosk id that is not letters and digits: {:?}",
            reply.kiosk_id.chars().take(80).collect::<String>()
        )));
    }
    Ok(Paired {
        server: server.trim_end_matches('/').to_string(),
        kiosk_id: reply.kiosk_id,
    })
}

/// The reply, if the server accepted the request; else its refusal in its words.
fn accepted(reply: http::Reply) -> Result<http::Reply, FleetError> {
    if reply.status != 200 {
        return Err(FleetError::Refused {
            status: reply.status,
            reason: String::from_utf8_lossy(&reply.body)
                .chars()
                .take(500)
                .collect(),
        });
    }
    Ok(reply)
}

/// A reply's body as `T`, or the server's refusal in its words.
fn answer<T: serde::de::DeserializeOwned>(reply: http::Reply) -> Result<T, FleetError> {
    serde_json::from_slice(&accepted(reply)?.body)
        .map_err(|e| FleetError::Server(format!("a reply that does not fit: {e}")))
}

/// A paired kiosk's link: its identity and its journal.
#[derive(Clone)]
pub struct FleetLink {
    paired: Paired,
    identity: Identity,
    journal: PathBuf,
    /// The time the last request was signed at: each is signed later (the server refuses a
    /// replay), even if the clock steps back.
    last_signed: Arc<Mutex<i64>>,
}

/// What one round of the link did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Synced {
    /// Rows the server holds now.
    pub head: i64,
    /// Rows sent this round.
    pub sent: usize,
}

impl FleetLink {
    /// The link of the kiosk whose data directory is `data_dir`, if it is paired.
    pub fn load(data_dir: &Path) -> Result<Option<FleetLink>, FleetError> {
        let Some(paired) = Paired::load(data_dir)? else {
            return Ok(None);
        };
        Ok(Some(FleetLink {
            paired,
            identity: Identity::load(data_dir)?,
            journal: data_dir.join("journal.sqlite"),
            last_signed: Arc::default(),
        }))
    }

    /// A link for `identity`, paired as `paired`, shipping the journal at `journal`.
    pub fn new(paired: Paired, identity: Identity, journal: PathBuf) -> FleetLink {
        FleetLink {
            paired,
            identity,
            journal,
            last_signed: Arc::default(),
        }
    }

    pub fn paired(&self) -> &Paired {
        &self.paired
    }

    /// The journal this link ships, opened afresh.
    pub fn open_journal(&self) -> Result<Journal, FleetError> {
        Ok(Journal::open(&self.journal)?)
    }

    /// Sends one batch of audit rows; returns the last row the server holds then.
    pub fn send_batch(&self, rows: Vec<selfvend_fleet_wire::AuditRow>) -> Result<i64, FleetError> {
        let body = serde_json::to_vec(&JournalBatch { rows }).expect("a batch serializes");
        let ack: JournalAck = self.post("/api/journal", &body)?;
        Ok(ack.head)
    }

    /// POSTs `body` to `path`, signed. Refused as out of order (another process of this kiosk
    /// signed later, or the clock stepped back), it is signed again after the server's last.
    fn post<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        body: &[u8],
    ) -> Result<T, FleetError> {
        answer(self.post_in_order(path, body, TIMEOUT, http::MAX_REPLY_BYTES)?)
    }

    /// POSTs `body` to `path`, signed, and returns the reply as it is.
    fn post_in_order(
        &self,
        path: &str,
        body: &[u8],
        timeout: Duration,
        max_reply: usize,
    ) -> Result<http::Reply, FleetError> {
        let reply = self.post_signed(path, body, timeout, max_reply)?;
        let last = (reply.status == 409)
            .then(|| reply.header(LAST_TIME_HEADER))
            .flatten()
            .and_then(|v| v.parse::<i64>().ok());
        let Some(last) = last else {
            return Ok(reply);
        };
        // Only as far ahead as the server would take from this clock anyway.
        if last > now_ms() + MAX_CLOCK_SKEW_MS {
            return Ok(reply);
        }
        {
            let mut signed = self.last_signed.lock().unwrap_or_else(|e| e.into_inner());
            *signed = (*signed).max(last);
        }
        self.post_signed(path, body, timeout, max_reply)
    }

    fn post_signed(
        &self,
        path: &str,
        body: &[u8],
        timeout: Duration,
        max_reply: usize,
    ) -> Result<http::Reply, FleetError> {
        let time = {
            let mut signed = self.last_signed.lock().unwrap_or_else(|e| e.into_inner());
            *signed = now_ms().max(*signed + 1);
            *signed
        };
        let signature = self.identity.sign("POST", path, time, body);
        let headers = [
            (KIOSK_HEADER, self.paired.kiosk_id.clone()),
            (TIME_HEADER, time.to_string()),
            (SIGNATURE_HEADER, signature),
        ];
        http::post(
            &self.paired.server,
            path,
            &headers,
            body,
            timeout,
            max_reply,
        )
    }

    /// Sends one heartbeat; the reply says how much of the journal the server holds.
    pub fn heartbeat(&self, beat: &Heartbeat) -> Result<i64, FleetError> {
        Ok(self.heartbeat_reply(beat)?.journal_head)
    }

    /// Sends one heartbeat; the reply says how much of the journal the server holds and what
    /// the fleet wants the kiosk to run.
    pub fn heartbeat_reply(&self, beat: &Heartbeat) -> Result<HeartbeatReply, FleetError> {
        let body = serde_json::to_vec(beat).expect("a heartbeat serializes");
        self.post("/api/heartbeat", &body)
    }

    /// Downloads a part of a plugin build one of the kiosk's rollouts names.
    pub fn download(&self, sha256: &str, part: PluginPart) -> Result<Vec<u8>, FleetError> {
        let body = serde_json::to_vec(&PluginDownload {
            sha256: sha256.to_string(),
            part,
        })
        .expect("a request serializes");
        let max = match part {
            PluginPart::Component => MAX_PLUGIN_BYTES,
            PluginPart::Signature => 64 * 1024,
        };
        let reply = self.post_in_order("/api/plugin", &body, DOWNLOAD_TIMEOUT, max)?;
        Ok(accepted(reply)?.body)
    }

    /// Ships the journal from the row after `head` (what the server holds) until the server
    /// holds all of it; returns what it holds then.
    pub fn ship(&self, journal: &Journal, head: i64) -> Result<Synced, FleetError> {
        self.ship_until(journal, head, &|| false)
    }

    /// Sends every row of the journal again, from the first, for the server to compare each
    /// with what it holds (a row it holds that differs holds the kiosk's ingest and raises an
    /// alert); returns the rows sent and what the server holds then.
    pub fn resend(&self, journal: &Journal) -> Result<(usize, i64), FleetError> {
        let (mut from, mut sent, mut held) = (1, 0, 0);
        loop {
            let rows = within_batch_bytes(journal.raw_rows(from, MAX_BATCH_ROWS)?)?;
            let Some(last) = rows.last().map(|r| r.id) else {
                return Ok((sent, held));
            };
            sent += rows.len();
            held = self.send_batch(rows)?;
            from = last + 1;
        }
    }

    /// [`FleetLink::ship`], stopping between batches when `stopping` says so.
    fn ship_until(
        &self,
        journal: &Journal,
        mut head: i64,
        stopping: &dyn Fn() -> bool,
    ) -> Result<Synced, FleetError> {
        let mut sent = 0;
        while !stopping() {
            let from = head
                .checked_add(1)
                .ok_or_else(|| FleetError::Server(format!("it says it holds row {head}")))?;
            let rows = within_batch_bytes(journal.raw_rows(from, MAX_BATCH_ROWS)?)?;
            if rows.is_empty() {
                break;
            }
            sent += rows.len();
            let acked = self.send_batch(rows)?;
            fail::fail_point!("fleet.after-batch-acknowledged");
            if acked <= head {
                return Err(FleetError::Server(format!(
                    "it acknowledged row {acked} after being sent rows from {from}"
                )));
            }
            head = acked;
        }
        Ok(Synced { head, sent })
    }

    /// One round: a heartbeat (with `live`, what the kiosk shows now), then the journal.
    pub fn sync(&self, live: &Heartbeat) -> Result<Synced, FleetError> {
        self.sync_until(live, &|| false, &|_, _| {})
    }

    fn sync_until(
        &self,
        live: &Heartbeat,
        stopping: &dyn Fn() -> bool,
        replied: &dyn Fn(&FleetLink, &HeartbeatReply),
    ) -> Result<Synced, FleetError> {
        let journal = Journal::open(&self.journal)?;
        let beat = journal_facts(&journal, live.clone())?;
        let reply = self.heartbeat_reply(&beat)?;
        replied(self, &reply);
        self.ship_until(&journal, reply.journal_head, stopping)
    }

    /// Runs the link on a thread of its own until `stopping` says so: a round every `every`,
    /// with what `live` says the kiosk shows; `replied` hears each heartbeat's reply (what the
    /// fleet wants the kiosk to run). Errors are logged and the next round tries again.
    pub fn spawn(
        self,
        every: Duration,
        live: impl Fn() -> Heartbeat + Send + 'static,
        stopping: impl Fn() -> bool + Send + 'static,
        replied: impl Fn(&FleetLink, &HeartbeatReply) + Send + 'static,
    ) -> std::io::Result<JoinHandle<()>> {
        std::thread::Builder::new()
            .name("fleet link".into())
            .spawn(move || {
                while !stopping() {
                    match self.sync_until(&live(), &stopping, &replied) {
                        Ok(s) if s.sent > 0 => {
                            tracing::info!("fleet: {} journal rows sent, {} held", s.sent, s.head);
                        }
                        Ok(_) => {}
                        Err(e) => tracing::warn!("fleet: {e}"),
                    }
                    let until = std::time::Instant::now() + every;
                    while !stopping() && std::time::Instant::now() < until {
                        std::thread::sleep(Duration::from_millis(100));
                    }
                }
            })
    }
}

/// A batch's rows, at most: well within the server's body limit, so a batch of large rows
/// (clearing reports) is split rather than refused.
const BATCH_BYTES: usize = MAX_BODY_BYTES / 4;

/// The first of `rows` that fit in [`BATCH_BYTES`] as JSON (at least one, if it fits in a
/// body at all).
fn within_batch_bytes(
    mut rows: Vec<selfvend_fleet_wire::AuditRow>,
) -> Result<Vec<selfvend_fleet_wire::AuditRow>, FleetError> {
    let mut bytes = 0;
    for (i, row) in rows.iter().enumerate() {
        let size = serde_json::to_vec(row).map_or(usize::MAX, |json| json.len() + 1);
        if i == 0 && size > MAX_BODY_BYTES - 64 {
            return Err(FleetError::Server(format!(
                "journal row {} is {size} bytes, more than one request may carry",
                row.id
            )));
        }
        bytes += size;
        if i > 0 && bytes > BATCH_BYTES {
            rows.truncate(i);
            break;
        }
    }
    Ok(rows)
}

/// `text` on one line, within the wire's bounds for a text field.
pub fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(200)
        .collect()
}

/// `beat` with what the journal says: its head, the period's totals, open operator items and
/// the cash box's banknotes (its capacity is the kiosk's config's, set by the caller).
pub fn journal_facts(journal: &Journal, mut beat: Heartbeat) -> Result<Heartbeat, FleetError> {
    let period = journal.current_period()?;
    beat.journal_head = journal.last_id()?;
    let items = journal.manual_items(false)?;
    beat.open_items = items.len() as u32;
    beat.items = items
        .iter()
        .take(selfvend_fleet_wire::MAX_LIST)
        .map(|item| OpenItem {
            id: item.id,
            serial: item.serial,
            card: one_line(item.card_serial.as_deref().unwrap_or("")),
            reason: one_line(&item.reason),
            caught_fen: item.caught_fen.unwrap_or(0),
        })
        .collect();
    beat.cash_box.notes = journal.banknotes_by_value(period.id)?;
    let (sales, sales_fen, bills, bills_fen) = journal.period_takings(period.id)?;
    beat.period = PeriodTotals {
        period: period.id,
        sales,
        sales_fen,
        bill_payments: bills,
        bill_payments_fen: bills_fen,
    };
    Ok(beat)
}

#[cfg(test)]
mod tests {
    use selfvend_fleet_wire::{AuditRow, GENESIS};

    use super::*;

    fn row(id: i64, body_bytes: usize) -> AuditRow {
        AuditRow {
            id,
            at: "2026-12-04T10:00:00.000Z".into(),
            kind: "clearing-ended".into(),
            body: "x".repeat(body_bytes),
            prev_hash: GENESIS.into(),
            hash: GENESIS.into(),
        }
    }

    #[test]
    fn a_batch_is_cut_to_its_bytes_and_a_row_too_large_for_any_is_named() {
        let small: Vec<_> = (1..=500).map(|id| row(id, 100)).collect();
        assert_eq!(within_batch_bytes(small).unwrap().len(), 500);
        let large: Vec<_> = (1..=5).map(|id| row(id, 600 * 1024)).collect();
        let batch = within_batch_bytes(large).unwrap();
        assert_eq!(batch.iter().map(|r| r.id).collect::<Vec<_>>(), [1]);
        let Err(FleetError::Server(why)) = within_batch_bytes(vec![row(9, MAX_BODY_BYTES)]) else {
            panic!("a row larger than a request was taken");
        };
        assert!(why.starts_with("journal row 9 is "), "{why}");
    }
}
