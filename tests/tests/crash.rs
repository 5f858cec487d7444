//! The kiosk killed with SIGKILL at every failpoint of a cash sale and of clearing, then
//! restarted: after its recovery, the money rules hold against the outside world's own records
//! — the backend's books, the card, the validator — and the journal.

use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use selfvend_host::clearing::{self, Business, Difference, Tally};
use selfvend_host::journal::Journal;
use selfvend_host::money::Fen;
use selfvend_sim::acquirer::{Fault as AcquirerFault, PurchaseState};
use selfvend_sim::id003_validator::Action;
use selfvend_sim::meter::MeterInsert;
use selfvend_sim::pin_pad::PadAction;
use selfvend_sim::unionpay_card::UnionPayCard;
use selfvend_sim::vpcd::Inserted;
use selfvend_tests::ReaderSlot;
use selfvend_tests::bank_rig::{BALANCE_FEN, BankSims, PAN, PIN};
use selfvend_tests::kiosk_rig::{
    CpuCard, MemoryCard, OPERATOR_PIN, TestCard, WAIT, World, chen_xiaoming, zhang_san,
};
use selfvend_tests::{selfvend_bin, sql};

const FAILPOINTS: [&str; 10] = [
    "sale.after-payment-opened",
    "sale.after-banknote-escrowed",
    "sale.after-banknote-credited",
    "sale.after-sale-intent",
    "sale.after-sale-sent",
    "sale.after-grant-recorded",
    "sale.after-card-write-intent",
    "sale.after-card-written",
    "sale.after-confirm-intent",
    "sale.after-receipt-intent",
];

const CLEARING_FAILPOINTS: [&str; 6] = [
    "clearing.after-started",
    "clearing.after-box-removed",
    "clearing.after-counted",
    "clearing.after-box-replaced",
    "clearing.after-closed",
    "clearing.after-reconcile-answer",
];

const BANK_FAILPOINTS: [&str; 9] = [
    "bank.after-debit-intent",
    "bank.after-debit-approved",
    "sale.after-sale-intent",
    "sale.after-sale-sent",
    "sale.after-grant-recorded",
    "sale.after-card-write-intent",
    "sale.after-card-written",
    "sale.after-confirm-intent",
    "sale.after-receipt-intent",
];

/// Runs the kiosk process once; `kill_at` names the failpoint it dies at.
fn kiosk(w: &World, kill_at: Option<&str>, recover_only: bool) -> std::process::ExitStatus {
    kiosk_with(w, &w.config.path, kill_at, recover_only, None)
}

/// As [`kiosk`], with the config at `config`; `bank_reader` pays by the bank card in it.
fn kiosk_with(
    w: &World,
    config: &Path,
    kill_at: Option<&str>,
    recover_only: bool,
    bank_reader: Option<&str>,
) -> std::process::ExitStatus {
    let mut cmd = Command::new(selfvend_bin().with_file_name("selfvend-sale-child"));
    cmd.arg("--config")
        .arg(config)
        .args(["--reader", &w.slot.reader])
        .args(["--validator", w.validator.path()])
        .args(["--printer", w.printer_sim.path()])
        .args(["--fen", "1000"]);
    if recover_only {
        cmd.arg("--recover-only");
    }
    if let Some(reader) = bank_reader {
        cmd.args(["--bank-reader", reader]);
    }
    if let Some(point) = kill_at {
        cmd.env("SELFVEND_KILL_AT", point);
    }
    cmd.status().expect("run selfvend-sale-child")
}

/// Runs the kiosk process once as an operator clearing period 1 and counting 10 yuan.
fn clear(w: &World, kill_at: Option<&str>) -> std::process::ExitStatus {
    let mut cmd = Command::new(selfvend_bin().with_file_name("selfvend-sale-child"));
    cmd.arg("--config")
        .arg(&w.config.path)
        .args(["--reader", &w.slot.reader])
        .args(["--validator", w.validator.path()])
        .args(["--printer", w.printer_sim.path()])
        .args(["--fen", "1000", "--clear-period", "1"])
        .stdin(Stdio::piped());
    if let Some(point) = kill_at {
        cmd.env("SELFVEND_KILL_AT", point);
    }
    let mut child = cmd.spawn().expect("run selfvend-sale-child");
    let mut stdin = child.stdin.take().unwrap();
    writeln!(stdin, "{OPERATOR_PIN}").unwrap();
    drop(stdin);
    child.wait().unwrap()
}

