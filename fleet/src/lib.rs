//! The fleet server: kiosks pair with a one-time code, then every request they make is signed
//! with their own key. Their journals are stored row by row with the hash chain checked across
//! batches; their heartbeats say what each kiosk shows and holds. The server keeps no state of
//! its own: everything is in PostgreSQL, so several instances can serve one database.

pub mod alerts;
pub mod auth;
pub mod commands;
pub mod console;
pub mod error;
pub mod heartbeat;
pub mod ingest;
pub mod kiosk_config;
pub mod notifier;
pub mod pairing;
pub mod rollouts;
pub mod sessions;
pub mod status;
pub mod store;
pub mod users;

use axum::Router;
use axum::routing::post;
use deadpool_postgres::Pool;

/// What every handler shares: the database, and when a kiosk is down or stuck.
#[derive(Clone)]
pub struct Fleet {
    pub db: Pool,
    /// The same database, its commits not waiting for the disk: for states the next report
    /// replaces (heartbeats), never for journal rows or money.
    pub states: Pool,
    pub limits: status::Limits,
    pub keys: std::sync::Arc<auth::Keys>,
    /// Journal batches this instance stores at once, at most: a fleet catching up after an
    /// outage waits its turn (or is told to send again) rather than starving heartbeats and the
    /// console of the database.
    pub ingest_slots: std::sync::Arc<tokio::sync::Semaphore>,
}

/// Journal batches the server stores at once (more add no throughput on a small database
/// server, only latency for everything else).
const INGEST_SLOTS: usize = 4;

impl Fleet {
    /// The fleet on the database at `url`.
    pub fn new(url: &str, limits: status::Limits) -> anyhow::Result<Fleet> {
        Ok(Fleet {
            db: store::pool(url, None)?,
            states: store::pool(url, Some("SET synchronous_commit = off"))?,
            limits,
            keys: Default::default(),
            ingest_slots: std::sync::Arc::new(tokio::sync::Semaphore::new(INGEST_SLOTS)),
        })
    }
}

/// The kiosks' API and the console.
pub fn router(fleet: Fleet) -> Router {
    console::router()
        .route("/api/pair", post(pairing::pair))
        .route("/api/journal", post(ingest::journal))
        .route("/api/heartbeat", post(heartbeat::heartbeat))
        .route("/api/plugin", post(rollouts::download))
        .layer(axum::extract::DefaultBodyLimit::max(
            selfvend_fleet_wire::MAX_BODY_BYTES,
        ))
        .with_state(fleet)
}
