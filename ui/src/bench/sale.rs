//! `selfvend bench sale`: complete cash sales through every rig — virtual cards in pcscd, the
//! reference backend on loopback, the validator and printer simulators on ptys, a journal on
//! disk — and what the host itself costs per sale.
//!
//! Host overhead is a sale's wall time less the time the engine spent waiting on the card, the
//! backend, the acceptor and the printer (`SaleEngine::waited`). It includes the journal's
//! commits, each one an fsync of the write-ahead log.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use selfvend_host::backend::Purchase;
use selfvend_host::card_reader::Readers;
use selfvend_host::config::{KioskConfig, PluginRole};
use selfvend_host::escpos::EscPosPrinter;
use selfvend_host::id003::{Id003Acceptor, Id003Settings};
use selfvend_host::journal::Journal;
use selfvend_host::money::Fen;
use selfvend_host::plugin::{Plugin, SharedCard};
use selfvend_host::sale::{Outcome, SaleEngine};
use selfvend_sim::cpu_card::CpuCard;
use selfvend_sim::encryption_machine::EncryptionMachine;
use selfvend_sim::escpos_printer::SimulatedPrinter;
use selfvend_sim::id003_validator::{Action, SimulatedValidator};
use selfvend_sim::meter::{Meter, MeterInsert};
use selfvend_sim::reference_backend::{Listen, ReferenceBackend};
use selfvend_sim::sle4442::{self, Sle4442};
use selfvend_sim::vpcd::{Inserted, lock};

use super::{ms, percentile};

enum Card {
    Memory(Arc<Mutex<Sle4442>>),
    Cpu(Arc<Mutex<CpuCard>>),
}

pub fn run(
    config: &KioskConfig,
    vpcd: SocketAddr,
    reader: &str,
    rounds: usize,
) -> anyhow::Result<()> {
    let scratch = tempfile::tempdir().context("making a scratch directory")?;
    let backend = ReferenceBackend::start(&scratch.path().join("books.sqlite"), Listen::default())?;
    let runtime = selfvend_ui::kiosk::runtime(config)?;
    let load = |role: PluginRole| -> anyhow::Result<Vec<Plugin>> {
        config
            .plugins
            .iter()
            .filter(|p| p.role == role)
            .map(|p| Ok(runtime.load(&p.name, &p.file)?))
            .collect()
    };
    let dialects = load(PluginRole::BackendDialect)?;
    // The config's backends, pointed at the reference backend's port for their dialect.
    let mut config = config.clone();
    for entry in &mut config.backends {
        let plugin = dialects
            .iter()
            .find(|d| d.name == entry.dialect)
            .with_context(|| format!("no [[plugin]] named `{}`", entry.dialect))?;
        let name = plugin
            .backend_session(entry.endpoint.clone())?
            .about()?
            .name;
        entry.endpoint.address = match name.as_str() {
            "fixed-text" => backend.fixed_text_address(),
            "json-http" => backend.json_http_address(),
            other => anyhow::bail!("the reference backend does not speak {other}"),
        }
        .to_string();
    }
    let journal = Journal::open(&scratch.path().join("journal.sqlite"))?;
    let mut engine = SaleEngine::new(&config, journal, load(PluginRole::CardCodec)?, dialects);
    let validator = SimulatedValidator::start().context("starting the validator simulator")?;
    let mut acceptor = Id003Acceptor::open(
        Path::new(validator.path()),
        9600,
        Id003Settings {
            reply_timeout: Duration::from_millis(500),
            poll_interval: Duration::from_millis(1),
        },
    )?;
    let printer_sim = SimulatedPrinter::start().context("starting the printer simulator")?;
    let mut printer = EscPosPrinter::open(Path::new(printer_sim.path()), 9600)?;
    let readers = Readers::establish()?;
    let machine = EncryptionMachine::default();

    for (card, meter_number, label) in [
        (
            Card::Memory(Arc::new(Mutex::new(sle4442::ht01::issue(
                &machine,
                "3701000000000001",
                "3701",
                "C370100001",
                "M3701000001",
            )))),
            "M3701000001",
            "memory card, fixed-text backend",
        ),
        (
            Card::Cpu(Arc::new(Mutex::new(CpuCard::issue(
                &machine,
                "4401000000000001",
                "4401",
                "C440100001",
                "M4401000001",
            )))),
            "M4401000001",
            "CPU card, JSON backend",
        ),
    ] {
        let inserted = match &card {
            Card::Memory(c) => Inserted::insert(c.clone(), vpcd),
            Card::Cpu(c) => Inserted::insert(c.clone(), vpcd),
        }
        .with_context(|| format!("inserting a virtual card at vpcd {vpcd}"))?;
        if !readers.wait(reader, true, Some(Duration::from_secs(10)))? {
            anyhow::bail!("reader `{reader}` did not see the card inserted at {vpcd}");
        }
        let mut meter = Meter::new(meter_number, machine.clone());
        let mut overheads = Vec::with_capacity(rounds);
        let mut walls = Vec::with_capacity(rounds);
        let commits_before = engine.journal().stats().commits;
        for _ in 0..rounds {
            let channel: SharedCard = Arc::new(Mutex::new(readers.connect(reader)?));
            let started = Instant::now();
            let waited = engine.waited();
            let mut s = engine.start(channel)?;
            engine.quote(&mut s, Purchase::Money(Fen(1000)))?;
            validator.act(Action::Insert(10));
            engine.take_cash(&mut s, &mut acceptor, Duration::from_secs(5))?;
            let done = engine.complete(&mut s, &mut printer)?;
            let wall = started.elapsed();
            if !matches!(done.outcome, Outcome::Credited { .. }) {
                anyhow::bail!("{label}: a sale ended {:?}", done.outcome);
            }
            overheads.push(wall.saturating_sub(engine.waited() - waited));
            walls.push(wall);
            drop(s);
            // The customer takes the card to the meter before the next sale.
            let taken = match &card {
                Card::Memory(c) => meter.insert_hengtai(&mut lock(c)),
                Card::Cpu(c) => meter.insert_lanling(&mut lock(c)),
            };
            if !matches!(taken, MeterInsert::Credited { .. }) {
                anyhow::bail!("{label}: the meter did not take the credit: {taken:?}");
            }
        }
        let commits = engine.journal().stats().commits - commits_before;
        drop(inserted);
        readers.wait(reader, false, Some(Duration::from_secs(10)))?;
        println!(
            "{label}: sale p50 {:.1} ms; host overhead per sale: {:.1} ms (p99 {:.1} ms); fsyncs per sale: {}",
            ms(percentile(&mut walls, 50)),
            ms(percentile(&mut overheads, 50)),
            ms(percentile(&mut overheads, 99)),
            commits / rounds.max(1) as u64
        );
    }
    Ok(())
}
