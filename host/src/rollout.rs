//! The kiosk's side of a plugin rollout. The fleet's heartbeat reply says which build of which
//! plugin it wants; on the link's thread the kiosk downloads it, verifies its signature against
//! **its own** trust store, compiles it and runs a self-check (`about`; a dialect's `ping` to
//! each backend it serves), then stages it. The kiosk's worker switches to it between customers
//! ([`Rollouts::take_staged`], [`Rollouts::switched`]), never during a session, and keeps the
//! build before, which a rolled-back rollout switches back to. Each step is reported in the
//! next heartbeats. A build that fails any step never runs; the kiosk keeps what it ran.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

use selfvend_fleet_wire::{Desired, DesiredPlugin, PluginPart, RolloutStep, Step, is_sha256};
use sha2::{Digest, Sha256};

use crate::config::{KioskConfig, PluginEntry};
use crate::fleet::FleetLink;
use crate::fleet_config::FleetConfig;
use crate::plugin::PluginRuntime;
use crate::plugin::inspect::PluginKind;
use crate::plugin::installed::{Direction, Installed, kind_name, kind_of};
use crate::plugin::trust::TrustStore;
use crate::plugin::{Plugin, trust::endorsement::Endorsement};

/// The longest a config's self-check waits on a backend, to connect and for each reply.
const CHECK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Where statements the fleet carried are kept, in the data directory.
const CARRIED_DIR: &str = "endorsements";

/// The trust store a kiosk with `config` checks plugins against: its own, and the statements
/// the fleet carried that its roots signed.
pub fn trust_store(config: &KioskConfig) -> Result<TrustStore, crate::plugin::trust::TrustError> {
    if let Err(cause) = std::fs::read_dir(&config.trust_dir) {
        return Err(crate::plugin::trust::TrustError::NoTrustDir {
            at: config.trust_dir_at.clone(),
            dir: config.trust_dir.clone(),
            cause,
        });
    }
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
    /// Switches the worker took and has not yet reported: (rollout, back). Staged in all but
    /// name, so a heartbeat's reply meanwhile does not stage them again.
    switching: BTreeSet<(i64, bool)>,
    /// Builds being prepared, staged or switched to: kept on disk whatever the state file says.
    pinned: BTreeSet<String>,
    /// Statements the fleet carried that no root of this kiosk signed (each logged once).
    refused: BTreeSet<String>,
}

/// A kiosk's rollouts: what the link thread prepares and the worker switches to.
pub struct Rollouts {
    /// The config the kiosk runs, and the fleet's next version of it.
    configs: FleetConfig,
    installed: Installed,
    progress: Mutex<Progress>,
}

impl Rollouts {
    pub fn new(config: KioskConfig) -> Rollouts {
        Rollouts {
            installed: Installed::new(&config.kiosk.data_dir),
            configs: FleetConfig::new(config),
            progress: Mutex::default(),
        }
    }

    /// The config the kiosk runs now, and the fleet's next version of it.
    pub fn configs(&self) -> &FleetConfig {
        &self.configs
    }

