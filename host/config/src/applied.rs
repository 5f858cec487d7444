//! The fleet's config as this kiosk applied it: `fleet-config.json` in the data directory,
//! naming the version it runs and the one it ran before, each with its document. It is
//! replaced by a rename after a sync, so a kiosk stopped at any moment starts with the old
//! version or the new one.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::ConfigError;

const FILE_NAME: &str = "fleet-config.json";

/// One version of the fleet's part of the config, as the fleet sent it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layer {
    pub version: i64,
    pub toml: String,
}

/// The versions a kiosk applied.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    pub current: Option<Layer>,
    pub previous: Option<Layer>,
}

/// Which fleet version a loaded config runs, and one it could not.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FleetLayer {
    /// 0: none (the kiosk's own file alone).
    pub running: i64,
    /// A version applied before that no longer loads, and why; the one before it runs.
    pub refused: Option<(i64, String)>,
}

impl Applied {
    fn path(data_dir: &Path) -> PathBuf {
        data_dir.join(FILE_NAME)
    }

    /// What `data_dir` holds (nothing applied if the file is missing).
    pub fn read(data_dir: &Path) -> Result<Applied, ConfigError> {
        let path = Self::path(data_dir);
        let error = |message: String| ConfigError {
            path: path.clone(),
            line: None,
            message,
        };
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| error(e.to_string())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Applied::default()),
            Err(e) => Err(error(e.to_string())),
        }
    }

    /// Writes it to `data_dir` durably: a temporary file, synced, renamed over the old one.
    pub fn write(&self, data_dir: &Path) -> Result<(), ConfigError> {
        let path = Self::path(data_dir);
        let temp = path.with_extension("part");
        let json = serde_json::to_vec_pretty(self).expect("the applied config serializes");
        let written = (|| {
            std::fs::create_dir_all(data_dir)?;
            let mut file = std::fs::File::create(&temp)?;
            std::io::Write::write_all(&mut file, &json)?;
            file.sync_all()?;
            std::fs::rename(&temp, &path)?;
            std::fs::File::open(data_dir)?.sync_all()
        })();
        written.map_err(|e| ConfigError {
            path,
            line: None,
            message: e.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::KioskConfig;
    use crate::tests::GOOD as FILE;

    fn layer(version: i64, toml: &str) -> Option<Layer> {
        Some(Layer {
            version,
            toml: toml.into(),
        })
    }

    #[test]
    fn a_kiosk_starts_with_the_version_it_applied_or_else_the_one_before() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kiosk.toml");
        std::fs::write(&path, FILE).unwrap();
        let data = dir.path().join("data");
        let c = KioskConfig::load(&path).unwrap();
        assert_eq!(c.fleet, FleetLayer::default());

        Applied {
            current: layer(7, "[policy]\nresell_max_attempts = 9\n"),
            previous: layer(3, "[policy]\nresell_max_attempts = 2\n"),
        }
        .write(&data)
        .unwrap();
        let c = KioskConfig::load(&path).unwrap();
        assert_eq!((c.fleet.running, c.policy.resell_max_attempts), (7, 9));

        // The kiosk's own file lost the backend version 7 moves: version 3 runs, and 7 is
        // reported refused with why.
        Applied {
            current: layer(7, "[[backend]]\nname = \"zz\"\naddress = \"10.0.0.1:1\"\n"),
            previous: layer(3, "[policy]\nresell_max_attempts = 2\n"),
        }
        .write(&data)
        .unwrap();
        std::fs::write(&path, FILE.replace("name = \"zz\"", "name = \"yy\"")).unwrap();
        let c = KioskConfig::load(&path).unwrap();
        assert_eq!((c.fleet.running, c.policy.resell_max_attempts), (3, 2));
        let (version, why) = c.fleet.refused.unwrap();
        assert_eq!(version, 7);
        assert!(
            why.ends_with("it sets backend `zz`, which this kiosk's file does not name"),
            "{why}"
        );

        // Neither loads: the file alone, and a state file that does not read is reported.
        std::fs::write(data.join(FILE_NAME), "{not json").unwrap();
        let c = KioskConfig::load(&path).unwrap();
        assert_eq!(c.fleet.running, 0);
        assert!(c.fleet.refused.unwrap().1.contains("fleet-config.json"));
    }
}
