//! What the fleet asks of the kiosk's worker, done between customers only: switching to the
//! builds a rollout staged and to the fleet's next config version (each durably first), and
//! the remote commands it gave, each once.

use selfvend_fleet_wire::CommandKind;

use super::{Worker, plugin_report};
use crate::plugin::inspect::PluginKind;
use crate::remote_command;

impl Worker {
    /// Does the commands the fleet gave, between customers; each once (see
    /// [`remote_command::once`]).
    pub(super) fn remote_commands(&mut self) {
        for command in self.remote.take() {
            let outcome = match remote_command::done_before(self.engine.journal(), &command) {
                Err(why) => Err(why),
                Ok(Some(outcome)) => Ok(outcome),
                Ok(None) => {
                    let outcome = match command.command {
                        CommandKind::OutOfService => Ok("out of service".to_string()),
                        CommandKind::BackInService => Ok("back in service".to_string()),
                        CommandKind::ResendReconciliation => {
                            self.resend_reconciliation(command.period)
                        }
                        // The link sends the journal itself.
                        CommandKind::SendJournal => Err("not the worker's to do".to_string()),
                        CommandKind::Unknown => {
                            Err("this kiosk's software does not know that command".to_string())
                        }
                    };
                    remote_command::record(self.engine.journal_mut(), &command, outcome)
                }
            };
            if outcome.is_ok() {
                match command.command {
                    CommandKind::OutOfService => self.taken_out = Some(command.by.clone()),
                    CommandKind::BackInService => self.taken_out = None,
                    _ => {}
                }
            }
            self.remote.finished(command.id, outcome);
        }
    }

    /// Sends closed period `period`'s report again to every backend that has not matched it;
    /// what each answered.
    fn resend_reconciliation(&mut self, period: Option<i64>) -> Result<String, String> {
        let period = period.ok_or("no period named")?;
        let answers = self
            .engine
            .reconcile_period(&self.config, period)
            .map_err(|e| e.to_string())?;
        if answers.is_empty() {
            return Ok(format!(
                "period {period}: every backend had matched it already"
            ));
        }
        let said: Vec<String> = answers
            .iter()
            .map(|a| match &a.result {
                Ok(r) if r.matched => format!("{}: matched", a.backend),
                Ok(_) => format!("{}: differs", a.backend),
                Err(why) => format!("{}: no answer ({why})", a.backend),
            })
            .collect();
        Ok(format!("period {period} sent again: {}", said.join("; ")))
    }

    /// Runs the fleet's config version checked off the worker, between customers: it is
    /// durable before the sale engine takes its backends, limits and policy.
    pub(super) fn apply_config(&mut self) {
        let configs = self.rollouts.configs();
        let Some(staged) = configs.take_staged() else {
            return;
        };
        match self.engine.moved_with_open_business(&staged.config) {
            Ok(busy) if busy.is_empty() => {}
            // It waits until what the moved backends have open is settled where it began.
            Ok(busy) => {
                return configs.defer(staged, &format!("{} has open sales", busy.join(", ")));
            }
            Err(e) => return configs.defer(staged, &e.to_string()),
        }
        if let Ok(config) = configs.apply(staged) {
            self.engine.apply_config(&config);
            self.config = config;
        }
    }

    /// Runs the builds a rollout staged, between customers: each switch is durable before the
    /// new build takes the old one's place.
    pub(super) fn switch_plugins(&mut self) {
        for switch in self.rollouts.take_staged() {
            if self.rollouts.switch(&switch) != Ok(true) {
                continue;
            }
            let report = plugin_report(&switch.plugin);
            match (switch.plugin.kind(), &mut self.devices.bank) {
                (PluginKind::AcquirerDialect, Some(bank)) if bank.entry.dialect == switch.name => {
                    bank.replace_dialect(switch.plugin);
                }
                // An acquirer dialect the kiosk does not speak through now: the state file
                // names it, and the next start loads it.
                (PluginKind::AcquirerDialect, _) => {}
                _ => self.engine.replace_plugin(switch.plugin),
            }
            let mut plugins = self
                .shared
                .plugins
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            match plugins.iter_mut().find(|p| p.name == report.name) {
                Some(p) => *p = report,
                None => plugins.push(report),
            }
        }
    }
}
