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

/// Checks `name`'s `password`. A wrong one is counted; five in a row lock the user for fifteen
/// minutes, during which even the right one is refused.
pub async fn sign_in(fleet: &Fleet, name: &str, password: &str) -> Result<SignIn, ApiError> {
    let client = fleet.db.get().await?;
    let Some(row) = client
        .query_opt(
            "SELECT id, password_hash, role, coalesce(locked_until > now(), false)
             FROM users WHERE name = $1",
            &[&name],
        )
        .await?
    else {
        // As slow as a real check, so a name's existence does not show in the time taken.
        let _ = Argon2::default().hash_password(b"x", &SaltString::generate(&mut OsRng));
        return Ok(SignIn::Wrong);
    };
    let (id, hash, role, locked): (i64, String, String, bool) =
        (row.get(0), row.get(1), row.get(2), row.get(3));
    if locked {
        return Ok(SignIn::Locked);
    }
    let right = PasswordHash::new(&hash)
        .map(|parsed| {
            Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        })
        .unwrap_or(false);
    if right {
        client
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
    let failed: i32 = client
        .query_one(
            "UPDATE users SET failed_logins = failed_logins + 1,
                 locked_until = CASE WHEN failed_logins + 1 >= $2
                                     THEN now() + make_interval(mins => $3) END
             WHERE id = $1 RETURNING failed_logins",
            &[&id, &LOCK_AFTER, &LOCK_MINUTES],
        )
        .await?
        .get(0);
    // Each wrong password in a row costs the next try a little more time.
    tokio::time::sleep(std::time::Duration::from_millis(250 * failed.min(8) as u64)).await;
    Ok(if failed >= LOCK_AFTER {
        SignIn::Locked
    } else {
        SignIn::Wrong
    })
}
