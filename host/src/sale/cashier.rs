//! Banknotes for one session: the payment opened before the acceptor is enabled, each note
//! journaled at escrow (its value on the payment) before it is stacked and credited before the
//! validator is acknowledged, and no session ends with a note in flight. A note whose fate the
//! kiosk cannot learn in time (a line that stays bad, a validator that stays silent) becomes an
//! operator item with its value, on this customer's receipt, and the driver stops following it,
//! so it is never credited to the next customer.

use std::time::{Duration, Instant};

use serde_json::json;

use super::{CashSession, SaleEngine, SaleError, yuan};
use crate::cash_acceptor::{
    CashAcceptor, CashError, CashEvent, CashHandler, Denomination, EscrowDecision, NotRecorded,
};
use crate::journal::{Journal, JournalError, NewItem};
use crate::money::Fen;

/// A session that takes banknotes: a sale's ([`CashSession`]) or a bill payment's.
pub(super) trait Till {
    /// What is to be paid.
    fn due(&self) -> Fen;
    fn parts(&mut self) -> TillParts<'_>;
    /// The session's payment, opened in the journal before the acceptor is enabled.
    fn set_payment(&mut self, id: i64);
}

/// What the cashier reads and moves in a [`Till`].
pub(super) struct TillParts<'s> {
    pub payment: Option<i64>,
    /// Who pays, as the journal names them: the card's serial, or the bill's account number.
    pub payer: &'s str,
    /// Whether the payer is a bill's account (户号), not a card (卡号).
    pub for_bill: bool,
    pub paid: &'s mut Fen,
    pub caught: &'s mut Vec<(i64, Fen)>,
}

impl Till for CashSession {
    fn due(&self) -> Fen {
        self.quote.map_or(Fen(0), |q| q.amount)
    }

    fn parts(&mut self) -> TillParts<'_> {
        TillParts {
            payment: self.payment,
            payer: &self.data.card_serial,
            for_bill: false,
            paid: &mut self.paid,
            caught: &mut self.caught,
        }
    }

    fn set_payment(&mut self, id: i64) {
        self.payment = Some(id);
    }
}

/// How an operator item names a payment's payer.
pub(super) fn payer_label(for_bill: bool) -> &'static str {
    if for_bill { "户号" } else { "卡号" }
}

/// A banknote between being drawn in and being credited or given back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum InFlight {
    None,
    /// Being drawn in; its value is not known yet.
    Drawn,
    Note(Denomination),
}

/// Why one poll of the acceptor failed.
enum PollError {
    /// The journal could not record an event: nothing more can be taken.
    Journal(JournalError),
    /// The line or the device failed; the note's fate is still to be settled.
    Line(CashError),
}

impl SaleEngine {
    /// Takes banknotes until the quote is paid or `patience` passes without one; returns what
    /// was paid. A note worth more than what is left is given back (the kiosk gives no change).
    pub fn take_cash(
        &mut self,
        s: &mut CashSession,
        acceptor: &mut dyn CashAcceptor,
        patience: Duration,
    ) -> Result<Fen, SaleError> {
        self.take_cash_watched(s, acceptor, patience, &mut |_| true)
    }

    /// [`take_cash`](Self::take_cash), with `go_on` told what is paid after every poll of the
    /// acceptor; it stops taking banknotes when `go_on` says `false`. On an acceptor error the
    /// note in flight is still settled before this returns; what was paid is in `s` either way.
    pub fn take_cash_watched(
        &mut self,
        s: &mut CashSession,
        acceptor: &mut dyn CashAcceptor,
        patience: Duration,
        go_on: &mut dyn FnMut(Fen) -> bool,
    ) -> Result<Fen, SaleError> {
        if s.bank.is_some() {
            return Err(SaleError::WrongStep("this session is paid by bank card"));
        }
        self.take_notes(s, acceptor, patience, go_on)
    }