/// The card goes to its meter: the credit, if the sale was written, is taken once.
fn meter_takes_once(card: &dyn TestCard, w: &World, written: u64, point: &str) {
    let at_meter = card.carry_to_meter(w);
    if written == 1 {
        assert!(
            matches!(
                at_meter,
                MeterInsert::Credited {
                    purchase_count: 1,
                    ..
                }
            ),
            "{point}: {at_meter:?}"
        );
    } else {
        assert_eq!(at_meter, MeterInsert::NothingNew, "{point}");
    }
}

#[test]
fn killed_at_every_failpoint_of_a_memory_card_sale_the_money_rules_hold() {
    every_failpoint(|w| Box::new(MemoryCard(zhang_san(w))));
}

#[test]
fn killed_at_every_failpoint_of_a_cpu_card_sale_the_money_rules_hold() {
    every_failpoint(|w| Box::new(CpuCard(chen_xiaoming(w))));
}

fn every_failpoint(issue: impl Fn(&World) -> Box<dyn TestCard>) {
    for point in FAILPOINTS {
        let w = World::new();
        let card = issue(&w);
        let _inserted = card.insert(&w);
        w.validator.act(Action::Insert(10));

        let status = kiosk(&w, Some(point), false);
        assert_eq!(
            status.signal(),
            Some(9),
            "{point}: the kiosk was not killed there"
        );
        // Restarted, the kiosk finishes what its journal shows unfinished.
        let status = kiosk(&w, None, true);
        assert!(status.success(), "{point}: recovery failed");

        let journal = Journal::open(&w.journal).unwrap();
        let report = journal.verify().unwrap();
        assert!(report.problems.is_empty(), "{point}: {:?}", report.problems);
        let count = |state: &str| {
            sql(
                &w.journal,
                &format!("SELECT count(*) FROM sales WHERE state = '{state}'"),
            )
        };
        // Every pending item has ended: no sale is left between states.
        for state in ["intent", "pending", "granted", "never-reached"] {
            assert_eq!(count(state), 0, "{point}: a sale is still {state}");
        }
        // Killed before its sale had a serial, nothing was sold; killed after, the sale is
        // finished by recovery: sold once, written once.
        let before_the_sale = matches!(
            point,
            "sale.after-payment-opened"
                | "sale.after-banknote-escrowed"
                | "sale.after-banknote-credited"
        );
        let written = count("written");
        assert_eq!(written, u64::from(!before_the_sale), "{point}");
        // One backend sale per serial, and only for sales the journal knows were made.
        assert_eq!(
            card.backend(&w).ledger().sale_count("K-SALE-01"),
            written,
            "{point}: the backend's books and the journal disagree"
        );
        // One card credit per sale: the card's purchase count is the witness.
        let on_card = card.purchase_count();
        assert_eq!(
            on_card, written,
            "{point}: the card carries {on_card} credits"
        );
        assert_eq!(
            card.backend(&w).ledger().card_purchase_count(card.serial()),
            Some(on_card as u32),
            "{point}"
        );
        // Conservation: every fen taken is in a sale or handed to an operator with its payment.
        let taken = journal.counter("lifetime.cash_fen").unwrap() as u64;
        let in_sales = sql(&w.journal, "SELECT coalesce(sum(paid_fen), 0) FROM sales");
        let handed = sql(
            &w.journal,
            "SELECT coalesce(sum(paid_fen), 0) FROM payments WHERE state = 'abandoned'",
        );
        assert_eq!(taken, in_sales + handed, "{point}: money unaccounted for");
        let credited =
            point != "sale.after-payment-opened" && point != "sale.after-banknote-escrowed";
        assert_eq!(taken, if credited { 1000 } else { 0 }, "{point}");
        // The validator's own tally: acknowledged only what the journal credited (killed
        // between the credit and its ACK, the validator still offers the note's VEND VALID).
        let unacknowledged = u64::from(point == "sale.after-banknote-credited");
        assert_eq!(
            w.validator.tally().credited.len() as u64 + unacknowledged,
            taken / 1000,
            "{point}: the validator and the journal disagree"
        );
        if handed > 0 {
            assert_eq!(journal.manual_items(false).unwrap().len(), 1, "{point}");
        }
        // Stopped between escrow and credit: the note may be in the kiosk, with its value and
        // its customer's card on an operator item.
        if point == "sale.after-banknote-escrowed" {
            let items = journal.manual_items(false).unwrap();
            assert_eq!(items.len(), 1, "{point}");
            assert_eq!(items[0].caught_fen, Some(1000), "{point}");
            assert_eq!(
                items[0].card_serial.as_deref(),
                Some(card.serial()),
                "{point}"
            );
        }
        meter_takes_once(&*card, &w, written, point);
    }
}

