//! What a kiosk and the fleet server say to each other, shared by both sides and nothing else:
//! the messages (JSON over HTTP), how a kiosk signs a request with its Ed25519 identity key, and
//! how the journal's audit rows chain, so the server verifies the very rule the kiosk wrote by.

mod chain;
mod command;
mod config;
mod messages;
mod rollout;
mod signing;

pub use chain::{AuditRow, ChainBreak, GENESIS, check_next, row_hash};
pub use command::{CommandDone, CommandKind, RemoteCommand};
pub use config::{ConfigReport, DesiredConfig};
pub use messages::{
    CashBox, DeviceReport, Heartbeat, HeartbeatReply, JournalAck, JournalBatch, MAX_BATCH_ROWS,
    MAX_BODY_BYTES, MAX_LIST, OpenItem, PairReply, PairRequest, PeriodTotals, PluginReport,
};
pub use rollout::{
    Desired, DesiredPlugin, MAX_PLUGIN_BYTES, PluginDownload, PluginPart, RolloutStep, Step,
    is_sha256,
};
pub use signing::{
    KIOSK_HEADER, LAST_TIME_HEADER, MAX_CLOCK_SKEW_MS, SIGNATURE_HEADER, SignError, TIME_HEADER,
    signing_bytes, verify,
};