    fn config(&self) -> KioskConfig {
        self.configs.current()
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

    /// Acts on what the fleet wants (run off the worker, after a heartbeat). Returns whether
    /// a switch waits for the worker.
    pub fn apply(&self, link: &FleetLink, desired: &Desired) -> bool {
        self.take_endorsements(&desired.endorsements);
        if let Some(config) = &desired.config {
            self.configs
                .offer(config, |running, new| self.check_config(running, new));
        }
        // What the server sent is checked before it is acted on or echoed in a heartbeat.
        let mut wanted: Vec<&DesiredPlugin> = desired
            .plugins
            .iter()
            .filter(|d| {
                let fits = d.rollout > 0
                    && is_sha256(&d.sha256)
                    && !d.name.is_empty()
                    && d.name.len() <= 64
                    && !d.name.chars().any(char::is_control);
                if !fits {
                    tracing::warn!("the fleet asked for a build it cannot mean: {d:?}");
                }
                fits
            })
            .collect();
        // Rollbacks first: a build rolled back goes before the next one of its plugin comes.
        wanted.sort_by_key(|d| (!d.roll_back, d.rollout));
        {
            let mut progress = self.progress();
            progress
                .steps
                .retain(|id, _| wanted.iter().any(|d| d.rollout == *id));
            // A switch the fleet no longer asks for (paused, rolled back) is not made.
            let asked = |s: &Switch| {
                wanted
                    .iter()
                    .any(|d| d.rollout == s.rollout && d.roll_back == s.direction.is_back())
            };
            let dropped: Vec<String> = progress
                .staged
                .iter()
                .filter(|s| !asked(s) && !s.direction.is_back())
                .map(|s| s.sha256.clone())
                .collect();
            progress.staged.retain(|s| asked(s));
            for sha in dropped {
                progress.pinned.remove(&sha);
            }
        }
        self.tidy();
        for d in wanted {
            self.apply_one(link, d);
        }
        !self.progress().staged.is_empty()
    }

    /// A new config's self-check: each backend whose address or limits it changes answers a
    /// ping through its dialect (as the kiosk runs it) at its new address.
    fn check_config(&self, running: &KioskConfig, new: &KioskConfig) -> Result<String, String> {
        let changed: Vec<_> = new
            .backends
            .iter()
            .filter(|b| {
                running
                    .backends
                    .iter()
                    .find(|r| r.name == b.name)
                    .is_none_or(|r| r.endpoint != b.endpoint)
            })
            .collect();
        if changed.is_empty() {
            return Ok("no backend moved".into());
        }
        let runtime = self.runtime()?;
        let mut pinged = Vec::new();
        for b in changed {
            let entry = new
                .plugins
                .iter()
                .find(|p| p.name == b.dialect)
                .ok_or_else(|| format!("backend {}: no dialect `{}`", b.name, b.dialect))?;
            let dialect = self
                .installed
                .load(&runtime, entry)
                .map_err(|e| format!("backend {}: its dialect does not load: {e}", b.name))?;
            // The check runs on the rollout thread: it may not hold it for the full timeouts.
            let mut endpoint = b.endpoint.clone();
            endpoint.connect_timeout = endpoint.connect_timeout.min(CHECK_TIMEOUT);
            endpoint.io_timeout = endpoint.io_timeout.min(CHECK_TIMEOUT);
            let mut session = dialect
                .backend_session(endpoint)
                .map_err(|e| format!("backend {}: {e}", b.name))?;
            session.ping().map_err(|e| {
                format!("ping to backend {} at {}: {e}", b.name, b.endpoint.address)
            })?;
            pinged.push(format!("pinged {} at {}", b.name, b.endpoint.address));
        }
        Ok(pinged.join(", "))
    }

    /// Removes builds nothing needs; the pins are read before the state file (see
    /// [`Installed::tidy`]).
    fn tidy(&self) {
        let pinned: Vec<String> = self.progress().pinned.iter().cloned().collect();
        self.installed.tidy(&pinned);
    }

    fn apply_one(&self, link: &FleetLink, d: &DesiredPlugin) {
        let (last, staged_back, in_flight) = {
            let progress = self.progress();
            (
                progress.steps.get(&d.rollout).map(|s| s.step),
                progress
                    .staged
                    .iter()
                    .map(|s| (s.rollout, s.direction.is_back()))
                    .chain(progress.switching.iter().copied())
                    .find(|(rollout, _)| *rollout == d.rollout)
                    .map(|(_, back)| back),
                progress.switching.iter().any(|(r, _)| *r == d.rollout),
            )
        };
        // The worker is switching this rollout's build: the next reply decides on what it made.
        if in_flight {
            return;
        }
        let done = if d.roll_back {
            last == Some(Step::RolledBack) || staged_back == Some(true)
        } else {
            matches!(
                last,
                Some(Step::Checked | Step::Active | Step::Failed | Step::RolledBack)
            )
        };
        if done {
            return;
        }
        let config = self.config();
        let Some(entry) = config.plugins.iter().find(|p| p.name == d.name) else {
            return self.record(
                d,
                Step::Failed,
                format!("this kiosk's config has no [[plugin]] named `{}`", d.name),
            );
        };
        let builds = match self.installed.builds(&d.name) {
            Ok(builds) => builds,
            Err(e) => return self.record(d, Step::Failed, e.to_string()),
        };
        let running = builds.current.as_deref() == Some(d.sha256.as_str());
        if d.roll_back {
            {
                let mut progress = self.progress();
                progress
                    .staged
                    .retain(|s| s.rollout != d.rollout || s.direction.is_back());
            }
            if !running {
                // Never back to it either.
                if let Err(e) = self.installed.forget(&d.name, &d.sha256) {
                    return self.record(d, Step::Failed, e.to_string());
                }
                return self.record(d, Step::RolledBack, "it does not run here".into());
            }
            let back = match &builds.previous {
                Some(sha) => self.installed.path(sha),
                None => entry.file.clone(),
            };
            match self.runtime().and_then(|r| {
                r.load(&d.name, &back)
                    .map_err(|e| format!("the build before does not load: {e}"))
            }) {
                Ok(plugin) => {
                    let direction = Direction::Back {
                        from: d.sha256.clone(),
                        to: builds.previous.clone(),
                    };
                    self.stage(d, direction, plugin, String::new())
                }
                Err(why) => self.record(d, Step::Failed, why),
            }
        } else if running {
            self.record(d, Step::Active, "it runs".into());
        } else {
            self.progress().pinned.insert(d.sha256.clone());
            match self.prepare(link, d, entry) {
                Ok((plugin, detail)) => {
                    let direction = Direction::Forward(d.sha256.clone());
                    self.stage(d, direction, plugin, detail);
                }
                Err(why) => {
                    self.record(d, Step::Failed, why);
                    self.progress().pinned.remove(&d.sha256);
                    self.tidy();
                }
            }
        }
    }

    fn stage(&self, d: &DesiredPlugin, direction: Direction, plugin: Plugin, detail: String) {
        let back = direction.is_back();
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
        let config = self.config();
        let trust = trust_store(&config).map_err(|e| format!("the trust store: {e}"))?;
        PluginRuntime::new(
            trust,
            &config.plugin_cache_dir(),
            config.plugin_limits.clone(),
        )
        .map_err(|e| e.to_string())
    }

    /// Download, verify, compile and self-check; the plugin and what each step found. Each
    /// step is reported as it is reached.
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
        self.record(d, Step::Downloaded, detail.clone());
        let runtime = self.runtime()?;
        let signer = runtime
            .trust()
            .verify(&path, &component)
            .map_err(|e| format!("verify: {e}"))?;
        detail.push_str(&format!(", signed by {signer}"));
        self.record(d, Step::Verified, detail.clone());
        let started = Instant::now();
        let plugin = runtime
            .load(&d.name, &path)
            .map_err(|e| format!("compile: {e}"))?;
        detail.push_str(&format!(
            ", compiled in {} ms",
            started.elapsed().as_millis()
        ));
        self.record(d, Step::Compiled, detail.clone());
        let wanted = kind_of(entry.role);
        if plugin.kind() != wanted {
            return Err(format!(
                "self-check: it is a {}, and `{}` is a {} in this kiosk's config",
                kind_name(plugin.kind()),
                d.name,
                kind_name(wanted)
            ));
        }
        let config = self.config();
        let (vendor, name, version) =
            about(&config, &plugin).map_err(|e| format!("self-check: {e}"))?;
        // Another vendor's plugin under this name is a change to the kiosk's config, not a
        // release: the fleet cannot make it.
        let running = self
            .installed
            .load(&runtime, entry)
            .map_err(|e| format!("self-check: the build running now does not load: {e}"))
            .and_then(|p| about(&config, &p).map_err(|e| format!("self-check: {e}")))?;
        if (vendor.as_str(), name.as_str()) != (running.0.as_str(), running.1.as_str()) {
            return Err(format!(
                "self-check: it is {vendor} {name}, and `{}` runs {} {} here",
                d.name, running.0, running.1
            ));
        }
        let checked = self_check(&config, &plugin).map_err(|e| format!("self-check: {e}"))?;
        detail.push_str(&format!(
            ", self-check: {vendor} {name} {version}, {checked}"
        ));
        Ok((plugin, detail))
    }

