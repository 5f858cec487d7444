//! The web console: server-rendered pages, no script. Sign-in (argon2id, locked after wrong
//! passwords), the fleet with each kiosk's status, a kiosk's page, and pairing codes (admins).
//! Every form carries its session's CSRF token; every value shown is escaped.

mod html;

use std::time::Duration;

use axum::Form;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use selfvend_fleet_wire::Heartbeat;
use serde::Deserialize;

use crate::error::ApiError;
use crate::sessions::{self, Session};
use crate::status::Status;
use crate::users::{self, Role, SignIn};
use crate::{Fleet, pairing};
pub use html::{Lang, esc};
use html::{Words, page, yuan};

pub fn router() -> Router<Fleet> {
    Router::new()
        .route("/", get(fleet_page))
        .route("/login", get(login_page).post(login))
        .route("/logout", post(logout))
        .route("/kiosks/{id}", get(kiosk_page))
        .route("/pairing-codes", post(new_pairing_code))
        .route("/clearings", get(clearings_page))
        .route("/takings", get(takings_page))
}

#[derive(Deserialize)]
struct LangQuery {
    lang: Option<String>,
    /// The fleet page's page, from 1.
    page: Option<usize>,
}

/// Kiosks on one fleet page, the worst first.
const PAGE: usize = 100;

/// The language the request asks for (`?lang=`), else the one its cookie remembers.
fn lang_of(query: &LangQuery, headers: &HeaderMap) -> Lang {
    match &query.lang {
        Some(l) => Lang::parse(Some(l)),
        None => Lang::parse(sessions::cookie(headers, "lang").as_deref()),
    }
}

/// `body` as a page, remembering the language in a cookie.
fn reply(lang: Lang, status: StatusCode, body: String) -> Response {
    (
        status,
        [(
            header::SET_COOKIE,
            format!("lang={}; Path=/; SameSite=Strict", lang.code()),
        )],
        Html(body),
    )
        .into_response()
}

fn login_form(w: &Words, error: Option<&str>) -> String {
    format!(
        "{}<form method=\"post\" action=\"/login\">\
         <p><label>{} <input name=\"name\" id=\"name\" autocomplete=\"username\"></label></p>\
         <p><label>{} <input name=\"password\" id=\"password\" type=\"password\" \
         autocomplete=\"current-password\"></label></p>\
         <p><button type=\"submit\" id=\"sign-in\">{}</button></p></form>",
        error.map_or(String::new(), |e| format!(
            "<p class=\"down\" id=\"error\">{}</p>",
            esc(e)
        )),
        w.name,
        w.password,
        w.sign_in
    )
}

async fn login_page(Query(q): Query<LangQuery>, headers: HeaderMap) -> Response {
    let lang = lang_of(&q, &headers);
    let w = lang.words();
    reply(
        lang,
        StatusCode::OK,
        page(lang, w.sign_in, &login_form(w, None)),
    )
}

#[derive(Deserialize)]
struct LoginForm {
    name: String,
    password: String,
}

