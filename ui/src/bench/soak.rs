//! `selfvend bench soak`: a whole kiosk on the real rigs (virtual cards behind pcscd, the
//! validator, printer and PIN pad on ptys, a reference backend per utility and the acquirer on
//! loopback) through many customers, each with a seeded random purchase and a seeded fault, then
//! the money rules checked across the independent ledgers: the validator's cash box, the
//! acquirer's books, the backends' books, the cards, the meters and the journal.
//!
//! A crash runs that customer's sale in a kiosk process of its own (`selfvend-sale-child`, built
//! with failpoints beside `selfvend`), kills it with SIGKILL at a seeded failpoint, and starts
//! the kiosk again over the same journal and devices.

use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use selfvend_host::backend::Purchase;
use selfvend_host::bank_card;
use selfvend_host::card_reader::Readers;
use selfvend_host::config::KioskConfig;
use selfvend_host::escpos::EscPosPrinter;
use selfvend_host::id003::{Id003Acceptor, Id003Settings};
use selfvend_host::money::{Fen, Wh};
use selfvend_host::pin_pad::PinEntry;
use selfvend_host::plugin::SharedCard;
use selfvend_host::sale::{BankLink, CardPayment, CashSession, Resolution, SaleEngine};
use selfvend_sim::acquirer::{Fault as AcquirerFault, MessageType};
use selfvend_sim::encryption_machine::EncryptionMachine;
use selfvend_sim::id003_validator::Action;
use selfvend_sim::meter::{Meter, MeterInsert};
use selfvend_sim::pin_pad::PadAction;
use selfvend_sim::reference_backend::{Call, Fault};
use selfvend_sim::sle4442;
use selfvend_sim::vpcd::lock;
use selfvend_ui::demo::{BANK_READER, DEMO_PAN, DEMO_PIN, Demo, METER_READER, MeterCard};

/// The demo's cards a customer may bring: 张三's memory card and 陈小明's CPU card.
const CARDS: [usize; 2] = [0, 3];
/// The acquirer's opening balance of the demo bank card.
const BANK_BALANCE_FEN: u64 = 100_000_000;

/// One fault a customer meets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum FaultClass {
    None,
    BackendReply,
    CardTorn,
    ValidatorGlitch,
    Jam,
    PowerCycle,
    PaperOut,
    AcquirerReply,
    Crash,
    OperatorRace,
}

/// The faults a customer paying cash may meet.
const CASH_CLASSES: [FaultClass; 9] = [
    FaultClass::None,
    FaultClass::BackendReply,
    FaultClass::CardTorn,
    FaultClass::ValidatorGlitch,
    FaultClass::Jam,
    FaultClass::PowerCycle,
    FaultClass::PaperOut,
    FaultClass::Crash,
    FaultClass::OperatorRace,
];

/// The faults a customer paying by bank card may meet.
const BANK_CLASSES: [FaultClass; 7] = [
    FaultClass::None,
    FaultClass::BackendReply,
    FaultClass::CardTorn,
    FaultClass::PaperOut,
    FaultClass::AcquirerReply,
    FaultClass::Crash,
    FaultClass::OperatorRace,
];

/// Where a crash may kill the kiosk: every failpoint of a sale, a payment and the bank link
/// (the kiosk process also recovers, re-sells and signs on before it sells).
const KILL_POINTS: [&str; 21] = [
    "sale.after-payment-opened",
    "sale.after-banknote-escrowed",
    "sale.after-banknote-credited",
    "sale.after-banknote-caught",
    "sale.after-sale-intent",
    "sale.after-sale-sent",
    "sale.after-grant-recorded",
    "sale.after-refusal-recorded",
    "sale.after-card-write-intent",
    "sale.after-card-written",
    "sale.after-confirm-intent",
    "sale.after-receipt-intent",
    "sale.after-cancel",
    "sale.after-resell-attempt",
    "sale.after-resell-answer",
    "bank.after-debit-intent",
    "bank.after-debit-approved",
    "bank.before-reversal-sent",
    "bank.after-reversal-answer",
    "bank.after-sign-on",
    "bank.after-settlement",
];

