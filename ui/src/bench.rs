//! `selfvend bench …`: performance figures, printed one per line.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Subcommand;
use selfvend_host::backend::{
    CardRef, Endpoint, PaymentKind, Purchase, SaleRequest, WriteConfirmation,
};
use selfvend_host::config::{KioskConfig, PluginRole};
use selfvend_host::money::Fen;
use selfvend_host::plugin::inspect::PluginKind;
use selfvend_host::plugin::trust::TrustStore;
use selfvend_host::plugin::{Plugin, PluginLimits, PluginRuntime};
use selfvend_sim::reference_backend::{Listen, ReferenceBackend};

#[derive(Subcommand)]
pub enum BenchCommand {
    /// Compile time, cached load time, and fresh instance + one call, for both allocators.
    Plugin {
        plugin: PathBuf,
        /// The trust directory (default: the config's).
        #[arg(long)]
        trust: Option<PathBuf>,
        /// Instantiate+call rounds per allocator.
        #[arg(long, default_value_t = 5000)]
        rounds: usize,
    },
    /// Account query + sale + write confirmation against the reference backend on loopback,
    /// through each configured dialect that the reference backend speaks.
    Backend {
        /// Sales per dialect.
        #[arg(long, default_value_t = 500)]
        rounds: usize,
    },
}

pub fn run(cmd: BenchCommand, config: &Path) -> anyhow::Result<ExitCode> {
    match cmd {
        BenchCommand::Plugin {
            plugin,
            trust,
            rounds,
        } => {
            let trust = match trust {
                Some(dir) => dir,
                None => KioskConfig::load(config)?.trust_dir,
            };
            bench_plugin(&plugin, &trust, rounds)?;
        }
        BenchCommand::Backend { rounds } => bench_backend(&KioskConfig::load(config)?, rounds)?,
    }
    Ok(ExitCode::SUCCESS)
}

fn bench_plugin(path: &Path, trust: &Path, rounds: usize) -> anyhow::Result<()> {
    let name = path
        .file_stem()
        .map_or("plugin".into(), |s| s.to_string_lossy().into_owned());
    for pooling in [true, false] {
        let cache = tempfile::tempdir().context("making a scratch cache directory")?;
        let limits = PluginLimits {
            pooling,
            ..PluginLimits::default()
        };
        let runtime = PluginRuntime::new(
            TrustStore::load(trust)?,
            &cache.path().join("cache"),
            limits,
        )?;
        println!(
            "allocator: {}",
            if pooling { "pooling" } else { "on-demand" }
        );

        let started = Instant::now();
        let plugin = runtime.load(&name, path)?;
        let compile = started.elapsed();
        let mut cached = Vec::new();
        for _ in 0..20 {
            let started = Instant::now();
            runtime.load(&name, path)?;
            cached.push(started.elapsed());
        }
        let mut round_trips = Vec::with_capacity(rounds);
        for _ in 0..rounds.min(200) {
            instantiate_and_call(&plugin)?;
        }
        for _ in 0..rounds {
            let started = Instant::now();
            instantiate_and_call(&plugin)?;
            round_trips.push(started.elapsed());
        }
        println!("compile: {:.1} ms", ms(compile));
        println!("cached load: {:.2} ms", ms(percentile(&mut cached, 50)));
        println!(
            "instantiate+call p50: {:.1} us",
            us(percentile(&mut round_trips, 50))
        );
        println!(
            "instantiate+call p99: {:.1} us",
            us(percentile(&mut round_trips, 99))
        );
    }
    Ok(())
}

fn bench_backend(config: &KioskConfig, rounds: usize) -> anyhow::Result<()> {
    let books = tempfile::tempdir().context("making a scratch directory for the books")?;
    let backend = ReferenceBackend::start(&books.path().join("books.sqlite"), Listen::default())?;
    let runtime = crate::backend_cmd::runtime(config)?;
    let mut ran = 0;
    for entry in config
        .plugins
        .iter()
        .filter(|p| p.role == PluginRole::BackendDialect)
    {
        let plugin = runtime.load(&entry.name, &entry.file)?;
        let info = plugin.backend_session(endpoint(String::new()))?.about()?;
        // The reference backend speaks each dialect on its own port; a seeded card per utility.
        let (address, card_serial, utility) = match info.name.as_str() {
            "fixed-text" => (backend.fixed_text_address(), "3701000000000001", "3701"),
            "json-http" => (backend.json_http_address(), "4401000000000001", "4401"),
            other => {
                println!(
                    "{}: the reference backend does not speak {other}",
                    entry.name
                );
                continue;
            }
        };
        let mut card = CardRef {
            card_serial: card_serial.into(),
            utility_code: utility.into(),
            ..CardRef::default()
        };
        // Kiosk serials are unique per terminal: one terminal per dialect.
        let terminal_id = format!("BENCH-{}", info.name);
        let mut samples = Vec::with_capacity(rounds);
        for serial in 1..=(rounds + rounds / 10) as u64 {
            let started = Instant::now();
            let mut session = plugin.backend_session(endpoint(address.to_string()))?;
            session.account_query(&card)?;
            let grant = session.sale(&SaleRequest {
                terminal_id: terminal_id.clone(),
                kiosk_serial: serial,
                card: card.clone(),
                purchase: Purchase::Money(Fen(1000)),
                payment: PaymentKind::Cash,
                paid: Fen(1000),
            })?;
            session.confirm_write(&WriteConfirmation {
                terminal_id: terminal_id.clone(),
                kiosk_serial: serial,
                card_serial: card.card_serial.clone(),
                written: true,
                return_data: None,
            })?;
            card.purchase_count = grant.purchase_count;
            // The first tenth warms caches and is not counted.
            if serial as usize > rounds / 10 {
                samples.push(started.elapsed());
            }
        }
        println!(
            "{} ({} over {}): sale round trip p50: {:.2} ms, p99: {:.2} ms",
            entry.name,
            info.name,
            address,
            ms(percentile(&mut samples, 50)),
            ms(percentile(&mut samples, 99))
        );
        ran += 1;
    }
    if ran == 0 {
        anyhow::bail!(
            "{} configures no backend dialect the reference backend speaks",
            config.path.display()
        );
    }
    Ok(())
}

fn endpoint(address: String) -> Endpoint {
    Endpoint {
        address,
        connect_timeout: Duration::from_millis(1000),
        io_timeout: Duration::from_millis(5000),
        max_request_bytes: 64 * 1024,
        max_reply_bytes: 64 * 1024,
    }
}

fn instantiate_and_call(plugin: &Plugin) -> anyhow::Result<()> {
    match plugin.kind() {
        PluginKind::CardCodec => {
            plugin.card_session()?.about()?;
        }
        PluginKind::BackendDialect => {
            plugin.backend_session(endpoint(String::new()))?.about()?;
        }
    }
    Ok(())
}

fn percentile(samples: &mut [Duration], p: usize) -> Duration {
    samples.sort();
    samples[(samples.len() * p / 100).min(samples.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}
