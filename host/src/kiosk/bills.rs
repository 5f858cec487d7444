//! Paying an account's bills (缴费) within a card session: a customer in arrears settles them at
//! the account screen, then buys in the same visit. The kiosk gives no change, so what is paid
//! in banknotes is the bills rounded up to the yuan; the backend keeps the rest as credit (预存).

use std::time::{Duration, Instant};

use super::view::{BillResultView, BillsView, PriceView};
use super::{Command, Event, Screen, Watch, Worker, customer_reason};
use crate::money::Fen;
use crate::sale::{BillOutcome, BillSession, CashSession, Step, cash_due};

/// Where a customer left the bills.
pub(super) enum BillsEnd {
    /// Back to the account screen (its account asked for again).
    Back,
    /// The card left, or the kiosk is stopping: the card session ends.
    Gone,
}

impl Worker {
    /// The bills of the account in session `s`: shown, paid in banknotes if the customer
    /// chooses, the result shown; then the account is asked for again.
    pub(super) fn settle_arrears(&mut self, s: &mut CashSession, reader: &str) -> BillsEnd {
        let mut bill = match self.engine.start_bill_for(s) {
            Ok(bill) => bill,
            Err(e) => {
                let reason = customer_reason(&e);
                return self.bill_result(s, reader, BillResultView::NotPaid { reason });
            }
        };
        if bill.account.total == Fen(0) {
            let _ = self.engine.cancel_bill(bill, self.devices.printer.as_mut());
            return self.back(s);
        }
        loop {
            self.screen(Screen::Bills(bills_view(&bill)));
            match self.wait(Watch::Out(reader), Some(self.timeouts.choose)) {
                Event::Command(Command::PayCash) => break,
                Event::Command(Command::Cancel) | Event::TimedOut => {
                    let _ = self.engine.cancel_bill(bill, self.devices.printer.as_mut());
                    return self.back(s);
                }
                Event::Card | Event::Stopping => {
                    let _ = self.engine.cancel_bill(bill, self.devices.printer.as_mut());
                    return BillsEnd::Gone;
                }
                Event::Command(_) => {}
            }
        }
        let due = cash_due(bill.account.total);
        if let Err(e) = self.engine.choose_bill_amount(&mut bill, due) {
            let reason = customer_reason(&e);
            let _ = self.engine.cancel_bill(bill, self.devices.printer.as_mut());
            return self.bill_result(s, reader, BillResultView::NotPaid { reason });
        }
        let card_out = self.take_bill_notes(&mut bill, due);
        if bill.paid() == Fen(0) {
            let _ = self.engine.cancel_bill(bill, self.devices.printer.as_mut());
            return if card_out {
                BillsEnd::Gone
            } else {
                self.back(s)
            };
        }
        self.screen(Screen::Processing(Step::Sell));
        let paid = bill.paid();
        let result = match self
            .engine
            .complete_bill(&mut bill, self.devices.printer.as_mut())
        {
            Ok(done) => match done.outcome {
                BillOutcome::Paid { receipt, .. } => BillResultView::Paid {
                    paid,
                    remaining: receipt.remaining,
                },
                BillOutcome::Pending { .. } => BillResultView::Pending { paid },
                BillOutcome::Refused { refusal, .. } => BillResultView::RefundOwed {
                    paid,
                    reason: refusal.message,
                },
            },
            // The payment is in the journal: an operator or recovery finishes it.
            Err(e) => {
                tracing::error!("completing a paid bill payment: {e}");
                BillResultView::Pending { paid }
            }
        };
        if card_out {
            self.screen(Screen::BillResult(result));
            std::thread::sleep(self.timeouts.result.min(Duration::from_secs(5)));
            return BillsEnd::Gone;
        }
        self.bill_result(s, reader, result)
    }

    /// Banknotes for the bill until `due` is in, the customer stops, or the card leaves;
    /// returns whether the card left.
    fn take_bill_notes(&mut self, bill: &mut BillSession, due: Fen) -> bool {
        self.screen(Screen::Paying {
            due,
            price: PriceView::default(),
            paid: Fen(0),
        });
        let Worker {
            engine,
            devices,
            inbox,
            shared,
            timeouts,
            ..
        } = self;
        let mut last_paid = Fen(0);
        let mut last_note = Instant::now();
        let mut card_out = false;
        let taken = engine.take_bill_cash(
            bill,
            devices.acceptor.as_mut(),
            timeouts.banknotes,
            &mut |paid| {
                if paid != last_paid {
                    last_paid = paid;
                    last_note = Instant::now();
                }
                let left = timeouts.banknotes.saturating_sub(last_note.elapsed());
                shared.set(|v| {
                    v.screen = Screen::Paying {
                        due,
                        price: PriceView::default(),
                        paid,
                    };
                    v.countdown = (paid == Fen(0)).then(|| left.as_secs_f64().ceil() as u64);
                });
                let asked = inbox.try_recv().ok();
                let gone = matches!(
                    devices
                        .readers
                        .wait(&devices.card_reader, false, Some(Duration::ZERO)),
                    Ok(true)
                );
                card_out |= gone;
                match asked {
                    Some(Command::Cancel) if paid == Fen(0) => false,
                    Some(Command::BuyWithPaid) if paid > Fen(0) => false,
                    _ => !gone && !shared.stopping(),
                }
            },
        );
        match taken {
            Ok(_) => self.acceptor_error = None,
            Err(e) => {
                tracing::error!("taking banknotes for a bill: {e}");
                self.acceptor_error = Some(e.to_string());
            }
        }
        card_out
    }

    /// Shows how the bill payment ended until the customer goes on (or the card leaves).
    fn bill_result(
        &mut self,
        s: &mut CashSession,
        reader: &str,
        result: BillResultView,
    ) -> BillsEnd {
        self.screen(Screen::BillResult(result));
        loop {
            match self.wait(Watch::Out(reader), Some(self.timeouts.choose)) {
                Event::Command(Command::Continue) | Event::TimedOut => return self.back(s),
                Event::Card | Event::Stopping => return BillsEnd::Gone,
                Event::Command(_) => {}
            }
        }
    }

    /// Back to the account screen, with the account as the backend has it now.
    fn back(&mut self, s: &mut CashSession) -> BillsEnd {
        if let Err(e) = self.engine.refresh_account(s) {
            tracing::warn!("asking for the account again after its bills: {e}");
        }
        BillsEnd::Back
    }
}

fn bills_view(bill: &BillSession) -> BillsView {
    BillsView {
        customer_name: bill.account.customer_name.clone(),
        customer_number: bill.account.customer_number.clone(),
        bills: bill
            .account
            .bills
            .iter()
            .map(|b| (b.period.clone(), b.amount, b.late_fee))
            .collect(),
        total: bill.account.total,
    }
}
