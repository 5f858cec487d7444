//! The operator's screens at the kiosk (维护): the operator's PIN, then clearing (清机), open
//! items settled with a reason, reconciliation sent again, and the kiosk's devices and plugins,
//! until sign-out. Only between customers.

use super::view::{ItemLine, OperatorMessage, OperatorView, PluginLine, Reconciled};
use super::{Command, Event, Operate, Screen, Watch, Worker, bank_link};
use crate::clearing;
use crate::money::Fen;
use crate::sale::SaleError;

impl Worker {
    /// The operator's PIN, then the operator's screens until sign-out.
    pub(super) fn operator(&mut self) {
        let mut refused = None;
        let pin = loop {
            self.shared.show(Screen::OperatorPin {
                refused: refused.take(),
            });
            match self.wait(Watch::None, Some(self.timeouts.choose)) {
                Event::Command(Command::OperatorPin(pin)) => {
                    match clearing::sign_in(self.engine.journal_mut(), &self.config, &pin) {
                        Ok(()) => break pin,
                        Err(e) => refused = Some(e.to_string()),
                    }
                }
                Event::Command(Command::Cancel) | Event::TimedOut | Event::Stopping => return,
                _ => {}
            }
        };
        let mut message = None;
        loop {
            let view = self.operator_view(message.take());
            self.shared.show(Screen::Operator(Box::new(view)));
            let op = match self.wait(Watch::None, Some(self.timeouts.operator)) {
                Event::Command(Command::Operate(Operate::SignOut))
                | Event::TimedOut
                | Event::Stopping => return,
                Event::Command(Command::Operate(op)) => op,
                Event::Command(_) | Event::Card => continue,
            };
            message = Some(self.operate(op, &pin));
        }
    }

    /// Does what the operator asked; says what was done, or why not.
    pub(super) fn operate(&mut self, op: Operate, pin: &str) -> OperatorMessage {
        let failed = |e: &dyn std::fmt::Display| OperatorMessage::Failed(e.to_string());
        let config = &self.config;
        let done = match op {
            Operate::StartClearing => clearing::start(self.engine.journal_mut(), config, pin)
                .map(|r| OperatorMessage::ClearingStarted(r.period_id)),
            Operate::CashBoxRemoved => clearing::box_removed(self.engine.journal_mut())
                .map(|()| OperatorMessage::CashBoxRemoved),
            Operate::CashBoxReplaced => clearing::box_replaced(self.engine.journal_mut())
                .map(|()| OperatorMessage::CashBoxReplaced),
            Operate::Count(fen) => {
                clearing::count(self.engine.journal_mut(), fen).map(|b| OperatorMessage::Counted {
                    counted: fen,
                    expected: b.expected,
                })
            }
            Operate::EndClearing => {
                let ended = match self.engine.end_clearing(config, pin, None) {
                    Ok(ended) => ended,
                    Err(e) => return failed(&e),
                };
                let printed = self.devices.printer.print(&ended.report.receipt());
                let backends = ended
                    .reconciliations
                    .iter()
                    .map(|r| {
                        let answer = match &r.result {
                            Ok(rec) if rec.matched => Reconciled::Matched,
                            Ok(rec) => Reconciled::Differs(rec.differences.clone()),
                            Err(why) => Reconciled::NotYet(why.to_string()),
                        };
                        (r.backend.clone(), answer)
                    })
                    .collect();
                return OperatorMessage::PeriodClosed {
                    closed: ended.report.period_id,
                    next: ended.next_period,
                    printed: printed.is_ok(),
                    backends,
                };
            }
            Operate::Resolve(item, resolution, reason) => {
                return match self.engine.resolve_manual(
                    item,
                    resolution,
                    &format!("{reason} (operator screen)"),
                ) {
                    Ok(_) => OperatorMessage::Resolved(item, resolution),
                    Err(e) => failed(&e),
                };
            }
            Operate::Reprint => {
                return match self.engine.reprint_last(self.devices.printer.as_mut()) {
                    Ok(Some((_, true))) => OperatorMessage::Reprinted,
                    Ok(Some((_, false))) => OperatorMessage::ReprintCutShort,
                    Ok(None) => OperatorMessage::NothingToReprint,
                    Err(e) => failed(&e),
                };
            }
            Operate::SignOn => {
                let link = match bank_link(&self.devices) {
                    Ok(link) => link,
                    Err(why) => return OperatorMessage::Failed(why),
                };
                return match self.engine.sign_on(link) {
                    Ok(batch) => OperatorMessage::SignedOn(batch),
                    Err(e) => failed(&e),
                };
            }
            Operate::Settle => {
                let link = match bank_link(&self.devices) {
                    Ok(link) => link,
                    Err(why) => return OperatorMessage::Failed(why),
                };
                return match self.engine.settle(link) {
                    Ok(s) => OperatorMessage::Settled {
                        balanced: s.balanced,
                        count: s.acquirer_count,
                        amount: s.acquirer_amount,
                    },
                    Err(e) => failed(&e),
                };
            }
            Operate::BackInService => {
                let row = serde_json::json!({"by": "the operator at the kiosk"});
                return match self.engine.journal_mut().append("back-in-service", row) {
                    Ok(_) => {
                        self.taken_out = None;
                        OperatorMessage::BackInService
                    }
                    Err(e) => failed(&e),
                };
            }
            // Never asked: sign-out leaves the operator's screens before `operate`.
            Operate::SignOut => return OperatorMessage::Failed(String::new()),
        };
        done.unwrap_or_else(|e| failed(&e))
    }

