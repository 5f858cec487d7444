//! Both dialect plugins against the reference backend on loopback: every call, the policy
//! refusals, idempotent sales, unknown outcomes resolved by the status query, and a backend
//! that misbehaves (garbage, truncated, oversized, slow, doubled replies, refused connections).

use std::time::{Duration, Instant};

use selfvend_host::backend::{
    AccountStatus, BackendError, BackendGrant, BusinessTotal, BusinessType, CardRef, PeriodReport,
    Purchase, RefusalCode, SaleStatus, WriteConfirmation,
};
use selfvend_host::card::{AuthPurpose, AuthRequest};
use selfvend_host::money::{Fen, Wh};
use selfvend_host::plugin::DialectError;
use selfvend_sim::encryption_machine::EncryptionMachine;
use selfvend_sim::reference_backend::{Call, Fault};
use selfvend_tests::dialect_rig::{
    CPU_CARD, DIALECTS, Dialect, MEMORY_CARD, Rig, TERMINAL, card, refused, sale, unknown,
};

#[test]
fn account_query_returns_the_chinese_name_and_address_unchanged() {
    let rig = Rig::new();
    for dialect in DIALECTS {
        let mut s = rig.session(dialect);
        let a = s.account_query(&card(MEMORY_CARD, 0)).unwrap();
        assert_eq!(a.customer_name, "张三", "{dialect:?}");
        assert_eq!(a.address, "山东省济南市历下区泉城路1号3单元502室");
        assert_eq!(a.customer_number, "C370100001");
        assert_eq!(a.meter_number, "M3701000001");
        assert_eq!(a.status, AccountStatus::Active);
        assert_eq!(a.price_fen_per_kwh, 56);
        assert_eq!(a.arrears, Fen(0));
        assert_eq!(a.last_purchase, None);
        s.ping().unwrap();
        let info = s.about().unwrap();
        assert_eq!(info.version, "1.1.0");
    }
}

#[test]
fn a_cash_sale_through_each_dialect_grants_a_token_the_meter_accepts() {
    let rig = Rig::new();
    let machine = EncryptionMachine::default();
    for (dialect, card_serial, serial) in [
        (Dialect::FixedText, MEMORY_CARD, 1),
        (Dialect::JsonHttp, CPU_CARD, 2),
    ] {
        let mut s = rig.session(dialect);
        let check = s
            .can_buy(&card(card_serial, 0), Purchase::Money(Fen(5000)))
            .unwrap();
        assert_eq!(check.refusal, None, "{dialect:?}");
        assert_eq!((check.min, check.max), (Fen(100), Fen(500_000)));

        let grant = s.sale(&sale(serial, card(card_serial, 0), 5000)).unwrap();
        // 50.00 yuan at 0.56 yuan/kWh is 89.285 kWh, rounded down to the Wh.
        assert_eq!(grant.purchase_count, 1);
        assert_eq!((grant.amount, grant.energy), (Fen(5000), Wh(89_285)));
        assert!(machine.verify_credit_token(card_serial, 1, 5000, 89_285, &grant.token));

        assert_eq!(
            s.sale_status(TERMINAL, serial).unwrap(),
            SaleStatus::Granted(grant.clone())
        );
        let return_data = b"R\x00\x01\x00\x01\x5c\xc5\x00\x00\x00\x00\x00".to_vec();
        s.confirm_write(&WriteConfirmation {
            terminal_id: TERMINAL.into(),
            kiosk_serial: serial,
            card_serial: card_serial.into(),
            written: true,
            return_data: Some(return_data.clone()),
        })
        .unwrap();
        assert_eq!(
            rig.backend.ledger().confirmations(TERMINAL, serial),
            vec![(true, Some(return_data))]
        );

        let a = s.account_query(&card(card_serial, 1)).unwrap();
        assert_eq!(a.purchase_count, 1);
        let last = a.last_purchase.expect("the sale is the last purchase");
        assert_eq!((last.amount, last.energy), (Fen(5000), Wh(89_285)));
        assert_eq!(last.place, "自助终端K-0001");
    }
    assert_eq!(rig.backend.ledger().sale_count(TERMINAL), 2);
}

#[test]
fn buying_energy_is_charged_at_the_backend_price_rounded_up_to_the_fen() {
    let rig = Rig::new();
    for (dialect, card_serial) in [
        (Dialect::FixedText, MEMORY_CARD),
        (Dialect::JsonHttp, CPU_CARD),
    ] {
        let mut s = rig.session(dialect);
        // 10 kWh + 1 Wh at 56 fen/kWh is 560.056 fen: 561 fen.
        let mut request = sale(7, card(card_serial, 0), 561);
        request.terminal_id = format!("{TERMINAL}-{dialect:?}");
        request.purchase = Purchase::Energy(Wh(10_001));
        let grant = s.sale(&request).unwrap();
        assert_eq!((grant.amount, grant.energy), (Fen(561), Wh(10_001)));
    }
}

