//! `selfvend card …`: the meter-card reader as operators and vendors check it.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use clap::Subcommand;
use selfvend_host::card::CardData;
use selfvend_host::card_reader::{ReaderEvent, Readers};
use selfvend_host::codecs;
use selfvend_host::config::{KioskConfig, PluginRole};
use selfvend_host::plugin::{Plugin, SharedCard};

#[derive(Subcommand)]
pub enum CardCommand {
    /// Prints reader and card events (readers plugged and unplugged, cards inserted with their
    /// ATR and the codec that claims them, cards removed) until interrupted.
    Watch {
        /// Stop after this many events.
        #[arg(long)]
        events: Option<usize>,
        /// Stop when nothing happens for this many seconds.
        #[arg(long)]
        idle_secs: Option<u64>,
    },
    /// Identifies the card in the reader with the configured codecs and prints what it read.
    Read {
        /// The reader (default: the config's card reader, else the first reader).
        #[arg(long)]
        reader: Option<String>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

pub fn run(cmd: CardCommand, config: &Path) -> anyhow::Result<ExitCode> {
    let config = KioskConfig::load(config)?;
    match cmd {
        CardCommand::Watch { events, idle_secs } => watch(&config, events, idle_secs),
        CardCommand::Read { reader, json } => read(&config, reader.as_deref(), json),
    }
}

/// Every card codec the config names, loaded.
pub fn card_codecs(config: &KioskConfig) -> anyhow::Result<Vec<Plugin>> {
    let runtime = selfvend_ui::kiosk::runtime(config)?;
    config
        .plugins
        .iter()
        .filter(|p| p.role == PluginRole::CardCodec)
        .map(|p| Ok(runtime.load(&p.name, &p.file)?))
        .collect()
}

fn watch(
    config: &KioskConfig,
    events: Option<usize>,
    idle_secs: Option<u64>,
) -> anyhow::Result<ExitCode> {
    let codecs = card_codecs(config)?;
    let readers = Readers::establish()?;
    let names = readers.names()?;
    if names.is_empty() {
        println!("no readers yet; waiting for one to be plugged in");
    }
    for name in &names {
        println!("reader: {name}");
    }
    let mut left = events;
    readers.watch(idle_secs.map(Duration::from_secs), |event| {
        let line = match &event {
            ReaderEvent::ReaderAdded(r) => format!("reader plugged in: {r}"),
            ReaderEvent::ReaderRemoved(r) => format!("reader unplugged: {r}"),
            ReaderEvent::CardRemoved(r) => format!("card removed from {r}"),
            ReaderEvent::CardInserted { reader, atr } => format!(
                "card inserted in {reader}: ATR {}, {}",
                hex::encode_upper(atr),
                claim(&readers, &codecs, reader)
            ),
        };
        // Whoever reads our output has gone (`card watch | head`): stop watching, quietly.
        if writeln!(std::io::stdout().lock(), "{line}").is_err() {
            return false;
        }
        left = left.map(|n| n.saturating_sub(1));
        left != Some(0)
    })?;
    Ok(ExitCode::SUCCESS)
}

/// Which codec claims the card in `reader`, in words.
fn claim(readers: &Readers, codecs: &[Plugin], reader: &str) -> String {
    let card: SharedCard = match readers.connect(reader) {
        Ok(card) => Arc::new(Mutex::new(card)),
        Err(e) => return e.to_string(),
    };
    match codecs::identify(codecs, &card) {
        Ok(found) => format!(
            "{} card {}",
            found.codec.name, found.identification.card_type
        ),
        Err(e) => e.to_string(),
    }
}

fn read(config: &KioskConfig, reader: Option<&str>, json: bool) -> anyhow::Result<ExitCode> {
    let codecs = card_codecs(config)?;
    let readers = Readers::establish()?;
    let configured = config
        .devices
        .card_reader
        .as_ref()
        .map(|r| r.reader.as_str());
    let reader = readers.pick(reader.or(configured))?;
    let card: SharedCard = Arc::new(Mutex::new(readers.connect(&reader)?));
    let found = codecs::identify(&codecs, &card).with_context(|| format!("reader `{reader}`"))?;
    let codec = found.codec.name.clone();
    let mut session = found.session;
    let data = session
        .read(&card)
        .with_context(|| format!("reader `{reader}`, codec `{codec}`"))?;
    if json {
        let out = serde_json::json!({
            "reader": reader,
            "codec": codec,
            "card-type": found.identification.card_type,
            "card": data,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!("reader:          {reader}");
        println!(
            "codec:           {codec} ({})",
            found.identification.card_type
        );
        print_card(&data);
    }
    Ok(ExitCode::SUCCESS)
}

fn print_card(d: &CardData) {
    println!("card serial:     {}", d.card_serial);
    println!("utility code:    {}", d.utility_code);
    println!("customer number: {}", d.customer_number);
    println!("meter number:    {}", d.meter_number);
    println!("role:            {:?}", d.role);
    println!("purchase count:  {}", d.purchase_count);
    match &d.pending {
        Some(p) => println!(
            "pending credit:  purchase {}, {} fen, {} Wh (not yet taken by the meter)",
            p.purchase_count, p.amount.0, p.energy.0
        ),
        None => println!("pending credit:  none"),
    }
    match &d.return_data {
        Some(r) => println!(
            "meter returned:  purchase {} taken, {} Wh left, {} Wh used{}",
            r.meter_purchase_count,
            r.remaining_energy.map_or("?".into(), |w| w.0.to_string()),
            r.total_energy.map_or("?".into(), |w| w.0.to_string()),
            if r.status_flags.is_empty() {
                String::new()
            } else {
                format!(", {}", r.status_flags.join(", "))
            }
        ),
        None => println!("meter returned:  nothing yet"),
    }
}
