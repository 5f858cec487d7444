//! `selfvend clearing …`: the operator clears the kiosk (清机): start, take out and count the
//! cash box, end with the report and the backends' reconciliation. The operator PIN is read
//! from stdin, never from the command line, and never printed or logged.

use std::io::BufRead;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Subcommand;
use selfvend_host::clearing::{self, ClearingReport, Difference};
use selfvend_host::config::{KioskConfig, PinHash, PluginRole};
use selfvend_host::journal::Journal;
use selfvend_host::money::Fen;
use selfvend_host::plugin::Plugin;

use selfvend_ui::kiosk::runtime;

#[derive(Subcommand)]
pub enum ClearingCommand {
    /// Starts clearing the current period: sales stop until clearing ends.
    Start {
        /// Read the operator PIN from stdin (the only way to give it).
        #[arg(long)]
        pin_stdin: bool,
    },
    /// Records the operator's count of the cash box, in fen.
    Count {
        #[arg(long)]
        fen: u64,
    },
    /// Records that the cash box was taken out.
    BoxRemoved,
    /// Records that the emptied cash box was put back.
    BoxReplaced,
    /// Ends clearing: closes the period with its report, opens the next, and reconciles with
    /// each backend.
    End {
        /// The operator's count, in fen (replaces an earlier `count`).
        #[arg(long)]
        counted_fen: Option<u64>,
        #[arg(long)]
        pin_stdin: bool,
    },
    /// Prints a period's report: the current one's running totals, or a closed one's.
    Report {
        #[arg(long)]
        period: Option<i64>,
        /// Print the report as JSON instead of the receipt text.
        #[arg(long)]
        json: bool,
    },
    /// Sends a closed period's report to each backend again (after a failed reconciliation).
    Reconcile {
        #[arg(long)]
        period: i64,
    },
    /// Hashes an operator PIN (4 to 12 digits, read from stdin) for the config's [operator].
    HashPin {
        #[arg(long)]
        pin_stdin: bool,
        #[arg(long, default_value_t = clearing::DEFAULT_PIN_ITERATIONS)]
        iterations: u32,
    },
}

