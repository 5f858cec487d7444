//! The holes an audit of the money paths found, each as the customer or the utility would meet
//! it, on the real rigs: the reference backend over TCP, virtual cards in pcscd, the ID-003
//! validator on a pty, the acquirer. Each test failed before its fix.

use std::sync::Arc;
use std::thread;
use std::time::Duration;

use selfvend_host::backend::Purchase;
use selfvend_host::bank_card::BankCard;
use selfvend_host::cash_acceptor::{
    CashAcceptor, CashError, CashEvent, CashHandler, Denomination, EscrowDecision, NotRecorded,
};
use selfvend_host::money::Fen;
use selfvend_host::sale::{CardPayment, CashSession, Outcome, Resolution, SaleError};
use selfvend_sim::acquirer::{Fault as AcquirerFault, MessageType};
use selfvend_sim::id003_validator::{Action, SimulatedValidator};
use selfvend_sim::reference_backend::ledger::{Buy, CardInfo, Payment};
use selfvend_sim::reference_backend::{Call, Fault, Request};
use selfvend_sim::vpcd::{Inserted, lock};
use selfvend_tests::bank_rig::{BALANCE_FEN, Bank, PAN, PIN, read_bank_card};
use selfvend_tests::kiosk_rig::{
    Kiosk, PATIENCE, chen_xiaoming, memory_card, sale_states, zhang_san,
};

/// Another terminal sells to 张三's card first, so the kiosk's own sale is refused.
fn counter_sells_first(k: &Kiosk) {
    k.jinan
        .ledger()
        .handle(&Request::Sale {
            terminal_id: "COUNTER-1".into(),
            kiosk_serial: 1,
            card: CardInfo {
                card_serial: "3701000000000001".into(),
                ..Default::default()
            },
            buy: Buy::Money(1000),
            payment: Payment::Cash,
            paid_fen: 1000,
        })
        .unwrap();
}

// Defect 1: a refused sale is always owed its refund item.

#[test]
fn a_refusal_that_recovery_learns_of_opens_its_refund_item() {
    let mut k = Kiosk::new();
    let memory = zhang_san(&k);
    let (inserted, mut s) = k.paid_session(&memory, 1000);
    counter_sells_first(&k);
    // The backend refuses, and neither the refusal nor the status asked after it arrives.
    k.jinan.inject(Call::Sale, Fault::DropReply);
    k.jinan.inject(Call::SaleStatus, Fault::DropReply);
    let done = k.engine.complete(&mut s, &mut k.printer).unwrap();
    assert!(matches!(done.outcome, Outcome::Pending { serial: 1, .. }));
    drop(s);
    drop(inserted);

    assert_eq!(k.engine.recover().unwrap(), [(1, "refused".to_string())]);
    let items = k.engine.journal().manual_items(false).unwrap();
    assert_eq!(items.len(), 1, "{items:?}");
    assert_eq!(items[0].serial, Some(1));
    assert_eq!(
        items[0].reason,
        "退款 10.00 元：售电被拒（上次购电尚未写入卡内，请先补写卡）"
    );
    assert_eq!(
        k.engine
            .resolve_manual(items[0].id, Resolution::Refund, "paid back at the counter")
            .unwrap(),
        "item 1: 10.00 yuan refunded for sale 1"
    );
}

#[test]
fn a_refused_sale_found_without_its_refund_item_gets_one_at_start() {
    let mut k = Kiosk::new();
    let memory = zhang_san(&k);
    let (inserted, mut s) = k.paid_session(&memory, 1000);
    counter_sells_first(&k);
    let done = k.engine.complete(&mut s, &mut k.printer).unwrap();
    assert!(matches!(done.outcome, Outcome::Refused { serial: 1, .. }));
    drop(s);
    drop(inserted);
    // A journal written by a kiosk that stopped between the refusal and its item.
    let deleted = std::process::Command::new("sqlite3")
        .arg(&k.journal)
        .arg("DELETE FROM manual_items")
        .status()
        .unwrap();
    assert!(deleted.success());
    k.restart();

    k.engine.recover().unwrap();
    let items = k.engine.journal().manual_items(false).unwrap();
    assert_eq!(items.len(), 1, "{items:?}");
    assert_eq!(
        items[0].reason,
        "退款 10.00 元：售电被拒（上次购电尚未写入卡内，请先补写卡）"
    );
    // Once is enough.
    k.engine.recover().unwrap();
    assert_eq!(k.engine.journal().manual_items(false).unwrap().len(), 1);
}

// Defects 2 and 3: a banknote in flight never reaches the next customer.

/// An ID-003 acceptor whose line does `trouble` on the first poll after the engine decided to
/// stack a note (garbage, a bad CRC, silence).
struct LineTrouble<'a> {
    acceptor: &'a mut dyn CashAcceptor,
    validator: Arc<SimulatedValidator>,
    trouble: Option<Action>,
    /// Whether the engine has decided `after` on a note.
    stacked: bool,
    after: EscrowDecision,
}

