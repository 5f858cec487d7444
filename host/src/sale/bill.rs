//! Bill payment (缴费): an account's bills paid in cash at the kiosk, under the sale's money
//! rules. The session's payment is opened before the acceptor is enabled; the payment's intent
//! and its serial are journaled, the session's payment closed to it, before `bill-pay` is sent;
//! an unknown outcome is asked about with `bill-payment-status`; one that never reached the
//! backend is paid again automatically (补缴) under its own serial, a bounded number of times,
//! then handed to an operator. A refund needs the backend's refusal or proof the payment never
//! arrived, and never follows a re-pay that may have reached it (it is claimed `pending` first).

use rusqlite::OptionalExtension;
use serde_json::json;

use super::Resolution;
use super::cashier::{Till, TillParts};
use super::receipt::ReceiptOf;
use super::{BankPaid, SaleEngine, SaleError, yuan};
use crate::backend::{
    BackendError, BillAccount, BillPaymentRequest, BillPaymentStatus, BillReceipt, PaymentKind,
    Refusal, check_account_number,
};
use crate::cash_acceptor::CashAcceptor;
use crate::config::BackendEntry;
use crate::journal::{BillPaymentRow, JournalError, ManualItem, NewBillPayment, NewItem};
use crate::money::Fen;
use crate::plugin::DialectError;
use crate::receipt_printer::{Line, Receipt, ReceiptPrinter};

/// One customer paying one account's bills.
pub struct BillSession {
    backend: BackendEntry,
    dialect: usize,
    /// The utility the customer chose (or their card names): routes re-pays and clearing.
    utility: String,
    /// The account and its open bills, as the backend answered.
    pub account: BillAccount,
    /// What the customer chose to pay: everything owed unless they chose less.
    due: Fen,
    pub(super) paid: Fen,
    pub(super) payment: Option<i64>,
    /// Banknotes the acceptor did not credit that may be in the kiosk: each item and value.
    pub caught: Vec<(i64, Fen)>,
    /// A bank-card payment: the approved debit, whose bill payment's intent is journaled.
    pub(super) bank: Option<BankPaid<BillPaymentRequest>>,
}

impl BillSession {
    pub fn due(&self) -> Fen {
        self.due
    }

    pub fn paid(&self) -> Fen {
        self.paid
    }
}

impl Till for BillSession {
    fn due(&self) -> Fen {
        self.due
    }

    fn parts(&mut self) -> TillParts<'_> {
        TillParts {
            payment: self.payment,
            payer: &self.account.customer_number,
            for_bill: true,
            paid: &mut self.paid,
            caught: &mut self.caught,
        }
    }

    fn set_payment(&mut self, id: i64) {
        self.payment = Some(id);
    }
}

/// How a bill payment ended for the customer's money.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BillOutcome {
    /// Booked by the backend.
    Paid { serial: u64, receipt: BillReceipt },
    /// The backend refused it: the money is owed back (an operator item says so).
    Refused { serial: u64, refusal: Refusal },
    /// Not known yet, or not delivered yet: asked about, or paid again (补缴), automatically.
    Pending { serial: u64, why: String },
}

/// A bill payment's end, with the receipt the customer takes away.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BillCompletion {
    pub outcome: BillOutcome,
    pub receipt: Receipt,
    pub printed: bool,
}

/// What the backend said to one `bill-pay`, as the engine acts on it.
pub(super) enum BillAnswer {
    Paid(BillReceipt),
    Refused(Refusal),
    /// Nothing reached the backend: it cannot have booked it.
    NeverReached(String),
    Unknown(String),
}

impl BillAnswer {
    pub(super) fn state(&self) -> &'static str {
        match self {
            BillAnswer::Paid(_) => "paid",
            BillAnswer::Refused(_) => "refused",
            BillAnswer::NeverReached(_) => "never-reached",
            BillAnswer::Unknown(_) => "pending",
        }
    }
}