    /// Banknotes for till `s` until its due is paid, `patience` passes without a note, or
    /// `go_on` says stop; see [`take_cash_watched`](Self::take_cash_watched).
    pub(super) fn take_notes(
        &mut self,
        s: &mut dyn Till,
        acceptor: &mut dyn CashAcceptor,
        patience: Duration,
        go_on: &mut dyn FnMut(Fen) -> bool,
    ) -> Result<Fen, SaleError> {
        let due = s.due();
        if s.parts().payment.is_none() {
            let (card, for_bill) = (s.parts().payer.to_string(), s.parts().for_bill);
            let opened = self.journal.commit(|b| {
                // Checked in the commit itself: an operator's CLI may start clearing at any
                // moment, and then the acceptor stays inhibited.
                let (period, state): (i64, String) = b.sql().query_row(
                    "SELECT id, state FROM periods ORDER BY id DESC LIMIT 1",
                    [],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )?;
                if state != "open" {
                    return Ok(Err(SaleError::Clearing(period)));
                }
                let id = b.append(
                    "payment-opened",
                    &json!({"card": card, "due_fen": due.0, "for_bill": for_bill}),
                )?;
                Ok(Ok(b.open_payment(&card, for_bill, id)?))
            })?;
            s.set_payment(opened?);
            fail::fail_point!("sale.after-payment-opened");
        }
        let mut in_flight = InFlight::None;
        if let Err(e) = acceptor.enable(&self.policy.accepted_notes) {
            // The validator may have heard the enable whose answer was lost: settled as after
            // any line error, so a note it draws in is never the next customer's.
            self.settle_acceptor(s, acceptor, due, &mut in_flight, &mut None)?;
            return Err(e.into());
        }
        let mut failure = None;
        let mut last_note = Instant::now();
        let mut stop = false;
        while !stop && *s.parts().paid < due && last_note.elapsed() < patience {
            let before = *s.parts().paid;
            match self.poll_cash(s, acceptor, due, &mut in_flight) {
                Ok(()) => {}
                Err(PollError::Journal(e)) => return Err(e.into()),
                Err(PollError::Line(e)) => {
                    failure = Some(e);
                    break;
                }
            }
            let paid = *s.parts().paid;
            if paid > before {
                last_note = Instant::now();
            }
            stop = !go_on(paid);
        }
        self.settle_acceptor(s, acceptor, due, &mut in_flight, &mut failure)?;
        match failure {
            Some(e) => Err(e.into()),
            None => Ok(*s.parts().paid),
        }
    }

    /// Inhibits the acceptor and finishes a banknote already drawn in: credited to this
    /// customer or given back, on a line that answers again; past the policy's limit it is
    /// handed to an operator. Only then may the session move on.
    fn settle_acceptor(
        &mut self,
        s: &mut dyn Till,
        acceptor: &mut dyn CashAcceptor,
        due: Fen,
        in_flight: &mut InFlight,
        failure: &mut Option<CashError>,
    ) -> Result<(), SaleError> {
        let started = Instant::now();
        let mut inhibited = false;
        // A good poll since the acceptor was inhibited: it may have started drawing a note in
        // since the last one.
        let mut heard = false;
        loop {
            if !inhibited {
                match acceptor.enable(&[]) {
                    Ok(()) => inhibited = true,
                    Err(e) => {
                        failure.get_or_insert(e);
                    }
                }
            }
            if inhibited && heard && *in_flight == InFlight::None {
                return Ok(());
            }
            if started.elapsed() > self.policy.note_in_flight_limit {
                // A note followed, or a validator not seen quiet since it was told to stop
                // (it may have drawn one in unheard): handed to an operator, never carried over.
                if *in_flight != InFlight::None || !(inhibited && heard) {
                    self.hand_over(s, acceptor, *in_flight)?;
                    *in_flight = InFlight::None;
                }
                return Ok(());
            }
            if !inhibited {
                // Not heard at all: wait a poll's time before asking again.
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
            match self.poll_cash(s, acceptor, due, in_flight) {
                Ok(()) => heard = true,
                Err(PollError::Journal(e)) => return Err(e.into()),
                Err(PollError::Line(e)) => {
                    heard = false;
                    failure.get_or_insert(e);
                }
            }
        }
    }

    /// The note in flight could not be settled in time: it becomes an operator item with its
    /// value (when known) on this customer's receipt, and the driver stops following it.
    fn hand_over(
        &mut self,
        s: &mut dyn Till,
        acceptor: &mut dyn CashAcceptor,
        in_flight: InFlight,
    ) -> Result<(), SaleError> {
        let driver_saw = acceptor.hand_over();
        let note = match in_flight {
            InFlight::Note(note) => Some(note),
            _ => driver_saw,
        };
        let fen = note.map_or(0, |n| n.value().0);
        let parts = s.parts();
        let (payment, card, kind) = (
            parts.payment,
            parts.payer.to_string(),
            payer_label(parts.for_bill),
        );
        let reason = match note {
            Some(n) => format!(
                "纸币器未能确认 {} 元纸币的去向，可能在机内且未入账（{kind} {card}）：请开箱核实后退还",
                yuan(n.value())
            ),
            None => {
                format!("纸币器未能确认一张面额未知的纸币的去向（{kind} {card}）：请清机时核对")
            }
        };
        let item = open_caught(
            &mut self.journal,
            "the acceptor did not settle the note in flight in time",
            payment,
            &NewItem::note_in_acceptor(fen, payment, Some(&card), &reason),
        )?;
        s.parts().caught.push((item, Fen(fen)));
        Ok(())
    }

    /// One poll of the acceptor for session `s`; `in_flight` follows a banknote from being
    /// drawn in until it is credited or given back.
    fn poll_cash(
        &mut self,
        s: &mut dyn Till,
        acceptor: &mut dyn CashAcceptor,
        due: Fen,
        in_flight: &mut InFlight,
    ) -> Result<(), PollError> {
        let parts = s.parts();
        let mut handler = Cashier {
            journal: &mut self.journal,
            payment: parts.payment,
            card: parts.payer,
            card_kind: payer_label(parts.for_bill),
            caught: parts.caught,
            paid: parts.paid,
            due,
            in_flight,
            failed: None,
        };
        // The poll's time, less the journal's inside it, is waiting on the acceptor.
        let started = Instant::now();
        let journal_before = handler.journal.stats().commit_time;
        let polled = acceptor.poll(&mut handler);
        let journal_time = handler.journal.stats().commit_time - journal_before;
        self.waited
            .set(self.waited.get() + started.elapsed().saturating_sub(journal_time));
        if let Some(e) = handler.failed.take() {
            // Not recorded, the note in flight is nobody's from here: never the next customer's.
            let _ = acceptor.enable(&[]);
            acceptor.hand_over();
            return Err(PollError::Journal(e));
        }
        polled.map_err(PollError::Line)
    }
}

/// The engine's side of the cash acceptor for one session: a banknote is journaled at escrow
/// before it is stacked, and credited in the journal before the validator is acknowledged.
struct Cashier<'a> {
    journal: &'a mut Journal,
    payment: Option<i64>,
    card: &'a str,
    /// 卡号 or 户号, as an item names `card`.
    card_kind: &'static str,
    caught: &'a mut Vec<(i64, Fen)>,
    paid: &'a mut Fen,
    due: Fen,
    in_flight: &'a mut InFlight,
    failed: Option<JournalError>,
}

