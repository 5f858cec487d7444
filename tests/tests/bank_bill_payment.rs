//! Bill payment (缴费) by bank card on the rigs, through both dialects: 王芳's UnionPay card read
//! through pcscd, her PIN on the PIN pad, the debit at the acquirer, then `bill-pay` at the
//! account's backend. The bank, the backend, the journal, clearing and settlement agree. A
//! debit with no answer is reversed and pays no bill; a bill the backend never got is paid
//! again (补缴), never reversed; a refusal is refunded only by an operator; and the kiosk killed
//! at every failpoint of a bank-card bill payment leaves no debit without its bill or reversal.

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};

use selfvend_host::clearing::{self, Business, Tally};
use selfvend_host::journal::{BILL_STATES, Journal};
use selfvend_host::money::Fen;
use selfvend_host::payment::DeclineCode;
use selfvend_host::sale::{BillOutcome, BillSession, CardPayment, Resolution, SaleError};
use selfvend_sim::acquirer::{Fault, MessageType, PurchaseState};
use selfvend_sim::pin_pad::PadAction;
use selfvend_sim::reference_backend::Request;
use selfvend_sim::reference_backend::ledger::Payment;
use selfvend_sim::unionpay_card::UnionPayCard;
use selfvend_sim::vpcd::Inserted;
use selfvend_tests::bank_rig::{BALANCE_FEN, Bank, BankSims, PAN, PIN, read_bank_card};
use selfvend_tests::kiosk_rig::{Kiosk, OPERATOR_PIN, WAIT, World};
use selfvend_tests::{ReaderSlot, selfvend_bin, selfvend_with, text};

/// 孙七 (jinan, fixed-text): 181.00 owed.
const SUN_QI: &str = "3701200005";
/// 吴芳 (guangzhou, JSON): 156.30 owed.
const WU_FANG: &str = "4401200005";

/// A kiosk signed on with its acquirer (batch 1).
fn ready() -> (Kiosk, Bank) {
    let mut k = Kiosk::new();
    let bank = Bank::new(&k.plugins);
    assert_eq!(k.engine.sign_on(&bank.link).unwrap(), 1);
    (k, bank)
}

/// `account`'s bills, everything owed chosen, paid by 王芳's card with `pin`.
fn debit(
    k: &mut Kiosk,
    bank: &Bank,
    account: &str,
    utility: &str,
    pin: &str,
) -> (BillSession, Result<CardPayment, SaleError>) {
    let mut s = k.engine.start_bill(account, utility).unwrap();
    let owed = s.account.total;
    k.engine.choose_bill_amount(&mut s, owed).unwrap();
    let bank_card = read_bank_card(k);
    let pin = bank.enter_pin(&bank_card, pin);
    let paid = k
        .engine
        .pay_bill_by_card(&mut s, &bank.link, &bank_card, Some(&pin));
    (s, paid)
}

fn bill_states(journal: &Journal) -> Vec<(u64, String, String, u64)> {
    journal
        .bill_payments(BILL_STATES)
        .unwrap()
        .into_iter()
        .map(|p| (p.serial, p.payment, p.state, p.paid_fen))
        .collect()
}