#[test]
fn killed_at_every_failpoint_of_clearing_the_period_closes_once_and_is_reconciled() {
    for point in CLEARING_FAILPOINTS {
        let w = World::new();
        let card = MemoryCard(zhang_san(&w));
        let _inserted = card.insert(&w);
        w.validator.act(Action::Insert(10));
        assert!(kiosk(&w, None, false).success(), "{point}: the sale failed");

        let status = clear(&w, Some(point));
        assert_eq!(status.signal(), Some(9), "{point}: not killed there");
        // Restarted, the kiosk sends what was queued; the operator carries on clearing.
        assert!(
            clear(&w, None).success(),
            "{point}: clearing did not finish"
        );

        let mut journal = Journal::open(&w.journal).unwrap();
        assert!(journal.verify().unwrap().problems.is_empty(), "{point}");
        assert_eq!(
            sql(
                &w.journal,
                "SELECT count(*) FROM audit WHERE kind = 'clearing-ended'"
            ),
            1,
            "{point}: the period was closed more than once"
        );
        let report = clearing::report(&journal, &w.config, Some(1)).unwrap();
        assert_eq!(report.state, "closed", "{point}");
        let cash = &report.businesses[0];
        assert_eq!(cash.business, Business::CashSale);
        assert_eq!(
            cash.sold,
            Tally {
                count: 1,
                fen: Fen(1000)
            },
            "{point}"
        );
        assert_eq!(report.cash.expected, Fen(1000), "{point}");
        assert_eq!(report.cash.difference, Difference::Matched, "{point}");
        assert_eq!(journal.current_period().unwrap().id, 2, "{point}");
        // Both backends were told, once each answered, and agree.
        let states: Vec<(String, String)> = journal
            .reconciliations(false)
            .unwrap()
            .into_iter()
            .map(|r| (r.backend, r.state))
            .collect();
        assert_eq!(
            states,
            [
                ("jinan-power".to_string(), "matched".to_string()),
                ("guangzhou-power".to_string(), "matched".to_string())
            ],
            "{point}"
        );
        for backend in [&w.jinan, &w.guangzhou] {
            assert_eq!(
                backend.ledger().period_matched("K-SALE-01", 1),
                Some(true),
                "{point}"
            );
        }
        // Lifetime counters carry on; the next customer is served in the new period.
        assert_eq!(journal.counter("lifetime.cash_fen").unwrap(), 1000);
        assert!(matches!(
            card.carry_to_meter(&w),
            MeterInsert::Credited { .. }
        ));
        w.validator.act(Action::Insert(10));
        assert!(kiosk(&w, None, false).success(), "{point}: no sale after");
        journal = Journal::open(&w.journal).unwrap();
        assert_eq!(journal.counter("lifetime.cash_fen").unwrap(), 2000);
        let now = clearing::report(&journal, &w.config, None).unwrap();
        assert_eq!(now.businesses[0].sold.count, 1, "{point}");
    }
}