impl CashAcceptor for LineTrouble<'_> {
    fn enable(&mut self, accept: &[Denomination]) -> Result<(), CashError> {
        self.acceptor.enable(accept)
    }

    fn poll(&mut self, handler: &mut dyn CashHandler) -> Result<(), CashError> {
        if self.stacked
            && let Some(trouble) = self.trouble.take()
        {
            self.validator.act(trouble);
        }
        let mut watch = WatchStack {
            handler,
            stacked: &mut self.stacked,
            after: self.after,
        };
        self.acceptor.poll(&mut watch)
    }

    fn hand_over(&mut self) -> Option<Denomination> {
        self.acceptor.hand_over()
    }
}

struct WatchStack<'a> {
    handler: &'a mut dyn CashHandler,
    stacked: &'a mut bool,
    after: EscrowDecision,
}

impl CashHandler for WatchStack<'_> {
    fn event(&mut self, event: &CashEvent) -> Result<(), NotRecorded> {
        self.handler.event(event)
    }

    fn decide(&mut self, note: Denomination) -> EscrowDecision {
        let decision = self.handler.decide(note);
        *self.stacked |= decision == self.after;
        decision
    }
}

/// Whatever the acceptor reports, for a test to read.
#[derive(Default)]
struct Heard(Vec<CashEvent>);

impl CashHandler for Heard {
    fn event(&mut self, event: &CashEvent) -> Result<(), NotRecorded> {
        self.0.push(*event);
        Ok(())
    }

    fn decide(&mut self, _: Denomination) -> EscrowDecision {
        EscrowDecision::Return
    }
}

#[test]
fn a_line_error_while_a_note_is_stacked_credits_it_to_that_customer_and_no_other() {
    for trouble in [Action::Garbage, Action::BadCrc, Action::Silence(1)] {
        let mut k = Kiosk::new();
        let first = zhang_san(&k);
        let second = chen_xiaoming(&k);
        let (inserted, card) = k.insert(&first);
        let mut s = k.engine.start(card).unwrap();
        k.engine.quote(&mut s, Purchase::Money(Fen(1000))).unwrap();
        k.validator.act(Action::Insert(10));
        let mut line = LineTrouble {
            acceptor: &mut k.acceptor,
            validator: k.world.validator.clone(),
            trouble: Some(trouble),
            stacked: false,
            after: EscrowDecision::Stack,
        };
        let taken = k.engine.take_cash(&mut s, &mut line, PATIENCE);
        // The line's error is reported, after the note was settled: it is this customer's.
        assert!(taken.is_err(), "{trouble:?}: {taken:?}");
        assert_eq!(s.paid(), Fen(1000), "{trouble:?}");
        let done = k.engine.complete(&mut s, &mut k.printer).unwrap();
        assert!(
            matches!(done.outcome, Outcome::Credited { serial: 1, .. }),
            "{trouble:?}: {:?}",
            done.outcome
        );
        drop(s);
        drop(inserted);

        // The next customer pays 20 yuan and is credited 20 yuan, not 30.
        let (_inserted, card) = k.insert(&second);
        let mut s = k.engine.start(card).unwrap();
        k.engine.quote(&mut s, Purchase::Money(Fen(2000))).unwrap();
        k.validator.act(Action::Insert(20));
        let paid = k
            .engine
            .take_cash(&mut s, &mut k.acceptor, PATIENCE)
            .unwrap();
        assert_eq!(paid, Fen(2000), "{trouble:?}");
        assert_eq!(k.validator.tally().credited, [10, 20], "{trouble:?}");
        assert_eq!(
            k.engine.journal().counter("lifetime.cash_fen").unwrap(),
            3000
        );
    }
}

