//! `selfvend`: the kiosk application and its operator and vendor command line.

mod backend_cmd;
mod bank_cmd;
mod bench;
mod card_cmd;
mod cash_cmd;
mod clearing_cmd;
mod fleet_cmd;
mod journal_cmd;
mod kiosk_cmd;
mod manual_cmd;
mod plugin_cmd;
mod plugin_new_cmd;
mod plugin_test_cmd;
mod printer_cmd;
mod trust_cmd;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "selfvend",
    version,
    about = "Self-service electricity sales kiosk for prepaid IC-card meters"
)]
struct Cli {
    /// The kiosk configuration file.
    #[arg(
        long,
        global = true,
        env = "SELFVEND_CONFIG",
        default_value = "config/demo.toml"
    )]
    config: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Sign, verify and inspect plugins.
    #[command(subcommand)]
    Plugin(plugin_cmd::PluginCommand),
    /// The utility's root key and its endorsements of vendor keys.
    #[command(subcommand)]
    Trust(trust_cmd::TrustCommand),
    /// Watch the card readers and read meter cards.
    #[command(subcommand)]
    Card(card_cmd::CardCommand),
    /// Watch the cash acceptor.
    #[command(subcommand)]
    Cash(cash_cmd::CashCommand),
    /// Clear the kiosk (清机): close the period, count the cash box, reconcile.
    #[command(subcommand)]
    Clearing(clearing_cmd::ClearingCommand),
    /// List and settle what the kiosk could not finish on its own.
    #[command(subcommand)]
    Manual(manual_cmd::ManualCommand),
    /// Show, verify and export the journal.
    #[command(subcommand)]
    Journal(journal_cmd::JournalCommand),
    /// Check the receipt printer.
    #[command(subcommand)]
    Printer(printer_cmd::PrinterCommand),
    /// Check the configured utility backends.
    #[command(subcommand)]
    Backend(backend_cmd::BackendCommand),
    /// The bank-card acquirer: sign on, settle, send reversals, list debits.
    #[command(subcommand)]
    Bank(bank_cmd::BankCommand),
    /// The fleet server: pair with it, send it what it does not hold yet.
    #[command(subcommand)]
    Fleet(fleet_cmd::FleetCommand),
    /// Measure the kiosk's performance figures.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Check the kiosk configuration and load every configured plugin.
    Check,
    /// Run the kiosk in its window: full screen on the configured devices, or in demo mode on
    /// simulated ones when the config names no hardware.
    Kiosk {
        /// A window rather than full screen.
        #[arg(long)]
        windowed: bool,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SELFVEND_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Plugin(cmd) => plugin_cmd::run(cmd),
        Command::Trust(cmd) => trust_cmd::run(cmd),
        Command::Backend(cmd) => backend_cmd::run(cmd, &cli.config),
        Command::Bank(cmd) => bank_cmd::run(cmd, &cli.config),
        Command::Fleet(cmd) => fleet_cmd::run(cmd, &cli.config),
        Command::Card(cmd) => card_cmd::run(cmd, &cli.config),
        Command::Cash(cmd) => cash_cmd::run(cmd, &cli.config),
        Command::Printer(cmd) => printer_cmd::run(cmd, &cli.config),
        Command::Journal(cmd) => journal_cmd::run(cmd, &cli.config),
        Command::Manual(cmd) => manual_cmd::run(cmd, &cli.config),
        Command::Clearing(cmd) => clearing_cmd::run(cmd, &cli.config),
        Command::Bench(cmd) => bench::run(cmd, &cli.config),
        Command::Check => plugin_cmd::check(&cli.config),
        Command::Kiosk { windowed } => kiosk_cmd::run(&cli.config, windowed),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("selfvend: {e:#}");
            ExitCode::FAILURE
        }
    }
}
