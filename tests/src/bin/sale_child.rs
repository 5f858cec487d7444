//! `selfvend-sale-child`: the kiosk as a process of its own for the crash tests. It recovers
//! what its journal shows unfinished, then (unless `--recover-only`) sells `--fen` to the card
//! in `--reader`; or, with `--clear-period N`, clears the kiosk until period N is closed (the
//! operator PIN on stdin), counting `--fen` in the cash box; or, with `--settle`, settles the
//! bank batch. With `--bank-reader R` it pays by the bank card in reader R instead of cash, with
//! the PIN the customer types on the config's PIN pad, through the config's acquirer, and the
//! customer takes `--dawdle-ms` to take the bank card back after the debit. `--fleet-sync` sends
//! the fleet a heartbeat and the journal rows it lacks, and nothing else. With
//! `SELFVEND_KILL_AT=<failpoint>` it kills itself with SIGKILL there. With `--bill-account N
//! --utility U` it pays `--fen` of account N's bills instead of selling (by bank card with
//! `--bank-reader`). `--config-text F` reads
//! the config's text from F as if it were the file `--config` names (relative paths resolve
//! beside that file): how `selfvend bench soak` hands over the demo config as it runs it.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use selfvend_host::backend::Purchase;
use selfvend_host::bank_card;
use selfvend_host::card_reader::Readers;
use selfvend_host::clearing;
use selfvend_host::config::{AcquirerEntry, KioskConfig, PluginRole};
use selfvend_host::escpos::EscPosPrinter;
use selfvend_host::id003::{Id003Acceptor, Id003Settings};
use selfvend_host::journal::Journal;
use selfvend_host::money::Fen;
use selfvend_host::pin_pad::{PinBlock, PinEntry, PinPad};
use selfvend_host::plugin::trust::TrustStore;
use selfvend_host::plugin::{Plugin, PluginRuntime, SharedCard};
use selfvend_host::sale::{BankLink, CardPayment, SaleEngine};

struct Args {
    config: PathBuf,
    config_text: Option<PathBuf>,
    reader: String,
    validator: PathBuf,
    printer: PathBuf,
    fen: u64,
    recover_only: bool,
    clear_period: Option<i64>,
    bank_reader: Option<String>,
    settle: bool,
    bill_account: Option<String>,
    utility: String,
    /// How long the customer takes to take their bank card back after its debit.
    dawdle: Duration,
    fleet_sync: bool,
}

fn args() -> Option<Args> {
    let mut a = std::env::args().skip(1);
    let mut out = Args {
        config: PathBuf::new(),
        config_text: None,
        reader: String::new(),
        validator: PathBuf::new(),
        printer: PathBuf::new(),
        fen: 0,
        recover_only: false,
        clear_period: None,
        bank_reader: None,
        settle: false,
        bill_account: None,
        utility: String::new(),
        dawdle: Duration::ZERO,
        fleet_sync: false,
    };
    while let Some(flag) = a.next() {
        match flag.as_str() {
            "--config" => out.config = a.next()?.into(),
            "--config-text" => out.config_text = Some(a.next()?.into()),
            "--reader" => out.reader = a.next()?,
            "--validator" => out.validator = a.next()?.into(),
            "--printer" => out.printer = a.next()?.into(),
            "--fen" => out.fen = a.next()?.parse().ok()?,
            "--recover-only" => out.recover_only = true,
            "--clear-period" => out.clear_period = Some(a.next()?.parse().ok()?),
            "--bank-reader" => out.bank_reader = Some(a.next()?),
            "--settle" => out.settle = true,
            "--bill-account" => out.bill_account = Some(a.next()?),
            "--utility" => out.utility = a.next()?,
            "--dawdle-ms" => out.dawdle = Duration::from_millis(a.next()?.parse().ok()?),
            "--fleet-sync" => out.fleet_sync = true,
            _ => return None,
        }
    }
    Some(out)
}

