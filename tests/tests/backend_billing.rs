//! Contract 1.1 through both dialect plugins against the reference backend: stepped tariffs and
//! arrears deduction priced by `quote` and sold as quoted, bills queried and paid (idempotent on
//! the kiosk serial, unknown outcomes resolved by status), reconciliation by four business types,
//! and a dialect built against contract 1.0 on this host.

use std::time::Duration;

use selfvend_host::backend::{
    BackendError, BillPaymentRequest, BillPaymentStatus, BusinessTotal, BusinessType, PaymentKind,
    PeriodReport, Purchase, RefusalCode, TariffStep,
};
use selfvend_host::money::{Fen, Wh};
use selfvend_host::plugin::DialectError;
use selfvend_sim::reference_backend::{Call, Fault};
use selfvend_tests::dialect_rig::{
    DIALECTS, MEMORY_CARD, Rig, TERMINAL, card, refused, sale, unknown,
};

/// 孙七, a post-paid account with two bills: 86.50 + 1.30 late fee, and 93.20.
const POSTPAID: &str = "3701200005";
const POSTPAID_OWES: u64 = 8650 + 130 + 9320;

fn pay(serial: u64, account: &str, fen: u64, payment: PaymentKind) -> BillPaymentRequest {
    BillPaymentRequest {
        terminal_id: TERMINAL.into(),
        kiosk_serial: serial,
        customer_number: account.into(),
        amount: Fen(fen),
        payment,
    }
}

