//! The bank-card sale end to end on the rigs: 王芳's UnionPay card read through pcscd, her PIN
//! typed on the PIN pad (pty), the debit at the acquirer simulator (ISO 8583 over TCP), then the
//! utility's backend sale, the meter card write and the receipt. Declines, a debit with no
//! answer (reversed until acknowledged) and a backend failure after the debit (re-sold).

use std::time::Duration;

use selfvend_host::backend::Purchase;
use selfvend_host::clearing::{self, Business, Tally};
use selfvend_host::money::Fen;
use selfvend_host::payment::DeclineCode;
use selfvend_host::sale::{CardPayment, Outcome, Resolution, SaleError};
use selfvend_sim::acquirer::{Fault, MessageType, PurchaseState};
use selfvend_sim::meter::MeterInsert;
use selfvend_tests::bank_rig::{BALANCE_FEN, Bank, PAN, PIN, read_bank_card};
use selfvend_tests::kiosk_rig::{Issue, Kiosk, TestCard, cpu_card, memory_card, sale_states};

/// A kiosk signed on with its acquirer (batch 1), and a meter card issued.
fn ready(issue: Issue) -> (Kiosk, Bank, Box<dyn TestCard>) {
    let mut k = Kiosk::new();
    let bank = Bank::new(&k.plugins);
    assert_eq!(k.engine.sign_on(&bank.link).unwrap(), 1);
    let card = issue(&k);
    (k, bank, card)
}

fn journal_text(k: &Kiosk) -> String {
    k.engine
        .journal()
        .entries(1, 10_000)
        .unwrap()
        .into_iter()
        .map(|e| format!("{} {}\n", e.kind, e.body))
        .collect()
}

#[test]
fn a_bank_card_sale_for_each_meter_card_type() {
    for issue in [memory_card as Issue, cpu_card] {
        let (mut k, bank, card) = ready(issue);
        let bank_card = read_bank_card(&k);
        let _inserted = card.insert(&k);
        let mut s = k.engine.start(k.connect()).unwrap();
        k.engine.quote(&mut s, Purchase::Money(Fen(5000))).unwrap();
        let pin = bank.enter_pin(&bank_card, PIN);
        let paid = k
            .engine
            .pay_by_card(&mut s, &bank.link, &bank_card, Some(&pin))
            .unwrap();
        assert_eq!(paid, CardPayment::Approved { serial: 1 });
        // Paid by card, the session takes no cash.
        assert!(matches!(
            k.engine
                .take_cash(&mut s, &mut k.acceptor, Duration::from_millis(10)),
            Err(SaleError::WrongStep(_))
        ));
        let done = k.engine.complete(&mut s, &mut k.printer).unwrap();
        assert!(matches!(done.outcome, Outcome::Credited { serial: 1, .. }));
        drop(s);

        let lines = k.printed_lines();
        for line in ["实收金额：50.00元", "银行卡支付：622202*********0128"] {
            assert!(lines.iter().any(|l| l == line), "{line} in {lines:?}");
        }
        assert!(lines.iter().any(|l| l.starts_with("参考号：")), "{lines:?}");
        // The bank, the utility and the card each hold exactly this sale.
        assert_eq!(bank.acquirer.balance(PAN), Some(BALANCE_FEN - 5000));
        assert_eq!(card.backend(&k).ledger().sale_count("K-SALE-01"), 1);
        assert_eq!(card.purchase_count(), 1);
        assert_eq!(sale_states(&k), [(1, "written".to_string())]);
        let journal = k.engine.journal();
        let debits = journal.debits(&["approved"]).unwrap();
        assert_eq!(debits.len(), 1);
        assert_eq!((debits[0].serial, debits[0].amount_fen), (Some(1), 5000));
        // An approved, sold debit forgets the card; the journal never held a clear PAN.
        assert_eq!(debits[0].card_json, None);
        assert!(!journal_text(&k).contains(PAN));
        assert_eq!(journal.counter("lifetime.bank_debited_fen").unwrap(), 5000);
        assert_eq!(journal.counter("lifetime.cash_fen").unwrap(), 0);
        // Clearing totals bank-card sales as their own business.
        let report = clearing::report(journal, &k.config, None).unwrap();
        let bank_sales = report
            .businesses
            .iter()
            .find(|b| b.business == Business::BankCardSale)
            .unwrap();
        assert_eq!(
            bank_sales.sold,
            Tally {
                count: 1,
                fen: Fen(5000)
            }
        );
        assert_eq!(report.cash.expected, Fen(0));
    }
}

