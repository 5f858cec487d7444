//! A kiosk's page: what it reports (devices, the cash box and when it will be full, the period,
//! open operator items, plugins), its recent sales and bill payments, its journal's chain, and
//! its open alerts. An admin releases a held ingest here.

use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use selfvend_fleet_wire::Heartbeat;

use super::html::{Words, esc, page, yuan};
use super::{KioskRow, LangQuery, age_text, kiosk_rows, lang_of, reply, signed_in, status_cell};
use super::{form_session, user_bar};
use crate::error::ApiError;
use crate::users::Role;
use crate::{Fleet, ingest};

/// The days a cash box's fill rate is taken over.
const RATE_DAYS: f64 = 7.0;

pub(super) async fn kiosk_page(
    State(fleet): State<Fleet>,
    Path(id): Path<String>,
    Query(q): Query<LangQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (lang, session) = match signed_in(&fleet, &q, &headers).await? {
        Ok(signed_in) => signed_in,
        Err(to_sign_in) => return Ok(to_sign_in),
    };
    let w = lang.words();
    let Some(k) = kiosk_rows(&fleet, std::slice::from_ref(&id))
        .await?
        .into_iter()
        .next()
    else {
        return Ok(reply(
            lang,
            StatusCode::NOT_FOUND,
            page(lang, w.no_such_kiosk, ""),
        ));
    };
    let mut body = user_bar(w, &session);
    body += &format!(
        "<table><tr><th>{}</th><td>{}</td></tr><tr><th>{}</th><td>{}</td></tr>\
         <tr><th>{}</th>{}</tr><tr><th>{}</th><td>{}</td></tr></table>",
        w.terminal,
        esc(&k.terminal),
        w.region,
        esc(&k.region),
        w.status,
        status_cell(w, k.status(&fleet)),
        w.last_heartbeat,
        age_text(w, k.heartbeat_age),
    );
    body += &chain(
        &fleet,
        &k,
        w,
        session.user.role == Role::Admin,
        &session.csrf,
    )
    .await?;
    if let Some(b) = &last_heartbeat(&fleet, &k.id).await? {
        body += &reported(&fleet, &k.id, b, w).await?;
    }
    // Customers' names and addresses are for the utility's operators, not every viewer.
    let customers = session.user.role != Role::Viewer;
    body += &recent_sales(&fleet, &k.id, w, customers).await?;
    body += &format!("<h2>{}</h2>", w.clearings);
    body += &super::reports::clearings_table(&fleet, Some(&k.id), w).await?;
    body += &open_alerts(&fleet, &k.id, w).await?;
    body += &super::commands::section(&fleet, &k.id, &session, w).await?;
    Ok(reply(lang, StatusCode::OK, page(lang, &k.id, &body)))
}

/// Kiosk `id`'s last heartbeat, whole.
async fn last_heartbeat(fleet: &Fleet, id: &str) -> Result<Option<Heartbeat>, ApiError> {
    let row = fleet
        .db
        .get()
        .await?
        .query_opt("SELECT heartbeat::text FROM kiosks WHERE id = $1", &[&id])
        .await?;
    Ok(row
        .and_then(|r| r.get::<_, Option<String>>(0))
        .and_then(|json| serde_json::from_str(&json).ok()))
}

/// The journal's chain: how far it is received, whether ingest is held (with the admin's
/// release), and the breaks admins accepted before.
async fn chain(
    fleet: &Fleet,
    k: &KioskRow,
    w: &Words,
    admin: bool,
    csrf: &str,
) -> Result<String, ApiError> {
    let mut out = format!(
        "<h2>{}</h2><p id=\"chain\">{} ({} {})</p>",
        w.chain,
        if k.held { w.chain_held } else { w.chain_ok },
        k.journal_head,
        w.journal_rows,
    );
    if k.held && admin {
        out += &format!(
            "<form method=\"post\" action=\"/kiosks/{}/release\">\
             <input type=\"hidden\" name=\"csrf\" value=\"{}\">\
             <input type=\"hidden\" name=\"head\" value=\"{}\">\
             <button type=\"submit\" id=\"release\">{}</button></form>",
            esc(&k.id),
            esc(csrf),
            k.journal_head,
            w.release
        );
    }
    let releases = fleet
        .db
        .get()
        .await?
        .query(
            "SELECT released_at::text, released_by, head, detail FROM chain_releases
             WHERE kiosk_id = $1 ORDER BY id DESC LIMIT 20",
            &[&k.id],
        )
        .await?;
    if !releases.is_empty() {
        out += &format!("<p>{}</p><ul id=\"releases\">", w.releases);
        for r in &releases {
            out += &format!(
                "<li>{} · {} · {} {} · {}</li>",
                esc(r.get(0)),
                esc(r.get(1)),
                w.after_row,
                r.get::<_, i64>(2),
                esc(r.get(3))
            );
        }
        out += "</ul>";
    }
    Ok(out)
}

