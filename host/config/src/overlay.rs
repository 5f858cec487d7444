//! The fleet's part of a kiosk's config: a TOML document of the keys a utility sets from its
//! fleet server (`selfvend-fleet config set`), laid over the kiosk's own file. It may hold
//! only `[kiosk] cash_box_capacity`, `[limits]`, `[policy]` and, for a backend the kiosk's file
//! names, its `address`, timeouts, sizes and `[backend.can_buy]`. What a kiosk is (its
//! terminal id, trust store, plugins, devices, operator PIN) never comes from the fleet.
//!
//! The fleet server checks a document with this code before it stores one; the kiosk checks it
//! again, lays it over its own file and checks the whole as it checks its file.

use std::path::Path;

use serde::Deserialize;
use toml::{Spanned, Table, Value};

use crate::can_buy::CanBuyFile;
use crate::money::Fen;
use crate::policy::PolicyFile;
use crate::{Bounded, ConfigError, KioskConfig, check_address, line_of};

/// A checked fleet document, or several laid one over the other.
#[derive(Debug, Clone, PartialEq)]
pub struct Overlay {
    /// What it is, for errors: `fleet defaults, version 7`.
    origin: String,
    table: Table,
}

/// What the fleet may set, as written; every key is optional.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(
    dead_code,
    reason = "only checked here; the kiosk reads its file with this laid over it"
)]
struct OverlayFile {
    #[serde(default)]
    kiosk: Option<KioskPart>,
    #[serde(default)]
    limits: Option<Spanned<LimitsPart>>,
    #[serde(default)]
    policy: Option<PolicyFile>,
    #[serde(default, rename = "backend")]
    backends: Vec<BackendPart>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(
    dead_code,
    reason = "only checked here; the kiosk reads its file with this laid over it"
)]
struct KioskPart {
    #[serde(default)]
    cash_box_capacity: Option<Bounded<1, 100_000>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LimitsPart {
    min_purchase_fen: Option<Fen>,
    max_purchase_fen: Option<Fen>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(
    dead_code,
    reason = "only checked here; the kiosk reads its file with this laid over it"
)]
struct BackendPart {
    name: Spanned<String>,
    address: Option<Spanned<String>>,
    connect_timeout_ms: Option<Bounded<1, 60_000>>,
    io_timeout_ms: Option<Bounded<1, 120_000>>,
    max_request_bytes: Option<Bounded<64, 16_777_216>>,
    max_reply_bytes: Option<Bounded<64, 16_777_216>>,
    can_buy: Option<CanBuyFile>,
}

/// Most bytes a fleet document may be (it travels in heartbeat replies).
pub const MAX_OVERLAY_BYTES: usize = 32 * 1024;

impl Overlay {
    /// Nothing set: the kiosk's own file alone.
    pub fn empty(origin: &str) -> Overlay {
        Overlay {
            origin: origin.to_string(),
            table: Table::new(),
        }
    }

    /// Checks `text`, named `origin` in errors; each error names its line, the key and why.
    pub fn parse(origin: &str, text: &str) -> Result<Overlay, ConfigError> {
        let at = |span: Option<std::ops::Range<usize>>, message: String| {
            let line = span.as_ref().map(|s| line_of(text, s.start));
            let message = match span.and_then(|s| key_at(text, s.start)) {
                Some(key) if !message.contains(&format!("`{key}`")) => {
                    format!("`{key}`: {message}")
                }
                _ => message,
            };
            ConfigError {
                path: origin.into(),
                line,
                message,
            }
        };
        if text.len() > MAX_OVERLAY_BYTES {
            return Err(at(
                None,
                format!(
                    "{} bytes; a fleet config is at most {MAX_OVERLAY_BYTES}",
                    text.len()
                ),
            ));
        }
        let table: Table =
            toml::from_str(text).map_err(|e| at(e.span(), e.message().to_string()))?;
        tables_only(&table).map_err(|why| at(None, why))?;
        let file: OverlayFile =
            toml::from_str(text).map_err(|e| at(e.span(), e.message().to_string()))?;
        if let Some(limits) = &file.limits {
            let l = limits.get_ref();
            if let (Some(min), Some(max)) = (l.min_purchase_fen, l.max_purchase_fen)
                && min > max
            {
                return Err(at(
                    Some(limits.span()),
                    "min_purchase_fen is above max_purchase_fen".into(),
                ));
            }
        }
        if let Some(policy) = file.policy {
            policy.check().map_err(|(span, why)| at(Some(span), why))?;
        }
        let mut names = Vec::new();
        for b in file.backends {
            if names.contains(b.name.get_ref()) {
                return Err(at(
                    Some(b.name.span()),
                    format!("backend `{}` is named twice", b.name.get_ref()),
                ));
            }
            names.push(b.name.get_ref().clone());
            if let Some(address) = &b.address {
                check_address(address.get_ref()).map_err(|why| at(Some(address.span()), why))?;
            }
            if let Some(can_buy) = b.can_buy {
                can_buy.check().map_err(|(span, why)| at(Some(span), why))?;
            }
        }
        Ok(Overlay {
            origin: origin.to_string(),
            table,
        })
    }

