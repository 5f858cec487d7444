//! Plugin signing: Ed25519 keys, detached signatures, and the kiosk's trust store.
//!
//! A signature covers the SHA-256 of the component's bytes under a domain tag, so a signature
//! for a plugin can never be mistaken for a signature over anything else. It is checked before
//! the component is compiled: untrusted bytes never reach Cranelift.

use std::fmt;
use std::path::{Path, PathBuf};

use ed25519_dalek::{Signature, Signer as _, SigningKey, Verifier, VerifyingKey};
pub use endorsement::Endorsement;
use sha2::{Digest, Sha256};

pub mod endorsement;

/// Domain separation for plugin signatures.
const SIGNED_CONTEXT: &[u8] = b"selfvend-plugin-signature-v1\0";
const SECRET_TAG: &str = "selfvend-ed25519-secret";
const PUBLIC_TAG: &str = "selfvend-ed25519-public";
const SIGNATURE_TAG: &str = "selfvend-ed25519-signature";

/// Why a key, signature or trust store could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error("{at}: `[trust] dir`: {dir}: {cause}")]
    NoTrustDir {
        at: String,
        dir: PathBuf,
        cause: std::io::Error,
    },
    #[error("{path}: {cause}")]
    Io {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("{path}: {reason}")]
    Malformed { path: PathBuf, reason: String },
    #[error("{path}: not signed (no signature file {sig})", sig = signature_path(path).display())]
    Unsigned { path: PathBuf },
    #[error("{path}: signed by key {key_id}, which is not in the trust store {store}")]
    UntrustedSigner {
        path: PathBuf,
        key_id: KeyId,
        store: PathBuf,
    },
    #[error(
        "{path}: the signature by key {key_id} does not match the file (tampered or re-built after signing)"
    )]
    BadSignature { path: PathBuf, key_id: KeyId },
    #[error("{path} exists: refusing to overwrite a key")]
    KeyExists { path: PathBuf },
}

/// A short, stable name for a public key: the first 8 bytes of its SHA-256, in hex.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyId([u8; 8]);

impl KeyId {
    fn of(key: &VerifyingKey) -> Self {
        let digest = Sha256::digest(key.as_bytes());
        let mut id = [0; 8];
        id.copy_from_slice(&digest[..8]);
        KeyId(id)
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

/// A trusted public key with the name its file gives it.
#[derive(Debug, Clone)]
pub struct PublicKey {
    key: VerifyingKey,
    /// The signer's name, as written in the key file.
    pub name: String,
}

impl PublicKey {
    pub fn id(&self) -> KeyId {
        KeyId::of(&self.key)
    }

    /// Reads a `.pub` file: `selfvend-ed25519-public <hex> <name>`.
    pub fn read(path: &Path) -> Result<Self, TrustError> {
        let text = read_text(path)?;
        let line = key_line(&text, PUBLIC_TAG, path)?;
        let mut parts = line.splitn(3, ' ');
        let _tag = parts.next();
        let bytes = parse_hex::<32>(parts.next().unwrap_or(""), path, "public key")?;
        let key = VerifyingKey::from_bytes(&bytes)
            .map_err(|e| malformed(path, format!("not an Ed25519 public key: {e}")))?;
        let name = parts.next().unwrap_or("").trim().to_string();
        Ok(PublicKey { key, name })
    }
}

/// The identity of whoever signed a plugin, as found in the trust store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signer {
    pub key_id: KeyId,
    pub name: String,
}

impl Signer {
    /// What the kit's runtime records for a plugin it loaded without a signature.
    pub fn unsigned() -> Self {
        Signer {
            key_id: KeyId([0; 8]),
            name: "nobody (unsigned, loaded by the conformance kit)".into(),
        }
    }
}

impl fmt::Display for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (key {})", self.name, self.key_id)
    }
}

/// The keys a kiosk trusts: every `*.pub` file in one directory (installed with the kiosk), and
/// every vendor key a `*.endorsement` there says one of the kiosk's root keys (`roots/*.pub`)
/// endorsed, but for the keys in `revoked/*.pub`. Root keys sign endorsements only, never
/// plugins.
#[derive(Debug, Clone)]
pub struct TrustStore {
    dir: PathBuf,
    keys: Vec<PublicKey>,
    roots: Vec<PublicKey>,
    /// Endorsements that were not taken, each with why.
    refused: Vec<String>,
}

