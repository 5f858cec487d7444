//! The kiosk's side of a plugin rollout. The fleet's heartbeat reply says which build of which
//! plugin it wants; on the link's thread the kiosk downloads it, verifies its signature against
//! **its own** trust store, compiles it and runs a self-check (`about`; a dialect's `ping` to
//! each backend it serves), then stages it. The kiosk's worker switches to it between customers
//! ([`Rollouts::take_staged`], [`Rollouts::switched`]), never during a session, and keeps the
//! build before, which a rolled-back rollout switches back to. Each step is reported in the
//! next heartbeats. A build that fails any step never runs; the kiosk keeps what it ran.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

use selfvend_fleet_wire::{Desired, DesiredPlugin, PluginPart, RolloutStep, Step};
use sha2::{Digest, Sha256};

use crate::config::{KioskConfig, PluginEntry, PluginRole};
use crate::fleet::FleetLink;
use crate::plugin::PluginRuntime;
use crate::plugin::inspect::PluginKind;
use crate::plugin::installed::{Direction, Installed};
use crate::plugin::trust::TrustStore;
use crate::plugin::{Plugin, trust::endorsement::Endorsement};

/// Where statements the fleet carried are kept, in the data directory.
const CARRIED_DIR: &str = "endorsements";

/// The trust store a kiosk with `config` checks plugins against: its own, and the statements
/// the fleet carried that its roots signed.
pub fn trust_store(config: &KioskConfig) -> Result<TrustStore, crate::plugin::trust::TrustError> {
    TrustStore::load_with_carried(
        &config.trust_dir,
        Some(&config.kiosk.data_dir.join(CARRIED_DIR)),
    )
}

/// A build ready to switch to, or back from.
pub struct Switch {
    pub rollout: i64,
    /// The plugin, by its config name.
    pub name: String,
    /// The rollout's build.
    pub sha256: String,
    pub direction: Direction,
    /// The build to run after the switch, compiled and checked.
    pub plugin: Plugin,
    /// What the steps so far found.
    detail: String,
}

#[derive(Default)]
struct Progress {
    /// The last step of each rollout the server last asked about.
    steps: BTreeMap<i64, RolloutStep>,
    staged: Vec<Switch>,
    /// Statements the fleet carried that no root of this kiosk signed (each logged once).
    refused: std::collections::BTreeSet<String>,
}

/// A kiosk's rollouts: what the link thread prepares and the worker switches to.
pub struct Rollouts {
    config: KioskConfig,
    installed: Installed,
    progress: Mutex<Progress>,
}

impl Rollouts {
    pub fn new(config: KioskConfig) -> Rollouts {
        Rollouts {
            installed: Installed::new(&config.kiosk.data_dir),
            config,
            progress: Mutex::default(),
        }
    }

    fn progress(&self) -> std::sync::MutexGuard<'_, Progress> {
        self.progress.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// What the next heartbeat reports.
    pub fn steps(&self) -> Vec<RolloutStep> {
        self.progress().steps.values().cloned().collect()
    }

    fn record(&self, d: &DesiredPlugin, step: Step, detail: String) {
        match step {
            Step::Failed => tracing::error!("rollout {} of {}: {detail}", d.rollout, d.name),
            _ => tracing::info!(
                "rollout {} of {}: {} ({detail})",
                d.rollout,
                d.name,
                step.as_str()
            ),
        }
        self.progress().steps.insert(
            d.rollout,
            RolloutStep {
                rollout: d.rollout,
                name: d.name.clone(),
                sha256: d.sha256.clone(),
                step,
                detail: one_line_long(&detail),
            },
        );
    }