#[test]
fn a_postpaid_customer_pays_bills_by_bank_card_through_each_dialect_and_the_books_agree() {
    let (mut k, bank) = ready();

    // All of 孙七's 181.00 through the fixed-text dialect: a card pays exactly what is owed.
    let (mut s, paid) = debit(&mut k, &bank, SUN_QI, "3701", PIN);
    assert_eq!(paid.unwrap(), CardPayment::Approved { serial: 1 });
    assert_eq!(s.paid(), Fen(18_100));
    // Paid by card, the session is not cancelled and takes no banknotes.
    assert!(matches!(
        k.engine.take_bill_cash(
            &mut s,
            &mut k.acceptor,
            std::time::Duration::ZERO,
            &mut |_| true
        ),
        Err(SaleError::WrongStep(_))
    ));
    let done = k.engine.complete_bill(&mut s, &mut k.printer).unwrap();
    let BillOutcome::Paid { serial: 1, receipt } = &done.outcome else {
        panic!("{:?}", done.outcome);
    };
    let lines = k.printed_lines();
    let rrn = lines
        .iter()
        .find_map(|l| l.strip_prefix("参考号："))
        .unwrap_or_else(|| panic!("no reference number in {lines:?}"));
    assert_eq!(
        lines,
        [
            "自助缴费凭证",
            "终端号：K-SALE-01",
            "流水号：00000001",
            "户名：孙七",
            "户号：3701200005",
            "应缴金额：181.00元",
            "实收金额：181.00元",
            "银行卡支付：622202*********0128",
            &format!("参考号：{rrn}"),
            "尚欠金额：0.00元",
            &format!("交易编号：{}", receipt.backend_payment_id),
            "缴费成功",
            "--- cut ---",
        ]
    );
    assert_eq!(k.jinan.ledger().owed_fen(SUN_QI), 0);
    assert_eq!(k.jinan.ledger().prepaid_fen(SUN_QI), 0);
    assert_eq!(
        k.jinan.ledger().bill_payments("K-SALE-01"),
        [(1, SUN_QI.to_string(), 18_100, "bank-card".to_string())]
    );

    // All of 吴芳's 156.30 through the JSON dialect, to the fen.
    let (mut s, paid) = debit(&mut k, &bank, WU_FANG, "4401", PIN);
    assert_eq!(paid.unwrap(), CardPayment::Approved { serial: 2 });
    let done = k.engine.complete_bill(&mut s, &mut k.printer).unwrap();
    assert!(
        matches!(done.outcome, BillOutcome::Paid { serial: 2, .. }),
        "{:?}",
        done.outcome
    );
    assert_eq!(k.guangzhou.ledger().owed_fen(WU_FANG), 0);
    assert_eq!(
        k.guangzhou.ledger().bill_payments("K-SALE-01"),
        [(2, WU_FANG.to_string(), 15_630, "bank-card".to_string())]
    );

    // The bank holds both, each debit recorded with its bill payment; no cash came in.
    assert_eq!(bank.acquirer.balance(PAN), Some(BALANCE_FEN - 33_730));
    let journal = k.engine.journal();
    let debits: Vec<_> = journal
        .debits(&["approved"])
        .unwrap()
        .into_iter()
        .map(|d| (d.amount_fen, d.serial, d.bill_serial, d.card_json))
        .collect();
    assert_eq!(
        debits,
        [(18_100, None, Some(1), None), (15_630, None, Some(2), None)]
    );
    assert_eq!(
        bill_states(journal),
        [
            (1, "bank-card".into(), "paid".into(), 18_100),
            (2, "bank-card".into(), "paid".into(), 15_630)
        ]
    );
    assert_eq!(
        journal.counter("lifetime.bank_debited_fen").unwrap(),
        33_730
    );
    assert_eq!(journal.counter("lifetime.bill_paid_fen").unwrap(), 33_730);
    assert_eq!(journal.counter("lifetime.cash_fen").unwrap(), 0);
    // The operator's list says what each debit paid for.
    let listed = text(&selfvend_with(&k.config.path, &["bank", "debits", "--all"]).stdout);
    let lines: Vec<_> = listed.lines().collect();
    assert_eq!(lines.len(), 2, "{listed}");
    assert!(lines[0].ends_with("approved  bill 1"), "{listed}");
    assert!(lines[1].ends_with("approved  bill 2"), "{listed}");

    // Clearing counts them as 银行卡缴费, each utility its own, and expects no cash.
    let report = clearing::report(journal, &k.config, None).unwrap();
    let bank_bills = report
        .businesses
        .iter()
        .find(|b| b.business == Business::BankCardBillPayment)
        .unwrap();
    assert_eq!(
        bank_bills.sold,
        Tally {
            count: 2,
            fen: Fen(33_730)
        }
    );
    let by_utility: Vec<_> = report
        .utilities
        .iter()
        .filter(|u| u.business == Business::BankCardBillPayment)
        .map(|u| (u.utility.as_str(), u.sold.fen))
        .collect();
    assert_eq!(by_utility, [("3701", Fen(18_100)), ("4401", Fen(15_630))]);
    assert_eq!(report.cash.expected, Fen(0));

    // The bank batch settles with both debits in it.
    let settled = k.engine.settle(&bank.link).unwrap();
    assert!(settled.balanced);
    assert_eq!(
        (settled.acquirer_count, settled.acquirer_amount),
        (2, Fen(33_730))
    );

    // The period closes and each backend's books agree, business type by business type.
    let mut journal = Journal::open(&k.journal).unwrap();
    clearing::start(&mut journal, &k.config, OPERATOR_PIN).unwrap();
    clearing::box_removed(&mut journal).unwrap();
    clearing::count(&mut journal, Fen(0)).unwrap();
    clearing::box_replaced(&mut journal).unwrap();
    let ended = clearing::end(&mut journal, &k.config, OPERATOR_PIN, None, &k.dialects()).unwrap();
    for answer in &ended.reconciliations {
        let r = answer.result.as_ref().unwrap();
        assert!(r.matched, "{}: {:?}", answer.backend, r.differences);
    }
    let printed: Vec<String> = ended
        .report
        .receipt()
        .lines()
        .iter()
        .map(|l| l.text.clone())
        .collect();
    assert!(
        printed.contains(&"银行卡缴费：2笔 337.30元".to_string()),
        "{printed:?}"
    );
}

