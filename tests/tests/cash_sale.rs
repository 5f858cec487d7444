//! Complete cash sales through every real rig: a virtual card in the rig's pcscd, the
//! reference backend over TCP, the ID-003 validator and the ESC/POS printer on ptys, and the
//! journal on disk. One kiosk serves two utilities, one per dialect, each with its own card.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use selfvend_host::backend::{Purchase, RefusalCode};
use selfvend_host::money::{Fen, Wh};
use selfvend_host::sale::{Outcome, Resolution, SaleError};
use selfvend_sim::id003_validator::Action;
use selfvend_sim::meter::{Meter, MeterInsert};
use selfvend_sim::reference_backend::{Call, Fault};
use selfvend_sim::sle4442;
use selfvend_sim::vpcd::lock;
use selfvend_tests::kiosk_rig::{Kiosk, PATIENCE, chen_xiaoming, sale_states, zhang_san};
use selfvend_tests::{selfvend_with, text};

#[test]
fn a_cash_sale_for_each_card_type_and_each_dialect() {
    let mut k = Kiosk::new();
    let memory = zhang_san(&k);
    let cpu = chen_xiaoming(&k);

    // 张三's memory card through the fixed-text dialect: 50 yuan as 20 + 20 + 10.
    let (inserted, card) = k.insert(&memory);
    let mut s = k.engine.start(card).unwrap();
    assert_eq!(s.account.customer_name, "张三");
    let quote = k.engine.quote(&mut s, Purchase::Money(Fen(5000))).unwrap();
    assert_eq!((quote.amount, quote.energy), (Fen(5000), Wh(89_285)));
    for yuan in [20, 20, 10] {
        k.validator.act(Action::Insert(yuan));
    }
    let paid = k
        .engine
        .take_cash(&mut s, &mut k.acceptor, PATIENCE)
        .unwrap();
    assert_eq!(paid, Fen(5000));
    let done = k.engine.complete(&mut s, &mut k.printer).unwrap();
    let Outcome::Credited { serial, grant } = &done.outcome else {
        panic!("expected a credited sale, got {:?}", done.outcome);
    };
    assert_eq!((*serial, grant.purchase_count), (1, 1));
    assert!(done.printed);
    assert_eq!(
        k.printed_lines(),
        [
            "自助售电凭证",
            "终端号：K-SALE-01",
            "流水号：00000001",
            "户名：张三",
            "户号：C370100001",
            "表号：M3701000001",
            "卡号：3701000000000001",
            "实收金额：50.00元",
            "购电电量：89.285kWh",
            "购电次数：1",
            &format!("交易编号：{}", grant.backend_sale_id),
            "购电成功，请将电卡插入电表",
            "--- cut ---",
        ]
    );
    drop(s);
    drop(inserted);
    let mut meter = Meter::new("M3701000001", k.machine.clone());
    assert_eq!(
        meter.insert_hengtai(&mut lock(&memory)),
        MeterInsert::Credited {
            purchase_count: 1,
            energy_wh: 89_285
        }
    );

    // 陈小明's CPU card through the JSON dialect: 10 kWh at the backend's price.
    let (_inserted, card) = k.insert(&cpu);
    let mut s = k.engine.start(card).unwrap();
    assert_eq!(s.account.customer_name, "陈小明");
    let quote = k
        .engine
        .quote(&mut s, Purchase::Energy(Wh(10_000)))
        .unwrap();
    assert_eq!(quote.amount, Fen(560));
    // A 10-yuan note is more than the 5.60 due and comes back; then 5 + 1 is too much too:
    // the kiosk gives no change, so the customer is asked for exact notes.
    for yuan in [10, 5] {
        k.validator.act(Action::Insert(yuan));
    }
    let paid = k
        .engine
        .take_cash(&mut s, &mut k.acceptor, Duration::from_secs(2))
        .unwrap();
    assert_eq!(paid, Fen(500));
    let done = k.engine.complete(&mut s, &mut k.printer).unwrap();
    let Outcome::Credited { serial, grant } = &done.outcome else {
        panic!("expected a credited sale, got {:?}", done.outcome);
    };
    // Short of the energy's price, the kiosk sells the money that was paid.
    assert_eq!(
        (*serial, grant.amount, grant.energy),
        (2, Fen(500), Wh(8_928))
    );
    assert_eq!(k.validator.tally().credited, [20, 20, 10, 5]);
    assert_eq!(k.validator.tally().returned, [10]);
    assert_eq!(k.jinan.ledger().sale_count("K-SALE-01"), 1);
    assert_eq!(k.guangzhou.ledger().sale_count("K-SALE-01"), 1);
    assert_eq!(
        k.engine.journal().counter("lifetime.cash_fen").unwrap(),
        5500
    );
    assert_eq!(
        k.engine.journal().counter("lifetime.credited_fen").unwrap(),
        5500
    );
    let kinds = k.journal_kinds();
    let first_sale: Vec<&str> = kinds.iter().map(String::as_str).take(24).collect();
    assert_eq!(
        first_sale,
        [
            "session-started",
            "account-shown",
            "purchase-quoted",
            // The payment is on the record before the acceptor takes a note.
            "payment-opened",
            // The validator was just switched on: its power-up is on the record too.
            "cash-acceptor",
            "banknote-escrowed",
            "banknote-credited",
            "banknote-escrowed",
            "banknote-credited",
            "banknote-escrowed",
            "banknote-credited",
            "sale-intent",
            "serial-allocated",
            "sale-granted",
            "card-write-intent",
            "card-written",
            "write-confirm-intent",
            "write-confirmed",
            "receipt-intent",
            "receipt-printed",
            "session-ended",
            "session-started",
            "account-shown",
            "purchase-quoted",
        ]
    );
    assert!(k.engine.journal().verify().unwrap().problems.is_empty());
}

