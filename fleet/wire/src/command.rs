//! Remote commands: what an operator or admin asks one kiosk to do from the console, carried in
//! the heartbeat's reply until the kiosk reports it done. Each is done once (the kiosk's journal
//! records it by its id) and audited in the kiosk's journal with who asked.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CommandKind {
    /// Stop taking customers (between customers; it stays so across restarts).
    OutOfService,
    BackInService,
    /// Send the whole journal again from its first row, for the fleet to compare with what it
    /// holds.
    SendJournal,
    /// Send a closed period's reconciliation to every backend again.
    ResendReconciliation,
    /// One a newer server knows and this kiosk does not: reported, never done.
    #[serde(other)]
    Unknown,
}

impl CommandKind {
    pub fn as_str(self) -> &'static str {
        match self {
            CommandKind::OutOfService => "out-of-service",
            CommandKind::BackInService => "back-in-service",
            CommandKind::SendJournal => "send-journal",
            CommandKind::ResendReconciliation => "resend-reconciliation",
            CommandKind::Unknown => "unknown",
        }
    }

    pub fn parse(s: &str) -> Option<CommandKind> {
        [
            CommandKind::OutOfService,
            CommandKind::BackInService,
            CommandKind::SendJournal,
            CommandKind::ResendReconciliation,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }
}

/// One command for one kiosk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteCommand {
    pub id: i64,
    pub command: CommandKind,
    /// The period, for a reconciliation.
    #[serde(default)]
    pub period: Option<i64>,
    /// Who asked, as the console knows them.
    pub by: String,
}

/// A command the kiosk has done, and what came of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandDone {
    pub id: i64,
    pub outcome: String,
}