#[test]
fn a_declined_card_pays_nothing_and_the_customer_may_try_again() {
    let (mut k, bank) = ready();
    let (mut s, paid) = debit(&mut k, &bank, SUN_QI, "3701", "000000");
    let CardPayment::Declined(decline) = paid.unwrap() else {
        panic!("a wrong PIN was approved");
    };
    assert_eq!(
        (decline.code, decline.message.as_str()),
        (DeclineCode::WrongPin, "密码错误")
    );
    assert_eq!(s.paid(), Fen(0));
    assert!(bill_states(k.engine.journal()).is_empty());
    assert_eq!(bank.acquirer.balance(PAN), Some(BALANCE_FEN));

    // The same session pays with the right PIN.
    let bank_card = read_bank_card(&k);
    let pin = bank.enter_pin(&bank_card, PIN);
    let paid = k
        .engine
        .pay_bill_by_card(&mut s, &bank.link, &bank_card, Some(&pin))
        .unwrap();
    assert_eq!(paid, CardPayment::Approved { serial: 1 });
    // Paid, it is neither cancelled nor paid twice.
    let again = k
        .engine
        .pay_bill_by_card(&mut s, &bank.link, &bank_card, Some(&pin));
    assert!(matches!(again, Err(SaleError::WrongStep(_))), "{again:?}");
    let done = k.engine.complete_bill(&mut s, &mut k.printer).unwrap();
    assert!(matches!(done.outcome, BillOutcome::Paid { serial: 1, .. }));
    assert!(matches!(
        k.engine.cancel_bill(s, &mut k.printer),
        Err(SaleError::WrongStep(_))
    ));
    assert_eq!(bank.acquirer.balance(PAN), Some(BALANCE_FEN - 18_100));
}