#[test]
fn killed_at_every_failpoint_of_a_bank_card_sale_no_debit_is_left_without_a_sale_or_reversal() {
    for point in BANK_FAILPOINTS {
        let w = World::new();
        // The kiosk process opens the PIN pad (exclusively); this one does not.
        let bank = BankSims::start(&w.plugins);
        // An acquirer that answers a reversal of a purchase it never saw with 25 (no such
        // original): proof that no debit stands.
        bank.acquirer.answer_unknown_reversals_with("25");
        let config = bank.kiosk_config(&w);
        // The kiosk's second reader holds 王芳's bank card throughout.
        let bank_slot = ReaderSlot::take();
        let _bank_card = Inserted::insert(
            Arc::new(Mutex::new(UnionPayCard::wang_fang())),
            bank_slot.address,
        )
        .unwrap();
        assert!(w.readers.wait(&bank_slot.reader, true, WAIT).unwrap());
        let card = MemoryCard(zhang_san(&w));
        let _inserted = card.insert(&w);
        bank.pad_sim.act(&PadAction::pin(PIN));

        let status = kiosk_with(&w, &config, Some(point), false, Some(&bank_slot.reader));
        assert_eq!(status.signal(), Some(9), "{point}: not killed there");
        let status = kiosk_with(&w, &config, None, true, None);
        assert!(status.success(), "{point}: recovery failed");

        let journal = Journal::open(&w.journal).unwrap();
        assert!(journal.verify().unwrap().problems.is_empty(), "{point}");
        // No debit is left undecided: each is declined, reversed, or has its sale.
        assert!(
            journal.debits(&["intent", "reversing"]).unwrap().is_empty(),
            "{point}: a debit is still open"
        );
        let before_the_debit = point == "bank.after-debit-intent";
        let written = sql(
            &w.journal,
            "SELECT count(*) FROM sales WHERE state = 'written'",
        );
        assert_eq!(written, u64::from(!before_the_debit), "{point}");
        let approved = journal.debits(&["approved"]).unwrap();
        assert_eq!(approved.len() as u64, written, "{point}");
        for d in &approved {
            assert!(d.serial.is_some(), "{point}: a debit without its sale");
        }
        // The bank holds exactly what the journal's bank-card sales were paid.
        let in_sales = sql(
            &w.journal,
            "SELECT coalesce(sum(paid_fen), 0) FROM sales WHERE payment = 'bank-card'",
        );
        assert_eq!(
            BALANCE_FEN - bank.acquirer.balance(PAN).unwrap(),
            in_sales,
            "{point}: the bank and the journal disagree"
        );
        let debited = bank
            .acquirer
            .purchases()
            .iter()
            .filter(|p| p.state == PurchaseState::Approved)
            .count() as u64;
        assert_eq!(debited, written, "{point}");
        if before_the_debit {
            assert_eq!(journal.debits(&["reversed"]).unwrap().len(), 1, "{point}");
        }
        // One backend sale, one card credit, taken once by the meter.
        assert_eq!(w.jinan.ledger().sale_count("K-SALE-01"), written, "{point}");
        assert_eq!(card.purchase_count(), written, "{point}");
        meter_takes_once(&card, &w, written, point);
    }
}

/// A sale that never reached its backend (it refused connections), then re-sold by the kiosk,
/// which is killed at each failpoint of the re-sell: restarted, the sale is made exactly once.
#[test]
fn killed_while_re_selling_the_sale_is_made_once() {
    for point in ["sale.after-resell-attempt", "sale.after-resell-answer"] {
        let w = World::new();
        let card = MemoryCard(zhang_san(&w));
        let _inserted = card.insert(&w);
        w.validator.act(Action::Insert(10));
        // Stopped after the sale's intent: restarted, the backend has no such sale, so it is
        // re-sold, and the kiosk is killed in the middle of that.
        let status = kiosk(&w, Some("sale.after-sale-intent"), false);
        assert_eq!(status.signal(), Some(9), "{point}");

        let status = kiosk(&w, Some(point), true);
        assert_eq!(status.signal(), Some(9), "{point}: not killed there");
        assert!(kiosk(&w, None, true).success(), "{point}: recovery failed");

        assert_eq!(
            sql(
                &w.journal,
                "SELECT count(*) FROM sales WHERE state = 'written'"
            ),
            1,
            "{point}"
        );
        assert_eq!(w.jinan.ledger().sale_count("K-SALE-01"), 1, "{point}");
        assert_eq!(card.purchase_count(), 1, "{point}");
        assert_eq!(
            sql(&w.journal, "SELECT count(*) FROM manual_items"),
            0,
            "{point}"
        );
        assert!(
            Journal::open(&w.journal)
                .unwrap()
                .verify()
                .unwrap()
                .problems
                .is_empty()
        );
        meter_takes_once(&card, &w, 1, point);
    }
}

/// Killed after its sale's intent, the kiosk cannot know whether the request went out: the
/// backend's "no such sale" proves nothing until the policy's time has passed, then the sale is
/// re-sold once.
#[test]
fn no_such_sale_is_not_taken_as_never_reached_while_the_request_may_be_in_flight() {
    let w = World::with_policy(&[("unknown_outcome_settle_secs", "3600")]);
    let card = MemoryCard(zhang_san(&w));
    let _inserted = card.insert(&w);
    w.validator.act(Action::Insert(10));
    let status = kiosk(&w, Some("sale.after-sale-intent"), false);
    assert_eq!(status.signal(), Some(9));
    assert!(kiosk(&w, None, true).success());
    // Asked, the backend has no such sale: still unknown, so neither re-sold nor refundable.
    assert_eq!(
        sql(
            &w.journal,
            "SELECT count(*) FROM sales WHERE state = 'intent'"
        ),
        1
    );
    assert_eq!(w.jinan.ledger().sale_count("K-SALE-01"), 0);

    // Once the request cannot be in flight any more, "no such sale" is proof: re-sold once.
    let toml = std::fs::read_to_string(&w.config.path).unwrap().replace(
        "unknown_outcome_settle_secs = 3600",
        "unknown_outcome_settle_secs = 0",
    );
    let settled = w.config.path.with_file_name("kiosk-settled.toml");
    std::fs::write(&settled, toml).unwrap();
    assert!(kiosk_with(&w, &settled, None, true, None).success());
    assert_eq!(
        sql(
            &w.journal,
            "SELECT count(*) FROM sales WHERE state = 'written'"
        ),
        1
    );
    assert_eq!(w.jinan.ledger().sale_count("K-SALE-01"), 1);
    meter_takes_once(&card, &w, 1, "settled");
}