#[test]
fn a_reply_lost_after_the_backend_sold_is_resolved_and_sold_once() {
    let mut k = Kiosk::new();
    let memory = zhang_san(&k);
    let (_inserted, mut s) = k.paid_session(&memory, 1000);
    k.jinan.inject(Call::Sale, Fault::DropReply);
    let done = k.engine.complete(&mut s, &mut k.printer).unwrap();
    assert!(
        matches!(done.outcome, Outcome::Credited { serial: 1, .. }),
        "{:?}",
        done.outcome
    );
    assert_eq!(k.jinan.ledger().sale_count("K-SALE-01"), 1);
    let kinds = k.journal_kinds();
    assert!(kinds.contains(&"sale-unknown".to_string()), "{kinds:?}");
}

#[test]
fn refusals_come_before_any_money_is_taken() {
    let mut k = Kiosk::new();
    // 李四 owes 12.50 yuan.
    let arrears = Arc::new(Mutex::new(sle4442::ht01::issue(
        &k.machine,
        "3701000000000002",
        "3701",
        "C370100002",
        "M3701000002",
    )));
    let (inserted, card) = k.insert(&arrears);
    let mut s = k.engine.start(card).unwrap();
    match k.engine.quote(&mut s, Purchase::Money(Fen(5000))) {
        Err(SaleError::Refused(r)) => {
            assert_eq!(r.code, RefusalCode::Arrears);
            assert_eq!(r.message, "您有欠费12.50元，请先缴清");
        }
        other => panic!("expected the arrears refusal, got {other:?}"),
    }
    drop(s);
    drop(inserted);

    // A card of a utility no backend here serves.
    let stranger = Arc::new(Mutex::new(sle4442::ht01::issue(
        &k.machine,
        "9901000000000001",
        "9901",
        "C990100001",
        "M9901000001",
    )));
    let (_inserted, card) = k.insert(&stranger);
    match k.engine.start(card) {
        Err(e @ SaleError::NotServed { .. }) => assert_eq!(
            e.to_string(),
            "this kiosk does not sell for utility 9901 (card 9901000000000001)"
        ),
        Err(e) => panic!("expected a card no backend serves, got {e}"),
        Ok(_) => panic!("a card of utility 9901 was served"),
    }
    assert_eq!(k.validator.tally().credited, Vec::<u32>::new());
    assert_eq!(k.jinan.ledger().sale_count("K-SALE-01"), 0);
}

#[test]
fn a_card_pulled_during_the_write_is_credited_when_it_comes_back() {
    let mut k = Kiosk::new();
    let memory = zhang_san(&k);
    let (_inserted, mut s) = k.paid_session(&memory, 2000);
    // The card leaves the reader ten bytes into the credit slot.
    lock(&memory).tear_after_bytes = Some(10);
    let done = k.engine.complete(&mut s, &mut k.printer).unwrap();
    assert!(
        matches!(done.outcome, Outcome::GrantedNotWritten { serial: 1, .. }),
        "{:?}",
        done.outcome
    );
    let lines = k.printed_lines();
    assert!(
        lines.contains(&"已购电但未写入电卡：请再次插卡补写".to_string()),
        "{lines:?}"
    );
    assert!(lines.contains(&"请保留此凭条".to_string()));
    drop(s);

    // The customer comes back with the card: it is written before anything else.
    let (_inserted, card) = k.insert(&memory);
    let s = k.engine.start(card).unwrap();
    assert_eq!(s.rewritten, Some(1));
    assert_eq!(s.card().purchase_count, 1);
    assert_eq!(s.account.purchase_count, 1);
    assert_eq!(sale_states(&k), [(1, "written".to_string())]);
    drop(s);
    let mut meter = Meter::new("M3701000001", k.machine.clone());
    assert!(matches!(
        meter.insert_hengtai(&mut lock(&memory)),
        MeterInsert::Credited {
            purchase_count: 1,
            ..
        }
    ));
    assert_eq!(k.jinan.ledger().sale_count("K-SALE-01"), 1);
}

