//! `selfvend trust`: the utility's root key, kept offline, and the statements by which it
//! endorses a vendor's key for the utility's kiosks.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;
use selfvend_host::plugin::trust::{Endorsement, PublicKey, SecretKey, TrustStore, endorsement};

#[derive(Subcommand)]
pub enum TrustCommand {
    /// Make the utility's root key: writes KEY (secret, mode 0600; keep it offline) and
    /// KEY.pub, which goes into each kiosk's trust directory under `roots/`.
    RootKeygen {
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value = "utility root")]
        name: String,
    },
    /// Endorse a vendor's public key with the root key: writes VENDOR.endorsement (or --out),
    /// which a kiosk with that root in `roots/` takes into its trust store.
    Endorse {
        /// The root's secret key file.
        #[arg(long)]
        root: PathBuf,
        /// The vendor's public key file (`*.pub`).
        vendor: PathBuf,
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// List what a trust directory trusts: its root keys, its vendor keys (installed or
    /// endorsed), and the endorsements it refused and why.
    List {
        #[arg(long)]
        trust: PathBuf,
    },
}

pub fn run(cmd: TrustCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        TrustCommand::RootKeygen { out, name } => {
            let key = SecretKey::generate(&name);
            let public = key.write(&out)?;
            println!(
                "wrote {} (secret: keep it offline) and {} (key id {}): install it in each \
                 kiosk's trust directory as roots/{}",
                out.display(),
                public.display(),
                key.public_id(),
                public
                    .file_name()
                    .map_or(String::new(), |n| n.to_string_lossy().into_owned())
            );
        }
        TrustCommand::Endorse { root, vendor, out } => {
            let root = SecretKey::read(&root)?;
            let key = PublicKey::read(&vendor)?;
            let out = out.unwrap_or_else(|| endorsement::default_path(&vendor));
            if out.exists() {
                anyhow::bail!("{} exists: refusing to overwrite it", out.display());
            }
            std::fs::write(&out, Endorsement::write(&root, &key))
                .map_err(|e| anyhow::anyhow!("{}: {e}", out.display()))?;
            println!(
                "wrote {}: root key {} endorses {} (key {})",
                out.display(),
                root.public_id(),
                key.name,
                key.id()
            );
        }
        TrustCommand::List { trust } => {
            let store = TrustStore::load(&trust)?;
            for root in store.roots() {
                println!("root    {} {}", root.id(), root.name);
            }
            for key in store.keys() {
                println!("trusted {} {}", key.id(), key.name);
            }
            for why in store.refused() {
                println!("refused {why}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
