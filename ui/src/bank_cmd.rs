//! `selfvend bank …`: the kiosk's acquirer, for an operator: sign on, settle the batch, send
//! the reversals not yet acknowledged, list the bank-card debits (card numbers masked).

use std::path::Path;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Subcommand;
use selfvend_host::config::KioskConfig;
use selfvend_host::money::Fen;
use selfvend_host::pin_pad::PinPad;
use selfvend_host::sale::BankLink;

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
            let journal = crate::kiosk::journal(&config)?;
            let states: &[&str] = if all {
                &[
                    "intent",
                    "approved",
                    "declined",
                    "failed",
                    "reversing",
                    "reversed",
                ]
            } else {
                &["intent", "reversing"]
            };
            let debits = journal.debits(states)?;
            if debits.is_empty() {
                println!("no {}debits", if all { "" } else { "undecided " });
            }
            for d in debits {
                println!(
                    "#{:<4} batch {:06} trace {:06} {:>10} yuan  {}  {:<9} sale {}{}",
                    d.id,
                    d.batch,
                    d.stan,
                    Fen(d.amount_fen).to_string(),
                    d.pan_masked,
                    d.state,
                    d.serial.map_or("-".into(), |s| s.to_string()),
                    if d.reversal_attempts > 0 {
                        format!(" ({} reversal tries)", d.reversal_attempts)
                    } else {
                        String::new()
                    }
                );
            }
        }
        BankCommand::SignOn => {
            let link = bank_link(&config)?;
            let mut engine = crate::kiosk::sale_engine(&config)?;
            let batch = engine.sign_on(&link)?;
            println!("signed on to {}: batch {batch:06}", link.entry.name);
        }
        BankCommand::Settle => {
            let link = bank_link(&config)?;
            let mut engine = crate::kiosk::sale_engine(&config)?;
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
            let link = bank_link(&config)?;
            let mut engine = crate::kiosk::sale_engine(&config)?;
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

/// The config's acquirer: its dialect plugin and the PIN pad that MACs for it.
fn bank_link(config: &KioskConfig) -> anyhow::Result<BankLink> {
    let Some(acquirer) = &config.acquirer else {
        bail!(
            "{} has no [acquirer]: this kiosk takes cash only",
            config.path.display()
        );
    };
    let Some(pad) = &config.devices.pinpad else {
        bail!(
            "{} has no [devices.pinpad]: the acquirer's keys live in the PIN pad",
            config.path.display()
        );
    };
    let plugin = config
        .plugins
        .iter()
        .find(|p| p.name == acquirer.dialect)
        .context("the acquirer's dialect plugin is not configured")?;
    let runtime = crate::backend_cmd::runtime(config)?;
    let dialect = runtime.load(&plugin.name, &plugin.file)?;
    let pad = PinPad::open(&pad.port, Duration::from_millis(500))?;
    Ok(BankLink::new(
        acquirer.clone(),
        dialect,
        Arc::new(Mutex::new(pad)),
    ))
}