/// A small seeded generator (SplitMix64): the same seed gives the same customers.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// The kiosk itself: its engine over the journal and the devices it holds open.
struct Station {
    engine: SaleEngine,
    link: BankLink,
    acceptor: Id003Acceptor,
    printer: EscPosPrinter,
}

impl Station {
    fn open(config: &KioskConfig, demo: &Demo) -> anyhow::Result<Station> {
        Ok(Station {
            engine: selfvend_ui::kiosk::sale_engine(config)?,
            link: selfvend_ui::kiosk::bank_link(config)?,
            acceptor: Id003Acceptor::open(
                Path::new(demo.validator.path()),
                9600,
                Id003Settings {
                    reply_timeout: Duration::from_millis(500),
                    poll_interval: Duration::from_millis(1),
                },
            )?,
            printer: EscPosPrinter::open(Path::new(demo.printer.path()), 9600)?,
        })
    }
}

/// What became of the kiosk processes a crash started.
#[derive(Default)]
struct Kills {
    /// Failpoints a kiosk process was killed at, and how often.
    at: BTreeMap<&'static str, u64>,
    /// Processes that sold without reaching their failpoint.
    finished: u64,
    /// Processes that stopped with an error of their own (a decline, a fault), and the first.
    failed: u64,
    first_failure: Option<String>,
}

/// The kiosk under test: its engine, devices and the simulators around it.
struct Soak {
    config: KioskConfig,
    /// The demo config as a kiosk process reads it (`selfvend-sale-child --config-text`).
    config_path: PathBuf,
    child_config: tempfile::NamedTempFile,
    child_bin: PathBuf,
    demo: Demo,
    /// The kiosk; `None` while a kiosk process of its own holds the devices.
    station: Option<Station>,
    readers: Readers,
    kills: Kills,
    /// Each card's meter at home, and the credits it refused (a credit taken twice would be).
    meters: [Meter; 2],
    refused_by_meter: u64,
}

impl Soak {
    fn start(config_path: &Path, vpcd_port: u16) -> anyhow::Result<Soak> {
        let child_bin = std::env::current_exe()?.with_file_name("selfvend-sale-child");
        if !child_bin.exists() {
            anyhow::bail!(
                "{} is missing: the soak kills a kiosk process built with failpoints; run it as \
                 `./dev run bench soak`, which builds it",
                child_bin.display()
            );
        }
        let mut config = KioskConfig::load(config_path)?;
        let demo = Demo::start(&mut config, vpcd_port)?;
        demo.acquirer.add_card(DEMO_PAN, DEMO_PIN, BANK_BALANCE_FEN);
        // The soak's kiosk and its kiosk processes read one config: the demo's, as run.
        let text = demo_config_text(config_path, &config)?;
        let mut child_config = tempfile::NamedTempFile::new()?;
        std::io::Write::write_all(&mut child_config, text.as_bytes())?;
        let config = KioskConfig::parse(config_path, &text)?;
        let station = Station::open(&config, &demo)?;
        let machine = EncryptionMachine::default();
        let meters = [
            Meter::new("M3701000001", machine.clone()),
            Meter::new("M4401000001", machine),
        ];
        Ok(Soak {
            config,
            config_path: config_path.to_path_buf(),
            child_config,
            child_bin,
            demo,
            station: Some(station),
            readers: Readers::establish()?,
            kills: Kills::default(),
            meters,
            refused_by_meter: 0,
        })
    }

    /// The customer goes home and puts the card into the meter, which takes a new credit once.
    fn carry_home(&mut self, card: usize) {
        let meter = &mut self.meters[usize::from(card == 3)];
        let taken = match &self.demo.cards[card].1 {
            MeterCard::Memory(c) => meter.insert_hengtai(&mut lock(c)),
            MeterCard::Cpu(c) => meter.insert_lanling(&mut lock(c)),
        };
        if let MeterInsert::Refused(_) = taken {
            self.refused_by_meter += 1;
        }
    }

