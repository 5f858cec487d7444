//! The kiosk configuration: one TOML file naming the kiosk, its trust store, its plugins and
//! their roles, its backends, its devices and its limits.
//!
//! Every value is checked where it is read; an unknown key or a bad value is refused with the
//! file, the line and the reason. Relative paths are taken relative to the file's directory.
//!
//! The config is its own crate, free of the kiosk's devices and runtime, so the fleet server
//! checks the part of a config it sends ([`Overlay`]) with the code the kiosk checks it with.
//! A loaded config is the kiosk's own file with the fleet's part it last applied laid over it
//! ([`applied`]).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

pub mod applied;
mod can_buy;
mod endpoint;
pub mod money;
mod overlay;
mod plugin_limits;
mod policy;

pub use applied::FleetLayer;
pub use can_buy::CanBuyPolicy;
pub use endpoint::Endpoint;
pub use overlay::{MAX_OVERLAY_BYTES, Overlay};
pub use plugin_limits::PluginLimits;
pub use policy::Policy;

use applied::Applied;
use money::Fen;

/// A configuration the kiosk refuses, with where and why.
#[derive(Debug, thiserror::Error)]
#[error("{}{}: {message}", path.display(), line.map(|l| format!(":{l}")).unwrap_or_default())]
pub struct ConfigError {
    pub path: PathBuf,
    /// 1-based line of the offending key or value, when known.
    pub line: Option<usize>,
    pub message: String,
}

/// A whole kiosk configuration, checked.
#[derive(Debug, Clone)]
pub struct KioskConfig {
    /// The file it was read from.
    pub path: PathBuf,
    pub kiosk: Kiosk,
    pub trust_dir: PathBuf,
    /// Where `[trust] dir` is set, `file:line`, for errors about the directory.
    pub trust_dir_at: String,
    pub plugin_limits: PluginLimits,
    pub plugins: Vec<PluginEntry>,
    pub backends: Vec<BackendEntry>,
    pub devices: Devices,
    pub limits: SaleLimits,
    /// The operator who clears the kiosk; without it clearing is refused.
    pub operator: Option<Operator>,
    /// The bank-card acquirer; without it the kiosk takes cash only.
    pub acquirer: Option<AcquirerEntry>,
    /// Retries, limits and lockouts (`[policy]`).
    pub policy: Policy,
    /// The fleet's version laid over the file, if any.
    pub fleet: FleetLayer,
}

/// The bank-card acquirer: which dialect speaks to it, where it is, and who the kiosk is to it.
#[derive(Debug, Clone)]
pub struct AcquirerEntry {
    pub name: String,
    /// The acquirer-dialect plugin that speaks to it.
    pub dialect: String,
    pub endpoint: Endpoint,
    pub terminal: Terminal,
}

/// Who the kiosk is to the acquirer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Terminal {
    pub terminal_id: String,
    pub merchant_id: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Kiosk {
    /// The terminal id the backend knows this kiosk by.
    pub terminal_id: TerminalId,
    /// The region the kiosk stands in (a utility/region code).
    pub region: String,
    /// Where the journal and the compiled-plugin cache live.
    pub data_dir: PathBuf,
    /// Where compiled plugins are cached, when not in `data_dir`.
    #[serde(default)]
    pub plugin_cache: Option<PathBuf>,
    /// Banknotes the validator's cash box holds, reported to the fleet (which alerts at 90 %
    /// and projects the days until full).
    #[serde(default)]
    pub cash_box_capacity: Option<u32>,
}

/// What a plugin is loaded for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PluginRole {
    CardCodec,
    BackendDialect,
    AcquirerDialect,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginEntry {
    /// The name the rest of the config and the logs use.
    pub name: String,
    pub role: PluginRole,
    /// The component; its signature is `file.sig`.
    pub file: PathBuf,
}

