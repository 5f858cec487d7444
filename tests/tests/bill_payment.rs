//! Bill payment (缴费) in cash on the kiosk rig, through both dialects: the customer types an
//! account number, sees its bills, pays, and takes a receipt; the backend's books, the journal
//! and clearing agree. Replies lost, doubled, garbled or late book it once; a refusal is
//! refunded only by an operator; one that never reached the backend is paid again, then handed
//! over; and the kiosk killed at every failpoint of a bill payment loses no money.

use std::os::unix::process::ExitStatusExt;
use std::process::Command;
use std::time::Duration;

use selfvend_host::clearing::{self, Business, Tally};
use selfvend_host::journal::Journal;
use selfvend_host::money::Fen;
use selfvend_host::sale::{BillOutcome, Resolution, SaleError};
use selfvend_sim::id003_validator::Action;
use selfvend_sim::reference_backend::{Call, Fault};
use selfvend_tests::kiosk_rig::{Kiosk, PATIENCE, World};
use selfvend_tests::{selfvend_bin, sql};

/// 孙七 (jinan, fixed-text): 86.50 + 1.30 late fee, and 93.20.
const SUN_QI: &str = "3701200005";
/// 吴芳 (guangzhou, JSON): 156.30.
const WU_FANG: &str = "4401200005";

/// Pays `fen` of `account`'s bills with `notes` (yuan) and completes it.
fn pay(k: &mut Kiosk, account: &str, utility: &str, fen: u64, notes: &[u32]) -> BillOutcome {
    let mut s = k.engine.start_bill(account, utility).unwrap();
    k.engine.choose_bill_amount(&mut s, Fen(fen)).unwrap();
    for yuan in notes {
        k.validator.act(Action::Insert(*yuan));
    }
    let paid = k
        .engine
        .take_bill_cash(&mut s, &mut k.acceptor, PATIENCE, &mut |_| true)
        .unwrap();
    assert_eq!(paid, Fen(fen));
    k.engine
        .complete_bill(&mut s, &mut k.printer)
        .unwrap()
        .outcome
}

/// As [`pay`] for 孙七, with jinan's backend going down after the bills were shown.
fn pay_while_down(k: &mut Kiosk, fen: u64, notes: &[u32]) -> BillOutcome {
    let mut s = k.engine.start_bill(SUN_QI, "3701").unwrap();
    k.engine.choose_bill_amount(&mut s, Fen(fen)).unwrap();
    for yuan in notes {
        k.validator.act(Action::Insert(*yuan));
    }
    k.engine
        .take_bill_cash(&mut s, &mut k.acceptor, PATIENCE, &mut |_| true)
        .unwrap();
    k.jinan.refuse_connections(true);
    k.engine
        .complete_bill(&mut s, &mut k.printer)
        .unwrap()
        .outcome
}

fn bill_states(k: &Kiosk) -> Vec<(u64, String)> {
    k.engine
        .journal()
        .bill_payments(selfvend_host::journal::BILL_STATES)
        .unwrap()
        .into_iter()
        .map(|p| (p.serial, p.state))
        .collect()
}

