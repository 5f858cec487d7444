//! The cash sale when the devices misbehave mid-sale: a lost validator ACK, a banknote in the
//! path at power-up, a printer out of paper mid-receipt, the wrong card offered for a re-write,
//! every way a backend's reply goes wrong through both dialects, and a card torn at every byte
//! or APDU of its write. Money and journal stay consistent in each.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use selfvend_host::backend::Purchase;
use selfvend_host::money::Fen;
use selfvend_host::sale::{Outcome, Resolution};
use selfvend_sim::id003_validator::Action;
use selfvend_sim::meter::{Meter, MeterInsert};
use selfvend_sim::reference_backend::{Call, Fault};
use selfvend_sim::sle4442;
use selfvend_sim::vpcd::lock;
use selfvend_tests::kiosk_rig::{
    Issue, Kiosk, PATIENCE, TestCard, cpu_card, memory_card, sale_states, zhang_san,
};
use selfvend_tests::{selfvend_with, text};

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
        Some((selfvend_host::sale::ReceiptOf::Sale(1), true))
    );
    let copy = k.printed_lines();
    assert_eq!(copy.first().map(String::as_str), Some("（重印 / COPY）"));
    assert_eq!(copy[1], "自助售电凭证");
    assert_eq!(copy.last().map(String::as_str), Some("--- cut ---"));
    assert!(
        copy.contains(&"购电成功，请将电卡插入电表".to_string()),
        "{copy:?}"
    );

    // The operator's CLI does the same (the kiosk lets go of the printer first).
    let Kiosk { world, printer, .. } = k;
    drop(printer);
    let out = selfvend_with(
        &world.config.path,
        &["printer", "reprint", "--port", world.printer_sim.path()],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        format!(
            "reprinted the receipt of sale 1 on {}\n",
            world.printer_sim.path()
        )
    );
    let lines: Vec<String> = world
        .printer_sim
        .take_printed()
        .into_iter()
        .filter_map(|p| match p {
            selfvend_sim::escpos_printer::Printout::Line(l) => Some(l.text),
            _ => None,
        })
        .collect();
    assert_eq!(lines.first().map(String::as_str), Some("（重印 / COPY）"));
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

/// After a sale: it stands as written, sold once at its backend, carried once by the card and
/// taken once by the meter; the journal's chain is whole.
fn sold_once(k: &Kiosk, card: &dyn TestCard, what: &str) {
    assert_eq!(sale_states(k), [(1, "written".to_string())], "{what}");
    assert_eq!(
        card.backend(k).ledger().sale_count("K-SALE-01"),
        1,
        "{what}"
    );
    assert_eq!(card.purchase_count(), 1, "{what}");
    assert!(
        k.engine.journal().verify().unwrap().problems.is_empty(),
        "{what}"
    );
    let at_meter = card.carry_to_meter(k);
    assert!(
        matches!(
            at_meter,
            MeterInsert::Credited {
                purchase_count: 1,
                ..
            }
        ),
        "{what}: {at_meter:?}"
    );
}

/// A paid sale whose backend reply goes wrong after the backend sold: however the reply goes
/// wrong, the customer is sold exactly once, now or when the card comes back.
#[test]
fn every_way_a_sale_reply_goes_wrong_still_sells_once_through_both_dialects() {
    let faults = [
        // Beyond the kiosk's 5 s reply timeout.
        Fault::Delay(Duration::from_millis(5500)),
        Fault::DropReply,
        Fault::ReplyTwice,
        Fault::Garbage,
        Fault::Truncate,
        Fault::Flood,
    ];
    for issue in [memory_card as Issue, cpu_card] {
        for fault in faults {
            let mut k = Kiosk::new();
            let card = issue(&k);
            let inserted = card.insert(&k);
            let mut s = k.pay(1000);
            card.backend(&k).inject(Call::Sale, fault);
            let done = k.engine.complete(&mut s, &mut k.printer).unwrap();
            let what = format!("{} / {fault:?}: {:?}", card.serial(), done.outcome);
            drop((s, inserted));
            match done.outcome {
                Outcome::Credited { serial: 1, .. } => {}
                Outcome::Pending { serial: 1, .. } => {
                    let lines = k.printed_lines();
                    assert!(lines.contains(&"请保留此凭条".to_string()), "{what}");
                    k.restart();
                    k.engine.recover().unwrap();
                    let _inserted = card.insert(&k);
                    let s = k.engine.start(k.connect()).unwrap();
                    assert_eq!(s.rewritten, Some(1), "{what}");
                }
                _ => panic!("{what}"),
            }
            sold_once(&k, &*card, &what);
        }
    }
}

/// The card leaves the reader at point `at` of the sale's write and verification; the sale
/// stands, and the card carries exactly one credit once the customer brings it back.
fn torn_at(issue: Issue, at: u32) {
    let mut k = Kiosk::new();
    let card = issue(&k);
    let inserted = card.insert(&k);
    let mut s = k.pay(2000);
    card.tear(&inserted, at);
    let done = k.engine.complete(&mut s, &mut k.printer).unwrap();
    let what = format!("{} torn at {at}: {:?}", card.serial(), done.outcome);
    drop((s, inserted));
    match done.outcome {
        Outcome::Credited { serial: 1, .. } => {}
        Outcome::GrantedNotWritten { serial: 1, .. } => {
            let lines = k.printed_lines();
            assert!(
                lines.contains(&"已购电但未写入电卡：请再次插卡补写".to_string()),
                "{what}: {lines:?}"
            );
            let _inserted = card.insert(&k);
            let s = k.engine.start(k.connect()).unwrap();
            assert_eq!(s.card().purchase_count, 1, "{what}");
        }
        _ => panic!("{what}"),
    }
    sold_once(&k, &*card, &what);
}

