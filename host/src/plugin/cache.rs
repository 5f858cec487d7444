//! The compiled-code cache: native code for each plugin, written and read only by this host.
//!
//! `Component::deserialize` trusts its bytes, so an entry is loaded only when its HMAC checks
//! under a key this host created; the key lives beside the cache directory, not in it. Entries
//! are keyed by the component's SHA-256 and the engine's compatibility hash, so a new wasmtime
//! or new engine settings never load stale code.

use std::hash::Hasher;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

const MAGIC: &[u8; 8] = b"SVCACHE1";
const TAG_LEN: usize = 32;

/// Why the cache could not be opened or written.
#[derive(Debug, thiserror::Error)]
#[error("plugin cache {path}: {cause}")]
pub struct CacheError {
    path: PathBuf,
    cause: std::io::Error,
}

/// What a lookup found.
pub enum Lookup {
    /// A verified entry, ready to use.
    Hit(Component),
    /// No entry for this component and engine.
    Miss,
    /// An entry existed but was refused; the text says why. It will be overwritten.
    Refused(String),
}

/// A directory of compiled plugins, each authenticated by an HMAC under the host's key.
#[derive(Clone)]
pub struct CodeCache {
    dir: PathBuf,
    key: [u8; 32],
    engine_hash: String,
}

impl std::fmt::Debug for CodeCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CodeCache")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl CodeCache {
    /// Opens (creating if needed, mode 0700) the cache at `dir`, with its key at `dir.key`.
    pub fn open(dir: &Path, engine: &Engine) -> Result<Self, CacheError> {
        let io = |cause| CacheError {
            path: dir.to_path_buf(),
            cause,
        };
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io)?;
        let key_path = dir.with_extension("key");
        let key = read_or_create_key(&key_path).map_err(|cause| CacheError {
            path: key_path,
            cause,
        })?;
        let mut hasher = Sha256Hasher::default();
        std::hash::Hash::hash(&engine.precompile_compatibility_hash(), &mut hasher);
        let engine_hash = hex::encode(&hasher.0.finalize()[..12]);
        Ok(CodeCache {
            dir: dir.to_path_buf(),
            key,
            engine_hash,
        })
    }

    fn entry_path(&self, component_sha256: &str) -> PathBuf {
        self.dir
            .join(format!("{component_sha256}-{}.cwasm", self.engine_hash))
    }

    /// Looks the component up; never returns code whose HMAC does not check.
    pub fn lookup(&self, engine: &Engine, component_sha256: &str) -> Lookup {
        let path = self.entry_path(component_sha256);
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Lookup::Miss,
            Err(e) => return Lookup::Refused(format!("{}: {e}", path.display())),
        };
        let Some(artifact) = bytes
            .strip_prefix(MAGIC)
            .filter(|rest| rest.len() > TAG_LEN)
        else {
            return Lookup::Refused(format!("{}: not a selfvend cache entry", path.display()));
        };
        let (tag, code) = artifact.split_at(TAG_LEN);
        if self.mac(component_sha256, code).verify_slice(tag).is_err() {
            return Lookup::Refused(format!(
                "{}: integrity check failed (the file was changed outside this host)",
                path.display()
            ));
        }
        // SAFETY: the bytes carry an HMAC under this host's own key over exactly these bytes,
        // so they are an artifact this host serialized for this engine configuration.
        #[allow(unsafe_code)]
        let component = unsafe { Component::deserialize(engine, code) };
        match component {
            Ok(component) => Lookup::Hit(component),
            Err(e) => Lookup::Refused(format!("{}: {e}", path.display())),
        }
    }

    /// Stores a freshly compiled component, replacing any refused entry atomically.
    pub fn store(&self, component_sha256: &str, component: &Component) -> Result<(), CacheError> {
        let path = self.entry_path(component_sha256);
        let io = |cause| CacheError {
            path: path.clone(),
            cause,
        };
        let code = component
            .serialize()
            .map_err(|e| io(std::io::Error::other(e.to_string())))?;
        let tag = self.mac(component_sha256, &code).finalize().into_bytes();
        let tmp = path.with_extension("tmp");
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io)?;
        file.write_all(MAGIC).map_err(io)?;
        file.write_all(&tag).map_err(io)?;
        file.write_all(&code).map_err(io)?;
        file.sync_all().map_err(io)?;
        std::fs::rename(&tmp, &path).map_err(io)
    }

    fn mac(&self, component_sha256: &str, code: &[u8]) -> Hmac<Sha256> {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.key)
            .expect("HMAC takes keys of any length");
        mac.update(component_sha256.as_bytes());
        mac.update(self.engine_hash.as_bytes());
        mac.update(code);
        mac
    }
}

fn read_or_create_key(path: &Path) -> std::io::Result<[u8; 32]> {
    match std::fs::read(path) {
        Ok(bytes) => bytes.try_into().map_err(|_| {
            std::io::Error::other("the cache key is not 32 bytes; delete it and the cache")
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut key = [0u8; 32];
            rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut key);
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)?;
            file.write_all(&key)?;
            file.sync_all()?;
            Ok(key)
        }
        Err(e) => Err(e),
    }
}

/// Feeds `Hash` output into SHA-256 so the engine hash is stable across processes.
#[derive(Default)]
struct Sha256Hasher(Sha256);

impl Hasher for Sha256Hasher {
    fn finish(&self) -> u64 {
        let digest = self.0.clone().finalize();
        u64::from_le_bytes(digest[..8].try_into().expect("digest has 32 bytes"))
    }

    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}