    /// Why a card carries, or a meter took, more credits than its backend sold, if one does.
    fn overcredited(&self) -> Option<String> {
        CARDS.into_iter().enumerate().find_map(|(i, card)| {
            let serial = ["3701000000000001", "4401000000000001"][i];
            let books = u64::from(
                self.demo.backends[i]
                    .ledger()
                    .card_purchase_count(serial)
                    .unwrap_or(0),
            );
            let (on_card, taken) = (self.on_card(card), u64::from(self.meters[i].taken_count));
            (on_card > books || taken > books || self.refused_by_meter > 0).then(|| {
                format!(
                    "{}: the backend sold {books}, the card carries {on_card}, the meter took \
                     {taken}, the meter refused {}",
                    self.demo.cards[card].0, self.refused_by_meter
                )
            })
        })
    }

    /// The purchase count card `card` carries.
    fn on_card(&self, card: usize) -> u64 {
        match &self.demo.cards[card].1 {
            MeterCard::Memory(c) => {
                sle4442::ht01::current(&lock(c)).map_or(0, |(_, s)| u64::from(s.purchase_count))
            }
            MeterCard::Cpu(c) => {
                let w = lock(c).wallet;
                u64::from(u32::from_be_bytes([w[0], w[1], w[2], w[3]]))
            }
        }
    }

    /// The kiosk, running.
    fn station(&mut self) -> &mut Station {
        self.station
            .as_mut()
            .expect("the kiosk runs between kiosk processes")
    }

    /// The kiosk starts again over its journal and devices, and recovers.
    fn restart(&mut self) -> anyhow::Result<()> {
        self.station = None;
        self.station = Some(Station::open(&self.config, &self.demo)?);
        self.housekeeping();
        Ok(())
    }

    /// What the kiosk does between customers; failures are tried again next time.
    fn housekeeping(&mut self) {
        let k = self.station();
        let _ = k.engine.recover();
        let _ = k.engine.resell();
        let _ = k.engine.recover_debits(&k.link);
        if matches!(k.engine.signed_on(), Ok(None)) {
            let _ = k.engine.sign_on(&k.link);
        }
    }

    /// The meter card in the reader, once pcscd sees it.
    fn meter_card(&self) -> anyhow::Result<SharedCard> {
        self.seen(METER_READER, true)?;
        Ok(std::sync::Arc::new(std::sync::Mutex::new(
            self.readers.connect(METER_READER)?,
        )))
    }

    /// Waits until pcscd sees a card in `reader` (or sees it gone).
    fn seen(&self, reader: &str, present: bool) -> anyhow::Result<()> {
        if !self
            .readers
            .wait(reader, present, Some(Duration::from_secs(10)))?
        {
            anyhow::bail!("pcscd did not see the card in `{reader}` come or go");
        }
        Ok(())
    }

    /// One customer with card `card`, paying `fen` by cash or bank card, meeting `fault`.
    fn customer(
        &mut self,
        rng: &mut Rng,
        card: usize,
        fen: u64,
        by_kwh: bool,
        bank: bool,
        fault: FaultClass,
    ) -> anyhow::Result<()> {
        self.demo.insert_meter_card(card)?;
        if fault == FaultClass::Crash {
            let point = KILL_POINTS[rng.below(KILL_POINTS.len() as u64) as usize];
            self.killed_mid_sale(point, fen, bank)?;
        } else {
            self.served(rng, card, fen, by_kwh, bank, fault)?;
        }
        // The customer takes back the notes they did not get to insert, and leaves.
        self.demo.validator.walk_away();
        self.demo.pad.walk_away();
        self.demo.pull_bank_card();
        self.seen(BANK_READER, false)?;
        self.demo.pull_meter_card();
        self.seen(METER_READER, false)?;
        self.carry_home(card);
        if fault == FaultClass::Jam {
            // An operator comes and clears the validator.
            self.demo.validator.act(Action::Clear);
        }
        self.demo.printer.paper_in();
        self.demo.printer.take_printed();
        self.housekeeping();
        Ok(())
    }