#[test]
fn a_memory_card_torn_at_every_byte_of_a_sale_carries_exactly_one_credit() {
    // The credit slot, its CRC, and past the last byte written.
    for at in 0..=34 {
        torn_at(memory_card, at);
    }
}

#[test]
fn a_cpu_card_pulled_at_every_apdu_of_a_sale_carries_exactly_one_credit() {
    // The write's seven APDUs, the verification's, and past them.
    for at in 1..=12 {
        torn_at(cpu_card, at);
    }
}

#[test]
fn a_banknote_jammed_on_its_way_to_the_box_goes_to_an_operator_and_onto_the_receipt() {
    let mut k = Kiosk::new();
    let memory = zhang_san(&k);
    let (_inserted, card) = k.insert(&memory);
    let mut s = k.engine.start(card).unwrap();
    k.engine.quote(&mut s, Purchase::Money(Fen(3000))).unwrap();
    k.validator.act(Action::Insert(10));
    k.validator.act(Action::JamInStacker(20));
    let paid = k
        .engine
        .take_cash(&mut s, &mut k.acceptor, Duration::from_secs(2))
        .unwrap();
    // The 20 yuan note never reached VEND VALID: not credited, but maybe in the kiosk.
    assert_eq!(paid, Fen(1000));
    let items = k.engine.journal().manual_items(false).unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0].caught_fen, Some(2000));
    assert_eq!(
        items[0].reason,
        "纸币器故障，20.00 元纸币可能在机内且未入账（卡号 3701000000000001）：请开箱核实后退还"
    );
    assert_eq!(s.caught, [(items[0].id, Fen(2000))]);

    // The customer is sold what was credited and told about the caught note.
    let done = k.engine.complete(&mut s, &mut k.printer).unwrap();
    assert!(matches!(done.outcome, Outcome::Credited { .. }));
    let lines = k.printed_lines();
    for line in [
        "实收金额：10.00元",
        "20.00元纸币卡在机内未入账",
        &format!("已登记待核实退还（工单{}），请保留此凭条", items[0].id),
    ] {
        assert!(lines.iter().any(|l| l == line), "{line} in {lines:?}");
    }
    assert_eq!(
        k.engine.journal().counter("lifetime.cash_fen").unwrap(),
        1000
    );

    // An operator finds the note and pays it back; it is never re-sold.
    let err = k
        .engine
        .resolve_manual(items[0].id, Resolution::Resell, "")
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "item {} is about a banknote the acceptor did not credit, not a sale: it is \
             refunded, never re-sold",
            items[0].id
        )
    );
    let said = k
        .engine
        .resolve_manual(items[0].id, Resolution::Refund, "found in the stacker")
        .unwrap();
    assert_eq!(
        said,
        format!(
            "item {}: 20.00 yuan refunded for a banknote the acceptor did not credit",
            items[0].id
        )
    );
    let journal = k.engine.journal();
    assert_eq!(
        journal.counter("lifetime.caught_refunded_fen").unwrap(),
        2000
    );
    assert_eq!(journal.counter("lifetime.refunded_fen").unwrap(), 0);
    assert!(journal.manual_items(false).unwrap().is_empty());
    assert!(journal.verify().unwrap().problems.is_empty());
}

#[test]
fn a_customer_whose_only_banknote_jammed_leaves_with_a_receipt_and_no_open_payment() {
    let mut k = Kiosk::new();
    let memory = zhang_san(&k);
    let (_inserted, card) = k.insert(&memory);
    let mut s = k.engine.start(card).unwrap();
    k.engine.quote(&mut s, Purchase::Money(Fen(2000))).unwrap();
    k.validator.act(Action::JamInStacker(20));
    let paid = k
        .engine
        .take_cash(&mut s, &mut k.acceptor, Duration::from_secs(1))
        .unwrap();
    assert_eq!(paid, Fen(0));
    let item = s.caught[0].0;
    assert!(matches!(
        k.engine.complete(&mut s, &mut k.printer),
        Err(selfvend_host::sale::SaleError::NothingPaid)
    ));
    assert_eq!(k.engine.cancel(s, &mut k.printer).unwrap(), Some(true));
    let lines = k.printed_lines();
    for line in [
        "未售电",
        "20.00元纸币卡在机内未入账",
        &format!("已登记待核实退还（工单{item}），请保留此凭条"),
    ] {
        assert!(lines.iter().any(|l| l == line), "{line} in {lines:?}");
    }
    // Nothing is left open: the operator can clear the kiosk.
    assert!(k.engine.journal().open_payments().unwrap().is_empty());
    assert_eq!(k.engine.journal().manual_items(false).unwrap().len(), 1);
}
