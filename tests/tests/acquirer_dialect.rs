//! The ISO 8583 acquirer dialect through the host, against the acquirer simulator over TCP, with
//! the PIN pad on a pty MACing every message and making the PIN blocks: sign-on and its keys,
//! purchases approved and declined, reversal, settlement, and every way an answer goes wrong.

use selfvend_host::bank_card::BankCard;
use selfvend_host::money::Fen;
use selfvend_host::payment::{
    AcquirerError, DeclineCode, PurchaseOutcome, PurchaseRequest, ReversalReason, ReversalRequest,
    SettlementRequest,
};
use selfvend_host::pin_pad::KeySlot;
use selfvend_host::plugin::AcquirerCallError;
use selfvend_sim::acquirer::{Fault, MessageType, PurchaseState};
use selfvend_sim::unionpay_card::UnionPayCard;
use selfvend_tests::SignedPlugins;
use selfvend_tests::bank_rig::{BALANCE_FEN, Bank, PAN, PIN};

/// 王芳's card as the reader gives it (the card's own Track 2).
fn wang_fang() -> BankCard {
    BankCard {
        aid: Vec::new(),
        pan: PAN.into(),
        expiry: "3012".into(),
        service_code: "201".into(),
        track2: UnionPayCard::wang_fang().track2(),
    }
}

/// A bank signed on in batch 1, its working keys in the PIN pad.
fn signed_on(plugins: &SignedPlugins) -> Bank {
    let bank = Bank::new(plugins);
    let keys = bank.session().sign_on(&bank.entry.terminal, 1, 1).unwrap();
    assert_eq!(format!("{keys:?}"), "WorkingKeys(..)");
    let mut pad = bank.pad.lock().unwrap();
    pad.load_working_key(KeySlot::Pin, &keys.pin_key, &keys.pin_key_check)
        .unwrap();
    pad.load_working_key(KeySlot::Mac, &keys.mac_key, &keys.mac_key_check)
        .unwrap();
    drop(pad);
    bank
}

fn purchase(bank: &Bank, stan: u32, fen: u64, pin: &str) -> PurchaseRequest {
    let card = wang_fang();
    PurchaseRequest {
        terminal: bank.entry.terminal.clone(),
        stan,
        batch: 1,
        amount: Fen(fen),
        pin_block: Some(*bank.enter_pin(&card, pin).bytes()),
        card,
    }
}

fn acquirer_error(e: AcquirerCallError) -> AcquirerError {
    match e {
        AcquirerCallError::Acquirer(e) => e,
        AcquirerCallError::Plugin(p) => panic!("the plugin failed: {p}"),
    }
}

#[test]
fn a_purchase_with_the_right_pin_is_approved_reversed_once_and_settled() {
    let plugins = SignedPlugins::new();
    let bank = signed_on(&plugins);
    assert_eq!(bank.acquirer.sign_ons(), 1);

    let first = purchase(&bank, 2, 5000, PIN);
    let mut session = bank.session();
    let PurchaseOutcome::Approved(approval) = session.purchase(&first).unwrap() else {
        panic!("not approved");
    };
    // The dialect logs what happened, never the card or the PIN block.
    let log = session.log();
    assert!(log.contains("0210"), "{log}");
    let block = first.pin_block.map(hex::encode_upper).unwrap();
    for secret in [PAN, &block, &block.to_lowercase()] {
        assert!(!log.contains(secret), "{log}");
    }
    assert_eq!(approval.amount, Fen(5000));
    assert_eq!(approval.rrn.len(), 12);
    assert_eq!(bank.acquirer.balance(PAN), Some(BALANCE_FEN - 5000));
    let second = purchase(&bank, 3, 2000, PIN);
    assert!(matches!(
        bank.session().purchase(&second).unwrap(),
        PurchaseOutcome::Approved(_)
    ));

    // The first is reversed; a repeated reversal is acknowledged and credits nothing more.
    let reversal = ReversalRequest {
        terminal: bank.entry.terminal.clone(),
        stan: 2,
        batch: 1,
        amount: Fen(5000),
        card: wang_fang(),
        reason: ReversalReason::Cancelled,
    };
    bank.session().reversal(&reversal).unwrap();
    bank.session().reversal(&reversal).unwrap();
    assert_eq!(bank.acquirer.balance(PAN), Some(BALANCE_FEN - 2000));
    assert_eq!(bank.acquirer.reversals_received(), 2);
    let states: Vec<PurchaseState> = bank
        .acquirer
        .purchases()
        .into_iter()
        .map(|p| p.state)
        .collect();
    assert_eq!(states, [PurchaseState::Reversed, PurchaseState::Approved]);

    let settle = |count, fen| SettlementRequest {
        terminal: bank.entry.terminal.clone(),
        stan: 4,
        batch: 1,
        count,
        amount: Fen(fen),
    };
    let settled = bank.session().settle(&settle(1, 2000)).unwrap();
    assert!(settled.balanced);
    let off = bank.session().settle(&settle(2, 7000)).unwrap();
    assert!(!off.balanced);
    assert_eq!((off.acquirer_count, off.acquirer_amount), (1, Fen(2000)));
}

