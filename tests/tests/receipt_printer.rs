//! The receipt printer over a real pty: the host's ESC/POS driver on one end, the simulated
//! printer on the other, decoding what reached paper. Also `selfvend printer test` and
//! `selfvend-printer` as the README runs them.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use selfvend_host::escpos::EscPosPrinter;
use selfvend_host::receipt_printer::{
    Line, Paper, PrintError, PrintStop, PrinterError, Progress, Receipt, ReceiptPrinter,
};
use selfvend_sim::escpos_printer::{Alignment, Answering, PrintedLine, Printout, SimulatedPrinter};
use selfvend_tests::{selfvend_bin, selfvend_with, text};

fn sale_receipt() -> Receipt {
    let rule = "-".repeat(32);
    Receipt::new()
        .with(Line::new("购电凭证").bold().double().centred())
        .with(Line::new("自助售电终端 DEMO-0001").centred())
        .with(Line::new(&rule))
        .with(Line::new("户名：陈小明"))
        .with(Line::new("户号：C370100001"))
        .with(Line::new("电表号：M3701000001"))
        .with(Line::new("购电金额：50.00元").bold().double())
        .with(Line::new("购电电量：96.15千瓦时"))
        .with(Line::new("交易流水号：000123"))
        .with(Line::new("时间：2025-06-01 10:30:00"))
        .with(Line::new(&rule))
        .with(Line::new("请妥善保管此凭证 / Please keep this receipt").centred())
}

fn plain(text: &str) -> Printout {
    Printout::Line(PrintedLine::plain(text))
}

fn centred(text: &str) -> Printout {
    Printout::Line(PrintedLine {
        align: Alignment::Centre,
        ..PrintedLine::plain(text)
    })
}

fn bold_double(text: &str, align: Alignment) -> Printout {
    Printout::Line(PrintedLine {
        bold: true,
        width: 2,
        height: 2,
        align,
        ..PrintedLine::plain(text)
    })
}

/// The sale receipt as it must come out of the printer, cut included.
fn sale_receipt_on_paper() -> Vec<Printout> {
    let rule = "-".repeat(32);
    vec![
        bold_double("购电凭证", Alignment::Centre),
        centred("自助售电终端 DEMO-0001"),
        plain(&rule),
        plain("户名：陈小明"),
        plain("户号：C370100001"),
        plain("电表号：M3701000001"),
        bold_double("购电金额：50.00元", Alignment::Left),
        plain("购电电量：96.15千瓦时"),
        plain("交易流水号：000123"),
        plain("时间：2025-06-01 10:30:00"),
        plain(&rule),
        centred("请妥善保管此凭证 / Please keep this receipt"),
        Printout::Cut,
    ]
}

fn connect(sim: &SimulatedPrinter) -> EscPosPrinter {
    EscPosPrinter::open(Path::new(sim.path()), 9600).expect("open the printer's pty")
}

#[test]
fn a_receipt_comes_out_as_the_exact_chinese_lines_sent_and_one_cut() {
    let sim = SimulatedPrinter::start().unwrap();
    let mut printer = connect(&sim);
    let printed = printer.print(&sale_receipt()).unwrap();
    assert_eq!(printed.lines, 12);
    assert_eq!(printed.before.to_string(), "ready");
    assert_eq!(printed.after.to_string(), "ready");
    assert_eq!(sim.printed(), sale_receipt_on_paper());
}

#[test]
fn paper_out_mid_receipt_is_an_unfinished_receipt_and_the_reprint_is_whole() {
    let sim = SimulatedPrinter::start().unwrap();
    let mut printer = connect(&sim);
    sim.paper_out_after(5);

    let err = printer.print(&sale_receipt()).unwrap_err();
    // Lines go in chunks of four with a status check after each: the first chunk was
    // confirmed, the printer stopped during the second.
    assert_eq!(
        err.progress,
        Progress::Unfinished {
            confirmed_lines: 4,
            total_lines: 12
        }
    );
    let PrintStop::NotReady { status, .. } = &err.stop else {
        panic!("expected the printer to stop for want of paper, got {err}");
    };
    assert_eq!(status.paper, Paper::Out);
    assert_eq!(
        err.to_string(),
        format!(
            "printer {}: paper out; receipt unfinished (4 of 12 lines confirmed before the \
             stop, no cut); reprint it",
            sim.path()
        )
    );
    assert_eq!(sim.take_printed(), sale_receipt_on_paper()[..5]);

    // Printing again before new paper is refused outright.
    let err = printer.print(&sale_receipt()).unwrap_err();
    assert_eq!(err.progress, Progress::NothingSent);
    assert!(sim.printed().is_empty());

    sim.paper_in();
    printer.print(&sale_receipt()).unwrap();
    assert_eq!(sim.printed(), sale_receipt_on_paper());
}