impl SaleEngine {
    /// A customer typed (or their card gave) account `customer_number` of utility `utility`:
    /// its open bills, from the utility's backend.
    pub fn start_bill(
        &mut self,
        customer_number: &str,
        utility: &str,
    ) -> Result<BillSession, SaleError> {
        check_account_number(customer_number).map_err(SaleError::Account)?;
        let (backend, dialect) = self.route(utility).ok_or_else(|| SaleError::NotServed {
            utility: utility.to_string(),
            card_serial: customer_number.to_string(),
        })?;
        let mut session = self.backend_session(&backend, dialect)?;
        let account = self
            .wait(|| session.bill_query(customer_number))
            .map_err(|cause| super::backend_error(&backend, cause))?;
        self.journal.note(
            "bills-shown",
            json!({"account": customer_number, "bills": account.bills.len(),
                   "owed_fen": account.total.0}),
        );
        Ok(BillSession {
            backend,
            dialect,
            utility: utility.to_string(),
            due: account.total,
            account,
            paid: Fen(0),
            payment: None,
            caught: Vec::new(),
            bank: None,
        })
    }

    /// The bills of the account whose card is in session `s` (to settle arrears before buying).
    pub fn start_bill_for(&mut self, s: &super::CashSession) -> Result<BillSession, SaleError> {
        let (account, utility) = (
            s.account.customer_number.clone(),
            s.data.utility_code.clone(),
        );
        self.start_bill(&account, &utility)
    }

    /// Asks the backend for session `s`'s account again (after its bills were paid, say).
    pub fn refresh_account(&mut self, s: &mut super::CashSession) -> Result<(), SaleError> {
        s.account = self.account(&s.backend, s.dialect, &s.data)?;
        Ok(())
    }

    /// The customer pays `amount` of what is owed (at least 0.01 yuan, at most all of it
    /// rounded up to the yuan: the kiosk gives no change, the backend keeps the rest as the
    /// account's credit), before any money is in.
    pub fn choose_bill_amount(
        &mut self,
        s: &mut BillSession,
        amount: Fen,
    ) -> Result<(), SaleError> {
        if s.paid > Fen(0) {
            return Err(SaleError::WrongStep("money is in: the amount is fixed"));
        }
        let most = cash_due(s.account.total);
        if amount == Fen(0) || amount > most {
            return Err(SaleError::OutOfLimits(amount, Fen(1), most));
        }
        s.due = amount;
        Ok(())
    }

    /// Banknotes for the bill until it is paid or `patience` passes without one; see
    /// [`take_cash_watched`](Self::take_cash_watched).
    pub fn take_bill_cash(
        &mut self,
        s: &mut BillSession,
        acceptor: &mut dyn CashAcceptor,
        patience: std::time::Duration,
        go_on: &mut dyn FnMut(Fen) -> bool,
    ) -> Result<Fen, SaleError> {
        if s.due == Fen(0) {
            return Err(SaleError::WrongStep("nothing is owed on this account"));
        }
        if s.bank.is_some() {
            return Err(SaleError::WrongStep(
                "paid by bank card: no banknotes are taken",
            ));
        }
        self.take_notes(s, acceptor, patience, go_on)
    }

    /// Ends a session in which nothing was paid; a banknote caught on the way in is printed on
    /// a receipt with its operator item. Returns whether that receipt printed, if there was one.
    pub fn cancel_bill(
        &mut self,
        s: BillSession,
        printer: &mut dyn ReceiptPrinter,
    ) -> Result<Option<bool>, SaleError> {
        if s.paid > Fen(0) {
            return Err(SaleError::WrongStep(
                "money is in: the bill payment is completed, not cancelled",
            ));
        }
        if let Some(payment) = s.payment {
            self.journal.commit(|b| {
                let id = b.append(
                    "payment-cancelled",
                    &json!({"payment": payment, "account": s.account.customer_number}),
                )?;
                b.close_payment(payment, "open", "abandoned", None, id)
            })?;
        }
        if s.caught.is_empty() {
            return Ok(None);
        }
        let mut r = Receipt::new()
            .with(Line::new("自助缴费凭证").bold().double().centred())
            .with(Line::new(format!("终端号：{}", self.terminal_id)))
            .with(Line::new(format!("户号：{}", s.account.customer_number)))
            .with(Line::new("未缴费"));
        super::receipt::caught_lines(&mut r, &s.caught);
        let printed = self.print_receipt(printer, ReceiptOf::Payment(s.payment), &r)?;
        self.journal.flush()?;
        Ok(Some(printed))
    }

