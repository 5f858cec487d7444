//! `selfvend-fleet`: the fleet server and its admin commands.

use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use selfvend_fleet::kiosk_config;
use selfvend_fleet::rollouts::{self, Action, Targets};
use selfvend_fleet::status::Limits;
use selfvend_fleet::users::{self, Role};
use selfvend_fleet::{Fleet, notifier, pairing, router, store};

#[derive(Parser)]
#[command(name = "selfvend-fleet", about = "The selfvend fleet server")]
struct Cli {
    /// The PostgreSQL database, as a URL (`postgres://user@host:port/db`) or key=value pairs.
    #[arg(long, env = "SELFVEND_FLEET_DB", global = true)]
    db: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serves the kiosks' API (the schema is brought up to date first).
    Serve {
        /// Where to listen; port 0 picks a free one. The address is printed on the first line.
        #[arg(long, default_value = "127.0.0.1:8470")]
        listen: SocketAddr,
        /// The kiosks' heartbeat interval: a kiosk is down after three missed.
        #[arg(long, default_value_t = 5)]
        heartbeat_secs: u64,
        /// A kiosk on one customer screen longer than this is stuck.
        #[arg(long, default_value_t = 300)]
        stuck_secs: u64,
        /// Where alerts are POSTed as JSON when they open and when they close (`http://…`).
        #[arg(long)]
        webhook: Option<String>,
    },
    /// Brings the database's schema up to date.
    Migrate,
    /// Prints one-time pairing codes, each valid for an hour, one per line.
    PairingCode {
        #[arg(long, default_value_t = 1)]
        count: usize,
    },
    /// Revokes a kiosk: every later request it signs is refused (pair it again to let it back).
    Revoke {
        #[arg(long)]
        kiosk: String,
    },
    /// Accepts the break in a kiosk's journal chain that holds its ingest, as an admin does in
    /// the console; the release is recorded under `--by`.
    Release {
        #[arg(long)]
        kiosk: String,
        #[arg(long)]
        by: String,
    },
    /// Uploads a plugin build as its vendor shipped it: FILE and its signature FILE.sig.
    Upload {
        file: std::path::PathBuf,
        #[arg(long)]
        by: String,
    },
    /// Plugin rollouts: canaries first, then the rest.
    Rollout {
        #[command(subcommand)]
        command: RolloutCommand,
    },
    /// Adds the utility's root's endorsement of a vendor key (`selfvend trust endorse` wrote
    /// it) for the fleet to carry to every kiosk; each kiosk takes it only if its own root
    /// signed it.
    Endorse {
        file: std::path::PathBuf,
        #[arg(long)]
        by: String,
    },
    /// Gives a kiosk a command, done between customers: out-of-service, back-in-service,
    /// send-journal, or resend-reconciliation (with --period).
    #[command(name = "command")]
    Tell {
        #[arg(long)]
        kiosk: String,
        command: String,
        #[arg(long)]
        period: Option<i64>,
        #[arg(long)]
        by: String,
    },
    /// The fleet's part of kiosks' configs: fleet-wide defaults and per-kiosk overrides.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Sets a kiosk's tags (rollouts choose kiosks by tag).
    Tag {
        #[arg(long)]
        kiosk: String,
        tags: Vec<String>,
    },
    /// Adds a console user; the password is read from standard input.
    UserAdd {
        #[arg(long)]
        name: String,
        /// viewer, operator or admin.
        #[arg(long, default_value = "viewer")]
        role: String,
    },
}