#[test]
fn a_bill_debit_with_no_answer_is_reversed_and_pays_no_bill() {
    let (mut k, bank) = ready();
    // The acquirer debits and the answer is lost: the kiosk reverses it at once.
    bank.acquirer
        .inject(MessageType::Purchase, Fault::DropReply);
    let (s, paid) = debit(&mut k, &bank, SUN_QI, "3701", PIN);
    let err = paid.unwrap_err();
    assert!(
        matches!(err, SaleError::DebitReversed(Fen(18_100))),
        "{err}"
    );
    assert_eq!(s.paid(), Fen(0));
    k.engine.cancel_bill(s, &mut k.printer).unwrap();

    assert_eq!(bank.acquirer.balance(PAN), Some(BALANCE_FEN));
    let states: Vec<PurchaseState> = bank
        .acquirer
        .purchases()
        .into_iter()
        .map(|p| p.state)
        .collect();
    assert_eq!(states, [PurchaseState::Reversed]);
    assert_eq!(k.engine.journal().debits(&["reversed"]).unwrap().len(), 1);
    // No bill was paid, at the kiosk or at the backend.
    assert!(bill_states(k.engine.journal()).is_empty());
    assert!(k.jinan.ledger().bill_payments("K-SALE-01").is_empty());
    assert_eq!(k.jinan.ledger().owed_fen(SUN_QI), 18_100);
}

#[test]
fn a_bill_the_backend_never_got_after_the_debit_is_paid_again_never_reversed() {
    let (mut k, bank) = ready();
    let (mut s, paid) = debit(&mut k, &bank, SUN_QI, "3701", PIN);
    paid.unwrap();
    k.jinan.refuse_connections(true);
    let done = k.engine.complete_bill(&mut s, &mut k.printer).unwrap();
    assert!(
        matches!(done.outcome, BillOutcome::Pending { serial: 1, .. }),
        "{:?}",
        done.outcome
    );
    assert!(
        k.printed_lines()
            .contains(&"交易待处理：结果确认后自动补缴".to_string())
    );
    assert_eq!(
        bill_states(k.engine.journal()),
        [(1, "bank-card".into(), "never-reached".into(), 18_100)]
    );

    // Back up, the payment is made again under its own serial; the debit stands.
    k.jinan.refuse_connections(false);
    k.restart();
    k.engine.recover_debits(&bank.link).unwrap();
    assert_eq!(k.engine.resell().unwrap(), [(1, "paid".to_string())]);
    assert_eq!(
        bill_states(k.engine.journal()),
        [(1, "bank-card".into(), "paid".into(), 18_100)]
    );
    assert_eq!(
        k.jinan.ledger().bill_payments("K-SALE-01"),
        [(1, SUN_QI.to_string(), 18_100, "bank-card".to_string())]
    );
    assert_eq!(bank.acquirer.reversals_received(), 0);
    assert_eq!(bank.acquirer.balance(PAN), Some(BALANCE_FEN - 18_100));
    assert_eq!(k.engine.journal().debits(&["approved"]).unwrap().len(), 1);
}

#[test]
fn a_refused_bank_card_bill_payment_is_refunded_only_by_an_operator() {
    let (mut k, bank) = ready();
    let (mut s, paid) = debit(&mut k, &bank, SUN_QI, "3701", PIN);
    paid.unwrap();
    // Meanwhile the bills are paid at the service hall: nothing is owed any more.
    let hall = Request::BillPay {
        terminal_id: "HALL".into(),
        kiosk_serial: 1,
        customer_number: SUN_QI.into(),
        amount_fen: 18_100,
        payment: Payment::Cash,
    };
    assert!(k.jinan.ledger().handle(&hall).is_ok());
    let done = k.engine.complete_bill(&mut s, &mut k.printer).unwrap();
    assert!(
        matches!(&done.outcome, BillOutcome::Refused { serial: 1, refusal }
                 if refusal.message == "该户没有待缴账单"),
        "{:?}",
        done.outcome
    );
    // The debit stands (the bank took it): the refund is an operator's, never a reversal.
    assert_eq!(bank.acquirer.reversals_received(), 0);
    assert_eq!(bank.acquirer.balance(PAN), Some(BALANCE_FEN - 18_100));
    let items = k.engine.journal().manual_items(false).unwrap();
    assert_eq!(items.len(), 1);
    let lines = k.printed_lines();
    let rrn = lines
        .iter()
        .find_map(|l| l.strip_prefix("参考号："))
        .unwrap_or_else(|| panic!("no reference number in {lines:?}"));
    assert_eq!(
        items[0].reason,
        format!(
            "退款 181.00 元：缴费被拒（该户没有待缴账单）（户号 3701200005，\
             银行卡 622202*********0128，参考号 {rrn}）"
        )
    );
    assert_eq!(
        k.engine.resolutions(&items[0]).unwrap(),
        [Resolution::Refund]
    );
    k.engine
        .resolve_manual(items[0].id, Resolution::Refund, "paid back at the counter")
        .unwrap();
    assert_eq!(
        bill_states(k.engine.journal()),
        [(1, "bank-card".into(), "refunded".into(), 18_100)]
    );
}

