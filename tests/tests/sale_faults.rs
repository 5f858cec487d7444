//! The cash sale when the devices misbehave mid-sale: a lost validator ACK, a banknote in the
//! path at power-up, a printer out of paper mid-receipt, and the wrong card offered for a
//! re-write. Money and journal stay consistent in each.

use std::sync::{Arc, Mutex};

use selfvend_host::backend::Purchase;
use selfvend_host::money::Fen;
use selfvend_host::sale::{Outcome, Resolution};
use selfvend_sim::id003_validator::Action;
use selfvend_sim::meter::{Meter, MeterInsert};
use selfvend_sim::reference_backend::{Call, Fault};
use selfvend_sim::sle4442;
use selfvend_sim::vpcd::lock;
use selfvend_tests::kiosk_rig::{Kiosk, PATIENCE, sale_states, zhang_san};

#[test]
fn a_lost_acknowledgement_pays_for_one_banknote_not_two() {
    let mut k = Kiosk::new();
    let memory = zhang_san(&k);
    let (_inserted, card) = k.insert(&memory);
    let mut s = k.engine.start(card).unwrap();
    k.engine.quote(&mut s, Purchase::Money(Fen(2000))).unwrap();
    k.validator.act(Action::LoseNextAck);
    k.validator.act(Action::Insert(10));
    k.validator.act(Action::Insert(10));
    let paid = k
        .engine
        .take_cash(&mut s, &mut k.acceptor, PATIENCE)
        .unwrap();
    assert_eq!(paid, Fen(2000));
    let tally = k.validator.tally();
    assert_eq!((tally.credited, tally.acks_ignored), (vec![10, 10], 1));
    let done = k.engine.complete(&mut s, &mut k.printer).unwrap();
    assert!(matches!(done.outcome, Outcome::Credited { .. }));
    assert_eq!(
        k.engine.journal().counter("lifetime.cash_fen").unwrap(),
        2000
    );
    let credited = k
        .journal_kinds()
        .iter()
        .filter(|kind| *kind == "banknote-credited")
        .count();
    assert_eq!(credited, 2);
}

#[test]
fn a_banknote_in_the_path_at_power_up_is_given_back_and_not_paid() {
    let mut k = Kiosk::new();
    let memory = zhang_san(&k);
    let (_inserted, card) = k.insert(&memory);
    let mut s = k.engine.start(card).unwrap();
    k.engine.quote(&mut s, Purchase::Money(Fen(1000))).unwrap();
    k.validator.act(Action::PowerCycleWithBillInAcceptor(10));
    k.validator.act(Action::Insert(10));
    let paid = k
        .engine
        .take_cash(&mut s, &mut k.acceptor, PATIENCE)
        .unwrap();
    assert_eq!(paid, Fen(1000));
    assert_eq!(k.validator.tally().credited, [10]);
    assert_eq!(k.validator.tally().returned, [10]);
    let bodies: Vec<String> = k
        .engine
        .journal()
        .entries(1, 100)
        .unwrap()
        .into_iter()
        .filter(|e| e.kind == "cash-acceptor")
        .map(|e| e.body["event"].as_str().unwrap_or_default().to_string())
        .collect();
    assert!(
        bodies.iter().any(|b| b.contains("power")),
        "the power-up is on the record: {bodies:?}"
    );
    assert_eq!(
        k.engine.journal().counter("lifetime.cash_fen").unwrap(),
        1000
    );
}

#[test]
fn a_receipt_cut_short_by_paper_out_is_recorded_for_a_reprint_and_the_sale_stands() {
    let mut k = Kiosk::new();
    let memory = zhang_san(&k);
    let (_inserted, mut s) = k.paid_session(&memory, 1000);
    k.printer_sim.paper_out_after(3);
    let done = k.engine.complete(&mut s, &mut k.printer).unwrap();
    assert!(matches!(done.outcome, Outcome::Credited { serial: 1, .. }));
    assert!(!done.printed);
    let unfinished: Vec<_> = k
        .engine
        .journal()
        .entries(1, 100)
        .unwrap()
        .into_iter()
        .filter(|e| e.kind == "receipt-unfinished")
        .collect();
    assert_eq!(unfinished.len(), 1);
    assert!(
        unfinished[0].body["why"]
            .as_str()
            .unwrap()
            .contains("paper out"),
        "{}",
        unfinished[0].body
    );
    assert_eq!(sale_states(&k), [(1, "written".to_string())]);

    // Paper in: the operator reprints the receipt, whole and marked as a copy.
    k.printed_lines();
    k.printer_sim.paper_in();
    assert_eq!(
        k.engine.reprint_last(&mut k.printer).unwrap(),
        Some((1, true))
    );
    let copy = k.printed_lines();
    assert_eq!(copy.first().map(String::as_str), Some("（重印 / COPY）"));
    assert_eq!(copy[1], "自助售电凭证");
    assert_eq!(copy.last().map(String::as_str), Some("--- cut ---"));
    assert!(
        copy.contains(&"购电成功，请将电卡插入电表".to_string()),
        "{copy:?}"
    );
}