#[test]
fn declines_end_cleanly_and_the_customer_may_try_again() {
    let (mut k, bank, card) = ready(memory_card);
    let bank_card = read_bank_card(&k);
    let _inserted = card.insert(&k);
    let mut s = k.engine.start(k.connect()).unwrap();
    k.engine.quote(&mut s, Purchase::Money(Fen(2000))).unwrap();

    let wrong = bank.enter_pin(&bank_card, "000000");
    match k
        .engine
        .pay_by_card(&mut s, &bank.link, &bank_card, Some(&wrong))
        .unwrap()
    {
        CardPayment::Declined(d) => {
            assert_eq!(
                (d.code, d.message.as_str()),
                (DeclineCode::WrongPin, "密码错误")
            )
        }
        other => panic!("expected a decline, got {other:?}"),
    }
    // Nothing to handle: no sale, no operator item, nothing debited.
    assert!(sale_states(&k).is_empty());
    assert!(k.engine.journal().manual_items(false).unwrap().is_empty());
    assert_eq!(k.engine.journal().debits(&["declined"]).unwrap().len(), 1);
    assert_eq!(bank.acquirer.balance(PAN), Some(BALANCE_FEN));

    let right = bank.enter_pin(&bank_card, PIN);
    let paid = k
        .engine
        .pay_by_card(&mut s, &bank.link, &bank_card, Some(&right))
        .unwrap();
    assert_eq!(paid, CardPayment::Approved { serial: 1 });
    k.engine.complete(&mut s, &mut k.printer).unwrap();
    drop(s);
    assert_eq!(bank.acquirer.balance(PAN), Some(BALANCE_FEN - 2000));

    // A blocked card is declined the same clean way (the meter took the first credit).
    assert!(matches!(
        card.carry_to_meter(&k),
        MeterInsert::Credited { .. }
    ));
    bank.acquirer.block(PAN);
    let mut s2 = k.engine.start(k.connect()).unwrap();
    k.engine.quote(&mut s2, Purchase::Money(Fen(2000))).unwrap();
    let pin = bank.enter_pin(&bank_card, PIN);
    assert!(matches!(
        k.engine.pay_by_card(&mut s2, &bank.link, &bank_card, Some(&pin)),
        Ok(CardPayment::Declined(d)) if d.code == DeclineCode::CardBlocked
    ));
    assert_eq!(sale_states(&k), [(1, "written".to_string())]);
}