#[test]
fn a_note_whose_fate_stays_unknown_is_an_operator_item_on_that_customers_receipt() {
    let mut k = Kiosk::with_policy(&[("note_in_flight_limit_secs", "1")]);
    let first = zhang_san(&k);
    let (inserted, card) = k.insert(&first);
    let mut s = k.engine.start(card).unwrap();
    k.engine.quote(&mut s, Purchase::Money(Fen(1000))).unwrap();
    k.validator.act(Action::Insert(10));
    // The validator goes deaf for longer than the kiosk waits for a note in flight.
    let mut line = LineTrouble {
        acceptor: &mut k.acceptor,
        validator: k.world.validator.clone(),
        trouble: Some(Action::Silence(8)),
        stacked: false,
        after: EscrowDecision::Stack,
    };
    let taken = k.engine.take_cash(&mut s, &mut line, PATIENCE);
    assert!(
        matches!(taken, Err(SaleError::Cash(CashError::Timeout { .. }))),
        "{taken:?}"
    );
    assert_eq!(s.paid(), Fen(0));
    assert_eq!(s.caught.len(), 1);
    assert_eq!(s.caught[0].1, Fen(1000));
    k.printer_sim.take_printed();
    k.engine.cancel(s, &mut k.printer).unwrap();
    let lines = k.printed_lines();
    assert!(
        lines.contains(&"10.00元纸币卡在机内未入账".to_string()),
        "{lines:?}"
    );
    let items = k.engine.journal().manual_items(false).unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0].caught_fen, Some(1000));
    assert_eq!(items[0].card_serial.as_deref(), Some("3701000000000001"));
    drop(inserted);

    // The line comes back and the validator finishes the note: it is nobody's credit.
    let mut heard = Heard::default();
    for _ in 0..40 {
        let _ = k.acceptor.poll(&mut heard);
        if k.validator.is_idle() {
            break;
        }
    }
    assert!(
        heard.0.contains(&CashEvent::LateOutcome {
            note: Some(Denomination::Cny10),
            stacked: true
        }),
        "{:?}",
        heard.0
    );
    assert!(
        !heard
            .0
            .iter()
            .any(|e| matches!(e, CashEvent::Credited(_) | CashEvent::CreditedUnknown)),
        "{:?}",
        heard.0
    );
    // The next customer pays 20 yuan and is credited exactly that.
    let second = chen_xiaoming(&k);
    let (_inserted, card) = k.insert(&second);
    let mut s = k.engine.start(card).unwrap();
    k.engine.quote(&mut s, Purchase::Money(Fen(2000))).unwrap();
    k.validator.act(Action::Insert(20));
    assert_eq!(
        k.engine
            .take_cash(&mut s, &mut k.acceptor, PATIENCE)
            .unwrap(),
        Fen(2000)
    );
    // Clearing shows the note the operator has to look for.
    let report = selfvend_host::clearing::report(k.engine.journal(), &k.config, None).unwrap();
    assert_eq!(
        (report.caught.known, report.caught.known_fen),
        (1, Fen(1000))
    );
}

/// The validator starts drawing a note in, and the line dies before the kiosk heard of it and
/// stays dead past the policy's limit. The kiosk cannot know the note is there, so the session
/// ends with an operator item of unknown value on its receipt; when the line comes back the
/// note is stacked as that item's, never credited to the next customer.
#[test]
fn a_note_drawn_in_unheard_before_the_line_died_never_reaches_the_next_customer() {
    let mut k = Kiosk::with_policy(&[("note_in_flight_limit_secs", "1")]);
    // The validator is past its power-up and idle.
    let mut heard = Heard::default();
    while !k.validator.is_idle() || heard.0.is_empty() {
        k.acceptor.poll(&mut heard).unwrap();
    }
    let first = zhang_san(&k);
    let (inserted, card) = k.insert(&first);
    let mut s = k.engine.start(card).unwrap();
    k.engine.quote(&mut s, Purchase::Money(Fen(1000))).unwrap();
    k.validator.act(Action::Insert(10));
    let validator = k.world.validator.clone();
    let mut polls = 0;
    // The first poll finds the validator idle, and it starts drawing the note in; then the
    // line goes dead.
    let taken = k
        .engine
        .take_cash_watched(&mut s, &mut k.acceptor, PATIENCE, &mut |_| {
            polls += 1;
            if polls == 1 {
                validator.act(Action::Silence(u32::MAX));
            }
            true
        });
    assert!(taken.is_err(), "{taken:?}");
    assert_eq!(s.paid(), Fen(0));
    assert_eq!(s.caught.len(), 1, "no operator item for the unheard note");
    k.engine.cancel(s, &mut k.printer).unwrap();
    drop(inserted);
    validator.act(Action::Silence(0));

    // The next customer pays 20 yuan and is credited exactly that.
    let second = chen_xiaoming(&k);
    let (_inserted, card) = k.insert(&second);
    let mut s = k.engine.start(card).unwrap();
    k.engine.quote(&mut s, Purchase::Money(Fen(2000))).unwrap();
    k.validator.act(Action::Insert(20));
    let paid = k
        .engine
        .take_cash(&mut s, &mut k.acceptor, PATIENCE)
        .unwrap();
    assert_eq!(paid, Fen(2000));
    // Both notes are in the cash box; the journal credited only the second customer's.
    assert_eq!(k.validator.tally().cash_box, [10, 20]);
    assert_eq!(
        k.engine.journal().counter("lifetime.cash_fen").unwrap(),
        2000
    );
    // The first customer's item now has the note's value.
    let items = k.engine.journal().manual_items(false).unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0].caught_fen, Some(1000));
    assert_eq!(items[0].card_serial.as_deref(), Some("3701000000000001"));
}