    /// Keeps each statement the fleet carried that one of this kiosk's roots signed; one that
    /// does not verify is logged and dropped.
    fn take_endorsements(&self, statements: &[String]) {
        if statements.is_empty() {
            return;
        }
        let config = self.config();
        let dir = config.kiosk.data_dir.join(CARRIED_DIR);
        let roots = match trust_store(&config) {
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

    /// The switches staged, for the worker between customers; each is [`Rollouts::switch`]ed.
    pub fn take_staged(&self) -> Vec<Switch> {
        let mut progress = self.progress();
        let staged = std::mem::take(&mut progress.staged);
        progress
            .switching
            .extend(staged.iter().map(|s| (s.rollout, s.direction.is_back())));
        staged
    }

    /// Makes `switch` durable and reports the step; whether the worker is to run
    /// `switch.plugin` in place of the old one (not when a later build already took the place
    /// of one being rolled back).
    pub fn switch(&self, switch: &Switch) -> Result<bool, String> {
        let back = switch.direction.is_back();
        let d = DesiredPlugin {
            rollout: switch.rollout,
            name: switch.name.clone(),
            sha256: switch.sha256.clone(),
            roll_back: back,
        };
        let switched = self.installed.switch(&switch.name, &switch.direction);
        if !back {
            self.progress().pinned.remove(&switch.sha256);
        }
        let now_runs = |sha: &str| {
            self.installed
                .builds(&switch.name)
                .is_ok_and(|b| b.current.as_deref() == Some(sha))
        };
        let outcome = match switched {
            // It still runs, and the build before changed: the next reply stages it again.
            Ok(None) if now_runs(&switch.sha256) => Ok(false),
            Ok(None) => match self.installed.forget(&switch.name, &switch.sha256) {
                Ok(()) => {
                    self.record(
                        &d,
                        Step::RolledBack,
                        "a later build runs in its place".into(),
                    );
                    Ok(false)
                }
                Err(e) => Err(format!("switch: {e}")),
            },
            Ok(Some(_)) if back => {
                self.record(&d, Step::RolledBack, "back to the build before".into());
                Ok(true)
            }
            Ok(Some(_)) => {
                self.record(&d, Step::Active, switch.detail.clone());
                Ok(true)
            }
            Err(e) => Err(format!("switch: {e}")),
        };
        if let Err(why) = &outcome {
            self.record(&d, Step::Failed, why.clone());
        }
        // Only now: the step recorded above tells the next reply this switch was made.
        self.progress().switching.remove(&(switch.rollout, back));
        outcome
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

/// Who made a plugin and which release it is, as its `about` says.
fn about(config: &KioskConfig, plugin: &Plugin) -> Result<(String, String, String), String> {
    let fail = |e: crate::plugin::PluginError| format!("about: {e}");
    match plugin.kind() {
        PluginKind::CardCodec => {
            let a = plugin
                .card_session()
                .and_then(|mut s| s.about())
                .map_err(fail)?;
            Ok((a.vendor, a.name, a.version))
        }
        PluginKind::BackendDialect => {
            // `about` sends nothing; the endpoint is never dialled.
            let nowhere = crate::backend::Endpoint {
                address: "127.0.0.1:9".into(),
                connect_timeout: std::time::Duration::from_secs(1),
                io_timeout: std::time::Duration::from_secs(1),
                max_request_bytes: 64,
                max_reply_bytes: 64,
            };
            let a = plugin
                .backend_session(nowhere)
                .and_then(|mut s| s.about())
                .map_err(fail)?;
            Ok((a.vendor, a.name, a.version))
        }
        PluginKind::AcquirerDialect => {
            let Some(acquirer) = &config.acquirer else {
                return Err("this kiosk has no [acquirer] for an acquirer dialect".into());
            };
            let a = plugin
                .acquirer_session(acquirer.endpoint.clone(), None)
                .and_then(|mut s| s.about())
                .map_err(fail)?;
            Ok((a.vendor, a.name, a.version))
        }
    }
}

/// A plugin's self-check before it may run, beyond `about`: a backend dialect pings each
/// backend this kiosk sends it to. Returns what it found.
pub fn self_check(config: &KioskConfig, plugin: &Plugin) -> Result<String, String> {
    if plugin.kind() != PluginKind::BackendDialect {
        return Ok("about answered".into());
    }
    let mut pinged = Vec::new();
    for b in config.backends.iter().filter(|b| b.dialect == plugin.name) {
        plugin
            .backend_session(b.endpoint.clone())
            .map_err(|e| e.to_string())?
            .ping()
            .map_err(|e| format!("ping to backend {}: {e}", b.name))?;
        pinged.push(b.name.clone());
    }
    Ok(if pinged.is_empty() {
        "no backend to ping".into()
    } else {
        format!("pinged {}", pinged.join(", "))
    })
}

/// `text` on one line, within what a heartbeat carries for a step's detail.
fn one_line_long(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(1000)
        .collect()
}
