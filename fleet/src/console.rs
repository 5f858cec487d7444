//! The web console: server-rendered pages, no script. Sign-in (argon2id, locked after wrong
//! passwords), the fleet with each kiosk's status, a kiosk's page, and pairing codes (admins).
//! Every form carries its session's CSRF token; every value shown is escaped.

mod commands;
mod html;
mod kiosk;
mod reports;
mod rollouts;

use std::time::Duration;

use axum::Form;
use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use serde::Deserialize;

use crate::error::ApiError;
use crate::sessions::{self, Session};
use crate::status::Status;
use crate::users::{self, Role, SignIn};
use crate::{Fleet, pairing};
pub use html::{Lang, esc};
use html::{Words, page};

pub fn router() -> Router<Fleet> {
    Router::new()
        .route("/", get(fleet_page))
        .route("/login", get(login_page).post(login))
        .route("/logout", post(logout))
        .route("/kiosks/{id}", get(kiosk::kiosk_page))
        .route("/kiosks/{id}/release", post(kiosk::release))
        .route("/kiosks/{id}/commands", post(commands::give))
        .route("/pairing-codes", post(new_pairing_code))
        .route("/clearings", get(reports::clearings_page))
        .route("/takings", get(reports::takings_page))
        .route("/items", get(reports::items_page))
        .route(
            "/rollouts",
            get(rollouts::rollouts_page).post(rollouts::create),
        )
        .route(
            "/rollouts/builds",
            post(rollouts::upload)
                .layer(axum::extract::DefaultBodyLimit::max(rollouts::UPLOAD_LIMIT)),
        )
        .route("/rollouts/{id}/{action}", post(rollouts::act))
        .layer(axum::middleware::map_response(security_headers))
}

/// No page may be framed (clickjacking), run a script, load from elsewhere or post a form
/// elsewhere; the browser must not guess a type or send the address on.
async fn security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    for (name, value) in [
        (
            "content-security-policy",
            "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; \
             frame-ancestors 'none'; base-uri 'none'",
        ),
        ("x-frame-options", "DENY"),
        ("x-content-type-options", "nosniff"),
        ("referrer-policy", "no-referrer"),
        ("cache-control", "no-store"),
    ] {
        headers.insert(name, header::HeaderValue::from_static(value));
    }
    response
}

#[derive(Deserialize, Default)]
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