async fn login(
    State(fleet): State<Fleet>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Result<Response, ApiError> {
    let lang = lang_of(
        &LangQuery {
            lang: None,
            page: None,
        },
        &headers,
    );
    let w = lang.words();
    let refused = |why: &str| {
        reply(
            lang,
            StatusCode::UNAUTHORIZED,
            page(lang, w.sign_in, &login_form(w, Some(why))),
        )
    };
    match users::sign_in(&fleet, &form.name, &form.password).await? {
        SignIn::Wrong => Ok(refused(w.wrong_password)),
        SignIn::Locked => Ok(refused(w.locked)),
        SignIn::Ok(user) => {
            let token = sessions::open(&fleet, &user).await?;
            Ok((
                [(
                    header::SET_COOKIE,
                    format!(
                        "{}={token}; Path=/; HttpOnly; SameSite=Strict",
                        sessions::COOKIE
                    ),
                )],
                Redirect::to("/"),
            )
                .into_response())
        }
    }
}

#[derive(Deserialize)]
struct CsrfForm {
    csrf: String,
}

/// The session of a form's request, if it is signed in and the form carries its CSRF token.
async fn form_session(
    fleet: &Fleet,
    headers: &HeaderMap,
    csrf: &str,
) -> Result<Option<Session>, ApiError> {
    Ok(sessions::of(fleet, headers)
        .await?
        .filter(|s| !csrf.is_empty() && s.csrf == csrf))
}

async fn logout(
    State(fleet): State<Fleet>,
    headers: HeaderMap,
    Form(form): Form<CsrfForm>,
) -> Result<Response, ApiError> {
    if form_session(&fleet, &headers, &form.csrf).await?.is_some() {
        sessions::close(&fleet, &headers).await?;
    }
    Ok(Redirect::to("/login").into_response())
}

/// One kiosk's row on the fleet page: what its last heartbeat said, in a few columns (the
/// page reads no whole heartbeats, so it stays fast with thousands of kiosks).
struct KioskRow {
    id: String,
    terminal: String,
    region: String,
    heartbeat_age: Option<f64>,
    screen: String,
    screen_secs: i64,
    money_in_fen: i64,
    open_items: i64,
    journal_head: i64,
    held: bool,
    alerts: i64,
}

impl KioskRow {
    fn status(&self, fleet: &Fleet) -> Status {
        Status::of(
            fleet.limits,
            self.heartbeat_age
                .map(|a| Duration::from_secs_f64(a.max(0.0))),
            &self.screen,
            self.screen_secs.max(0) as u64,
            self.money_in_fen.max(0) as u64,
        )
    }
}

async fn kiosk_rows(fleet: &Fleet, id: Option<&str>) -> Result<Vec<KioskRow>, ApiError> {
    let client = fleet.db.get().await?;
    let rows = client
        .query(
            "SELECT k.id, k.terminal_id, k.region,
                    extract(epoch FROM now() - k.last_heartbeat_at)::float8,
                    coalesce(k.heartbeat->>'screen', ''),
                    coalesce((k.heartbeat->>'screen_secs')::bigint, 0),
                    coalesce((k.heartbeat->>'money_in_fen')::bigint, 0),
                    coalesce((k.heartbeat->>'open_items')::bigint, 0),
                    k.journal_head, k.ingest_held, coalesce(a.open, 0)
             FROM kiosks k
             LEFT JOIN (SELECT kiosk_id, count(*) AS open FROM alerts
                        WHERE closed_at IS NULL GROUP BY kiosk_id) a ON a.kiosk_id = k.id
             WHERE k.revoked_at IS NULL AND ($1::text IS NULL OR k.id = $1)",
            &[&id],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| KioskRow {
            id: r.get(0),
            terminal: r.get(1),
            region: r.get(2),
            heartbeat_age: r.get(3),
            screen: r.get(4),
            screen_secs: r.get(5),
            money_in_fen: r.get(6),
            open_items: r.get(7),
            journal_head: r.get(8),
            held: r.get(9),
            alerts: r.get(10),
        })
        .collect())
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

fn status_cell(w: &Words, status: Status) -> String {
    let (class, text) = match status {
        Status::Online => ("online", w.online),
        Status::Down => ("down", w.down),
        Status::OutOfService => ("oos", w.out_of_service),
        Status::Stuck { money_in: true } => ("stuck-money", w.stuck_money_in),
        Status::Stuck { money_in: false } => ("stuck", w.stuck),
    };
    format!("<td class=\"{class}\">{text}</td>")
}

fn age_text(w: &Words, age: Option<f64>) -> String {
    age.map_or(w.never.to_string(), |a| {
        format!("{}{}", a.max(0.0) as u64, w.seconds_ago)
    })
}

/// The signed-in user's line: who, and the sign-out form.
fn user_bar(w: &Words, s: &Session) -> String {
    format!(
        "<form method=\"post\" action=\"/logout\"><span id=\"user\">{} ({})</span> \
         <input type=\"hidden\" name=\"csrf\" value=\"{}\">\
         <button type=\"submit\" id=\"sign-out\">{}</button></form>",
        esc(&s.user.name),
        s.user.role.as_str(),
        esc(&s.csrf),
        w.sign_out
    )
}

async fn fleet_page(
    State(fleet): State<Fleet>,
    Query(q): Query<LangQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let lang = lang_of(&q, &headers);
    let w = lang.words();
    let Some(session) = sessions::of(&fleet, &headers).await? else {
        return Ok(Redirect::to("/login").into_response());
    };
    let mut rows: Vec<(Status, KioskRow)> = kiosk_rows(&fleet, None)
        .await?
        .into_iter()
        .map(|r| (r.status(&fleet), r))
        .collect();
    rows.sort_by(|(a, ra), (b, rb)| (a.severity(), &ra.id).cmp(&(b.severity(), &rb.id)));
    let total = rows.len();
    let pages = total.div_ceil(PAGE).max(1);
    let page_no = q.page.unwrap_or(1).clamp(1, pages);
    let mut body = user_bar(w, &session);
    body += &format!(
        "<p><a href=\"/takings\" id=\"takings-link\">{}</a> · \
         <a href=\"/clearings\" id=\"clearings-link\">{}</a></p>",
        w.takings, w.clearings
    );
    if session.user.role == Role::Admin {
        body += &format!(
            "<form method=\"post\" action=\"/pairing-codes\">\
             <input type=\"hidden\" name=\"csrf\" value=\"{}\">\
             <button type=\"submit\" id=\"new-pairing-code\">{}</button></form>",
            esc(&session.csrf),
            w.new_pairing_code
        );
    }
    if rows.is_empty() {
        body += &format!("<p>{}</p>", w.no_kiosks);
    } else {
        let count = |s: fn(&Status) -> bool| rows.iter().filter(|(st, _)| s(st)).count();
        body += &format!(
            "<p id=\"summary\">{total} · {} {} · {} {} · {} {} · {} {}</p>",
            w.online,
            count(|s| *s == Status::Online),
            w.down,
            count(|s| *s == Status::Down),
            w.out_of_service,
            count(|s| *s == Status::OutOfService),
            w.stuck,
            count(|s| matches!(s, Status::Stuck { .. })),
        );
        body += &format!(
            "<table id=\"kiosks\"><tr><th>{}</th><th>{}</th><th>{}</th><th>{}</th><th>{}</th>\
             <th>{}</th><th>{}</th><th>{}</th><th>{}</th></tr>",
            w.kiosk,
            w.terminal,
            w.region,
            w.status,
            w.screen,
            w.last_heartbeat,
            w.journal_rows,
            w.open_items,
            w.alerts
        );
        for (status, r) in rows.iter().skip((page_no - 1) * PAGE).take(PAGE) {
            body += &format!(
                "<tr id=\"kiosk-{id}\"><td><a href=\"/kiosks/{id}\">{id}</a></td><td>{}</td>\
                 <td>{}</td>{}<td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&r.terminal),
                esc(&r.region),
                status_cell(w, *status),
                esc(&r.screen),
                age_text(w, r.heartbeat_age),
                r.journal_head,
                r.open_items,
                r.alerts,
                id = esc(&r.id),
            );
        }
        body += "</table>";
        if pages > 1 {
            body += "<p id=\"pages\">";
            for p in 1..=pages {
                body += &if p == page_no {
                    format!("<b>{p}</b> ")
                } else {
                    format!("<a href=\"/?page={p}\">{p}</a> ")
                };
            }
            body += "</p>";
        }
    }
    Ok(reply(lang, StatusCode::OK, page(lang, w.fleet, &body)))
}

async fn new_pairing_code(
    State(fleet): State<Fleet>,
    headers: HeaderMap,
    Form(form): Form<CsrfForm>,
) -> Result<Response, ApiError> {
    let lang = lang_of(
        &LangQuery {
            lang: None,
            page: None,
        },
        &headers,
    );
    let w = lang.words();
    let Some(session) = form_session(&fleet, &headers, &form.csrf).await? else {
        return Ok(Redirect::to("/login").into_response());
    };
    if session.user.role != Role::Admin {
        return Ok(reply(
            lang,
            StatusCode::FORBIDDEN,
            page(lang, w.forbidden, ""),
        ));
    }
    let code = pairing::new_code(&fleet).await?;
    let body = format!(
        "{}<p>{}: <code id=\"pairing-code\">{}</code> ({})</p><p><a href=\"/\">{}</a></p>",
        user_bar(w, &session),
        w.pairing_code,
        esc(&code),
        w.code_valid,
        w.fleet
    );
    Ok(reply(
        lang,
        StatusCode::OK,
        page(lang, w.pairing_code, &body),
    ))
}

async fn kiosk_page(
    State(fleet): State<Fleet>,
    Path(id): Path<String>,
    Query(q): Query<LangQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let lang = lang_of(&q, &headers);
    let w = lang.words();
    let Some(session) = sessions::of(&fleet, &headers).await? else {
        return Ok(Redirect::to("/login").into_response());
    };
    let Some(k) = kiosk_rows(&fleet, Some(&id)).await?.into_iter().next() else {
        return Ok(reply(
            lang,
            StatusCode::NOT_FOUND,
            page(lang, w.no_such_kiosk, ""),
        ));
    };
    let mut body = user_bar(w, &session);
    body += &format!(
        "<table><tr><th>{}</th><td>{}</td></tr><tr><th>{}</th><td>{}</td></tr>\
         <tr><th>{}</th>{}</tr><tr><th>{}</th><td>{}</td></tr>\
         <tr><th>{}</th><td id=\"chain\">{} ({} {})</td></tr></table>",
        w.terminal,
        esc(&k.terminal),
        w.region,
        esc(&k.region),
        w.status,
        status_cell(w, k.status(&fleet)),
        w.last_heartbeat,
        age_text(w, k.heartbeat_age),
        w.chain,
        if k.held { w.chain_held } else { w.chain_ok },
        k.journal_head,
        w.journal_rows,
    );
    if let Some(b) = &last_heartbeat(&fleet, &k.id).await? {
        body += &format!(
            "<h2>{}</h2><table id=\"devices\"><tr><th>{}</th><th>{}</th><th>{}</th></tr>",
            w.devices, w.device, w.state, w.detail
        );
        for d in &b.devices {
            body += &format!(
                "<tr><td>{} {}</td><td>{}</td><td>{}</td></tr>",
                esc(&d.device),
                esc(&d.name),
                esc(&d.state),
                esc(&d.detail)
            );
        }
        body += "</table>";
        body += &format!(
            "<h2>{}</h2><p id=\"cash-box\">{} {} · {} {}</p>",
            w.cash_box,
            b.cash_box.count(),
            w.notes,
            yuan(b.cash_box.fen()),
            w.yuan
        );
        body += &format!(
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
        body += &format!(
            "<h2>{}</h2><p>{}: {}</p><table>",
            w.plugins,
            w.software,
            esc(&b.software_version)
        );
        for p in &b.plugins {
            body += &format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&p.name),
                esc(&p.version),
                esc(&p.signer)
            );
        }
        body += "</table>";
    }
    body += &recent_sales(&fleet, &k.id, w).await?;
    body += &open_alerts(&fleet, &k.id, w).await?;
    Ok(reply(lang, StatusCode::OK, page(lang, &k.id, &body)))
}

