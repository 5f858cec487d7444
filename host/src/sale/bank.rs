//! The bank-card sale beside the cash sale, with the same journal discipline: the debit's
//! intent is journaled before the purchase message goes to the acquirer; an approved debit is
//! journaled in one commit with its sale's intent, so a stop anywhere leaves a debit with a sale
//! to finish (sold, re-sold or handed to an operator), never a debit without one; a debit whose
//! answer is not known is reversed, and the reversal is sent until the acquirer acknowledges it.
//! A failure after an approved debit is re-sold, never refunded automatically.

use std::sync::{Arc, Mutex};

use serde_json::json;

use super::bill::{BillSession, bill_intent};
use super::{BankPaid, CashSession, SaleEngine, SaleError, sale_intent};
use crate::backend::PaymentKind;
use crate::bank_card::BankCard;
use crate::config::AcquirerEntry;
use crate::journal::{Batch, BatchResult, NewDebit, NewItem};
use crate::money::Fen;
use crate::payment::{
    AcquirerError, Decline, PurchaseOutcome, PurchaseRequest, ReversalReason, ReversalRequest,
    Security, Settlement, SettlementRequest,
};
use crate::pin_pad::{KeySlot, PinBlock, PinPad};
use crate::plugin::{AcquirerSession, Plugin};

/// Trace numbers run 1..=999999 and wrap (ISO 8583 field 11).
const MAX_STAN: i64 = 999_999;
const STAN: &str = "acquirer.stan";
/// The last batch number a sign-on used.
const BATCH: &str = "acquirer.batch";
/// The batch open for debits; 0 while not signed on (before a sign-on completes, after a
/// balanced settlement).
const OPEN_BATCH: &str = "acquirer.open_batch";
/// The last batch settled and balanced: a sign-on opens the next one only after it, so a
/// sign-on in the middle of a batch (new keys) keeps the batch and none of its debits is left
/// out of its settlement.
const SETTLED_BATCH: &str = "acquirer.settled_batch";
/// The batch whose settlement is out (0: none): no sign-on reopens it meanwhile, and a
/// settlement left unanswered by a stop is sent again by the next `settle`.
const SETTLING: &str = "acquirer.settling_batch";
/// Purchases a batch can hold: settlement counts them in three digits.
const MAX_BATCH_PURCHASES: u32 = 999;

/// The kiosk's link to its acquirer: the dialect plugin, where the acquirer is and who the
/// kiosk is to it, and the PIN pad that holds the keys.
pub struct BankLink {
    pub entry: AcquirerEntry,
    dialect: Plugin,
    pin_pad: Arc<Mutex<PinPad>>,
}

impl BankLink {
    pub fn new(entry: AcquirerEntry, dialect: Plugin, pin_pad: Arc<Mutex<PinPad>>) -> BankLink {
        BankLink {
            entry,
            dialect,
            pin_pad,
        }
    }

    pub fn pin_pad(&self) -> &Arc<Mutex<PinPad>> {
        &self.pin_pad
    }

    pub fn dialect(&self) -> &Plugin {
        &self.dialect
    }

    /// Speaks to the acquirer through `dialect` from now on (a rollout's switch).
    pub fn replace_dialect(&mut self, dialect: Plugin) {
        self.dialect = dialect;
    }

    fn session(&self) -> Result<AcquirerSession, SaleError> {
        let security: Arc<Mutex<dyn Security>> = self.pin_pad.clone();
        Ok(self
            .dialect
            .acquirer_session(self.entry.endpoint.clone(), Some(security))?)
    }

    fn error(&self, cause: impl Into<AcquirerError>) -> SaleError {
        SaleError::Acquirer {
            acquirer: self.entry.name.clone(),
            cause: cause.into(),
        }
    }
}

/// What an approved debit paid for: the serial of its sale or of its bill payment.
pub(super) enum DebitFor {
    Sale(u64),
    Bill(u64),
}

/// How a debit ended: approved with what it paid for, or declined.
pub(super) enum Debited<R> {
    Approved(BankPaid<R>),
    Declined(Decline),
}