/// What the last heartbeat said: devices, the cash box, the period, open items and plugins.
async fn reported(
    fleet: &Fleet,
    kiosk: &str,
    b: &Heartbeat,
    w: &Words,
) -> Result<String, ApiError> {
    let mut out = format!(
        "<h2>{}</h2><table id=\"devices\"><tr><th>{}</th><th>{}</th><th>{}</th></tr>",
        w.devices, w.device, w.state, w.detail
    );
    for d in &b.devices {
        out += &format!(
            "<tr><td>{} {}</td><td>{}</td><td>{}</td></tr>",
            esc(&d.device),
            esc(&d.name),
            esc(&d.state),
            esc(&d.detail)
        );
    }
    out += "</table>";
    out += &format!(
        "<h2>{}</h2><p id=\"cash-box\">{} {} · {} {}{}</p>",
        w.cash_box,
        b.cash_box.count(),
        w.notes,
        yuan(b.cash_box.fen()),
        w.yuan,
        cash_box_fill(fleet, kiosk, b, w).await?
    );
    out += &format!(
        "<h2>{}</h2><p id=\"period\">{}: {} · {} {} · {}: {} · {} {} · {}: {}</p>",
        w.period,
        w.sales,
        b.period.sales,
        yuan(b.period.sales_fen),
        w.yuan,
        w.bill_payments,
        b.period.bill_payments,
        yuan(b.period.bill_payments_fen),
        w.yuan,
        w.open_items,
        b.open_items
    );
    out += &format!(
        "<h2>{}</h2><table id=\"items\"><tr><th>#</th><th>{}</th><th>{}</th><th>{}</th>\
         <th>{}</th></tr>",
        w.open_items, w.serial, w.card, w.reason, w.caught
    );
    for item in &b.items {
        out += &format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            item.id,
            item.serial.map_or(String::new(), |s| s.to_string()),
            esc(&item.card),
            esc(&item.reason),
            if item.caught_fen > 0 {
                format!("{} {}", yuan(item.caught_fen), w.yuan)
            } else {
                String::new()
            }
        );
    }
    out += "</table>";
    out += &format!(
        "<h2>{}</h2><p>{}: {}</p><table id=\"plugins\">",
        w.plugins,
        w.software,
        esc(&b.software_version)
    );
    for p in &b.plugins {
        out += &format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&p.name),
            esc(&p.version),
            esc(&p.signer)
        );
    }
    out += "</table>";
    if let Some(c) = &b.config {
        let running = match c.running {
            0 => w.config_none.to_string(),
            v => format!("{} {v}", w.version),
        };
        let refused = match c.refused {
            Some(v) => format!(" · {} {v}: {}", w.config_refused, esc(&c.why)),
            None => String::new(),
        };
        out += &format!(
            "<p id=\"config\">{}: {running}{refused}</p>",
            w.fleet_config
        );
    }
    Ok(out)
}

/// The cash box against its capacity, and the days until it is full at the rate banknotes
/// came in over the last week (or since pairing, if that is shorter).
async fn cash_box_fill(
    fleet: &Fleet,
    kiosk: &str,
    b: &Heartbeat,
    w: &Words,
) -> Result<String, ApiError> {
    let (count, capacity) = (b.cash_box.count(), b.cash_box.capacity);
    if capacity == 0 {
        return Ok(format!(" · {}", w.capacity_unknown));
    }
    let percent = u64::from(count) * 100 / u64::from(capacity);
    let mut out = format!(
        " · {}",
        w.of_capacity
            .replace("{p}", &percent.to_string())
            .replace("{c}", &capacity.to_string())
    );
    // The journal's times are text (`2026-12-04T10:00:00.000Z`): compared as text, never cast.
    let row = fleet
        .db
        .get()
        .await?
        .query_one(
            "WITH since AS (
                 SELECT greatest(now() - make_interval(days => $2), paired_at) AS t
                 FROM kiosks WHERE id = $1)
             SELECT (SELECT count(*) FROM journal_rows
                     WHERE kiosk_id = $1 AND kind = 'banknote-credited'
                       AND at >= to_char(since.t AT TIME ZONE 'UTC',
                                         'YYYY-MM-DD\"T\"HH24:MI:SS')),
                    extract(epoch FROM now() - since.t)::float8
             FROM since",
            &[&kiosk, &(RATE_DAYS as i32)],
        )
        .await?;
    let (notes, secs): (i64, f64) = (row.get(0), row.get(1));
    let days = secs / 86_400.0;
    if notes == 0 || days <= 0.0 {
        out += &format!(" · {}", w.no_recent_notes);
        return Ok(out);
    }
    let left = f64::from(capacity.saturating_sub(count));
    let to_full = left / (notes as f64 / days);
    out += &format!(
        " · <span id=\"days-to-full\">{}</span>",
        w.full_in_days.replace("{}", &format!("{to_full:.1}"))
    );
    Ok(out)
}