/// A banknote jammed on its way to the cash box becomes an operator item; killed right after,
/// the item is there at restart with the note's value and the customer's card, and the
/// validator's own tally agrees that nothing was credited.
#[test]
fn killed_after_a_banknote_was_caught_its_item_stands() {
    let w = World::new();
    let card = MemoryCard(zhang_san(&w));
    let _inserted = card.insert(&w);
    w.validator.act(Action::JamInStacker(10));
    let status = kiosk(&w, Some("sale.after-banknote-caught"), false);
    assert_eq!(status.signal(), Some(9));
    assert!(kiosk(&w, None, true).success());
    assert_eq!(
        sql(
            &w.journal,
            "SELECT count(*) FROM manual_items WHERE state = 'open' AND caught_fen = 1000 \
             AND card_serial = '3701000000000001'"
        ),
        1
    );
    assert_eq!(sql(&w.journal, "SELECT count(*) FROM sales"), 0);
    assert!(w.validator.tally().credited.is_empty());
}

/// A bank debit with no answer is reversed; the kiosk is killed just before the reversal goes
/// out and just after its answer: restarted, the reversal is taken once and the card is whole.
#[test]
fn killed_around_a_reversal_the_card_is_made_whole() {
    for point in ["bank.before-reversal-sent", "bank.after-reversal-answer"] {
        let w = World::new();
        let (bank, config, bank_slot, _bank_card) = bank_kiosk(&w);
        let card = MemoryCard(zhang_san(&w));
        let _inserted = card.insert(&w);
        bank.pad_sim.act(&PadAction::pin(PIN));
        bank.acquirer.inject(
            selfvend_sim::acquirer::MessageType::Purchase,
            AcquirerFault::DropReply,
        );

        let status = kiosk_with(&w, &config, Some(point), false, Some(&bank_slot.reader));
        assert_eq!(status.signal(), Some(9), "{point}: not killed there");
        assert!(
            kiosk_with(&w, &config, None, true, None).success(),
            "{point}: recovery failed"
        );

        let journal = Journal::open(&w.journal).unwrap();
        assert!(journal.verify().unwrap().problems.is_empty(), "{point}");
        assert!(
            journal.debits(&["intent", "reversing"]).unwrap().is_empty(),
            "{point}: a reversal is still owed"
        );
        assert_eq!(journal.debits(&["reversed"]).unwrap().len(), 1, "{point}");
        assert_eq!(bank.acquirer.balance(PAN), Some(BALANCE_FEN), "{point}");
        assert_eq!(sql(&w.journal, "SELECT count(*) FROM sales"), 0, "{point}");
        assert_eq!(w.jinan.ledger().sale_count("K-SALE-01"), 0, "{point}");
    }
}

/// Killed right after signing on, the kiosk starts signed on and sells by bank card.
#[test]
fn killed_after_signing_on_the_next_start_sells_in_that_batch() {
    let w = World::new();
    let (bank, config, bank_slot, _bank_card) = bank_kiosk(&w);
    let card = MemoryCard(zhang_san(&w));
    let _inserted = card.insert(&w);
    let status = kiosk_with(&w, &config, Some("bank.after-sign-on"), true, None);
    assert_eq!(status.signal(), Some(9));
    bank.pad_sim.act(&PadAction::pin(PIN));
    assert!(kiosk_with(&w, &config, None, false, Some(&bank_slot.reader)).success());
    assert_eq!(bank.acquirer.sign_ons(), 1);
    assert_eq!(bank.acquirer.balance(PAN), Some(BALANCE_FEN - 1000));
    assert_eq!(
        sql(
            &w.journal,
            "SELECT count(*) FROM sales WHERE state = 'written'"
        ),
        1
    );
    let approved = Journal::open(&w.journal)
        .unwrap()
        .debits(&["approved"])
        .unwrap();
    assert_eq!(approved.len(), 1);
    assert_eq!(approved[0].batch, 1);
}