/// The power goes just as the customer's note drops into the cash box, before the validator
/// says VEND VALID: it powers up with its path empty. The note is not credited, but it is in
/// the box: an operator item with its value, on this customer's receipt.
#[test]
fn a_note_that_reached_the_box_as_the_power_went_is_an_operator_item_with_its_value() {
    let mut k = Kiosk::new();
    let first = zhang_san(&k);
    let (_inserted, card) = k.insert(&first);
    let mut s = k.engine.start(card).unwrap();
    k.engine.quote(&mut s, Purchase::Money(Fen(1000))).unwrap();
    k.validator.act(Action::PowerCycleAsBillReachesBox(10));
    let paid = k
        .engine
        .take_cash(&mut s, &mut k.acceptor, Duration::from_secs(2))
        .unwrap();
    assert_eq!(paid, Fen(0));
    assert_eq!(k.validator.tally().cash_box, [10]);
    assert_eq!(s.caught.len(), 1, "the note in the box has no item");
    assert_eq!(s.caught[0].1, Fen(1000));
    let items = k.engine.journal().manual_items(false).unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0].caught_fen, Some(1000));
    assert_eq!(items[0].card_serial.as_deref(), Some("3701000000000001"));
    k.engine.cancel(s, &mut k.printer).unwrap();
    let lines = k.printed_lines();
    assert!(
        lines.contains(&"10.00元纸币卡在机内未入账".to_string()),
        "{lines:?}"
    );
}

/// A note the kiosk decided to give back (it was more than was due) is handed to an operator
/// when the line dies before the validator says it went back; when the line comes back and the
/// validator returns it, its item closes: nothing is owed, and no operator refunds it.
#[test]
fn a_handed_over_note_the_validator_gives_back_closes_its_item() {
    let mut k = Kiosk::with_policy(&[("note_in_flight_limit_secs", "1")]);
    let first = zhang_san(&k);
    let (_inserted, card) = k.insert(&first);
    let mut s = k.engine.start(card).unwrap();
    k.engine.quote(&mut s, Purchase::Money(Fen(1000))).unwrap();
    k.validator.act(Action::Insert(20));
    let validator = k.world.validator.clone();
    let mut line = LineTrouble {
        acceptor: &mut k.acceptor,
        validator: validator.clone(),
        trouble: Some(Action::Silence(u32::MAX)),
        stacked: false,
        after: EscrowDecision::Return,
    };
    assert!(k.engine.take_cash(&mut s, &mut line, PATIENCE).is_err());
    assert_eq!(s.caught.len(), 1);
    assert_eq!(s.caught[0].1, Fen(2000));
    k.engine.cancel(s, &mut k.printer).unwrap();
    assert_eq!(k.engine.journal().manual_items(false).unwrap().len(), 1);

    // The line comes back and the validator gives the note back.
    validator.act(Action::Silence(0));
    let mut s = k.engine.start(k.connect()).unwrap();
    k.engine.quote(&mut s, Purchase::Money(Fen(1000))).unwrap();
    k.validator.act(Action::Insert(10));
    assert_eq!(
        k.engine
            .take_cash(&mut s, &mut k.acceptor, PATIENCE)
            .unwrap(),
        Fen(1000)
    );
    assert_eq!(k.validator.tally().returned, [20]);
    assert!(k.engine.journal().manual_items(false).unwrap().is_empty());
    let all = k.engine.journal().manual_items(true).unwrap();
    assert_eq!(
        all[0].resolution.as_deref(),
        Some("纸币器随后退出了这张纸币：不在钞箱，无需退款")
    );
}

// Defect 4: the backend's last word on a card write is the latest fact, and never a guess.

#[test]
fn a_rewrite_after_a_torn_write_is_confirmed_as_written_until_acknowledged() {
    let mut k = Kiosk::new();
    let memory = zhang_san(&k);
    let (inserted, mut s) = k.paid_session(&memory, 1000);
    lock(&memory).tear_after_bytes = Some(3);
    let done = k.engine.complete(&mut s, &mut k.printer).unwrap();
    assert!(matches!(
        done.outcome,
        Outcome::GrantedNotWritten { serial: 1, .. }
    ));
    drop(s);
    drop(inserted);
    // The card left mid-write: what it holds is unknown, so the backend is told nothing yet.
    assert_eq!(k.jinan.ledger().confirmations("K-SALE-01", 1), []);
    assert_eq!(k.engine.retry_confirmations().unwrap(), Vec::<u64>::new());
    assert_eq!(k.jinan.ledger().confirmations("K-SALE-01", 1), []);

    // The card comes back and is written; the confirmation of that is lost.
    lock(&memory).tear_after_bytes = None;
    k.jinan.refuse_connections(false);
    let (inserted, card) = k.insert(&memory);
    k.jinan.inject(Call::ConfirmWrite, Fault::Garbage);
    let s = k.engine.start(card).unwrap();
    assert_eq!(s.rewritten, Some(1));
    drop(s);
    drop(inserted);
    assert_eq!(sale_states(&k), [(1, "written".to_string())]);

    // Sent again until the backend acknowledges "written"; it never heard "not written".
    assert_eq!(k.engine.retry_confirmations().unwrap(), [1]);
    let said = k.jinan.ledger().confirmations("K-SALE-01", 1);
    assert_eq!(said, [(true, None), (true, None)]);
    assert_eq!(k.engine.retry_confirmations().unwrap(), Vec::<u64>::new());
}

