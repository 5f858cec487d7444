//! `selfvend bank …`: the kiosk's acquirer, for an operator: sign on, settle the batch, send
//! the reversals not yet acknowledged, list the bank-card debits (card numbers masked).

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;
use selfvend_host::config::KioskConfig;
use selfvend_host::money::Fen;

#[derive(Subcommand)]
pub enum BankCommand {
    /// Signs on: a new batch opens and fresh working keys go into the PIN pad.
    SignOn,
    /// Settles the current batch with the acquirer; a balanced batch is followed by a sign-on.
    Settle,
    /// Sends every reversal the acquirer has not acknowledged.
    Reversals,
    /// Lists bank-card debits still to be decided (every one with `--all`).
    Debits {
        #[arg(long)]
        all: bool,
    },
}

pub fn run(cmd: BankCommand, config: &Path) -> anyhow::Result<ExitCode> {
    let config = KioskConfig::load(config)?;
    match cmd {
        BankCommand::Debits { all } => {
            let journal = selfvend_ui::kiosk::journal(&config)?;
            let states: &[&str] = if all {
                &[
                    "intent",
                    "approved",
                    "declined",
                    "failed",
                    "reversing",
                    "reversed",
                    "reversal-ended",
                    "kept",
                ]
            } else {
                &["intent", "reversing"]
            };
            let debits = journal.debits(states)?;
            if debits.is_empty() {
                println!("no {}debits", if all { "" } else { "undecided " });
            }
            for d in debits {
                // What an approved debit paid for: a sale, or a bill payment (缴费).
                let paid_for = match (d.serial, d.bill_serial) {
                    (Some(serial), _) => format!("sale {serial}"),
                    (None, Some(serial)) => format!("bill {serial}"),
                    (None, None) => "sale -".into(),
                };
                println!(
                    "#{:<4} batch {:06} trace {:06} {:>10} yuan  {}  {:<9} {paid_for}{}",
                    d.id,
                    d.batch,
                    d.stan,
                    Fen(d.amount_fen).to_string(),
                    d.pan_masked,
                    d.state,
                    if d.reversal_attempts > 0 {
                        format!(" ({} reversal tries)", d.reversal_attempts)
                    } else {
                        String::new()
                    }
                );
            }
        }
        BankCommand::SignOn => {
            let link = selfvend_ui::kiosk::bank_link(&config)?;
            let mut engine = selfvend_ui::kiosk::sale_engine(&config)?;
            let batch = engine.sign_on(&link)?;
            println!("signed on to {}: batch {batch:06}", link.entry.name);
        }
        BankCommand::Settle => {
            let link = selfvend_ui::kiosk::bank_link(&config)?;
            let mut engine = selfvend_ui::kiosk::sale_engine(&config)?;
            let batch = engine
                .signed_on()?
                .context("the kiosk has not signed on; run `selfvend bank sign-on`")?;
            let settled = engine.settle(&link)?;
            if !settled.balanced {
                println!(
                    "batch {batch:06} NOT balanced: the acquirer has {} purchases, {} yuan; see the \
                     journal (settlement-unbalanced)",
                    settled.acquirer_count, settled.acquirer_amount
                );
                return Ok(ExitCode::FAILURE);
            }
            println!(
                "batch {batch:06} settled, balanced: {} purchases, {} yuan; signed on to batch {:06}",
                settled.acquirer_count,
                settled.acquirer_amount,
                engine.signed_on()?.unwrap_or(0)
            );
        }
        BankCommand::Reversals => {
            let link = selfvend_ui::kiosk::bank_link(&config)?;
            let mut engine = selfvend_ui::kiosk::sale_engine(&config)?;
            let left = engine.journal().debits(&["reversing"])?.len();
            if left == 0 {
                println!("no reversals to send");
                return Ok(ExitCode::SUCCESS);
            }
            let acknowledged = engine.forward_reversals(&link)?;
            println!("{acknowledged} of {left} reversals acknowledged");
            if acknowledged < left {
                return Ok(ExitCode::FAILURE);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
