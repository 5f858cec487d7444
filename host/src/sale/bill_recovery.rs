//! Bill payments finished between customers: each whose outcome is not known is asked about
//! (`recover_bills`, run by `recover`); each that never reached its backend is paid again (补缴,
//! `repay_bills`, run by `resell`), bounded, then handed to an operator; a receipt that arrives
//! after another process moved the payment on is recorded anyway; a payment left unanswered
//! too long, or whose utility is no longer configured, is told to an operator once.

use serde_json::json;

use super::bill::{BillAnswer, bill_facts, bill_request, close_bill_alerts};
use super::{SaleEngine, SaleError, yuan};
use crate::backend::{BillPaymentStatus, BillReceipt};
use crate::journal::{BillPaymentRow, JournalError, NewItem};
use crate::money::Fen;

impl SaleEngine {
    /// A receipt for bill payment `serial` that another process moved on meanwhile: the
    /// backend booked it, so it is `paid` whatever was decided without that answer, and the
    /// items that would refund or re-pay it close; one refunded already goes to an operator to
    /// have the backend reverse it (once).
    pub(super) fn late_bill_receipt(
        &mut self,
        serial: u64,
        receipt: &BillReceipt,
    ) -> Result<(), SaleError> {
        let Some(row) = self.journal.bill_payment(serial)? else {
            return Ok(());
        };
        let recorded = self.journal.commit(|b| match row.state.as_str() {
            "paid" => Ok(()),
            "refunded" => {
                let open: bool = b.sql().query_row(
                    "SELECT EXISTS (SELECT 1 FROM manual_items m JOIN audit a ON a.id = m.audit_id
                     WHERE m.bill_serial = ?1 AND m.state = 'open'
                       AND a.kind = 'bill-paid-after-refund')",
                    [serial as i64],
                    |r| r.get(0),
                )?;
                if open {
                    return Ok(());
                }
                let id = b.append(
                    "bill-paid-after-refund",
                    &json!({"serial": serial, "payment_id": receipt.backend_payment_id}),
                )?;
                let reason = format!(
                    "缴费 {serial:08} 已退款后后台仍入账（后台流水 {}，户号 {}）：请联系供电单位冲正",
                    receipt.backend_payment_id, row.customer_number
                );
                b.open_manual_item(&NewItem::bill(serial, &row.customer_number, &reason), id)
                    .map(|_| ())
            }
            state => {
                let (utility, payment) = bill_facts(b, serial)?;
                let id = b.append(
                    "bill-paid",
                    &json!({"serial": serial, "payment_id": receipt.backend_payment_id,
                            "amount_fen": receipt.amount.0, "late": true, "was": state,
                            "utility": utility, "payment": payment}),
                )?;
                let json = serde_json::to_string(receipt).expect("a receipt serializes");
                b.bill_payment_state(serial, &[state], "paid", Some(&json), id)?;
                b.count("lifetime.bill_paid_fen", receipt.amount.0 as i64)?;
                close_bill_alerts(b, serial, "paid", &[])
            }
        });
        match recorded {
            // Moved on again meanwhile: the next recovery round sees where it stands.
            Ok(()) | Err(JournalError::Conflict { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Bill payment `p`'s backend has not told its outcome for longer than the policy allows
    /// (or it is no longer configured, `unrouted`): an operator is told once; the kiosk keeps
    /// asking, and no refund is paid without the backend's word.
    fn bill_alert(&mut self, p: &BillPaymentRow, unrouted: bool) -> Result<(), SaleError> {
        let limit = self.policy.unanswered_sale_alert;
        if !unrouted {
            let since = self.journal.seconds_since(&p.state_at)?.unwrap_or(0);
            if since < limit.as_secs() as i64 {
                return Ok(());
            }
        }
        let reason = if unrouted {
            format!(
                "缴费 {:08}（{} 元，户号 {}）的单位 {} 已不在本机配置中：请联系供电单位核实",
                p.serial,
                yuan(Fen(p.paid_fen)),
                p.customer_number,
                p.utility
            )
        } else {
            format!(
                "缴费 {:08}（{} 元，户号 {}）的结果长时间未知：后台未答复，本机继续查询；\
                 请联系供电单位核实，核实前不得退款",
                p.serial,
                yuan(Fen(p.paid_fen)),
                p.customer_number
            )
        };
        self.journal.commit(|b| {
            let open: bool = b.sql().query_row(
                "SELECT EXISTS (SELECT 1 FROM manual_items WHERE bill_serial = ?1
                 AND state = 'open')",
                [p.serial as i64],
                |r| r.get(0),
            )?;
            if open {
                return Ok(());
            }
            let id = b.append(
                "bill-unanswered",
                &json!({"serial": p.serial, "utility": p.utility, "state": p.state,
                        "unrouted": unrouted}),
            )?;
            b.open_manual_item(&NewItem::bill(p.serial, &p.customer_number, &reason), id)
                .map(|_| ())
        })?;
        Ok(())
    }

    /// Finishes bill payments the journal shows unfinished: each whose outcome is not known is
    /// asked about ("no such payment" proves it never arrived only once the request cannot be
    /// in flight). Returns each resolved and its state.
    pub fn recover_bills(&mut self) -> Result<Vec<(u64, String)>, SaleError> {
        let mut resolved = Vec::new();
        for p in self.journal.bill_payments(&["intent", "pending"])? {
            let Some((backend, dialect)) = self.route(&p.utility) else {
                self.bill_alert(&p, true)?;
                continue;
            };
            let answer = match self.ask_bill_status(&backend, dialect, p.serial, Fen(p.paid_fen)) {
                Some(BillPaymentStatus::Paid(r)) => BillAnswer::Paid(r),
                Some(BillPaymentStatus::Refused(r)) => BillAnswer::Refused(r),
                Some(BillPaymentStatus::NotFound) if self.bill_settled(&p)? => {
                    BillAnswer::NeverReached("the backend has no payment under this serial".into())
                }
                _ => {
                    self.bill_alert(&p, false)?;
                    continue;
                }
            };
            match self.record_bill_answer(p.serial, &[p.state.as_str()], &answer, "缴费") {
                Ok(()) => {}
                Err(SaleError::Journal(JournalError::Conflict { .. })) => continue,
                Err(e) => return Err(e),
            }
            resolved.push((p.serial, answer.state().to_string()));
        }
        self.journal.flush()?;
        Ok(resolved)
    }

    /// Whether bill payment `p`'s request can no longer be in flight.
    fn bill_settled(&self, p: &BillPaymentRow) -> Result<bool, SaleError> {
        let since = self.journal.seconds_since(&p.state_at)?.unwrap_or(0);
        Ok(since >= self.policy.unknown_outcome_settle.as_secs() as i64)
    }

    /// Automatic re-pay (补缴): each bill payment that never reached its backend is sent again,
    /// unchanged and under its own serial, once its backoff has passed; after the policy's
    /// tries (those of re-sell) it goes to an operator. Returns each tried and its state now.
    pub fn repay_bills(&mut self) -> Result<Vec<(u64, String)>, SaleError> {
        let mut tried = Vec::new();
        let max = self.policy.resell_max_attempts;
        for p in self.journal.bill_payments(&["never-reached"])? {
            if p.repay_attempts >= max {
                if self.exhaust_bill(&p, "never-reached", None)? {
                    tried.push((p.serial, "manual".to_string()));
                }
                continue;
            }
            if !p.repay_due {
                continue;
            }
            let Some((backend, dialect)) = self.route(&p.utility) else {
                self.bill_alert(&p, true)?;
                continue;
            };
            let request = match bill_request(&p) {
                Ok(request) => request,
                Err(e) => {
                    // One unreadable row stops no other payment's re-pay.
                    tracing::error!("bill payment {}: {e}", p.serial);
                    continue;
                }
            };
            let attempt = p.repay_attempts + 1;
            let delay = self.policy.resell_first_delay.as_secs() << p.repay_attempts.min(16);
            // Claimed before it is sent: while it is out no refund can be paid for it.
            let claimed = self.journal.commit(|b| {
                let id = b.append(
                    "bill-repay-attempt",
                    &json!({"serial": p.serial, "attempt": attempt}),
                )?;
                b.count_repay_attempt(p.serial, delay)?;
                b.bill_payment_state(p.serial, &["never-reached"], "pending", None, id)
            });
            match claimed {
                Ok(()) => {}
                Err(JournalError::Conflict { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
            fail::fail_point!("bill.after-repay-attempt");
            let answer = self.send_bill(&backend, dialect, &request);
            let state = match answer {
                BillAnswer::NeverReached(why) if attempt >= max => {
                    if !self.exhaust_bill(&p, "pending", Some(&why))? {
                        continue;
                    }
                    "manual"
                }
                answer => match self.record_bill_answer(p.serial, &["pending"], &answer, "补缴") {
                    Ok(()) => answer.state(),
                    Err(SaleError::Journal(JournalError::Conflict { .. })) => continue,
                    Err(e) => return Err(e),
                },
            };
            tried.push((p.serial, state.to_string()));
        }
        Ok(tried)
    }

    /// Hands bill payment `p` (in state `from`) to an operator after re-pays that never reached
    /// the backend. Returns whether it was still `from`.
    fn exhaust_bill(
        &mut self,
        p: &BillPaymentRow,
        from: &str,
        why: Option<&str>,
    ) -> Result<bool, SaleError> {
        let reason = format!(
            "缴费 {:08}（{} 元，户号 {}）补缴 {} 次仍未送达后台：请核实后再次补缴或退款",
            p.serial,
            yuan(Fen(p.paid_fen)),
            p.customer_number,
            p.repay_attempts.max(self.policy.resell_max_attempts)
        );
        let done = self.journal.commit(|b| {
            let id = b.append(
                "bill-repay-exhausted",
                &json!({"serial": p.serial, "why": why}),
            )?;
            b.bill_payment_state(p.serial, &[from], "manual", None, id)?;
            b.open_manual_item(&NewItem::bill(p.serial, &p.customer_number, &reason), id)?;
            Ok(())
        });
        match done {
            Ok(()) => Ok(true),
            Err(JournalError::Conflict { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }
}