/// A debit's end, left in its session: the approved payment, or nothing paid.
fn into_session<R>(
    debited: Result<Debited<R>, SaleError>,
    bank: &mut Option<BankPaid<R>>,
    paid: &mut Fen,
) -> Result<CardPayment, SaleError> {
    match debited {
        Ok(Debited::Approved(payment)) => {
            let serial = payment.serial;
            *bank = Some(payment);
            Ok(CardPayment::Approved { serial })
        }
        Ok(Debited::Declined(decline)) => {
            *paid = Fen(0);
            Ok(CardPayment::Declined(decline))
        }
        Err(e) => {
            *paid = Fen(0);
            Err(e)
        }
    }
}

/// How a bank-card payment ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CardPayment {
    /// Debited; [`SaleEngine::complete`] sells it.
    Approved { serial: u64 },
    /// The acquirer refused; nothing was debited and nothing is left to handle.
    Declined(Decline),
}

impl SaleEngine {
    /// The batch the kiosk signed on to, if it has signed on.
    pub fn signed_on(&self) -> Result<Option<u32>, SaleError> {
        let batch = self.journal.counter(OPEN_BATCH)?;
        Ok((batch > 0).then_some(batch as u32))
    }

    /// The batch whose settlement was sent and not answered, if any: it is sent again before
    /// the kiosk signs on.
    pub fn settling(&self) -> Result<Option<u32>, SaleError> {
        let batch = self.journal.counter(SETTLING)?;
        Ok((batch > 0).then_some(batch as u32))
    }

    /// Reversals still owed are sent first: a batch is not settled with one outstanding.
    fn no_reversals_pending(&mut self, link: &BankLink) -> Result<(), SaleError> {
        self.forward_reversals(link)?;
        let pending = self.journal.debits(&["intent", "reversing"])?.len();
        if pending > 0 {
            return Err(SaleError::ReversalsPending(pending));
        }
        Ok(())
    }

    /// Signs on with the acquirer: the working keys it issues are loaded into the PIN pad
    /// (which checks them). The batch is the one still open for settlement, or the next after a
    /// settled one. Returns the batch.
    pub fn sign_on(&mut self, link: &BankLink) -> Result<u32, SaleError> {
        // Not signed on from here until the keys are in the PIN pad: a stop in between leaves
        // the kiosk to sign on again, never to debit into a batch the acquirer has moved past.
        // The batch is chosen in the commit: a settlement may come from another process.
        let (batch, stan) = self.journal.commit(|b| {
            let settling = counter_in(b, SETTLING)?;
            if settling > 0 {
                return Ok(Err(SaleError::Settling(settling as u32)));
            }
            let (last, settled) = (counter_in(b, BATCH)?, counter_in(b, SETTLED_BATCH)?);
            let batch = if last == 0 || last == settled {
                (last % MAX_STAN + 1) as u32
            } else {
                last as u32
            };
            let stan = next_stan(b)?;
            b.append(
                "sign-on-intent",
                &json!({"acquirer": link.entry.name, "batch": batch, "stan": stan}),
            )?;
            b.set_counter(BATCH, i64::from(batch))?;
            b.set_counter(OPEN_BATCH, 0)?;
            Ok(Ok((batch, stan)))
        })??;
        let keys = self.wait(|| {
            link.session()?
                .sign_on(&link.entry.terminal, stan, batch)
                .map_err(|e| link.error(e))
        })?;
        {
            let mut pad = link.pin_pad.lock().unwrap_or_else(|p| p.into_inner());
            pad.load_working_key(KeySlot::Pin, &keys.pin_key, &keys.pin_key_check)?;
            pad.load_working_key(KeySlot::Mac, &keys.mac_key, &keys.mac_key_check)?;
        }
        self.journal.commit(|b| {
            b.append(
                "signed-on",
                &json!({"acquirer": link.entry.name, "batch": batch}),
            )?;
            b.set_counter(OPEN_BATCH, i64::from(batch))
        })?;
        fail::fail_point!("bank.after-sign-on");
        // Reversals owed from before (an acquirer that lost its keys refused them) go now; a
        // refusal right after a sign-on is not the keys' fault and does not close the batch.
        self.send_reversals(link, true)?;
        Ok(batch)
    }