/// The files in `dir` whose names end in `.ext`, sorted; none if `dir` does not exist and
/// `optional`.
fn files_with(dir: &Path, ext: &str, optional: bool) -> Result<Vec<PathBuf>, TrustError> {
    let io = |cause| TrustError::Io {
        path: dir.to_path_buf(),
        cause,
    };
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if optional && e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io(e)),
    };
    let mut paths = Vec::new();
    for entry in entries {
        let path = entry.map_err(io)?.path();
        if path.extension().is_some_and(|e| e == ext) {
            paths.push(path);
        }
    }
    paths.sort();
    Ok(paths)
}

impl TrustStore {
    /// A store that trusts nobody.
    pub fn empty() -> Self {
        TrustStore {
            dir: PathBuf::new(),
            keys: Vec::new(),
            roots: Vec::new(),
            refused: Vec::new(),
        }
    }

    /// Loads every `*.pub` in `dir`, the root keys in `dir/roots`, and the vendor keys the
    /// `*.endorsement` files in `dir` prove the roots endorsed. A malformed key file is an
    /// error, not skipped; an endorsement that does not verify is refused (and logged), so a
    /// bad statement the fleet carried never stops the kiosk, nor adds a key.
    pub fn load(dir: &Path) -> Result<Self, TrustError> {
        Self::load_with_carried(dir, None)
    }

    /// [`TrustStore::load`], also taking the `*.endorsement` files in `carried` (statements the
    /// fleet carried, kept in the kiosk's data directory) under the same rule.
    pub fn load_with_carried(dir: &Path, carried: Option<&Path>) -> Result<Self, TrustError> {
        let read_all = |paths: Vec<PathBuf>| {
            paths
                .iter()
                .map(|p| PublicKey::read(p))
                .collect::<Result<Vec<_>, _>>()
        };
        let mut keys = read_all(files_with(dir, "pub", false)?)?;
        let roots = read_all(files_with(&dir.join("roots"), "pub", true)?)?;
        let mut refused = Vec::new();
        let mut statements = files_with(dir, "endorsement", false)?;
        if let Some(carried) = carried {
            statements.extend(files_with(carried, "endorsement", true)?);
        }
        for path in statements {
            match Endorsement::read(&path).and_then(|e| e.verify(&path, &roots)) {
                Ok(key) => keys.push(key),
                Err(e) => {
                    tracing::warn!("not trusted: {e}");
                    refused.push(e.to_string());
                }
            }
        }
        // A key its owner revoked is trusted by no file and no statement, however it arrives.
        let revoked = read_all(files_with(&dir.join("revoked"), "pub", true)?)?;
        keys.retain(|k| {
            let out = revoked.iter().any(|r| r.id() == k.id());
            if out {
                let why = format!("{}: key {} is revoked (revoked/)", k.name, k.id());
                tracing::warn!("not trusted: {why}");
                refused.push(why);
            }
            !out
        });
        Ok(TrustStore {
            dir: dir.to_path_buf(),
            keys,
            roots,
            refused,
        })
    }

    /// The utility's root keys installed with the kiosk.
    pub fn roots(&self) -> &[PublicKey] {
        &self.roots
    }

    /// The endorsements that were not taken, each with why.
    pub fn refused(&self) -> &[String] {
        &self.refused
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn keys(&self) -> &[PublicKey] {
        &self.keys
    }

    /// Checks `bytes` (read from `path`) against its detached signature `path.sig`.
    pub fn verify(&self, path: &Path, bytes: &[u8]) -> Result<Signer, TrustError> {
        let sig_path = signature_path(path);
        let sig_text = match std::fs::read_to_string(&sig_path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(TrustError::Unsigned {
                    path: path.to_path_buf(),
                });
            }
            Err(cause) => {
                return Err(TrustError::Io {
                    path: sig_path,
                    cause,
                });
            }
        };
        let detached = DetachedSignature::parse(&sig_text, &sig_path)?;
        let Some(key) = self.keys.iter().find(|k| k.id() == detached.key_id) else {
            return Err(TrustError::UntrustedSigner {
                path: path.to_path_buf(),
                key_id: detached.key_id,
                store: self.dir.clone(),
            });
        };
        key.key
            .verify(&signed_message(bytes), &detached.signature)
            .map_err(|_| TrustError::BadSignature {
                path: path.to_path_buf(),
                key_id: detached.key_id,
            })?;
        Ok(Signer {
            key_id: detached.key_id,
            name: key.name.clone(),
        })
    }
}

