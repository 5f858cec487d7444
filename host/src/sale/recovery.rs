//! What the kiosk finishes on its own between customers and at start: payments left open,
//! banknotes left between escrow and credit, sales whose outcome is unknown (asked about),
//! refused sales without their refund item (repaired), automatic re-sell (补售电) of sales that
//! never reached their backend, and write confirmations the backend has not acknowledged.

use rusqlite::OptionalExtension;
use serde_json::json;

use super::cashier::payer_label;
use super::{SaleEngine, SaleError, SaleOutcome, owe_refund, yuan};
use crate::backend::{SaleRequest, SaleStatus, WriteConfirmation};
use crate::clearing;
use crate::journal::{Batch, BatchResult, JournalError, NewItem, SaleRow};
use crate::money::Fen;

impl SaleEngine {
    /// Finishes what the journal shows unfinished: open payments go to an operator, refused
    /// sales get their refund item, write confirmations and closed periods' reports are sent
    /// again, and a sale whose outcome at the backend is not known is asked about. Run at start,
    /// before the first customer, and between customers. Returns each sale resolved and its state.
    pub fn recover(&mut self) -> Result<Vec<(u64, String)>, SaleError> {
        self.recover_payments()?;
        self.repair_refused()?;
        self.retry_confirmations()?;
        // Each answer, or why there is none, is in the journal; an unanswered one stays queued.
        clearing::send_queued(&mut self.journal, &self.backends, &self.dialects)?;
        // A sale granted and not yet written cannot be re-written once its backend is gone
        // (the card is refused at start): an operator is told.
        for sale in self.journal.sales(&["granted"], None)? {
            if self.route(&sale.utility).is_none() {
                self.unrouted(&sale)?;
            }
        }
        let mut resolved = Vec::new();
        for sale in self.journal.sales(&["intent", "pending"], None)? {
            let Some((backend, dialect)) = self.route(&sale.utility) else {
                self.unrouted(&sale)?;
                continue;
            };
            let answer = match self.ask_status(&backend, dialect, sale.serial) {
                Some(SaleStatus::Granted(g)) => Ok(g),
                Some(SaleStatus::Refused(r)) => Err(SaleOutcome::Refused(r)),
                // "No such sale" proves nothing while the request may still be on its way.
                Some(SaleStatus::NotFound) if self.settled(&sale)? => Err(
                    SaleOutcome::NeverReached("the backend has no sale under this serial".into()),
                ),
                // Still unknown: asked again at the next round; an operator is told once it has
                // been unknown too long.
                _ => {
                    self.unanswered(&sale)?;
                    continue;
                }
            };
            match self.record_answer(sale.serial, &[sale.state.as_str()], &answer, "售电") {
                Ok(_) => {}
                // Someone else (an operator's CLI) recorded it first.
                Err(JournalError::Conflict { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
            resolved.push((sale.serial, super::answer_state(&answer).to_string()));
        }
        // Bill payments after sales: a bill's trouble never holds up a sale's recovery.
        resolved.extend(self.recover_bills()?);
        self.journal.flush()?;
        Ok(resolved)
    }

    /// Whether sale `sale`'s request can no longer be in flight: the policy's time has passed
    /// since it was sent (its state's audit row).
    fn settled(&self, sale: &SaleRow) -> Result<bool, SaleError> {
        let since = self.journal.seconds_since(&sale.state_at)?.unwrap_or(0);
        Ok(since >= self.policy.unknown_outcome_settle.as_secs() as i64)
    }

    /// A payment still open at start belongs to a session that stopped before its sale had a
    /// serial: nothing was sent to a backend, so the money goes to an operator, who may refund
    /// it. A banknote it was stacking and never saw credited may be in the cash box: an item
    /// with its value too. Returns the payments handed over: (payment id, fen).
    pub fn recover_payments(&mut self) -> Result<Vec<(i64, Fen)>, SaleError> {
        let mut handed = Vec::new();
        for p in self.journal.open_payments()? {
            let done = self.journal.commit(|b| {
                let audit = b.append(
                    "payment-abandoned",
                    &json!({"payment": p.id, "card": p.card_serial, "paid_fen": p.paid_fen,
                            "escrow_fen": p.escrow_fen}),
                )?;
                b.close_payment(p.id, "open", "abandoned", None, audit)?;
                let kind = payer_label(p.for_bill);
                if p.paid_fen > 0 {
                    let (undone, elsewhere) = if p.for_bill {
                        ("未缴费", "到营业厅缴费")
                    } else {
                        ("未售电", "到营业厅购电")
                    };
                    b.open_manual_item(
                        &NewItem::payment(
                            p.id,
                            &p.card_serial,
                            &format!(
                                "顾客已投币 {} 元，{undone}（{kind} {}）：请退款或{elsewhere}",
                                yuan(Fen(p.paid_fen)),
                                p.card_serial
                            ),
                        ),
                        audit,
                    )?;
                }
                let Some(fen) = p.escrow_fen else {
                    return Ok(());
                };
                let id = b.append(
                    "banknote-caught",
                    &json!({"fen": fen, "payment": p.id,
                                "event": "the kiosk stopped between escrow and credit"}),
                )?;
                // The note may still sit in the acceptor: its arrival is matched to this item.
                b.open_manual_item(
                    &NewItem::note_in_acceptor(
                        fen,
                        Some(p.id),
                        Some(&p.card_serial),
                        &format!(
                            "终端中断时 {} 元纸币正在入钞，可能在机内且未入账（{kind} {}）：\
                                 请开箱核实后退还",
                            yuan(Fen(fen)),
                            p.card_serial
                        ),
                    ),
                    id,
                )
                .map(|_| ())
            });
            match done {
                Ok(()) => {}
                // Closed meanwhile by the session that owns it (another process).
                Err(JournalError::Conflict { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
            if p.paid_fen > 0 {
                handed.push((p.id, Fen(p.paid_fen)));
            }
        }
        Ok(handed)
    }

    /// A refused sale always owes its refund: one left without an item (a journal written
    /// before the item and the refusal were one commit) gets it now.
    fn repair_refused(&mut self) -> Result<(), SaleError> {
        for sale in self.journal.sales_without_item("refused")? {
            self.journal.commit(|b| {
                let has_item: bool = b.sql().query_row(
                    "SELECT EXISTS (SELECT 1 FROM manual_items WHERE serial = ?1)",
                    [sale.serial as i64],
                    |r| r.get(0),
                )?;
                if !has_item {
                    owe_refund(b, sale.serial, None, "售电")?;
                }
                Ok(())
            })?;
        }
        Ok(())
    }

    /// A sale whose backend is no longer in the config cannot be asked about or re-sold: an
    /// operator is told, once.
    pub(super) fn unrouted(&mut self, sale: &SaleRow) -> Result<(), SaleError> {
        let reason = format!(
            "交易 {:08}（{} 元，{}）无法完成：本机已不再配置单位 {} 的后台，请恢复配置\
             或联系供电单位核实",
            sale.serial,
            yuan(Fen(sale.paid_fen)),
            sale.state,
            sale.utility
        );
        self.hand_to_operator(sale, "sale-unrouted", &reason)
    }

    /// Sale `sale`'s backend has not told its outcome for longer than the policy allows: an
    /// operator is told (the kiosk keeps asking; no refund without the backend's word). The
    /// item closes when the answer is recorded (`close_unanswered_alert`).
    fn unanswered(&mut self, sale: &SaleRow) -> Result<(), SaleError> {
        let limit = self.policy.unanswered_sale_alert;
        let since = self.journal.seconds_since(&sale.state_at)?.unwrap_or(0);
        if since < limit.as_secs() as i64 {
            return Ok(());
        }
        let reason = format!(
            "交易 {:08}（{} 元）的结果超过 {}仍未知：后台未答复，本机继续查询；\
             请联系供电单位核实，核实前不得退款",
            sale.serial,
            yuan(Fen(sale.paid_fen)),
            span_zh(limit)
        );
        self.hand_to_operator(sale, "sale-unanswered", &reason)
    }

    /// Opens an operator item about `sale` with its `kind` row, unless one is open already.
    fn hand_to_operator(
        &mut self,
        sale: &SaleRow,
        kind: &str,
        reason: &str,
    ) -> Result<(), SaleError> {
        self.journal.commit(|b| {
            let open: bool = b.sql().query_row(
                "SELECT EXISTS (SELECT 1 FROM manual_items WHERE serial = ?1 AND state = 'open')",
                [sale.serial as i64],
                |r| r.get(0),
            )?;
            if open {
                return Ok(());
            }
            let id = b.append(
                kind,
                &json!({"serial": sale.serial, "utility": sale.utility, "state": sale.state}),
            )?;
            b.open_manual_item(
                &NewItem::sale(sale.serial, Some(&sale.card_serial), reason),
                id,
            )?;
            Ok(())
        })?;
        Ok(())
    }

    /// Automatic re-sell (补售电): each sale that never reached its backend is sent again,
    /// unchanged and under its own serial, once its backoff has passed; after the policy's
    /// tries it goes to an operator. Returns each sale tried and where it stands now.
    pub fn resell(&mut self) -> Result<Vec<(u64, String)>, SaleError> {
        let mut tried = Vec::new();
        for sale in self.journal.sales(&["never-reached"], None)? {
            let max = self.policy.resell_max_attempts;
            if sale.resell_attempts >= max {
                // Tried enough already (the kiosk stopped before handing it over).
                if self.exhaust(&sale, "never-reached", sale.resell_attempts, None)? {
                    tried.push((sale.serial, "manual".to_string()));
                }
                continue;
            }
            if !sale.resell_due {
                continue;
            }
            let request: SaleRequest = serde_json::from_str(&sale.request_json).map_err(|e| {
                SaleError::Corrupt(format!("the request of sale {}: {e}", sale.serial))
            })?;
            let Some((backend, dialect)) = self.route(&sale.utility) else {
                self.unrouted(&sale)?;
                continue;
            };
            let attempt = sale.resell_attempts + 1;
            let delay = self.policy.resell_first_delay.as_secs() << sale.resell_attempts.min(16);
            // Claimed before it is sent: while it is out its outcome is unknown, so no refund
            // can be paid for it meanwhile.
            let claimed = self.journal.commit(|b| {
                let id = b.append(
                    "resell-attempt",
                    &json!({"serial": sale.serial, "attempt": attempt}),
                )?;
                b.count_resell_attempt(sale.serial, delay)?;
                b.sale_state(sale.serial, &["never-reached"], "pending", None, id)
            });
            match claimed {
                Ok(()) => {}
                Err(JournalError::Conflict { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
            fail::fail_point!("sale.after-resell-attempt");
            let answer = self.send(&backend, dialect, &request);
            fail::fail_point!("sale.after-resell-answer");
            let state = match answer {
                Err(SaleOutcome::NeverReached(why)) if attempt >= max => {
                    self.exhaust(&sale, "pending", attempt, Some(&why))?;
                    "manual"
                }
                answer => {
                    self.record_answer(sale.serial, &["pending"], &answer, "补售电")?;
                    super::answer_state(&answer)
                }
            };
            tried.push((sale.serial, state.to_string()));
        }
        // Bill payments that never reached their backend are paid again (补缴) the same way.
        tried.extend(self.repay_bills()?);
        Ok(tried)
    }

    /// Hands sale `sale` (in state `from`) to an operator after `attempts` re-sells that never
    /// reached the backend; `why` is the last one's reason. Returns whether it was still `from`.
    fn exhaust(
        &mut self,
        sale: &SaleRow,
        from: &str,
        attempts: u32,
        why: Option<&str>,
    ) -> Result<bool, SaleError> {
        let done = self.journal.commit(|b| {
            if let Some(why) = why {
                b.append(
                    "sale-never-reached",
                    &json!({"serial": sale.serial, "why": why}),
                )?;
            }
            let id = b.append(
                "resell-exhausted",
                &json!({"serial": sale.serial, "attempts": attempts}),
            )?;
            b.sale_state(sale.serial, &[from], "manual", None, id)?;
            b.open_manual_item(
                &NewItem::sale(
                    sale.serial,
                    Some(&sale.card_serial),
                    &format!(
                        "补售电 {attempts} 次未成功：请人工补售电或退款 {} 元",
                        yuan(Fen(sale.paid_fen))
                    ),
                ),
                id,
            )?;
            Ok(())
        });
        match done {
            Ok(()) => Ok(true),
            Err(JournalError::Conflict { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Sends again every "written" the backend has not acknowledged (a re-write that worked
    /// after a "not written" is confirmed again); returns the serials now confirmed. A granted
    /// sale is not confirmed from here: after a crash or an error its card may hold the credit,
    /// so only the card, read again, says "not written".
    pub fn retry_confirmations(&mut self) -> Result<Vec<u64>, SaleError> {
        let mut confirmed = Vec::new();
        for sale in self.journal.sales(&["written"], None)? {
            if sale.confirmed {
                continue;
            }
            let Some((backend, dialect)) = self.route(&sale.utility) else {
                continue;
            };
            let confirmation = WriteConfirmation {
                terminal_id: self.terminal_id.clone(),
                kiosk_serial: sale.serial,
                card_serial: sale.card_serial.clone(),
                written: true,
                return_data: None,
            };
            if self.confirm(&backend, dialect, &confirmation)? {
                confirmed.push(sale.serial);
            }
        }
        self.journal.flush()?;
        Ok(confirmed)
    }
}

/// A span of time as an operator reads it: "90 秒", "5 分钟", "2 小时".
fn span_zh(d: std::time::Duration) -> String {
    match d.as_secs() {
        s if s < 120 => format!("{s} 秒"),
        s if s < 7200 => format!("{} 分钟", s / 60),
        s => format!("{} 小时", s / 3600),
    }
}

/// Closes the open `sale-unanswered` item of sale `serial`, in the commit that records the
/// backend's answer (now `state`); any other item about the sale (a refund owed) stays open.
pub(super) fn close_unanswered_alert(
    b: &mut Batch<'_>,
    serial: u64,
    state: &str,
) -> BatchResult<()> {
    let alert: Option<i64> = b
        .sql()
        .query_row(
            "SELECT m.id FROM manual_items m JOIN audit a ON a.id = m.audit_id
             WHERE m.serial = ?1 AND m.state = 'open' AND a.kind = 'sale-unanswered'",
            [serial as i64],
            |r| r.get(0),
        )
        .optional()?;
    let Some(item) = alert else {
        return Ok(());
    };
    let audit = b.append(
        "sale-answered",
        &json!({"serial": serial, "item": item, "state": state}),
    )?;
    b.resolve_manual_item(item, &format!("the backend answered: {state}"), audit)
}