#[test]
fn a_purchase_crossing_a_tariff_step_is_quoted_by_step_and_sold_as_quoted() {
    for dialect in DIALECTS {
        let rig = Rig::new();
        // 张三 has bought 2,510 kWh this year: 10 kWh are left at 0.56 yuan, then 0.61.
        rig.backend
            .ledger()
            .set_year_base("M3701000001", 2_510_000)
            .unwrap();
        let mut s = rig.session(dialect);
        let q = s
            .quote(&card(MEMORY_CARD, 0), Purchase::Money(Fen(10_000)))
            .unwrap();
        assert_eq!(
            (q.amount, q.arrears, q.electricity, q.energy),
            (Fen(10_000), Fen(0), Fen(10_000), Wh(164_754)),
            "{dialect:?}"
        );
        assert_eq!(
            q.steps,
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
        let grant = s.sale(&sale(1, card(MEMORY_CARD, 0), 10_000)).unwrap();
        assert_eq!((grant.amount, grant.energy), (Fen(10_000), Wh(164_754)));
        // The account is past the step now: its next kWh costs 0.61.
        let a = s.account_query(&card(MEMORY_CARD, 1)).unwrap();
        assert_eq!(a.price_fen_per_kwh, 61);
    }
}

#[test]
fn an_account_that_deducts_arrears_is_quoted_and_granted_the_rest() {
    for dialect in DIALECTS {
        let rig = Rig::new();
        rig.backend
            .ledger()
            .set_deduct_arrears("C370100002", true)
            .unwrap();
        let li_si = card("3701000000000002", 0);
        let mut s = rig.session(dialect);
        let q = s.quote(&li_si, Purchase::Money(Fen(10_000))).unwrap();
        // 100.00 元 = 欠费 12.50 元 + 电费 87.50 元 → 156.25 kWh at 0.56.
        assert_eq!(
            (q.amount, q.arrears, q.electricity, q.energy),
            (Fen(10_000), Fen(1_250), Fen(8_750), Wh(156_250)),
            "{dialect:?}"
        );
        let grant = s.sale(&sale(1, li_si.clone(), 10_000)).unwrap();
        assert_eq!((grant.amount, grant.energy), (Fen(8_750), Wh(156_250)));
        assert_eq!(rig.backend.ledger().owed_fen("C370100002"), 0);
        // Less than the arrears buys nothing: refused with the backend's words.
        rig.backend
            .ledger()
            .add_bill("B3701-202611-0002", "C370100002", "2026-11", 3_000, 0)
            .unwrap();
        let (code, message) =
            refused(s.quote(&card("3701000000000002", 1), Purchase::Money(Fen(2_000))));
        assert_eq!(code, RefusalCode::Arrears);
        assert_eq!(message, "购电金额须大于欠费30.00元");
    }
}

#[test]
fn a_postpaid_account_pays_its_bills_once_whatever_the_retries() {
    for dialect in DIALECTS {
        let rig = Rig::new();
        let mut s = rig.session(dialect);
        let bills = s.bill_query(POSTPAID).unwrap();
        assert_eq!(bills.customer_name, "孙七", "{dialect:?}");
        assert_eq!(bills.address, "山东省济南市天桥区北园大街200号");
        let periods: Vec<_> = bills
            .bills
            .iter()
            .map(|b| (b.period.as_str(), b.amount, b.late_fee))
            .collect();
        assert_eq!(
            periods,
            [
                ("2026-10", Fen(8_650), Fen(130)),
                ("2026-11", Fen(9_320), Fen(0))
            ]
        );
        assert_eq!(bills.total, Fen(POSTPAID_OWES));

        // Part of it: the oldest bill first, its late fee with it.
        let first = s
            .bill_pay(&pay(11, POSTPAID, 8_780, PaymentKind::Cash))
            .unwrap();
        assert_eq!((first.amount, first.remaining), (Fen(8_780), Fen(9_320)));
        let again = s
            .bill_pay(&pay(11, POSTPAID, 8_780, PaymentKind::Cash))
            .unwrap();
        assert_eq!(again, first, "a retry returns the first receipt");
        assert_eq!(
            s.bill_payment_status(TERMINAL, 11).unwrap(),
            BillPaymentStatus::Paid(first)
        );
        assert_eq!(
            s.bill_payment_status(TERMINAL, 12).unwrap(),
            BillPaymentStatus::NotFound
        );
        let left = s.bill_query(POSTPAID).unwrap();
        assert_eq!(left.bills.len(), 1);
        assert_eq!(left.total, Fen(9_320));

        // The rest by bank card, rounded up to the yuan: 0.80 beyond the bills is kept as
        // the account's credit (预存).
        let last = s
            .bill_pay(&pay(13, POSTPAID, 9_400, PaymentKind::BankCard))
            .unwrap();
        assert_eq!(last.remaining, Fen(0));
        assert_eq!(rig.backend.ledger().owed_fen(POSTPAID), 0);
        assert_eq!(rig.backend.ledger().prepaid_fen(POSTPAID), 80);
        // With nothing owed, a payment is refused and books nothing.
        let (code, message) = refused(s.bill_pay(&pay(12, POSTPAID, 100, PaymentKind::Cash)));
        assert_eq!(code, RefusalCode::Other);
        assert_eq!(message, "该户没有待缴账单");
        assert!(matches!(
            s.bill_payment_status(TERMINAL, 12).unwrap(),
            BillPaymentStatus::Refused(r) if r.code == RefusalCode::Other
        ));
        let booked = rig.backend.ledger().bill_payments(TERMINAL);
        assert_eq!(
            booked,
            [
                (11, POSTPAID.to_string(), 8_780, "cash".to_string()),
                (13, POSTPAID.to_string(), 9_400, "bank-card".to_string()),
            ]
        );
        let (code, message) = refused(s.bill_query("C999999999"));
        assert_eq!(code, RefusalCode::UnknownCard);
        assert_eq!(message, "户号C999999999不存在");
    }
}

#[test]
fn a_bill_payment_whose_reply_is_lost_garbled_or_late_is_unknown_and_status_finds_it() {
    for dialect in DIALECTS {
        for (serial, fault) in [
            (21, Fault::DropReply),
            (22, Fault::Garbage),
            (23, Fault::Truncate),
            (24, Fault::Delay(Duration::from_millis(1500))),
        ] {
            let rig = Rig::new();
            rig.backend.inject(Call::BillPay, fault);
            let mut s = rig.session_with(dialect, |e| e.io_timeout = Duration::from_millis(800));
            let why = unknown(s.bill_pay(&pay(serial, POSTPAID, 1_000, PaymentKind::Cash)));
            assert!(
                why.starts_with("bill-pay: request sent"),
                "{dialect:?} {fault:?}: {why}"
            );
            // Booked once; status says so, and a retry returns that booking.
            std::thread::sleep(Duration::from_millis(800));
            let mut s = rig.session(dialect);
            let status = s.bill_payment_status(TERMINAL, serial).unwrap();
            let BillPaymentStatus::Paid(receipt) = status else {
                panic!("{dialect:?} {fault:?}: {status:?}");
            };
            assert_eq!(receipt.remaining, Fen(POSTPAID_OWES - 1_000));
            let retry = s
                .bill_pay(&pay(serial, POSTPAID, 1_000, PaymentKind::Cash))
                .unwrap();
            assert_eq!(retry, receipt);
            assert_eq!(rig.backend.ledger().bill_payments(TERMINAL).len(), 1);
        }
        // Doubled: read once.
        let rig = Rig::new();
        rig.backend.inject(Call::BillPay, Fault::ReplyTwice);
        let r = rig
            .session(dialect)
            .bill_pay(&pay(25, POSTPAID, 1_000, PaymentKind::Cash))
            .unwrap();
        assert_eq!(r.amount, Fen(1_000));
    }
}

#[test]
fn a_period_with_bill_payments_reconciles_by_four_business_types() {
    for dialect in DIALECTS {
        let rig = Rig::new();
        let mut s = rig.session(dialect);
        s.sale(&sale(1, card(MEMORY_CARD, 0), 5_000)).unwrap();
        s.bill_pay(&pay(2, POSTPAID, 8_780, PaymentKind::Cash))
            .unwrap();
        s.bill_pay(&pay(3, "4401200005", 15_630, PaymentKind::BankCard))
            .unwrap();
        let total = |business, count, fen| BusinessTotal {
            business,
            count,
            amount: Fen(fen),
        };
        let mut report = PeriodReport {
            terminal_id: TERMINAL.into(),
            period_id: 7,
            opened_at: "2000-01-01T00:00:00".into(),
            closed_at: "2999-12-31T23:59:59".into(),
            totals: vec![
                total(BusinessType::CashSale, 1, 5_000),
                total(BusinessType::BankCardSale, 0, 0),
                total(BusinessType::CashBillPayment, 1, 8_780),
                total(BusinessType::BankCardBillPayment, 1, 15_630),
            ],
        };
        let r = s.reconcile(&report).unwrap();
        assert!(r.matched, "{dialect:?}: {:?}", r.differences);
        assert_eq!(
            r.backend_totals,
            [
                total(BusinessType::CashSale, 1, 5_000),
                total(BusinessType::CashBillPayment, 1, 8_780),
                total(BusinessType::BankCardBillPayment, 1, 15_630),
            ]
        );
        report.totals[3] = total(BusinessType::BankCardBillPayment, 0, 0);
        let r = s.reconcile(&report).unwrap();
        assert!(!r.matched);
        assert_eq!(r.differences, ["银行卡缴费: 终端0笔0分，后台1笔15630分"]);
    }
}

#[test]
fn a_dialect_built_against_contract_1_0_loads_and_sells_on_this_host() {
    let rig = Rig::new();
    let legacy = rig
        .plugins
        .runtime()
        .load(
            "fixed-text-1.0",
            &rig.plugins.signed("fixed_text_dialect_1_0"),
        )
        .unwrap();
    assert_eq!(legacy.inspection.version.to_string(), "1.0.0");
    let endpoint = selfvend_host::backend::Endpoint {
        address: rig.backend.fixed_text_address().to_string(),
        connect_timeout: Duration::from_millis(500),
        io_timeout: Duration::from_millis(2000),
        max_request_bytes: 16 * 1024,
        max_reply_bytes: 16 * 1024,
    };
    let mut s = legacy.backend_session(endpoint).unwrap();
    assert!(!s.has_billing());
    assert_eq!(s.about().unwrap().version, "1.0.0");
    let a = s.account_query(&card(MEMORY_CARD, 0)).unwrap();
    assert_eq!(a.customer_name, "张三");
    let grant = s.sale(&sale(1, card(MEMORY_CARD, 0), 5_000)).unwrap();
    assert_eq!((grant.amount, grant.energy), (Fen(5_000), Wh(89_285)));
    // What 1.0 lacks is "not supported", and nothing is sent for it.
    for result in [
        s.quote(&card(MEMORY_CARD, 1), Purchase::Money(Fen(100)))
            .map(|_| ()),
        s.bill_query(POSTPAID).map(|_| ()),
        s.bill_pay(&pay(2, POSTPAID, 100, PaymentKind::Cash))
            .map(|_| ()),
    ] {
        assert!(matches!(
            result,
            Err(DialectError::Backend(BackendError::NotSupported))
        ));
    }
    assert_eq!(rig.backend.ledger().bill_payments(TERMINAL), []);
    // Its reconcile names three business types; an empty fourth is left out.
    let r = s
        .reconcile(&PeriodReport {
            terminal_id: TERMINAL.into(),
            period_id: 1,
            opened_at: "2000-01-01T00:00:00".into(),
            closed_at: "2999-12-31T23:59:59".into(),
            totals: vec![
                BusinessTotal {
                    business: BusinessType::CashSale,
                    count: 1,
                    amount: Fen(5_000),
                },
                BusinessTotal {
                    business: BusinessType::BankCardBillPayment,
                    count: 0,
                    amount: Fen(0),
                },
            ],
        })
        .unwrap();
    assert!(r.matched, "{:?}", r.differences);
}