    /// Acts on what the fleet wants (run on the link's thread, after a heartbeat). Returns
    /// whether a switch waits for the worker.
    pub fn apply(&self, link: &FleetLink, desired: &Desired) -> bool {
        self.take_endorsements(&desired.endorsements);
        {
            let mut progress = self.progress();
            progress
                .steps
                .retain(|id, _| desired.plugins.iter().any(|d| d.rollout == *id));
            let staged: Vec<String> = progress
                .staged
                .iter()
                .filter_map(|s| match &s.direction {
                    Direction::Forward(sha) => Some(sha.clone()),
                    Direction::Back => None,
                })
                .collect();
            drop(progress);
            self.installed.tidy(&staged);
        }
        for d in &desired.plugins {
            let (last, staged_back) = {
                let progress = self.progress();
                (
                    progress.steps.get(&d.rollout).map(|s| s.step),
                    progress
                        .staged
                        .iter()
                        .find(|s| s.rollout == d.rollout)
                        .map(|s| s.direction == Direction::Back),
                )
            };
            let done = if d.roll_back {
                last == Some(Step::RolledBack) || staged_back == Some(true)
            } else {
                last.is_some_and(|s| {
                    s != Step::Downloaded && s != Step::Verified && s != Step::Compiled
                })
            };
            if done {
                continue;
            }
            let Some(entry) = self.config.plugins.iter().find(|p| p.name == d.name) else {
                self.record(
                    d,
                    Step::Failed,
                    format!("this kiosk's config has no [[plugin]] named `{}`", d.name),
                );
                continue;
            };
            let builds = match self.installed.builds(&d.name) {
                Ok(builds) => builds,
                Err(e) => {
                    self.record(d, Step::Failed, e.to_string());
                    continue;
                }
            };
            let running = builds.current.as_deref() == Some(d.sha256.as_str());
            if d.roll_back {
                self.progress()
                    .staged
                    .retain(|s| !(s.rollout == d.rollout && s.direction != Direction::Back));
                if !running {
                    self.record(d, Step::RolledBack, "it never ran here".into());
                    continue;
                }
                let back = match &builds.previous {
                    Some(sha) => self.installed.path(sha),
                    None => entry.file.clone(),
                };
                match self.runtime().and_then(|r| {
                    r.load(&d.name, &back)
                        .map_err(|e| format!("the build before does not load: {e}"))
                }) {
                    Ok(plugin) => self.stage(d, Direction::Back, plugin, String::new()),
                    Err(why) => self.record(d, Step::Failed, why),
                }
            } else if running {
                self.record(d, Step::Active, "it runs".into());
            } else {
                match self.prepare(link, d, entry) {
                    Ok((plugin, detail)) => {
                        let direction = Direction::Forward(d.sha256.clone());
                        self.stage(d, direction, plugin, detail);
                    }
                    Err(why) => {
                        self.record(d, Step::Failed, why);
                        self.installed.tidy(&[]);
                    }
                }
            }
        }
        !self.progress().staged.is_empty()
    }

    fn stage(&self, d: &DesiredPlugin, direction: Direction, plugin: Plugin, detail: String) {
        let back = direction == Direction::Back;
        self.record(
            d,
            Step::Checked,
            if back {
                "the build before is loaded; switching back between customers".into()
            } else {
                format!("{detail}; switching between customers")
            },
        );
        self.progress().staged.push(Switch {
            rollout: d.rollout,
            name: d.name.clone(),
            sha256: d.sha256.clone(),
            direction,
            plugin,
            detail,
        });
    }

    fn runtime(&self) -> Result<PluginRuntime, String> {
        let trust = trust_store(&self.config).map_err(|e| format!("the trust store: {e}"))?;
        PluginRuntime::new(
            trust,
            &self.config.plugin_cache_dir(),
            self.config.plugin_limits.clone(),
        )
        .map_err(|e| e.to_string())
    }

    /// Download, verify, compile and self-check; the plugin and what each step found.
    fn prepare(
        &self,
        link: &FleetLink,
        d: &DesiredPlugin,
        entry: &PluginEntry,
    ) -> Result<(Plugin, String), String> {
        let component = link
            .download(&d.sha256, PluginPart::Component)
            .map_err(|e| format!("download: {e}"))?;
        let got = hex::encode(Sha256::digest(&component));
        if got != d.sha256 {
            return Err(format!(
                "download: the component's SHA-256 is {got}, not the build's"
            ));
        }
        let signature = link
            .download(&d.sha256, PluginPart::Signature)
            .map_err(|e| format!("download of the signature: {e}"))?;
        let path = self
            .installed
            .store(&d.sha256, &component, &signature)
            .map_err(|e| format!("storing the build: {e}"))?;
        let mut detail = format!("downloaded {} bytes", component.len());
        let runtime = self.runtime()?;
        let signer = runtime
            .trust()
            .verify(&path, &component)
            .map_err(|e| format!("verify: {e}"))?;
        detail.push_str(&format!(", signed by {signer}"));
        let started = Instant::now();
        let plugin = runtime
            .load(&d.name, &path)
            .map_err(|e| format!("compile: {e}"))?;
        detail.push_str(&format!(
            ", compiled in {} ms",
            started.elapsed().as_millis()
        ));
        let wanted = match entry.role {
            PluginRole::CardCodec => PluginKind::CardCodec,
            PluginRole::BackendDialect => PluginKind::BackendDialect,
            PluginRole::AcquirerDialect => PluginKind::AcquirerDialect,
        };
        if plugin.kind() != wanted {
            return Err(format!(
                "self-check: it is a {}, and `{}` is a {} in this kiosk's config",
                kind_name(plugin.kind()),
                d.name,
                kind_name(wanted)
            ));
        }
        let checked = self_check(&self.config, &plugin).map_err(|e| format!("self-check: {e}"))?;
        detail.push_str(&format!(", self-check: {checked}"));
        Ok((plugin, detail))
    }

    /// Keeps each statement the fleet carried that one of this kiosk's roots signed; one that
    /// does not verify is logged and dropped.
    fn take_endorsements(&self, statements: &[String]) {
        if statements.is_empty() {
            return;
        }
        let dir = self.config.kiosk.data_dir.join(CARRIED_DIR);
        let roots = match TrustStore::load(&self.config.trust_dir) {
            Ok(trust) => trust.roots().to_vec(),
            Err(e) => return tracing::error!("endorsements: the trust store: {e}"),
        };
        for statement in statements {
            let name = &hex::encode(Sha256::digest(statement.as_bytes()))[..16];
            let path = dir.join(format!("{name}.endorsement"));
            if path.exists() || self.progress().refused.contains(name) {
                continue;
            }
            if let Err(e) = keep_if_endorsed(&dir, &path, statement, &roots) {
                tracing::warn!("a statement the fleet carried is not taken: {e}");
                self.progress().refused.insert(name.to_string());
            }
        }
    }