/// A signing key held by a plugin author.
pub struct SecretKey {
    key: SigningKey,
    name: String,
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretKey")
            .field("id", &self.public_id())
            .field("name", &self.name)
            .finish()
    }
}

impl SecretKey {
    /// A new random key named `name`.
    pub fn generate(name: &str) -> Self {
        let key = SigningKey::generate(&mut rand_core::OsRng);
        SecretKey {
            key,
            name: name.to_string(),
        }
    }

    pub fn public_id(&self) -> KeyId {
        KeyId::of(&self.key.verifying_key())
    }

    /// Writes the key to `path` (mode 0600) and its public half to `path.pub`; never overwrites.
    pub fn write(&self, path: &Path) -> Result<PathBuf, TrustError> {
        let pub_path = append_extension(path, "pub");
        for p in [path, pub_path.as_path()] {
            if p.exists() {
                return Err(TrustError::KeyExists {
                    path: p.to_path_buf(),
                });
            }
        }
        let secret = format!(
            "# selfvend plugin signing key: keep it secret; its public half is {}\n{SECRET_TAG} {} {}\n",
            pub_path.display(),
            hex::encode(self.key.to_bytes()),
            self.name
        );
        write_private(path, secret.as_bytes())?;
        let public = format!(
            "{PUBLIC_TAG} {} {}\n",
            hex::encode(self.key.verifying_key().as_bytes()),
            self.name
        );
        std::fs::write(&pub_path, public).map_err(|cause| TrustError::Io {
            path: pub_path.clone(),
            cause,
        })?;
        Ok(pub_path)
    }

    /// Reads a key file written by [`SecretKey::write`].
    pub fn read(path: &Path) -> Result<Self, TrustError> {
        let text = read_text(path)?;
        let line = key_line(&text, SECRET_TAG, path)?;
        let mut parts = line.splitn(3, ' ');
        let _tag = parts.next();
        let seed = parse_hex::<32>(parts.next().unwrap_or(""), path, "secret key")?;
        let name = parts.next().unwrap_or("").trim().to_string();
        Ok(SecretKey {
            key: SigningKey::from_bytes(&seed),
            name,
        })
    }

    /// Signs `bytes` (the plugin read from `path`) and writes `path.sig`.
    pub fn sign_file(&self, path: &Path, bytes: &[u8]) -> Result<PathBuf, TrustError> {
        let signature = self.key.sign(&signed_message(bytes));
        let sig_path = signature_path(path);
        let text = format!(
            "{SIGNATURE_TAG} {} {}\n# signer: {}; sha256 {}\n",
            self.public_id(),
            hex::encode(signature.to_bytes()),
            self.name,
            hex::encode(Sha256::digest(bytes))
        );
        std::fs::write(&sig_path, text).map_err(|cause| TrustError::Io {
            path: sig_path.clone(),
            cause,
        })?;
        Ok(sig_path)
    }
}

struct DetachedSignature {
    key_id: KeyId,
    signature: Signature,
}

impl DetachedSignature {
    /// Parses `selfvend-ed25519-signature <key id> <signature hex>`.
    fn parse(text: &str, path: &Path) -> Result<Self, TrustError> {
        let line = key_line(text, SIGNATURE_TAG, path)?;
        let mut parts = line.split(' ');
        let _tag = parts.next();
        let key_id = KeyId(parse_hex::<8>(parts.next().unwrap_or(""), path, "key id")?);
        let signature = Signature::from_bytes(&parse_hex::<64>(
            parts.next().unwrap_or(""),
            path,
            "signature",
        )?);
        Ok(DetachedSignature { key_id, signature })
    }
}

/// Where the detached signature of `plugin` lives: `PLUGIN.wasm.sig`.
pub fn signature_path(plugin: &Path) -> PathBuf {
    append_extension(plugin, "sig")
}

fn signed_message(bytes: &[u8]) -> Vec<u8> {
    let mut message = SIGNED_CONTEXT.to_vec();
    message.extend_from_slice(&Sha256::digest(bytes));
    message
}