// Defect 5: an operator's refund and the kiosk's re-sell never both happen.

#[test]
fn a_refund_racing_the_housekeeping_resell_is_refused_once_the_resell_has_the_sale() {
    let mut k = Kiosk::new();
    let memory = zhang_san(&k);
    let (inserted, mut s) = k.paid_session(&memory, 1000);
    k.jinan.refuse_connections(true);
    let done = k.engine.complete(&mut s, &mut k.printer).unwrap();
    assert!(matches!(done.outcome, Outcome::Pending { serial: 1, .. }));
    drop(s);
    drop(inserted);
    assert_eq!(sale_states(&k), [(1, "never-reached".to_string())]);
    // The customer complains at the counter; an operator raises an item to refund them.
    let item = k
        .engine
        .raise_manual(1, "customer asks for the money back")
        .unwrap();

    // The backend is back and slow: the housekeeping's re-sell is out when the operator's
    // CLI (another engine on the same journal) tries the refund.
    k.jinan.refuse_connections(false);
    k.jinan
        .inject(Call::Sale, Fault::Delay(Duration::from_millis(1500)));
    let mut operator = selfvend_tests::kiosk_rig::engine(
        &k.world.plugins,
        &k.world.config,
        &k.world.files,
        &k.world.journal,
    );
    let refund = thread::spawn(move || {
        thread::sleep(Duration::from_millis(500));
        operator
            .resolve_manual(item, Resolution::Refund, "CLI refund")
            .map_err(Box::new)
    });
    let resold = k.engine.resell().unwrap();
    let refund = refund.join().unwrap();
    assert_eq!(resold, [(1, "granted".to_string())]);
    match refund.map_err(|e| *e) {
        Err(SaleError::RefundRefused { serial: 1, state }) => assert_eq!(state, "pending"),
        other => panic!("a refund was paid while the sale was being re-sold: {other:?}"),
    }
    assert_eq!(k.jinan.ledger().sale_count("K-SALE-01"), 1);
    assert_eq!(
        k.engine.journal().counter("lifetime.refunded_fen").unwrap(),
        0
    );
}

#[test]
fn an_item_settled_twice_is_settled_once() {
    let mut k = Kiosk::new();
    let memory = zhang_san(&k);
    let (inserted, s) = k.paid_session(&memory, 1000);
    drop(s);
    drop(inserted);
    k.restart();
    k.engine.recover().unwrap();
    let item = k.engine.journal().manual_items(false).unwrap()[0].id;
    let mut cli = selfvend_tests::kiosk_rig::engine(
        &k.world.plugins,
        &k.world.config,
        &k.world.files,
        &k.world.journal,
    );
    cli.resolve_manual(item, Resolution::Refund, "CLI").unwrap();
    let again = k.engine.resolve_manual(item, Resolution::Refund, "screen");
    assert!(matches!(again, Err(SaleError::NoSuchItem(_))), "{again:?}");
    assert_eq!(
        k.engine.journal().counter("lifetime.refunded_fen").unwrap(),
        1000
    );
}

/// A bank-card customer about to pay: the kiosk signed on (batch 1), 张三's meter card in, 10
/// yuan quoted. Returns the acquirer rig, 王芳's bank card, the meter card and the session.
fn bank_customer(k: &mut Kiosk) -> (Bank, BankCard, Inserted, CashSession) {
    let bank = Bank::new(&k.plugins);
    assert_eq!(k.engine.sign_on(&bank.link).unwrap(), 1);
    let card = memory_card(k);
    let bank_card = read_bank_card(k);
    let inserted = card.insert(k);
    let mut s = k.engine.start(k.connect()).unwrap();
    k.engine.quote(&mut s, Purchase::Money(Fen(1000))).unwrap();
    (bank, bank_card, inserted, s)
}

// Defect 6: a reversal the acquirer refuses does not shut bank cards out, and an operator can
// end one that is never taken.