impl Cashier<'_> {
    /// Opens an operator item for a banknote the acceptor may hold uncredited: `note` when its
    /// value is known, and `owner` when it is this customer's.
    fn caught(
        &mut self,
        event: &CashEvent,
        note: Option<Denomination>,
        owner: bool,
    ) -> Result<(), JournalError> {
        let fen = note.map_or(0, |n| n.value().0);
        let (payment, card, kind) = (self.payment, self.card, self.card_kind);
        let reason = match (note, owner) {
            (Some(n), true) => format!(
                "纸币器故障，{} 元纸币可能在机内且未入账（{kind} {card}）：请开箱核实后退还",
                yuan(n.value())
            ),
            (Some(n), false) => format!(
                "一张 {} 元纸币进入钞箱而未入账，没有对应的顾客：请清机时核对",
                yuan(n.value())
            ),
            (None, _) => {
                "纸币器报告一张面额未知的纸币进入钞箱而未入账（终端重启前投入）：请清机时核对"
                    .to_string()
            }
        };
        let item = open_caught(
            self.journal,
            &event.to_string(),
            payment,
            &NewItem::caught(
                fen,
                payment.filter(|_| owner),
                owner.then_some(card),
                &reason,
            ),
        )?;
        if owner {
            self.caught.push((item, Fen(fen)));
        }
        Ok(())
    }
}

impl Cashier<'_> {
    /// What became of a note nobody in this session owns (`stacked` into the cash box, or given
    /// back): the item that accounts for it (from a hand-over, or a stop between escrow and
    /// credit) is noted, and learns the note's value if it had none, or is closed if the note
    /// was given back; a stacked note no item accounts for gets one, in the same commit.
    fn arrived(
        &mut self,
        event: &CashEvent,
        note: Option<Denomination>,
        stacked: bool,
    ) -> Result<(), JournalError> {
        let fen = note.map_or(0, |n| n.value().0);
        let reason = match note {
            Some(n) => format!(
                "一张 {} 元纸币进入钞箱而未入账，没有对应的顾客：请清机时核对",
                yuan(n.value())
            ),
            None => "纸币器报告一张面额未知的纸币进入钞箱而未入账（终端重启前投入）：请清机时核对"
                .to_string(),
        };
        self.journal.commit(|b| {
            // Matched in the journal, so the kiosk process that opened the item need not be
            // the one that sees the note arrive.
            let item = b.note_arrived(fen)?;
            let audit = b.append(
                "banknote-arrived",
                &json!({"fen": fen, "item": item, "stacked": stacked,
                        "event": event.to_string()}),
            )?;
            match item {
                // Given back, not kept: the kiosk owes nothing on the note's item.
                Some(item) if !stacked => b.resolve_manual_item(
                    item,
                    "纸币器随后退出了这张纸币：不在钞箱，无需退款",
                    audit,
                ),
                Some(_) => Ok(()),
                None if stacked => b
                    .open_manual_item(&NewItem::caught(fen, None, None, &reason), audit)
                    .map(|_| ()),
                None => Ok(()),
            }
        })?;
        Ok(())
    }
}

