//! The fleet's part of a kiosk's config on the wire: the version the fleet wants (in the
//! heartbeat's reply) and the version the kiosk runs or refused (in its heartbeats).

use serde::{Deserialize, Serialize};

/// One version of the fleet's part of the kiosk's config: a TOML document the kiosk checks and
/// lays over its own file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DesiredConfig {
    pub version: i64,
    pub toml: String,
}

/// Which version of the fleet's config the kiosk runs (0: none), and the last it refused with
/// why: it keeps the version before, and is not sent a refused one again.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigReport {
    pub running: i64,
    #[serde(default)]
    pub refused: Option<i64>,
    #[serde(default)]
    pub why: String,
}

impl ConfigReport {
    pub fn check(&self) -> Result<(), String> {
        if self.running < 0 || self.refused.is_some_and(|r| r < 0) {
            return Err("config: a version is below 0".into());
        }
        if self.why.chars().count() > 1000 || self.why.chars().any(char::is_control) {
            return Err("config.why: more than 1000 characters or a control character".into());
        }
        Ok(())
    }
}