#[test]
fn a_refused_reversal_keeps_bank_cards_on_and_an_operator_ends_it() {
    let mut k = Kiosk::new();
    let (bank, bank_card, _inserted, mut s) = bank_customer(&mut k);
    bank.acquirer
        .inject(MessageType::Purchase, AcquirerFault::DropReply);
    bank.acquirer.refuse_reversals(Some("A0"));
    let pin = bank.enter_pin(&bank_card, PIN);
    assert!(matches!(
        k.engine
            .pay_by_card(&mut s, &bank.link, &bank_card, Some(&pin)),
        Err(SaleError::DebitReversed(_))
    ));
    // Refused as if for want of keys: the kiosk signs on again...
    assert_eq!(k.engine.signed_on().unwrap(), None);
    assert_eq!(k.engine.sign_on(&bank.link).unwrap(), 1);
    // ...and refused again just after, it is not the keys: bank cards stay on.
    assert_eq!(k.engine.signed_on().unwrap(), Some(1));
    for _ in 0..3 {
        assert_eq!(k.engine.forward_reversals(&bank.link).unwrap(), 0);
    }
    assert_eq!(k.engine.signed_on().unwrap(), Some(1));
    let items = k.engine.journal().manual_items(false).unwrap();
    assert_eq!(items.len(), 1);
    // The acquirer debited the card and never took the reversal: the operator asks it, learns
    // the debit stands, and pays the customer back; the kiosk stops sending the reversal.
    assert_eq!(
        k.engine.resolutions(&items[0]).unwrap(),
        [Resolution::Refund, Resolution::Dismiss]
    );
    assert_eq!(
        k.engine
            .resolve_manual(items[0].id, Resolution::Refund, "acquirer ticket 4711")
            .unwrap(),
        "item 1: debit 1 stands at the acquirer; 10.00 yuan refunded"
    );
    let received = bank.acquirer.reversals_received();
    assert_eq!(k.engine.forward_reversals(&bank.link).unwrap(), 0);
    assert_eq!(bank.acquirer.reversals_received(), received);
    assert_eq!(k.engine.journal().debits(&["kept"]).unwrap().len(), 1);
    // The journal's own books: the debit that stands is money in, and it was paid back.
    let journal = k.engine.journal();
    assert_eq!(journal.counter("lifetime.refunded_fen").unwrap(), 1000);
    assert_eq!(journal.counter("lifetime.bank_debited_fen").unwrap(), 1000);
    // Nothing holds the settlement any more, and it balances with the debit that stands.
    bank.acquirer.refuse_reversals(None);
    let settled = k.engine.settle(&bank.link).unwrap();
    assert!(settled.balanced);
    assert_eq!(
        (settled.acquirer_count, settled.acquirer_amount),
        (1, Fen(1000))
    );
    assert_eq!(bank.acquirer.balance(PAN), Some(BALANCE_FEN - 1000));
}

// Defect 7: a sign-on in the middle of a batch keeps the batch.

#[test]
fn a_sign_on_in_the_middle_of_a_batch_leaves_no_debit_unsettled() {
    let mut k = Kiosk::new();
    let (bank, bank_card, _inserted, mut s) = bank_customer(&mut k);
    let pin = bank.enter_pin(&bank_card, PIN);
    assert_eq!(
        k.engine
            .pay_by_card(&mut s, &bank.link, &bank_card, Some(&pin))
            .unwrap(),
        CardPayment::Approved { serial: 1 }
    );
    k.engine.complete(&mut s, &mut k.printer).unwrap();
    // New working keys mid-batch (an acquirer's daily key change).
    assert_eq!(k.engine.sign_on(&bank.link).unwrap(), 1);
    let settled = k.engine.settle(&bank.link).unwrap();
    assert!(settled.balanced);
    assert_eq!(
        (settled.acquirer_count, settled.acquirer_amount),
        (1, Fen(1000))
    );
    assert_eq!(bank.acquirer.balance(PAN), Some(BALANCE_FEN - 1000));
    // Settled, the next sign-on opens the next batch.
    assert_eq!(k.engine.signed_on().unwrap(), Some(2));
}

/// The acquirer settles the batch and its answer is lost: the kiosk cannot know the batch is
/// still open, so it takes no debit into it. Bank cards wait (no sign-on to that batch) until
/// the same settlement is sent again and answered; then the next batch opens.
#[test]
fn a_settlement_whose_answer_was_lost_is_sent_again_before_any_debit() {
    let mut k = Kiosk::new();
    let (bank, bank_card, _inserted, mut s) = bank_customer(&mut k);
    let pin = bank.enter_pin(&bank_card, PIN);
    k.engine
        .pay_by_card(&mut s, &bank.link, &bank_card, Some(&pin))
        .unwrap();
    k.engine.complete(&mut s, &mut k.printer).unwrap();
    drop(s);

    bank.acquirer
        .inject(MessageType::Settlement, AcquirerFault::DropReply);
    assert!(k.engine.settle(&bank.link).is_err());
    // Sent again while the acquirer cannot be reached: the first send may still have closed
    // the batch, so it stays closed.
    bank.acquirer.refuse_connections(true);
    assert!(k.engine.settle(&bank.link).is_err());
    bank.acquirer.refuse_connections(false);
    // Not signed on to the batch the acquirer may have closed.
    assert!(
        matches!(k.engine.sign_on(&bank.link), Err(SaleError::Settling(1))),
        "signed on again to a batch that may be settled"
    );
    assert_eq!(k.engine.signed_on().unwrap(), None);

    // Sent again as it was counted, then the next batch.
    let settled = k.engine.settle(&bank.link).unwrap();
    assert!(settled.balanced);
    let heard: Vec<(u32, u64, u64)> = bank
        .acquirer
        .settlements()
        .iter()
        .map(|s| (s.batch, s.count, s.amount_fen))
        .collect();
    assert_eq!(heard, [(1, 1, 1000), (1, 1, 1000)]);
    assert_eq!(k.engine.signed_on().unwrap(), Some(2));
}

