//! `selfvend-fleet`: the fleet server and its admin commands.

use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
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
    /// Adds a console user; the password is read from standard input.
    UserAdd {
        #[arg(long)]
        name: String,
        /// viewer, operator or admin.
        #[arg(long, default_value = "viewer")]
        role: String,
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
