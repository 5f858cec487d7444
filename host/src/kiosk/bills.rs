//! Paying an account's bills (缴费): at the attract screen, a customer types the account number
//! (户号) and pays; within a card session, a customer in arrears settles them at the account
//! screen, then buys in the same visit. The kiosk gives no change, so what is paid in banknotes
//! is the bills rounded up to the yuan; the backend keeps the rest as credit (预存). A bank card
//! pays exactly what is owed.

use std::time::Duration;

use super::view::{BillResultView, BillsView, CardNotice, PriceView};
use super::{Command, Event, NoteWatch, Screen, Watch, Worker, customer_reason};
use crate::money::Fen;
use crate::sale::{BillOutcome, BillSession, CashSession, Step, cash_due};

/// How paying the bills went.
enum Paying {
    /// Something was paid (or could not be): the result to show.
    Result(BillResultView),
    /// Nothing was paid: the customer went back.
    Left,
    /// The card left, or the kiosk is stopping.
    Gone,
}

/// Where a customer left the bills.
pub(super) enum BillsEnd {
    /// Back to the account screen (its account asked for again).
    Back,
    /// The card left, or the kiosk is stopping: the card session ends.
    Gone,
}

impl Worker {
    /// 缴费 from the attract screen: the account number on the keypad, its bills, payment in
    /// banknotes and the result; then the attract screen again.
    pub(super) fn bill_counter(&mut self) {
        let mut refusal = None;
        let bill = loop {
            self.screen(Screen::AccountEntry {
                refusal: refusal.take(),
            });
            match self.wait(Watch::None, Some(self.timeouts.choose)) {
                Event::Command(Command::BillAccount(number)) => {
                    let utility = self.utility_of(&number);
                    match self.engine.start_bill(&number, &utility) {
                        Ok(bill) if bill.account.total == Fen(0) => {
                            let _ = self.engine.cancel_bill(bill, self.devices.printer.as_mut());
                            refusal = Some(format!("{number}: 0.00"));
                        }
                        Ok(bill) => break bill,
                        Err(e) => refusal = Some(customer_reason(&e)),
                    }
                }
                Event::Command(Command::Cancel) | Event::TimedOut | Event::Stopping => return,
                Event::Command(_) | Event::Card => {}
            }
        };
        if let Paying::Result(result) = self.pay_bills(bill, None) {
            self.show_bill_result(None, result);
        }
    }

    /// The utility an account number belongs to: the longest configured utility code it starts
    /// with (account numbers carry their region), else the kiosk's own region.
    fn utility_of(&self, number: &str) -> String {
        self.config
            .backends
            .iter()
            .flat_map(|b| &b.utility_codes)
            .filter(|code| number.starts_with(code.as_str()))
            .max_by_key(|code| code.len())
            .cloned()
            .unwrap_or_else(|| self.config.kiosk.region.clone())
    }

    /// The bills of the account in session `s`: shown, paid in banknotes if the customer
    /// chooses, the result shown; then the account is asked for again.
    pub(super) fn settle_arrears(&mut self, s: &mut CashSession, reader: &str) -> BillsEnd {
        let bill = match self.engine.start_bill_for(s) {
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
        match self.pay_bills(bill, Some(reader)) {
            Paying::Result(result) => self.bill_result(s, reader, result),
            Paying::Left => self.back(s),
            Paying::Gone => BillsEnd::Gone,
        }
    }

    /// Shows `bill`'s bills and, if the customer pays, takes the banknotes or the bank card
    /// and pays them; `reader` holds the card the session is about, if there is one.
    fn pay_bills(&mut self, mut bill: BillSession, reader: Option<&str>) -> Paying {
        let watch = || reader.map_or(Watch::None, Watch::Out);
        let mut notice = None;
        let card_out = loop {
            let bank = self.bank_open();
            self.screen(Screen::Bills(bills_view(&bill, bank, notice.take())));
            match self.wait(watch(), Some(self.timeouts.choose)) {
                Event::Command(Command::PayCash) => {
                    let due = cash_due(bill.account.total);
                    if let Err(e) = self.engine.choose_bill_amount(&mut bill, due) {
                        let reason = customer_reason(&e);
                        let _ = self.engine.cancel_bill(bill, self.devices.printer.as_mut());
                        return Paying::Result(BillResultView::NotPaid { reason });
                    }
                    let card_out = self.take_bill_notes(&mut bill, due, reader);
                    if bill.paid() == Fen(0) {
                        let _ = self.engine.cancel_bill(bill, self.devices.printer.as_mut());
                        return if card_out { Paying::Gone } else { Paying::Left };
                    }
                    break card_out;
                }
                Event::Command(Command::PayCard) if bank => {
                    // A card pays exactly what is owed: no change is needed.
                    let due = bill.account.total;
                    let paid = match self.engine.choose_bill_amount(&mut bill, due) {
                        Ok(()) => self.pay_card(due, false, |engine, link, card, pin| {
                            engine.pay_bill_by_card(&mut bill, link, card, Some(pin))
                        }),
                        Err(e) => Err(super::card_notice(&e)),
                    };
                    match paid {
                        Ok(()) => break reader.is_some() && !self.meter_card_in(),
                        Err(why) => notice = Some(why),
                    }
                }
                Event::Command(Command::Cancel) | Event::TimedOut => {
                    let _ = self.engine.cancel_bill(bill, self.devices.printer.as_mut());
                    return Paying::Left;
                }
                Event::Card | Event::Stopping => {
                    let _ = self.engine.cancel_bill(bill, self.devices.printer.as_mut());
                    return Paying::Gone;
                }
                Event::Command(_) => {}
            }
        };
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
            return Paying::Gone;
        }
        Paying::Result(result)
    }

    /// Banknotes for the bill until `due` is in, the customer stops, or the card leaves;
    /// returns whether the card left.
    fn take_bill_notes(&mut self, bill: &mut BillSession, due: Fen, reader: Option<&str>) -> bool {
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
        let mut watch = NoteWatch::new(
            inbox,
            shared,
            &devices.readers,
            reader,
            timeouts.banknotes,
            due,
            PriceView::default(),
        );
        let taken = engine.take_bill_cash(
            bill,
            devices.acceptor.as_mut(),
            timeouts.banknotes,
            &mut |paid| watch.go_on(paid),
        );
        let card_out = watch.card_out;
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
        if self.show_bill_result(Some(reader), result) {
            self.back(s)
        } else {
            BillsEnd::Gone
        }
    }

    /// Shows a bill payment's result until the customer goes on; `false` when the card in
    /// `reader` left (or the kiosk is stopping) instead.
    fn show_bill_result(&mut self, reader: Option<&str>, result: BillResultView) -> bool {
        self.screen(Screen::BillResult(result));
        loop {
            match self.wait(
                reader.map_or(Watch::None, Watch::Out),
                Some(self.timeouts.choose),
            ) {
                Event::Command(Command::Continue) | Event::TimedOut => return true,
                Event::Card | Event::Stopping => return false,
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

fn bills_view(bill: &BillSession, bank: bool, notice: Option<CardNotice>) -> BillsView {
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
        bank,
        notice,
    }
}