    /// The switches staged, for the worker between customers.
    pub fn take_staged(&self) -> Vec<Switch> {
        std::mem::take(&mut self.progress().staged)
    }

    /// Makes `switch` durable; the worker then runs `switch.plugin` in place of the old one.
    /// Reports the step either way.
    pub fn switch(&self, switch: &Switch) -> Result<(), String> {
        let d = DesiredPlugin {
            rollout: switch.rollout,
            name: switch.name.clone(),
            sha256: switch.sha256.clone(),
            roll_back: switch.direction == Direction::Back,
        };
        match self.installed.switch(&switch.name, &switch.direction) {
            Ok(_) if switch.direction == Direction::Back => {
                self.record(&d, Step::RolledBack, "back to the build before".into());
                Ok(())
            }
            Ok(_) => {
                self.record(&d, Step::Active, switch.detail.clone());
                Ok(())
            }
            Err(e) => {
                let why = format!("switch: {e}");
                self.record(&d, Step::Failed, why.clone());
                Err(why)
            }
        }
    }
}

/// Writes `statement` to `path` in `dir` if it verifies against `roots`.
fn keep_if_endorsed(
    dir: &Path,
    path: &PathBuf,
    statement: &str,
    roots: &[crate::plugin::trust::PublicKey],
) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let temp = path.with_extension("part");
    std::fs::write(&temp, statement).map_err(|e| format!("{}: {e}", temp.display()))?;
    let verified = Endorsement::read(&temp).and_then(|e| e.verify(&temp, roots));
    match verified {
        Ok(key) => {
            std::fs::rename(&temp, path).map_err(|e| format!("{}: {e}", path.display()))?;
            tracing::info!(
                "the fleet carried an endorsement of {} by this kiosk's root",
                key.name
            );
            Ok(())
        }
        Err(e) => {
            let _ = std::fs::remove_file(&temp);
            Err(e.to_string())
        }
    }
}

/// A plugin's self-check before it may run: `about` answers, and a backend dialect pings
/// each backend this kiosk sends it to. Returns what it found.
pub fn self_check(config: &KioskConfig, plugin: &Plugin) -> Result<String, String> {
    match plugin.kind() {
        PluginKind::CardCodec => {
            let about = plugin
                .card_session()
                .and_then(|mut s| s.about())
                .map_err(|e| format!("about: {e}"))?;
            Ok(format!("{} {} {}", about.vendor, about.name, about.version))
        }
        PluginKind::BackendDialect => {
            let mut pinged = Vec::new();
            for b in config.backends.iter().filter(|b| b.dialect == plugin.name) {
                let mut session = plugin
                    .backend_session(b.endpoint.clone())
                    .map_err(|e| e.to_string())?;
                if pinged.is_empty() {
                    session.about().map_err(|e| format!("about: {e}"))?;
                }
                session
                    .ping()
                    .map_err(|e| format!("ping to backend {}: {e}", b.name))?;
                pinged.push(b.name.clone());
            }
            if pinged.is_empty() {
                // `about` sends nothing; the endpoint is never dialled.
                let nowhere = crate::backend::Endpoint {
                    address: "127.0.0.1:9".into(),
                    connect_timeout: std::time::Duration::from_secs(1),
                    io_timeout: std::time::Duration::from_secs(1),
                    max_request_bytes: 64,
                    max_reply_bytes: 64,
                };
                let about = plugin
                    .backend_session(nowhere)
                    .and_then(|mut s| s.about())
                    .map_err(|e| format!("about: {e}"))?;
                return Ok(format!(
                    "{} {} (no backend to ping)",
                    about.name, about.version
                ));
            }
            Ok(format!("pinged {}", pinged.join(", ")))
        }
        PluginKind::AcquirerDialect => {
            let Some(acquirer) = &config.acquirer else {
                return Err("this kiosk has no [acquirer] for an acquirer dialect".into());
            };
            let about = plugin
                .acquirer_session(acquirer.endpoint.clone(), None)
                .and_then(|mut s| s.about())
                .map_err(|e| format!("about: {e}"))?;
            Ok(format!("{} {} {}", about.vendor, about.name, about.version))
        }
    }
}

fn kind_name(kind: PluginKind) -> &'static str {
    match kind {
        PluginKind::CardCodec => "card codec",
        PluginKind::BackendDialect => "backend dialect",
        PluginKind::AcquirerDialect => "acquirer dialect",
    }
}

/// `text` on one line, within what a heartbeat carries for a step's detail.
fn one_line_long(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(1000)
        .collect()
}
