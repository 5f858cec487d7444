//! `selfvend plugin test`: the conformance kit, run on a plugin a vendor has not signed yet.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use anyhow::{Context, bail};
use clap::Args;
use selfvend_host::config::PluginLimits;
use selfvend_host::kit::Report;
use selfvend_host::kit::card_sim::CardSim;
use selfvend_host::kit::codec_checks::{CardSource, CodecKit, GrantTerms};
use selfvend_host::kit::dialect_checks::{Acquirer, Backend, Contract, DialectKit};
use selfvend_host::kit::memory_card::{MemoryCard, MemoryType, parse_image};
use selfvend_host::kit::soft_pin_pad::SoftPinPad;
use selfvend_host::kit::transcript::Transcript;
use selfvend_host::money::{Fen, Wh};
use selfvend_host::plugin::PluginRuntime;
use selfvend_host::plugin::inspect::PluginKind;

#[derive(Args)]
pub struct TestArgs {
    /// The plugin's component, signed or not.
    plugin: PathBuf,
    /// Card codecs: the memory card the kit plays (sle4442, sle4428 or at24).
    #[arg(long)]
    memory: Option<String>,
    /// The memory card's contents: the chip's size in raw bytes, or hex text. Give it again
    /// for more cards (a new one, one with a credit the meter took): each gets every check.
    #[arg(long)]
    image: Vec<PathBuf>,
    /// Card codecs: a virtual card of the vendor's own (a `selfvend:card-sim` component), for
    /// CPU cards and anything the memory cards do not cover.
    #[arg(long, conflicts_with_all = ["memory", "image"])]
    card_sim: Option<PathBuf>,
    /// The memory card's PSC in hex (the chip's default, FFFFFF or FFFF, when left out).
    #[arg(long)]
    psc: Option<String>,
    /// The vendor data (token) the test grants carry, in hex.
    #[arg(long, default_value = "")]
    token: String,
    /// The amount the test grants carry.
    #[arg(long, default_value_t = 5000)]
    amount_fen: u64,
    /// The energy the test grants carry.
    #[arg(long, default_value_t = 10_000)]
    energy_wh: u64,
    /// Backend dialects: the calls to make, with the bytes recorded from the backend.
    #[arg(long)]
    transcript: Option<PathBuf>,
    /// Record the transcript's calls against the backend at HOST:PORT (through the kit's
    /// proxy), write them with their bytes to --out, then test against the recording.
    #[arg(long, requires_all = ["transcript", "out"])]
    record: Option<String>,
    /// Where --record writes the recorded transcript.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Acquirer dialects: the test terminal master key (hex, 16 bytes) of the kit's software
    /// PIN pad, which loads the working keys a sign-on returns and MACs with them.
    #[arg(long)]
    master_key: Option<String>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(args: TestArgs) -> anyhow::Result<ExitCode> {
    let cache = tempfile::tempdir().context("a directory for the kit's compiled code")?;
    let runtime = PluginRuntime::unsigned(cache.path(), PluginLimits::default())?;
    let name = args
        .plugin
        .file_stem()
        .map_or("plugin".into(), |s| s.to_string_lossy().into_owned());
    let plugin = runtime.load(&name, &args.plugin)?;
    let report = match plugin.kind() {
        PluginKind::CardCodec => {
            let terms = GrantTerms {
                amount: Fen(args.amount_fen),
                energy: Wh(args.energy_wh),
                token: hex_arg("--token", &args.token)?,
            };
            let mut runs = Vec::new();
            for (label, source) in card_sources(&args)? {
                runs.push((label, CodecKit::new(&plugin, source, terms.clone()).run()));
            }
            if runs.len() == 1 {
                runs.remove(0).1
            } else {
                Report::combine(runs)
            }
        }
        PluginKind::BackendDialect => dialect_report(Backend::default(), &plugin, &args)?,
        PluginKind::AcquirerDialect => {
            let Some(master) = &args.master_key else {
                bail!(
                    "an acquirer dialect MACs through the kit's PIN pad: give --master-key HEX (a test terminal master key)"
                );
            };
            let master: [u8; 16] = hex_arg("--master-key", master)?
                .try_into()
                .map_err(|_| anyhow::anyhow!("--master-key: a terminal master key is 16 bytes"))?;
            let pin_pad = Arc::new(Mutex::new(SoftPinPad::new(master)));
            dialect_report(Acquirer { pin_pad }, &plugin, &args)?
        }
    };
    print(&report, args.json)?;
    Ok(if report.passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn dialect_report<K: Contract>(
    contract: K,
    plugin: &selfvend_host::plugin::Plugin,
    args: &TestArgs,
) -> anyhow::Result<Report> {
    let Some(path) = &args.transcript else {
        bail!("a dialect is tested against its peer's replies: give --transcript FILE");
    };
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut transcript = Transcript::<K::Call>::parse(&text)
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    if let (Some(upstream), Some(out)) = (&args.record, &args.out) {
        transcript = DialectKit::record(&contract, plugin, &transcript, upstream)
            .map_err(|e| anyhow::anyhow!("recording from {upstream}: {e}"))?;
        std::fs::write(out, transcript.to_toml().map_err(anyhow::Error::msg)?)
            .with_context(|| format!("writing {}", out.display()))?;
        eprintln!(
            "recorded {} calls into {}",
            transcript.calls.len(),
            out.display()
        );
    }
    Ok(DialectKit::new(contract, plugin, transcript).run())
}

/// Each card the codec is tested on, named after its image file.
fn card_sources(args: &TestArgs) -> anyhow::Result<Vec<(String, CardSource)>> {
    if let Some(path) = &args.card_sim {
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let sim = CardSim::load(&bytes).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        return Ok(vec![(path.display().to_string(), CardSource::Sim(sim))]);
    }
    let Some(memory) = &args.memory else {
        bail!(
            "a card codec is tested on a card: give --memory TYPE --image FILE, or --card-sim SIM.wasm"
        );
    };
    if args.image.is_empty() {
        bail!("--memory {memory}: give the card's contents with --image FILE");
    }
    let kind = MemoryType::parse(memory).map_err(anyhow::Error::msg)?;
    let psc = match &args.psc {
        Some(hex) => hex_arg("--psc", hex)?,
        None => vec![0xFF; kind.psc_len()],
    };
    let mut sources = Vec::new();
    for path in &args.image {
        let image = read_image(kind, path)?;
        let card = MemoryCard::new(kind, image, psc.clone())
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        let label = path.file_name().map_or(path.display().to_string(), |n| {
            n.to_string_lossy().into_owned()
        });
        sources.push((
            label,
            CardSource::Memory {
                card,
                psc: psc.clone(),
            },
        ));
    }
    Ok(sources)
}

fn read_image(kind: MemoryType, path: &Path) -> anyhow::Result<Vec<u8>> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    parse_image(kind, &bytes).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

fn hex_arg(flag: &str, text: &str) -> anyhow::Result<Vec<u8>> {
    hex::decode(text.trim()).map_err(|e| anyhow::anyhow!("{flag} {text:?}: not hex: {e}"))
}

fn print(report: &Report, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(report)?);
    } else {
        print!("{}", report.text());
    }
    Ok(())
}
