//! A backend whose dialect offers no can-buy call (the reference backend answers "not offered",
//! which each dialect reports as `not-supported`): the kiosk sells by its own `[backend.can_buy]`
//! policy, and refuses by it with the customer's reason. These backends have no quote either
//! (a backend's quote refuses by the backend's own rules), so the kiosk prices them itself.

use std::sync::{Arc, Mutex};

use selfvend_host::backend::{Purchase, RefusalCode};
use selfvend_host::money::Fen;
use selfvend_host::plugin::SharedCard;
use selfvend_host::sale::{Outcome, SaleError};
use selfvend_sim::cpu_card::CpuCard;
use selfvend_sim::reference_backend::Call;
use selfvend_sim::sle4442;
use selfvend_tests::kiosk_rig::{
    CpuCard as TestCpuCard, Kiosk, TestCard, chen_xiaoming, zhang_san,
};

/// The guangzhou backend (the last in the rig's config) gets these rules; jinan keeps the
/// defaults (only active accounts, no credit left on the card, no arrears).
const GUANGZHOU_RULES: &str = "[backend.can_buy]\nmax_arrears_fen = 5000\ncard_daily_max_fen = 3000\ncard_monthly_max_fen = 4000\n";

fn kiosk() -> Kiosk {
    let k = Kiosk::configured(&[], GUANGZHOU_RULES);
    for backend in [&k.jinan, &k.guangzhou] {
        backend.offer(Call::CanBuy, false);
        backend.offer(Call::Quote, false);
    }
    k
}

/// What the kiosk says to a quote of `fen` for the card in the slot.
fn quote(k: &mut Kiosk, card: &SharedCard, fen: u64) -> Result<Fen, Box<SaleError>> {
    let mut s = k.engine.start(card.clone()).unwrap();
    k.engine
        .quote(&mut s, Purchase::Money(Fen(fen)))
        .map(|q| q.amount)
        .map_err(Box::new)
}

fn refusal(answer: Result<Fen, Box<SaleError>>) -> (RefusalCode, String) {
    match answer.map_err(|e| *e) {
        Err(SaleError::Refused(r)) => (r.code, r.message),
        other => panic!("not refused: {other:?}"),
    }
}

#[test]
fn a_backend_without_can_buy_sells_by_the_kiosks_own_rules() {
    let mut k = kiosk();
    let card = zhang_san(&k);
    let (inserted, mut s) = k.paid_session(&card, 1000);
    let done = k.engine.complete(&mut s, &mut k.printer).unwrap();
    assert!(matches!(done.outcome, Outcome::Credited { serial: 1, .. }));
    drop((s, inserted));
    assert_eq!(k.jinan.ledger().sale_count("K-SALE-01"), 1);
    assert!(k.journal_kinds().contains(&"can-buy-by-kiosk".to_string()));

    // Its credit not yet in the meter, the card is refused, as a backend would.
    let (_inserted, held) = k.insert(&card);
    assert_eq!(
        refusal(quote(&mut k, &held, 1000)),
        (
            RefusalCode::CreditNotTaken,
            "卡内尚有未输入电表的电量，请先插入电表".to_string()
        )
    );
}

#[test]
fn the_kiosks_rules_refuse_arrears_and_accounts_that_are_not_active() {
    let mut k = kiosk();
    // 李四 owes 12.50 yuan to jinan, whose default rule allows no arrears.
    let li_si = Arc::new(Mutex::new(sle4442::ht01::issue(
        &k.machine,
        "3701000000000002",
        "3701",
        "C370100002",
        "M3701000002",
    )));
    let (inserted, held) = k.insert(&li_si);
    assert_eq!(
        refusal(quote(&mut k, &held, 1000)),
        (
            RefusalCode::Arrears,
            "欠费 12.50 元，请先缴清欠费再购电".to_string()
        )
    );
    drop(held);
    drop(inserted);
    // 周强's account at guangzhou is suspended.
    let zhou_qiang = Arc::new(Mutex::new(CpuCard::issue(
        &k.machine,
        "4401000000000003",
        "4401",
        "C440100003",
        "M4401000003",
    )));
    let (_inserted, held) = k.insert(&zhou_qiang);
    assert_eq!(
        refusal(quote(&mut k, &held, 1000)),
        (
            RefusalCode::AccountClosed,
            "该户已暂停供电，不能购电：请到营业厅办理".to_string()
        )
    );
}

#[test]
fn the_kiosks_rules_limit_what_one_card_buys_in_a_day_and_a_month() {
    let mut k = kiosk();
    let card = chen_xiaoming(&k);
    let (inserted, mut s) = k.paid_session(&card, 2000);
    k.engine.complete(&mut s, &mut k.printer).unwrap();
    drop((s, inserted));
    TestCpuCard(card.clone()).carry_to_meter(&k);

    // 20 of the day's 30 yuan are bought: 20 more is refused, 10 is not.
    let (_inserted, held) = k.insert(&card);
    assert_eq!(
        refusal(quote(&mut k, &held, 2000)),
        (
            RefusalCode::OverLimit,
            "本卡今日已在本机购电 20.00 元，限购 30.00 元".to_string()
        )
    );
    assert_eq!(quote(&mut k, &held, 1000).unwrap(), Fen(1000));
}

#[test]
fn a_card_limit_above_the_month_is_refused_with_its_line() {
    let k = Kiosk::new();
    let text = format!(
        "{}[backend.can_buy]\ncard_daily_max_fen = 5000\ncard_monthly_max_fen = 4000\n",
        std::fs::read_to_string(&k.config.path).unwrap()
    );
    let err = selfvend_host::config::KioskConfig::parse(&k.config.path, &text).unwrap_err();
    let line = text
        .lines()
        .position(|l| l.starts_with("card_daily_max_fen"))
        .unwrap()
        + 1;
    assert_eq!(
        err.to_string(),
        format!(
            "{}:{line}: can_buy: card_daily_max_fen 5000 is above card_monthly_max_fen 4000",
            k.config.path.display()
        )
    );
}
