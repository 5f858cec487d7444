//! Sales priced by the backend's `quote` (contract 1.1) on the kiosk rig: a stepped tariff
//! crossing a step, and an account whose arrears the backend deducts first. What the customer
//! is asked to pay, what the card and the meter get, and what the receipt says.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use selfvend_host::backend::{Purchase, TariffStep};
use selfvend_host::money::{Fen, Wh};
use selfvend_host::sale::Outcome;
use selfvend_sim::id003_validator::Action;
use selfvend_sim::meter::{Meter, MeterInsert};
use selfvend_sim::sle4442;
use selfvend_sim::vpcd::lock;
use selfvend_tests::kiosk_rig::{Kiosk, PATIENCE, World, zhang_san};

#[test]
fn a_purchase_crossing_a_tariff_step_is_shown_sold_written_and_printed_by_step() {
    let mut k = Kiosk::new();
    // 张三 has bought 2,510 kWh this year: 10 kWh are left at 0.56 yuan, then 0.61.
    k.jinan
        .ledger()
        .set_year_base("M3701000001", 2_510_000)
        .unwrap();
    let card = zhang_san(&k);
    let (inserted, held) = k.insert(&card);
    let mut s = k.engine.start(held).unwrap();
    let quote = k
        .engine
        .quote(&mut s, Purchase::Money(Fen(10_000)))
        .unwrap();
    assert_eq!(
        (quote.amount, quote.energy, quote.arrears),
        (Fen(10_000), Wh(164_754), Fen(0))
    );
    assert_eq!(
        s.tariff_steps,
        [
            TariffStep {
                energy: Wh(10_000),
                price_fen_per_kwh: 56,
                amount: Fen(560)
            },
            TariffStep {
                energy: Wh(154_754),
                price_fen_per_kwh: 61,
                amount: Fen(9_440)
            },
        ]
    );
    k.validator.act(Action::Insert(100));
    let paid = k
        .engine
        .take_cash(&mut s, &mut k.acceptor, PATIENCE)
        .unwrap();
    assert_eq!(paid, Fen(10_000));
    let done = k.engine.complete(&mut s, &mut k.printer).unwrap();
    let Outcome::Credited { grant, .. } = &done.outcome else {
        panic!("expected a credited sale, got {:?}", done.outcome);
    };
    assert_eq!((grant.amount, grant.energy), (Fen(10_000), Wh(164_754)));
    let lines = k.printed_lines();
    let from = lines
        .iter()
        .position(|l| l == "实收金额：100.00元")
        .unwrap();
    assert_eq!(
        lines[from..from + 4],
        [
            "实收金额：100.00元",
            "阶梯电价：10.000kWh×0.56元/kWh=5.60元",
            "阶梯电价：154.754kWh×0.61元/kWh=94.40元",
            "购电电量：164.754kWh",
        ]
    );
    drop((s, inserted));
    let mut meter = Meter::new("M3701000001", k.machine.clone());
    assert_eq!(
        meter.insert_hengtai(&mut lock(&card)),
        MeterInsert::Credited {
            purchase_count: 1,
            energy_wh: 164_754
        }
    );
}

#[test]
fn an_account_whose_arrears_are_deducted_pays_them_and_gets_the_rest_on_its_card() {
    let mut k = Kiosk::new();
    k.jinan
        .ledger()
        .set_deduct_arrears("C370100002", true)
        .unwrap();
    let li_si = Arc::new(Mutex::new(sle4442::ht01::issue(
        &k.machine,
        "3701000000000002",
        "3701",
        "C370100002",
        "M3701000002",
    )));
    let (inserted, held) = k.insert(&li_si);
    let mut s = k.engine.start(held).unwrap();
    assert_eq!(s.account.arrears, Fen(1_250));
    // 100.00 元 = 欠费 12.50 元 + 电费 87.50 元 → 156.25 kWh.
    let quote = k
        .engine
        .quote(&mut s, Purchase::Money(Fen(10_000)))
        .unwrap();
    assert_eq!(
        (quote.amount, quote.arrears, quote.energy),
        (Fen(10_000), Fen(1_250), Wh(156_250))
    );
    k.validator.act(Action::Insert(100));
    k.engine
        .take_cash(&mut s, &mut k.acceptor, PATIENCE)
        .unwrap();
    let done = k.engine.complete(&mut s, &mut k.printer).unwrap();
    let Outcome::Credited { grant, .. } = &done.outcome else {
        panic!("expected a credited sale, got {:?}", done.outcome);
    };
    assert_eq!((grant.amount, grant.energy), (Fen(8_750), Wh(156_250)));
    let lines = k.printed_lines();
    let from = lines
        .iter()
        .position(|l| l == "实收金额：100.00元")
        .unwrap();
    assert_eq!(
        lines[from..from + 4],
        [
            "实收金额：100.00元",
            "抵扣欠费：12.50元",
            "电费：87.50元",
            "购电电量：156.250kWh",
        ]
    );
    assert_eq!(k.jinan.ledger().owed_fen("C370100002"), 0);
    drop((s, inserted));
    let mut meter = Meter::new("M3701000002", k.machine.clone());
    assert_eq!(
        meter.insert_hengtai(&mut lock(&li_si)),
        MeterInsert::Credited {
            purchase_count: 1,
            energy_wh: 156_250
        }
    );
}