/// Killed between a note's escrow and its stacking, the kiosk leaves the note in the
/// validator's escrow. Restarted, the note is an operator item with its value and its
/// customer's card; the next customer's session stacks it without crediting it (it lands in
/// the cash box, where the item says it is) and credits only what that customer pays.
#[test]
fn a_note_left_in_escrow_by_a_stop_reaches_the_cash_box_and_never_the_next_customer() {
    let w = World::new();
    let card = MemoryCard(zhang_san(&w));
    let _inserted = card.insert(&w);
    w.validator.act(Action::Insert(10));
    let status = kiosk(&w, Some("sale.after-banknote-escrowed"), false);
    assert_eq!(status.signal(), Some(9));
    assert!(kiosk(&w, None, true).success());
    let items = || {
        sql(
            &w.journal,
            "SELECT count(*) FROM manual_items WHERE state = 'open' AND caught_fen = 1000 \
             AND card_serial = '3701000000000001'",
        )
    };
    assert_eq!(items(), 1);

    // The next customer pays 10 yuan.
    w.validator.act(Action::Insert(10));
    assert!(kiosk(&w, None, false).success());
    assert_eq!(
        sql(
            &w.journal,
            "SELECT count(*) FROM sales WHERE state = 'written'"
        ),
        1
    );
    let journal = Journal::open(&w.journal).unwrap();
    assert_eq!(journal.counter("lifetime.cash_fen").unwrap(), 1000);
    assert_eq!(
        sql(&w.journal, "SELECT coalesce(sum(paid_fen), 0) FROM sales"),
        1000
    );
    // Both notes are in the cash box: one sold, one on the first customer's item, and on no
    // other (the kiosk that saw it arrive is not the one that opened the item).
    let tally = w.validator.tally();
    assert_eq!(tally.cash_box, [10, 10]);
    assert!(tally.returned.is_empty());
    assert_eq!(items(), 1);
    assert_eq!(
        sql(
            &w.journal,
            "SELECT count(*) FROM manual_items WHERE state = 'open'"
        ),
        1,
        "the note that arrived has a second item"
    );
    assert_eq!(
        sql(
            &w.journal,
            "SELECT count(*) FROM audit WHERE kind = 'banknote-arrived'"
        ),
        1
    );
    meter_takes_once(&card, &w, 1, "next customer");
}

/// The bank rig beside world `w`: the acquirer and PIN pad simulators, the kiosk's config with
/// them, and 王芳's bank card held in a second reader throughout.
fn bank_kiosk(w: &World) -> (BankSims, std::path::PathBuf, ReaderSlot, Inserted) {
    let bank = BankSims::start(&w.plugins);
    let config = bank.kiosk_config(w);
    let bank_slot = ReaderSlot::take();
    let bank_card = Inserted::insert(
        Arc::new(Mutex::new(UnionPayCard::wang_fang())),
        bank_slot.address,
    )
    .unwrap();
    assert!(w.readers.wait(&bank_slot.reader, true, WAIT).unwrap());
    (bank, config, bank_slot, bank_card)
}

/// Killed right after the backend's refusal was journaled, the kiosk restarts with the refusal
/// and its refund item, written together: the customer is owed the money, once, and the
/// backend sold nothing.
#[test]
fn killed_after_a_refusal_the_refund_item_stands() {
    let w = World::new();
    let card = MemoryCard(zhang_san(&w));
    let _inserted = card.insert(&w);
    // The backend already refused serial 1 of this terminal (an unknown card under it), so the
    // kiosk's sale under that serial gets the same refusal, after its can-buy check passed.
    w.jinan
        .ledger()
        .handle(&selfvend_sim::reference_backend::Request::Sale {
            terminal_id: "K-SALE-01".into(),
            kiosk_serial: 1,
            card: selfvend_sim::reference_backend::ledger::CardInfo {
                card_serial: "3701999999999999".into(),
                ..Default::default()
            },
            buy: selfvend_sim::reference_backend::ledger::Buy::Money(1000),
            payment: selfvend_sim::reference_backend::ledger::Payment::Cash,
            paid_fen: 1000,
        })
        .unwrap_err();
    w.validator.act(Action::Insert(10));
    let status = kiosk(&w, Some("sale.after-refusal-recorded"), false);
    assert_eq!(status.signal(), Some(9));
    assert!(kiosk(&w, None, true).success());
    assert_eq!(
        sql(
            &w.journal,
            "SELECT count(*) FROM sales WHERE state = 'refused'"
        ),
        1
    );
    assert_eq!(
        sql(
            &w.journal,
            "SELECT count(*) FROM manual_items WHERE state = 'open' AND serial = 1"
        ),
        1
    );
    assert_eq!(w.jinan.ledger().sale_count("K-SALE-01"), 0);
    assert_eq!(w.validator.tally().credited, [10]);
    let journal = Journal::open(&w.journal).unwrap();
    assert_eq!(journal.counter("lifetime.cash_fen").unwrap(), 1000);
    assert!(journal.verify().unwrap().problems.is_empty());
}

