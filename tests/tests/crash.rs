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
use selfvend_sim::acquirer::PurchaseState;
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
use selfvend_tests::selfvend_bin;

const FAILPOINTS: [&str; 9] = [
    "sale.after-payment-opened",
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

fn sql(journal: &std::path::Path, query: &str) -> u64 {
    let out = Command::new("sqlite3")
        .arg(journal)
        .arg(query)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0)
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
        let before_the_sale =
            point == "sale.after-payment-opened" || point == "sale.after-banknote-credited";
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
        let expected_taken = if point == "sale.after-payment-opened" {
            0
        } else {
            1000
        };
        assert_eq!(taken, expected_taken, "{point}");
        if handed > 0 {
            assert_eq!(journal.manual_items(false).unwrap().len(), 1, "{point}");
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