    /// Pays the quoted amount from `card` (`pin_block` from the PIN pad). Approved, the
    /// session's sale is recorded with the debit and [`complete`](Self::complete) sells it.
    pub fn pay_by_card(
        &mut self,
        s: &mut CashSession,
        link: &BankLink,
        card: &BankCard,
        pin_block: Option<&PinBlock>,
    ) -> Result<CardPayment, SaleError> {
        let Some(quote) = s.quote else {
            return Err(SaleError::WrongStep(
                "choose the amount before paying by bank card",
            ));
        };
        if s.paid > Fen(0) || s.payment.is_some() || s.bank.is_some() {
            return Err(SaleError::WrongStep(
                "this session is already being paid for",
            ));
        }
        let amount = quote.amount;
        let terminal_id = self.terminal_id.clone();
        let debited = self.debit(link, card, pin_block, amount, |b, _| {
            // The sale is for what was debited.
            s.paid = amount;
            let (serial, request, _) = sale_intent(b, &terminal_id, s, PaymentKind::BankCard)?;
            Ok((DebitFor::Sale(serial), request))
        });
        into_session(debited, &mut s.bank, &mut s.paid)
    }

    /// Pays the bills of `s` (the amount chosen) from `card`. Approved, the bill payment is
    /// recorded with the debit and [`complete_bill`](Self::complete_bill) pays it.
    pub fn pay_bill_by_card(
        &mut self,
        s: &mut BillSession,
        link: &BankLink,
        card: &BankCard,
        pin_block: Option<&PinBlock>,
    ) -> Result<CardPayment, SaleError> {
        if s.paid > Fen(0) || s.payment.is_some() || s.bank.is_some() {
            return Err(SaleError::WrongStep(
                "this bill payment is already being paid for",
            ));
        }
        let amount = s.due();
        if amount == Fen(0) {
            return Err(SaleError::WrongStep("nothing is owed on this account"));
        }
        let terminal_id = self.terminal_id.clone();
        let debited = self.debit(link, card, pin_block, amount, |b, debit| {
            s.paid = amount;
            let id = b.append(
                "bill-pay-intent",
                &json!({"account": s.account.customer_number, "paid_fen": amount.0,
                        "debit": debit, "customer_name": s.account.customer_name,
                        "address": s.account.address}),
            )?;
            let (serial, request) = bill_intent(b, &terminal_id, s, PaymentKind::BankCard, id)?;
            Ok((DebitFor::Bill(serial), request))
        });
        into_session(debited, &mut s.bank, &mut s.paid)
    }