#[test]
fn less_paid_than_quoted_is_priced_again_and_too_little_for_the_arrears_is_not_sold() {
    let mut k = Kiosk::new();
    k.jinan
        .ledger()
        .set_deduct_arrears("C370100002", true)
        .unwrap();
    let li_si = Arc::new(Mutex::new(sle4442::ht01::issue(
        &k.machine,
        "3701000000000002",
        "3701",
        "C370100002",
        "M3701000002",
    )));
    // 100 yuan chosen, 50 paid: 12.50 still settles the arrears, 37.50 buys energy.
    let (inserted, held) = k.insert(&li_si);
    let mut s = k.engine.start(held).unwrap();
    k.engine
        .quote(&mut s, Purchase::Money(Fen(10_000)))
        .unwrap();
    k.validator.act(Action::Insert(50));
    let paid = k
        .engine
        .take_cash(&mut s, &mut k.acceptor, Duration::from_secs(2))
        .unwrap();
    assert_eq!(paid, Fen(5_000));
    let done = k.engine.complete(&mut s, &mut k.printer).unwrap();
    let Outcome::Credited { grant, .. } = &done.outcome else {
        panic!("expected a credited sale, got {:?}", done.outcome);
    };
    assert_eq!((grant.amount, grant.energy), (Fen(3_750), Wh(66_964)));
    let lines = k.printed_lines();
    let from = lines.iter().position(|l| l == "实收金额：50.00元").unwrap();
    assert_eq!(
        lines[from..from + 3],
        ["实收金额：50.00元", "抵扣欠费：12.50元", "电费：37.50元"]
    );
    drop((s, inserted));

    // Next time it owes 30.00 and pays 20.00 of a 50.00 quote: nothing is sold, the money is
    // handed to an operator with the backend's words.
    k.jinan
        .ledger()
        .add_bill("B3701-202611-0002", "C370100002", "2026-11", 3_000, 0)
        .unwrap();
    let mut meter = Meter::new("M3701000002", k.machine.clone());
    meter.insert_hengtai(&mut lock(&li_si));
    let (_inserted, held) = k.insert(&li_si);
    let mut s = k.engine.start(held).unwrap();
    k.engine.quote(&mut s, Purchase::Money(Fen(5_000))).unwrap();
    k.validator.act(Action::Insert(20));
    k.engine
        .take_cash(&mut s, &mut k.acceptor, Duration::from_secs(2))
        .unwrap();
    let done = k.engine.complete(&mut s, &mut k.printer).unwrap();
    let Outcome::Unsold { reason, .. } = &done.outcome else {
        panic!("expected an unsold session, got {:?}", done.outcome);
    };
    assert_eq!(reason, "购电金额须大于欠费30.00元");
    assert_eq!(k.jinan.ledger().owed_fen("C370100002"), 3_000);
}

#[test]
fn a_kiosk_whose_dialect_was_built_for_contract_1_0_sells_at_the_accounts_price() {
    let mut k = Kiosk::in_world(World::with_contract_1_0_dialect());
    let info: Vec<_> = k
        .engine
        .plugins()
        .map(|p| (p.name.clone(), p.inspection.version.to_string()))
        .collect();
    assert!(
        info.contains(&("fixed-text".to_string(), "1.0.0".to_string())),
        "{info:?}"
    );
    // No quote in 1.0: even past the step, the kiosk prices at the account's price, which the
    // backend gives as the next kWh's; the backend's grant is what is sold and printed.
    k.jinan
        .ledger()
        .set_year_base("M3701000001", 2_510_000)
        .unwrap();
    let card = zhang_san(&k);
    let (inserted, held) = k.insert(&card);
    let mut s = k.engine.start(held).unwrap();
    let quote = k.engine.quote(&mut s, Purchase::Money(Fen(5_000))).unwrap();
    assert_eq!((quote.amount, quote.energy), (Fen(5_000), Wh(89_285)));
    assert!(s.tariff_steps.is_empty());
    k.validator.act(Action::Insert(50));
    k.engine
        .take_cash(&mut s, &mut k.acceptor, PATIENCE)
        .unwrap();
    let done = k.engine.complete(&mut s, &mut k.printer).unwrap();
    let Outcome::Credited { grant, .. } = &done.outcome else {
        panic!("expected a credited sale, got {:?}", done.outcome);
    };
    // 10 kWh at 0.56, the rest at 0.61: the backend's own pricing of 50 yuan.
    assert_eq!((grant.amount, grant.energy), (Fen(5_000), Wh(82_786)));
    assert!(
        k.printed_lines()
            .contains(&"购电电量：82.786kWh".to_string())
    );
    assert!(
        k.journal_kinds()
            .contains(&"grant-differs-from-quote".to_string())
    );
    drop((s, inserted));
    let mut meter = Meter::new("M3701000001", k.machine.clone());
    assert_eq!(
        meter.insert_hengtai(&mut lock(&card)),
        MeterInsert::Credited {
            purchase_count: 1,
            energy_wh: 82_786
        }
    );
}
