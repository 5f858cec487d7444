//! `selfvend plugin new`: a vendor's project that builds into a component straight away, with
//! the WIT of this host, a card for the conformance kit and a README of the commands.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};

/// componentize-py from PyPI, as `./dev` pins it for selfvend's own Python guests.
pub const COMPONENTIZE_PY: &str = "0.25.1";
/// @bytecodealliance/componentize-js from npm, as `./dev` pins it.
pub const COMPONENTIZE_JS: &str = "0.23.0";
/// wit-bindgen from crates.io, as selfvend's own plugins use it.
const WIT_BINDGEN: &str = "0.61";

const CARD_WIT: &str = include_str!("../../wit/card/card.wit");
const CARD_HEX: &str = include_str!("../templates/card-codec/card.hex");
const USED_CARD_HEX: &str = include_str!("../templates/card-codec/used-card.hex");
const CARD_README: &str = include_str!("../templates/card-codec/README.md");

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
    if args.kind != Kind::CardCodec {
        bail!(
            "`plugin new` scaffolds card codecs only so far; a dialect is written from its WIT \
             (wit/backend, wit/payment) as docs/vendors/README.md describes"
        );
    }
    let name = plugin_name(&args.dir)?;
    let files = card_codec(&name, args.lang);
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
        "created {} ({} card codec {name}); see {}",
        args.dir.display(),
        lang_name(args.lang),
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

/// The files of a card codec project, by path.
fn card_codec(name: &str, lang: Lang) -> Vec<(&'static str, String)> {
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
            format!("componentize-py -d wit -w card-codec componentize app -o {wasm}"),
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
            .replace("{{wasm}}", &wasm)
            .replace("{{language}}", lang_name(lang))
            .replace("{{source}}", source)
            .replace("{{install}}", &install)
            .replace("{{build}}", &build)
            .replace("{{componentize_js}}", COMPONENTIZE_JS)
            .replace("{{wit_bindgen}}", WIT_BINDGEN)
    };
    let mut files = vec![
        ("README.md", fill(CARD_README)),
        ("wit/card.wit", CARD_WIT.to_string()),
        ("kit/card.hex", CARD_HEX.to_string()),
        ("kit/used-card.hex", USED_CARD_HEX.to_string()),
    ];
    match lang {
        Lang::Rust => {
            files.push((
                "Cargo.toml",
                fill(include_str!("../templates/card-codec/rust/Cargo.toml")),
            ));
            files.push((
                "src/lib.rs",
                fill(include_str!("../templates/card-codec/rust/lib.rs")),
            ));
            files.push((
                ".gitignore",
                fill(include_str!("../templates/card-codec/rust/gitignore")),
            ));
        }
        Lang::Python => {
            files.push((
                "app.py",
                fill(include_str!("../templates/card-codec/python/app.py")),
            ));
            files.push((
                ".gitignore",
                fill(include_str!("../templates/card-codec/python/gitignore")),
            ));
        }
        Lang::Js => {
            files.push((
                "app.js",
                fill(include_str!("../templates/card-codec/js/app.js")),
            ));
            files.push((
                "package.json",
                fill(include_str!("../templates/card-codec/js/package.json")),
            ));
            files.push((
                ".gitignore",
                fill(include_str!("../templates/card-codec/js/gitignore")),
            ));
        }
    }
    files
}