/// The last sales and bill payments, with the customer the backend named if `customers`.
async fn recent_sales(
    fleet: &Fleet,
    kiosk: &str,
    w: &Words,
    customers: bool,
) -> Result<String, ApiError> {
    let rows = fleet
        .db
        .get()
        .await?
        .query(
            "SELECT at, kind, body FROM journal_rows
             WHERE kiosk_id = $1 AND kind IN ('sale-intent', 'bill-pay-intent')
             ORDER BY id DESC LIMIT 20",
            &[&kiosk],
        )
        .await?;
    let mut out = format!(
        "<h2>{}</h2><table id=\"sales\"><tr><th>{}</th><th>{}</th><th>{}</th><th>{}</th>\
         <th>{}</th><th>{}</th></tr>",
        w.recent_sales, w.time, w.business, w.card, w.customer, w.address, w.amount
    );
    for r in &rows {
        let (at, kind): (&str, &str) = (r.get(0), r.get(1));
        let body: serde_json::Value = serde_json::from_str(r.get::<_, &str>(2)).unwrap_or_default();
        let field = |name: &str| esc(body[name].as_str().unwrap_or(""));
        let (business, card) = if kind == "sale-intent" {
            (w.sale, field("card"))
        } else {
            (w.bill_payment, field("account"))
        };
        out += &format!(
            "<tr><td>{}</td><td>{business}</td><td>{card}</td><td>{}</td><td>{}</td>\
             <td>{} {}</td></tr>",
            esc(at),
            if customers {
                field("customer_name")
            } else {
                w.not_shown.into()
            },
            if customers {
                field("address")
            } else {
                w.not_shown.into()
            },
            yuan(body["paid_fen"].as_u64().unwrap_or(0)),
            w.yuan
        );
    }
    out += "</table>";
    Ok(out)
}

async fn open_alerts(fleet: &Fleet, kiosk: &str, w: &Words) -> Result<String, ApiError> {
    let rows = fleet
        .db
        .get()
        .await?
        .query(
            "SELECT kind, detail, opened_at::text FROM alerts
             WHERE kiosk_id = $1 AND closed_at IS NULL ORDER BY id",
            &[&kiosk],
        )
        .await?;
    let mut out = format!("<h2>{}</h2><ul id=\"alerts\">", w.alerts);
    for r in &rows {
        out += &format!(
            "<li>{} · {}: {}</li>",
            esc(r.get(2)),
            esc(r.get(0)),
            esc(r.get(1))
        );
    }
    out += "</ul>";
    Ok(out)
}

/// `POST /kiosks/{id}/release`: an admin accepts the break that holds the kiosk's ingest.
#[derive(serde::Deserialize)]
pub(super) struct ReleaseForm {
    csrf: String,
    /// The received head the admin saw: a release applies to that state only.
    head: i64,
}

pub(super) async fn release(
    State(fleet): State<Fleet>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Form(form): Form<ReleaseForm>,
) -> Result<Response, ApiError> {
    let Some(session) = form_session(&fleet, &headers, &form.csrf).await? else {
        return Ok(Redirect::to("/login").into_response());
    };
    if session.user.role != Role::Admin {
        let lang = lang_of(&LangQuery::default(), &headers);
        let w = lang.words();
        return Ok(reply(
            lang,
            StatusCode::FORBIDDEN,
            page(lang, w.forbidden, ""),
        ));
    }
    // A stale page (the state changed since it was shown) releases nothing: the admin sees the
    // kiosk's page as it is now and decides again.
    ingest::release(&fleet, &id, Some(form.head), &session.user.name).await?;
    Ok(Redirect::to(&format!("/kiosks/{}", url_segment(&id))).into_response())
}

/// `id` as one URL path segment: letters and digits kept, everything else percent-encoded.
pub(super) fn url_segment(id: &str) -> String {
    id.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}
