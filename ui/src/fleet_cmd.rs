//! `selfvend fleet`: pair the kiosk with its fleet server, and send what the fleet is owed now.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;
use selfvend_host::config::KioskConfig;
use selfvend_host::fleet::{self, FleetLink};
use selfvend_host::fleet_wire::Heartbeat;

#[derive(Subcommand)]
pub enum FleetCommand {
    /// Pairs the kiosk with a fleet server by a one-time code from its console.
    Pair {
        /// The fleet server, `http://host:port`.
        #[arg(long)]
        server: String,
        #[arg(long)]
        code: String,
    },
    /// Sends a heartbeat and the journal rows the fleet does not hold yet, once.
    Sync,
}

pub fn run(cmd: FleetCommand, config: &Path) -> anyhow::Result<ExitCode> {
    let config = KioskConfig::load(config)?;
    let data_dir = &config.kiosk.data_dir;
    match cmd {
        FleetCommand::Pair { server, code } => {
            let paired = fleet::pair(
                data_dir,
                &server,
                &code,
                config.kiosk.terminal_id.as_str(),
                &config.kiosk.region,
            )
            .with_context(|| format!("pairing with {server}"))?;
            println!("paired with {} as kiosk {}", paired.server, paired.kiosk_id);
        }
        FleetCommand::Sync => {
            let link = FleetLink::load(data_dir)?.ok_or(fleet::FleetError::NotPaired)?;
            let mut beat = idle_heartbeat();
            beat.cash_box.capacity = config.kiosk.cash_box_capacity.unwrap_or(0);
            let synced = link.sync(&beat)?;
            println!(
                "sent {} journal rows; the fleet holds {} of them",
                synced.sent, synced.head
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A heartbeat from the command line: no customer screen is shown by this process.
fn idle_heartbeat() -> Heartbeat {
    Heartbeat {
        screen: "operator-cli".into(),
        screen_secs: 0,
        money_in_fen: 0,
        devices: Vec::new(),
        cash_box: Default::default(),
        open_items: 0,
        items: Vec::new(),
        period: Default::default(),
        software_version: env!("CARGO_PKG_VERSION").into(),
        plugins: Vec::new(),
        journal_head: 0,
        rollouts: Vec::new(),
        commands_done: Vec::new(),
        config: None,
    }
}