#[test]
fn the_backend_refuses_by_policy_with_its_own_words() {
    let rig = Rig::new();
    let cases: [(&str, CardRef, u64, RefusalCode, &str); 7] = [
        (
            "arrears",
            card("3701000000000002", 0),
            5000,
            RefusalCode::Arrears,
            "您有欠费12.50元，请先缴清",
        ),
        (
            "closed",
            card("3701000000000003", 0),
            5000,
            RefusalCode::AccountClosed,
            "该户已销户，不能购电",
        ),
        (
            "suspended",
            card("4401000000000003", 0),
            5000,
            RefusalCode::AccountClosed,
            "该户已暂停供电，请到营业厅办理",
        ),
        (
            "credit not taken",
            CardRef {
                pending: Fen(3000),
                pending_energy: Wh(53_571),
                ..card(MEMORY_CARD, 0)
            },
            5000,
            RefusalCode::CreditNotTaken,
            "卡内尚有未输入电表的电量，请先插入电表",
        ),
        (
            "over the limit",
            card(MEMORY_CARD, 0),
            500_100,
            RefusalCode::OverLimit,
            "单次购电金额须在1元至5000元之间",
        ),
        (
            "purchase count ahead of the books",
            card(MEMORY_CARD, 4),
            5000,
            RefusalCode::CardMismatch,
            "卡内购电次数与档案不符",
        ),
        (
            "lost card",
            card("3701000000000009", 0),
            5000,
            RefusalCode::UnknownCard,
            "卡号3701000000000009已挂失",
        ),
    ];
    let mut serial = 100;
    for dialect in DIALECTS {
        for (what, card, fen, code, message) in &cases {
            let mut s = rig.session(dialect);
            let check = s.can_buy(card, Purchase::Money(Fen(*fen))).unwrap();
            let refusal = check
                .refusal
                .unwrap_or_else(|| panic!("{dialect:?} {what}"));
            assert_eq!((refusal.code, refusal.message.as_str()), (*code, *message));

            serial += 1;
            let got = refused(s.sale(&sale(serial, card.clone(), *fen)));
            assert_eq!(
                (got.0, got.1.as_str()),
                (*code, *message),
                "{dialect:?} {what}"
            );
            // The refusal is on the books: the status query says so.
            match s.sale_status(TERMINAL, serial).unwrap() {
                SaleStatus::Refused(r) => assert_eq!(r.code, *code),
                other => panic!("{dialect:?} {what}: {other:?}"),
            }
        }
        let unknown = refused(s_account(&rig, dialect, "3799000000000000"));
        assert_eq!(
            unknown,
            (
                RefusalCode::UnknownCard,
                "卡号3799000000000000未登记".into()
            )
        );
    }
    assert_eq!(rig.backend.ledger().sale_count(TERMINAL), 0);
}

fn s_account(
    rig: &Rig,
    dialect: Dialect,
    serial: &str,
) -> Result<selfvend_host::backend::Account, DialectError> {
    rig.session(dialect).account_query(&card(serial, 0))
}

#[test]
fn a_sale_retried_after_a_dropped_reply_returns_the_same_grant_and_makes_one_sale() {
    let rig = Rig::new();
    for (dialect, card_serial, serial) in [
        (Dialect::FixedText, MEMORY_CARD, 11),
        (Dialect::JsonHttp, CPU_CARD, 12),
    ] {
        rig.backend.inject(Call::Sale, Fault::DropReply);
        let request = sale(serial, card(card_serial, 0), 2000);
        let why = unknown(rig.session(dialect).sale(&request));
        assert!(why.starts_with("sale: request sent"), "{dialect:?}: {why}");

        // The status query resolves it: the backend made the sale.
        let status = rig.session(dialect).sale_status(TERMINAL, serial).unwrap();
        let SaleStatus::Granted(first) = status else {
            panic!("{dialect:?}: {status:?}");
        };
        assert_eq!(first.purchase_count, 1);

        // Retrying with the same kiosk serial returns the same grant, not a second sale.
        let again: BackendGrant = rig.session(dialect).sale(&request).unwrap();
        assert_eq!(again, first);
        assert_eq!(
            rig.backend.ledger().card_purchase_count(card_serial),
            Some(1)
        );
    }
    assert_eq!(rig.backend.ledger().sale_count(TERMINAL), 2);
    for dialect in DIALECTS {
        assert_eq!(
            rig.session(dialect).sale_status(TERMINAL, 999).unwrap(),
            SaleStatus::NotFound
        );
    }
}