/// A reversal still owed when the acquirer has left the kiosk's config cannot be sent: each
/// such debit goes to an operator, once, who asks the acquirer and ends it.
#[test]
fn a_reversal_owed_with_no_acquirer_configured_goes_to_an_operator_once() {
    let mut k = Kiosk::new();
    let (bank, bank_card, _inserted, mut s) = bank_customer(&mut k);
    let pin = bank.enter_pin(&bank_card, PIN);
    // The purchase's answer is lost and every reversal refused: the reversal stays owed.
    bank.acquirer
        .inject(MessageType::Purchase, AcquirerFault::DropReply);
    bank.acquirer.refuse_reversals(Some("96"));
    assert!(
        k.engine
            .pay_by_card(&mut s, &bank.link, &bank_card, Some(&pin))
            .is_err()
    );
    drop(s);
    assert_eq!(k.engine.journal().debits(&["reversing"]).unwrap().len(), 1);
    let before = k.engine.journal().manual_items(false).unwrap().len();

    // The acquirer is gone from the config: the kiosk's housekeeping has no link.
    assert_eq!(k.engine.unlinked_reversals().unwrap(), 1);
    assert_eq!(k.engine.unlinked_reversals().unwrap(), 0);
    let items = k.engine.journal().manual_items(false).unwrap();
    assert_eq!(items.len(), before + 1);
    let item = items.last().unwrap();
    assert!(item.debit_id.is_some());
    assert_eq!(
        item.reason,
        "本机已不再配置收单机构，借记（卡号 622202*********0128，金额 10.00 元）的冲正无法发送：\
         请向收单机构核实后处理"
    );
    assert_eq!(
        k.engine.resolutions(item).unwrap(),
        [Resolution::Refund, Resolution::Dismiss]
    );
}

// Defect 8: a sale whose backend left the config is handed to an operator.

#[test]
fn a_sale_whose_backend_left_the_config_goes_to_an_operator_once() {
    let mut k = Kiosk::new();
    let memory = zhang_san(&k);
    let (inserted, mut s) = k.paid_session(&memory, 1000);
    k.jinan.inject(Call::Sale, Fault::DropReply);
    k.jinan.inject(Call::SaleStatus, Fault::DropReply);
    let done = k.engine.complete(&mut s, &mut k.printer).unwrap();
    assert!(matches!(done.outcome, Outcome::Pending { serial: 1, .. }));
    drop(s);
    drop(inserted);
    // The utility moves 3701 to another kiosk's config; this one no longer knows its backend.
    k.world.config.backends.retain(|b| b.name != "jinan-power");
    k.restart();
    for _ in 0..2 {
        k.engine.recover().unwrap();
    }
    let items = k.engine.journal().manual_items(false).unwrap();
    assert_eq!(items.len(), 1, "{items:?}");
    assert_eq!(
        items[0].reason,
        "交易 00000001（10.00 元，pending）无法完成：本机已不再配置单位 3701 的后台，请恢复配置\
         或联系供电单位核实"
    );
    // Its outcome is unknown: no refund without proof.
    assert!(matches!(
        k.engine.resolve_manual(items[0].id, Resolution::Refund, ""),
        Err(SaleError::RefundRefused { .. })
    ));
}

// Rule 7: a sale whose outcome stays unknown is handed to an operator after the policy's time.

#[test]
fn a_sale_whose_outcome_stays_unknown_goes_to_an_operator_once() {
    let mut k = Kiosk::with_policy(&[("unanswered_sale_alert_secs", "1")]);
    let memory = zhang_san(&k);
    let (_inserted, mut s) = k.paid_session(&memory, 1000);
    // The backend takes the sale and its answer is lost; asked, it answers garbage; then it is
    // out of reach.
    k.jinan.inject(Call::Sale, Fault::DropReply);
    k.jinan.inject(Call::SaleStatus, Fault::Garbage);
    let done = k.engine.complete(&mut s, &mut k.printer).unwrap();
    assert!(matches!(done.outcome, Outcome::Pending { serial: 1, .. }));
    drop(s);
    k.jinan.refuse_connections(true);
    k.engine.recover().unwrap();
    assert!(k.engine.journal().manual_items(false).unwrap().is_empty());

    thread::sleep(Duration::from_millis(1100));
    k.engine.recover().unwrap();
    k.engine.recover().unwrap();
    let items = k.engine.journal().manual_items(false).unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0].serial, Some(1));
    assert_eq!(
        items[0].reason,
        "交易 00000001（10.00 元）的结果超过 1 秒仍未知：后台未答复，本机继续查询；\
         请联系供电单位核实，核实前不得退款"
    );
    // Nothing to do until the backend answers; then the sale is granted and the item closes.
    assert_eq!(
        k.engine.resolutions(&items[0]).unwrap(),
        Vec::<Resolution>::new()
    );
    k.jinan.refuse_connections(false);
    k.engine.recover().unwrap();
    assert_eq!(sale_states(&k), [(1, "granted".to_string())]);
    assert!(k.engine.journal().manual_items(false).unwrap().is_empty());
    let closed = k.engine.journal().manual_items(true).unwrap();
    assert_eq!(
        closed
            .iter()
            .map(|i| (i.serial, i.resolution.as_deref()))
            .collect::<Vec<_>>(),
        [(Some(1), Some("the backend answered: granted"))]
    );
}