#[test]
fn a_postpaid_customer_pays_bills_in_cash_through_each_dialect_and_clearing_counts_them() {
    let mut k = Kiosk::new();
    let s = k.engine.start_bill(SUN_QI, "3701").unwrap();
    assert_eq!(s.account.customer_name, "孙七");
    assert_eq!(s.due(), Fen(18_100));
    let periods: Vec<_> = s.account.bills.iter().map(|b| b.period.as_str()).collect();
    assert_eq!(periods, ["2026-10", "2026-11"]);
    k.engine.cancel_bill(s, &mut k.printer).unwrap();

    // All of 孙七's bills, 181.00, through the fixed-text dialect.
    let outcome = pay(&mut k, SUN_QI, "3701", 18_100, &[100, 50, 20, 10, 1]);
    let BillOutcome::Paid { serial: 1, receipt } = &outcome else {
        panic!("{outcome:?}");
    };
    assert_eq!((receipt.amount, receipt.remaining), (Fen(18_100), Fen(0)));
    assert_eq!(
        k.printed_lines(),
        [
            "自助缴费凭证",
            "终端号：K-SALE-01",
            "流水号：00000001",
            "户名：孙七",
            "户号：3701200005",
            "应缴金额：181.00元",
            "实收金额：181.00元",
            "尚欠金额：0.00元",
            &format!("交易编号：{}", receipt.backend_payment_id),
            "缴费成功",
            "--- cut ---",
        ]
    );
    assert_eq!(k.jinan.ledger().owed_fen(SUN_QI), 0);

    // 150.00 of 吴芳's 156.30 through the JSON dialect: 6.30 is still owed.
    let outcome = pay(&mut k, WU_FANG, "4401", 15_000, &[100, 50]);
    let BillOutcome::Paid { serial: 2, receipt } = &outcome else {
        panic!("{outcome:?}");
    };
    assert_eq!(receipt.remaining, Fen(630));
    assert!(k.printed_lines().contains(&"尚欠金额：6.30元".to_string()));
    assert_eq!(
        k.guangzhou.ledger().bill_payments("K-SALE-01"),
        [(2, WU_FANG.to_string(), 15_000, "cash".to_string())]
    );
    assert_eq!(
        k.engine
            .journal()
            .counter("lifetime.bill_paid_fen")
            .unwrap(),
        33_100
    );

    // Clearing counts them as 现金缴费, each utility its own, and the box holds their notes.
    let report = clearing::report(k.engine.journal(), &k.config, None).unwrap();
    let cash_bills = report
        .businesses
        .iter()
        .find(|b| b.business == Business::CashBillPayment)
        .unwrap();
    assert_eq!(
        cash_bills.sold,
        Tally {
            count: 2,
            fen: Fen(33_100)
        }
    );
    let by_utility: Vec<_> = report
        .utilities
        .iter()
        .filter(|u| u.business == Business::CashBillPayment)
        .map(|u| (u.utility.as_str(), u.sold.fen))
        .collect();
    assert_eq!(by_utility, [("3701", Fen(18_100)), ("4401", Fen(15_000))]);
    assert_eq!(report.cash.expected, Fen(33_100));
    let printed: Vec<String> = report
        .receipt()
        .lines()
        .iter()
        .map(|l| l.text.clone())
        .collect();
    assert!(
        printed.contains(&"现金缴费：2笔 331.00元".to_string()),
        "{printed:?}"
    );
}

#[test]
fn a_bill_payment_whose_reply_is_lost_doubled_garbled_or_late_is_booked_once() {
    for fault in [
        Fault::DropReply,
        Fault::ReplyTwice,
        Fault::Garbage,
        Fault::Delay(Duration::from_millis(3_500)),
    ] {
        let mut k = Kiosk::new();
        k.jinan.inject(Call::BillPay, fault);
        let outcome = pay(&mut k, SUN_QI, "3701", 1_000, &[10]);
        assert!(
            matches!(outcome, BillOutcome::Paid { serial: 1, .. }),
            "{fault:?}: {outcome:?}"
        );
        assert_eq!(bill_states(&k), [(1, "paid".to_string())], "{fault:?}");
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(
            k.jinan.ledger().bill_payments("K-SALE-01"),
            [(1, SUN_QI.to_string(), 1_000, "cash".to_string())],
            "{fault:?}"
        );
    }
}

#[test]
fn a_refused_bill_payment_is_owed_back_and_refunded_only_by_an_operator() {
    let mut k = Kiosk::new();
    let mut s = k.engine.start_bill(SUN_QI, "3701").unwrap();
    k.engine.choose_bill_amount(&mut s, Fen(18_100)).unwrap();
    for yuan in [100, 50, 20, 10, 1] {
        k.validator.act(Action::Insert(yuan));
    }
    k.engine
        .take_bill_cash(&mut s, &mut k.acceptor, PATIENCE, &mut |_| true)
        .unwrap();
    // Meanwhile the bills are paid at the service hall: nothing is owed any more.
    let hall = selfvend_sim::reference_backend::Request::BillPay {
        terminal_id: "HALL".into(),
        kiosk_serial: 1,
        customer_number: SUN_QI.into(),
        amount_fen: 18_100,
        payment: selfvend_sim::reference_backend::ledger::Payment::Cash,
    };
    assert!(k.jinan.ledger().handle(&hall).is_ok());
    let done = k.engine.complete_bill(&mut s, &mut k.printer).unwrap();
    let BillOutcome::Refused { serial: 1, refusal } = &done.outcome else {
        panic!("{:?}", done.outcome);
    };
    assert_eq!(refusal.message, "该户没有待缴账单");
    assert!(
        k.printed_lines()
            .contains(&"缴费失败：该户没有待缴账单".to_string())
    );
    let items = k.engine.journal().manual_items(false).unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(
        items[0].reason,
        "退款 181.00 元：缴费被拒（该户没有待缴账单）（户号 3701200005）"
    );
    assert_eq!(
        k.engine.resolutions(&items[0]).unwrap(),
        [Resolution::Refund]
    );
    assert!(matches!(
        k.engine
            .resolve_manual(items[0].id, Resolution::Dismiss, "x"),
        Err(SaleError::DismissRefused(_))
    ));
    k.engine
        .resolve_manual(items[0].id, Resolution::Refund, "顾客到场核实")
        .unwrap();
    assert_eq!(bill_states(&k), [(1, "refunded".to_string())]);
    assert_eq!(
        k.engine.journal().counter("lifetime.refunded_fen").unwrap(),
        18_100
    );
}