#[test]
fn a_reused_kiosk_serial_for_another_card_is_refused() {
    let rig = Rig::new();
    for dialect in DIALECTS {
        let mut s = rig.session(dialect);
        let terminal = format!("{dialect:?}");
        let count = rig
            .backend
            .ledger()
            .card_purchase_count(MEMORY_CARD)
            .unwrap();
        let mut first = sale(5, card(MEMORY_CARD, count), 1000);
        first.terminal_id = terminal.clone();
        s.sale(&first)
            .unwrap_or_else(|e| panic!("{dialect:?}: {e}"));
        let mut other = sale(5, card(CPU_CARD, 0), 1000);
        other.terminal_id = terminal;
        let (code, message) = refused(rig.session(dialect).sale(&other));
        assert_eq!(code, RefusalCode::Other);
        assert_eq!(message, "终端流水号5已用于另一张卡");
    }
}

#[test]
fn garbage_after_a_committed_sale_is_an_unknown_outcome_and_garbage_to_a_query_is_malformed() {
    let rig = Rig::new();
    for (dialect, card_serial, serial) in [
        (Dialect::FixedText, MEMORY_CARD, 21),
        (Dialect::JsonHttp, CPU_CARD, 22),
    ] {
        rig.backend.inject(Call::Sale, Fault::Garbage);
        let why = unknown(
            rig.session(dialect)
                .sale(&sale(serial, card(card_serial, 0), 1000)),
        );
        assert!(why.contains("reply did not parse"), "{dialect:?}: {why}");
        let status = rig.session(dialect).sale_status(TERMINAL, serial).unwrap();
        assert!(matches!(status, SaleStatus::Granted(g) if g.purchase_count == 1));

        rig.backend.inject(Call::AccountQuery, Fault::Garbage);
        match rig.session(dialect).account_query(&card(card_serial, 1)) {
            Err(DialectError::Backend(BackendError::MalformedReply(why))) => {
                assert!(!why.is_empty(), "{dialect:?}")
            }
            other => panic!("{dialect:?}: expected a malformed reply, got {other:?}"),
        }
    }
}

#[test]
fn truncated_and_oversized_replies_end_in_typed_errors() {
    let rig = Rig::new();
    for (dialect, card_serial) in [
        (Dialect::FixedText, MEMORY_CARD),
        (Dialect::JsonHttp, CPU_CARD),
    ] {
        rig.backend.inject(Call::AccountQuery, Fault::Truncate);
        let why = unknown(rig.session(dialect).account_query(&card(card_serial, 0)));
        assert!(
            why.starts_with("account-query: request sent"),
            "{dialect:?}: {why}"
        );

        rig.backend.inject(Call::AccountQuery, Fault::Flood);
        let result = rig
            .session_with(dialect, |e| e.max_reply_bytes = 4096)
            .account_query(&card(card_serial, 0));
        // The fixed-text dialect reads until the host's byte cap stops it; the JSON dialect
        // refuses the declared Content-Length before reading the body.
        match (dialect, result) {
            (Dialect::FixedText, Err(DialectError::Backend(BackendError::OutcomeUnknown(why)))) => {
                assert_eq!(why, "account-query: request sent, then over the byte cap")
            }
            (Dialect::JsonHttp, Err(DialectError::Backend(BackendError::MalformedReply(why)))) => {
                assert_eq!(
                    why,
                    "account-query reply: Content-Length 2000000 is over the 1 MiB cap"
                )
            }
            (_, other) => panic!("{dialect:?}: expected a refused flood, got {other:?}"),
        }
        // The backend is fine afterwards.
        rig.session(dialect).ping().unwrap();
    }
}

#[test]
fn a_slow_backend_times_out_at_the_io_deadline_not_later() {
    let rig = Rig::new();
    for dialect in DIALECTS {
        rig.backend
            .inject(Call::Ping, Fault::Delay(Duration::from_millis(3000)));
        let started = Instant::now();
        let why = unknown(
            rig.session_with(dialect, |e| e.io_timeout = Duration::from_millis(300))
                .ping(),
        );
        assert!(why.contains("timed out"), "{dialect:?}: {why}");
        assert!(
            started.elapsed() < Duration::from_millis(2500),
            "{dialect:?} waited {:?}",
            started.elapsed()
        );
    }
}

#[test]
fn a_doubled_reply_is_read_once() {
    let rig = Rig::new();
    for (dialect, card_serial, serial) in [
        (Dialect::FixedText, MEMORY_CARD, 31),
        (Dialect::JsonHttp, CPU_CARD, 32),
    ] {
        rig.backend.inject(Call::Sale, Fault::ReplyTwice);
        let grant = rig
            .session(dialect)
            .sale(&sale(serial, card(card_serial, 0), 1000))
            .unwrap();
        assert_eq!(grant.purchase_count, 1, "{dialect:?}");
    }
    assert_eq!(rig.backend.ledger().sale_count(TERMINAL), 2);
}

