//! `selfvend plugin …` and `selfvend check`: keys, signatures and plugin declarations.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;
use selfvend_host::config::{KioskConfig, PluginRole};
use selfvend_host::plugin::inspect::{PluginKind, inspect};
use selfvend_host::plugin::trust::{SecretKey, TrustStore};
use selfvend_host::plugin::{CacheStatus, PluginRuntime};
use sha2::{Digest, Sha256};

#[derive(Subcommand)]
pub enum PluginCommand {
    /// Make a signing key: writes KEY (secret, mode 0600) and KEY.pub.
    Keygen {
        #[arg(long)]
        out: PathBuf,
        /// The signer's name, shown when a plugin it signed is inspected.
        #[arg(long, default_value = "unnamed signer")]
        name: String,
    },
    /// Sign a plugin: writes PLUGIN.wasm.sig.
    Sign {
        #[arg(long)]
        key: PathBuf,
        plugin: PathBuf,
    },
    /// Exit 0 only when PLUGIN is signed by a key in the trust directory.
    Verify {
        #[arg(long)]
        trust: PathBuf,
        plugin: PathBuf,
    },
    /// Print a plugin's kind, contract, imports, hash and size (and signer, given --trust).
    Inspect {
        #[arg(long)]
        trust: Option<PathBuf>,
        plugin: PathBuf,
    },
    /// The conformance kit: run the plugin on the kiosk's runtime against a virtual card or a
    /// scripted backend, and report each check; exits non-zero when one fails.
    Test(Box<crate::plugin_test_cmd::TestArgs>),
    /// Start a plugin project that builds with the command in its README:
    /// `--kind card-codec --lang rust|python|js DIR`.
    New(crate::plugin_new_cmd::NewArgs),
}

pub fn run(cmd: PluginCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        PluginCommand::Test(args) => return crate::plugin_test_cmd::run(*args),
        PluginCommand::New(args) => crate::plugin_new_cmd::run(args)?,
        PluginCommand::Keygen { out, name } => {
            let key = SecretKey::generate(&name);
            let public = key.write(&out)?;
            println!(
                "wrote {} (secret) and {} (key id {})",
                out.display(),
                public.display(),
                key.public_id()
            );
        }
        PluginCommand::Sign { key, plugin } => {
            let key = SecretKey::read(&key)?;
            let bytes = read(&plugin)?;
            let sig = key.sign_file(&plugin, &bytes)?;
            println!("wrote {} (key id {})", sig.display(), key.public_id());
        }
        PluginCommand::Verify { trust, plugin } => {
            let store = TrustStore::load(&trust)?;
            let bytes = read(&plugin)?;
            let signer = store.verify(&plugin, &bytes)?;
            println!("{}: signed by {signer}", plugin.display());
        }
        PluginCommand::Inspect { trust, plugin } => {
            let bytes = read(&plugin)?;
            let found =
                inspect(&bytes).with_context(|| format!("{}: refused", plugin.display()))?;
            println!("file: {}", plugin.display());
            println!("kind: {}", found.kind);
            println!("contract: {}@{}", found.kind.package(), found.version);
            println!("sha256: {}", hex::encode(Sha256::digest(&bytes)));
            println!("size: {} bytes", bytes.len());
            println!("exports: {}", found.exports.join(", "));
            println!("imports:");
            for import in &found.imports {
                println!("  {import}");
            }
            if let Some(trust) = trust {
                let store = TrustStore::load(&trust)?;
                match store.verify(&plugin, &bytes) {
                    Ok(signer) => println!("signer: {signer}"),
                    Err(e) => {
                        println!("signer: none trusted ({e})");
                        return Ok(ExitCode::FAILURE);
                    }
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Loads the config and every plugin it names, reporting each.
pub fn check(config: &Path) -> anyhow::Result<ExitCode> {
    let config = KioskConfig::load(config)?;
    let trust = selfvend_host::rollout::trust_store(&config)?;
    let runtime = PluginRuntime::new(
        trust,
        &config.plugin_cache_dir(),
        config.plugin_limits.clone(),
    )?;
    println!(
        "kiosk {} in region {}: config {} is valid",
        config.kiosk.terminal_id.as_str(),
        config.kiosk.region,
        config.path.display()
    );
    let mut failed = false;
    for entry in &config.plugins {
        match runtime.load(&entry.name, &entry.file) {
            Ok(plugin) => {
                let expected = match entry.role {
                    PluginRole::CardCodec => PluginKind::CardCodec,
                    PluginRole::BackendDialect => PluginKind::BackendDialect,
                    PluginRole::AcquirerDialect => PluginKind::AcquirerDialect,
                };
                if plugin.kind() != expected {
                    println!(
                        "plugin {}: configured as {expected} but is a {}",
                        entry.name,
                        plugin.kind()
                    );
                    failed = true;
                    continue;
                }
                let cache = match &plugin.cache_status {
                    CacheStatus::Hit => "cached".to_string(),
                    CacheStatus::Compiled => "compiled".to_string(),
                    CacheStatus::Recompiled(why) => format!("recompiled ({why})"),
                };
                println!(
                    "plugin {}: {} {}@{}, signed by {}, {} in {:.1} ms",
                    entry.name,
                    plugin.kind(),
                    plugin.kind().package(),
                    plugin.inspection.version,
                    plugin.signer,
                    cache,
                    plugin.load_time.as_secs_f64() * 1e3
                );
            }
            Err(e) => {
                println!("plugin {}: {e}", entry.name);
                failed = true;
            }
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn read(path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading {}", path.display()))
}