fn main() -> ExitCode {
    let Some(args) = args() else {
        eprintln!(
            "usage: selfvend-sale-child --config F [--config-text F] --reader R --validator P \
             --printer P --fen N [--recover-only | --clear-period N | --bank-reader R \
             [--dawdle-ms MS] | --settle | --bill-account N --utility U]"
        );
        return ExitCode::FAILURE;
    };
    let scenario = fail::FailScenario::setup();
    selfvend_tests::kill_at_failpoint_from_env();
    let result = run(&args);
    scenario.teardown();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("selfvend-sale-child: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Result<(), Box<dyn std::error::Error>> {
    let config = match &args.config_text {
        Some(text) => KioskConfig::parse(&args.config, &std::fs::read_to_string(text)?)?,
        None => KioskConfig::load(&args.config)?,
    };
    if args.fleet_sync {
        let link = selfvend_host::fleet::FleetLink::load(&config.kiosk.data_dir)?
            .ok_or("--fleet-sync: the kiosk is not paired")?;
        let beat = selfvend_host::fleet_wire::Heartbeat {
            screen: "attract".into(),
            screen_secs: 0,
            money_in_fen: 0,
            devices: Vec::new(),
            cash_box: Default::default(),
            open_items: 0,
            items: Vec::new(),
            period: Default::default(),
            software_version: "sale-child".into(),
            plugins: Vec::new(),
            journal_head: 0,
            rollouts: Vec::new(),
            commands_done: Vec::new(),
            config: None,
        };
        link.sync(&beat)?;
        return Ok(());
    }
    let runtime = PluginRuntime::new(
        TrustStore::load(&config.trust_dir)?,
        &config.plugin_cache_dir(),
        config.plugin_limits.clone(),
    )?;
    let load = |role: PluginRole| -> Result<Vec<Plugin>, Box<dyn std::error::Error>> {
        let mut out = Vec::new();
        for p in config.plugins.iter().filter(|p| p.role == role) {
            out.push(runtime.load(&p.name, &p.file)?);
        }
        Ok(out)
    };
    let journal = Journal::open(&config.kiosk.data_dir.join("journal.sqlite"))?;
    let mut engine = SaleEngine::new(
        &config,
        journal,
        load(PluginRole::CardCodec)?,
        load(PluginRole::BackendDialect)?,
    );
    engine.recover()?;
    let link = match &config.acquirer {
        Some(acquirer) => Some(bank_link(&config, acquirer, &runtime)?),
        None => None,
    };
    if let Some(link) = &link {
        engine.recover_debits(link)?;
        if engine.signed_on()?.is_none() {
            engine.sign_on(link)?;
        }
    }
    engine.resell()?;
    if args.settle {
        let link = link
            .as_ref()
            .ok_or("--settle needs an [acquirer] in the config")?;
        engine.settle(link)?;
        return Ok(());
    }
    if let Some(period) = args.clear_period {
        drop(engine);
        return clear(
            &config,
            load(PluginRole::BackendDialect)?,
            period,
            Fen(args.fen),
        );
    }
    if let Some(account) = &args.bill_account {
        if args.recover_only {
            return Ok(());
        }
        return pay_bill(&mut engine, args, account, link.as_ref());
    }
    let readers = Readers::establish()?;
    // As the kiosk does: a card is connected to once the reader reports it (pcscd may still
    // be settling a card pulled and inserted just before this process started).
    let present = |reader: &str| readers.wait(reader, true, Some(Duration::from_secs(5)));
    present(&args.reader)?;
    let card: SharedCard = Arc::new(Mutex::new(readers.connect(&args.reader)?));
    // Starting a session writes any grant still owed to this card.
    let mut session = engine.start(card)?;
    if args.recover_only {
        return Ok(());
    }
    let mut acceptor = Id003Acceptor::open(
        Path::new(&args.validator),
        9600,
        Id003Settings {
            reply_timeout: Duration::from_millis(500),
            poll_interval: Duration::from_millis(1),
        },
    )?;
    let mut printer = EscPosPrinter::open(&args.printer, 9600)?;
    engine.quote(&mut session, Purchase::Money(Fen(args.fen)))?;
    match (&args.bank_reader, &link) {
        (Some(reader), Some(link)) => {
            present(reader)?;
            let bank_card = bank_card::read(&mut readers.connect(reader)?)?;
            let pin = customer_pin(link, &bank_card)?;
            match engine.pay_by_card(&mut session, link, &bank_card, Some(&pin))? {
                CardPayment::Approved { .. } => std::thread::sleep(args.dawdle),
                CardPayment::Declined(d) => return Err(format!("declined: {}", d.message).into()),
            }
        }
        (Some(_), None) => return Err("--bank-reader needs an [acquirer] in the config".into()),
        (None, _) => {
            // Nothing paid (the only note jammed, say): the customer's payment is cancelled.
            if engine.take_cash(&mut session, &mut acceptor, Duration::from_secs(5))? == Fen(0) {
                engine.cancel(session, &mut printer)?;
                return Ok(());
            }
        }
    }
    engine.complete(&mut session, &mut printer)?;
    Ok(())
}

/// Pays `--fen` of `account`'s bills in cash, or by the bank card in `--bank-reader`, as a
/// customer at the kiosk would.
fn pay_bill(
    engine: &mut SaleEngine,
    args: &Args,
    account: &str,
    link: Option<&BankLink>,
) -> Result<(), Box<dyn std::error::Error>> {
    let mut printer = EscPosPrinter::open(&args.printer, 9600)?;
    let mut s = engine.start_bill(account, &args.utility)?;
    engine.choose_bill_amount(&mut s, Fen(args.fen))?;
    match (&args.bank_reader, link) {
        (Some(reader), Some(link)) => {
            let readers = Readers::establish()?;
            readers.wait(reader, true, Some(Duration::from_secs(5)))?;
            let bank_card = bank_card::read(&mut readers.connect(reader)?)?;
            let pin = customer_pin(link, &bank_card)?;
            match engine.pay_bill_by_card(&mut s, link, &bank_card, Some(&pin))? {
                CardPayment::Approved { .. } => std::thread::sleep(args.dawdle),
                CardPayment::Declined(d) => return Err(format!("declined: {}", d.message).into()),
            }
        }
        (Some(_), None) => return Err("--bank-reader needs an [acquirer] in the config".into()),
        (None, _) => {
            let mut acceptor = Id003Acceptor::open(
                Path::new(&args.validator),
                9600,
                Id003Settings {
                    reply_timeout: Duration::from_millis(500),
                    poll_interval: Duration::from_millis(1),
                },
            )?;
            let paid = engine.take_bill_cash(
                &mut s,
                &mut acceptor,
                Duration::from_secs(5),
                &mut |_| true,
            )?;
            if paid == Fen(0) {
                engine.cancel_bill(s, &mut printer)?;
                return Ok(());
            }
        }
    }
    engine.complete_bill(&mut s, &mut printer)?;
    Ok(())
}

/// The PIN block of what the customer types on the PIN pad for `card`.
fn customer_pin(
    link: &BankLink,
    card: &bank_card::BankCard,
) -> Result<PinBlock, Box<dyn std::error::Error>> {
    let entry = link
        .pin_pad()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get_pin(&card.pan, 4, 12, Duration::from_secs(30), &mut |_| {})?;
    match entry {
        PinEntry::Entered(pin) => Ok(pin),
        entry => Err(format!("no PIN was entered: {entry:?}").into()),
    }
}

/// The acquirer link of the config: its dialect plugin and the PIN pad it names.
fn bank_link(
    config: &KioskConfig,
    acquirer: &AcquirerEntry,
    runtime: &PluginRuntime,
) -> Result<BankLink, Box<dyn std::error::Error>> {
    let plugin = config
        .plugins
        .iter()
        .find(|p| p.name == acquirer.dialect)
        .ok_or("the acquirer's dialect plugin is not configured")?;
    let pad = config
        .devices
        .pinpad
        .as_ref()
        .ok_or("an [acquirer] needs a [devices.pinpad]")?;
    let pad = PinPad::open(&pad.port, Duration::from_millis(500))?;
    Ok(BankLink::new(
        acquirer.clone(),
        runtime.load(&plugin.name, &plugin.file)?,
        Arc::new(Mutex::new(pad)),
    ))
}

/// Clears the kiosk as an operator would, carrying on from wherever an earlier run stopped,
/// until `period` is closed.
fn clear(
    config: &KioskConfig,
    dialects: Vec<Plugin>,
    period: i64,
    counted: Fen,
) -> Result<(), Box<dyn std::error::Error>> {
    let mut pin = String::new();
    std::io::stdin().read_line(&mut pin)?;
    let pin = pin.trim_end();
    let mut journal = Journal::open(&config.kiosk.data_dir.join("journal.sqlite"))?;
    if journal.period(period)?.is_some_and(|p| p.state == "closed") {
        return Ok(());
    }
    if journal.current_period()?.state == "open" {
        clearing::start(&mut journal, config, pin)?;
    }
    clearing::box_removed(&mut journal)?;
    clearing::count(&mut journal, counted)?;
    clearing::box_replaced(&mut journal)?;
    clearing::end(&mut journal, config, pin, None, &dialects)?;
    Ok(())
}