    pub fn origin(&self) -> &str {
        &self.origin
    }

    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// The document as TOML (what the fleet sends and the kiosk keeps).
    pub fn to_toml(&self) -> String {
        toml::to_string(&self.table).expect("a TOML table serializes")
    }

    /// `over` laid over `self` (the fleet's defaults under one kiosk's overrides): its values
    /// win, tables merge key by key and backends are matched by name.
    pub fn then(&self, over: &Overlay) -> Overlay {
        let mut table = self.table.clone();
        lay_over(&mut table, &over.table, false).expect("overlays add backends freely");
        Overlay {
            origin: format!("{} + {}", self.origin, over.origin),
            table,
        }
    }
}

impl KioskConfig {
    /// Checks the kiosk's own file `text` (read from `path`) with `overlay` laid over it: each
    /// backend the overlay sets must be one the file names, and the whole must check as a
    /// file would. An error names the overlay.
    pub fn parse_with(path: &Path, text: &str, overlay: &Overlay) -> Result<Self, ConfigError> {
        let own = Self::parse(path, text)?;
        if overlay.is_empty() {
            return Ok(own);
        }
        let refused = |message: String| ConfigError {
            path: overlay.origin.clone().into(),
            line: None,
            message: format!("laid over {}: {message}", path.display()),
        };
        let mut table: Table =
            toml::from_str(text).map_err(|e| refused(e.message().to_string()))?;
        lay_over(&mut table, &overlay.table, true).map_err(refused)?;
        let merged = toml::to_string(&table).expect("a TOML table serializes");
        let merged = Self::parse(path, &merged).map_err(|e| refused(e.message))?;
        only_tightens(&own, &merged).map_err(refused)?;
        Ok(merged)
    }

