//! `selfvend-printer`: a simulated ESC/POS receipt printer on a fresh pty, controlled from stdin.

use std::io::BufRead;
use std::process::ExitCode;

use selfvend_sim::escpos_printer::{Answering, SimulatedPrinter};

const COMMANDS: &str = "paper-out, paper-out-after N, paper-in, near-end, cover-open, \
                        cover-close, silent, garbage, normal, quit";

/// Creates a pty, prints `printer on /dev/pts/N; commands: …`, then each line the printer
/// prints (and `--- cut ---`) as it comes out. Reads commands from stdin: `paper-out`,
/// `paper-out-after N` (lines), `paper-in`, `near-end`, `cover-open`, `cover-close`, `silent`
/// (answer nothing, print nothing), `garbage` (answer status queries with noise), `normal`,
/// `quit`.
fn main() -> ExitCode {
    if std::env::args().len() > 1 {
        eprintln!("usage: selfvend-printer (then commands on stdin: {COMMANDS})");
        return ExitCode::FAILURE;
    }
    let printer = match SimulatedPrinter::start() {
        Ok(printer) => printer,
        Err(e) => {
            eprintln!("selfvend-printer: cannot create a pty: {e}");
            return ExitCode::FAILURE;
        }
    };
    let printouts = printer.subscribe();
    println!("printer on {}; commands: {COMMANDS}", printer.path());
    std::thread::spawn(move || {
        for printout in printouts {
            println!("{printout}");
        }
    });
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        let words: Vec<&str> = line.split_whitespace().collect();
        let said = match words[..] {
            [] => continue,
            ["paper-out"] => {
                printer.paper_out_after(0);
                "paper out".to_string()
            }
            ["paper-out-after", n] => match n.parse() {
                Ok(lines) => {
                    printer.paper_out_after(lines);
                    format!("paper runs out after {lines} lines")
                }
                Err(_) => format!("not a number of lines: {n}"),
            },
            ["paper-in"] => {
                printer.paper_in();
                "new paper roll in".into()
            }
            ["near-end"] => {
                printer.near_end();
                "paper near end".into()
            }
            ["cover-open"] => {
                printer.set_cover_open(true);
                "cover open".into()
            }
            ["cover-close"] => {
                printer.set_cover_open(false);
                "cover closed".into()
            }
            ["silent"] => {
                printer.answer(Answering::Silent);
                "silent: answering nothing, printing nothing".into()
            }
            ["garbage"] => {
                printer.answer(Answering::Garbage);
                "answering status queries with garbage".into()
            }
            ["normal"] => {
                printer.answer(Answering::Normally);
                "answering normally".into()
            }
            ["quit"] => break,
            _ => format!("unknown command `{line}`; commands: {COMMANDS}"),
        };
        println!("{said}");
    }
    ExitCode::SUCCESS
}
