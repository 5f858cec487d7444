//! Across the fleet: clearings (cash collections, also on each kiosk's page), sales and bill
//! payments per utility per day, and every open operator item.

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;

use super::html::{Words, esc, page, yuan};
use super::{LangQuery, reply, signed_in, user_bar};
use crate::Fleet;
use crate::error::ApiError;

/// Money as yuan from a report's JSON number of fen.
fn fen_of(v: &serde_json::Value) -> String {
    yuan(v.as_u64().unwrap_or(0))
}

/// Every kiosk's clearings (清机), the newest first.
pub(super) async fn clearings_page(
    State(fleet): State<Fleet>,
    Query(q): Query<LangQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (lang, session) = match signed_in(&fleet, &q, &headers).await? {
        Ok(signed_in) => signed_in,
        Err(to_sign_in) => return Ok(to_sign_in),
    };
    let w = lang.words();
    let body = user_bar(w, &session) + &clearings_table(&fleet, None, w).await?;
    Ok(reply(lang, StatusCode::OK, page(lang, w.clearings, &body)))
}

/// The clearings of `kiosk` (or of every kiosk), the newest first: the cash the box should
/// hold and what the operator counted, and each utility's sales in the period, from the
/// kiosks' own reports.
pub(super) async fn clearings_table(
    fleet: &Fleet,
    kiosk: Option<&str>,
    w: &Words,
) -> Result<String, ApiError> {
    let rows = fleet
        .db
        .get()
        .await?
        .query(
            "SELECT j.kiosk_id, k.terminal_id, j.body FROM journal_rows j
             JOIN kiosks k ON k.id = j.kiosk_id
             WHERE j.kind = 'clearing-ended' AND ($1::text IS NULL OR j.kiosk_id = $1)
             ORDER BY j.received_at DESC, j.kiosk_id, j.id DESC LIMIT 200",
            &[&kiosk],
        )
        .await?;
    let mut out = format!(
        "<table id=\"clearings\"><tr><th>{}</th><th>{}</th><th>{}</th><th>{}</th><th>{}</th>\
         <th>{}</th><th>{}</th><th>{}</th></tr>",
        w.kiosk,
        w.terminal,
        w.period,
        w.closed_at,
        w.expected,
        w.counted,
        w.difference,
        w.sold_by_utility
    );
    for r in &rows {
        let kiosk: String = r.get(0);
        let terminal: String = r.get(1);
        let entry: serde_json::Value =
            serde_json::from_str(r.get::<_, &str>(2)).unwrap_or_default();
        let report = &entry["report"];
        let cash = &report["cash"];
        let counted = if cash["counted"].is_null() {
            w.not_counted.to_string()
        } else {
            fen_of(&cash["counted"])
        };
        let difference = match &cash["difference"] {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Object(o) => o
                .iter()
                .map(|(k, v)| format!("{k} {}", fen_of(v)))
                .collect::<Vec<_>>()
                .join(", "),
            _ => String::new(),
        };
        let mut by_utility: std::collections::BTreeMap<String, u64> = Default::default();
        for u in report["utilities"].as_array().into_iter().flatten() {
            let sold = by_utility
                .entry(u["utility"].as_str().unwrap_or("").to_string())
                .or_default();
            *sold = sold.saturating_add(u["sold"]["fen"].as_u64().unwrap_or(0));
        }
        let sold = by_utility
            .iter()
            .map(|(u, fen)| format!("{}: {}", esc(u), yuan(*fen)))
            .collect::<Vec<_>>()
            .join("; ");
        out += &format!(
            "<tr><td><a href=\"/kiosks/{k}\">{k}</a></td><td>{}</td><td>{}</td><td>{}</td>\
             <td>{}</td><td>{}</td><td>{}</td><td>{sold}</td></tr>",
            esc(&terminal),
            entry["period"].as_i64().unwrap_or(0),
            esc(report["closed_at"].as_str().unwrap_or("")),
            fen_of(&cash["expected"]),
            counted,
            esc(&difference),
            k = esc(&kiosk),
        );
    }
    out += "</table>";
    Ok(out)
}