#[test]
fn refused_connections_are_unreachable_and_nothing_was_sent() {
    let rig = Rig::new();
    rig.backend.refuse_connections(true);
    for dialect in DIALECTS {
        match rig
            .session(dialect)
            .sale(&sale(41, card(MEMORY_CARD, 0), 1000))
        {
            Err(DialectError::Backend(BackendError::Unreachable(_))) => {}
            other => panic!("{dialect:?}: expected unreachable, got {other:?}"),
        }
    }
    rig.backend.refuse_connections(false);
    for dialect in DIALECTS {
        rig.session(dialect).ping().unwrap();
    }
    assert_eq!(rig.backend.ledger().sale_count(TERMINAL), 0);
}

#[test]
fn cpu_card_authentication_is_relayed_to_the_encryption_machine() {
    let rig = Rig::new();
    let machine = EncryptionMachine::default();
    let challenge = vec![0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88];
    for dialect in DIALECTS {
        let mut s = rig.session(dialect);
        let ask = |purpose, data: Vec<u8>| AuthRequest {
            purpose,
            challenge: challenge.clone(),
            data,
        };
        assert_eq!(
            s.authenticate(CPU_CARD, &ask(AuthPurpose::ExternalAuthenticate, vec![]))
                .unwrap(),
            machine.external_authenticate(CPU_CARD, &challenge).unwrap()
        );
        let command = b"\x04\xD6\x82\x00\x0C wallet".to_vec();
        assert_eq!(
            s.authenticate(CPU_CARD, &ask(AuthPurpose::CommandMac, command.clone()))
                .unwrap(),
            machine.command_mac(CPU_CARD, &challenge, &command).unwrap()
        );
        let mut signed = command.clone();
        signed.extend(machine.card_mac(CPU_CARD, &challenge, &command).unwrap());
        assert_eq!(
            s.authenticate(CPU_CARD, &ask(AuthPurpose::VerifyCardMac, signed.clone()))
                .unwrap(),
            Vec::<u8>::new()
        );
        *signed.last_mut().unwrap() ^= 0xFF;
        let (code, message) =
            refused(s.authenticate(CPU_CARD, &ask(AuthPurpose::VerifyCardMac, signed)));
        assert_eq!(
            (code, message.as_str()),
            (RefusalCode::Other, "卡片MAC校验失败")
        );
    }
}

#[test]
fn a_memory_card_password_comes_from_the_encryption_machine() {
    let rig = Rig::new();
    let machine = EncryptionMachine::default();
    for dialect in DIALECTS {
        let psc = rig
            .session(dialect)
            .card_password(&card(MEMORY_CARD, 0))
            .unwrap();
        assert_eq!(
            psc,
            machine.memory_card_psc(MEMORY_CARD).to_vec(),
            "{dialect:?}"
        );
        let (code, message) = refused(rig.session(dialect).card_password(&card(CPU_CARD, 0)));
        assert_eq!(code, RefusalCode::Other);
        assert_eq!(message, "卡号4401000000000001是CPU卡，没有卡密码");
    }
}

#[test]
fn a_period_reconciles_against_the_backend_books() {
    let rig = Rig::new();
    for (dialect, card_serial) in [
        (Dialect::FixedText, MEMORY_CARD),
        (Dialect::JsonHttp, CPU_CARD),
    ] {
        let terminal = format!("R-{dialect:?}");
        let mut s = rig.session(dialect);
        for (serial, fen) in [(1, 1000), (2, 2500)] {
            let mut request = sale(serial, card(card_serial, serial as u32 - 1), fen);
            request.terminal_id = terminal.clone();
            s.sale(&request).unwrap();
        }
        let mut report = PeriodReport {
            terminal_id: terminal.clone(),
            period_id: 1,
            opened_at: "2000-01-01T00:00:00".into(),
            closed_at: "2999-12-31T23:59:59".into(),
            totals: vec![BusinessTotal {
                business: BusinessType::CashSale,
                count: 2,
                amount: Fen(3500),
            }],
        };
        let r = s.reconcile(&report).unwrap();
        assert!(r.matched, "{dialect:?}: {:?}", r.differences);
        assert_eq!(r.backend_totals, report.totals);

        report.period_id = 2;
        report.totals[0].amount = Fen(4500);
        let r = s.reconcile(&report).unwrap();
        assert!(!r.matched);
        assert_eq!(
            r.differences,
            vec!["现金售电: 终端2笔4500分，后台2笔3500分"]
        );
    }
}
