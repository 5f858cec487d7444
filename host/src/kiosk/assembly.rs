//! The kiosk assembled from its config: the journal, the sale engine with every plugin the
//! config names (each the build a rollout installed, if one did), the devices, and the running
//! kiosk over them, reporting to its fleet when paired. `selfvend kiosk` and the tests' kiosk
//! processes start the kiosk through here, so both run the same assembly.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{Kiosk, KioskDevices, Timeouts};
use crate::card_reader::{ReaderError, Readers};
use crate::cash_acceptor::CashError;
use crate::config::{KioskConfig, PluginRole};
use crate::escpos::EscPosPrinter;
use crate::fleet::FleetLink;
use crate::id003::{Id003Acceptor, Id003Settings};
use crate::journal::{Journal, JournalError};
use crate::pin_pad::{PinPad, PinPadError};
use crate::plugin::installed::Installed;
use crate::plugin::trust::TrustError;
use crate::plugin::{Plugin, PluginError, PluginRuntime};
use crate::receipt_printer::PrinterError;
use crate::sale::{BankLink, SaleEngine};

/// Why the kiosk could not be assembled.
#[derive(Debug, thiserror::Error)]
pub enum AssemblyError {
    /// The config lacks what the kiosk needs, in words that say what to add.
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Trust(#[from] TrustError),
    #[error(transparent)]
    Plugin(#[from] PluginError),
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error("{path}: {cause}")]
    DataDir {
        path: std::path::PathBuf,
        cause: std::io::Error,
    },
    #[error(transparent)]
    Reader(#[from] ReaderError),
    #[error(transparent)]
    Acceptor(#[from] CashError),
    #[error(transparent)]
    Printer(#[from] PrinterError),
    #[error(transparent)]
    PinPad(#[from] PinPadError),
}

/// The plugin runtime over the config's trust store (with the endorsements the fleet carried
/// that the kiosk's roots signed), cache and limits.
pub fn runtime(config: &KioskConfig) -> Result<PluginRuntime, AssemblyError> {
    Ok(PluginRuntime::new(
        crate::rollout::trust_store(config)?,
        &config.plugin_cache_dir(),
        config.plugin_limits.clone(),
    )?)
}

/// The journal file in the config's data directory, created with it when missing.
pub fn journal(config: &KioskConfig) -> Result<Journal, AssemblyError> {
    let dir = &config.kiosk.data_dir;
    std::fs::create_dir_all(dir).map_err(|cause| AssemblyError::DataDir {
        path: dir.clone(),
        cause,
    })?;
    Ok(Journal::open(&dir.join("journal.sqlite"))?)
}

/// The sale engine over the config's journal, with its codecs and dialects loaded.
pub fn sale_engine(config: &KioskConfig) -> Result<SaleEngine, AssemblyError> {
    let runtime = runtime(config)?;
    let installed = Installed::new(&config.kiosk.data_dir);
    let load = |role: PluginRole| -> Result<Vec<Plugin>, AssemblyError> {
        config
            .plugins
            .iter()
            .filter(|p| p.role == role)
            .map(|p| Ok(installed.load(&runtime, p)?))
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
pub fn bank_link(config: &KioskConfig) -> Result<BankLink, AssemblyError> {
    let missing = |what: String| AssemblyError::Config(format!("{}{what}", config.path.display()));
    let acquirer = config
        .acquirer
        .as_ref()
        .ok_or_else(|| missing(" has no [acquirer]: this kiosk takes cash only".into()))?;
    let pad = config.devices.pinpad.as_ref().ok_or_else(|| {
        missing(" has no [devices.pinpad]: the acquirer's keys live in the PIN pad".into())
    })?;
    let plugin = config
        .plugins
        .iter()
        .find(|p| p.name == acquirer.dialect)
        .ok_or_else(|| {
            missing(format!(
                ": the acquirer's dialect plugin `{}` is not configured",
                acquirer.dialect
            ))
        })?;
    let dialect = Installed::new(&config.kiosk.data_dir).load(&runtime(config)?, plugin)?;
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
pub fn devices(config: &KioskConfig) -> Result<KioskDevices, AssemblyError> {
    let missing = |what: &str, example: &str| {
        AssemblyError::Config(format!(
            "{} names no {what}: add `{example}` under [devices]",
            config.path.display()
        ))
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
) -> Result<Kiosk, AssemblyError> {
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