#[test]
fn a_debit_with_no_answer_is_reversed_until_acknowledged_and_never_taken_twice() {
    let (mut k, bank, card) = ready(cpu_card);
    let bank_card = read_bank_card(&k);
    let _inserted = card.insert(&k);
    let mut s = k.engine.start(k.connect()).unwrap();
    k.engine.quote(&mut s, Purchase::Money(Fen(3000))).unwrap();
    // The acquirer debits and the answer is lost; it reverses at once, and that answer is
    // lost too: the kiosk cannot know, so the reversal stays to be sent again.
    bank.acquirer
        .inject(MessageType::Purchase, Fault::DropReply);
    bank.acquirer
        .inject(MessageType::Reversal, Fault::DropReply);
    let pin = bank.enter_pin(&bank_card, PIN);
    let err = k
        .engine
        .pay_by_card(&mut s, &bank.link, &bank_card, Some(&pin))
        .unwrap_err();
    assert!(matches!(err, SaleError::DebitReversed(Fen(3000))), "{err}");
    assert_eq!(
        err.to_string(),
        "the bank did not confirm the debit of 30.00; it is being reversed and nothing is taken \
         (try again, or pay in cash)"
    );
    assert_eq!(bank.acquirer.balance(PAN), Some(BALANCE_FEN));
    let reversing = k.engine.journal().debits(&["reversing"]).unwrap();
    assert_eq!(reversing.len(), 1);
    assert_eq!(reversing[0].reversal_attempts, 1);
    assert!(sale_states(&k).is_empty());
    drop(s);

    // At the next start the reversal goes again, and is acknowledged.
    k.restart();
    assert_eq!(k.engine.recover_debits(&bank.link).unwrap(), 0);
    assert_eq!(bank.acquirer.balance(PAN), Some(BALANCE_FEN));
    let reversed = k.engine.journal().debits(&["reversed"]).unwrap();
    assert_eq!(reversed.len(), 1);
    assert_eq!(reversed[0].card_json, None);
    assert_eq!(bank.acquirer.reversals_received(), 2);
    let states: Vec<PurchaseState> = bank
        .acquirer
        .purchases()
        .into_iter()
        .map(|p| p.state)
        .collect();
    assert_eq!(states, [PurchaseState::Reversed]);
    // Nothing is left to send.
    assert_eq!(k.engine.forward_reversals(&bank.link).unwrap(), 0);
    assert_eq!(bank.acquirer.reversals_received(), 2);
}

#[test]
fn a_backend_failure_after_the_debit_is_re_sold_never_reversed() {
    let (mut k, bank, card) = ready(memory_card);
    let bank_card = read_bank_card(&k);
    let inserted = card.insert(&k);
    let mut s = k.engine.start(k.connect()).unwrap();
    k.engine.quote(&mut s, Purchase::Money(Fen(1000))).unwrap();
    let pin = bank.enter_pin(&bank_card, PIN);
    k.engine
        .pay_by_card(&mut s, &bank.link, &bank_card, Some(&pin))
        .unwrap();
    card.backend(&k).refuse_connections(true);
    let done = k.engine.complete(&mut s, &mut k.printer).unwrap();
    assert!(matches!(done.outcome, Outcome::Pending { serial: 1, .. }));
    assert!(
        k.printed_lines()
            .contains(&"交易待处理：结果确认后自动补售电".to_string())
    );
    drop((s, inserted));

    card.backend(&k).refuse_connections(false);
    assert_eq!(k.engine.resell().unwrap(), [(1, "granted".to_string())]);
    let _inserted = card.insert(&k);
    let s = k.engine.start(k.connect()).unwrap();
    assert_eq!(s.rewritten, Some(1));
    assert_eq!(sale_states(&k), [(1, "written".to_string())]);
    assert_eq!(bank.acquirer.reversals_received(), 0);
    assert_eq!(bank.acquirer.balance(PAN), Some(BALANCE_FEN - 1000));

    // The batch settles balanced, and a new batch opens with fresh keys.
    let settled = k.engine.settle(&bank.link).unwrap();
    assert!(settled.balanced);
    assert_eq!(
        (settled.acquirer_count, settled.acquirer_amount),
        (1, Fen(1000))
    );
    assert_eq!(k.engine.signed_on().unwrap(), Some(2));
    assert_eq!(bank.acquirer.sign_ons(), 2);
    assert!(k.journal_kinds().contains(&"settled".to_string()));
}

