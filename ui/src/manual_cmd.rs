//! `selfvend manual …`: what the kiosk could not finish on its own, for an operator.

use std::path::Path;
use std::process::ExitCode;

use clap::Subcommand;
use selfvend_host::config::KioskConfig;
use selfvend_host::sale::Resolution;

#[derive(Subcommand)]
pub enum ManualCommand {
    /// Lists the open items (all of them with `--all`).
    List {
        #[arg(long)]
        all: bool,
    },
    /// Settles an item: a refund (only for a sale the backend never made), a re-sell, or a
    /// dismissal (a caught banknote that was not found).
    #[command(group = clap::ArgGroup::new("resolution").required(true))]
    Resolve {
        id: i64,
        #[arg(long, group = "resolution")]
        refund: bool,
        #[arg(long, group = "resolution")]
        resell: bool,
        /// Close an item about a caught banknote that was not found in the kiosk.
        #[arg(long, group = "resolution")]
        dismiss: bool,
        /// What the operator did, for the journal.
        #[arg(long)]
        note: String,
    },
    /// Raises an item about a sale (a customer's complaint).
    Raise {
        #[arg(long)]
        sale: u64,
        #[arg(long)]
        reason: String,
    },
}

pub fn run(cmd: ManualCommand, config: &Path) -> anyhow::Result<ExitCode> {
    let config = KioskConfig::load(config)?;
    match cmd {
        ManualCommand::List { all } => {
            let items = selfvend_ui::kiosk::journal(&config)?.manual_items(all)?;
            if items.is_empty() {
                println!("no {}items", if all { "" } else { "open " });
            }
            for i in items {
                println!(
                    "#{:<4} {:<8} sale {:<8} card {:<18} {}{}",
                    i.id,
                    i.state,
                    i.serial.map_or("-".into(), |s| s.to_string()),
                    i.card_serial.as_deref().unwrap_or("-"),
                    i.reason,
                    i.resolution.map_or(String::new(), |r| format!(" → {r}"))
                );
            }
        }
        ManualCommand::Resolve {
            id,
            refund,
            resell,
            dismiss: _,
            note,
        } => {
            let resolution = if refund {
                Resolution::Refund
            } else if resell {
                Resolution::Resell
            } else {
                Resolution::Dismiss
            };
            let mut engine = selfvend_ui::kiosk::sale_engine(&config)?;
            println!("{}", engine.resolve_manual(id, resolution, &note)?);
        }
        ManualCommand::Raise { sale, reason } => {
            let id = selfvend_ui::kiosk::sale_engine(&config)?.raise_manual(sale, &reason)?;
            println!("item {id} raised for sale {sale}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
