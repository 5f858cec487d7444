//! The PostgreSQL store: the connection pool and the migrations, applied in order under an
//! advisory lock so instances starting together apply each once.

use deadpool_postgres::{Config, Hook, HookError, Pool, Runtime};
use tokio_postgres::NoTls;

/// Each migration takes the schema from its index to its index + 1.
const MIGRATIONS: &[&str] = &[
    include_str!("../migrations/001_kiosks_and_journals.sql"),
    include_str!("../migrations/002_console_users.sql"),
    include_str!("../migrations/003_alert_delivery.sql"),
    include_str!("../migrations/004_replay_and_releases.sql"),
    include_str!("../migrations/005_rollouts.sql"),
    include_str!("../migrations/006_remote_commands.sql"),
    include_str!("../migrations/007_kiosk_config.sql"),
    include_str!("../migrations/008_superseded_rollouts.sql"),
];

/// Any number, the same for every instance: the lock migrations run under.
const MIGRATION_LOCK: i64 = 0x5e1f_7e4d;

/// A pool of connections to `url` (`postgres://user@host:port/db` or key=value form); each new
/// connection first runs `session` (`SET …`), if given, leaving the URL's own options alone.
pub fn pool(url: &str, session: Option<&'static str>) -> anyhow::Result<Pool> {
    let mut config = Config::new();
    config.url = Some(url.to_string());
    let mut builder = config.builder(NoTls)?.runtime(Runtime::Tokio1);
    if let Some(sql) = session {
        builder = builder.post_create(Hook::async_fn(move |client, _| {
            Box::pin(async move { client.batch_execute(sql).await.map_err(HookError::Backend) })
        }));
    }
    Ok(builder.build()?)
}

/// Brings the schema up to date; returns its version.
pub async fn migrate(pool: &Pool) -> anyhow::Result<usize> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
             version INTEGER PRIMARY KEY,
             applied_at TIMESTAMPTZ NOT NULL DEFAULT now())",
    )
    .await?;
    let applied: i32 = tx
        .query_one(
            "SELECT coalesce(max(version), 0) FROM schema_migrations",
            &[],
        )
        .await?
        .get(0);
    let applied = applied as usize;
    if applied > MIGRATIONS.len() {
        anyhow::bail!(
            "the fleet database's schema is version {applied}, newer than this server's ({})",
            MIGRATIONS.len()
        );
    }
    for (i, migration) in MIGRATIONS.iter().enumerate().skip(applied) {
        tx.batch_execute(migration).await?;
        tx.execute(
            "INSERT INTO schema_migrations (version) VALUES ($1)",
            &[&(i as i32 + 1)],
        )
        .await?;
    }
    tx.commit().await?;
    Ok(MIGRATIONS.len())
}
