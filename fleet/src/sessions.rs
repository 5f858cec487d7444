//! Console sessions: a random token in an HttpOnly, SameSite=Strict cookie; the database keeps
//! only its SHA-256. Each session has its own CSRF token, which every form posts back.

use axum::http::HeaderMap;
use rand_core::{OsRng, RngCore};
use sha2::{Digest, Sha256};

use crate::Fleet;
use crate::error::ApiError;
use crate::users::{Role, User};

pub const COOKIE: &str = "selfvend_session";
/// The sign-in form's own CSRF token, before there is a session (double submit: the form and
/// this cookie must carry the same).
pub const LOGIN_COOKIE: &str = "selfvend_login";
/// How long a session lasts.
const HOURS: i32 = 12;

/// A signed-in user's session.
#[derive(Debug, Clone)]
pub struct Session {
    pub user: User,
    pub csrf: String,
}

/// A fresh token for the sign-in form.
pub fn login_token() -> String {
    random_hex()
}

/// A cookie's attributes: HttpOnly, SameSite=Strict, and Secure when the console is reached
/// over HTTPS (through a proxy that says so in `X-Forwarded-Proto`).
pub fn cookie_attributes(headers: &HeaderMap) -> &'static str {
    let https = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("https"));
    if https {
        "Path=/; HttpOnly; SameSite=Strict; Secure"
    } else {
        "Path=/; HttpOnly; SameSite=Strict"
    }
}

fn random_hex() -> String {
    let mut bytes = [0u8; 32];
    OsRng.fill_bytes(&mut bytes);
    hex::encode(bytes)
}

fn digest(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Opens a session for `user`; returns the cookie's token.
pub async fn open(fleet: &Fleet, user: &User) -> Result<String, ApiError> {
    let token = random_hex();
    fleet
        .db
        .get()
        .await?
        .execute(
            "INSERT INTO sessions (token_hash, user_id, csrf, expires_at)
             VALUES ($1, $2, $3, now() + make_interval(hours => $4))",
            &[&digest(&token), &user.id, &random_hex(), &HOURS],
        )
        .await?;
    Ok(token)
}

/// The session of the request's cookie, if it is signed in.
pub async fn of(fleet: &Fleet, headers: &HeaderMap) -> Result<Option<Session>, ApiError> {
    let Some(token) = cookie(headers, COOKIE) else {
        return Ok(None);
    };
    let row = fleet
        .db
        .get()
        .await?
        .query_opt(
            "SELECT u.id, u.name, u.role, s.csrf FROM sessions s JOIN users u ON u.id = s.user_id
             WHERE s.token_hash = $1 AND s.expires_at > now()",
            &[&digest(&token)],
        )
        .await?;
    Ok(row.map(|r| Session {
        user: User {
            id: r.get(0),
            name: r.get(1),
            role: Role::parse(r.get(2)).unwrap_or(Role::Viewer),
        },
        csrf: r.get(3),
    }))
}

/// Ends the request's session.
pub async fn close(fleet: &Fleet, headers: &HeaderMap) -> Result<(), ApiError> {
    if let Some(token) = cookie(headers, COOKIE) {
        fleet
            .db
            .get()
            .await?
            .execute(
                "DELETE FROM sessions WHERE token_hash = $1",
                &[&digest(&token)],
            )
            .await?;
    }
    Ok(())
}

/// The value of cookie `name` in the request.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}
