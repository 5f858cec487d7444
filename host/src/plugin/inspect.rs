//! What a component declares, read from its bytes without compiling it: its kind, the WIT
//! contract and version it implements, and its imports, checked against the allowlist.

use std::fmt;

use wasmparser::{Encoding, Parser, Payload};

/// The kind of plugin, from the WIT world it exports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PluginKind {
    /// Exports `selfvend:card/codec`.
    CardCodec,
    /// Exports `selfvend:backend/dialect`.
    BackendDialect,
    /// Exports `selfvend:payment/dialect`.
    AcquirerDialect,
}

impl PluginKind {
    /// The WIT package that defines this kind.
    pub fn package(self) -> &'static str {
        match self {
            PluginKind::CardCodec => "selfvend:card",
            PluginKind::BackendDialect => "selfvend:backend",
            PluginKind::AcquirerDialect => "selfvend:payment",
        }
    }

    /// Other contracts' interfaces this kind may import (an acquirer dialect uses the
    /// backend's connection and log), with the versions this host speaks.
    fn borrows(self) -> &'static [(&'static str, Version)] {
        match self {
            PluginKind::AcquirerDialect => &[("selfvend:backend", super::backend_v1::VERSION)],
            _ => &[],
        }
    }

    fn export(self) -> &'static str {
        match self {
            PluginKind::CardCodec => "selfvend:card/codec",
            PluginKind::BackendDialect => "selfvend:backend/dialect",
            PluginKind::AcquirerDialect => "selfvend:payment/dialect",
        }
    }

    /// The newest contract version this host speaks for this kind.
    pub fn host_version(self) -> Version {
        match self {
            PluginKind::CardCodec => super::card_v1::VERSION,
            PluginKind::BackendDialect => super::backend_v1::VERSION,
            PluginKind::AcquirerDialect => super::payment_v1::VERSION,
        }
    }

    const ALL: [PluginKind; 3] = [
        PluginKind::CardCodec,
        PluginKind::BackendDialect,
        PluginKind::AcquirerDialect,
    ];
}

impl fmt::Display for PluginKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PluginKind::CardCodec => "card codec",
            PluginKind::BackendDialect => "backend dialect",
            PluginKind::AcquirerDialect => "acquirer dialect",
        })
    }
}

/// A contract version, `major.minor.patch`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
}

impl Version {
    fn parse(text: &str) -> Option<Version> {
        let mut parts = text.split('.').map(|p| p.parse::<u32>().ok());
        let v = Version {
            major: parts.next()??,
            minor: parts.next()??,
            patch: parts.next()??,
        };
        parts.next().is_none().then_some(v)
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// Why a component's declarations are refused.
#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    #[error("not a WebAssembly component: {0}")]
    NotAComponent(String),
    #[error(
        "exports no selfvend contract (exports: {exports}); a plugin exports selfvend:card/codec, selfvend:backend/dialect or selfvend:payment/dialect"
    )]
    NoContract { exports: String },
    #[error("exports two selfvend contracts; a plugin is one kind")]
    TwoContracts,
    #[error("implements {package}@{found}; this host speaks {package}@{speaks} (major {major}, up to minor {minor})", major = speaks.major, minor = speaks.minor)]
    UnsupportedVersion {
        package: &'static str,
        found: Version,
        speaks: Version,
    },
    #[error("imports `{import}`, which a {kind} may not use (allowed: {package}/* @{major}.x, and wasi:io, cli, clocks, filesystem, sockets, random @0.2.x)", package = kind.package(), major = kind.host_version().major)]
    ForbiddenImport { import: String, kind: PluginKind },
}

/// A component's declarations.
#[derive(Debug, Clone)]
pub struct Inspection {
    pub kind: PluginKind,
    /// The contract version the plugin was built against.
    pub version: Version,
    /// Top-level import names, e.g. `wasi:io/streams@0.2.6`.
    pub imports: Vec<String>,
    /// Top-level export names.
    pub exports: Vec<String>,
}

/// WASI 0.2 packages a guest may import. Each is granted with an empty context.
const WASI_PACKAGES: [&str; 6] = [
    "wasi:io",
    "wasi:cli",
    "wasi:clocks",
    "wasi:filesystem",
    "wasi:sockets",
    "wasi:random",
];

/// Reads the declarations of `bytes` and checks them against what this host allows.
pub fn inspect(bytes: &[u8]) -> Result<Inspection, InspectError> {
    let (imports, exports) = top_level_names(bytes)?;
    let mut found = None;
    for name in &exports {
        let Some((interface, version)) = name.split_once('@') else {
            continue;
        };
        for kind in PluginKind::ALL {
            if interface == kind.export() {
                if found.is_some_and(|(k, _)| k != kind) {
                    return Err(InspectError::TwoContracts);
                }
                let version = Version::parse(version).ok_or_else(|| {
                    InspectError::NotAComponent(format!("export `{name}` has a malformed version"))
                })?;
                found = Some((kind, version));
            }
        }
    }
    let Some((kind, version)) = found else {
        return Err(InspectError::NoContract {
            exports: exports.join(", "),
        });
    };
    let speaks = kind.host_version();
    if version.major != speaks.major || version > speaks {
        return Err(InspectError::UnsupportedVersion {
            package: kind.package(),
            found: version,
            speaks,
        });
    }
    if let Some(import) = imports.iter().find(|i| !import_allowed(kind, i)) {
        return Err(InspectError::ForbiddenImport {
            import: import.clone(),
            kind,
        });
    }
    Ok(Inspection {
        kind,
        version,
        imports,
        exports,
    })
}