/// A page's language and its signed-in session; a request with no session is sent to sign in.
async fn signed_in(
    fleet: &Fleet,
    q: &LangQuery,
    headers: &HeaderMap,
) -> Result<Result<(Lang, Session), Response>, ApiError> {
    match sessions::of(fleet, headers).await? {
        Some(session) => Ok(Ok((lang_of(q, headers), session))),
        None => Ok(Err(Redirect::to("/login").into_response())),
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

fn login_form(w: &Words, csrf: &str, error: Option<&str>) -> String {
    format!(
        "{}<form method=\"post\" action=\"/login\">\
         <input type=\"hidden\" name=\"csrf\" value=\"{}\">\
         <p><label>{} <input name=\"name\" id=\"name\" autocomplete=\"username\"></label></p>\
         <p><label>{} <input name=\"password\" id=\"password\" type=\"password\" \
         autocomplete=\"current-password\"></label></p>\
         <p><button type=\"submit\" id=\"sign-in\">{}</button></p></form>",
        error.map_or(String::new(), |e| format!(
            "<p class=\"down\" id=\"error\">{}</p>",
            esc(e)
        )),
        esc(csrf),
        w.name,
        w.password,
        w.sign_in
    )
}

/// The sign-in page (with `error`), and a fresh CSRF token for its form in a cookie.
fn login_reply(
    lang: Lang,
    headers: &HeaderMap,
    status: StatusCode,
    error: Option<&str>,
) -> Response {
    let w = lang.words();
    let token = sessions::login_token();
    let mut response = reply(
        lang,
        status,
        page(lang, w.sign_in, &login_form(w, &token, error)),
    );
    if let Ok(cookie) = header::HeaderValue::from_str(&format!(
        "{}={token}; {}",
        sessions::LOGIN_COOKIE,
        sessions::cookie_attributes(headers)
    )) {
        response.headers_mut().append(header::SET_COOKIE, cookie);
    }
    response
}

async fn login_page(Query(q): Query<LangQuery>, headers: HeaderMap) -> Response {
    login_reply(lang_of(&q, &headers), &headers, StatusCode::OK, None)
}

#[derive(Deserialize)]
struct LoginForm {
    name: String,
    password: String,
    #[serde(default)]
    csrf: String,
}

async fn login(
    State(fleet): State<Fleet>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Result<Response, ApiError> {
    let lang = lang_of(&LangQuery::default(), &headers);
    let w = lang.words();
    // A sign-in posted from another site (login CSRF) carries no matching token.
    let expected = sessions::cookie(&headers, sessions::LOGIN_COOKIE);
    if form.csrf.is_empty() || expected.as_deref() != Some(form.csrf.as_str()) {
        return Ok(login_reply(
            lang,
            &headers,
            StatusCode::FORBIDDEN,
            Some(w.session_expired),
        ));
    }
    let refused = |why: &str| login_reply(lang, &headers, StatusCode::UNAUTHORIZED, Some(why));
    match users::sign_in(&fleet, &form.name, &form.password).await? {
        SignIn::Wrong => Ok(refused(w.wrong_password)),
        SignIn::Locked => Ok(refused(w.locked)),
        SignIn::Ok(user) => {
            let token = sessions::open(&fleet, &user).await?;
            Ok((
                [(
                    header::SET_COOKIE,
                    format!(
                        "{}={token}; {}",
                        sessions::COOKIE,
                        sessions::cookie_attributes(&headers)
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

/// Every kiosk's status and id, from the few columns a status needs (the fleet page sorts
/// thousands of kiosks by these, then reads the rest for one page of them).
async fn statuses(fleet: &Fleet) -> Result<Vec<(Status, String)>, ApiError> {
    let rows = fleet
        .db
        .get()
        .await?
        .query(
            "SELECT id, extract(epoch FROM now() - last_heartbeat_at)::float8, screen,
                    screen_secs, money_in_fen
             FROM kiosks WHERE revoked_at IS NULL",
            &[],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| {
            let age: Option<f64> = r.get(1);
            let status = Status::of(
                fleet.limits,
                age.map(|a| Duration::from_secs_f64(a.max(0.0))),
                r.get(2),
                r.get::<_, i64>(3).max(0) as u64,
                r.get::<_, i64>(4).max(0) as u64,
            );
            (status, r.get(0))
        })
        .collect())
}

/// The rows of the kiosks `ids`, in no particular order.
async fn kiosk_rows(fleet: &Fleet, ids: &[String]) -> Result<Vec<KioskRow>, ApiError> {
    let client = fleet.db.get().await?;
    let rows = client
        .query(
            "SELECT k.id, k.terminal_id, k.region,
                    extract(epoch FROM now() - k.last_heartbeat_at)::float8,
                    k.screen, k.screen_secs, k.money_in_fen, k.open_items,
                    k.journal_head, k.ingest_held,
                    (SELECT count(*) FROM alerts a WHERE a.kiosk_id = k.id AND closed_at IS NULL)
             FROM kiosks k
             WHERE k.revoked_at IS NULL AND k.id = ANY($1)",
            &[&ids],
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
    let (lang, session) = match signed_in(&fleet, &q, &headers).await? {
        Ok(signed_in) => signed_in,
        Err(to_sign_in) => return Ok(to_sign_in),
    };
    let w = lang.words();
    let mut rows = statuses(&fleet).await?;
    rows.sort_by(|(a, ra), (b, rb)| (a.severity(), ra).cmp(&(b.severity(), rb)));
    let total = rows.len();
    let pages = total.div_ceil(PAGE).max(1);
    let page_no = q.page.unwrap_or(1).clamp(1, pages);
    let mut body = user_bar(w, &session);
    body += &format!(
        "<p><a href=\"/takings\" id=\"takings-link\">{}</a> · \
         <a href=\"/clearings\" id=\"clearings-link\">{}</a> · \
         <a href=\"/items\" id=\"items-link\">{}</a> · \
         <a href=\"/rollouts\" id=\"rollouts-link\">{}</a></p>",
        w.takings, w.clearings, w.items_title, w.rollouts.title
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
        let shown: Vec<String> = rows
            .iter()
            .skip((page_no - 1) * PAGE)
            .take(PAGE)
            .map(|(_, id)| id.clone())
            .collect();
        let mut details: std::collections::HashMap<String, KioskRow> = kiosk_rows(&fleet, &shown)
            .await?
            .into_iter()
            .map(|r| (r.id.clone(), r))
            .collect();
        for r in shown.iter().filter_map(|id| details.remove(id)) {
            let status = r.status(&fleet);
            body += &format!(
                "<tr id=\"kiosk-{id}\"><td><a href=\"/kiosks/{id}\">{id}</a></td><td>{}</td>\
                 <td>{}</td>{}<td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&r.terminal),
                esc(&r.region),
                status_cell(w, status),
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
    let lang = lang_of(&LangQuery::default(), &headers);
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
