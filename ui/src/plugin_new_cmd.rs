//! `selfvend plugin new`: a vendor's project that builds into a component straight away, with
//! the WIT of this host, a sample file for the conformance kit (a card image or a transcript)
//! and a README of the commands.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};

/// componentize-py from PyPI, as `./dev` pins it for selfvend's own Python guests.
pub const COMPONENTIZE_PY: &str = "0.25.1";
/// @bytecodealliance/componentize-js from npm, as `./dev` pins it.
pub const COMPONENTIZE_JS: &str = "0.23.0";
/// wit-bindgen from crates.io, as selfvend's own plugins use it.
const WIT_BINDGEN: &str = "0.61";

const BACKEND_WIT: &str = include_str!("../../wit/backend/backend.wit");
const BACKEND_1_0_WIT: &str = include_str!("../../wit/backend-1.0/backend.wit");

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Kind {
    CardCodec,
    BackendDialect,
    AcquirerDialect,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Lang {
    Rust,
    Python,
    Js,
}

#[derive(Args)]
pub struct NewArgs {
    #[arg(long, value_enum)]
    kind: Kind,
    #[arg(long, value_enum)]
    lang: Lang,
    /// The project's directory: it must not exist, or be empty. Its name names the plugin.
    dir: PathBuf,
}

pub fn run(args: NewArgs) -> anyhow::Result<()> {
    let name = plugin_name(&args.dir)?;
    let files = project(&name, args.kind, args.lang);
    create_empty(&args.dir)?;
    for (path, text) in &files {
        let path = args.dir.join(path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    println!(
        "created {} ({} {} {name}); see {}",
        args.dir.display(),
        lang_name(args.lang),
        kind_name(args.kind),
        args.dir.join("README.md").display()
    );
    Ok(())
}

/// The plugin's name: the directory's, which must be lower-case letters, digits and dashes.
fn plugin_name(dir: &Path) -> anyhow::Result<String> {
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let ok = name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !ok {
        bail!(
            "{}: the directory's name names the plugin: 1 to 64 of a-z, 0-9 and -, starting \
             with a letter",
            dir.display()
        );
    }
    Ok(name)
}

fn create_empty(dir: &Path) -> anyhow::Result<()> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                bail!("{}: already exists and is not empty", dir.display());
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))
        }
        Err(e) => Err(e).with_context(|| format!("reading {}", dir.display())),
    }
}

fn lang_name(lang: Lang) -> &'static str {
    match lang {
        Lang::Rust => "Rust",
        Lang::Python => "Python",
        Lang::Js => "JavaScript",
    }
}

fn kind_name(kind: Kind) -> &'static str {
    match kind {
        Kind::CardCodec => "card codec",
        Kind::BackendDialect => "backend dialect",
        Kind::AcquirerDialect => "acquirer dialect",
    }
}

/// What differs between the kinds: the world, its WIT files and the kit's sample files.
struct Template {
    world: &'static str,
    readme: &'static str,
    wit: Vec<(&'static str, &'static str)>,
    kit: Vec<(&'static str, &'static str)>,
    rust: &'static str,
    python: &'static str,
    js: &'static str,
}

