//! `selfvend cash …`: the cash acceptor as an operator checks it.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;
use selfvend_host::cash_acceptor::{
    CashAcceptor, CashError, CashEvent, CashHandler, Denomination, EscrowDecision, NotRecorded,
};
use selfvend_host::config::KioskConfig;
use selfvend_host::id003::{Id003Acceptor, Id003Settings};
use selfvend_host::money::Fen;

/// ID-003 validators talk at 9600 baud.
const ID003_BAUD: u32 = 9600;

#[derive(Subcommand)]
pub enum CashCommand {
    /// Enables every denomination on the ID-003 cash acceptor and prints each event on a line,
    /// stacking each banknote held in escrow, until interrupted.
    Watch {
        /// The acceptor's serial port (default: the config's `[devices] cash_acceptor`);
        /// 9600 baud.
        #[arg(long)]
        port: Option<PathBuf>,
        /// Give every banknote back instead of stacking it.
        #[arg(long)]
        return_all: bool,
        /// Stop after this many events.
        #[arg(long)]
        events: Option<usize>,
    },
}

pub fn run(cmd: CashCommand, config: &Path) -> anyhow::Result<ExitCode> {
    match cmd {
        CashCommand::Watch {
            port,
            return_all,
            events,
        } => {
            let (port, baud) = match port {
                Some(port) => (port, ID003_BAUD),
                None => {
                    let config = KioskConfig::load(config)?;
                    let device = config.devices.cash_acceptor.with_context(|| {
                        format!(
                            "{} names no `[devices] cash_acceptor`; give --port",
                            config.path.display()
                        )
                    })?;
                    (device.port, device.baud.0)
                }
            };
            watch(&port, baud, return_all, events)
        }
    }
}

/// Prints each event and answers escrow as told, counting what was credited.
struct Watcher {
    return_all: bool,
    events: usize,
    credited: Fen,
}

impl CashHandler for Watcher {
    fn event(&mut self, event: &CashEvent) -> Result<(), NotRecorded> {
        // The escrow line is printed with the decision, in `decide`.
        if !matches!(event, CashEvent::Escrow(_)) {
            println!("{event}");
            self.events += 1;
        }
        if let CashEvent::Credited(note) = event {
            self.credited = self
                .credited
                .checked_add(note.value())
                .ok_or_else(|| NotRecorded("the credited total overflows".into()))?;
        }
        Ok(())
    }

    fn decide(&mut self, note: Denomination) -> EscrowDecision {
        self.events += 1;
        if self.return_all {
            println!("escrow: {note}, returning it");
            EscrowDecision::Return
        } else {
            println!("escrow: {note}, stacking it");
            EscrowDecision::Stack
        }
    }
}

fn watch(
    port: &Path,
    baud: u32,
    return_all: bool,
    events: Option<usize>,
) -> anyhow::Result<ExitCode> {
    let mut acceptor = Id003Acceptor::open(port, baud, Id003Settings::default())?;
    acceptor.enable(&Denomination::ALL)?;
    println!(
        "cash acceptor on {} (ID-003, {baud} 8E1): accepting CNY 1, 5, 10, 20, 50 and 100",
        port.display()
    );
    let mut watcher = Watcher {
        return_all,
        events: 0,
        credited: Fen(0),
    };
    while events.is_none_or(|n| watcher.events < n) {
        match acceptor.poll(&mut watcher) {
            Ok(()) => {}
            // The line and the device recover from these; say so and poll again.
            Err(
                e @ (CashError::Timeout { .. }
                | CashError::Garbage { .. }
                | CashError::BadCrc { .. }
                | CashError::BadLength { .. }
                | CashError::Unexpected { .. }),
            ) => eprintln!("{e}"),
            Err(e) => return Err(e.into()),
        }
    }
    // Nobody is watching any more: take no more banknotes.
    acceptor.enable(&[])?;
    println!("credited in total: {} yuan", watcher.credited);
    Ok(ExitCode::SUCCESS)
}