#[test]
fn an_unknown_outcome_is_resolved_at_the_next_start_and_written_when_the_card_returns() {
    let mut k = Kiosk::new();
    let memory = zhang_san(&k);
    let (inserted, mut s) = k.paid_session(&memory, 1000);
    // The backend sells, then its answers (and its answer to the status query) are garbage.
    k.jinan.inject(Call::Sale, Fault::Garbage);
    k.jinan.inject(Call::SaleStatus, Fault::Garbage);
    let done = k.engine.complete(&mut s, &mut k.printer).unwrap();
    assert!(
        matches!(done.outcome, Outcome::Pending { serial: 1, .. }),
        "{:?}",
        done.outcome
    );
    let lines = k.printed_lines();
    assert!(
        lines.contains(&"交易待处理：结果确认后自动补售电".to_string()),
        "{lines:?}"
    );
    drop(s);
    drop(inserted);

    k.restart();
    assert_eq!(k.engine.recover().unwrap(), [(1, "granted".to_string())]);
    let (_inserted, card) = k.insert(&memory);
    let s = k.engine.start(card).unwrap();
    assert_eq!(s.rewritten, Some(1));
    assert_eq!(s.card().purchase_count, 1);
    assert_eq!(k.jinan.ledger().sale_count("K-SALE-01"), 1);
    assert!(k.engine.journal().verify().unwrap().problems.is_empty());
}

#[test]
fn a_sale_that_never_reached_the_backend_is_re_sold_and_written_later() {
    let mut k = Kiosk::new();
    let memory = zhang_san(&k);
    let (inserted, mut s) = k.paid_session(&memory, 1000);
    k.jinan.refuse_connections(true);
    let done = k.engine.complete(&mut s, &mut k.printer).unwrap();
    assert!(
        matches!(done.outcome, Outcome::Pending { serial: 1, .. }),
        "{:?}",
        done.outcome
    );
    assert!(
        k.printed_lines()
            .contains(&"交易待处理：结果确认后自动补售电".to_string())
    );
    assert_eq!(sale_states(&k), [(1, "never-reached".to_string())]);
    drop(s);
    drop(inserted);

    k.jinan.refuse_connections(false);
    assert_eq!(k.engine.resell().unwrap(), [(1, "granted".to_string())]);
    let (_inserted, card) = k.insert(&memory);
    let s = k.engine.start(card).unwrap();
    assert_eq!(s.rewritten, Some(1));
    assert_eq!(sale_states(&k), [(1, "written".to_string())]);
    assert_eq!(k.jinan.ledger().sale_count("K-SALE-01"), 1);
}

