//! Remote commands on the kiosk's side: the fleet's heartbeat replies list the commands an
//! operator or admin gave it; they wait here for the worker, which does each between customers
//! (sending the journal again is the link's own work), and what came of each is reported in
//! the next heartbeats until the fleet stops listing it. The journal's `remote-command` rows
//! make each done once, whatever the fleet sends again.

use std::collections::BTreeMap;
use std::sync::Mutex;

use selfvend_fleet_wire::{CommandDone, CommandKind, RemoteCommand};

use crate::fleet::FleetLink;
use crate::journal::{Journal, JournalError};

/// Commands taken from one heartbeat's reply, at most.
const MAX_LISTED: usize = 16;

#[derive(Default)]
struct Inbox {
    waiting: Vec<RemoteCommand>,
    /// Done, by id, with what came of it: reported until the fleet no longer lists it.
    done: BTreeMap<i64, String>,
}

/// Commands from the fleet, between the link's thread and the worker.
#[derive(Default)]
pub struct RemoteCommands {
    inbox: Mutex<Inbox>,
}

impl RemoteCommands {
    fn inbox(&self) -> std::sync::MutexGuard<'_, Inbox> {
        self.inbox.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes what a heartbeat's reply lists: new commands wait for the worker; a sent-again
    /// journal is sent here, on the link's thread, through `link`.
    pub fn offer(&self, link: &FleetLink, journal: &mut Journal, listed: &[RemoteCommand]) {
        // What the server sent is bounded before it is acted on or journaled.
        let listed: Vec<RemoteCommand> = listed
            .iter()
            .filter(|c| c.id > 0 && c.period.is_none_or(|p| p > 0))
            .take(MAX_LISTED)
            .map(|c| RemoteCommand {
                by: crate::fleet::one_line(&c.by),
                ..c.clone()
            })
            .collect();
        let listed = &listed[..];
        {
            let mut inbox = self.inbox();
            inbox
                .done
                .retain(|id, _| listed.iter().any(|c| c.id == *id));
            inbox
                .waiting
                .retain(|w| listed.iter().any(|c| c.id == w.id));
        }
        for command in listed {
            let known = {
                let inbox = self.inbox();
                inbox.done.contains_key(&command.id)
                    || inbox.waiting.iter().any(|w| w.id == command.id)
            };
            if known {
                continue;
            }
            if command.command == CommandKind::SendJournal {
                let outcome = once(journal, command, |journal| {
                    link.resend(journal)
                        .map(|(sent, held)| {
                            format!(
                                "sent all {sent} journal rows again; the fleet holds {held}, \
                                 each as sent"
                            )
                        })
                        .map_err(|e| e.to_string())
                });
                self.finished(command.id, outcome);
            } else {
                self.inbox().waiting.push(command.clone());
            }
        }
    }

    /// The commands waiting for the worker.
    pub fn take(&self) -> Vec<RemoteCommand> {
        std::mem::take(&mut self.inbox().waiting)
    }

    /// Records what came of command `id`, for the next heartbeats.
    pub fn finished(&self, id: i64, outcome: Result<String, String>) {
        let outcome = outcome.unwrap_or_else(|why| format!("failed: {why}"));
        tracing::info!("remote command {id}: {outcome}");
        self.inbox()
            .done
            .insert(id, crate::fleet::one_line(&outcome));
    }

    /// What the next heartbeat reports done.
    pub fn reports(&self) -> Vec<CommandDone> {
        self.inbox()
            .done
            .iter()
            .map(|(id, outcome)| CommandDone {
                id: *id,
                outcome: outcome.clone(),
            })
            .collect()
    }
}

/// Does `command` once: if the journal says it was done, what came of it then; else `act`,
/// and one `remote-command` row saying who asked and what came of it (a failure is recorded
/// too, so the same command is not tried again and again).
pub fn once(
    journal: &mut Journal,
    command: &RemoteCommand,
    act: impl FnOnce(&Journal) -> Result<String, String>,
) -> Result<String, String> {
    if let Some(outcome) = done_before(journal, command)? {
        return Ok(outcome);
    }
    let outcome = act(journal);
    record(journal, command, outcome)
}

/// What came of `command` when this kiosk did it, if it did. An id this kiosk used for another
/// command (a fleet database restored from a backup, say) is an error, and nothing is done.
pub fn done_before(journal: &Journal, command: &RemoteCommand) -> Result<Option<String>, String> {
    match journal
        .remote_command_outcome(command.id)
        .map_err(|e| e.to_string())?
    {
        Some((kind, outcome)) if kind == command.command.as_str() => Ok(Some(outcome)),
        Some((kind, _)) => Err(format!(
            "command id {} was a {kind} command here before; not done",
            command.id
        )),
        None => Ok(None),
    }
}

/// The `remote-command` row for `command`.
pub fn record(
    journal: &mut Journal,
    command: &RemoteCommand,
    outcome: Result<String, String>,
) -> Result<String, String> {
    let outcome = outcome.unwrap_or_else(|why| format!("failed: {why}"));
    journal
        .append(
            "remote-command",
            serde_json::json!({
                "id": command.id,
                "command": command.command.as_str(),
                "period": command.period,
                "by": command.by,
                "outcome": outcome,
            }),
        )
        .map_err(|e: JournalError| e.to_string())?;
    Ok(outcome)
}