const BANK_BILL_FAILPOINTS: [&str; 6] = [
    "bank.after-debit-intent",
    "bank.after-debit-approved",
    "bill.after-intent",
    "bill.after-sent",
    "bill.after-answer",
    "sale.after-receipt-intent",
];

/// Runs the kiosk process paying all of 孙七's 181.00 by the bank card in `bank_reader`
/// (`None`: only recovering); `kill_at` names where it dies.
fn kiosk(
    w: &World,
    config: &Path,
    bank_reader: Option<&str>,
    kill_at: Option<&str>,
) -> std::process::ExitStatus {
    kiosk_with(w, config, bank_reader, kill_at, &[])
}

/// As [`kiosk`], with `extra` arguments.
fn kiosk_with(
    w: &World,
    config: &Path,
    bank_reader: Option<&str>,
    kill_at: Option<&str>,
    extra: &[&str],
) -> std::process::ExitStatus {
    let mut cmd = Command::new(selfvend_bin().with_file_name("selfvend-sale-child"));
    cmd.arg("--config")
        .arg(config)
        .args(["--reader", &w.slot.reader])
        .args(["--validator", w.validator.path()])
        .args(["--printer", w.printer_sim.path()])
        .args([
            "--fen",
            "18100",
            "--bill-account",
            SUN_QI,
            "--utility",
            "3701",
        ])
        .args(extra);
    match bank_reader {
        Some(reader) => cmd.args(["--bank-reader", reader]),
        None => cmd.arg("--recover-only"),
    };
    if let Some(point) = kill_at {
        cmd.env("SELFVEND_KILL_AT", point);
    }
    cmd.status().expect("run selfvend-sale-child")
}

/// The bank's far ends beside world `w`, the kiosk's config with them, and 王芳's bank card
/// held in a second reader, her PIN about to be typed.
fn bank_kiosk(w: &World) -> (BankSims, std::path::PathBuf, ReaderSlot, Inserted) {
    // The kiosk process opens the PIN pad (exclusively); this one does not.
    let bank = BankSims::start(&w.plugins);
    // A reversal of a purchase the acquirer never saw is answered 25 (no such original).
    bank.acquirer.answer_unknown_reversals_with("25");
    let config = bank.kiosk_config(w);
    let bank_slot = ReaderSlot::take();
    let bank_card = Inserted::insert(
        Arc::new(Mutex::new(UnionPayCard::wang_fang())),
        bank_slot.address,
    )
    .unwrap();
    assert!(w.readers.wait(&bank_slot.reader, true, WAIT).unwrap());
    bank.pad_sim.act(&PadAction::pin(PIN));
    (bank, config, bank_slot, bank_card)
}