async fn recent_sales(fleet: &Fleet, kiosk: &str, w: &Words) -> Result<String, ApiError> {
    let rows = fleet
        .db
        .get()
        .await?
        .query(
            "SELECT at, body FROM journal_rows WHERE kiosk_id = $1 AND kind = 'sale-intent'
             ORDER BY id DESC LIMIT 20",
            &[&kiosk],
        )
        .await?;
    let mut out = format!(
        "<h2>{}</h2><table id=\"sales\"><tr><th>{}</th><th>{}</th><th>{}</th></tr>",
        w.recent_sales, w.time, w.card, w.amount
    );
    for r in &rows {
        let at: String = r.get(0);
        let body: serde_json::Value = serde_json::from_str(r.get::<_, &str>(1)).unwrap_or_default();
        out += &format!(
            "<tr><td>{}</td><td>{}</td><td>{} {}</td></tr>",
            esc(&at),
            esc(body["card"].as_str().unwrap_or("")),
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

/// Money as yuan from a report's JSON number of fen.
fn fen_of(v: &serde_json::Value) -> String {
    yuan(v.as_u64().unwrap_or(0))
}

/// Every kiosk's clearings (清机), the newest first: the cash the box should hold and what the
/// operator counted, and each utility's sales in the period, from the kiosks' own reports.
async fn clearings_page(
    State(fleet): State<Fleet>,
    Query(q): Query<LangQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let lang = lang_of(&q, &headers);
    let w = lang.words();
    let Some(session) = sessions::of(&fleet, &headers).await? else {
        return Ok(Redirect::to("/login").into_response());
    };
    let rows = fleet
        .db
        .get()
        .await?
        .query(
            "SELECT j.kiosk_id, k.terminal_id, j.body FROM journal_rows j
             JOIN kiosks k ON k.id = j.kiosk_id
             WHERE j.kind = 'clearing-ended'
             ORDER BY j.received_at DESC, j.kiosk_id, j.id DESC LIMIT 200",
            &[],
        )
        .await?;
    let mut body = user_bar(w, &session);
    body += &format!(
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
            *by_utility
                .entry(u["utility"].as_str().unwrap_or("").to_string())
                .or_default() += u["sold"]["fen"].as_u64().unwrap_or(0);
        }
        let sold = by_utility
            .iter()
            .map(|(u, fen)| format!("{}: {}", esc(u), yuan(*fen)))
            .collect::<Vec<_>>()
            .join("; ");
        body += &format!(
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
    body += "</table>";
    Ok(reply(lang, StatusCode::OK, page(lang, w.clearings, &body)))
}

/// Sales and bill payments across the fleet, per day, utility and business type, from the
/// kiosks' own journal rows (each grant and each booked bill payment names its utility).
async fn takings_page(
    State(fleet): State<Fleet>,
    Query(q): Query<LangQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let lang = lang_of(&q, &headers);
    let w = lang.words();
    let Some(session) = sessions::of(&fleet, &headers).await? else {
        return Ok(Redirect::to("/login").into_response());
    };
    let rows = fleet
        .db
        .get()
        .await?
        .query(
            "SELECT substr(at, 1, 10), body::jsonb->>'utility', kind, body::jsonb->>'payment',
                    count(*),
                    sum(coalesce((body::jsonb->>'paid_fen')::bigint,
                                 (body::jsonb->>'amount_fen')::bigint))::bigint
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
