//! `selfvend printer …`: the receipt printer as an operator checks it.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use clap::Subcommand;
use selfvend_host::config::KioskConfig;
use selfvend_host::escpos::EscPosPrinter;
use selfvend_host::receipt_printer::{Line, Receipt, ReceiptPrinter};

/// The line speed of a printer given by `--port` alone.
const DEFAULT_BAUD: u32 = 9600;

#[derive(Subcommand)]
pub enum PrinterCommand {
    /// Prints a test receipt in Chinese and English and reports the printer's status before
    /// and after. Fails if the receipt was not finished.
    Test {
        /// The printer's serial port (default: the config's `[devices] printer`).
        #[arg(long)]
        port: Option<PathBuf>,
    },
    /// Prints the last receipt again, marked as a copy (after paper out, or for a customer).
    Reprint {
        /// The printer's serial port (default: the config's `[devices] printer`).
        #[arg(long)]
        port: Option<PathBuf>,
    },
}

pub fn run(cmd: PrinterCommand, config: &Path) -> anyhow::Result<ExitCode> {
    let config = KioskConfig::load(config)?;
    match cmd {
        PrinterCommand::Test { port } => test(&config, port),
        PrinterCommand::Reprint { port } => reprint(&config, port),
    }
}

/// The printer `--port` names, or the config's.
fn open(config: &KioskConfig, port: Option<PathBuf>) -> anyhow::Result<(PathBuf, EscPosPrinter)> {
    let configured = config.devices.printer.as_ref();
    let baud = configured.map_or(DEFAULT_BAUD, |p| p.baud.0);
    let port = port
        .or_else(|| configured.map(|p| p.port.clone()))
        .with_context(|| {
            format!(
                "no printer: give --port, or set `[devices] printer = {{ port = \"/dev/ttyS0\", \
                 baud = 9600 }}` in {}",
                config.path.display()
            )
        })?;
    let printer = EscPosPrinter::open(&port, baud)?;
    Ok((port, printer))
}

fn reprint(config: &KioskConfig, port: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let (port, mut printer) = open(config, port)?;
    let mut engine = selfvend_ui::kiosk::sale_engine(config)?;
    match engine.reprint_last(&mut printer)? {
        None => println!("no receipt has been printed yet"),
        Some((of, true)) => println!("reprinted the receipt of {of} on {}", port.display()),
        Some((of, false)) => {
            println!(
                "the copy of the receipt of {of} was cut short on {} (see the journal)",
                port.display()
            );
            return Ok(ExitCode::FAILURE);
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn test(config: &KioskConfig, port: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let (port, mut printer) = open(config, port)?;
    println!("printer {}: {}", port.display(), printer.status()?);
    let receipt = test_receipt(config.kiosk.terminal_id.as_str(), SystemTime::now());
    let printed = printer.print(&receipt);
    // Even when printing stopped, say how the printer is now, if it still answers.
    if let Ok(after) = printer.status() {
        println!("printer {} after printing: {after}", port.display());
    }
    let printed = printed?;
    println!(
        "printed the test receipt: {} lines and a cut",
        printed.lines
    );
    Ok(ExitCode::SUCCESS)
}

/// A receipt in both languages using every style a sale receipt uses.
fn test_receipt(terminal_id: &str, now: SystemTime) -> Receipt {
    let rule = "-".repeat(32);
    Receipt::new()
        .with(Line::new("自助售电终端 测试页").bold().double().centred())
        .with(Line::new("Self-service kiosk test page").centred())
        .with(Line::new(&rule))
        .with(Line::new(format!("终端号 Terminal: {terminal_id}")))
        .with(Line::new(format!("时间 Time: {}", utc_timestamp(now))))
        .with(Line::new("粗体 Bold").bold())
        .with(Line::new("倍宽倍高 Double").double())
        .with(Line::new("购电金额：50.00元"))
        .with(Line::new("电表号：M3701000001"))
        .with(Line::new(&rule))
        .with(Line::new("测试完毕 / End of test").centred())
}

/// `YYYY-MM-DD hh:mm:ss UTC`. The kiosk's time zone is not configured yet, so say UTC.
fn utc_timestamp(now: SystemTime) -> String {
    let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_date(days);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rest / 3600,
        rest / 60 % 60,
        rest % 60
    )
}

/// The Gregorian date `days` after 1970-01-01 (Howard Hinnant's `civil_from_days`).
fn civil_date(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn timestamps_are_utc_calendar_dates() {
        let at = |secs| utc_timestamp(UNIX_EPOCH + Duration::from_secs(secs));
        assert_eq!(at(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(at(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(at(1_767_225_599), "2025-12-31 23:59:59 UTC");
    }
}