    /// `self` (the config running) with what the fleet changed between `old` and `new` (the
    /// kiosk's file with the version it ran, and with the next): only the keys the fleet may
    /// set, so what the kiosk is, and any value set in memory (demo mode), stays as it runs.
    pub fn with_fleet_change(&self, old: &KioskConfig, new: &KioskConfig) -> KioskConfig {
        let mut next = self.clone();
        if old.limits != new.limits {
            next.limits = new.limits;
        }
        if old.policy != new.policy {
            next.policy = new.policy.clone();
        }
        if old.kiosk.cash_box_capacity != new.kiosk.cash_box_capacity {
            next.kiosk.cash_box_capacity = new.kiosk.cash_box_capacity;
        }
        for b in &mut next.backends {
            let was = old.backends.iter().find(|o| o.name == b.name);
            let will = new.backends.iter().find(|n| n.name == b.name);
            if let (Some(was), Some(will)) = (was, will) {
                if was.endpoint != will.endpoint {
                    b.endpoint = will.endpoint.clone();
                }
                if was.can_buy != will.can_buy {
                    b.can_buy = will.can_buy;
                }
            }
        }
        next.fleet = new.fleet.clone();
        next
    }
}

/// The fleet may make the kiosk stricter than its own file, never laxer, where laxer risks a
/// customer's money or the operator's PIN: "no such sale" proving a sale never reached its
/// backend, and the PIN's lockout.
fn only_tightens(own: &KioskConfig, merged: &KioskConfig) -> Result<(), String> {
    let (o, m) = (&own.policy, &merged.policy);
    if m.unknown_outcome_settle < o.unknown_outcome_settle {
        return Err(format!(
            "unknown_outcome_settle_secs {} is below this kiosk's own {}: the fleet may not \
             shorten it",
            m.unknown_outcome_settle.as_secs(),
            o.unknown_outcome_settle.as_secs()
        ));
    }
    if m.operator_pin_tries > o.operator_pin_tries {
        return Err(format!(
            "operator_pin_tries {} is above this kiosk's own {}: the fleet may not raise it",
            m.operator_pin_tries, o.operator_pin_tries
        ));
    }
    if m.operator_lockout < o.operator_lockout {
        return Err(format!(
            "operator_lockout_secs {} is below this kiosk's own {}: the fleet may not \
             shorten it",
            m.operator_lockout.as_secs(),
            o.operator_lockout.as_secs()
        ));
    }
    Ok(())
}

/// Each part is written as a table (serde would also fill a table's fields from an array, in
/// order, which the kiosk's merge would not take as the same thing).
fn tables_only(table: &Table) -> Result<(), String> {
    for key in ["kiosk", "limits", "policy"] {
        if table.get(key).is_some_and(|v| !v.is_table()) {
            return Err(format!("`{key}` must be a table ([{key}])"));
        }
    }
    if let Some(backends) = table.get("backend") {
        let entries = backends.as_array().map(Vec::as_slice).unwrap_or_default();
        for entry in entries {
            let Some(entry) = entry.as_table() else {
                return Err("each `backend` must be a table ([[backend]])".into());
            };
            if entry.get("can_buy").is_some_and(|v| !v.is_table()) {
                return Err("`backend.can_buy` must be a table".into());
            }
        }
    }
    Ok(())
}

/// Lays `over` over `base`. With `known_backends`, a backend `base` does not name is refused.
fn lay_over(base: &mut Table, over: &Table, known_backends: bool) -> Result<(), String> {
    for (key, value) in over {
        match (key.as_str(), base.get_mut(key), value) {
            ("backend", Some(Value::Array(backends)), Value::Array(theirs)) => {
                for entry in theirs.iter().filter_map(Value::as_table) {
                    let name = entry.get("name").and_then(Value::as_str).unwrap_or("");
                    let mine = backends
                        .iter_mut()
                        .filter_map(Value::as_table_mut)
                        .find(|b| b.get("name").and_then(Value::as_str) == Some(name));
                    match mine {
                        Some(mine) => lay_over(mine, entry, known_backends)?,
                        None if known_backends => {
                            return Err(format!(
                                "it sets backend `{name}`, which this kiosk's file does not name"
                            ));
                        }
                        None => backends.push(Value::Table(entry.clone())),
                    }
                }
            }
            ("backend", None, Value::Array(theirs)) if known_backends && !theirs.is_empty() => {
                let name = theirs[0].get("name").and_then(Value::as_str).unwrap_or("");
                return Err(format!(
                    "it sets backend `{name}`, and this kiosk's file names no backend"
                ));
            }
            (_, Some(Value::Table(mine)), Value::Table(theirs)) => {
                lay_over(mine, theirs, known_backends)?;
            }
            _ => {
                base.insert(key.clone(), value.clone());
            }
        }
    }
    Ok(())
}

/// The dotted key whose value starts at or before `offset` in `text`: the key on that line,
/// under the nearest table header above it.
fn key_at(text: &str, offset: usize) -> Option<String> {
    let offset = offset.min(text.len());
    let start = text[..offset].rfind('\n').map_or(0, |i| i + 1);
    let line = text[start..].lines().next().unwrap_or("");
    let table = text[..start]
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('['))
        .map(|l| l.trim_matches(|c| c == '[' || c == ']').trim().to_string());
    let key = line.split_once('=').map(|(k, _)| k.trim().to_string());
    match (table, key) {
        (Some(t), Some(k)) => Some(format!("{t}.{k}")),
        (None, Some(k)) => Some(k),
        (Some(t), None) => Some(t),
        (None, None) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::GOOD;
    use std::time::Duration;

    fn file() -> String {
        format!("{GOOD}\n[policy]\nresell_max_attempts = 4\n")
    }

    fn path() -> &'static Path {
        Path::new("/etc/selfvend/kiosk.toml")
    }