/// A utility backend: which cards it serves, which dialect speaks to it, and where it is.
#[derive(Debug, Clone)]
pub struct BackendEntry {
    pub name: String,
    /// The backend-dialect plugin that speaks to it.
    pub dialect: String,
    /// Utility/region codes read off cards that this backend serves.
    pub utility_codes: Vec<String>,
    pub endpoint: Endpoint,
    /// The kiosk's own can-buy rules, for when the dialect offers no can-buy call.
    pub can_buy: CanBuyPolicy,
}

/// Device settings. A device left out is simulated in demo mode.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Devices {
    pub card_reader: Option<ReaderDevice>,
    pub bank_card_reader: Option<ReaderDevice>,
    pub cash_acceptor: Option<SerialDevice>,
    pub printer: Option<SerialDevice>,
    pub pinpad: Option<SerialDevice>,
}

/// A PC/SC reader, by the name PC/SC lists it under.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReaderDevice {
    pub reader: String,
}

/// A serial device.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SerialDevice {
    pub port: PathBuf,
    pub baud: Baud,
}

/// What one sale may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SaleLimits {
    #[serde(default = "SaleLimits::default_min")]
    pub min_purchase_fen: Fen,
    #[serde(default = "SaleLimits::default_max")]
    pub max_purchase_fen: Fen,
}

impl SaleLimits {
    fn default_min() -> Fen {
        Fen(100)
    }
    fn default_max() -> Fen {
        Fen(500_000)
    }
}

impl Default for SaleLimits {
    fn default() -> Self {
        SaleLimits {
            min_purchase_fen: Self::default_min(),
            max_purchase_fen: Self::default_max(),
        }
    }
}

/// The kiosk's operator: how their PIN is checked (it is never stored in the clear).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Operator {
    pub pin_hash: PinHash,
}

/// An operator PIN hashed with PBKDF2-HMAC-SHA256, written
/// `pbkdf2-sha256:<iterations>:<salt hex>:<hash hex>` (`selfvend clearing hash-pin` makes one).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct PinHash {
    pub iterations: u32,
    pub salt: Vec<u8>,
    /// The 32-byte derived key.
    pub hash: [u8; 32],
}

impl PinHash {
    /// Fewer rounds than this make a PIN too cheap to guess from a copied config.
    pub const MIN_ITERATIONS: u32 = 10_000;
    pub const MAX_ITERATIONS: u32 = 10_000_000;
}

impl TryFrom<String> for PinHash {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        let form = "a PIN hash is `pbkdf2-sha256:<iterations>:<salt hex>:<hash hex>`";
        let mut parts = s.split(':');
        let (Some(scheme), Some(iterations), Some(salt), Some(hash), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(format!("{form}; this has not four `:`-separated parts"));
        };
        if scheme != "pbkdf2-sha256" {
            return Err(format!("{form}; scheme `{scheme}` is not pbkdf2-sha256"));
        }
        let iterations: u32 = iterations
            .parse()
            .map_err(|_| format!("{form}; iterations `{iterations}` is not a number"))?;
        if !(Self::MIN_ITERATIONS..=Self::MAX_ITERATIONS).contains(&iterations) {
            return Err(format!(
                "PIN hash iterations {iterations} is outside {}..={}",
                Self::MIN_ITERATIONS,
                Self::MAX_ITERATIONS
            ));
        }
        let salt = hex::decode(salt).map_err(|e| format!("{form}; the salt is not hex: {e}"))?;
        if !(8..=64).contains(&salt.len()) {
            return Err(format!(
                "the PIN hash's salt is {} bytes; it must be 8 to 64",
                salt.len()
            ));
        }
        let hash = hex::decode(hash)
            .map_err(|e| format!("{form}; the hash is not hex: {e}"))?
            .try_into()
            .map_err(|h: Vec<u8>| {
                format!("the PIN hash is {} bytes; PBKDF2-SHA256 gives 32", h.len())
            })?;
        Ok(PinHash {
            iterations,
            salt,
            hash,
        })
    }
}