impl CashHandler for Cashier<'_> {
    fn event(&mut self, event: &CashEvent) -> Result<(), NotRecorded> {
        *self.in_flight = match event {
            CashEvent::Accepting => InFlight::Drawn,
            CashEvent::Escrow(note) => InFlight::Note(*note),
            CashEvent::Stacked(_) => *self.in_flight,
            _ => InFlight::None,
        };
        let payment = self.payment;
        let recorded = match event {
            CashEvent::Credited(note) => {
                let fen = note.value();
                let r = self.journal.commit(|b| {
                    let id = b.append(
                        "banknote-credited",
                        &json!({"fen": fen.0, "payment": payment}),
                    )?;
                    b.record_banknote(fen.0, id)?;
                    if let Some(payment) = payment {
                        b.add_to_payment(payment, fen.0)?;
                    }
                    b.count("lifetime.cash_fen", fen.0 as i64)
                });
                if r.is_ok() {
                    *self.paid = Fen(self.paid.0 + fen.0);
                    fail::fail_point!("sale.after-banknote-credited");
                }
                r
            }
            CashEvent::Returned(note) => self.journal.commit(|b| {
                b.append(
                    "banknote-returned",
                    &json!({"fen": note.value().0, "payment": payment}),
                )?;
                if let Some(payment) = payment {
                    b.set_escrow(payment, None)?;
                }
                Ok(())
            }),
            // The customer's banknote may be in the kiosk without having been credited: an
            // operator checks the box and pays it back (the receipt says so).
            CashEvent::Fault {
                note: Some(note), ..
            }
            | CashEvent::PowerUpWithBillInStacker { note: Some(note) }
            | CashEvent::PowerUp { note: Some(note) } => self.caught(event, Some(*note), true),
            // A note the acceptor took that this kiosk never saw in escrow (from before a
            // restart): nobody's credit; its operator item says so, or one is opened.
            CashEvent::CreditedUnknown | CashEvent::PowerUpWithBillInStacker { note: None } => {
                self.arrived(event, None, true)
            }
            // A note nobody in this session owns settled: the same.
            CashEvent::LateOutcome { note, stacked } => self.arrived(event, *note, *stacked),
            CashEvent::Accepting | CashEvent::Escrow(_) | CashEvent::Stacked(_) => Ok(()),
            other => self.journal.commit(|b| {
                b.append("cash-acceptor", &json!({"event": other.to_string()}))?;
                // A note given back by a reset or rejected is no longer between escrow and
                // credit.
                if let (
                    CashEvent::PowerUpWithBillInAcceptor { .. } | CashEvent::Rejected(_),
                    Some(payment),
                ) = (other, payment)
                {
                    b.set_escrow(payment, None)?;
                }
                Ok(())
            }),
        };
        recorded.map_err(|e| {
            let why = e.to_string();
            self.failed = Some(e);
            NotRecorded(why)
        })
    }

    fn decide(&mut self, note: Denomination) -> EscrowDecision {
        if Fen(self.paid.0 + note.value().0) > self.due {
            return EscrowDecision::Return;
        }
        let payment = self.payment;
        // The note's value is on the payment before it is stacked: a stop before its credit
        // leaves it for an operator, never lost.
        let escrowed = self.journal.commit(|b| {
            b.append(
                "banknote-escrowed",
                &json!({"fen": note.value().0, "payment": payment}),
            )?;
            if let Some(payment) = payment {
                b.set_escrow(payment, Some(note.value().0))?;
            }
            Ok(())
        });
        match escrowed {
            Ok(()) => {
                fail::fail_point!("sale.after-banknote-escrowed");
                EscrowDecision::Stack
            }
            Err(e) => {
                self.failed = Some(e);
                EscrowDecision::Return
            }
        }
    }
}

/// Opens an operator item for a banknote the acceptor may hold without having credited it,
/// with its `banknote-caught` row (`event` says how it came to be); the note is no longer
/// between escrow and credit on `escrow_of`.
fn open_caught(
    journal: &mut Journal,
    event: &str,
    escrow_of: Option<i64>,
    item: &NewItem<'_>,
) -> Result<i64, JournalError> {
    let id = journal.commit(|b| {
        let audit = b.append(
            "banknote-caught",
            &json!({"fen": item.caught_fen, "payment": item.payment, "event": event}),
        )?;
        if let Some(payment) = escrow_of {
            b.set_escrow(payment, None)?;
        }
        b.open_manual_item(item, audit)
    })?;
    fail::fail_point!("sale.after-banknote-caught");
    Ok(id)
}
