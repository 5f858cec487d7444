//! `selfvend bench soak`: a whole kiosk on the real rigs (virtual cards behind pcscd, the
//! validator, printer and PIN pad on ptys, a reference backend per utility and the acquirer on
//! loopback) through many customers, each with a seeded random purchase and a seeded fault, then
//! the money rules checked across the independent ledgers: the validator's cash box, the
//! acquirer's books, the backends' books, the cards, the meters and the journal.
//!
//! A crash here drops the engine and its session at a step boundary and starts a new one over
//! the same journal (the crash tests kill the real process with SIGKILL at every failpoint).

use std::collections::BTreeMap;
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
    PaperOut,
    AcquirerReply,
    Crash,
    OperatorRace,
}

const CLASSES: [FaultClass; 8] = [
    FaultClass::None,
    FaultClass::BackendReply,
    FaultClass::CardTorn,
    FaultClass::ValidatorGlitch,
    FaultClass::PaperOut,
    FaultClass::AcquirerReply,
    FaultClass::Crash,
    FaultClass::OperatorRace,
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

/// The kiosk under test: its engine, devices and the simulators around it.
struct Soak {
    config: KioskConfig,
    demo: Demo,
    engine: SaleEngine,
    link: BankLink,
    acceptor: Id003Acceptor,
    printer: EscPosPrinter,
    readers: Readers,
    /// Each card's meter at home, and the credits it refused (a credit taken twice would be).
    meters: [Meter; 2],
    refused_by_meter: u64,
}

impl Soak {
    fn start(config_path: &std::path::Path, vpcd_port: u16) -> anyhow::Result<Soak> {
        let mut config = KioskConfig::load(config_path)?;
        let demo = Demo::start(&mut config, vpcd_port)?;
        // Re-sells without waiting, and "no such sale" is proof once the kiosk asks again.
        config.policy.resell_first_delay = Duration::ZERO;
        config.policy.unknown_outcome_settle = Duration::ZERO;
        demo.acquirer.add_card(DEMO_PAN, DEMO_PIN, BANK_BALANCE_FEN);
        let engine = selfvend_ui::kiosk::sale_engine(&config)?;
        let link = selfvend_ui::kiosk::bank_link(&config)?;
        let acceptor = Id003Acceptor::open(
            std::path::Path::new(demo.validator.path()),
            9600,
            Id003Settings {
                reply_timeout: Duration::from_millis(500),
                poll_interval: Duration::from_millis(1),
            },
        )?;
        let printer = EscPosPrinter::open(std::path::Path::new(demo.printer.path()), 9600)?;
        let machine = EncryptionMachine::default();
        let meters = [
            Meter::new("M3701000001", machine.clone()),
            Meter::new("M4401000001", machine),
        ];
        Ok(Soak {
            config,
            demo,
            engine,
            link,
            acceptor,
            printer,
            readers: Readers::establish()?,
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

    /// The kiosk stops and starts again over its journal, and recovers.
    fn restart(&mut self) -> anyhow::Result<()> {
        self.engine = selfvend_ui::kiosk::sale_engine(&self.config)?;
        self.housekeeping();
        Ok(())
    }

    /// What the kiosk does between customers; failures are tried again next time.
    fn housekeeping(&mut self) {
        let _ = self.engine.recover();
        let _ = self.engine.resell();
        let _ = self.engine.recover_debits(&self.link);
        if matches!(self.engine.signed_on(), Ok(None)) {
            let _ = self.engine.sign_on(&self.link);
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
            FaultClass::ValidatorGlitch if !bank => {
                let glitch =
                    [Action::Garbage, Action::BadCrc, Action::LoseNextAck][rng.below(3) as usize];
                self.demo.validator.act(glitch);
            }
            FaultClass::PaperOut => self.demo.printer.paper_out_after(rng.below(6) as usize),
            FaultClass::AcquirerReply if bank => {
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
        let crash_at = rng.below(3);
        let started = self.engine.start(self.meter_card()?);
        let mut s = match started {
            Ok(s) => s,
            Err(_) => return self.leave(card),
        };
        let purchase = if by_kwh {
            let price = u64::from(s.account.price_fen_per_kwh.max(1));
            Purchase::Energy(Wh(fen * 1000 / price))
        } else {
            Purchase::Money(Fen(fen))
        };
        let Ok(quote) = self.engine.quote(&mut s, purchase) else {
            let _ = self.engine.cancel(s, &mut self.printer);
            return self.leave(card);
        };
        if fault == FaultClass::Crash && crash_at == 0 {
            drop(s);
            return self.crash(card);
        }
        if bank {
            if !self.pay_by_card(&mut s)? {
                let _ = self.engine.cancel(s, &mut self.printer);
                return self.leave(card);
            }
        } else {
            // Whole yuan notes, largest first, to the amount due (a rest below 1 yuan is not paid).
            let mut due = quote.amount.0 / 100;
            for yuan in [100, 50, 20, 10, 5, 1] {
                while due >= yuan {
                    self.demo.validator.act(Action::Insert(yuan as u32));
                    due -= yuan;
                }
            }
            let _ = self
                .engine
                .take_cash(&mut s, &mut self.acceptor, Duration::from_secs(3));
        }
        if fault == FaultClass::Crash && crash_at == 1 {
            drop(s);
            return self.crash(card);
        }
        if fault == FaultClass::CardTorn {
            self.demo.tear_next_write();
        }
        if fault == FaultClass::OperatorRace {
            self.operator_settles_everything()?;
        }
        if s.paid() > Fen(0) {
            let _ = self.engine.complete(&mut s, &mut self.printer);
        } else {
            let _ = self.engine.cancel(s, &mut self.printer);
            return self.leave(card);
        }
        if fault == FaultClass::Crash && crash_at == 2 {
            drop(s);
            return self.crash(card);
        }
        drop(s);
        self.leave(card)
    }

    /// The bank card, its PIN on the pad, the debit; returns whether it was approved.
    fn pay_by_card(&mut self, s: &mut CashSession) -> anyhow::Result<bool> {
        self.demo.insert_bank_card()?;
        self.seen(BANK_READER, true)?;
        let card = bank_card::read(&mut self.readers.connect(BANK_READER)?)?;
        self.demo.pad.act(&PadAction::pin(DEMO_PIN));
        let entry = self
            .link
            .pin_pad()
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_pin(&card.pan, 4, 12, Duration::from_secs(10), &mut |_| {})?;
        let approved = match entry {
            PinEntry::Entered(block) => matches!(
                self.engine.pay_by_card(s, &self.link, &card, Some(&block)),
                Ok(CardPayment::Approved { .. })
            ),
            _ => false,
        };
        self.demo.pull_bank_card();
        self.seen(BANK_READER, false)?;
        Ok(approved)
    }

    fn crash(&mut self, card: usize) -> anyhow::Result<()> {
        self.demo.pull_meter_card();
        self.seen(METER_READER, false)?;
        self.carry_home(card);
        self.restart()
    }

    fn leave(&mut self, card: usize) -> anyhow::Result<()> {
        self.demo.pull_meter_card();
        self.seen(METER_READER, false)?;
        self.carry_home(card);
        self.demo.printer.paper_in();
        self.demo.printer.take_printed();
        self.housekeeping();
        Ok(())
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
            let _ = self.engine.forward_reversals(&self.link);
            let _ = self.engine.retry_confirmations();
        }
        for card in CARDS {
            self.demo.insert_meter_card(card)?;
            if let Ok(s) = self.engine.start(self.meter_card()?) {
                let _ = self.engine.cancel(s, &mut self.printer);
            }
            self.demo.pull_meter_card();
            self.seen(METER_READER, false)?;
            self.carry_home(card);
        }
        let _ = self.engine.retry_confirmations();
        self.operator_settles_everything()?;
        self.housekeeping();
        Ok(())
    }
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

fn check(soak: &Soak) -> anyhow::Result<Findings> {
    let journal = soak.engine.journal();
    let mut broken = Vec::new();
    // Money in: the validator's cash box and the acquirer's net debits.
    let tally = soak.demo.validator.tally();
    let cash_in: u64 = tally.cash_box.iter().map(|y| u64::from(*y) * 100).sum();
    let bank_in = BANK_BALANCE_FEN
        - soak
            .demo
            .acquirer
            .balance(DEMO_PAN)
            .context("the demo bank card is on the acquirer's books")?;
    // Money out or owed: sold, refunded (sales, payments, caught notes), still owed.
    let sales = journal.sales(
        &[
            "intent",
            "pending",
            "granted",
            "written",
            "refused",
            "never-reached",
            "manual",
        ],
        None,
    )?;
    let sold: u64 = sales
        .iter()
        .filter(|s| matches!(s.state.as_str(), "granted" | "written"))
        .map(|s| s.paid_fen)
        .sum();
    let pending: u64 = sales
        .iter()
        .filter(|s| !matches!(s.state.as_str(), "granted" | "written"))
        .map(|s| s.paid_fen)
        .sum();
    let refunded = (journal.counter("lifetime.refunded_fen")?
        + journal.counter("lifetime.caught_refunded_fen")?) as u64;
    let open_items = journal.manual_items(false)?;
    let owed: u64 = open_items.iter().filter_map(|i| i.caught_fen).sum();
    let lost_fen = (cash_in + bank_in) as i64 - (sold + refunded + pending + owed) as i64;
    if lost_fen != 0 {
        broken.push(format!(
            "conservation: cash box {cash_in} + bank {bank_in} fen in, but sold {sold} + \
             refunded {refunded} + pending {pending} + caught {owed} fen accounted"
        ));
    }
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
    let started = Instant::now();
    for customer in 0..customers {
        let card = CARDS[rng.below(2) as usize];
        let fen = [1000, 2000, 5000, 10_000][rng.below(4) as usize];
        let by_kwh = rng.below(4) == 0;
        let bank = rng.below(3) == 0;
        let fault = CLASSES[rng.below(CLASSES.len() as u64) as usize];
        *faults.entry(fault).or_default() += 1;
        soak.customer(&mut rng, card, fen, by_kwh, bank, fault)
            .with_context(|| format!("seed {seed}, customer {customer} ({fault:?})"))?;
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
