//! Plugin builds installed by rollouts, beside the journal (`plugins/` in the data directory):
//! each build as `<sha256>.wasm` with its vendor's signature, and `state.json` naming, for each
//! plugin of the config, the build it runs and the one it ran before (none: the config's own
//! file). The state file is replaced by a rename only after the builds it names are on disk,
//! so a kiosk stopped at any moment starts with the old build or the new one, never neither.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::inspect::PluginKind;
use super::trust::signature_path;
use super::{Plugin, PluginError, PluginRuntime};
use crate::config::{PluginEntry, PluginRole};

const STATE_FILE: &str = "state.json";

/// Why the installed builds could not be read or written.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {why}")]
pub struct InstalledError {
    pub path: PathBuf,
    pub why: String,
}

/// The builds a plugin runs: by SHA-256, `None` being the config's own file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Builds {
    pub current: Option<String>,
    pub previous: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct State {
    plugins: BTreeMap<String, Builds>,
}

/// The rollouts' builds in one data directory.
#[derive(Debug, Clone)]
pub struct Installed {
    dir: PathBuf,
}

/// Which way a switch goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Direction {
    /// To this build; the one it runs now becomes the previous.
    Forward(String),
    /// Away from build `from` (a rolled-back rollout's), back to build `to` (`None`: the
    /// config's file), the one before it when the switch was staged; nothing changes if
    /// either has changed since.
    Back { from: String, to: Option<String> },
}

impl Direction {
    pub fn is_back(&self) -> bool {
        matches!(self, Direction::Back { .. })
    }
}

impl Installed {
    /// The builds installed in `data_dir`.
    pub fn new(data_dir: &Path) -> Installed {
        Installed {
            dir: data_dir.join("plugins"),
        }
    }

    fn error(&self, path: &Path, why: impl std::fmt::Display) -> InstalledError {
        InstalledError {
            path: path.to_path_buf(),
            why: why.to_string(),
        }
    }

    /// Where build `sha256` is (its signature is beside it).
    pub fn path(&self, sha256: &str) -> PathBuf {
        self.dir.join(format!("{sha256}.wasm"))
    }

    /// The builds `name` runs (the config's file, if no rollout reached it).
    pub fn builds(&self, name: &str) -> Result<Builds, InstalledError> {
        Ok(self.state()?.plugins.get(name).cloned().unwrap_or_default())
    }