fn import_allowed(kind: PluginKind, import: &str) -> bool {
    let Some((path, version)) = import.split_once('@') else {
        return false;
    };
    let Some((package, _interface)) = path.split_once('/') else {
        return false;
    };
    let Some(version) = Version::parse(version) else {
        return false;
    };
    if package == kind.package() {
        return version.major == kind.host_version().major && version <= kind.host_version();
    }
    if let Some((_, speaks)) = kind.borrows().iter().find(|(p, _)| *p == package) {
        return version.major == speaks.major && version <= *speaks;
    }
    WASI_PACKAGES.contains(&package) && version.major == 0 && version.minor == 2
}

fn top_level_names(bytes: &[u8]) -> Result<(Vec<String>, Vec<String>), InspectError> {
    if !bytes.starts_with(b"\0asm") {
        return Err(InspectError::NotAComponent(
            "the file does not start with WebAssembly's magic bytes 00 61 73 6D".into(),
        ));
    }
    // One line, never wasmparser's multi-line dump.
    let bad = |e: wasmparser::BinaryReaderError| {
        InspectError::NotAComponent(format!("{} at byte {}", e.message(), e.offset()))
    };
    let (mut imports, mut exports) = (Vec::new(), Vec::new());
    let mut depth = 0usize;
    for payload in Parser::new(0).parse_all(bytes) {
        match payload.map_err(bad)? {
            Payload::Version { encoding, .. } => {
                if depth == 0 && encoding != Encoding::Component {
                    return Err(InspectError::NotAComponent(
                        "a core module, not a component (build a component: for Rust, the \
                         wasm32-wasip2 target)"
                            .into(),
                    ));
                }
                depth += 1;
            }
            Payload::End(_) => depth = depth.saturating_sub(1),
            Payload::ComponentImportSection(reader) if depth == 1 => {
                for import in reader {
                    imports.push(import.map_err(bad)?.name.name.to_string());
                }
            }
            Payload::ComponentExportSection(reader) if depth == 1 => {
                for export in reader {
                    exports.push(export.map_err(bad)?.name.name.to_string());
                }
            }
            _ => {}
        }
    }
    if depth == 0 && imports.is_empty() && exports.is_empty() && bytes.len() < 8 {
        return Err(InspectError::NotAComponent("too short".into()));
    }
    Ok((imports, exports))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse_strictly() {
        assert_eq!(
            Version::parse("1.2.3"),
            Some(Version {
                major: 1,
                minor: 2,
                patch: 3
            })
        );
        assert_eq!(Version::parse("1.2"), None);
        assert_eq!(Version::parse("1.2.3.4"), None);
        assert_eq!(Version::parse("1.x.0"), None);
    }

    #[test]
    fn allowlist_admits_own_package_and_wasi_0_2_only() {
        let k = PluginKind::CardCodec;
        assert!(import_allowed(k, "selfvend:card/channel@1.0.0"));
        assert!(import_allowed(k, "wasi:io/streams@0.2.6"));
        assert!(import_allowed(k, "wasi:sockets/tcp@0.2.3"));
        assert!(!import_allowed(k, "selfvend:backend/connection@1.0.0"));
        assert!(!import_allowed(k, "selfvend:card/channel@2.0.0"));
        assert!(!import_allowed(k, "wasi:http/outgoing-handler@0.2.0"));
        assert!(!import_allowed(k, "wasi:io/streams@0.3.0"));
        assert!(!import_allowed(k, "evil:net/raw@1.0.0"));
        assert!(!import_allowed(k, "unversioned"));
    }

    #[test]
    fn a_core_module_is_not_a_component() {
        let err = inspect(b"\0asm\x01\0\0\0").unwrap_err();
        assert_eq!(
            err.to_string(),
            "not a WebAssembly component: a core module, not a component (build a component: \
             for Rust, the wasm32-wasip2 target)"
        );
        assert_eq!(
            inspect(b"hello\n").unwrap_err().to_string(),
            "not a WebAssembly component: the file does not start with WebAssembly's magic \
             bytes 00 61 73 6D"
        );
        assert_eq!(
            inspect(b"\0asm\x0d\0\x01\0\x07").unwrap_err().to_string(),
            "not a WebAssembly component: unexpected end-of-file at byte 9"
        );
    }
}
