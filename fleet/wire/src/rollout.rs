//! Rollouts on the wire: what the fleet wants a kiosk to run (in the heartbeat's reply), and how
//! far the kiosk got (in its next heartbeats). The fleet only carries plugins and statements;
//! whether to trust them is the kiosk's own trust store's call.

use serde::{Deserialize, Serialize};

/// A plugin download, at most.
pub const MAX_PLUGIN_BYTES: usize = 64 * 1024 * 1024;

/// What the fleet wants the kiosk to run. An older server sends none of it: the kiosk keeps
/// what it has.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Desired {
    #[serde(default)]
    pub plugins: Vec<DesiredPlugin>,
    /// Statements by the utility's root key, each endorsing a vendor key (the text of an
    /// `.endorsement` file); the kiosk takes only those one of its own roots signed.
    #[serde(default)]
    pub endorsements: Vec<String>,
    /// Commands an operator or admin gave this kiosk, not yet reported done.
    #[serde(default)]
    pub commands: Vec<crate::RemoteCommand>,
    /// The fleet's part of the kiosk's config, when the kiosk does not run that version yet.
    #[serde(default)]
    pub config: Option<crate::DesiredConfig>,
}

/// One rollout's wish for this kiosk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DesiredPlugin {
    pub rollout: i64,
    /// The plugin, by the name the kiosk's config gives it.
    pub name: String,
    /// The build, by its component's SHA-256 in hex.
    pub sha256: String,
    /// The rollout was rolled back: a kiosk running this build goes back to the one before.
    #[serde(default)]
    pub roll_back: bool,
}

/// Where a kiosk is with one rollout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Step {
    Downloaded,
    /// Its signature checks against the kiosk's own trust store.
    Verified,
    Compiled,
    /// It passed its self-check and waits for a moment between customers.
    Checked,
    /// The kiosk runs it.
    Active,
    /// It failed to download, verify, compile or self-check; the kiosk keeps what it ran.
    Failed,
    /// The kiosk went back to the build before (or never ran this one).
    RolledBack,
}

impl Step {
    pub fn as_str(self) -> &'static str {
        match self {
            Step::Downloaded => "downloaded",
            Step::Verified => "verified",
            Step::Compiled => "compiled",
            Step::Checked => "checked",
            Step::Active => "active",
            Step::Failed => "failed",
            Step::RolledBack => "rolled-back",
        }
    }
}

/// A kiosk's report on one rollout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolloutStep {
    pub rollout: i64,
    pub name: String,
    pub sha256: String,
    pub step: Step,
    /// Why it failed, or what it did, in the kiosk's words.
    #[serde(default)]
    pub detail: String,
}

/// Which part of a build a kiosk downloads (`POST /api/plugin`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginDownload {
    pub sha256: String,
    pub part: PluginPart,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PluginPart {
    /// The component's bytes.
    Component,
    /// Its detached signature, as the vendor shipped it (`.wasm.sig`).
    Signature,
}

/// `value` is a SHA-256 in lowercase hex.
pub fn is_sha256(value: &str) -> bool {
    value.len() == 64
        && value
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}
