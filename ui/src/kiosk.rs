//! The kiosk assembled from its config: the journal, the sale engine with every plugin the
//! config names, the devices, and the running kiosk over them.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use selfvend_host::card_reader::Readers;
use selfvend_host::config::{KioskConfig, PluginRole};
use selfvend_host::escpos::EscPosPrinter;
use selfvend_host::fleet::FleetLink;
use selfvend_host::id003::{Id003Acceptor, Id003Settings};
use selfvend_host::journal::Journal;
use selfvend_host::kiosk::{Kiosk, KioskDevices, Timeouts};
use selfvend_host::pin_pad::PinPad;
use selfvend_host::plugin::{Plugin, PluginRuntime, trust::TrustStore};
use selfvend_host::sale::{BankLink, SaleEngine};

/// The plugin runtime over the config's trust store, cache and limits.
pub fn runtime(config: &KioskConfig) -> anyhow::Result<PluginRuntime> {
    Ok(PluginRuntime::new(
        TrustStore::load(&config.trust_dir)?,
        &config.plugin_cache_dir(),
        config.plugin_limits.clone(),
    )?)
}

/// The journal file in the config's data directory, created with it when missing.
pub fn journal(config: &KioskConfig) -> anyhow::Result<Journal> {
    std::fs::create_dir_all(&config.kiosk.data_dir)
        .with_context(|| format!("creating {}", config.kiosk.data_dir.display()))?;
    Ok(Journal::open(
        &config.kiosk.data_dir.join("journal.sqlite"),
    )?)
}

/// The sale engine over the config's journal, with its codecs and dialects loaded.
pub fn sale_engine(config: &KioskConfig) -> anyhow::Result<SaleEngine> {
    let runtime = runtime(config)?;
    let load = |role: PluginRole| -> anyhow::Result<Vec<Plugin>> {
        config
            .plugins
            .iter()
            .filter(|p| p.role == role)
            .map(|p| Ok(runtime.load(&p.name, &p.file)?))
            .collect()
    };
    Ok(SaleEngine::new(
        config,
        journal(config)?,
        load(PluginRole::CardCodec)?,
        load(PluginRole::BackendDialect)?,
    ))
}

/// The config's acquirer: its dialect plugin and the PIN pad that MACs for it.
pub fn bank_link(config: &KioskConfig) -> anyhow::Result<BankLink> {
    let Some(acquirer) = &config.acquirer else {
        bail!(
            "{} has no [acquirer]: this kiosk takes cash only",
            config.path.display()
        );
    };
    let Some(pad) = &config.devices.pinpad else {
        bail!(
            "{} has no [devices.pinpad]: the acquirer's keys live in the PIN pad",
            config.path.display()
        );
    };
    let plugin = config
        .plugins
        .iter()
        .find(|p| p.name == acquirer.dialect)
        .context("the acquirer's dialect plugin is not configured")?;
    let dialect = runtime(config)?.load(&plugin.name, &plugin.file)?;
    let pad = PinPad::open(&pad.port, Duration::from_millis(500))?;
    Ok(BankLink::new(
        acquirer.clone(),
        dialect,
        Arc::new(Mutex::new(pad)),
    ))
}

/// Whether the config names no hardware at all (then the kiosk runs in demo mode).
pub fn names_no_hardware(config: &KioskConfig) -> bool {
    let d = &config.devices;
    d.card_reader.is_none()
        && d.bank_card_reader.is_none()
        && d.cash_acceptor.is_none()
        && d.printer.is_none()
        && d.pinpad.is_none()
}

/// Opens the devices the config names. Bank cards are taken when it names an acquirer, a PIN
/// pad and a bank card reader.
pub fn devices(config: &KioskConfig) -> anyhow::Result<KioskDevices> {
    let missing = |what: &str, example: &str| {
        anyhow::anyhow!(
            "{} names no {what}: add `{example}` under [devices]",
            config.path.display()
        )
    };
    let d = &config.devices;
    let readers = Readers::establish()?;
    let card_reader = match &d.card_reader {
        Some(r) => r.reader.clone(),
        None => readers.pick(None)?,
    };
    let acceptor = d.cash_acceptor.as_ref().ok_or_else(|| {
        missing(
            "cash acceptor",
            "cash_acceptor = { port = \"/dev/ttyS1\", baud = 9600 }",
        )
    })?;
    let printer = d.printer.as_ref().ok_or_else(|| {
        missing(
            "printer",
            "printer = { port = \"/dev/ttyS2\", baud = 9600 }",
        )
    })?;
    let acceptor = Id003Acceptor::open(&acceptor.port, acceptor.baud.0, Id003Settings::default())?;
    let printer = EscPosPrinter::open(&printer.port, printer.baud.0)?;
    let bank_reader = d.bank_card_reader.as_ref().map(|r| r.reader.clone());
    let bank = match (&config.acquirer, &bank_reader) {
        (Some(_), Some(_)) => Some(bank_link(config)?),
        _ => None,
    };
    Ok(KioskDevices {
        readers,
        card_reader,
        bank_reader,
        acceptor: Box::new(acceptor),
        printer: Box::new(printer),
        bank,
    })
}

/// Starts the kiosk the config describes; `changed` hears every change to what it shows.
pub fn start(
    config: &KioskConfig,
    timeouts: Timeouts,
    changed: impl Fn() + Send + Sync + 'static,
) -> anyhow::Result<Kiosk> {
    let engine = sale_engine(config)?;
    let devices = devices(config)?;
    let mut kiosk = Kiosk::start(config.clone(), engine, devices, timeouts, changed);
    // Paired with a fleet, the kiosk reports to it; a sale never waits for it, and a kiosk
    // whose fleet files are damaged still sells (the fault is logged).
    match FleetLink::load(&config.kiosk.data_dir) {
        Ok(Some(link)) => {
            if let Err(e) = kiosk.report_to(link, config.policy.fleet_heartbeat) {
                tracing::error!("the fleet link did not start: {e}");
            }
        }
        Ok(None) => {}
        Err(e) => tracing::error!("not reporting to the fleet: {e}"),
    }
    Ok(kiosk)
}