#[derive(Subcommand)]
enum RolloutCommand {
    /// Rolls an uploaded build of a plugin out to the kiosks chosen; prints its id.
    Create {
        /// The plugin, by the name the kiosks' configs give it.
        #[arg(long)]
        plugin: String,
        /// The build: its SHA-256 (as `upload` printed), or the file uploaded.
        #[arg(long)]
        build: String,
        #[arg(long)]
        region: Option<String>,
        #[arg(long)]
        tag: Option<String>,
        /// A kiosk by id (repeat for more).
        #[arg(long = "kiosk")]
        kiosks: Vec<String>,
        /// A canary by id (repeat for more); without one, the first `--canaries` kiosks.
        #[arg(long = "canary")]
        canary: Vec<String>,
        #[arg(long, default_value_t = 1)]
        canaries: usize,
        #[arg(long)]
        by: String,
    },
    /// Where each rollout (or only ID) is, kiosk by kiosk.
    Status { id: Option<i64> },
    /// No kiosk starts on it; those running it keep it.
    Pause {
        id: i64,
        #[arg(long)]
        by: String,
    },
    Resume {
        id: i64,
        #[arg(long)]
        by: String,
    },
    /// Every kiosk running it goes back to the build it ran before.
    Rollback {
        id: i64,
        #[arg(long)]
        by: String,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Sets the fleet's defaults, or with --kiosk one kiosk's overrides, to the TOML in FILE
    /// (`-` for standard input); checked as the kiosks check it, a new version each time.
    /// Prints the version.
    Set {
        file: std::path::PathBuf,
        #[arg(long)]
        kiosk: Option<String>,
        #[arg(long)]
        by: String,
    },
    /// Prints the fleet's defaults, or with --kiosk what that kiosk is sent, and each
    /// document's version.
    Show {
        #[arg(long)]
        kiosk: Option<String>,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let url = cli
        .db
        .context("no database: pass --db URL or set SELFVEND_FLEET_DB")?;
    let db = store::pool(&url, None)?;
    let version = store::migrate(&db)
        .await
        .with_context(|| format!("migrating the fleet database {url}"))?;
    let limits = match &cli.command {
        Command::Serve {
            heartbeat_secs,
            stuck_secs,
            ..
        } => Limits {
            heartbeat: Duration::from_secs(*heartbeat_secs),
            stuck_after: Duration::from_secs(*stuck_secs),
        },
        _ => Limits {
            heartbeat: Duration::from_secs(5),
            stuck_after: Duration::from_secs(300),
        },
    };
    drop(db);
    let fleet = Fleet::new(&url, limits)?;
    match cli.command {
        Command::Migrate => println!("schema version {version}"),
        Command::PairingCode { count } => {
            for _ in 0..count {
                println!("{}", pairing::new_code(&fleet).await?);
            }
        }
        Command::Revoke { kiosk } => {
            let revoked = fleet
                .db
                .get()
                .await?
                .execute(
                    "UPDATE kiosks SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL",
                    &[&kiosk],
                )
                .await?;
            anyhow::ensure!(revoked == 1, "no paired kiosk {kiosk}");
            println!("kiosk {kiosk} revoked");
        }
        Command::Release { kiosk, by } => {
            let by = format!("{by} (command line)");
            let released = selfvend_fleet::ingest::release(&fleet, &kiosk, None, &by).await?;
            anyhow::ensure!(
                released == selfvend_fleet::ingest::Released::Released,
                "kiosk {kiosk}'s ingest is not held"
            );
            println!("kiosk {kiosk}: ingest resumes from the break");
        }
        Command::Upload { file, by } => {
            let component =
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let sig_path = std::path::PathBuf::from(format!("{}.sig", file.display()));
            let signature = std::fs::read_to_string(&sig_path).with_context(|| {
                format!(
                    "reading {} (a plugin ships with its signature)",
                    sig_path.display()
                )
            })?;
            let name = file
                .file_name()
                .map_or_else(String::new, |n| n.to_string_lossy().into());
            let by = format!("{by} (command line)");
            let sha = rollouts::upload(&fleet, &name, &component, &signature, &by).await?;
            println!("{sha}");
        }
        Command::Rollout { command } => rollout_command(&fleet, command).await?,
        Command::Endorse { file, by } => {
            let statement = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            rollouts::add_endorsement(&fleet, &statement, &format!("{by} (command line)")).await?;
            println!(
                "{}: carried to every kiosk from their next heartbeat",
                file.display()
            );
        }
        Command::Tell {
            kiosk,
            command,
            period,
            by,
        } => {
            let kind = selfvend_fleet_wire::CommandKind::parse(&command).with_context(|| {
                format!(
                    "{command}: out-of-service, back-in-service, send-journal or \
                     resend-reconciliation"
                )
            })?;
            let by = format!("{by} (command line)");
            let id = selfvend_fleet::commands::issue(&fleet, &kiosk, kind, period, &by).await?;
            println!("{id}");
        }
        Command::Config { command } => config_command(&fleet, command).await?,
        Command::Tag { kiosk, tags } => {
            rollouts::tag(&fleet, &kiosk, &tags).await?;
            println!("kiosk {kiosk}: tags {}", tags.join(", "));
        }
        Command::UserAdd { name, role } => {
            let role = Role::parse(&role)
                .with_context(|| format!("--role {role}: viewer, operator or admin"))?;
            let mut password = String::new();
            std::io::stdin().read_line(&mut password)?;
            users::add(&fleet, &name, password.trim_end_matches(['\r', '\n']), role).await?;
            println!("user {name} added as {}", role.as_str());
        }
        Command::Serve {
            listen, webhook, ..
        } => {
            tokio::spawn(notifier::run(fleet.clone(), webhook));
            let listener = tokio::net::TcpListener::bind(listen)
                .await
                .with_context(|| format!("listening on {listen}"))?;
            println!("listening on http://{}", listener.local_addr()?);
            std::io::stdout().flush()?;
            axum::serve(listener, router(fleet))
                .with_graceful_shutdown(async {
                    let _ = tokio::signal::ctrl_c().await;
                })
                .await?;
        }
    }
    Ok(())
}

async fn config_command(fleet: &Fleet, command: ConfigCommand) -> anyhow::Result<()> {
    fn scope(kiosk: &Option<String>) -> kiosk_config::Scope<'_> {
        match kiosk {
            Some(id) => kiosk_config::Scope::Kiosk(id),
            None => kiosk_config::Scope::Defaults,
        }
    }
    match &command {
        ConfigCommand::Set { file, kiosk, by } => {
            let text = if file.as_os_str() == "-" {
                std::io::read_to_string(std::io::stdin()).context("reading standard input")?
            } else {
                std::fs::read_to_string(file)
                    .with_context(|| format!("reading {}", file.display()))?
            };
            let by = format!("{by} (command line)");
            let name = file.display().to_string();
            let version = kiosk_config::set(fleet, scope(kiosk), &name, &text, &by).await?;
            println!("{version}");
        }
        ConfigCommand::Show { kiosk } => {
            let shown = kiosk_config::show(fleet, scope(kiosk)).await?;
            println!("# version {}", shown.version);
            for set in &shown.set {
                println!("# {set}");
            }
            print!("{}", shown.toml);
        }
    }
    Ok(())
}

async fn rollout_command(fleet: &Fleet, command: RolloutCommand) -> anyhow::Result<()> {
    match command {
        RolloutCommand::Create {
            plugin,
            build,
            region,
            tag,
            kiosks,
            canary,
            canaries,
            by,
        } => {
            let sha256 = if selfvend_fleet_wire::is_sha256(&build) {
                build
            } else {
                let bytes = std::fs::read(&build).with_context(|| {
                    format!("--build {build}: neither a SHA-256 nor a file that can be read")
                })?;
                hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes))
            };
            let targets = Targets {
                region,
                tag,
                kiosks,
                canaries: canary,
                canary_count: canaries,
            };
            let id = rollouts::create(
                fleet,
                &plugin,
                &sha256,
                &targets,
                &format!("{by} (command line)"),
            )
            .await?;
            println!("{id}");
        }
        RolloutCommand::Status { id } => {
            let all = rollouts::status(fleet, id).await?;
            if let Some(id) = id {
                anyhow::ensure!(!all.is_empty(), "there is no rollout {id}");
            }
            for r in all {
                println!(
                    "rollout {} {} {} ({}): {}, {} of {} kiosks run it{}",
                    r.id,
                    r.plugin,
                    &r.sha256[..12],
                    r.file_name,
                    r.state,
                    r.active(),
                    r.kiosks.len(),
                    if r.why.is_empty() {
                        String::new()
                    } else {
                        format!(": {}", r.why)
                    }
                );
                for k in &r.kiosks {
                    println!(
                        "  {} {}{}: {}{}",
                        k.kiosk,
                        k.terminal_id,
                        if k.canary { " (canary)" } else { "" },
                        k.step.as_deref().unwrap_or("not yet heard"),
                        if k.detail.is_empty() {
                            String::new()
                        } else {
                            format!(": {}", k.detail)
                        }
                    );
                }
            }
        }
        RolloutCommand::Pause { id, by } => {
            rollouts::act(fleet, id, Action::Pause, &format!("{by} (command line)")).await?;
            println!("rollout {id} paused");
        }
        RolloutCommand::Resume { id, by } => {
            rollouts::act(fleet, id, Action::Resume, &format!("{by} (command line)")).await?;
            println!("rollout {id} resumed");
        }
        RolloutCommand::Rollback { id, by } => {
            rollouts::act(fleet, id, Action::RollBack, &format!("{by} (command line)")).await?;
            println!("rollout {id} rolled back");
        }
    }
    Ok(())
}