fn append_extension(path: &Path, ext: &str) -> PathBuf {
    let mut s = path.as_os_str().to_os_string();
    s.push(".");
    s.push(ext);
    PathBuf::from(s)
}

fn read_text(path: &Path) -> Result<String, TrustError> {
    std::fs::read_to_string(path).map_err(|cause| TrustError::Io {
        path: path.to_path_buf(),
        cause,
    })
}

/// The first line starting with `tag`, skipping comments.
fn key_line<'a>(text: &'a str, tag: &str, path: &Path) -> Result<&'a str, TrustError> {
    text.lines()
        .map(str::trim)
        .find(|l| l.starts_with(tag) && l[tag.len()..].starts_with(' '))
        .ok_or_else(|| malformed(path, format!("no line starting with `{tag}`")))
}

fn parse_hex<const N: usize>(text: &str, path: &Path, what: &str) -> Result<[u8; N], TrustError> {
    let bytes =
        hex::decode(text).map_err(|e| malformed(path, format!("{what} is not hex: {e}")))?;
    bytes.try_into().map_err(|b: Vec<u8>| {
        malformed(path, format!("{what} has {} bytes, expected {N}", b.len()))
    })
}

fn malformed(path: &Path, reason: String) -> TrustError {
    TrustError::Malformed {
        path: path.to_path_buf(),
        reason,
    }
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), TrustError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let io = |cause| TrustError::Io {
        path: path.to_path_buf(),
        cause,
    };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io)?;
    file.write_all(bytes).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup() -> (tempfile::TempDir, SecretKey, PathBuf, TrustStore) {
        let dir = tempfile::tempdir().expect("tempdir");
        let trust = dir.path().join("trust");
        std::fs::create_dir(&trust).expect("mkdir");
        let key = SecretKey::generate("Test Vendor");
        let pub_path = key
            .write(&dir.path().join("vendor.key"))
            .expect("write key");
        std::fs::copy(&pub_path, trust.join("vendor.pub")).expect("copy pub");
        let plugin = dir.path().join("codec.wasm");
        std::fs::write(&plugin, b"\0asm component bytes").expect("write plugin");
        let store = TrustStore::load(&trust).expect("load trust");
        (dir, key, plugin, store)
    }

    #[test]
    fn signed_plugin_verifies_and_names_its_signer() {
        let (_dir, key, plugin, store) = setup();
        key.sign_file(&plugin, &std::fs::read(&plugin).unwrap())
            .unwrap();
        let signer = store
            .verify(&plugin, &std::fs::read(&plugin).unwrap())
            .unwrap();
        assert_eq!(signer.name, "Test Vendor");
        assert_eq!(signer.key_id, key.public_id());
    }

    #[test]
    fn one_changed_byte_breaks_the_signature() {
        let (_dir, key, plugin, store) = setup();
        let mut bytes = std::fs::read(&plugin).unwrap();
        key.sign_file(&plugin, &bytes).unwrap();
        bytes[3] ^= 1;
        let err = store.verify(&plugin, &bytes).unwrap_err();
        assert!(matches!(err, TrustError::BadSignature { .. }), "{err}");
        assert!(err.to_string().contains("does not match the file"), "{err}");
    }

    #[test]
    fn unsigned_and_untrusted_plugins_are_refused() {
        let (dir, _key, plugin, store) = setup();
        let bytes = std::fs::read(&plugin).unwrap();
        let err = store.verify(&plugin, &bytes).unwrap_err();
        assert!(
            err.to_string().contains("not signed (no signature file"),
            "{err}"
        );

        let stranger = SecretKey::generate("Stranger");
        stranger.sign_file(&plugin, &bytes).unwrap();
        let err = store.verify(&plugin, &bytes).unwrap_err();
        assert!(matches!(err, TrustError::UntrustedSigner { .. }), "{err}");
        assert!(
            err.to_string().contains(&stranger.public_id().to_string()),
            "{err}"
        );
        drop(dir);
    }

    #[test]
    fn keys_are_never_overwritten() {
        let (dir, _key, _plugin, _store) = setup();
        let err = SecretKey::generate("Again")
            .write(&dir.path().join("vendor.key"))
            .unwrap_err();
        assert!(matches!(err, TrustError::KeyExists { .. }), "{err}");
    }
}
