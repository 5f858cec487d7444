//! The notifier: every second it opens `down` alerts for silent kiosks and delivers alerts to
//! the webhook, each when it opens and when it closes, retried with exponential backoff (up to
//! five minutes apart) until the webhook answers 2xx. Rows are claimed with `SKIP LOCKED` and a
//! lease, so several instances share the work; no row is locked while the webhook is called.

use std::time::Duration;

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::Fleet;
use crate::alerts;
use crate::error::ApiError;

/// Runs until the process ends.
pub async fn run(fleet: Fleet, webhook: Option<String>) {
    loop {
        if let Err(e) = alerts::sweep(&fleet).await {
            tracing::warn!("alert sweep: {e}");
        }
        if let Some(url) = &webhook
            && let Err(e) = deliver(&fleet, url).await
        {
            tracing::warn!("alert delivery: {e}");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// How long a claimed delivery is another instance's to leave alone.
const LEASE_SECS: f64 = 30.0;

/// Delivers what is due; returns how many the webhook took. Each alert is claimed by pushing
/// its next attempt a lease ahead (in a short commit, `SKIP LOCKED`), posted with no
/// transaction open, then marked sent or given its backoff, each in its own commit.
pub async fn deliver(fleet: &Fleet, url: &str) -> Result<usize, ApiError> {
    let due = {
        let mut client = fleet.db.get().await?;
        let tx = client.transaction().await?;
        let due = tx
            .query(
                "UPDATE alerts SET next_attempt_at = now() + make_interval(secs => $1)
                 WHERE id IN (
                     SELECT id FROM alerts
                     WHERE next_attempt_at <= now()
                       AND (opened_sent_at IS NULL
                            OR (closed_at IS NOT NULL AND closed_sent_at IS NULL))
                     ORDER BY id LIMIT 50 FOR UPDATE SKIP LOCKED)
                 RETURNING id, kiosk_id, kind, detail, opened_at::text, closed_at::text,
                           opened_sent_at IS NULL, attempts,
                           (SELECT terminal_id FROM kiosks k WHERE k.id = kiosk_id)",
                &[&LEASE_SECS],
            )
            .await?;
        tx.commit().await?;
        due
    };
    let mut delivered = 0;
    for row in &due {
        let id: i64 = row.get(0);
        let opening: bool = row.get(6);
        let event = json!({
            "event": if opening { "opened" } else { "closed" },
            "alert": id,
            "kiosk": row.get::<_, String>(1),
            "terminal_id": row.get::<_, String>(8),
            "kind": row.get::<_, String>(2),
            "detail": row.get::<_, String>(3),
            "opened_at": row.get::<_, String>(4),
            "closed_at": row.get::<_, Option<String>>(5),
        });
        let client = fleet.db.get().await?;
        match post(url, &event.to_string()).await {
            Ok(()) => {
                let column = if opening {
                    "opened_sent_at"
                } else {
                    "closed_sent_at"
                };
                client
                    .execute(
                        &format!(
                            "UPDATE alerts SET {column} = now(), attempts = 0, last_error = NULL,
                                    next_attempt_at = now() WHERE id = $1"
                        ),
                        &[&id],
                    )
                    .await?;
                delivered += 1;
            }
            Err(why) => {
                let attempts: i32 = row.get(7);
                let backoff =
                    f64::from(2u32.saturating_pow(attempts.clamp(0, 16) as u32)).min(300.0);
                client
                    .execute(
                        "UPDATE alerts SET attempts = attempts + 1, last_error = $2,
                                next_attempt_at = now() + make_interval(secs => $3)
                         WHERE id = $1",
                        &[&id, &why, &backoff],
                    )
                    .await?;
            }
        }
    }
    Ok(delivered)
}

/// POSTs `body` to `url` (`http://host:port/path`); `Err` says why it was not taken.
async fn post(url: &str, body: &str) -> Result<(), String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("{url}: only http:// webhooks are supported"))?;
    let (host, path) = rest
        .split_once('/')
        .map_or((rest, "/".to_string()), |(h, p)| (h, format!("/{p}")));
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(host)
            .await
            .map_err(|e| e.to_string())?;
        let request = format!(
            "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let mut head = [0u8; 12];
        stream
            .read_exact(&mut head)
            .await
            .map_err(|e| format!("no answer: {e}"))?;
        let status = std::str::from_utf8(&head[9..12])
            .ok()
            .and_then(|s| s.parse::<u16>().ok())
            .ok_or("the answer is not HTTP")?;
        if (200..300).contains(&status) {
            Ok(())
        } else {
            Err(format!("HTTP {status}"))
        }
    };
    tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .map_err(|_| "no answer in 5 s".to_string())?
}
