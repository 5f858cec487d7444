//! Clearing (清机) end to end on the real rigs: cash sales in period 1 through a virtual card in
//! pcscd, the ID-003 validator and ESC/POS printer on ptys, and two utilities' reference
//! backends (each with its own books) over TCP; then the operator clears the kiosk and the
//! report, the journal, the counters, the backends' reconciliation and the CLI are checked.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use selfvend_host::backend::Purchase;
use selfvend_host::clearing::{self, ClearingError, Difference, Tally};
use selfvend_host::config::KioskConfig;
use selfvend_host::journal::Journal;
use selfvend_host::money::Fen;
use selfvend_host::receipt_printer::ReceiptPrinter;
use selfvend_host::sale::SaleError;
use selfvend_sim::id003_validator::Action;
use selfvend_sim::meter::{Meter, MeterInsert};
use selfvend_sim::vpcd::lock;
use selfvend_tests::kiosk_rig::{Kiosk, OPERATOR_PIN as PIN, PATIENCE, chen_xiaoming, zhang_san};
use selfvend_tests::{selfvend_bin, selfvend_with, text};

fn kinds(journal: &Journal) -> Vec<String> {
    journal
        .entries(1, 10_000)
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .collect()
}

#[test]
fn clearing_closes_the_period_with_exact_totals_a_recorded_mismatch_and_matched_backends() {
    let mut k = Kiosk::new();
    let memory = zhang_san(&k);
    let cpu = chen_xiaoming(&k);

    // Period 1: 50 yuan for 张三 (utility 3701), 10 yuan for 陈小明 (utility 4401).
    k.sell(&memory, 5000);
    k.sell(&cpu, 1000);
    let counter = |name: &str| Journal::open(&k.journal).unwrap().counter(name).unwrap();
    let lifetime_cash = counter("lifetime.cash_fen");
    let lifetime_credited = counter("lifetime.credited_fen");
    assert_eq!((lifetime_cash, lifetime_credited), (6000, 6000));

    // A wrong PIN is refused and recorded; the right one starts clearing.
    let mut journal = Journal::open(&k.journal).unwrap();
    assert!(matches!(
        clearing::start(&mut journal, &k.config, "135790"),
        Err(ClearingError::WrongPin)
    ));
    assert_eq!(kinds(&journal).last().unwrap(), "clearing-pin-refused");
    let so_far = clearing::start(&mut journal, &k.config, PIN).unwrap();
    assert_eq!(
        so_far.businesses[0].sold,
        Tally {
            count: 2,
            fen: Fen(6000)
        }
    );
    assert_eq!(journal.current_period().unwrap().state, "clearing");

    // No sales while clearing.
    k.restart();
    {
        let (_inserted, channel) = k.insert(&memory);
        match k.engine.start(channel) {
            Err(SaleError::Clearing(1)) => {}
            Err(e) => panic!("expected the clearing refusal, got {e}"),
            Ok(_) => panic!("a sale started while the kiosk was being cleared"),
        }
    }

    // The box comes out, holds 10 yuan less than the acceptor stacked, and goes back.
    clearing::box_removed(&mut journal).unwrap();
    let cash = clearing::count(&mut journal, Fen(5000)).unwrap();
    assert_eq!(cash.difference, Difference::Short(Fen(1000)));
    clearing::box_replaced(&mut journal).unwrap();
    assert_eq!(journal.counter("period.cash_box_removals").unwrap(), 1);
    assert_eq!(journal.counter("period.operator_pins_refused").unwrap(), 1);

    let ended = clearing::end(&mut journal, &k.config, PIN, None, &k.dialects()).unwrap();
    let report = &ended.report;
    assert_eq!((report.period_id, ended.next_period), (1, 2));
    let cash_sales = &report.businesses[0];
    assert_eq!(
        (cash_sales.sold, cash_sales.pending, cash_sales.refundable),
        (
            Tally {
                count: 2,
                fen: Fen(6000)
            },
            Tally::default(),
            Tally::default()
        )
    );
    assert_eq!(report.businesses[1].sold, Tally::default());
    assert_eq!(
        (
            report.cash.banknotes,
            report.cash.expected,
            report.cash.counted
        ),
        (2, Fen(6000), Some(Fen(5000)))
    );
    assert_eq!(report.cash.difference, Difference::Short(Fen(1000)));

    // Each backend was told only its own utility's sale, and its books agree.
    for answer in &ended.reconciliations {
        let r = answer.result.as_ref().unwrap();
        assert!(r.matched, "{}: {:?}", answer.backend, r.differences);
    }
    let names: Vec<&str> = ended
        .reconciliations
        .iter()
        .map(|r| r.backend.as_str())
        .collect();
    assert_eq!(names, ["jinan-power", "guangzhou-power"]);
    assert_eq!(k.jinan.ledger().sale_count("K-SALE-01"), 1);
    assert_eq!(k.guangzhou.ledger().sale_count("K-SALE-01"), 1);

    // The journal tells the story, mismatch included.
    let kinds = kinds(&journal);
    let clearing_rows: Vec<&str> = kinds
        .iter()
        .map(String::as_str)
        .skip_while(|k| *k != "clearing-pin-refused")
        .collect();
    assert_eq!(
        clearing_rows,
        [
            "clearing-pin-refused",
            "clearing-started",
            "cash-box-removed",
            "clearing-counted",
            "cash-box-replaced",
            "clearing-mismatch",
            "clearing-ended",
            "period-opened",
            "reconcile-intent",
            "reconcile-intent",
            "reconciled",
            "reconciled",
        ]
    );
    assert!(journal.verify().unwrap().problems.is_empty());

    // Lifetime counters are untouched; period counters start again.
    assert_eq!(journal.counter("lifetime.cash_fen").unwrap(), lifetime_cash);
    assert_eq!(
        journal.counter("lifetime.credited_fen").unwrap(),
        lifetime_credited
    );
    assert_eq!(
        journal.counter("lifetime.operator_pins_refused").unwrap(),
        1
    );
    assert_eq!(journal.counter("period.cash_box_removals").unwrap(), 0);
    assert_eq!(journal.counter("period.operator_pins_refused").unwrap(), 0);

    // The report on paper.
    k.printer.print(&report.receipt()).unwrap();
    assert_eq!(
        k.printed_lines(),
        [
            "清机报表",
            "终端号：K-SALE-01",
            "清机期号：1",
            &format!("开始时间：{}", report.opened_at),
            &format!("结束时间：{}", report.closed_at.as_ref().unwrap()),
            "现金售电：2笔 60.00元",
            "  单位3701：1笔 50.00元",
            "  单位4401：1笔 10.00元",
            "银行卡售电：0笔 0.00元",
            "现金缴费：0笔 0.00元",
            "银行卡缴费：0笔 0.00元",
            "收入纸币：2张",
            "应有现金：60.00元",
            "清点现金：50.00元",
            "差额：短款10.00元",
            "--- cut ---",
        ]
    );

    // Period 2 is open and sales resume (the card's first credit goes into its meter first).
    let mut meter = Meter::new("M3701000001", k.machine.clone());
    assert_eq!(
        meter.insert_hengtai(&mut lock(&memory)),
        MeterInsert::Credited {
            purchase_count: 1,
            energy_wh: 89_285
        }
    );
    k.restart();
    k.sell(&memory, 2000);
    let running = clearing::report(&journal, &k.config, None).unwrap();
    assert_eq!((running.period_id, running.state.as_str()), (2, "open"));
    assert_eq!(
        running.businesses[0].sold,
        Tally {
            count: 1,
            fen: Fen(2000)
        }
    );

    // The operator's CLI shows the closed period as it was printed, and the running one.
    let config = k.config.path.clone();
    let out = selfvend_with(&config, &["clearing", "report", "--period", "1"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let printed = text(&out.stdout);
    for line in [
        "清机期号：1",
        "现金售电：2笔 60.00元",
        "应有现金：60.00元",
        "清点现金：50.00元",
        "差额：短款10.00元",
    ] {
        assert!(printed.lines().any(|l| l == line), "{line} in\n{printed}");
    }
    let out = selfvend_with(&config, &["clearing", "report"]);
    let printed = text(&out.stdout);
    assert!(printed.contains("清机期号：2\n"), "{printed}");
    assert!(printed.contains("现金售电：1笔 20.00元\n"), "{printed}");
    assert!(printed.contains("结束时间：营业中\n"), "{printed}");
    let out = selfvend_with(&config, &["clearing", "report", "--period", "9"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("the journal has no period 9"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn clearing_is_refused_without_a_configured_operator_pin() {
    let dir = tempfile::tempdir().unwrap();
    let config = KioskConfig::parse(
        &dir.path().join("kiosk.toml"),
        "[kiosk]\nterminal_id = \"K-CLEAR-02\"\nregion = \"3701\"\ndata_dir = \".\"\n\
         [trust]\ndir = \"trust\"\n",
    )
    .unwrap();
    let mut journal = Journal::open(&dir.path().join("journal.sqlite")).unwrap();
    let err = clearing::start(&mut journal, &config, PIN).unwrap_err();
    assert!(
        err.to_string().starts_with("no operator PIN is configured"),
        "{err}"
    );
    assert_eq!(journal.current_period().unwrap().state, "open");
    // Ending what was never started is refused too.
    assert!(matches!(
        clearing::count(&mut journal, Fen(100)),
        Err(ClearingError::NotClearing(1))
    ));
}

#[test]
fn clearing_waits_for_a_paying_customer_and_then_no_banknote_goes_in() {
    let mut k = Kiosk::new();
    let memory = zhang_san(&k);

    // A customer has paid and the sale is not made yet: clearing waits for it.
    let (inserted, mut s) = k.paid_session(&memory, 1000);
    let mut journal = Journal::open(&k.journal).unwrap();
    let err = clearing::start(&mut journal, &k.config, PIN).unwrap_err();
    assert!(matches!(err, ClearingError::PaymentOpen(_)), "{err}");
    assert!(err.to_string().contains("a customer is paying"), "{err}");
    assert_eq!(journal.current_period().unwrap().state, "open");
    k.engine.complete(&mut s, &mut k.printer).unwrap();
    drop((s, inserted));
    Meter::new("M3701000001", k.machine.clone()).insert_hengtai(&mut lock(&memory));

    // A card read just before clearing starts: its payment is refused, the acceptor stays
    // inhibited and the banknote the customer offers is not taken.
    let (_inserted, channel) = k.insert(&memory);
    let mut s = k.engine.start(channel).unwrap();
    k.engine.quote(&mut s, Purchase::Money(Fen(1000))).unwrap();
    clearing::start(&mut journal, &k.config, PIN).unwrap();
    k.validator.act(Action::Insert(10));
    match k.engine.take_cash(&mut s, &mut k.acceptor, PATIENCE) {
        Err(SaleError::Clearing(1)) => {}
        other => panic!("expected the clearing refusal, got {other:?}"),
    }
    std::thread::sleep(Duration::from_millis(200));
    assert!(k.validator.inhibited());
    assert_eq!(k.validator.tally().cash_box, [10]);
    assert_eq!(journal.counter("lifetime.cash_fen").unwrap(), 1000);
    let report = clearing::report(&journal, &k.config, None).unwrap();
    assert_eq!(report.cash.expected, Fen(1000));
}

#[test]
fn five_wrong_operator_pins_lock_pin_entry() {
    let k = Kiosk::new();
    let mut journal = Journal::open(&k.journal).unwrap();
    // A right PIN after wrong ones clears the run of refusals.
    for _ in 0..4 {
        assert!(matches!(
            clearing::start(&mut journal, &k.config, "000000"),
            Err(ClearingError::WrongPin)
        ));
    }
    clearing::start(&mut journal, &k.config, PIN).unwrap();
    for _ in 0..5 {
        assert!(matches!(
            clearing::end(&mut journal, &k.config, "000000", None, &[]),
            Err(ClearingError::WrongPin)
        ));
    }
    // Locked: even the right PIN is not checked, and nothing more is recorded.
    let err = clearing::end(&mut journal, &k.config, PIN, None, &[]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "5 wrong operator PINs in a row: PIN entry is locked for 15 more minutes"
    );
    assert_eq!(
        journal.counter("lifetime.operator_pins_refused").unwrap(),
        9
    );
    assert_eq!(journal.current_period().unwrap().state, "clearing");
    let mut child = Command::new(selfvend_bin())
        .arg("--config")
        .arg(&k.config.path)
        .args(["clearing", "end", "--pin-stdin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    writeln!(child.stdin.take().unwrap(), "{PIN}").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("PIN entry is locked for 15 more minutes"),
        "{}",
        text(&out.stderr)
    );
}