#[test]
fn paper_running_out_exactly_at_the_end_leaves_the_receipt_uncut_and_unfinished() {
    let sim = SimulatedPrinter::start().unwrap();
    let mut printer = connect(&sim).chunk_lines(100);
    sim.paper_out_after(12);
    let err = printer.print(&sale_receipt()).unwrap_err();
    assert_eq!(
        err.progress,
        Progress::Unfinished {
            confirmed_lines: 0,
            total_lines: 12
        }
    );
    let mut on_paper = sale_receipt_on_paper();
    assert_eq!(on_paper.pop(), Some(Printout::Cut));
    assert_eq!(sim.printed(), on_paper);
}

#[test]
fn an_open_cover_refuses_the_receipt_with_a_clear_message() {
    let sim = SimulatedPrinter::start().unwrap();
    let mut printer = connect(&sim);
    sim.set_cover_open(true);
    assert_eq!(printer.status().unwrap().to_string(), "cover open");
    let err = printer.print(&sale_receipt()).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "printer {}: cover open; receipt not printed (nothing was sent)",
            sim.path()
        )
    );
    assert!(sim.printed().is_empty());

    sim.set_cover_open(false);
    printer.print(&sale_receipt()).unwrap();
    assert_eq!(sim.printed(), sale_receipt_on_paper());
}

#[test]
fn paper_near_end_is_reported_and_the_receipt_still_prints() {
    let sim = SimulatedPrinter::start().unwrap();
    let mut printer = connect(&sim);
    sim.near_end();
    let printed = printer.print(&sale_receipt()).unwrap();
    assert_eq!(printed.before.paper, Paper::NearEnd);
    assert_eq!(printed.after.to_string(), "ready, paper near end");
    assert_eq!(sim.printed(), sale_receipt_on_paper());
}

fn assert_quick(started: Instant, limit: Duration) {
    let took = started.elapsed();
    assert!(took < limit, "took {took:?}, more than {limit:?}");
}