/// Killed right after a customer whose only note jammed on its way to the cash box was sent
/// away with nothing paid, the kiosk restarts with that payment closed and the note's operator
/// item standing with its value and card: nothing is sold, and the note is in the box once the
/// jam is cleared.
#[test]
fn killed_after_a_cancel_the_jammed_note_stays_an_operator_item() {
    let w = World::new();
    let card = MemoryCard(zhang_san(&w));
    let _inserted = card.insert(&w);
    w.validator.act(Action::JamInStacker(10));
    let status = kiosk(&w, Some("sale.after-cancel"), false);
    assert_eq!(status.signal(), Some(9), "not killed at sale.after-cancel");
    assert!(kiosk(&w, None, true).success());
    assert_eq!(
        sql(
            &w.journal,
            "SELECT count(*) FROM payments WHERE state = 'abandoned'"
        ),
        1
    );
    assert_eq!(
        sql(
            &w.journal,
            "SELECT count(*) FROM payments WHERE state = 'open'"
        ),
        0
    );
    assert_eq!(
        sql(
            &w.journal,
            "SELECT count(*) FROM manual_items WHERE state = 'open' AND caught_fen = 1000 \
             AND card_serial = '3701000000000001'"
        ),
        1
    );
    assert_eq!(sql(&w.journal, "SELECT count(*) FROM manual_items"), 1);
    assert_eq!(sql(&w.journal, "SELECT count(*) FROM sales"), 0);
    assert_eq!(w.jinan.ledger().sale_count("K-SALE-01"), 0);
    assert_eq!(card.purchase_count(), 0);
    assert!(w.validator.tally().credited.is_empty());
    w.validator.act(Action::Clear);
    assert_eq!(w.validator.tally().cash_box, [10]);
    let journal = Journal::open(&w.journal).unwrap();
    assert_eq!(journal.counter("lifetime.cash_fen").unwrap(), 0);
    assert!(journal.verify().unwrap().problems.is_empty());
}

/// Killed right after a balanced settlement, before signing on to the next batch: restarted,
/// the kiosk signs on to a new batch, its next debit goes there, and settling again settles
/// that one. The acquirer settled each batch once, balanced, and no debit is left unsettled.
#[test]
fn killed_after_settling_the_next_batch_takes_the_next_debits_and_settles_them() {
    let w = World::new();
    let (bank, config, bank_slot, _bank_card) = bank_kiosk(&w);
    let card = MemoryCard(zhang_san(&w));
    let _inserted = card.insert(&w);
    bank.pad_sim.act(&PadAction::pin(PIN));
    assert!(kiosk_with(&w, &config, None, false, Some(&bank_slot.reader)).success());
    assert!(matches!(
        card.carry_to_meter(&w),
        MeterInsert::Credited {
            purchase_count: 1,
            ..
        }
    ));
    let settle = |kill_at: Option<&str>| {
        let mut cmd = Command::new(selfvend_bin().with_file_name("selfvend-sale-child"));
        cmd.arg("--config")
            .arg(&config)
            .args(["--reader", &w.slot.reader])
            .args(["--validator", w.validator.path()])
            .args(["--printer", w.printer_sim.path()])
            .args(["--fen", "0", "--settle"]);
        if let Some(point) = kill_at {
            cmd.env("SELFVEND_KILL_AT", point);
        }
        cmd.status().expect("run selfvend-sale-child")
    };
    assert_eq!(settle(Some("bank.after-settlement")).signal(), Some(9));

    bank.pad_sim.act(&PadAction::pin(PIN));
    assert!(kiosk_with(&w, &config, None, false, Some(&bank_slot.reader)).success());
    assert!(settle(None).success());

    let settled: Vec<(u32, u64, u64, bool)> = bank
        .acquirer
        .settlements()
        .into_iter()
        .map(|s| (s.batch, s.count, s.amount_fen, s.balanced))
        .collect();
    assert_eq!(settled, [(1, 1, 1000, true), (2, 1, 1000, true)]);
    assert_eq!(bank.acquirer.balance(PAN), Some(BALANCE_FEN - 2000));
    let journal = Journal::open(&w.journal).unwrap();
    let batches: Vec<u32> = journal
        .debits(&["approved"])
        .unwrap()
        .iter()
        .map(|d| d.batch)
        .collect();
    assert_eq!(batches, [1, 2]);
    assert_eq!(
        sql(
            &w.journal,
            "SELECT count(*) FROM audit WHERE kind = 'settled'"
        ),
        2
    );
    assert_eq!(card.purchase_count(), 2);
    assert!(journal.verify().unwrap().problems.is_empty());
}