#[test]
fn a_bill_payment_that_never_reached_the_backend_is_paid_again_then_handed_over() {
    let mut k = Kiosk::with_policy(&[("resell_max_attempts", "2")]);
    let outcome = pay_while_down(&mut k, 2_000, &[20]);
    assert!(
        matches!(outcome, BillOutcome::Pending { serial: 1, .. }),
        "{outcome:?}"
    );
    assert!(
        k.printed_lines()
            .contains(&"交易待处理：结果确认后自动补缴".to_string())
    );
    assert_eq!(bill_states(&k), [(1, "never-reached".to_string())]);
    // The first re-pay (补缴) finds the backend still down; the second goes through.
    k.engine.resell().unwrap();
    assert_eq!(bill_states(&k), [(1, "never-reached".to_string())]);
    k.jinan.refuse_connections(false);
    k.engine.resell().unwrap();
    assert_eq!(bill_states(&k), [(1, "paid".to_string())]);
    assert_eq!(k.jinan.ledger().owed_fen(SUN_QI), 18_100 - 2_000);

    // Another that never arrives, past the policy's tries, is an operator's: re-paid by hand.
    pay_while_down(&mut k, 1_000, &[10]);
    k.engine.resell().unwrap();
    k.engine.resell().unwrap();
    assert_eq!(bill_states(&k)[1], (2, "manual".to_string()));
    let items = k.engine.journal().manual_items(false).unwrap();
    assert_eq!(
        k.engine.resolutions(&items[0]).unwrap(),
        [Resolution::Resell, Resolution::Refund]
    );
    k.jinan.refuse_connections(false);
    k.engine
        .resolve_manual(items[0].id, Resolution::Resell, "电话核实")
        .unwrap();
    assert_eq!(bill_states(&k)[1], (2, "paid".to_string()));
    assert_eq!(k.jinan.ledger().bill_payments("K-SALE-01").len(), 2);
}

const BILL_FAILPOINTS: [&str; 7] = [
    "sale.after-payment-opened",
    "sale.after-banknote-escrowed",
    "sale.after-banknote-credited",
    "bill.after-intent",
    "bill.after-sent",
    "bill.after-answer",
    "sale.after-receipt-intent",
];

/// Runs the kiosk process paying 10.00 of 孙七's bills; `kill_at` names where it dies.
fn kiosk(w: &World, kill_at: Option<&str>, recover_only: bool) -> std::process::ExitStatus {
    let mut cmd = Command::new(selfvend_bin().with_file_name("selfvend-sale-child"));
    cmd.arg("--config")
        .arg(&w.config.path)
        .args(["--reader", &w.slot.reader])
        .args(["--validator", w.validator.path()])
        .args(["--printer", w.printer_sim.path()])
        .args([
            "--fen",
            "1000",
            "--bill-account",
            SUN_QI,
            "--utility",
            "3701",
        ]);
    if recover_only {
        cmd.arg("--recover-only");
    }
    if let Some(point) = kill_at {
        cmd.env("SELFVEND_KILL_AT", point);
    }
    cmd.status().expect("run selfvend-sale-child")
}