fn template(kind: Kind) -> Template {
    match kind {
        Kind::CardCodec => Template {
            world: "card-codec",
            readme: include_str!("../templates/card-codec/README.md"),
            wit: vec![("wit/card.wit", include_str!("../../wit/card/card.wit"))],
            kit: vec![
                (
                    "kit/card.hex",
                    include_str!("../templates/card-codec/card.hex"),
                ),
                (
                    "kit/used-card.hex",
                    include_str!("../templates/card-codec/used-card.hex"),
                ),
            ],
            rust: include_str!("../templates/card-codec/rust/lib.rs"),
            python: include_str!("../templates/card-codec/python/app.py"),
            js: include_str!("../templates/card-codec/js/app.js"),
        },
        Kind::BackendDialect => Template {
            world: "backend-dialect",
            readme: include_str!("../templates/backend-dialect/README.md"),
            wit: vec![("wit/backend.wit", BACKEND_WIT)],
            kit: vec![(
                "kit/transcript.toml",
                include_str!("../templates/backend-dialect/transcript.toml"),
            )],
            rust: include_str!("../templates/backend-dialect/rust/lib.rs"),
            python: include_str!("../templates/backend-dialect/python/app.py"),
            js: include_str!("../templates/backend-dialect/js/app.js"),
        },
        Kind::AcquirerDialect => Template {
            world: "acquirer-dialect",
            readme: include_str!("../templates/acquirer-dialect/README.md"),
            // The payment package imports the connection and log of selfvend:backend@1.0.0.
            wit: vec![
                (
                    "wit/payment.wit",
                    include_str!("../../wit/payment/payment.wit"),
                ),
                ("wit/deps/backend/backend.wit", BACKEND_1_0_WIT),
            ],
            kit: vec![(
                "kit/transcript.toml",
                include_str!("../templates/acquirer-dialect/transcript.toml"),
            )],
            rust: include_str!("../templates/acquirer-dialect/rust/lib.rs"),
            python: include_str!("../templates/acquirer-dialect/python/app.py"),
            js: include_str!("../templates/acquirer-dialect/js/app.js"),
        },
    }
}

/// The files of a project, by path.
fn project(name: &str, kind: Kind, lang: Lang) -> Vec<(&'static str, String)> {
    let template = template(kind);
    let world = template.world;
    let snake = name.replace('-', "_");
    let wasm = match lang {
        Lang::Rust => format!("target/wasm32-wasip2/release/{snake}.wasm"),
        _ => format!("{name}.wasm"),
    };
    let (source, install, build) = match lang {
        Lang::Rust => (
            "src/lib.rs",
            "With Rust from rustup: `rustup target add wasm32-wasip2`.".to_string(),
            "cargo build --release --target wasm32-wasip2".to_string(),
        ),
        Lang::Python => (
            "app.py",
            format!(
                "With Python 3.10 or later and componentize-py {COMPONENTIZE_PY} from PyPI: \
                 `python3 -m venv .venv && .venv/bin/pip install componentize-py=={COMPONENTIZE_PY} \
                 && . .venv/bin/activate`."
            ),
            format!("componentize-py -d wit -w {world} componentize app -o {wasm}"),
        ),
        Lang::Js => (
            "app.js",
            format!(
                "With Node.js 20 or later: `npm install` (it installs \
                 @bytecodealliance/componentize-js {COMPONENTIZE_JS} from npm, as `package.json` \
                 pins it). The build leaves out `wasi:http` (`--disable http fetch-event`): the \
                 kiosk links none, and refuses a plugin that imports it."
            ),
            "npm run build".to_string(),
        ),
    };
    let fill = |text: &str| {
        text.replace("{{name}}", name)
            .replace("{{world}}", world)
            .replace("{{wasm}}", &wasm)
            .replace("{{language}}", lang_name(lang))
            .replace("{{source}}", source)
            .replace("{{install}}", &install)
            .replace("{{build}}", &build)
            .replace("{{componentize_js}}", COMPONENTIZE_JS)
            .replace("{{wit_bindgen}}", WIT_BINDGEN)
    };
    let mut files = vec![("README.md", fill(template.readme))];
    files.extend(template.wit.iter().map(|(p, t)| (*p, t.to_string())));
    files.extend(template.kit.iter().map(|(p, t)| (*p, t.to_string())));
    match lang {
        Lang::Rust => {
            files.push((
                "Cargo.toml",
                fill(include_str!("../templates/common/rust/Cargo.toml")),
            ));
            files.push(("src/lib.rs", fill(template.rust)));
            files.push((
                ".gitignore",
                fill(include_str!("../templates/common/rust/gitignore")),
            ));
        }
        Lang::Python => {
            files.push(("app.py", fill(template.python)));
            files.push((
                ".gitignore",
                fill(include_str!("../templates/common/python/gitignore")),
            ));
        }
        Lang::Js => {
            files.push(("app.js", fill(template.js)));
            files.push((
                "package.json",
                fill(include_str!("../templates/common/js/package.json")),
            ));
            files.push((
                ".gitignore",
                fill(include_str!("../templates/common/js/gitignore")),
            ));
        }
    }
    files
}