    /// Pays what was put in (or debited from a bank card) to the account's bills and prints
    /// the receipt.
    pub fn complete_bill(
        &mut self,
        s: &mut BillSession,
        printer: &mut dyn ReceiptPrinter,
    ) -> Result<BillCompletion, SaleError> {
        let (serial, request) = match &s.bank {
            // Paid by bank card: the payment's intent went into the journal with the approval,
            // maybe long ago (the customer took their card back since). Its request may be in
            // flight from now on, and "no such payment" is proof only once that has passed.
            Some(bank) => {
                let serial = bank.serial;
                self.journal.commit(|b| {
                    let id = b.append("bill-pay-sending", &json!({"serial": serial}))?;
                    b.bill_payment_state(serial, &["intent"], "intent", None, id)
                })?;
                (serial, bank.request.clone())
            }
            None => self.bill_cash_intent(s)?,
        };
        fail::fail_point!("bill.after-intent");
        let answer = self.send_bill(&s.backend, s.dialect, &request);
        fail::fail_point!("bill.after-sent");
        let answer = match answer {
            BillAnswer::Unknown(why) => {
                self.journal
                    .append("bill-pay-unknown", json!({"serial": serial, "why": why}))?;
                match self.ask_bill_status(&s.backend, s.dialect, serial, s.paid) {
                    Some(BillPaymentStatus::Paid(r)) => BillAnswer::Paid(r),
                    Some(BillPaymentStatus::Refused(r)) => BillAnswer::Refused(r),
                    // "No such payment" may be a request still on its way: recovery asks again.
                    _ => BillAnswer::Unknown(why),
                }
            }
            other => other,
        };
        self.record_bill_answer(serial, &["intent"], &answer, "缴费")?;
        fail::fail_point!("bill.after-answer");
        let outcome = match answer {
            BillAnswer::Paid(receipt) => BillOutcome::Paid { serial, receipt },
            BillAnswer::Refused(refusal) => BillOutcome::Refused { serial, refusal },
            BillAnswer::NeverReached(why) | BillAnswer::Unknown(why) => {
                BillOutcome::Pending { serial, why }
            }
        };
        let receipt = self.bill_receipt(s, &outcome);
        let printed = self.print_receipt(printer, ReceiptOf::Bill(serial), &receipt)?;
        self.journal.flush()?;
        Ok(BillCompletion {
            outcome,
            receipt,
            printed,
        })
    }

    /// Journals the intent of paying the banknotes in `s` to its account's bills, with its
    /// serial, and closes the session's payment to it, in one commit.
    fn bill_cash_intent(
        &mut self,
        s: &BillSession,
    ) -> Result<(u64, BillPaymentRequest), SaleError> {
        if s.paid == Fen(0) {
            return Err(SaleError::NothingPaid);
        }
        let payment = s
            .payment
            .ok_or(SaleError::WrongStep("money is in with no payment opened"))?;
        let terminal_id = self.terminal_id.clone();
        Ok(self.journal.commit(|b| {
            let id = b.append(
                "bill-pay-intent",
                &json!({"account": s.account.customer_number, "paid_fen": s.paid.0,
                        "payment": payment, "customer_name": s.account.customer_name,
                        "address": s.account.address}),
            )?;
            let (serial, request) = bill_intent(b, &terminal_id, s, PaymentKind::Cash, id)?;
            b.close_payment_for_bill(payment, serial, id)?;
            Ok((serial, request))
        })?)
    }

    /// Sends `request` once, through the account's backend.
    pub(super) fn send_bill(
        &self,
        backend: &BackendEntry,
        dialect: usize,
        request: &BillPaymentRequest,
    ) -> BillAnswer {
        let mut session = match self.backend_session(backend, dialect) {
            Ok(session) => session,
            Err(e) => return BillAnswer::NeverReached(e.to_string()),
        };
        match self.wait(|| session.bill_pay(request)) {
            Ok(receipt) => BillAnswer::Paid(receipt),
            Err(DialectError::Backend(BackendError::Refused(r))) => BillAnswer::Refused(r),
            Err(DialectError::Backend(
                e @ (BackendError::Unreachable(_) | BackendError::NotSupported),
            )) => BillAnswer::NeverReached(e.to_string()),
            Err(e) => BillAnswer::Unknown(e.to_string()),
        }
    }