    /// The kiosk serves the customer at the meter card's reader, meeting `fault` on the way.
    fn served(
        &mut self,
        rng: &mut Rng,
        card: usize,
        fen: u64,
        by_kwh: bool,
        bank: bool,
        fault: FaultClass,
    ) -> anyhow::Result<()> {
        let backend = usize::from(card == 3);
        match fault {
            FaultClass::BackendReply => {
                let call =
                    [Call::Sale, Call::ConfirmWrite, Call::SaleStatus][rng.below(3) as usize];
                let fault = [
                    Fault::DropReply,
                    Fault::Garbage,
                    Fault::Truncate,
                    Fault::ReplyTwice,
                ][rng.below(4) as usize];
                self.demo.backends[backend].inject(call, fault);
            }
            FaultClass::ValidatorGlitch => {
                let glitch =
                    [Action::Garbage, Action::BadCrc, Action::LoseNextAck][rng.below(3) as usize];
                self.demo.validator.act(glitch);
            }
            FaultClass::PaperOut => self.demo.printer.paper_out_after(rng.below(6) as usize),
            FaultClass::AcquirerReply => {
                let fault = [
                    AcquirerFault::DropReply,
                    AcquirerFault::Garbage,
                    AcquirerFault::Truncate,
                ][rng.below(3) as usize];
                let message = [MessageType::Purchase, MessageType::Reversal][rng.below(2) as usize];
                self.demo.acquirer.inject(message, fault);
            }
            _ => {}
        }
        let meter_card = self.meter_card()?;
        let k = self.station.as_mut().expect("the kiosk runs");
        let Ok(mut s) = k.engine.start(meter_card) else {
            return Ok(());
        };
        let purchase = if by_kwh {
            let price = u64::from(s.account.price_fen_per_kwh.max(1));
            Purchase::Energy(Wh(fen * 1000 / price))
        } else {
            Purchase::Money(Fen(fen))
        };
        let Ok(quote) = k.engine.quote(&mut s, purchase) else {
            let _ = k.engine.cancel(s, &mut k.printer);
            return Ok(());
        };
        if bank {
            if !self.pay_by_card(&mut s)? {
                let k = self.station();
                let _ = k.engine.cancel(s, &mut k.printer);
                return Ok(());
            }
        } else {
            // Whole yuan notes to the amount due (a rest below 1 yuan is not paid); a jam or a
            // power cut strikes one of them.
            let mut notes: Vec<Action> = notes_for(quote.amount.0 / 100)
                .into_iter()
                .map(Action::Insert)
                .collect();
            let i = rng.below(notes.len() as u64) as usize;
            let Action::Insert(yuan) = notes[i] else {
                unreachable!("every note is an insertion")
            };
            match fault {
                FaultClass::Jam if rng.below(2) == 0 => notes[i] = Action::JamInStacker(yuan),
                FaultClass::Jam => notes.insert(i, Action::JamInAcceptor),
                FaultClass::PowerCycle => {
                    notes[i] = [
                        Action::PowerCycleWithBillInAcceptor(yuan),
                        Action::PowerCycleWithBillInStacker(yuan),
                        Action::PowerCycleAsBillReachesBox(yuan),
                    ][rng.below(3) as usize];
                }
                _ => {}
            }
            for note in notes {
                self.demo.validator.act(note);
            }
            let k = self.station();
            let _ = k
                .engine
                .take_cash(&mut s, &mut k.acceptor, Duration::from_secs(3));
        }
        if fault == FaultClass::CardTorn {
            self.demo.tear_next_write();
        }
        if fault == FaultClass::OperatorRace {
            self.operator_settles_everything()?;
        }
        let k = self.station();
        if s.paid() > Fen(0) {
            let _ = k.engine.complete(&mut s, &mut k.printer);
        } else {
            let _ = k.engine.cancel(s, &mut k.printer);
        }
        Ok(())
    }

    /// The bank card, its PIN on the pad, the debit; returns whether it was approved.
    fn pay_by_card(&mut self, s: &mut CashSession) -> anyhow::Result<bool> {
        self.demo.insert_bank_card()?;
        self.seen(BANK_READER, true)?;
        let card = bank_card::read(&mut self.readers.connect(BANK_READER)?)?;
        self.demo.pad.act(&PadAction::pin(DEMO_PIN));
        let k = self.station.as_mut().expect("the kiosk runs");
        let entry = k
            .link
            .pin_pad()
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_pin(&card.pan, 4, 12, Duration::from_secs(10), &mut |_| {})?;
        let approved = match entry {
            PinEntry::Entered(block) => matches!(
                k.engine.pay_by_card(s, &k.link, &card, Some(&block)),
                Ok(CardPayment::Approved { .. })
            ),
            _ => false,
        };
        Ok(approved)
    }