    #[test]
    fn an_overlay_changes_only_what_it_names() {
        let overlay = Overlay::parse(
            "fleet defaults, version 3",
            "[limits]\nmax_purchase_fen = 200000\nmin_purchase_fen = 500\n\n\
             [policy]\nrewrite_max_attempts = 7\n\n\
             [[backend]]\nname = \"zz\"\naddress = \"10.0.0.9:9101\"\nio_timeout_ms = 9000\n",
        )
        .unwrap();
        let c = KioskConfig::parse_with(path(), &file(), &overlay).unwrap();
        assert_eq!(c.limits.max_purchase_fen, Fen(200_000));
        assert_eq!(c.policy.rewrite_max_attempts, 7);
        assert_eq!(
            c.policy.resell_max_attempts, 4,
            "the file's own value stays"
        );
        assert_eq!(c.backends[0].endpoint.address, "10.0.0.9:9101");
        assert_eq!(c.backends[0].endpoint.io_timeout, Duration::from_secs(9));
        assert_eq!(c.backends[0].utility_codes, ["4101"]);
        assert_eq!(c.kiosk.terminal_id.as_str(), "KSK-0001");
    }

    #[test]
    fn what_a_kiosk_is_never_comes_from_the_fleet() {
        for (text, line, message) in [
            (
                "[kiosk]\nterminal_id = \"EVIL\"\n",
                2,
                "`kiosk.terminal_id`: unknown field `terminal_id`, expected `cash_box_capacity`",
            ),
            ("[trust]\ndir = \"/tmp\"\n", 1, "unknown field `trust`"),
            (
                "[[plugin]]\nname = \"x\"\nrole = \"card-codec\"\nfile = \"/tmp/x.wasm\"\n",
                1,
                "unknown field `plugin`",
            ),
            (
                "[[backend]]\nname = \"zz\"\ndialect = \"other\"\n",
                3,
                "`backend.dialect`: unknown field `dialect`",
            ),
        ] {
            let err = Overlay::parse("fleet defaults, version 1", text).unwrap_err();
            assert_eq!(err.line, Some(line), "{text}: {err}");
            assert!(err.message.starts_with(message), "{text}: {err}");
            assert!(
                err.to_string().starts_with("fleet defaults, version 1:"),
                "{err}"
            );
        }
    }

    #[test]
    fn a_bad_value_is_refused_with_its_line_key_and_reason() {
        let err =
            Overlay::parse("kiosk.toml", "\n[policy]\nresell_max_attempts = 500\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "kiosk.toml:3: `policy.resell_max_attempts`: 500 is outside 1..=100"
        );
        let err = Overlay::parse(
            "kiosk.toml",
            "[limits]\nmin_purchase_fen = 900\nmax_purchase_fen = 100\n",
        )
        .unwrap_err();
        assert_eq!(err.line, Some(1));
        assert!(
            err.message
                .contains("min_purchase_fen is above max_purchase_fen")
        );
        let err = Overlay::parse(
            "kiosk.toml",
            "[[backend]]\nname = \"zz\"\naddress = \"nowhere\"\n",
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "kiosk.toml:3: `backend.address`: address `nowhere` is not host:port"
        );
    }

    #[test]
    fn a_backend_the_file_does_not_name_is_refused_when_laid_over_it() {
        let overlay = Overlay::parse(
            "kiosk K1 overrides, version 9",
            "[[backend]]\nname = \"elsewhere\"\naddress = \"10.0.0.9:1\"\n",
        )
        .unwrap();
        let err = KioskConfig::parse_with(path(), &file(), &overlay).unwrap_err();
        assert_eq!(
            err.to_string(),
            "kiosk K1 overrides, version 9: laid over /etc/selfvend/kiosk.toml: it sets \
             backend `elsewhere`, which this kiosk's file does not name"
        );
        // Valid alone, refused with the file: the file's maximum is below the fleet's minimum.
        let overlay = Overlay::parse("v2", "[limits]\nmin_purchase_fen = 600000\n").unwrap();
        let err = KioskConfig::parse_with(path(), &file(), &overlay).unwrap_err();
        assert!(
            err.message
                .ends_with("min_purchase_fen is above max_purchase_fen"),
            "{err}"
        );
    }