    /// Asks the backend what became of bill payment `serial`; `None` when it cannot answer.
    pub(super) fn ask_bill_status(
        &mut self,
        backend: &BackendEntry,
        dialect: usize,
        serial: u64,
        paid: Fen,
    ) -> Option<BillPaymentStatus> {
        let asked = self
            .backend_session(backend, dialect)
            .map_err(|e| e.to_string())
            .and_then(|mut b| {
                self.wait(|| b.bill_payment_status(&self.terminal_id, serial))
                    .map_err(|e| e.to_string())
            });
        match asked {
            // A receipt for another amount than was paid says nothing of this payment.
            Ok(BillPaymentStatus::Paid(r)) if r.amount != paid => {
                self.journal.note(
                    "bill-status-unanswered",
                    json!({"serial": serial, "why": format!(
                        "the backend's receipt is for {} fen, {} fen were paid", r.amount.0, paid.0)}),
                );
                None
            }
            Ok(status) => Some(status),
            Err(why) => {
                self.journal.note(
                    "bill-status-unanswered",
                    json!({"serial": serial, "why": why}),
                );
                None
            }
        }
    }

    /// Journals what the backend said of bill payment `serial`, which must still be in one of
    /// `from`, and moves it to match; a refusal opens its refund item in the same commit, and
    /// an answer closes an alert that there was none. A receipt that arrives after another
    /// process moved the payment on is recorded anyway ([`late_bill_receipt`]).
    pub(super) fn record_bill_answer(
        &mut self,
        serial: u64,
        from: &[&str],
        answer: &BillAnswer,
        what: &str,
    ) -> Result<(), SaleError> {
        let recorded = self.journal.commit(|b| {
            match answer {
                BillAnswer::Paid(receipt) => {
                    let (utility, payment) = bill_facts(b, serial)?;
                    let id = b.append(
                        "bill-paid",
                        &json!({"serial": serial, "payment_id": receipt.backend_payment_id,
                                "amount_fen": receipt.amount.0,
                                "remaining_fen": receipt.remaining.0,
                                "utility": utility, "payment": payment}),
                    )?;
                    let json = serde_json::to_string(receipt).expect("a receipt serializes");
                    b.bill_payment_state(serial, from, "paid", Some(&json), id)?;
                    b.count("lifetime.bill_paid_fen", receipt.amount.0 as i64)?;
                }
                BillAnswer::Refused(r) => {
                    let id = b.append(
                        "bill-refused",
                        &json!({"serial": serial, "reason": r.message}),
                    )?;
                    b.bill_payment_state(serial, from, "refused", None, id)?;
                    let (paid, account): (i64, String) = b.sql().query_row(
                        "SELECT paid_fen, customer_number FROM bill_payments WHERE serial = ?1",
                        [serial as i64],
                        |r| Ok((r.get(0)?, r.get(1)?)),
                    )?;
                    // Paid by card, the operator checks the claimant's card and receipt.
                    let card: Option<(String, Option<String>)> = b
                        .sql()
                        .query_row(
                            "SELECT pan_masked, rrn FROM debits WHERE bill_serial = ?1",
                            [serial as i64],
                            |r| Ok((r.get(0)?, r.get(1)?)),
                        )
                        .optional()?;
                    let paid_by = card.map_or_else(String::new, |(pan, rrn)| {
                        format!("，银行卡 {pan}，参考号 {}", rrn.unwrap_or_default())
                    });
                    let reason = format!(
                        "退款 {} 元：{what}被拒（{}）（户号 {account}{paid_by}）",
                        yuan(Fen(paid as u64)),
                        r.message
                    );
                    b.open_manual_item(&NewItem::bill(serial, &account, &reason), id)?;
                }
                BillAnswer::NeverReached(why) => {
                    let id =
                        b.append("bill-never-reached", &json!({"serial": serial, "why": why}))?;
                    b.bill_payment_state(serial, from, "never-reached", None, id)?;
                }
                BillAnswer::Unknown(why) => {
                    let id = b.append("bill-pending", &json!({"serial": serial, "why": why}))?;
                    b.bill_payment_state(serial, from, "pending", None, id)?;
                    return Ok(());
                }
            }
            close_bill_alerts(b, serial, answer.state(), &["bill-unanswered"])
        });
        match (recorded, answer) {
            (Ok(()), _) => Ok(()),
            (Err(JournalError::Conflict { .. }), BillAnswer::Paid(receipt)) => {
                self.late_bill_receipt(serial, receipt)
            }
            (Err(e), _) => Err(e.into()),
        }
    }