    /// The kiosk, a process of its own, serves this customer (`fen` by cash or bank card) and
    /// is killed with SIGKILL at `point` if it gets there; then the kiosk starts again.
    fn killed_mid_sale(&mut self, point: &'static str, fen: u64, bank: bool) -> anyhow::Result<()> {
        self.seen(METER_READER, true)?;
        // The kiosk process takes the devices over, as a restarted kiosk would.
        self.station = None;
        let mut child = Command::new(&self.child_bin);
        child
            .arg("--config")
            .arg(&self.config_path)
            .arg("--config-text")
            .arg(self.child_config.path())
            .args(["--reader", METER_READER])
            .args(["--validator", self.demo.validator.path()])
            .args(["--printer", self.demo.printer.path()])
            .args(["--fen", &fen.to_string()])
            .env("SELFVEND_KILL_AT", point)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if bank {
            self.demo.insert_bank_card()?;
            self.seen(BANK_READER, true)?;
            self.demo.pad.act(&PadAction::pin(DEMO_PIN));
            child.args(["--bank-reader", BANK_READER]);
        } else {
            for yuan in notes_for(fen / 100) {
                self.demo.validator.act(Action::Insert(yuan));
            }
        }
        let mut running = child
            .spawn()
            .with_context(|| format!("starting {}", self.child_bin.display()))?;
        let deadline = Instant::now() + Duration::from_secs(120);
        let status = loop {
            if let Some(status) = running.try_wait()? {
                break status;
            }
            if Instant::now() > deadline {
                let _ = running.kill();
                anyhow::bail!("the kiosk process to be killed at `{point}` ran for 2 minutes");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        if std::env::var_os("SELFVEND_SOAK_TRACE").is_some() {
            println!("  kiosk process to be killed at {point}: {status}");
        }
        if status.signal() == Some(9) {
            *self.kills.at.entry(point).or_default() += 1;
        } else if status.success() {
            self.kills.finished += 1;
        } else {
            self.kills.failed += 1;
            if self.kills.first_failure.is_none() {
                let mut why = String::new();
                if let Some(mut err) = running.stderr.take() {
                    std::io::Read::read_to_string(&mut err, &mut why)?;
                }
                self.kills.first_failure = Some(why.trim().to_string());
            }
        }
        self.restart()
    }

    /// An operator's CLI, beside the running kiosk, settles every open item it can.
    fn operator_settles_everything(&mut self) -> anyhow::Result<()> {
        let mut cli = selfvend_ui::kiosk::sale_engine(&self.config)?;
        for item in cli.journal().manual_items(false)? {
            let resolutions = cli.resolutions(&item)?;
            // A banknote the operator finds in the box is paid back; a sale refused or never
            // made is refunded; anything else is re-sold by hand or closed.
            let chosen = [Resolution::Refund, Resolution::Resell, Resolution::Dismiss]
                .into_iter()
                .find(|r| resolutions.contains(r));
            if let Some(resolution) = chosen {
                let _ = cli.resolve_manual(item.id, resolution, "soak operator");
            }
        }
        Ok(())
    }

    /// After the last customer: the backends and acquirer behave, the kiosk finishes what it
    /// can, each card comes back once (re-writes), each meter takes its card's credit, and an
    /// operator settles what is left.
    fn wind_down(&mut self) -> anyhow::Result<()> {
        for backend in &self.demo.backends {
            backend.clear_faults();
        }
        self.demo.acquirer.clear_faults();
        self.demo.printer.paper_in();
        for _ in 0..3 {
            self.housekeeping();
            let k = self.station();
            let _ = k.engine.forward_reversals(&k.link);
            let _ = k.engine.retry_confirmations();
        }
        for card in CARDS {
            self.demo.insert_meter_card(card)?;
            let meter_card = self.meter_card()?;
            let k = self.station();
            if let Ok(s) = k.engine.start(meter_card) {
                let _ = k.engine.cancel(s, &mut k.printer);
            }
            self.demo.pull_meter_card();
            self.seen(METER_READER, false)?;
            self.carry_home(card);
        }
        let _ = self.station().engine.retry_confirmations();
        self.operator_settles_everything()?;
        self.housekeeping();
        Ok(())
    }
}

/// Whole yuan notes to `yuan`, largest first.
fn notes_for(mut yuan: u64) -> Vec<u32> {
    let mut notes = Vec::new();
    for note in [100, 50, 20, 10, 5, 1] {
        while yuan >= note {
            notes.push(note as u32);
            yuan -= note;
        }
    }
    notes
}

/// The text of the config at `path` as the soak runs it: the simulators' addresses and ports,
/// the demo's data directory, and re-sells without waiting ("no such sale" is proof once the
/// kiosk asks again).
fn demo_config_text(path: &Path, config: &KioskConfig) -> anyhow::Result<String> {
    use toml::{Table, Value};
    let text = std::fs::read_to_string(path)?;
    let mut doc: Table =
        toml::from_str(&text).with_context(|| format!("reading {}", path.display()))?;
    fn section<'a>(doc: &'a mut Table, name: &str) -> anyhow::Result<&'a mut Table> {
        doc.entry(name)
            .or_insert_with(|| Value::Table(Table::new()))
            .as_table_mut()
            .with_context(|| format!("[{name}] is not a table"))
    }
    let kiosk = section(&mut doc, "kiosk")?;
    // Absolute: the kiosk process resolves relative paths beside the config file.
    let dir = |p: &Path| {
        Value::String(
            std::path::absolute(p)
                .unwrap_or_else(|_| p.to_path_buf())
                .display()
                .to_string(),
        )
    };
    kiosk.insert("data_dir".into(), dir(&config.kiosk.data_dir));
    if let Some(cache) = &config.kiosk.plugin_cache {
        kiosk.insert("plugin_cache".into(), dir(cache));
    }
    let policy = section(&mut doc, "policy")?;
    policy.insert("resell_first_delay_secs".into(), Value::Integer(0));
    policy.insert("unknown_outcome_settle_secs".into(), Value::Integer(0));
    if let Some(acquirer) = &config.acquirer {
        section(&mut doc, "acquirer")?.insert(
            "address".into(),
            Value::String(acquirer.endpoint.address.clone()),
        );
    }
    let mut devices = Table::new();
    let reader = |name: &str| Value::Table(Table::from_iter([("reader".into(), name.into())]));
    let serial = |port: &Path, baud: u32| {
        Value::Table(Table::from_iter([
            ("port".into(), dir(port)),
            ("baud".into(), Value::Integer(i64::from(baud))),
        ]))
    };
    let d = &config.devices;
    if let Some(r) = &d.card_reader {
        devices.insert("card_reader".into(), reader(&r.reader));
    }
    if let Some(r) = &d.bank_card_reader {
        devices.insert("bank_card_reader".into(), reader(&r.reader));
    }
    for (name, port) in [
        ("cash_acceptor", &d.cash_acceptor),
        ("printer", &d.printer),
        ("pinpad", &d.pinpad),
    ] {
        if let Some(p) = port {
            devices.insert(name.into(), serial(&p.port, p.baud.0));
        }
    }
    doc.insert("devices".into(), Value::Table(devices));
    if let Some(Value::Array(backends)) = doc.get_mut("backend") {
        for (entry, backend) in backends.iter_mut().zip(&config.backends) {
            if let Some(entry) = entry.as_table_mut() {
                entry.insert(
                    "address".into(),
                    Value::String(backend.endpoint.address.clone()),
                );
            }
        }
    }
    Ok(toml::to_string(&doc)?)
}

