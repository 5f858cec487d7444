//! The kiosk's identity at the fleet: an Ed25519 key it makes itself, kept in a file only the
//! kiosk's user can read (0600), and the id the fleet gave it at pairing.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use ed25519_dalek::{Signer, SigningKey};
use rand_core::OsRng;
use selfvend_fleet_wire::signing_bytes;

use super::FleetError;

pub(super) const KEY_FILE: &str = "fleet-identity.key";

/// The kiosk's signing key.
#[derive(Clone)]
pub struct Identity {
    key: SigningKey,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("public_key", &self.public_key_hex())
            .finish_non_exhaustive()
    }
}

fn key_path(data_dir: &Path) -> PathBuf {
    data_dir.join(KEY_FILE)
}

impl Identity {
    /// A new key, kept in memory only.
    pub fn generate() -> Identity {
        Identity {
            key: SigningKey::generate(&mut OsRng),
        }
    }

    /// The key in `data_dir`, made (0600) if there is none yet.
    pub fn load_or_make(data_dir: &Path) -> Result<Identity, FleetError> {
        let path = key_path(data_dir);
        if path.exists() {
            return Identity::load(data_dir);
        }
        let key = SigningKey::generate(&mut OsRng);
        std::fs::create_dir_all(data_dir).map_err(|e| FleetError::identity(&path, e))?;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| FleetError::identity(&path, e))?;
        file.write_all(hex::encode(key.to_bytes()).as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(|e| FleetError::identity(&path, e))?;
        Ok(Identity { key })
    }

    /// The key in `data_dir`; refused if others can read it.
    pub fn load(data_dir: &Path) -> Result<Identity, FleetError> {
        let path = key_path(data_dir);
        let meta = std::fs::metadata(&path).map_err(|e| FleetError::identity(&path, e))?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(FleetError::Identity(format!(
                "{}: readable by others (mode {mode:o}); `chmod 600` it",
                path.display()
            )));
        }
        let text = std::fs::read_to_string(&path).map_err(|e| FleetError::identity(&path, e))?;
        let bytes: [u8; 32] = hex::decode(text.trim())
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| {
                FleetError::Identity(format!("{}: not a 32-byte key in hex", path.display()))
            })?;
        Ok(Identity {
            key: SigningKey::from_bytes(&bytes),
        })
    }

    pub fn public_key_hex(&self) -> String {
        hex::encode(self.key.verifying_key().to_bytes())
    }

    /// The signature of a request, hex.
    pub fn sign(&self, method: &str, path: &str, time_ms: i64, body: &[u8]) -> String {
        hex::encode(
            self.key
                .sign(&signing_bytes(method, path, time_ms, body))
                .to_bytes(),
        )
    }
}