    /// The settlements an item about bill payment `serial` takes now.
    pub(super) fn bill_resolutions(&self, serial: u64) -> Result<Vec<Resolution>, SaleError> {
        use Resolution::{Dismiss, Refund, Resell};
        Ok(
            match self
                .journal
                .bill_payment(serial)?
                .map(|p| p.state)
                .as_deref()
            {
                Some("refused" | "never-reached") => vec![Refund],
                Some("manual") => vec![Resell, Refund],
                Some("paid" | "refunded") => vec![Dismiss],
                _ => Vec::new(),
            },
        )
    }

    /// An operator settles `item`, about bill payment `serial`: a refund only with proof the
    /// backend never booked it; a re-pay sends it once more under its own serial.
    pub(super) fn resolve_bill(
        &mut self,
        item: &ManualItem,
        serial: u64,
        resolution: Resolution,
        operator_note: &str,
    ) -> Result<String, SaleError> {
        let p = self
            .journal
            .bill_payment(serial)?
            .ok_or(SaleError::NoSuchItem(item.id))?;
        match resolution {
            Resolution::Refund => {
                let refunded = self.journal.commit(|b| {
                    let audit = b.append(
                        "bill-refund-paid",
                        &json!({"serial": serial, "fen": p.paid_fen, "item": item.id,
                                "note": operator_note}),
                    )?;
                    b.bill_payment_state(
                        serial,
                        &["refused", "never-reached", "manual"],
                        "refunded",
                        None,
                        audit,
                    )?;
                    b.count("lifetime.refunded_fen", p.paid_fen as i64)?;
                    b.resolve_manual_item(item.id, &format!("refunded: {operator_note}"), audit)
                });
                if let Err(JournalError::Conflict { .. }) = refunded {
                    let state = self
                        .journal
                        .bill_payment(serial)?
                        .map_or_else(String::new, |p| p.state);
                    return Err(SaleError::RefundRefused { serial, state });
                }
                refunded?;
                Ok(format!(
                    "item {}: {} yuan refunded for bill payment {serial}",
                    item.id,
                    yuan(Fen(p.paid_fen))
                ))
            }
            Resolution::Resell if p.state == "manual" => {
                let (backend, dialect) =
                    self.route(&p.utility).ok_or_else(|| SaleError::NotServed {
                        utility: p.utility.clone(),
                        card_serial: p.customer_number.clone(),
                    })?;
                let request = bill_request(&p)?;
                self.journal.commit(|b| {
                    let id = b.append(
                        "bill-manual-repay",
                        &json!({"serial": serial, "item": item.id, "note": operator_note}),
                    )?;
                    b.bill_payment_state(serial, &["manual"], "pending", None, id)?;
                    b.resolve_manual_item(item.id, &format!("paid again: {operator_note}"), id)
                })?;
                let answer = self.send_bill(&backend, dialect, &request);
                let state = answer.state();
                self.record_bill_answer(serial, &["pending"], &answer, "补缴")?;
                Ok(format!(
                    "item {}: bill payment {serial} sent again: {state}",
                    item.id
                ))
            }
            Resolution::Resell => Err(SaleError::ResellRefused {
                serial,
                state: p.state,
            }),
            Resolution::Dismiss if matches!(p.state.as_str(), "paid" | "refunded") => {
                self.journal.commit(|b| {
                    let audit = b.append(
                        "manual-dismissed",
                        &json!({"item": item.id, "note": operator_note}),
                    )?;
                    b.resolve_manual_item(item.id, &format!("dismissed: {operator_note}"), audit)
                })?;
                Ok(format!("item {}: closed", item.id))
            }
            Resolution::Dismiss => Err(SaleError::DismissRefused(item.id)),
        }
    }

