//! `selfvend backend …`: operator checks against the configured utility backends.

use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, bail};
use clap::Subcommand;
use selfvend_host::backend::{Account, BillAccount, CardRef, check_account_number};
use selfvend_host::config::{BackendEntry, KioskConfig};
use selfvend_host::plugin::{BackendSession, PluginRuntime};

#[derive(Subcommand)]
pub enum BackendCommand {
    /// Sends a heartbeat to each configured backend (or the one named) through its dialect.
    Ping {
        #[arg(long)]
        backend: Option<String>,
    },
    /// Looks up the account of a card and prints what the dialect returned.
    Account {
        #[arg(long)]
        card_serial: String,
        /// The card's utility code; it picks the backend (default: the only backend, or the
        /// first utility code of the one named with --backend).
        #[arg(long)]
        utility: Option<String>,
        #[arg(long)]
        backend: Option<String>,
    },
    /// Prints an account's open bills (户号), as its backend's dialect returns them.
    Bill {
        #[arg(long)]
        account: String,
        /// The utility code that picks the backend (default: the only backend, or the one
        /// named with --backend).
        #[arg(long)]
        utility: Option<String>,
        #[arg(long)]
        backend: Option<String>,
    },
}

pub fn run(cmd: BackendCommand, config: &Path) -> anyhow::Result<ExitCode> {
    let config = KioskConfig::load(config)?;
    match cmd {
        BackendCommand::Ping { backend } => ping(&config, backend.as_deref()),
        BackendCommand::Account {
            card_serial,
            utility,
            backend,
        } => account(
            &config,
            &card_serial,
            utility.as_deref(),
            backend.as_deref(),
        ),
        BackendCommand::Bill {
            account,
            utility,
            backend,
        } => bill(&config, &account, utility.as_deref(), backend.as_deref()),
    }
}

fn ping(config: &KioskConfig, only: Option<&str>) -> anyhow::Result<ExitCode> {
    let backends: Vec<&BackendEntry> = config
        .backends
        .iter()
        .filter(|b| only.is_none_or(|name| b.name == name))
        .collect();
    if backends.is_empty() {
        bail!("{}", no_backend(config, only));
    }
    let runtime = selfvend_ui::kiosk::runtime(config)?;
    let mut failed = false;
    for entry in backends {
        let started = Instant::now();
        let result = session(config, &runtime, entry).and_then(|mut s| {
            let info = s.about()?;
            s.ping()?;
            Ok(info)
        });
        let ms = started.elapsed().as_secs_f64() * 1e3;
        match result {
            Ok(info) => println!(
                "{} ({} {} at {}): answered in {ms:.1} ms",
                entry.name, info.name, info.version, entry.endpoint.address
            ),
            Err(e) => {
                failed = true;
                println!(
                    "{} ({} at {}): {e:#}",
                    entry.name, entry.dialect, entry.endpoint.address
                );
            }
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn account(
    config: &KioskConfig,
    card_serial: &str,
    utility: Option<&str>,
    backend: Option<&str>,
) -> anyhow::Result<ExitCode> {
    let entry = pick_backend(config, utility, backend)?;
    let utility = utility.unwrap_or_else(|| entry.utility_codes[0].as_str());
    let card = CardRef {
        card_serial: card_serial.into(),
        utility_code: utility.into(),
        ..CardRef::default()
    };
    let runtime = selfvend_ui::kiosk::runtime(config)?;
    let account = session(config, &runtime, entry)?
        .account_query(&card)
        .with_context(|| format!("{} at {}", entry.name, entry.endpoint.address))?;
    print_account(&account);
    Ok(ExitCode::SUCCESS)
}

/// The backend named, or the one serving `utility`, or the only one.
fn pick_backend<'c>(
    config: &'c KioskConfig,
    utility: Option<&str>,
    backend: Option<&str>,
) -> anyhow::Result<&'c BackendEntry> {
    match (utility, backend) {
        (_, Some(name)) => config.backends.iter().find(|b| b.name == name),
        (Some(code), None) => config.backend_for(code),
        (None, None) if config.backends.len() == 1 => config.backends.first(),
        (None, None) => bail!(
            "{} backends are configured; name one with --backend or --utility",
            config.backends.len()
        ),
    }
    .with_context(|| no_backend(config, backend.or(utility)))
}

fn bill(
    config: &KioskConfig,
    account: &str,
    utility: Option<&str>,
    backend: Option<&str>,
) -> anyhow::Result<ExitCode> {
    check_account_number(account).map_err(anyhow::Error::msg)?;
    let entry = pick_backend(config, utility, backend)?;
    let runtime = selfvend_ui::kiosk::runtime(config)?;
    let bills = session(config, &runtime, entry)?
        .bill_query(account)
        .with_context(|| format!("{} at {}", entry.name, entry.endpoint.address))?;
    print_bills(&bills);
    Ok(ExitCode::SUCCESS)
}

fn print_bills(a: &BillAccount) {
    println!("account:  {} {}", a.customer_number, a.customer_name);
    println!("address:  {}", a.address);
    for b in &a.bills {
        let late = if b.late_fee.0 > 0 {
            format!(" + late fee {} yuan", b.late_fee)
        } else {
            String::new()
        };
        println!(
            "bill:     {} {} {} yuan{late}",
            b.period, b.bill_id, b.amount
        );
    }
    println!("owed:     {} yuan", a.total);
}

fn print_account(a: &Account) {
    println!("customer number: {}", a.customer_number);
    println!("customer name:   {}", a.customer_name);
    println!("address:         {}", a.address);
    println!("meter number:    {}", a.meter_number);
    println!("card serial:     {}", a.card_serial);
    println!("status:          {:?}", a.status);
    println!("purchase count:  {}", a.purchase_count);
    println!("price:           {} fen/kWh", a.price_fen_per_kwh);
    println!("arrears:         {} fen", a.arrears.0);
    match &a.last_purchase {
        Some(p) => println!(
            "last purchase:   {} fen, {} Wh, {} at {}",
            p.amount.0, p.energy.0, p.at, p.place
        ),
        None => println!("last purchase:   none"),
    }
}

fn no_backend(config: &KioskConfig, wanted: Option<&str>) -> String {
    let names: Vec<String> = config
        .backends
        .iter()
        .map(|b| format!("{} ({})", b.name, b.utility_codes.join(", ")))
        .collect();
    match wanted {
        Some(w) => format!(
            "no backend `{w}` in {}; configured: {}",
            config.path.display(),
            if names.is_empty() {
                "none".into()
            } else {
                names.join("; ")
            }
        ),
        None => format!("{} configures no backend", config.path.display()),
    }
}

/// A fresh dialect session for `entry`, its plugin loaded from the config.
fn session(
    config: &KioskConfig,
    runtime: &PluginRuntime,
    entry: &BackendEntry,
) -> anyhow::Result<BackendSession> {
    let plugin = config
        .plugins
        .iter()
        .find(|p| p.name == entry.dialect)
        .with_context(|| format!("no [[plugin]] named `{}`", entry.dialect))?;
    let plugin = runtime.load(&plugin.name, &plugin.file)?;
    Ok(plugin.backend_session(entry.endpoint.clone())?)
}