#[test]
fn a_re_write_waits_for_its_own_card_and_no_other() {
    let mut k = Kiosk::new();
    let memory = zhang_san(&k);
    let (_inserted, mut s) = k.paid_session(&memory, 1000);
    lock(&memory).tear_after_bytes = Some(3);
    let done = k.engine.complete(&mut s, &mut k.printer).unwrap();
    assert!(matches!(
        done.outcome,
        Outcome::GrantedNotWritten { serial: 1, .. }
    ));
    drop(s);

    // Another customer's card comes in first: nothing of sale 1 touches it.
    let other = Arc::new(Mutex::new(sle4442::ht01::issue(
        &k.machine,
        "3701000000000003",
        "3701",
        "C370100003",
        "M3701000003",
    )));
    let (inserted, card) = k.insert(&other);
    let s = k.engine.start(card).unwrap();
    assert_eq!((s.rewritten, s.card().purchase_count), (None, 0));
    assert_eq!(sale_states(&k), [(1, "granted".to_string())]);
    drop(s);
    drop(inserted);

    let (_inserted, card) = k.insert(&memory);
    let s = k.engine.start(card).unwrap();
    assert_eq!(s.rewritten, Some(1));
    drop(s);
    let mut meter = Meter::new("M3701000001", k.machine.clone());
    assert!(matches!(
        meter.insert_hengtai(&mut lock(&memory)),
        MeterInsert::Credited {
            purchase_count: 1,
            ..
        }
    ));
}

#[test]
fn money_taken_before_a_sale_was_allocated_goes_to_an_operator_after_a_stop() {
    let mut k = Kiosk::new();
    let memory = zhang_san(&k);
    let (inserted, s) = k.paid_session(&memory, 1000);
    // The kiosk stops here: the banknote is in the cash box, no sale has a serial yet.
    drop(s);
    drop(inserted);
    k.restart();
    assert_eq!(k.engine.recover().unwrap(), []);
    let items = k.engine.journal().manual_items(false).unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(
        items[0].reason,
        "顾客已投币 10.00 元，未售电（卡号 3701000000000001）：请退款或到营业厅购电"
    );
    assert_eq!(
        k.engine
            .resolve_manual(items[0].id, Resolution::Refund, "paid back")
            .unwrap(),
        "item 1: 10.00 yuan refunded for payment 1"
    );
    // The cash taken is all accounted for: refunded.
    let journal = k.engine.journal();
    assert_eq!(
        journal.counter("lifetime.cash_fen").unwrap(),
        journal.counter("lifetime.refunded_fen").unwrap()
    );
    assert_eq!(k.jinan.ledger().sale_count("K-SALE-01"), 0);
    // A second start finds nothing more to hand over, and the next customer is served.
    assert_eq!(k.engine.recover().unwrap(), []);
    let (_inserted, mut s) = k.paid_session(&memory, 1000);
    let done = k.engine.complete(&mut s, &mut k.printer).unwrap();
    assert!(matches!(done.outcome, Outcome::Credited { serial: 1, .. }));
    assert!(k.engine.journal().verify().unwrap().problems.is_empty());
}

#[test]
fn a_write_confirmation_the_backend_did_not_acknowledge_is_sent_again() {
    let mut k = Kiosk::new();
    let memory = zhang_san(&k);
    let (_inserted, mut s) = k.paid_session(&memory, 1000);
    k.jinan.inject(Call::ConfirmWrite, Fault::DropReply);
    let done = k.engine.complete(&mut s, &mut k.printer).unwrap();
    assert!(matches!(done.outcome, Outcome::Credited { serial: 1, .. }));
    let unconfirmed = |k: &Kiosk| {
        k.engine
            .journal()
            .sales(&["written"], None)
            .unwrap()
            .iter()
            .filter(|s| !s.confirmed)
            .count()
    };
    assert_eq!(unconfirmed(&k), 1);
    assert_eq!(k.engine.retry_confirmations().unwrap(), [1]);
    assert_eq!(unconfirmed(&k), 0);
    // The backend saw both: the one whose answer was lost, and the one it acknowledged.
    assert_eq!(
        k.jinan.ledger().confirmations("K-SALE-01", 1),
        [(true, None), (true, None)]
    );
    assert_eq!(k.engine.retry_confirmations().unwrap(), Vec::<u64>::new());
}