/// Killed after the card took its credit but before the journal said so, the kiosk does not
/// know what the card holds: restarted without the card, it tells the backend nothing rather
/// than "not written" (a counter clerk would sell the credit again). When the card comes back,
/// the kiosk reads it and confirms what it finds: written.
#[test]
fn a_write_whose_outcome_is_unknown_is_never_confirmed_as_not_written() {
    let w = World::new();
    let card = MemoryCard(zhang_san(&w));
    let _inserted = card.insert(&w);
    w.validator.act(Action::Insert(10));
    let status = kiosk(&w, Some("sale.after-card-written"), false);
    assert_eq!(status.signal(), Some(9));
    assert_eq!(card.purchase_count(), 1, "the card took its credit");
    // Restarted with the card gone (its reader is empty): it recovers, then finds no card.
    let no_card = Command::new(selfvend_bin().with_file_name("selfvend-sale-child"))
        .arg("--config")
        .arg(&w.config.path)
        .args(["--reader", "an empty reader"])
        .args(["--validator", w.validator.path()])
        .args(["--printer", w.printer_sim.path()])
        .args(["--fen", "1000", "--recover-only"])
        .status()
        .unwrap();
    assert!(!no_card.success());
    assert_eq!(w.jinan.ledger().confirmations("K-SALE-01", 1), []);

    // The card comes back.
    assert!(kiosk(&w, None, true).success());
    assert_eq!(
        w.jinan.ledger().confirmations("K-SALE-01", 1),
        [(true, None)]
    );
    assert_eq!(
        sql(
            &w.journal,
            "SELECT count(*) FROM sales WHERE state = 'written' AND confirmed = 1"
        ),
        1
    );
    meter_takes_once(&card, &w, 1, "after the card came back");
}

/// The customer takes their bank card back slowly after the debit, and the kiosk is killed as it
/// sends the sale: "no such sale" right after the restart is no proof it never arrives, however
/// long ago the debit was, so it is neither re-sold nor refundable yet.
#[test]
fn a_card_sale_sent_after_a_slow_customer_is_not_taken_as_never_reached_while_in_flight() {
    let w = World::with_policy(&[("unknown_outcome_settle_secs", "2")]);
    let card = MemoryCard(zhang_san(&w));
    let _inserted = card.insert(&w);
    let (bank, config, bank_slot, _bank_card) = bank_kiosk(&w);
    bank.pad_sim.act(&PadAction::pin(PIN));
    let status = Command::new(selfvend_bin().with_file_name("selfvend-sale-child"))
        .arg("--config")
        .arg(&config)
        .args(["--reader", &w.slot.reader])
        .args(["--validator", w.validator.path()])
        .args(["--printer", w.printer_sim.path()])
        .args(["--fen", "1000", "--bank-reader", &bank_slot.reader])
        .args(["--dawdle-ms", "2500"])
        .env("SELFVEND_KILL_AT", "sale.after-sale-intent")
        .status()
        .unwrap();
    assert_eq!(status.signal(), Some(9));
    assert!(kiosk_with(&w, &config, None, true, None).success());
    let state = || {
        sql(
            &w.journal,
            "SELECT count(*) FROM sales WHERE serial = 1 AND state = 'intent'",
        )
    };
    assert_eq!(state(), 1);
    assert_eq!(w.jinan.ledger().sale_count("K-SALE-01"), 0);

    // Once it cannot be in flight any more, "no such sale" is proof: re-sold once.
    std::thread::sleep(std::time::Duration::from_millis(2100));
    assert!(kiosk_with(&w, &config, None, true, None).success());
    assert_eq!(state(), 0);
    assert_eq!(w.jinan.ledger().sale_count("K-SALE-01"), 1);
    assert_eq!(bank.acquirer.balance(PAN), Some(BALANCE_FEN - 1000));
    meter_takes_once(&card, &w, 1, "settled");
}