    pub(super) fn operator_view(&mut self, message: Option<OperatorMessage>) -> OperatorView {
        let mut view = OperatorView {
            message,
            taken_out: self.taken_out.clone(),
            ..OperatorView::default()
        };
        view.devices = self.device_lines();
        view.plugins = self
            .engine
            .plugins()
            .chain(self.devices.bank.as_ref().map(|l| l.dialect()))
            .map(|p| PluginLine {
                name: p.name.clone(),
                kind: p.kind().to_string(),
                version: p.inspection.version.to_string(),
                signer: p.signer.to_string(),
            })
            .collect();
        let journal = self.engine.journal();
        match journal.current_period() {
            Ok(period) => {
                view.period = period.id;
                view.period_state = period.state.clone();
                if let Ok(report) = clearing::report(journal, &self.config, None) {
                    view.report = report
                        .receipt()
                        .lines()
                        .iter()
                        .map(|l| l.text.clone())
                        .collect();
                }
            }
            Err(e) => view.message = Some(OperatorMessage::Failed(e.to_string())),
        }
        let items = journal
            .manual_items(false)
            .map_err(SaleError::from)
            .and_then(|items| {
                items
                    .into_iter()
                    .map(|i| {
                        // What the engine takes for each kind of item.
                        let resolutions = self.engine.resolutions(&i)?;
                        Ok(ItemLine {
                            id: i.id,
                            serial: i.serial,
                            reason: i.reason,
                            caught: i.caught_fen.map(Fen),
                            resolutions,
                        })
                    })
                    .collect::<Result<Vec<_>, SaleError>>()
            });
        let entries = journal
            .last_id()
            .and_then(|last| journal.entries((last - 29).max(1), 30))
            .map_err(SaleError::from);
        match (items, entries) {
            (Ok(items), Ok(entries)) => {
                view.items = items;
                view.journal = entries
                    .iter()
                    .rev()
                    .map(|e| format!("{:>6}  {}  {}", e.id, e.at, e.kind))
                    .collect();
            }
            (Err(e), _) | (_, Err(e)) => {
                view.message = Some(OperatorMessage::Failed(format!("reading the journal: {e}")))
            }
        }
        view
    }
}