impl std::fmt::Display for PinHash {
    /// The form the config holds.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "pbkdf2-sha256:{}:{}:{}",
            self.iterations,
            hex::encode(&self.salt),
            hex::encode(self.hash)
        )
    }
}

/// A terminal id: 1 to 16 ASCII letters, digits or dashes, as backends field it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct TerminalId(String);

impl TerminalId {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for TerminalId {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        if s.is_empty() || s.len() > 16 || !s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        {
            return Err(format!(
                "terminal id `{s}` must be 1 to 16 ASCII letters, digits or dashes"
            ));
        }
        Ok(TerminalId(s))
    }
}

/// A serial line speed a kiosk device may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "u32")]
pub struct Baud(pub u32);

impl TryFrom<u32> for Baud {
    type Error = String;
    fn try_from(b: u32) -> Result<Self, String> {
        const RATES: [u32; 7] = [2400, 4800, 9600, 19200, 38400, 57600, 115200];
        if RATES.contains(&b) {
            Ok(Baud(b))
        } else {
            Err(format!("baud {b} is not one of {RATES:?}"))
        }
    }
}

/// A count bounded to `MIN..=MAX`, refused with its range otherwise.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(try_from = "u64")]
struct Bounded<const MIN: u64, const MAX: u64>(u64);