#[test]
fn declines_say_why_and_debit_nothing() {
    let plugins = SignedPlugins::new();
    let bank = signed_on(&plugins);
    let declined = |request: &PurchaseRequest| match bank.session().purchase(request).unwrap() {
        PurchaseOutcome::Declined(d) => d,
        other => panic!("expected a decline, got {other:?}"),
    };
    let d = declined(&purchase(&bank, 2, BALANCE_FEN + 1, PIN));
    assert_eq!(
        (d.code, d.response_code.as_str(), d.message.as_str()),
        (DeclineCode::InsufficientFunds, "51", "余额不足")
    );
    let d = declined(&purchase(&bank, 3, 100, "000000"));
    assert_eq!(
        (d.code, d.message.as_str()),
        (DeclineCode::WrongPin, "密码错误")
    );
    bank.acquirer.block(PAN);
    let d = declined(&purchase(&bank, 4, 100, PIN));
    assert_eq!(d.code, DeclineCode::CardBlocked);
    assert_eq!(bank.acquirer.balance(PAN), Some(BALANCE_FEN));
}

#[test]
fn an_answer_that_goes_wrong_after_the_debit_is_an_unknown_outcome() {
    let plugins = SignedPlugins::new();
    let bank = signed_on(&plugins);
    for (stan, fault) in [
        (2, Fault::DropReply),
        (3, Fault::Garbage),
        (4, Fault::Truncate),
        (5, Fault::BadMac),
    ] {
        bank.acquirer.inject(MessageType::Purchase, fault);
        let err = acquirer_error(
            bank.session()
                .purchase(&purchase(&bank, stan, 100, PIN))
                .unwrap_err(),
        );
        assert!(
            matches!(err, AcquirerError::OutcomeUnknown(_)),
            "{fault:?}: {err}"
        );
    }
    // Each was debited: only a reversal tells the acquirer to give it back.
    assert_eq!(bank.acquirer.balance(PAN), Some(BALANCE_FEN - 400));
    // An answer sent twice is read once.
    bank.acquirer
        .inject(MessageType::Purchase, Fault::ReplyTwice);
    assert!(matches!(
        bank.session()
            .purchase(&purchase(&bank, 6, 100, PIN))
            .unwrap(),
        PurchaseOutcome::Approved(_)
    ));
}

#[test]
fn an_acquirer_that_refuses_connections_was_not_reached() {
    let plugins = SignedPlugins::new();
    let bank = signed_on(&plugins);
    bank.acquirer.refuse_connections(true);
    let err = acquirer_error(
        bank.session()
            .purchase(&purchase(&bank, 2, 100, PIN))
            .unwrap_err(),
    );
    assert!(matches!(err, AcquirerError::Unreachable(_)), "{err}");
    assert_eq!(bank.acquirer.balance(PAN), Some(BALANCE_FEN));
}

#[test]
fn a_message_macced_under_the_wrong_key_does_nothing() {
    let plugins = SignedPlugins::new();
    let bank = signed_on(&plugins);
    // A second sign-on issues new keys; the pad keeps the old MAC key.
    bank.session().sign_on(&bank.entry.terminal, 9, 1).unwrap();
    let err = acquirer_error(
        bank.session()
            .purchase(&purchase(&bank, 2, 100, PIN))
            .unwrap_err(),
    );
    // The acquirer answers A0 (MAC error) MACed under its new key, which the pad's old key
    // cannot verify: an answer the kiosk cannot trust on a purchase is an unknown outcome.
    assert!(matches!(err, AcquirerError::OutcomeUnknown(_)), "{err}");
    assert_eq!(bank.acquirer.balance(PAN), Some(BALANCE_FEN));
    assert!(bank.acquirer.purchases().is_empty());
}