    /// Debits `amount` from `card`. The debit's intent is journaled before the purchase
    /// message; its approval is journaled in one commit with what it pays for, which `record`
    /// writes, given the debit's id (and returns the serial of). A debit with no answer is reversed.
    pub(super) fn debit<T>(
        &mut self,
        link: &BankLink,
        card: &BankCard,
        pin_block: Option<&PinBlock>,
        amount: Fen,
        record: impl FnOnce(&mut Batch<'_>, i64) -> BatchResult<(DebitFor, T)>,
    ) -> Result<Debited<T>, SaleError> {
        // A customer who tried before may still be owed a reversal: it goes first.
        self.forward_reversals(link)?;
        let pan_masked = card.masked_pan();
        let card_json = json!({"pan": card.pan, "expiry": card.expiry,
                               "track2": hex::encode_upper(&card.track2)})
        .to_string();
        let opened = self.journal.commit(|b| {
            // Checked in the commit itself: clearing or a settlement may come from another
            // process (the operator's CLI) at any moment.
            let (period, period_state): (i64, String) = b.sql().query_row(
                "SELECT id, state FROM periods ORDER BY id DESC LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?;
            if period_state != "open" {
                return Ok(Err(SaleError::Clearing(period)));
            }
            let batch = counter_in(b, OPEN_BATCH)? as u32;
            if batch == 0 {
                return Ok(Err(SaleError::NotSignedOn));
            }
            // Settlement counts a batch's purchases in three digits (field 48).
            let approved: u32 = b.sql().query_row(
                "SELECT count(*) FROM debits WHERE batch = ?1 AND state IN ('approved', 'kept')",
                [batch],
                |r| r.get(0),
            )?;
            if approved >= MAX_BATCH_PURCHASES {
                return Ok(Err(SaleError::BatchFull(batch)));
            }
            let stan = next_stan(b)?;
            let id = b.append(
                "debit-intent",
                &json!({"batch": batch, "stan": stan, "fen": amount.0, "card": pan_masked}),
            )?;
            let debit = b.record_debit(
                &NewDebit {
                    batch,
                    stan,
                    amount_fen: amount.0,
                    pan_masked: &pan_masked,
                    card_json: &card_json,
                },
                id,
            )?;
            Ok(Ok((debit, stan, batch)))
        })?;
        let (debit, stan, batch) = opened?;
        fail::fail_point!("bank.after-debit-intent");
        let request = PurchaseRequest {
            terminal: link.entry.terminal.clone(),
            stan,
            batch,
            amount,
            card: card.clone(),
            pin_block: pin_block.map(|p| *p.bytes()),
        };
        let answer = match self.wait(|| link.session().map(|mut a| a.purchase(&request))) {
            Ok(answer) => answer,
            // The dialect did not even start: nothing was sent.
            Err(e) => {
                self.debit_failed(debit, batch, stan, &e.to_string())?;
                return Err(e);
            }
        };
        match answer {
            Ok(PurchaseOutcome::Approved(approval)) => {
                let (serial, recorded) = self.journal.commit(|b| {
                    let id = b.append(
                        "debit-approved",
                        &json!({"batch": batch, "stan": stan, "fen": amount.0,
                                "rrn": approval.rrn, "auth_code": approval.auth_code}),
                    )?;
                    b.count("lifetime.bank_debited_fen", amount.0 as i64)?;
                    let (paid_for, recorded) = record(b, debit)?;
                    let serial = match paid_for {
                        DebitFor::Sale(serial) => {
                            b.debit_state(
                                debit,
                                &["intent"],
                                "approved",
                                Some(serial),
                                Some(&approval.rrn),
                                id,
                            )?;
                            serial
                        }
                        DebitFor::Bill(serial) => {
                            b.debit_state(
                                debit,
                                &["intent"],
                                "approved",
                                None,
                                Some(&approval.rrn),
                                id,
                            )?;
                            b.debit_paid_bill(debit, serial)?;
                            serial
                        }
                    };
                    Ok((serial, recorded))
                })?;
                fail::fail_point!("bank.after-debit-approved");
                Ok(Debited::Approved(BankPaid {
                    pan_masked,
                    rrn: approval.rrn,
                    serial,
                    request: recorded,
                }))
            }
            Ok(PurchaseOutcome::Declined(decline)) => {
                self.journal.commit(|b| {
                    let id = b.append(
                        "debit-declined",
                        &json!({"batch": batch, "stan": stan,
                                "code": decline.response_code, "message": decline.message}),
                    )?;
                    b.debit_state(debit, &["intent"], "declined", None, None, id)
                })?;
                Ok(Debited::Declined(decline))
            }
            Err(e) => {
                let e: AcquirerError = e.into();
                if let AcquirerError::OutcomeUnknown(why) = &e {
                    // The card may have been debited: undo it, now and until acknowledged.
                    self.journal.commit(|b| {
                        let id = b.append(
                            "debit-unknown",
                            &json!({"batch": batch, "stan": stan, "why": why}),
                        )?;
                        b.debit_state(debit, &["intent"], "reversing", None, None, id)
                    })?;
                    self.forward_reversals(link)?;
                    return Err(SaleError::DebitReversed(amount));
                }
                self.debit_failed(debit, batch, stan, &e.to_string())?;
                Err(link.error(e))
            }
        }
    }

    /// Debit `id` was never taken: the purchase did not reach the acquirer, or it did nothing.
    fn debit_failed(&mut self, id: i64, batch: u32, stan: u32, why: &str) -> Result<(), SaleError> {
        self.journal.commit(|b| {
            let audit = b.append(
                "debit-failed",
                &json!({"batch": batch, "stan": stan, "why": why}),
            )?;
            b.debit_state(id, &["intent"], "failed", None, None, audit)
        })?;
        Ok(())
    }

    /// Settles the batch with the acquirer: the kiosk's approved debits in it against the
    /// acquirer's. The answer is journaled (`settled`, or `settlement-unbalanced` with both
    /// sides' totals, for an operator); a balanced batch is followed by a sign-on to a new one.
    pub fn settle(&mut self, link: &BankLink) -> Result<Settlement, SaleError> {
        // A settlement a stop left unanswered is sent again, as it was counted.
        let settling = self.journal.counter(SETTLING)?;
        let batch = match settling {
            0 => self.signed_on()?.ok_or(SaleError::NotSignedOn)?,
            batch => batch as u32,
        };
        if settling == 0 {
            self.no_reversals_pending(link)?;
        }
        // Totalled and closed to new debits in one commit, so no debit another process (the
        // kiosk, while an operator settles from the CLI) makes in it is left out. A sign-on
        // opens it again if the settlement does not balance.
        let (stan, count, amount) = self.journal.commit(|b| {
            let resumed = counter_in(b, SETTLING)? == i64::from(batch);
            if !resumed && counter_in(b, OPEN_BATCH)? != i64::from(batch) {
                return Ok(Err(SaleError::NotSignedOn));
            }
            let undecided: i64 = b.sql().query_row(
                "SELECT count(*) FROM debits WHERE batch = ?1 AND state IN ('intent', 'reversing')",
                [batch],
                |r| r.get(0),
            )?;
            if undecided > 0 {
                return Ok(Err(SaleError::ReversalsPending(undecided as usize)));
            }
            let (count, amount): (u32, i64) = b.sql().query_row(
                "SELECT count(*), coalesce(sum(amount_fen), 0) FROM debits
                     WHERE batch = ?1 AND state IN ('approved', 'kept')",
                [batch],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?;
            let stan = next_stan(b)?;
            b.append(
                "settlement-intent",
                &json!({"batch": batch, "stan": stan, "count": count, "fen": amount}),
            )?;
            b.set_counter(OPEN_BATCH, 0)?;
            b.set_counter(SETTLING, i64::from(batch))?;
            Ok(Ok((stan, count, amount as u64)))
        })??;
        let request = SettlementRequest {
            terminal: link.entry.terminal.clone(),
            stan,
            batch,
            count,
            amount: Fen(amount),
        };
        let settled = match self.wait(|| link.session().map(|mut a| a.settle(&request)))? {
            Ok(settled) => settled,
            Err(e) => {
                let e: AcquirerError = e.into();
                let why = e.to_string();
                if let AcquirerError::OutcomeUnknown(_) | AcquirerError::MalformedReply(_) = e {
                    // Sent, and no answer to go by: the acquirer may have closed the batch, so no debit
                    // goes into it; the same settlement goes again (housekeeping sends it).
                    self.journal
                        .append("settlement-unknown", json!({"batch": batch, "why": why}))?;
                } else if settling == 0 {
                    // Not settled: the batch may be signed on to again and settled later.
                    self.journal.commit(|b| {
                        b.append("settlement-failed", &json!({"batch": batch, "why": why}))?;
                        b.set_counter(SETTLING, 0)
                    })?;
                } else {
                    // A resend that failed: the first send may have closed the batch, so it
                    // stays closed to debits until a settlement is answered.
                    self.journal
                        .append("settlement-failed", json!({"batch": batch, "why": why}))?;
                }
                return Err(link.error(e));
            }
        };
        // Balanced by the kiosk's own count, not only by the acquirer's word.
        let balanced = settled.balanced
            && settled.acquirer_count == count
            && settled.acquirer_amount == Fen(amount);
        let kind = if balanced {
            "settled"
        } else {
            "settlement-unbalanced"
        };
        self.journal.commit(|b| {
            b.append(
                kind,
                &json!({"batch": batch, "count": count, "fen": amount,
                        "acquirer_count": settled.acquirer_count,
                        "acquirer_fen": settled.acquirer_amount.0}),
            )?;
            // A settled batch takes no more debits, whether or not the next sign-on works.
            if balanced {
                b.set_counter(SETTLED_BATCH, i64::from(batch))?;
            }
            b.set_counter(SETTLING, 0)?;
            Ok(())
        })?;
        fail::fail_point!("bank.after-settlement");
        // The next batch after a balanced one; the same again after one that is not.
        self.sign_on(link)?;
        Ok(Settlement {
            balanced,
            ..settled
        })
    }

    /// Reversals owed with no acquirer to send them to (its `[acquirer]` left the config): each
    /// such debit goes to an operator once, who asks the acquirer and ends it. Returns the
    /// items opened.
    pub fn unlinked_reversals(&mut self) -> Result<usize, SaleError> {
        let mut opened = 0;
        for d in self.journal.debits(&["intent", "reversing"])? {
            let reason = format!(
                "本机已不再配置收单机构，借记（卡号 {}，金额 {} 元）的冲正无法发送：请向收单机构核实后处理",
                d.pan_masked,
                Fen(d.amount_fen)
            );
            let done = self.journal.commit(|b| {
                let open: bool = b.sql().query_row(
                    "SELECT EXISTS (SELECT 1 FROM manual_items WHERE debit_id = ?1 AND state = 'open')",
                    [d.id],
                    |r| r.get(0),
                )?;
                if open {
                    return Ok(false);
                }
                let id = b.append(
                    "reversal-unlinked",
                    &json!({"debit": d.id, "batch": d.batch, "stan": d.stan, "fen": d.amount_fen}),
                )?;
                b.open_manual_item(&NewItem::reversal(d.id, &reason), id)?;
                Ok(true)
            })?;
            opened += usize::from(done);
        }
        Ok(opened)
    }

    /// Debits found at start with no answer recorded (the kiosk stopped while the purchase was
    /// out) are reversed: they join the reversals sent until acknowledged. Returns how many.
    pub fn recover_debits(&mut self, link: &BankLink) -> Result<usize, SaleError> {
        let unanswered = self.journal.debits(&["intent"])?;
        for d in &unanswered {
            self.journal.commit(|b| {
                let id = b.append(
                    "debit-unknown",
                    &json!({"batch": d.batch, "stan": d.stan,
                            "why": "the kiosk stopped before the acquirer's answer"}),
                )?;
                b.debit_state(d.id, &["intent"], "reversing", None, None, id)
            })?;
        }
        self.forward_reversals(link)?;
        Ok(unanswered.len())
    }

    /// Sends every reversal not yet acknowledged (store and forward). Returns how many the
    /// acquirer acknowledged now; the rest are sent again next time, until the acquirer takes
    /// them or an operator ends them (`resolve_manual` on their item).
    pub fn forward_reversals(&mut self, link: &BankLink) -> Result<usize, SaleError> {
        self.send_reversals(link, false)
    }

    /// [`forward_reversals`](Self::forward_reversals); `just_signed_on` says a refusal cannot be
    /// for want of keys.
    fn send_reversals(
        &mut self,
        link: &BankLink,
        just_signed_on: bool,
    ) -> Result<usize, SaleError> {
        let alert = self.policy.reversal_alert_attempts;
        let mut acknowledged = 0;
        for d in self.journal.debits(&["reversing"])? {
            let card: BankCard = match d.card_json.as_deref().map(card_of) {
                Some(Ok(card)) => card,
                _ => {
                    return Err(SaleError::Corrupt(format!(
                        "debit {} has no card to reverse with",
                        d.id
                    )));
                }
            };
            let request = ReversalRequest {
                terminal: link.entry.terminal.clone(),
                stan: d.stan,
                batch: d.batch,
                amount: Fen(d.amount_fen),
                card,
                reason: ReversalReason::NoAnswer,
            };
            fail::fail_point!("bank.before-reversal-sent");
            let answer = self.wait(|| link.session().map(|mut a| a.reversal(&request)))?;
            match answer {
                Ok(()) => {
                    self.journal.commit(|b| {
                        let state: String = b.sql().query_row(
                            "SELECT state FROM debits WHERE id = ?1",
                            [d.id],
                            |r| r.get(0),
                        )?;
                        let id = b.append(
                            "debit-reversed",
                            &json!({"batch": d.batch, "stan": d.stan, "fen": d.amount_fen,
                                    "was": state}),
                        )?;
                        match state.as_str() {
                            "reversing" => {
                                b.debit_state(d.id, &["reversing"], "reversed", None, None, id)
                            }
                            // An operator had been told the debit stands and paid the customer
                            // back: the card is credited too now, so that refund is owed back.
                            "kept" => {
                                b.debit_state(d.id, &["kept"], "reversed", None, None, id)?;
                                b.open_manual_item(
                                    &NewItem::reversal(d.id, &format!(
                                            "冲正在现金退款之后被收单机构接受（卡号 {}，金额 {} 元）：\
                                             顾客已获退款两次，请追回 {} 元",
                                            d.pan_masked,
                                            Fen(d.amount_fen),
                                            Fen(d.amount_fen)
                                        )),
                                    id,
                                )?;
                                Ok(())
                            }
                            // Ended by an operator (no debit stands): nothing changes.
                            _ => Ok(()),
                        }
                    })?;
                    acknowledged += 1;
                    fail::fail_point!("bank.after-reversal-answer");
                }
                Err(e) => {
                    let e = AcquirerError::from(e);
                    let refused = matches!(e, AcquirerError::Refused(_));
                    let why = e.to_string();
                    let tries = d.reversal_attempts + 1;
                    self.journal.commit(|b| {
                        // Acknowledged or ended meanwhile (another process): nothing to count.
                        let (state, alerted): (String, bool) = b.sql().query_row(
                            "SELECT state, EXISTS (SELECT 1 FROM manual_items
                                                   WHERE debit_id = debits.id AND state = 'open')
                             FROM debits WHERE id = ?1",
                            [d.id],
                            |r| Ok((r.get(0)?, r.get(1)?)),
                        )?;
                        if state != "reversing" {
                            return Ok(());
                        }
                        let id = b.append(
                            "reversal-unacknowledged",
                            &json!({"batch": d.batch, "stan": d.stan, "why": why}),
                        )?;
                        let refusals = b.count_reversal_attempt(d.id, refused)?;
                        // An acquirer that answers and refuses (no keys, a MAC it rejects) wants
                        // a sign-on: no more debits until there is one. Refused again after it,
                        // it is not the keys: the batch stays open and an operator is told.
                        if refused && refusals == 1 && !just_signed_on {
                            b.set_counter(OPEN_BATCH, 0)?;
                        }
                        // Still sent every time; an operator is told (once, while the item is
                        // open) to check with the acquirer, and ends it from the item.
                        if tries >= alert && !alerted {
                            b.open_manual_item(
                                &NewItem::reversal(d.id, &format!(
                                        "冲正未获收单确认（卡号 {}，金额 {} 元，批次 {:06}，流水 {:06}）：\
                                         请联系收单机构核实，再结束此冲正",
                                        d.pan_masked,
                                        Fen(d.amount_fen),
                                        d.batch,
                                        d.stan
                                    )),
                                id,
                            )?;
                        }
                        Ok(())
                    })?;
                }
            }
        }
        Ok(acknowledged)
    }
}

/// A counter's value inside a commit (0 when never counted).
fn counter_in(b: &mut Batch<'_>, name: &str) -> BatchResult<i64> {
    Ok(b.sql()
        .query_row("SELECT value FROM counters WHERE name = ?1", [name], |r| {
            r.get(0)
        })
        .or_else(|e| match e {
            rusqlite::Error::QueryReturnedNoRows => Ok(0),
            e => Err(e),
        })?)
}

/// The next trace number, counted in the journal in the commit that uses it.
fn next_stan(b: &mut Batch<'_>) -> BatchResult<u32> {
    let next = counter_in(b, STAN)? % MAX_STAN + 1;
    b.set_counter(STAN, next)?;
    Ok(next as u32)
}

fn card_of(json: &str) -> Result<BankCard, String> {
    let v: serde_json::Value = serde_json::from_str(json).map_err(|e| e.to_string())?;
    let field = |name: &str| {
        v.get(name)
            .and_then(|f| f.as_str())
            .map(str::to_string)
            .ok_or_else(|| format!("no {name}"))
    };
    Ok(BankCard {
        aid: Vec::new(),
        pan: field("pan")?,
        expiry: field("expiry")?,
        service_code: String::new(),
        track2: hex::decode(field("track2")?).map_err(|e| e.to_string())?,
    })
}