impl<const MIN: u64, const MAX: u64> TryFrom<u64> for Bounded<MIN, MAX> {
    type Error = String;
    fn try_from(v: u64) -> Result<Self, String> {
        if (MIN..=MAX).contains(&v) {
            Ok(Bounded(v))
        } else {
            Err(format!("{v} is outside {MIN}..={MAX}"))
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    kiosk: Kiosk,
    trust: Trust,
    #[serde(default)]
    plugin_limits: Option<Limits>,
    #[serde(default, rename = "plugin")]
    plugins: Vec<Spanned<PluginEntry>>,
    #[serde(default, rename = "backend")]
    backends: Vec<Spanned<BackendFile>>,
    #[serde(default)]
    devices: Devices,
    #[serde(default)]
    limits: Option<Spanned<SaleLimits>>,
    #[serde(default)]
    operator: Option<Operator>,
    #[serde(default)]
    acquirer: Option<Spanned<AcquirerFile>>,
    #[serde(default)]
    policy: Option<policy::PolicyFile>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AcquirerFile {
    name: String,
    dialect: Spanned<String>,
    address: Spanned<String>,
    /// The terminal id (8 characters) and merchant id (15) the acquirer issued.
    terminal_id: Spanned<String>,
    merchant_id: Spanned<String>,
    #[serde(default = "default_connect_ms")]
    connect_timeout_ms: Bounded<1, 60_000>,
    #[serde(default = "default_io_ms")]
    io_timeout_ms: Bounded<1, 120_000>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Trust {
    dir: Spanned<PathBuf>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Limits {
    call_deadline_ms: Bounded<1, 60_000>,
    memory_mib: Bounded<1, 4096>,
    log_kib: Bounded<1, 65_536>,
    #[serde(default = "yes")]
    pooling: bool,
}

fn yes() -> bool {
    true
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BackendFile {
    name: String,
    dialect: Spanned<String>,
    utility_codes: Vec<Spanned<String>>,
    address: Spanned<String>,
    #[serde(default = "default_connect_ms")]
    connect_timeout_ms: Bounded<1, 60_000>,
    #[serde(default = "default_io_ms")]
    io_timeout_ms: Bounded<1, 120_000>,
    #[serde(default = "default_bytes")]
    max_request_bytes: Bounded<64, 16_777_216>,
    #[serde(default = "default_bytes")]
    max_reply_bytes: Bounded<64, 16_777_216>,
    #[serde(default)]
    can_buy: Option<can_buy::CanBuyFile>,
}

fn default_connect_ms() -> Bounded<1, 60_000> {
    Bounded(2000)
}
fn default_io_ms() -> Bounded<1, 120_000> {
    Bounded(5000)
}
fn default_bytes() -> Bounded<64, 16_777_216> {
    Bounded(65_536)
}

/// Checks that the plugin named `name` is configured in `role`; the error says what is wrong.
fn role_of(plugins: &[PluginEntry], name: &str, role: PluginRole) -> Result<(), String> {
    match plugins.iter().find(|p| p.name == name) {
        Some(p) if p.role == role => Ok(()),
        Some(_) => Err(format!("plugin `{name}` is not {}", role.with_article())),
        None => Err(format!("no [[plugin]] is named `{name}`")),
    }
}

impl PluginRole {
    fn with_article(self) -> &'static str {
        match self {
            PluginRole::CardCodec => "a card-codec",
            PluginRole::BackendDialect => "a backend-dialect",
            PluginRole::AcquirerDialect => "an acquirer-dialect",
        }
    }
}

impl KioskConfig {
    /// Reads and checks the file at `path`, with the fleet's version the kiosk last applied
    /// laid over it; if that no longer checks with the file, the one before it (see
    /// [`KioskConfig::fleet`]).
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = Self::read(path)?;
        let own = Self::parse(path, &text)?;
        let applied = match Applied::read(&own.kiosk.data_dir) {
            Ok(applied) => applied,
            // The kiosk's own file still runs it; the fleet sends its version again.
            Err(e) => {
                let mut own = own;
                own.fleet.refused = Some((0, e.to_string()));
                return Ok(own);
            }
        };
        let mut refused = None;
        for layer in applied.current.iter().chain(&applied.previous) {
            if layer.version < 1 {
                continue;
            }
            let origin = format!("the fleet's config version {}", layer.version);
            match Overlay::parse(&origin, &layer.toml)
                .and_then(|o| Self::parse_with(path, &text, &o))
            {
                Ok(mut config) => {
                    config.fleet = FleetLayer {
                        running: layer.version,
                        refused,
                    };
                    return Ok(config);
                }
                Err(e) => refused = refused.or(Some((layer.version, e.to_string()))),
            }
        }
        let mut own = own;
        own.fleet.refused = refused;
        Ok(own)
    }

    /// The text of the file at `path`.
    pub fn read(path: &Path) -> Result<String, ConfigError> {
        std::fs::read_to_string(path).map_err(|e| ConfigError {
            path: path.to_path_buf(),
            line: None,
            message: e.to_string(),
        })
    }

    /// Checks `text` as if read from `path`.
    pub fn parse(path: &Path, text: &str) -> Result<Self, ConfigError> {
        let at = |span: Option<std::ops::Range<usize>>, message: String| ConfigError {
            path: path.to_path_buf(),
            line: span.map(|s| line_of(text, s.start)),
            message,
        };
        let file: File = toml::from_str(text).map_err(|e| at(e.span(), e.message().to_string()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        let resolve = |p: &Path| {
            if p.is_absolute() {
                p.to_path_buf()
            } else {
                base.join(p)
            }
        };

        let mut names = BTreeSet::new();
        let mut plugins = Vec::new();
        for entry in file.plugins {
            let span = entry.span();
            let mut plugin = entry.into_inner();
            if !names.insert(plugin.name.clone()) {
                return Err(at(
                    Some(span),
                    format!("plugin `{}` is named twice", plugin.name),
                ));
            }
            plugin.file = resolve(&plugin.file);
            plugins.push(plugin);
        }

        let mut backends = Vec::new();
        let mut served = BTreeSet::new();
        for entry in file.backends {
            let b = entry.into_inner();
            if let Err(why) = role_of(&plugins, b.dialect.get_ref(), PluginRole::BackendDialect) {
                return Err(at(Some(b.dialect.span()), why));
            }
            if b.utility_codes.is_empty() {
                return Err(at(
                    None,
                    format!("backend `{}` serves no utility_codes", b.name),
                ));
            }
            for code in &b.utility_codes {
                if !served.insert(code.get_ref().clone()) {
                    return Err(at(
                        Some(code.span()),
                        format!(
                            "utility code `{}` is served by two backends",
                            code.get_ref()
                        ),
                    ));
                }
            }
            check_address(b.address.get_ref()).map_err(|why| at(Some(b.address.span()), why))?;
            let can_buy = match b.can_buy {
                Some(c) => c.check().map_err(|(span, why)| at(Some(span), why))?,
                None => CanBuyPolicy::default(),
            };
            backends.push(BackendEntry {
                can_buy,
                name: b.name,
                dialect: b.dialect.into_inner(),
                utility_codes: b
                    .utility_codes
                    .into_iter()
                    .map(Spanned::into_inner)
                    .collect(),
                endpoint: Endpoint {
                    address: b.address.into_inner(),
                    connect_timeout: Duration::from_millis(b.connect_timeout_ms.0),
                    io_timeout: Duration::from_millis(b.io_timeout_ms.0),
                    max_request_bytes: b.max_request_bytes.0 as usize,
                    max_reply_bytes: b.max_reply_bytes.0 as usize,
                },
            });
        }

        let acquirer = match file.acquirer {
            None => None,
            Some(entry) => {
                let a = entry.into_inner();
                if let Err(why) =
                    role_of(&plugins, a.dialect.get_ref(), PluginRole::AcquirerDialect)
                {
                    return Err(at(Some(a.dialect.span()), why));
                }
                check_address(a.address.get_ref())
                    .map_err(|why| at(Some(a.address.span()), why))?;
                for (field, value, len) in [
                    ("terminal_id", &a.terminal_id, 8),
                    ("merchant_id", &a.merchant_id, 15),
                ] {
                    let v = value.get_ref();
                    if v.is_empty() || v.len() > len || !v.bytes().all(|b| b.is_ascii_graphic()) {
                        return Err(at(
                            Some(value.span()),
                            format!("{field} is 1 to {len} printable ASCII characters"),
                        ));
                    }
                }
                Some(AcquirerEntry {
                    name: a.name,
                    dialect: a.dialect.into_inner(),
                    endpoint: Endpoint {
                        address: a.address.into_inner(),
                        connect_timeout: Duration::from_millis(a.connect_timeout_ms.0),
                        io_timeout: Duration::from_millis(a.io_timeout_ms.0),
                        max_request_bytes: 4096,
                        max_reply_bytes: 4096,
                    },
                    terminal: Terminal {
                        terminal_id: a.terminal_id.into_inner(),
                        merchant_id: a.merchant_id.into_inner(),
                    },
                })
            }
        };

        let limits = match file.limits {
            Some(l) if l.get_ref().min_purchase_fen > l.get_ref().max_purchase_fen => {
                return Err(at(
                    Some(l.span()),
                    "min_purchase_fen is above max_purchase_fen".into(),
                ));
            }
            Some(l) => l.into_inner(),
            None => SaleLimits::default(),
        };
        let plugin_limits = match file.plugin_limits {
            Some(l) => PluginLimits {
                call_deadline: Duration::from_millis(l.call_deadline_ms.0),
                memory_bytes: (l.memory_mib.0 as usize) << 20,
                log_bytes: (l.log_kib.0 as usize) << 10,
                pooling: l.pooling,
            },
            None => PluginLimits::default(),
        };
        let policy = match file.policy {
            Some(p) => p.check().map_err(|(span, why)| at(Some(span), why))?,
            None => Policy::default(),
        };
        let mut kiosk = file.kiosk;
        if let Some(n) = kiosk.cash_box_capacity
            && !(1..=100_000).contains(&n)
        {
            return Err(at(
                None,
                format!("[kiosk] cash_box_capacity: {n} banknotes is not from 1 to 100000"),
            ));
        }
        kiosk.data_dir = resolve(&kiosk.data_dir);
        kiosk.plugin_cache = kiosk.plugin_cache.as_deref().map(resolve);
        Ok(KioskConfig {
            path: path.to_path_buf(),
            kiosk,
            trust_dir: resolve(file.trust.dir.get_ref()),
            trust_dir_at: format!(
                "{}:{}",
                path.display(),
                line_of(text, file.trust.dir.span().start)
            ),
            plugin_limits,
            plugins,
            backends,
            devices: file.devices,
            limits,
            operator: file.operator,
            acquirer,
            policy,
            fleet: FleetLayer::default(),
        })
    }

    /// Where compiled plugins are cached.
    pub fn plugin_cache_dir(&self) -> PathBuf {
        match &self.kiosk.plugin_cache {
            Some(dir) => dir.clone(),
            None => self.kiosk.data_dir.join("plugin-cache"),
        }
    }

    /// The backend that serves cards issued under `utility_code`, if any.
    pub fn backend_for(&self, utility_code: &str) -> Option<&BackendEntry> {
        self.backends
            .iter()
            .find(|b| b.utility_codes.iter().any(|c| c == utility_code))
    }
}

/// `address` is `host:port`, as a backend's or acquirer's address must be.
fn check_address(address: &str) -> Result<(), String> {
    match address.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0) => {
            Ok(())
        }
        _ => Err(format!("address `{address}` is not host:port")),
    }
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())]
        .bytes()
        .filter(|&b| b == b'\n')
        .count()
        + 1
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::money::Denomination;

    /// A good kiosk file, for the tests of this crate.
    pub(crate) const GOOD: &str = r#"
[kiosk]
terminal_id = "KSK-0001"
region = "4101"
data_dir = "data"

[trust]
dir = "trust"

[plugin_limits]
call_deadline_ms = 500
memory_mib = 32
log_kib = 16

[[plugin]]
name = "text-dialect"
role = "backend-dialect"
file = "plugins/text.wasm"

[[backend]]
name = "zz"
dialect = "text-dialect"
utility_codes = ["4101"]
address = "127.0.0.1:9101"
"#;

    fn parse(text: &str) -> Result<KioskConfig, ConfigError> {
        KioskConfig::parse(Path::new("/etc/selfvend/kiosk.toml"), text)
    }

    #[test]
    fn a_good_config_resolves_paths_and_limits() {
        let c = parse(GOOD).unwrap();
        assert_eq!(c.kiosk.terminal_id.as_str(), "KSK-0001");
        assert_eq!(
            c.plugins[0].file,
            Path::new("/etc/selfvend/plugins/text.wasm")
        );
        assert_eq!(c.plugin_limits.memory_bytes, 32 << 20);
        assert_eq!(
            c.backend_for("4101").unwrap().endpoint.io_timeout,
            Duration::from_secs(5)
        );
        assert!(c.backend_for("9999").is_none());
    }

    #[test]
    fn unknown_keys_are_refused_with_their_line() {
        let text = GOOD.replace("region = \"4101\"", "region = \"4101\"\nregoin = \"x\"");
        let err = parse(&text).unwrap_err();
        assert_eq!(err.line, Some(5));
        assert!(
            err.to_string()
                .starts_with("/etc/selfvend/kiosk.toml:5: unknown field `regoin`"),
            "{err}"
        );
    }

    #[test]
    fn bad_values_are_refused_with_their_line_and_reason() {
        let err = parse(&GOOD.replace("memory_mib = 32", "memory_mib = 0")).unwrap_err();
        assert_eq!(err.line, Some(12));
        assert!(err.message.contains("0 is outside 1..=4096"), "{err}");

        let err = parse(&GOOD.replace("KSK-0001", "KSK 0001!")).unwrap_err();
        assert_eq!(err.line, Some(3));
        assert!(
            err.message.contains("must be 1 to 16 ASCII letters"),
            "{err}"
        );
    }

    #[test]
    fn an_operator_pin_hash_is_checked_at_load() {
        let salt = "00112233445566778899aabbccddeeff";
        let hash = "ab".repeat(32);
        let good =
            format!("{GOOD}\n[operator]\npin_hash = \"pbkdf2-sha256:100000:{salt}:{hash}\"\n");
        let operator = parse(&good).unwrap().operator.unwrap();
        assert_eq!(operator.pin_hash.iterations, 100_000);
        assert_eq!(
            operator.pin_hash.to_string(),
            format!("pbkdf2-sha256:100000:{salt}:{hash}")
        );
        assert!(parse(GOOD).unwrap().operator.is_none());

        let err = parse(&good.replace(":100000:", ":99:")).unwrap_err();
        assert_eq!(err.line, Some(27));
        assert!(err.message.contains("iterations 99 is outside"), "{err}");
        let err = parse(&good.replace(&hash, "abcd")).unwrap_err();
        assert!(
            err.message.contains("is 2 bytes; PBKDF2-SHA256 gives 32"),
            "{err}"
        );
        let err = parse(&good.replace("pbkdf2-sha256", "md5")).unwrap_err();
        assert!(err.message.contains("scheme `md5`"), "{err}");
        let err = parse(&good.replace("pin_hash", "pin")).unwrap_err();
        assert!(err.message.contains("unknown field `pin`"), "{err}");
    }

    #[test]
    fn a_backend_must_name_a_dialect_plugin() {
        let err =
            parse(&GOOD.replace("dialect = \"text-dialect\"", "dialect = \"nope\"")).unwrap_err();
        assert_eq!(err.line, Some(22));
        assert_eq!(err.message, "no [[plugin]] is named `nope`");
    }

    #[test]
    fn the_policy_defaults_to_todays_behaviour_and_each_value_is_checked_with_its_line() {
        let c = parse(GOOD).unwrap();
        assert_eq!(c.policy, Policy::default());
        assert_eq!(c.policy.accepted_notes.len(), 6);
        let c = parse(&format!(
            "{GOOD}\n[policy]\nresell_max_attempts = 5\nnote_in_flight_limit_secs = 12\n\
             accepted_yuan = [100, 50, 10]\ncustomer_pin_min_digits = 6\n"
        ))
        .unwrap();
        assert_eq!(c.policy.resell_max_attempts, 5);
        assert_eq!(c.policy.note_in_flight_limit, Duration::from_secs(12));
        assert_eq!(
            c.policy.accepted_notes,
            [
                Denomination::Cny10,
                Denomination::Cny50,
                Denomination::Cny100
            ]
        );
        assert_eq!(
            (
                c.policy.customer_pin_min_digits,
                c.policy.customer_pin_max_digits
            ),
            (6, 12)
        );
        for (bad, line, message) in [
            (
                "accepted_yuan = [10, 2]",
                27,
                "accepted_yuan: 2 is not a banknote the kiosk takes (1, 5, 10, 20, 50 or 100)",
            ),
            (
                "accepted_yuan = []",
                27,
                "accepted_yuan: at least one banknote must be taken",
            ),
            (
                "accepted_yuan = [10, 10]",
                27,
                "accepted_yuan: CNY 10 is listed twice",
            ),
            ("note_in_flight_limit_secs = 0", 27, "0 is outside 1..=600"),
            (
                "customer_pin_min_digits = 8\ncustomer_pin_max_digits = 6",
                27,
                "customer_pin_min_digits 8 is above customer_pin_max_digits 6",
            ),
            ("resell_tries = 3", 27, "unknown field `resell_tries`"),
        ] {
            let err = parse(&format!("{GOOD}\n[policy]\n{bad}\n")).unwrap_err();
            assert_eq!(err.line, Some(line), "{bad}");
            assert!(err.message.starts_with(message), "{bad}: {}", err.message);
        }
    }
}