/// What the soak found.
struct Findings {
    /// What went through: sales written and refunded, cash and bank money in.
    summary: String,
    lost_fen: i64,
    double_credits: u64,
    unresolved: u64,
    broken: Vec<String>,
}

/// The money in (the validator's cash box, the acquirer's net debits) and where the journal
/// says it went (sold, refunded, pending, owed on open items), in fen.
struct Money {
    cash_in: u64,
    bank_in: u64,
    sold: u64,
    refunded: u64,
    pending: u64,
    owed: u64,
}

impl Money {
    fn of(soak: &Soak, journal: &selfvend_host::journal::Journal) -> anyhow::Result<Money> {
        let tally = soak.demo.validator.tally();
        let bank_in = BANK_BALANCE_FEN
            - soak
                .demo
                .acquirer
                .balance(DEMO_PAN)
                .context("the demo bank card is on the acquirer's books")?;
        let sales = journal.sales(selfvend_host::sale::SALE_STATES, None)?;
        let paid = |sold: bool| -> u64 {
            sales
                .iter()
                .filter(|s| s.state != "refunded")
                .filter(|s| matches!(s.state.as_str(), "granted" | "written") == sold)
                .map(|s| s.paid_fen)
                .sum()
        };
        Ok(Money {
            cash_in: tally.cash_box.iter().map(|y| u64::from(*y) * 100).sum(),
            bank_in,
            sold: paid(true),
            refunded: (journal.counter("lifetime.refunded_fen")?
                + journal.counter("lifetime.caught_refunded_fen")?) as u64,
            pending: paid(false),
            owed: journal
                .manual_items(false)?
                .iter()
                .filter_map(|i| i.caught_fen)
                .sum(),
        })
    }