    #[test]
    fn the_fleet_may_tighten_the_kiosks_safety_never_loosen_it() {
        let stricter = Overlay::parse(
            "v5",
            "[policy]\nunknown_outcome_settle_secs = 600\noperator_pin_tries = 3\n",
        )
        .unwrap();
        let c = KioskConfig::parse_with(path(), &file(), &stricter).unwrap();
        assert_eq!(c.policy.operator_pin_tries, 3);
        for (text, why) in [
            (
                "[policy]\nunknown_outcome_settle_secs = 0\n",
                "unknown_outcome_settle_secs 0 is below this kiosk's own 60",
            ),
            (
                "[policy]\noperator_pin_tries = 20\n",
                "operator_pin_tries 20 is above this kiosk's own 5",
            ),
            (
                "[policy]\noperator_lockout_secs = 1\n",
                "operator_lockout_secs 1 is below this kiosk's own 900",
            ),
        ] {
            let laxer = Overlay::parse("v6", text).unwrap();
            let err = KioskConfig::parse_with(path(), &file(), &laxer).unwrap_err();
            assert!(err.message.contains(why), "{text}: {err}");
        }
    }

    #[test]
    fn an_array_in_place_of_a_table_is_refused() {
        for text in [
            "kiosk = []\n",
            "backend = [[\"zz\", \"10.0.0.9:1\"]]\n",
            "[[backend]]\nname = \"zz\"\ncan_buy = [0]\n",
        ] {
            let err = Overlay::parse("v7", text).unwrap_err();
            assert!(err.message.contains("must be a table"), "{text}: {err}");
        }
    }

    #[test]
    fn only_what_the_fleet_changed_reaches_the_config_running() {
        let own = KioskConfig::parse(path(), &file()).unwrap();
        // Running with a value set in memory (demo mode's simulated backend).
        let mut running = own.clone();
        running.backends[0].endpoint.address = "127.0.0.1:4444".into();
        let limits = Overlay::parse("v8", "[limits]\nmax_purchase_fen = 1000\n").unwrap();
        let new = KioskConfig::parse_with(path(), &file(), &limits).unwrap();
        let next = running.with_fleet_change(&own, &new);
        assert_eq!(next.limits.max_purchase_fen, Fen(1000));
        assert_eq!(next.backends[0].endpoint.address, "127.0.0.1:4444");
        let moved =
            Overlay::parse("v9", "[[backend]]\nname = \"zz\"\naddress = \"h:2\"\n").unwrap();
        let newer = KioskConfig::parse_with(path(), &file(), &moved).unwrap();
        let next = next.with_fleet_change(&new, &newer);
        assert_eq!(next.backends[0].endpoint.address, "h:2");
        assert_eq!(
            next.limits.max_purchase_fen,
            Fen(500_000),
            "v9 no longer sets it"
        );
    }

    #[test]
    fn a_kiosks_overrides_win_over_the_fleets_defaults() {
        let defaults = Overlay::parse(
            "defaults",
            "[policy]\nresell_max_attempts = 2\nrewrite_max_attempts = 2\n\
             [[backend]]\nname = \"zz\"\nio_timeout_ms = 1000\n",
        )
        .unwrap();
        let mine = Overlay::parse(
            "mine",
            "[policy]\nresell_max_attempts = 9\n[[backend]]\nname = \"zz\"\naddress = \"h:1\"\n",
        )
        .unwrap();
        let both = defaults.then(&mine);
        let c = KioskConfig::parse_with(path(), &file(), &both).unwrap();
        assert_eq!(c.policy.resell_max_attempts, 9);
        assert_eq!(c.policy.rewrite_max_attempts, 2);
        assert_eq!(c.backends[0].endpoint.address, "h:1");
        assert_eq!(c.backends[0].endpoint.io_timeout, Duration::from_secs(1));
        let again = Overlay::parse("sent", &both.to_toml()).unwrap();
        assert_eq!(again.table, both.table);
    }
}