pub fn run(cmd: ClearingCommand, path: &Path) -> anyhow::Result<ExitCode> {
    match cmd {
        ClearingCommand::HashPin {
            pin_stdin,
            iterations,
        } => {
            let hash = clearing::hash_pin(&read_pin(pin_stdin)?, iterations)?;
            // Checked as the config will check it.
            PinHash::try_from(hash.to_string()).map_err(anyhow::Error::msg)?;
            println!("[operator]\npin_hash = \"{hash}\"");
        }
        ClearingCommand::Start { pin_stdin } => {
            let (config, mut journal) = kiosk(path)?;
            let report = clearing::start(&mut journal, &config, &read_pin(pin_stdin)?)?;
            print_report(&report);
            println!(
                "clearing period {}: sales are stopped; take out and count the cash box, then \
                 `selfvend clearing end`",
                report.period_id
            );
        }
        ClearingCommand::Count { fen } => {
            let (_, mut journal) = kiosk(path)?;
            let cash = clearing::count(&mut journal, Fen(fen))?;
            println!(
                "counted {} yuan; the journal expects {} yuan ({} banknotes): {}",
                Fen(fen),
                cash.expected,
                cash.banknotes,
                difference(cash.difference)
            );
        }
        ClearingCommand::BoxRemoved => {
            let (_, mut journal) = kiosk(path)?;
            clearing::box_removed(&mut journal)?;
            println!("cash box removal recorded");
        }
        ClearingCommand::BoxReplaced => {
            let (_, mut journal) = kiosk(path)?;
            clearing::box_replaced(&mut journal)?;
            println!("cash box replacement recorded");
        }
        ClearingCommand::End {
            counted_fen,
            pin_stdin,
        } => {
            let (config, mut journal) = kiosk(path)?;
            let pin = read_pin(pin_stdin)?;
            let dialects = load_dialects(&config);
            let ended =
                clearing::end(&mut journal, &config, &pin, counted_fen.map(Fen), &dialects)?;
            print_report(&ended.report);
            println!(
                "period {} closed; period {} is open and sales resume",
                ended.report.period_id, ended.next_period
            );
            return Ok(print_reconciliations(
                ended.report.period_id,
                &ended.reconciliations,
            ));
        }
        ClearingCommand::Report { period, json } => {
            let (config, journal) = kiosk(path)?;
            let report = clearing::report(&journal, &config, period)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print_report(&report);
            }
        }
        ClearingCommand::Reconcile { period } => {
            let (config, mut journal) = kiosk(path)?;
            let report = clearing::report(&journal, &config, Some(period))?;
            if report.closed_at.is_none() {
                bail!("period {period} is not closed yet; end clearing first");
            }
            let dialects = load_dialects(&config);
            let answers = clearing::reconcile(&mut journal, &config, &dialects, &report)?;
            return Ok(print_reconciliations(period, &answers));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The kiosk's config and journal; a missing journal is an error here, not a new one.
fn kiosk(config: &Path) -> anyhow::Result<(KioskConfig, Journal)> {
    let config = KioskConfig::load(config)?;
    let path = config.kiosk.data_dir.join("journal.sqlite");
    if !path.exists() {
        bail!("no journal at {}", path.display());
    }
    let journal = Journal::open(&path)?;
    Ok((config, journal))
}

/// One line of stdin, without its line ending.
fn read_pin(pin_stdin: bool) -> anyhow::Result<String> {
    if !pin_stdin {
        bail!("give the operator PIN on stdin with --pin-stdin (never on the command line)");
    }
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("reading the operator PIN from stdin")?;
    let pin = line.trim_end_matches(['\n', '\r']).to_string();
    if pin.is_empty() {
        bail!("no operator PIN on stdin");
    }
    Ok(pin)
}

/// The backend-dialect plugins the backends use; one that does not load is reported here and
/// its backend's reconciliation then fails with the rest carrying on.
fn load_dialects(config: &KioskConfig) -> Vec<Plugin> {
    let runtime = match runtime(config) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("selfvend: no backend can be reconciled: {e:#}");
            return Vec::new();
        }
    };
    config
        .plugins
        .iter()
        .filter(|p| p.role == PluginRole::BackendDialect)
        .filter(|p| config.backends.iter().any(|b| b.dialect == p.name))
        .filter_map(|p| match runtime.load(&p.name, &p.file) {
            Ok(plugin) => Some(plugin),
            Err(e) => {
                eprintln!("selfvend: dialect plugin `{}` did not load: {e}", p.name);
                None
            }
        })
        .collect()
}

fn print_report(report: &ClearingReport) {
    for line in report.receipt().lines() {
        println!("{}", line.text);
    }
}

fn difference(d: Difference) -> String {
    match d {
        Difference::NotCounted => "not counted".into(),
        Difference::Matched => "matched".into(),
        Difference::Over(f) => format!("MISMATCH: {f} yuan over"),
        Difference::Short(f) => format!("MISMATCH: {f} yuan short"),
    }
}

fn print_reconciliations(period: i64, answers: &[clearing::BackendReconciliation]) -> ExitCode {
    let mut failed = Vec::new();
    for a in answers {
        match &a.result {
            Ok(r) if r.matched => println!("{}: reconciled, the totals match", a.backend),
            Ok(r) => {
                failed.push(a.backend.as_str());
                println!(
                    "{}: the backend's totals differ: {}",
                    a.backend,
                    r.differences.join("; ")
                );
            }
            Err(why) => {
                failed.push(a.backend.as_str());
                println!("{}: reconciliation failed: {why}", a.backend);
            }
        }
    }
    if failed.is_empty() {
        return ExitCode::SUCCESS;
    }
    eprintln!(
        "selfvend: period {period} is not reconciled with {}; see the journal, and retry with \
         `selfvend clearing reconcile --period {period}`",
        failed.join(", ")
    );
    ExitCode::FAILURE
}