    fn state(&self) -> Result<State, InstalledError> {
        let path = self.dir.join(STATE_FILE);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| self.error(&path, e)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(State::default()),
            Err(e) => Err(self.error(&path, e)),
        }
    }

    /// Writes `bytes` to `path` durably: a temporary file, synced, renamed over it.
    fn write_durably(&self, path: &Path, bytes: &[u8]) -> Result<(), InstalledError> {
        let temp = path.with_extension("part");
        let written = (|| {
            let mut file = std::fs::File::create(&temp)?;
            std::io::Write::write_all(&mut file, bytes)?;
            file.sync_all()?;
            std::fs::rename(&temp, path)?;
            std::fs::File::open(&self.dir)?.sync_all()
        })();
        written.map_err(|e| self.error(path, e))
    }

    /// Stores a downloaded build and its signature; returns where the build is. A build a
    /// plugin runs or may go back to is never written over (its signature could be replaced
    /// by a bad one).
    pub fn store(
        &self,
        sha256: &str,
        component: &[u8],
        signature: &[u8],
    ) -> Result<PathBuf, InstalledError> {
        std::fs::create_dir_all(&self.dir).map_err(|e| self.error(&self.dir, e))?;
        let path = self.path(sha256);
        let named =
            self.state()?.plugins.values().any(|b| {
                b.current.as_deref() == Some(sha256) || b.previous.as_deref() == Some(sha256)
            });
        if named && path.is_file() {
            return Ok(path);
        }
        self.write_durably(&signature_path(&path), signature)?;
        self.write_durably(&path, component)?;
        Ok(path)
    }

    /// Stops `name` going back to `sha256` (a build its rollout rolled back), if that is the
    /// build before; it then goes back to the config's file.
    pub fn forget(&self, name: &str, sha256: &str) -> Result<(), InstalledError> {
        let mut state = self.state()?;
        let Some(builds) = state.plugins.get_mut(name) else {
            return Ok(());
        };
        if builds.previous.as_deref() != Some(sha256) {
            return Ok(());
        }
        builds.previous = None;
        let json = serde_json::to_vec_pretty(&state).expect("the state serializes");
        self.write_durably(&self.dir.join(STATE_FILE), &json)
    }

    /// Makes `name` run the build `direction` says, durably; returns the builds it runs now,
    /// or `None` if going back found the builds changed since it was staged (nothing changed).
    pub fn switch(
        &self,
        name: &str,
        direction: &Direction,
    ) -> Result<Option<Builds>, InstalledError> {
        let mut state = self.state()?;
        let builds = state.plugins.entry(name.to_string()).or_default();
        match direction {
            Direction::Forward(sha256) => {
                if !self.path(sha256).is_file() {
                    return Err(self.error(&self.path(sha256), "not installed"));
                }
                builds.previous = builds.current.replace(sha256.clone());
            }
            // A later build took its place, or the one before is no longer the one loaded to go
            // back to: the caller looks again.
            Direction::Back { from, to }
                if builds.current.as_ref() != Some(from) || builds.previous != *to =>
            {
                return Ok(None);
            }
            Direction::Back { .. } => builds.current = builds.previous.take(),
        }
        let now = builds.clone();
        fail::fail_point!("rollout.before-switch");
        let json = serde_json::to_vec_pretty(&state).expect("the state serializes");
        std::fs::create_dir_all(&self.dir).map_err(|e| self.error(&self.dir, e))?;
        self.write_durably(&self.dir.join(STATE_FILE), &json)?;
        fail::fail_point!("rollout.after-switch");
        Ok(Some(now))
    }

    /// Removes builds no plugin runs or may go back to, but for `pinned` (builds being
    /// prepared, staged or switched to, read by the caller before this reads the state: a
    /// build is unpinned only after the switch to it is written); a failure only leaves a file
    /// behind.
    pub fn tidy(&self, pinned: &[String]) {
        let Ok(state) = self.state() else {
            return;
        };
        let keep: Vec<&String> = state
            .plugins
            .values()
            .flat_map(|b| b.current.iter().chain(&b.previous))
            .chain(pinned)
            .collect();
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for entry in entries.flatten() {
            let file = entry.file_name().to_string_lossy().into_owned();
            // Only builds and their signatures: never the state file or one being written.
            let Some(sha) = file
                .strip_suffix(".wasm")
                .or_else(|| file.strip_suffix(".wasm.sig"))
            else {
                continue;
            };
            if !keep.iter().any(|k| k.as_str() == sha) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }

    /// Loads the build `entry` runs: the current one, else the previous, else the config's
    /// file; a build that does not load is logged and the next one tried.
    pub fn load(
        &self,
        runtime: &PluginRuntime,
        entry: &PluginEntry,
    ) -> Result<Plugin, PluginError> {
        let builds = match self.builds(&entry.name) {
            Ok(builds) => builds,
            Err(e) => {
                tracing::error!("plugin {}: the installed builds: {e}", entry.name);
                Builds::default()
            }
        };
        for sha in builds.current.iter().chain(&builds.previous) {
            match runtime.load(&entry.name, &self.path(sha)) {
                Ok(plugin) if plugin.kind() == kind_of(entry.role) => return Ok(plugin),
                Ok(_) => tracing::error!(
                    "plugin {}: build {sha} is not a {}",
                    entry.name,
                    kind_name(kind_of(entry.role))
                ),
                Err(e) => tracing::error!("plugin {}: build {sha} did not load: {e}", entry.name),
            }
        }
        runtime.load(&entry.name, &entry.file)
    }
}

/// The kind of plugin a config role takes.
pub fn kind_of(role: PluginRole) -> PluginKind {
    match role {
        PluginRole::CardCodec => PluginKind::CardCodec,
        PluginRole::BackendDialect => PluginKind::BackendDialect,
        PluginRole::AcquirerDialect => PluginKind::AcquirerDialect,
    }
}

pub fn kind_name(kind: PluginKind) -> &'static str {
    match kind {
        PluginKind::CardCodec => "card codec",
        PluginKind::BackendDialect => "backend dialect",
        PluginKind::AcquirerDialect => "acquirer dialect",
    }
}
