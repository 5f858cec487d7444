//! The kiosk's side of the fleet's config (see [`selfvend_config::Overlay`]). A version the
//! fleet sends in a heartbeat's reply is checked off the worker: laid over the kiosk's own
//! file, checked as the file is, then self-checked (each backend whose address or limits it
//! changes is pinged through its dialect). The worker applies it between customers, durably,
//! keeping the version before. A version that fails any of this is refused: the kiosk keeps
//! what it runs and reports why, and the fleet does not send that version again. One that no
//! longer loads at start gives way to the version before ([`KioskConfig::load`]).

use std::sync::{Mutex, MutexGuard};

use selfvend_config::applied::{Applied, Layer};
use selfvend_config::{FleetLayer, Overlay};
use selfvend_fleet_wire::{ConfigReport, DesiredConfig};

use crate::config::KioskConfig;

/// A version checked and ready for the worker.
pub struct StagedConfig {
    pub version: i64,
    toml: String,
    pub config: KioskConfig,
}

struct State {
    /// What the kiosk runs now.
    config: KioskConfig,
    /// The fleet's version it runs, as sent (empty: none).
    running_toml: String,
    staged: Option<StagedConfig>,
    /// A version the worker took and has not yet applied (so a reply meanwhile does not stage
    /// it again).
    applying: Option<i64>,
    /// The version last put back to wait (so it is logged once).
    deferred: Option<i64>,
}

/// The config the kiosk runs and the fleet's next version of it.
pub struct FleetConfig {
    state: Mutex<State>,
}

impl FleetConfig {
    /// Starts from `config` as [`KioskConfig::load`] gave it.
    pub fn new(config: KioskConfig) -> FleetConfig {
        let running_toml = Applied::read(&config.kiosk.data_dir)
            .ok()
            .and_then(|a| {
                [a.current, a.previous]
                    .into_iter()
                    .flatten()
                    .find(|l| l.version == config.fleet.running)
            })
            .map(|l| l.toml)
            .unwrap_or_default();
        FleetConfig {
            state: Mutex::new(State {
                config,
                running_toml,
                staged: None,
                applying: None,
                deferred: None,
            }),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The config the kiosk runs now.
    pub fn current(&self) -> KioskConfig {
        self.state().config.clone()
    }

    /// What the next heartbeat says.
    pub fn report(&self) -> ConfigReport {
        let fleet = &self.state().config.fleet;
        ConfigReport {
            running: fleet.running,
            refused: fleet.refused.as_ref().map(|(v, _)| *v),
            why: fleet
                .refused
                .as_ref()
                .map(|(_, why)| crate::fleet::one_line(why))
                .unwrap_or_default(),
        }
    }

    /// Checks the version the fleet sent, off the worker; `self_check` vets the new config
    /// against the one running (it may ping backends) and says what it found.
    pub fn offer(
        &self,
        desired: &DesiredConfig,
        self_check: impl FnOnce(&KioskConfig, &KioskConfig) -> Result<String, String>,
    ) {
        let (running, running_toml) = {
            let state = self.state();
            let known = state.config.fleet.running == desired.version
                || state.config.fleet.refused.as_ref().map(|r| r.0) == Some(desired.version)
                || state.staged.as_ref().map(|s| s.version) == Some(desired.version)
                || state.applying == Some(desired.version);
            if known || desired.version < 1 {
                return;
            }
            (state.config.clone(), state.running_toml.clone())
        };
        let origin = format!("the fleet's config version {}", desired.version);
        let path = running.path.clone();
        let checked = KioskConfig::read(&path)
            .and_then(|text| {
                let new = Overlay::parse(&origin, &desired.toml)
                    .and_then(|overlay| KioskConfig::parse_with(&path, &text, &overlay))?;
                // What the version running made of the file as it is now (the file alone if
                // that no longer checks): only the difference is the fleet's change.
                let old = Overlay::parse("the version running", &running_toml)
                    .and_then(|overlay| KioskConfig::parse_with(&path, &text, &overlay))
                    .or_else(|_| KioskConfig::parse(&path, &text))?;
                Ok(running.with_fleet_change(&old, &new))
            })
            .map_err(|e| e.to_string())
            .and_then(|mut config| {
                let found = self_check(&running, &config).map_err(|e| format!("{origin}: {e}"))?;
                config.fleet = FleetLayer {
                    running: desired.version,
                    refused: None,
                };
                Ok((config, found))
            });
        match checked {
            Ok((config, found)) => {
                tracing::info!("{origin} checks ({found}); applying it between customers");
                self.state().staged = Some(StagedConfig {
                    version: desired.version,
                    toml: desired.toml.clone(),
                    config,
                });
            }
            Err(why) => self.refuse(desired.version, why),
        }
    }

    fn refuse(&self, version: i64, why: String) {
        tracing::error!("the fleet's config version {version} is refused: {why}");
        self.state().config.fleet.refused = Some((version, why));
    }

    /// The version staged, for the worker between customers; each is [`FleetConfig::apply`]d.
    pub fn take_staged(&self) -> Option<StagedConfig> {
        let mut state = self.state();
        let staged = state.staged.take();
        state.applying = staged.as_ref().map(|s| s.version);
        staged
    }

    /// Puts `staged` back for a later moment between customers (logged once per version).
    pub fn defer(&self, staged: StagedConfig, why: &str) {
        let mut state = self.state();
        if state.deferred != Some(staged.version) {
            tracing::info!("the fleet's config version {} waits: {why}", staged.version);
            state.deferred = Some(staged.version);
        }
        state.applying = None;
        // A newer version staged meanwhile replaces it.
        if state.staged.is_none() {
            state.staged = Some(staged);
        }
    }

    /// Makes `staged` the version the kiosk runs, durably, the one running now kept as the
    /// one before; the config to run, or why it was refused (the kiosk keeps what it runs).
    pub fn apply(&self, staged: StagedConfig) -> Result<KioskConfig, String> {
        let data_dir = self.state().config.kiosk.data_dir.clone();
        let running = self.state().config.fleet.running;
        // A state file that does not read keeps no version before; the new one is written anew.
        let before = Applied::read(&data_dir).unwrap_or_else(|e| {
            tracing::error!("the fleet config applied before: {e}; keeping none before");
            Applied::default()
        });
        let written = {
            let previous = [before.current, before.previous]
                .into_iter()
                .flatten()
                .find(|l| l.version == running);
            Applied {
                current: Some(Layer {
                    version: staged.version,
                    toml: staged.toml.clone(),
                }),
                previous,
            }
            .write(&data_dir)
        };
        let outcome = match written {
            Ok(()) => {
                tracing::info!(
                    "the kiosk runs the fleet's config version {}",
                    staged.version
                );
                let mut state = self.state();
                state.config = staged.config.clone();
                state.running_toml = staged.toml.clone();
                Ok(staged.config)
            }
            Err(e) => {
                let why = format!("applying it: {e}");
                self.refuse(staged.version, why.clone());
                Err(why)
            }
        };
        self.state().applying = None;
        outcome
    }
}