#[test]
fn re_sell_gives_up_after_its_tries_and_an_operator_refunds_with_proof() {
    let mut k = Kiosk::new();
    let memory = zhang_san(&k);
    let (_inserted, mut s) = k.paid_session(&memory, 1000);
    k.jinan.refuse_connections(true);
    k.engine.complete(&mut s, &mut k.printer).unwrap();
    for expected in ["never-reached", "never-reached", "manual"] {
        assert_eq!(k.engine.resell().unwrap(), [(1, expected.to_string())]);
    }
    // Handed to an operator, it is not tried again.
    assert_eq!(k.engine.resell().unwrap(), []);
    let items = k.engine.journal().manual_items(false).unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(
        items[0].reason,
        "补售电 3 次未成功：请人工补售电或退款 10.00 元"
    );
    // The operator settles it with the CLI.
    let config = k.plugins.dir.path().join("kiosk.toml");
    let out = selfvend_with(&config, &["manual", "list"]);
    assert_eq!(
        text(&out.stdout),
        "#1    open     sale 1        card 3701000000000001   补售电 3 次未成功：请人工补售电或退款 10.00 元\n"
    );
    let out = selfvend_with(
        &config,
        &[
            "manual",
            "resolve",
            "1",
            "--refund",
            "--note",
            "paid at the counter",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "item 1: 10.00 yuan refunded for sale 1\n"
    );
    assert_eq!(sale_states(&k), [(1, "refunded".to_string())]);
    assert_eq!(
        k.engine.journal().counter("lifetime.refunded_fen").unwrap(),
        1000
    );
    assert_eq!(k.engine.journal().manual_items(false).unwrap(), []);
    k.jinan.refuse_connections(false);
    assert_eq!(k.jinan.ledger().sale_count("K-SALE-01"), 0);
}

#[test]
fn a_refused_sale_owes_a_refund_and_a_sold_one_never_gets_one() {
    let mut k = Kiosk::new();
    let memory = zhang_san(&k);
    let (inserted, mut s) = k.paid_session(&memory, 1000);
    // Between the quote and the sale, another terminal sells to the same card.
    k.jinan
        .ledger()
        .handle(&selfvend_sim::reference_backend::Request::Sale {
            terminal_id: "COUNTER-1".into(),
            kiosk_serial: 1,
            card: selfvend_sim::reference_backend::ledger::CardInfo {
                card_serial: "3701000000000001".into(),
                ..Default::default()
            },
            buy: selfvend_sim::reference_backend::ledger::Buy::Money(1000),
            payment: selfvend_sim::reference_backend::ledger::Payment::Cash,
            paid_fen: 1000,
        })
        .unwrap();
    let done = k.engine.complete(&mut s, &mut k.printer).unwrap();
    let Outcome::Refused { refusal, .. } = &done.outcome else {
        panic!("expected a refusal, got {:?}", done.outcome);
    };
    assert_eq!(refusal.message, "上次购电尚未写入卡内，请先补写卡");
    let lines = k.printed_lines();
    assert!(
        lines.contains(&"款项待退还，请保留此凭条联系营业厅".to_string()),
        "{lines:?}"
    );
    let items = k.engine.journal().manual_items(false).unwrap();
    assert_eq!(
        items[0].reason,
        "退款 10.00 元：售电被拒（上次购电尚未写入卡内，请先补写卡）"
    );
    k.engine
        .resolve_manual(items[0].id, Resolution::Refund, "refunded")
        .unwrap();
    drop(s);
    drop(inserted);

    // A customer complains about a sale the backend did make: no refund, whatever is claimed.
    let cpu = chen_xiaoming(&k);
    let (_inserted, mut s) = k.paid_session(&cpu, 1000);
    let done = k.engine.complete(&mut s, &mut k.printer).unwrap();
    assert!(matches!(done.outcome, Outcome::Credited { serial: 2, .. }));
    let item = k
        .engine
        .raise_manual(2, "customer says the meter shows nothing")
        .unwrap();
    match k
        .engine
        .resolve_manual(item, Resolution::Refund, "customer insists")
    {
        Err(e @ SaleError::RefundRefused { .. }) => assert_eq!(
            e.to_string(),
            "sale 2 is written: the backend sold it, or may have; no refund (re-write the card, \
             or wait for the outcome)"
        ),
        other => panic!("a refund was allowed for a sale the backend made: {other:?}"),
    }
    assert_eq!(
        k.engine.journal().counter("lifetime.refunded_fen").unwrap(),
        1000
    );
}

#[test]
fn a_banknote_drawn_in_as_the_customer_stops_is_finished_in_that_session() {
    let mut k = Kiosk::new();
    let card = zhang_san(&k);
    let (_inserted, channel) = k.insert(&card);
    let mut s = k.engine.start(channel).unwrap();
    k.engine.quote(&mut s, Purchase::Money(Fen(5000))).unwrap();
    // The acceptor powers up and settles with nothing inserted.
    let paid = k
        .engine
        .take_cash(&mut s, &mut k.acceptor, Duration::from_millis(300))
        .unwrap();
    assert_eq!(paid, Fen(0));
    // The customer stops (cancels, pulls the card) at the very poll that starts drawing a
    // banknote in.
    k.validator.act(Action::Insert(20));
    let paid = k
        .engine
        .take_cash_watched(&mut s, &mut k.acceptor, PATIENCE, &mut |_| false)
        .unwrap();
    // The note was finished in this session: credited to this customer, or refused by the
    // inhibited acceptor and on its way back to them; never left to the next customer.
    assert!(k.validator.inhibited());
    let rows = k.engine.journal().entries(1, 1000).unwrap();
    let credited = rows.iter().any(|e| e.kind == "banknote-credited");
    let refused = rows.iter().any(|e| {
        e.kind == "cash-acceptor"
            && e.body["event"]
                .as_str()
                .is_some_and(|t| t.starts_with("rejected"))
    });
    assert!(
        credited != refused,
        "{:#?}",
        rows.iter().map(|e| (&e.kind, &e.body)).collect::<Vec<_>>()
    );
    assert_eq!(paid, if credited { Fen(2000) } else { Fen(0) });
    if !credited {
        return;
    }
    let done = k.engine.complete(&mut s, &mut k.printer).unwrap();
    assert!(
        matches!(done.outcome, Outcome::Credited { .. }),
        "{:?}",
        done.outcome
    );
}
