//! The console's users: argon2id password hashes, roles, and sign-in that slows down and then
//! locks after wrong passwords.

use argon2::Argon2;
use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};

use crate::Fleet;
use crate::error::ApiError;

/// Wrong passwords in a row that lock a user out, and for how long.
const LOCK_AFTER: i32 = 5;
const LOCK_MINUTES: i32 = 15;

/// What a user may do in the console.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    Viewer,
    Operator,
    Admin,
}

impl Role {
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "viewer" => Some(Role::Viewer),
            "operator" => Some(Role::Operator),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }
}

/// A signed-in user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: i64,
    pub name: String,
    pub role: Role,
}

/// Why a sign-in was refused (the same words whether the name or the password was wrong).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignIn {
    Ok(User),
    Wrong,
    Locked,
}

/// Adds user `name` with `password` and `role`.
pub async fn add(fleet: &Fleet, name: &str, password: &str, role: Role) -> anyhow::Result<()> {
    if name.is_empty() || name.chars().count() > 64 || name.chars().any(char::is_control) {
        anyhow::bail!("a user name is 1 to 64 characters of one line");
    }
    if password.chars().count() < 10 {
        anyhow::bail!("a password is at least 10 characters");
    }
    let hash = Argon2::default()
        .hash_password(password.as_bytes(), &SaltString::generate(&mut OsRng))
        .map_err(|e| anyhow::anyhow!("hashing the password: {e}"))?
        .to_string();
    fleet
        .db
        .get()
        .await?
        .execute(
            "INSERT INTO users (name, password_hash, role) VALUES ($1, $2, $3)",
            &[&name, &hash, &role.as_str()],
        )
        .await?;
    Ok(())
}

/// Hashes at once, at most: argon2 is meant to be slow, and must not starve the kiosks' API.
static HASHING: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(2);

/// What a failed sign-in costs the caller, whatever the reason (so a name's existence does not
/// show in the time taken).
const FAILURE_DELAY: std::time::Duration = std::time::Duration::from_millis(1000);

/// Whether `password` matches `hash`, off the async workers and at most two at a time.
async fn verify(hash: String, password: String) -> bool {
    let _permit = HASHING
        .acquire()
        .await
        .expect("the semaphore is never closed");
    tokio::task::spawn_blocking(move || {
        PasswordHash::new(&hash)
            .map(|parsed| {
                Argon2::default()
                    .verify_password(password.as_bytes(), &parsed)
                    .is_ok()
            })
            .unwrap_or(false)
    })
    .await
    .unwrap_or(false)
}

/// A real hash of a random password, spent on a name that does not exist so that it costs
/// what a real check costs.
fn dummy_hash() -> String {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY
        .get_or_init(|| {
            Argon2::default()
                .hash_password(b"no such user", &SaltString::generate(&mut OsRng))
                .map(|h| h.to_string())
                .unwrap_or_default()
        })
        .clone()
}

/// Checks `name`'s `password`. The attempt is counted before the password is checked (so
/// parallel guesses cannot pass the lock); five wrong in a row lock the user for fifteen
/// minutes, during which even the right one is refused; a lock that has expired starts the
/// count again. Every failure costs the same delay.
pub async fn sign_in(fleet: &Fleet, name: &str, password: &str) -> Result<SignIn, ApiError> {
    let taken = fleet
        .db
        .get()
        .await?
        .query_opt(
            "UPDATE users SET
                 failed_logins = CASE WHEN locked_until <= now() THEN 1
                                      ELSE failed_logins + 1 END,
                 locked_until = CASE WHEN locked_until <= now() THEN NULL ELSE locked_until END
             WHERE name = $1 AND (locked_until IS NULL OR locked_until <= now())
             RETURNING id, password_hash, role, failed_logins",
            &[&name],
        )
        .await?;
    let Some(row) = taken else {
        let locked = fleet
            .db
            .get()
            .await?
            .query_opt("SELECT 1 FROM users WHERE name = $1", &[&name])
            .await?
            .is_some();
        verify(dummy_hash(), password.into()).await;
        tokio::time::sleep(FAILURE_DELAY).await;
        return Ok(if locked {
            SignIn::Locked
        } else {
            SignIn::Wrong
        });
    };
    let (id, hash, role, attempts): (i64, String, String, i32) =
        (row.get(0), row.get(1), row.get(2), row.get(3));
    if verify(hash, password.into()).await {
        fleet
            .db
            .get()
            .await?
            .execute(
                "UPDATE users SET failed_logins = 0, locked_until = NULL WHERE id = $1",
                &[&id],
            )
            .await?;
        return Ok(SignIn::Ok(User {
            id,
            name: name.to_string(),
            role: Role::parse(&role).unwrap_or(Role::Viewer),
        }));
    }
    let locked = attempts >= LOCK_AFTER;
    if locked {
        fleet
            .db
            .get()
            .await?
            .execute(
                "UPDATE users SET locked_until = now() + make_interval(mins => $2)
                 WHERE id = $1",
                &[&id, &LOCK_MINUTES],
            )
            .await?;
    }
    tokio::time::sleep(FAILURE_DELAY).await;
    Ok(if locked {
        SignIn::Locked
    } else {
        SignIn::Wrong
    })
}