    /// Money in less money accounted for: 0 when nothing is lost or counted twice.
    fn lost(&self) -> i64 {
        (self.cash_in + self.bank_in) as i64
            - (self.sold + self.refunded + self.pending + self.owed) as i64
    }
}

fn check(soak: &Soak) -> anyhow::Result<Findings> {
    let journal = soak
        .station
        .as_ref()
        .expect("the kiosk runs after the last customer")
        .engine
        .journal();
    let mut broken = Vec::new();
    let money = Money::of(soak, journal)?;
    let lost_fen = money.lost();
    let Money {
        cash_in,
        bank_in,
        sold,
        refunded,
        pending,
        owed,
    } = money;
    if lost_fen != 0 {
        broken.push(format!(
            "conservation: cash box {cash_in} + bank {bank_in} fen in, but sold {sold} + \
             refunded {refunded} + pending {pending} + caught {owed} fen accounted"
        ));
    }
    let sales = journal.sales(selfvend_host::sale::SALE_STATES, None)?;
    let open_items = journal.manual_items(false)?;
    // One credit per sale: the backends' books, the cards and the meters agree.
    let mut double_credits = soak.refused_by_meter;
    for (i, card) in CARDS.into_iter().enumerate() {
        let name = &soak.demo.cards[card].0;
        let serial = ["3701000000000001", "4401000000000001"][i];
        let books = u64::from(
            soak.demo.backends[i]
                .ledger()
                .card_purchase_count(serial)
                .unwrap_or(0),
        );
        let on_card = soak.on_card(card);
        let taken = u64::from(soak.meters[i].taken_count);
        let written = sales
            .iter()
            .filter(|s| s.card_serial == serial && s.state == "written")
            .count() as u64;
        if on_card != books || taken != books || written != books {
            double_credits += on_card.max(taken).max(written).saturating_sub(books);
            broken.push(format!(
                "{name}: the backend sold {books}, the card carries {on_card}, the meter took \
                 {taken}, the journal wrote {written}"
            ));
        }
    }
    // Every sale final or with an operator; the chain whole.
    let unresolved = sales
        .iter()
        .filter(|s| !matches!(s.state.as_str(), "written" | "refunded"))
        .count() as u64
        + open_items.len() as u64;
    if unresolved > 0 {
        broken.push(format!(
            "unresolved: {} sales not final, {} items open",
            unresolved - open_items.len() as u64,
            open_items.len()
        ));
    }
    let verified = journal.verify()?;
    if let Some(problem) = verified.problems.first() {
        broken.push(format!("journal row {}: {}", problem.row, problem.what));
    }
    let written = sales.iter().filter(|s| s.state == "written").count();
    let refunded_sales = journal.sales(&["refunded"], None)?.len();
    Ok(Findings {
        summary: format!(
            "sales written: {written}, refunded: {refunded_sales}; cash in: {cash_in} fen, bank \
             in: {bank_in} fen, refunded: {refunded} fen"
        ),
        lost_fen,
        double_credits,
        unresolved,
        broken,
    })
}