    /// The customer's receipt for a bill payment.
    fn bill_receipt(&self, s: &BillSession, outcome: &BillOutcome) -> Receipt {
        let serial = match outcome {
            BillOutcome::Paid { serial, .. }
            | BillOutcome::Refused { serial, .. }
            | BillOutcome::Pending { serial, .. } => *serial,
        };
        let mut r = Receipt::new()
            .with(Line::new("自助缴费凭证").bold().double().centred())
            .with(Line::new(format!("终端号：{}", self.terminal_id)))
            .with(Line::new(format!("流水号：{serial:08}")))
            .with(Line::new(format!("户名：{}", s.account.customer_name)))
            .with(Line::new(format!("户号：{}", s.account.customer_number)))
            .with(Line::new(format!("应缴金额：{}元", yuan(s.account.total))))
            .with(Line::new(format!("实收金额：{}元", yuan(s.paid))));
        if let Some(bank) = &s.bank {
            r.push(Line::new(format!("银行卡支付：{}", bank.pan_masked)));
            r.push(Line::new(format!("参考号：{}", bank.rrn)));
        }
        match outcome {
            BillOutcome::Paid { receipt, .. } => {
                r.push(Line::new(format!(
                    "尚欠金额：{}元",
                    yuan(receipt.remaining)
                )));
                r.push(Line::new(format!(
                    "交易编号：{}",
                    receipt.backend_payment_id
                )));
                r.push(Line::new("缴费成功").bold());
            }
            BillOutcome::Refused { refusal, .. } => {
                r.push(Line::new(format!("缴费失败：{}", refusal.message)).bold());
                r.push(Line::new("款项待退还，请保留此凭条联系营业厅"));
            }
            BillOutcome::Pending { .. } => {
                r.push(Line::new("交易待处理：结果确认后自动补缴").bold());
                r.push(Line::new("请保留此凭条"));
            }
        }
        super::receipt::caught_lines(&mut r, &s.caught);
        r
    }
}

/// Allocates bill payment `s`'s serial and records it in state `intent`, paid by `payment`,
/// under audit row `audit_id`: the request it sends (and any re-pay repeats).
pub(super) fn bill_intent(
    b: &mut crate::journal::Batch<'_>,
    terminal_id: &str,
    s: &BillSession,
    payment: PaymentKind,
    audit_id: i64,
) -> crate::journal::BatchResult<(u64, BillPaymentRequest)> {
    let serial = b.allocate_serial(audit_id)?;
    let request = BillPaymentRequest {
        terminal_id: terminal_id.to_string(),
        kiosk_serial: serial,
        customer_number: s.account.customer_number.clone(),
        amount: s.paid,
        payment,
    };
    let request_json = serde_json::to_string(&request).expect("a request serializes");
    b.record_bill_payment(
        &NewBillPayment {
            serial,
            payment: match payment {
                PaymentKind::Cash => "cash",
                PaymentKind::BankCard => "bank-card",
            },
            customer_number: &s.account.customer_number,
            utility: &s.utility,
            paid_fen: s.paid.0,
            request_json: &request_json,
        },
        audit_id,
    )?;
    Ok((serial, request))
}

/// Bill payment `serial`'s utility and how it was paid, for its `bill-paid` audit row (the fleet
/// totals bill payments per utility from the journal alone).
pub(super) fn bill_facts(
    b: &mut crate::journal::Batch<'_>,
    serial: u64,
) -> crate::journal::BatchResult<(String, String)> {
    Ok(b.sql().query_row(
        "SELECT utility, payment FROM bill_payments WHERE serial = ?1",
        [serial as i64],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?)
}

/// What paying `owed` in banknotes takes: rounded up to the yuan, as the kiosk gives no change.
pub fn cash_due(owed: Fen) -> Fen {
    Fen(owed.0.div_ceil(100) * 100)
}

/// The request of bill payment `p`, as first sent.
pub(super) fn bill_request(p: &BillPaymentRow) -> Result<BillPaymentRequest, SaleError> {
    serde_json::from_str(&p.request_json)
        .map_err(|e| SaleError::Corrupt(format!("the request of bill payment {}: {e}", p.serial)))
}

/// Closes bill payment `serial`'s open items whose opening row is one of `kinds` (all its open
/// items when `kinds` is empty), saying the backend answered `state`.
pub(super) fn close_bill_alerts(
    b: &mut crate::journal::Batch<'_>,
    serial: u64,
    state: &str,
    kinds: &[&str],
) -> crate::journal::BatchResult<()> {
    let items: Vec<i64> = {
        let mut stmt = b.sql().prepare(
            "SELECT m.id FROM manual_items m JOIN audit a ON a.id = m.audit_id
             WHERE m.bill_serial = ?1 AND m.state = 'open'
               AND (?2 = '[]' OR a.kind IN (SELECT value FROM json_each(?2)))",
        )?;
        stmt.query_map(
            rusqlite::params![serial as i64, serde_json::to_string(kinds).expect("names")],
            |r| r.get(0),
        )?
        .collect::<rusqlite::Result<_>>()?
    };
    for item in items {
        let audit = b.append(
            "bill-answered",
            &json!({"serial": serial, "item": item, "state": state}),
        )?;
        b.resolve_manual_item(item, &format!("the backend answered: {state}"), audit)?;
    }
    Ok(())
}