/// Sales and bill payments across the fleet, per day, utility and business type, from the
/// kiosks' own journal rows (each grant and each booked bill payment names its utility).
pub(super) async fn takings_page(
    State(fleet): State<Fleet>,
    Query(q): Query<LangQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (lang, session) = match signed_in(&fleet, &q, &headers).await? {
        Ok(signed_in) => signed_in,
        Err(to_sign_in) => return Ok(to_sign_in),
    };
    let w = lang.words();
    let rows = fleet
        .db
        .get()
        .await?
        .query(
            "SELECT substr(at, 1, 10), body::jsonb->>'utility', kind, body::jsonb->>'payment',
                    count(*),
                    sum(CASE WHEN body::jsonb ? 'paid_fen'
                             THEN whole_number(body::jsonb, 'paid_fen')
                             ELSE whole_number(body::jsonb, 'amount_fen') END)::bigint
             FROM journal_rows
             WHERE kind IN ('sale-granted', 'bill-paid') AND body::jsonb ? 'utility'
             GROUP BY 1, 2, 3, 4 ORDER BY 1 DESC, 2, 3, 4 LIMIT 1000",
            &[],
        )
        .await?;
    let mut body = user_bar(w, &session);
    body += &format!(
        "<table id=\"takings\"><tr><th>{}</th><th>{}</th><th>{}</th><th>{}</th><th>{}</th></tr>",
        w.day, w.utility, w.business, w.count, w.amount
    );
    for r in &rows {
        let (kind, payment): (String, Option<String>) = (r.get(2), r.get(3));
        let business = match (kind.as_str(), payment.as_deref()) {
            ("sale-granted", Some("bank-card")) => w.businesses[1],
            ("sale-granted", _) => w.businesses[0],
            (_, Some("bank-card")) => w.businesses[3],
            _ => w.businesses[2],
        };
        body += &format!(
            "<tr><td>{}</td><td>{}</td><td>{business}</td><td>{}</td><td>{}</td></tr>",
            esc(r.get::<_, &str>(0)),
            esc(r.get::<_, Option<&str>>(1).unwrap_or("")),
            r.get::<_, i64>(4),
            yuan(r.get::<_, Option<i64>>(5).unwrap_or(0).max(0) as u64),
        );
    }
    body += "</table>";
    Ok(reply(lang, StatusCode::OK, page(lang, w.takings, &body)))
}

/// Every open operator item across the fleet, as each kiosk's last heartbeat listed them, the
/// kiosks with the most first.
pub(super) async fn items_page(
    State(fleet): State<Fleet>,
    Query(q): Query<LangQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (lang, session) = match signed_in(&fleet, &q, &headers).await? {
        Ok(signed_in) => signed_in,
        Err(to_sign_in) => return Ok(to_sign_in),
    };
    let w = lang.words();
    let rows = fleet
        .db
        .get()
        .await?
        .query(
            "SELECT k.id, k.terminal_id, k.region, whole_number(i, 'id'), i->>'serial',
                    i->>'card', i->>'reason', whole_number(i, 'caught_fen'),
                    k.open_items
             FROM kiosks k, jsonb_array_elements(coalesce(k.heartbeat->'items', '[]')) i
             WHERE k.revoked_at IS NULL
             ORDER BY 9 DESC, k.id, 4 LIMIT 2000",
            &[],
        )
        .await?;
    let mut body = user_bar(w, &session);
    body += &format!(
        "<table id=\"items\"><tr><th>{}</th><th>{}</th><th>{}</th><th>#</th><th>{}</th>\
         <th>{}</th><th>{}</th><th>{}</th></tr>",
        w.kiosk, w.terminal, w.region, w.serial, w.card, w.reason, w.caught
    );
    for r in &rows {
        let caught: i64 = r.get(7);
        body += &format!(
            "<tr><td><a href=\"/kiosks/{k}\">{k}</a></td><td>{}</td><td>{}</td><td>{}</td>\
             <td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(r.get(1)),
            esc(r.get(2)),
            r.get::<_, i64>(3),
            esc(r.get::<_, Option<&str>>(4).unwrap_or("")),
            esc(r.get::<_, Option<&str>>(5).unwrap_or("")),
            esc(r.get::<_, Option<&str>>(6).unwrap_or("")),
            if caught > 0 {
                format!("{} {}", yuan(caught as u64), w.yuan)
            } else {
                String::new()
            },
            k = esc(r.get(0)),
        );
    }
    body += "</table>";
    Ok(reply(
        lang,
        StatusCode::OK,
        page(lang, w.items_title, &body),
    ))
}