// Defect 8: a grant the card refuses is re-written a bounded number of times.

#[test]
fn a_grant_the_card_refuses_is_rewritten_a_bounded_number_of_times_then_handed_over() {
    let mut k = Kiosk::with_policy(&[("rewrite_max_attempts", "2")]);
    let memory = zhang_san(&k);
    let (inserted, mut s) = k.paid_session(&memory, 1000);
    lock(&memory).tear_after_bytes = Some(3);
    let done = k.engine.complete(&mut s, &mut k.printer).unwrap();
    assert!(matches!(
        done.outcome,
        Outcome::GrantedNotWritten { serial: 1, .. }
    ));
    drop(s);
    drop(inserted);
    lock(&memory).tear_after_bytes = None;
    // A grant this card cannot hold (a token of the wrong length): it refuses it every time.
    let spoiled = std::process::Command::new("sqlite3")
        .arg(&k.journal)
        .arg("UPDATE sales SET grant_json = json_set(grant_json, '$.token', json('[1,2,3,4,5,6]'))")
        .status()
        .unwrap();
    assert!(spoiled.success());
    for _ in 0..3 {
        let (inserted, card) = k.insert(&memory);
        let s = k.engine.start(card).unwrap();
        assert_eq!(s.rewritten, None);
        drop(s);
        drop(inserted);
    }
    let tries = k
        .journal_kinds()
        .iter()
        .filter(|kind| *kind == "rewrite-started")
        .count();
    assert_eq!(tries, 2, "two re-writes the card refused, then no more");
    let items = k.engine.journal().manual_items(false).unwrap();
    assert_eq!(items.len(), 1, "{items:?}");
    assert!(
        items[0]
            .reason
            .starts_with("电卡 2 次拒绝写入交易 00000001 的购电"),
        "{}",
        items[0].reason
    );
    // The backend sold it: no refund, and the item closes once the counter has written it.
    assert!(matches!(
        k.engine.resolve_manual(items[0].id, Resolution::Refund, ""),
        Err(SaleError::RefundRefused { .. })
    ));
    assert_eq!(
        k.engine.resolutions(&items[0]).unwrap(),
        [Resolution::Dismiss]
    );
}

// Defect 8: a partial payment is checked before it is sold.

#[test]
fn a_partial_payment_below_the_minimum_is_not_sold_and_is_owed_back() {
    let mut k = Kiosk::configured(
        &[],
        "[limits]\nmin_purchase_fen = 500\nmax_purchase_fen = 500000\n",
    );
    let memory = zhang_san(&k);
    let (_inserted, card) = k.insert(&memory);
    let mut s = k.engine.start(card).unwrap();
    k.engine.quote(&mut s, Purchase::Money(Fen(1000))).unwrap();
    // The customer puts in one yuan and walks away from the rest.
    k.validator.act(Action::Insert(1));
    let paid = k
        .engine
        .take_cash(&mut s, &mut k.acceptor, Duration::from_secs(1))
        .unwrap();
    assert_eq!(paid, Fen(100));
    k.printer_sim.take_printed();
    let done = k.engine.complete(&mut s, &mut k.printer).unwrap();
    let reason = "实收金额 1.00 元不在购电金额 5.00 元至 5000.00 元之内";
    assert_eq!(
        done.outcome,
        Outcome::Unsold {
            payment: 1,
            reason: reason.to_string()
        }
    );
    let lines = k.printed_lines();
    assert!(lines.contains(&format!("未售电：{reason}")), "{lines:?}");
    assert!(
        lines.contains(&"款项待退还，请保留此凭条联系营业厅".to_string()),
        "{lines:?}"
    );
    assert_eq!(k.jinan.ledger().sale_count("K-SALE-01"), 0);
    let items = k.engine.journal().manual_items(false).unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(
        k.engine
            .resolve_manual(items[0].id, Resolution::Refund, "paid back")
            .unwrap(),
        "item 1: 1.00 yuan refunded for payment 1"
    );
}
