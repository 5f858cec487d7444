//! `selfvend bench …`: performance figures, printed one per line.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Subcommand;
use selfvend_host::config::KioskConfig;
use selfvend_host::plugin::inspect::PluginKind;
use selfvend_host::plugin::trust::TrustStore;
use selfvend_host::plugin::{Plugin, PluginLimits, PluginRuntime};

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

fn instantiate_and_call(plugin: &Plugin) -> anyhow::Result<()> {
    match plugin.kind() {
        PluginKind::CardCodec => {
            plugin.card_session()?.about()?;
        }
        PluginKind::BackendDialect => {
            let endpoint = selfvend_host::backend::Endpoint {
                address: "127.0.0.1:9".into(),
                connect_timeout: Duration::from_millis(100),
                io_timeout: Duration::from_millis(100),
                max_request_bytes: 1024,
                max_reply_bytes: 1024,
            };
            plugin.backend_session(endpoint)?.about()?;
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