#[test]
fn garbage_answers_are_a_typed_error_at_once_and_nothing_prints() {
    let sim = SimulatedPrinter::start().unwrap();
    let mut printer = connect(&sim);
    sim.answer(Answering::Garbage);
    let started = Instant::now();
    let err = printer.status().unwrap_err();
    assert_quick(started, Duration::from_millis(500));
    assert!(
        matches!(
            err,
            PrinterError::Garbage {
                asked: "printer status",
                answer: 0xFF,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(
        err.to_string(),
        format!(
            "printer {}: answered the printer status query with 0xff, which is not a status \
             byte (wrong baud rate, or not an ESC/POS printer?)",
            sim.path()
        )
    );
    let err = printer.print(&sale_receipt()).unwrap_err();
    assert!(matches!(
        err,
        PrintError {
            stop: PrintStop::Device(PrinterError::Garbage { .. }),
            progress: Progress::NothingSent,
        }
    ));
    assert!(sim.printed().is_empty());

    // The noise left on the line is not taken for the next answer.
    sim.answer(Answering::Normally);
    assert_eq!(printer.status().unwrap().to_string(), "ready");
}

#[test]
fn a_silent_printer_times_out_instead_of_hanging() {
    let sim = SimulatedPrinter::start().unwrap();
    let mut printer = connect(&sim).status_timeout(Duration::from_millis(300));
    sim.answer(Answering::Silent);
    let started = Instant::now();
    let err = printer.print(&sale_receipt()).unwrap_err();
    assert_quick(started, Duration::from_secs(1));
    assert!(matches!(
        err.stop,
        PrintStop::Device(PrinterError::Silent { .. })
    ));
    assert_eq!(
        err.to_string(),
        format!(
            "printer {}: no answer to a status query within 300 ms (is it on and connected?); \
             receipt not printed (nothing was sent)",
            sim.path()
        )
    );
}

#[test]
fn a_missing_port_is_named_in_the_error() {
    let Err(err) = EscPosPrinter::open(Path::new("/dev/no-such-printer"), 9600) else {
        panic!("opened a port that does not exist");
    };
    assert!(
        err.to_string()
            .starts_with("printer /dev/no-such-printer: opening the port: "),
        "{err}"
    );
}

fn kiosk_config(dir: &Path, printer: Option<&str>) -> PathBuf {
    let path = dir.join("kiosk.toml");
    let devices = printer
        .map(|port| format!("[devices]\nprinter = {{ port = \"{port}\", baud = 9600 }}\n"))
        .unwrap_or_default();
    std::fs::write(
        &path,
        format!(
            "[kiosk]\nterminal_id = \"CLI-0003\"\nregion = \"3701\"\ndata_dir = \"data\"\n\n\
             [trust]\ndir = \"trust\"\n\n{devices}"
        ),
    )
    .unwrap();
    path
}

#[test]
fn printer_test_prints_a_chinese_and_english_page_and_reports_status() {
    let dir = tempfile::tempdir().unwrap();
    let sim = SimulatedPrinter::start().unwrap();
    sim.near_end();
    let config = kiosk_config(dir.path(), Some(sim.path()));
    let out = selfvend_with(&config, &["printer", "test"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        format!(
            "printer {0}: ready, paper near end\n\
             printer {0} after printing: ready, paper near end\n\
             printed the test receipt: 11 lines and a cut\n",
            sim.path()
        )
    );
    let printed = sim.printed();
    assert_eq!(printed.len(), 12);
    assert_eq!(
        printed[0],
        bold_double("自助售电终端 测试页", Alignment::Centre)
    );
    assert_eq!(printed[1], centred("Self-service kiosk test page"));
    assert_eq!(printed[3], plain("终端号 Terminal: CLI-0003"));
    let Printout::Line(time) = &printed[4] else {
        panic!("expected the time line, got {}", printed[4]);
    };
    assert!(
        time.text.starts_with("时间 Time: 20") && time.text.ends_with(" UTC"),
        "{time}"
    );
    assert_eq!(printed[7], plain("购电金额：50.00元"));
    assert_eq!(printed[11], Printout::Cut);
}

#[test]
fn printer_test_fails_clearly_when_the_receipt_is_not_finished() {
    let dir = tempfile::tempdir().unwrap();
    let sim = SimulatedPrinter::start().unwrap();
    let config = kiosk_config(dir.path(), None);

    sim.set_cover_open(true);
    let out = selfvend_with(&config, &["printer", "test", "--port", sim.path()]);
    assert!(!out.status.success());
    assert_eq!(
        text(&out.stdout),
        format!(
            "printer {0}: cover open\nprinter {0} after printing: cover open\n",
            sim.path()
        )
    );
    assert_eq!(
        text(&out.stderr),
        format!(
            "selfvend: printer {}: cover open; receipt not printed (nothing was sent)\n",
            sim.path()
        )
    );

    sim.set_cover_open(false);
    sim.paper_out_after(6);
    let out = selfvend_with(&config, &["printer", "test", "--port", sim.path()]);
    assert!(!out.status.success());
    assert_eq!(
        text(&out.stderr),
        format!(
            "selfvend: printer {}: paper out; receipt unfinished (4 of 11 lines confirmed \
             before the stop, no cut); reprint it\n",
            sim.path()
        )
    );
    assert_eq!(sim.printed().len(), 6);

    let out = selfvend_with(&config, &["printer", "test"]);
    assert!(!out.status.success());
    assert_eq!(
        text(&out.stderr),
        format!(
            "selfvend: no printer: give --port, or set `[devices] printer = {{ port = \
             \"/dev/ttyS0\", baud = 9600 }}` in {}\n",
            config.display()
        )
    );
}

#[test]
fn the_printer_program_shows_what_it_prints_and_takes_commands() {
    let dir = tempfile::tempdir().unwrap();
    let config = kiosk_config(dir.path(), None);
    let bin = selfvend_bin().with_file_name("selfvend-printer");
    let mut child = Command::new(&bin)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{}: {e}", bin.display()));
    let mut stdin = child.stdin.take().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut next = move || lines.next().expect("a line").expect("stdout");
    let first = next();
    let port = first
        .strip_prefix("printer on ")
        .and_then(|rest| rest.split(';').next())
        .unwrap_or_else(|| panic!("expected `printer on /dev/pts/N; …`, got {first:?}"))
        .to_string();

    let out = selfvend_with(&config, &["printer", "test", "--port", &port]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(next(), "[centred, bold, double] 自助售电终端 测试页");
    assert_eq!(next(), "[centred] Self-service kiosk test page");
    let shown: Vec<String> = (0..10).map(|_| next()).collect();
    assert_eq!(shown[1], "终端号 Terminal: CLI-0003");
    assert_eq!(shown[3], "[bold] 粗体 Bold");
    assert_eq!(shown[4], "[double] 倍宽倍高 Double");
    assert_eq!(shown[8], "[centred] 测试完毕 / End of test");
    assert_eq!(shown[9], "--- cut ---");

    writeln!(stdin, "cover-open").unwrap();
    assert_eq!(next(), "cover open");
    let out = selfvend_with(&config, &["printer", "test", "--port", &port]);
    assert!(!out.status.success());
    writeln!(stdin, "quit").unwrap();
    assert!(child.wait().unwrap().success());
}
