//! Remote commands: an operator or admin asks one kiosk to go out of service, come back, send
//! its journal again, or send a period's reconciliation again. A command is carried in the
//! kiosk's heartbeat replies ([`PENDING_SQL`]) until the kiosk reports it done ([`record`]);
//! the kiosk does each once, and its journal says who asked.

use deadpool_postgres::GenericClient;
use selfvend_fleet_wire::{CommandDone, CommandKind};

use crate::Fleet;
use crate::error::ApiError;

/// Commands a heartbeat's reply carries at once, at most.
const PENDING: i64 = 16;

/// Gives `kiosk` a command; returns its id.
pub async fn issue(
    fleet: &Fleet,
    kiosk: &str,
    command: CommandKind,
    period: Option<i64>,
    by: &str,
) -> Result<i64, ApiError> {
    match (command, period) {
        (CommandKind::ResendReconciliation, None) => {
            return Err(ApiError::BadRequest(
                "a reconciliation is sent again for a period: name it".into(),
            ));
        }
        (CommandKind::ResendReconciliation, Some(p)) if p < 1 => {
            return Err(ApiError::BadRequest(format!("period {p}: not a period")));
        }
        (CommandKind::ResendReconciliation, _) => {}
        (_, Some(_)) => {
            return Err(ApiError::BadRequest(format!(
                "{} takes no period",
                command.as_str()
            )));
        }
        (_, None) => {}
    }
    let row = fleet
        .db
        .get()
        .await?
        .query_opt(
            "INSERT INTO kiosk_commands (kiosk_id, command, period, issued_by)
             SELECT id, $2, $3, $4 FROM kiosks WHERE id = $1 AND revoked_at IS NULL
             RETURNING id",
            &[&kiosk, &command.as_str(), &period, &by],
        )
        .await?;
    row.map(|r| r.get(0))
        .ok_or_else(|| ApiError::BadRequest(format!("no paired kiosk {kiosk}")))
}

/// The commands `kiosk` ($1) has not reported done, as a JSON array, the oldest first.
pub fn pending_sql() -> String {
    format!(
        "(SELECT coalesce(json_agg(json_build_object('id', c.id, 'command', c.command,
                 'period', c.period, 'by', c.issued_by) ORDER BY c.id), '[]'::json)
          FROM (SELECT * FROM kiosk_commands WHERE kiosk_id = $1 AND done_at IS NULL
                ORDER BY id LIMIT {PENDING}) c)"
    )
}

/// Records what `kiosk` reports done; a command is done once, by its own kiosk.
pub async fn record(
    db: &impl GenericClient,
    kiosk: &str,
    done: &[CommandDone],
) -> Result<(), ApiError> {
    for d in done {
        db.execute(
            "UPDATE kiosk_commands SET done_at = now(), outcome = $3
             WHERE id = $1 AND kiosk_id = $2 AND done_at IS NULL",
            &[&d.id, &kiosk, &d.outcome],
        )
        .await?;
    }
    Ok(())
}

/// A kiosk's commands, the newest first: (id, command, period, by, issued, done, outcome).
pub type CommandRow = (
    i64,
    String,
    Option<i64>,
    String,
    String,
    Option<String>,
    Option<String>,
);

pub async fn of_kiosk(fleet: &Fleet, kiosk: &str) -> Result<Vec<CommandRow>, ApiError> {
    Ok(fleet
        .db
        .get()
        .await?
        .query(
            "SELECT id, command, period, issued_by,
                    to_char(issued_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS'),
                    to_char(done_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS'), outcome
             FROM kiosk_commands WHERE kiosk_id = $1 ORDER BY id DESC LIMIT 50",
            &[&kiosk],
        )
        .await?
        .iter()
        .map(|r| {
            (
                r.get(0),
                r.get(1),
                r.get(2),
                r.get(3),
                r.get(4),
                r.get(5),
                r.get(6),
            )
        })
        .collect())
}