#[test]
fn a_reversal_never_acknowledged_holds_the_settlement_and_goes_to_an_operator() {
    let (mut k, bank, card) = ready(memory_card);
    let bank_card = read_bank_card(&k);
    let _inserted = card.insert(&k);
    let mut s = k.engine.start(k.connect()).unwrap();
    k.engine.quote(&mut s, Purchase::Money(Fen(1000))).unwrap();
    bank.acquirer
        .inject(MessageType::Purchase, Fault::DropReply);
    for _ in 0..5 {
        bank.acquirer
            .inject(MessageType::Reversal, Fault::DropReply);
    }
    let pin = bank.enter_pin(&bank_card, PIN);
    assert!(matches!(
        k.engine
            .pay_by_card(&mut s, &bank.link, &bank_card, Some(&pin)),
        Err(SaleError::DebitReversed(_))
    ));
    // The batch is not settled while a reversal is owed in it.
    let err = k.engine.settle(&bank.link).unwrap_err();
    assert_eq!(
        err.to_string(),
        "1 bank-card reversals are not acknowledged yet; the batch is not settled until they are \
         (`selfvend bank reversals`)"
    );
    assert!(k.engine.journal().manual_items(false).unwrap().is_empty());
    for _ in 0..3 {
        assert_eq!(k.engine.forward_reversals(&bank.link).unwrap(), 0);
    }
    // The fifth unacknowledged try tells an operator; the sixth is acknowledged.
    let items = k.engine.journal().manual_items(false).unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(
        items[0].reason,
        "冲正未获收单确认（卡号 622202*********0128，金额 10.00 元，批次 000001，流水 000002）：\
         请联系收单机构核实，再结束此冲正"
    );
    assert_eq!(k.engine.forward_reversals(&bank.link).unwrap(), 1);
    assert_eq!(bank.acquirer.balance(PAN), Some(BALANCE_FEN));
    let err = k
        .engine
        .resolve_manual(items[0].id, Resolution::Refund, "")
        .unwrap_err();
    assert!(matches!(err, SaleError::ReversalItem(_)), "{err}");
    k.engine
        .resolve_manual(
            items[0].id,
            Resolution::Dismiss,
            "acquirer confirmed the reversal",
        )
        .unwrap();
    assert!(k.engine.journal().manual_items(false).unwrap().is_empty());
    let settled = k.engine.settle(&bank.link).unwrap();
    assert!(settled.balanced);
    assert_eq!(settled.acquirer_count, 0);
    assert_eq!(k.engine.signed_on().unwrap(), Some(2));
}

#[test]
fn an_acquirer_that_lost_its_keys_is_signed_on_again_and_the_reversal_is_taken() {
    let (mut k, bank, card) = ready(cpu_card);
    let bank_card = read_bank_card(&k);
    let _inserted = card.insert(&k);
    let mut s = k.engine.start(k.connect()).unwrap();
    k.engine.quote(&mut s, Purchase::Money(Fen(1000))).unwrap();
    // The acquirer restarts: it answers 77 with no MAC, which the kiosk cannot trust.
    bank.acquirer.forget_sessions();
    let pin = bank.enter_pin(&bank_card, PIN);
    assert!(matches!(
        k.engine
            .pay_by_card(&mut s, &bank.link, &bank_card, Some(&pin)),
        Err(SaleError::DebitReversed(Fen(1000)))
    ));
    // The reversal was refused too: no more debits until the kiosk signs on again.
    assert_eq!(k.engine.signed_on().unwrap(), None);
    let pin = bank.enter_pin(&bank_card, PIN);
    assert!(matches!(
        k.engine
            .pay_by_card(&mut s, &bank.link, &bank_card, Some(&pin)),
        Err(SaleError::NotSignedOn)
    ));
    // Signed on again (batch 1 was never settled, so it stays open), the reversal owed is sent
    // and taken.
    assert_eq!(k.engine.sign_on(&bank.link).unwrap(), 1);
    assert!(
        k.engine
            .journal()
            .debits(&["reversing"])
            .unwrap()
            .is_empty()
    );
    assert_eq!(k.engine.journal().debits(&["reversed"]).unwrap().len(), 1);
    let pin = bank.enter_pin(&bank_card, PIN);
    let paid = k
        .engine
        .pay_by_card(&mut s, &bank.link, &bank_card, Some(&pin))
        .unwrap();
    assert_eq!(paid, CardPayment::Approved { serial: 1 });
    k.engine.complete(&mut s, &mut k.printer).unwrap();
    assert_eq!(bank.acquirer.balance(PAN), Some(BALANCE_FEN - 1000));
    assert_eq!(sale_states(&k), [(1, "written".to_string())]);
}