pub fn run(config: &std::path::Path, customers: u64, seed: u64) -> anyhow::Result<bool> {
    let vpcd_port: u16 = std::env::var("SELFVEND_VPCD_PORT")
        .context("SELFVEND_VPCD_PORT is not set: run it as `./dev run bench soak`")?
        .parse()
        .context("SELFVEND_VPCD_PORT is not a port")?;
    let mut soak = Soak::start(config, vpcd_port)?;
    soak.housekeeping();
    let mut rng = Rng(seed);
    let mut faults: BTreeMap<FaultClass, u64> = BTreeMap::new();
    let mut first_broken = None;
    let trace = std::env::var_os("SELFVEND_SOAK_TRACE").is_some();
    let started = Instant::now();
    for customer in 0..customers {
        let card = CARDS[rng.below(2) as usize];
        let fen = [1000, 2000, 5000, 10_000][rng.below(4) as usize];
        let by_kwh = rng.below(4) == 0;
        let bank = rng.below(3) == 0;
        let classes: &[FaultClass] = if bank { &BANK_CLASSES } else { &CASH_CLASSES };
        let fault = classes[rng.below(classes.len() as u64) as usize];
        *faults.entry(fault).or_default() += 1;
        soak.customer(&mut rng, card, fen, by_kwh, bank, fault)
            .with_context(|| format!("seed {seed}, customer {customer} ({fault:?})"))?;
        // SELFVEND_SOAK_TRACE: the money balance after each customer, to find where it moved
        // (a note still in the validator's path counts as lost until it lands).
        if trace {
            let station = soak
                .station
                .as_ref()
                .expect("the kiosk runs between customers");
            let lost = Money::of(&soak, station.engine.journal())?.lost();
            let tally = soak.demo.validator.tally();
            println!(
                "customer {customer} ({fault:?}, bank {bank}, {fen} fen): balance {lost}; box \
                 {:?}, returned {:?}",
                tally.cash_box.len(),
                tally.returned
            );
        }
        // Checked after every customer: no card ever carries, and no meter ever takes, a credit
        // its backend did not sell.
        if first_broken.is_none()
            && let Some(why) = soak.overcredited()
        {
            first_broken = Some(format!("customer {customer} ({fault:?}): {why}"));
        }
    }
    let elapsed = started.elapsed();
    soak.wind_down()?;
    let found = check(&soak)?;
    let injected: u64 = faults
        .iter()
        .filter(|(c, _)| **c != FaultClass::None)
        .map(|(_, n)| n)
        .sum();
    println!("{}", found.summary);
    println!("customers: {customers}");
    let per_class: Vec<String> = faults
        .iter()
        .filter(|(c, _)| **c != FaultClass::None)
        .map(|(c, n)| format!("{c:?} {n}"))
        .collect();
    println!("faults injected: {injected} ({})", per_class.join(", "));
    let kills = &soak.kills;
    let killed: u64 = kills.at.values().sum();
    println!(
        "kiosk processes: {killed} killed at {} failpoints, {} finished before theirs, {} \
         stopped on an error{}",
        kills.at.len(),
        kills.finished,
        kills.failed,
        kills
            .first_failure
            .as_ref()
            .map_or(String::new(), |why| format!(" (first: {why})"))
    );
    println!("lost fen: {}", found.lost_fen.unsigned_abs());
    println!("double credits: {}", found.double_credits);
    println!("unresolved: {}", found.unresolved);
    println!(
        "customers/s: {:.2}",
        customers as f64 / elapsed.as_secs_f64().max(f64::EPSILON)
    );
    // The first rule broken: at a customer when it showed there, else after the last one.
    let first = first_broken.or_else(|| {
        found
            .broken
            .first()
            .map(|why| format!("after customer {}: {why}", customers.saturating_sub(1)))
    });
    if let Some(first) = &first {
        println!("broken (seed {seed}): {first}");
    }
    Ok(first.is_none())
}