#[test]
fn killed_at_every_failpoint_of_a_bill_payment_no_money_is_lost_or_paid_twice() {
    for point in BILL_FAILPOINTS {
        let w = World::new();
        w.validator.act(Action::Insert(10));
        let status = kiosk(&w, Some(point), false);
        assert_eq!(status.signal(), Some(9), "{point}: not killed there");
        let status = kiosk(&w, None, true);
        assert!(status.success(), "{point}: recovery failed");

        let journal = Journal::open(&w.journal).unwrap();
        assert!(journal.verify().unwrap().problems.is_empty(), "{point}");
        let booked = w.jinan.ledger().bill_payments("K-SALE-01");
        let rows = journal
            .bill_payments(selfvend_host::journal::BILL_STATES)
            .unwrap();
        // Nothing is left between states, and the backend booked once what the journal paid.
        for p in &rows {
            assert!(
                !matches!(p.state.as_str(), "intent" | "pending" | "never-reached"),
                "{point}: {p:?}"
            );
        }
        let paid: Vec<_> = rows.iter().filter(|p| p.state == "paid").collect();
        assert_eq!(
            paid.len(),
            booked.len(),
            "{point}: journal {rows:?}, backend {booked:?}"
        );
        assert!(booked.len() <= 1, "{point}: {booked:?}");
        // Killed after the intent, the payment is finished by recovery: booked once.
        let before_the_intent = matches!(
            point,
            "sale.after-payment-opened"
                | "sale.after-banknote-escrowed"
                | "sale.after-banknote-credited"
        );
        assert_eq!(booked.len(), usize::from(!before_the_intent), "{point}");
        // Conservation: every fen taken is in a bill payment or handed to an operator.
        let taken = journal.counter("lifetime.cash_fen").unwrap() as u64;
        let in_bills = sql(
            &w.journal,
            "SELECT coalesce(sum(paid_fen), 0) FROM bill_payments",
        );
        let handed = sql(
            &w.journal,
            "SELECT coalesce(sum(paid_fen), 0) FROM payments WHERE state = 'abandoned'",
        );
        assert_eq!(taken, in_bills + handed, "{point}: money unaccounted for");
        let credited =
            point != "sale.after-payment-opened" && point != "sale.after-banknote-escrowed";
        assert_eq!(taken, if credited { 1000 } else { 0 }, "{point}");
        let unacknowledged = u64::from(point == "sale.after-banknote-credited");
        assert_eq!(
            w.validator.tally().credited.len() as u64 + unacknowledged,
            taken / 1000,
            "{point}: the validator and the journal disagree"
        );
        if handed > 0 {
            // The operator is told it was a bill's money, by the account it was for.
            let items = journal.manual_items(false).unwrap();
            let reasons: Vec<_> = items
                .iter()
                .filter(|i| i.payment_id.is_some())
                .map(|i| i.reason.as_str())
                .collect();
            assert_eq!(
                reasons,
                ["顾客已投币 10.00 元，未缴费（户号 3701200005）：请退款或到营业厅缴费"],
                "{point}"
            );
        }
        if point == "sale.after-banknote-escrowed" {
            let items = journal.manual_items(false).unwrap();
            assert_eq!(items.len(), 1, "{point}");
            assert_eq!(items[0].caught_fen, Some(1000), "{point}");
            assert_eq!(items[0].card_serial.as_deref(), Some(SUN_QI), "{point}");
            assert!(
                items[0].reason.contains("（户号 3701200005）"),
                "{point}: {}",
                items[0].reason
            );
        }
        // Clearing's cash box expects what was taken.
        let report = clearing::report(&journal, &w.config, None).unwrap();
        assert_eq!(report.cash.expected, Fen(taken), "{point}");
    }
}

#[test]
fn a_bill_payment_whose_outcome_stays_unknown_goes_to_an_operator_once_and_closes_on_the_answer() {
    let mut k = Kiosk::with_policy(&[("unanswered_sale_alert_secs", "1")]);
    // Booked, its answer lost, and asked about it answers garbage; then it is out of reach.
    k.jinan.inject(Call::BillPay, Fault::DropReply);
    k.jinan.inject(Call::BillPaymentStatus, Fault::Garbage);
    let outcome = pay(&mut k, SUN_QI, "3701", 1_000, &[10]);
    assert!(
        matches!(outcome, BillOutcome::Pending { serial: 1, .. }),
        "{outcome:?}"
    );
    k.jinan.refuse_connections(true);
    k.engine.recover().unwrap();
    assert!(k.engine.journal().manual_items(false).unwrap().is_empty());
    std::thread::sleep(Duration::from_millis(1100));
    k.engine.recover().unwrap();
    k.engine.recover().unwrap();
    let items = k.engine.journal().manual_items(false).unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0].bill_serial, Some(1));
    assert_eq!(
        items[0].reason,
        "缴费 00000001（10.00 元，户号 3701200005）的结果长时间未知：后台未答复，本机继续查询；\
         请联系供电单位核实，核实前不得退款"
    );
    // No refund without the backend's word; once it answers, the item closes.
    assert!(k.engine.resolutions(&items[0]).unwrap().is_empty());
    k.jinan.refuse_connections(false);
    k.engine.recover().unwrap();
    assert_eq!(bill_states(&k), [(1, "paid".to_string())]);
    assert!(k.engine.journal().manual_items(false).unwrap().is_empty());
}