#[test]
fn killed_at_every_failpoint_of_a_bank_card_bill_payment_no_debit_is_left_without_its_bill() {
    for point in BANK_BILL_FAILPOINTS {
        let w = World::new();
        let (bank, config, bank_slot, _bank_card) = bank_kiosk(&w);

        let status = kiosk(&w, &config, Some(&bank_slot.reader), Some(point));
        assert_eq!(status.signal(), Some(9), "{point}: not killed there");
        let status = kiosk(&w, &config, None, None);
        assert!(status.success(), "{point}: recovery failed");

        let journal = Journal::open(&w.journal).unwrap();
        assert!(journal.verify().unwrap().problems.is_empty(), "{point}");
        // No debit is left undecided, and no bill payment between states.
        assert!(
            journal.debits(&["intent", "reversing"]).unwrap().is_empty(),
            "{point}: a debit is still open"
        );
        let before_the_debit = point == "bank.after-debit-intent";
        let booked = w.jinan.ledger().bill_payments("K-SALE-01");
        let debited = bank
            .acquirer
            .purchases()
            .iter()
            .filter(|p| p.state == PurchaseState::Approved)
            .count();
        if before_the_debit {
            assert!(bill_states(&journal).is_empty(), "{point}");
            assert!(booked.is_empty(), "{point}: {booked:?}");
            assert_eq!(bank.acquirer.balance(PAN), Some(BALANCE_FEN), "{point}");
            assert_eq!(journal.debits(&["reversed"]).unwrap().len(), 1, "{point}");
            assert_eq!(debited, 0, "{point}");
            assert_eq!(w.jinan.ledger().owed_fen(SUN_QI), 18_100, "{point}");
            continue;
        }
        // Debited once, paid once, and the debit is recorded with its bill payment.
        assert_eq!(
            bill_states(&journal),
            [(1, "bank-card".into(), "paid".into(), 18_100)],
            "{point}"
        );
        assert_eq!(
            booked,
            [(1, SUN_QI.to_string(), 18_100, "bank-card".to_string())],
            "{point}"
        );
        assert_eq!(
            bank.acquirer.balance(PAN),
            Some(BALANCE_FEN - 18_100),
            "{point}"
        );
        assert_eq!(debited, 1, "{point}");
        assert_eq!(bank.acquirer.reversals_received(), 0, "{point}");
        let approved = journal.debits(&["approved"]).unwrap();
        assert_eq!(
            approved.iter().map(|d| d.bill_serial).collect::<Vec<_>>(),
            [Some(1)],
            "{point}"
        );
        assert_eq!(w.jinan.ledger().owed_fen(SUN_QI), 0, "{point}");
        assert!(
            journal.manual_items(false).unwrap().is_empty(),
            "{point}: nothing is left for an operator"
        );
    }
}

/// The customer takes their bank card back slowly after the debit, and the kiosk is killed as it
/// sends the bill payment: "no such payment" right after the restart is no proof it never
/// arrives, however long ago the debit was, so it is neither paid again nor refundable yet.
#[test]
fn a_card_bill_sent_after_a_slow_customer_is_not_taken_as_never_reached_while_in_flight() {
    let w = World::with_policy(&[("unknown_outcome_settle_secs", "2")]);
    let (bank, config, bank_slot, _bank_card) = bank_kiosk(&w);
    let status = kiosk_with(
        &w,
        &config,
        Some(&bank_slot.reader),
        Some("bill.after-intent"),
        &["--dawdle-ms", "2500"],
    );
    assert_eq!(status.signal(), Some(9));
    assert!(kiosk(&w, &config, None, None).success());
    let journal = Journal::open(&w.journal).unwrap();
    assert_eq!(
        bill_states(&journal),
        [(1, "bank-card".into(), "intent".into(), 18_100)]
    );
    assert!(w.jinan.ledger().bill_payments("K-SALE-01").is_empty());

    // Once it cannot be in flight any more, "no such payment" is proof: paid again, once.
    std::thread::sleep(std::time::Duration::from_millis(2100));
    assert!(kiosk(&w, &config, None, None).success());
    assert_eq!(
        bill_states(&journal),
        [(1, "bank-card".into(), "paid".into(), 18_100)]
    );
    assert_eq!(w.jinan.ledger().bill_payments("K-SALE-01").len(), 1);
    assert_eq!(bank.acquirer.balance(PAN), Some(BALANCE_FEN - 18_100));
}
