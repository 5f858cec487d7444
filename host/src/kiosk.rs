//! The running kiosk: one worker thread owns the sale engine and the devices and walks each
//! customer through a sale; a window draws the [`View`] it publishes and sends it [`Command`]s.
//!
//! Every rule about money is the engine's; this module only sequences it, with one rule of its
//! own: an idle timeout never cancels a session with money in it. When the customer stops
//! inserting banknotes, what is in is sold; a card pulled with money in is sold too, and the
//! grant waits in the journal for the card to come back.
//!
//! Between customers the worker does the kiosk's housekeeping: recovery and re-sell, write
//! confirmations, bank-card reversals and sign-on.

pub mod assembly;
mod bills;
mod fleet_requests;
mod heartbeat;
mod operator;
mod view;

pub use heartbeat::heartbeat;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub use view::{
    AccountStatus, AccountView, BillResultView, BillsView, CardNotice, Device, DeviceLine,
    DeviceState, ItemLine, OperatorMessage, OperatorView, PluginLine, PriceView, Reconciled,
    ResultView, Screen, View,
};

use crate::backend::{Account, Purchase};
use crate::bank_card::{self, BankCard};
use crate::card_reader::{Readers, Waker};
use crate::cash_acceptor::CashAcceptor;
use crate::config::KioskConfig;
use crate::fleet::FleetLink;
use crate::money::Fen;
use crate::pin_pad::{PinBlock, PinEntry};
use crate::plugin::SharedCard;
use crate::receipt_printer::ReceiptPrinter;
use crate::remote_command::RemoteCommands;
use crate::rollout::Rollouts;
use crate::sale::{
    BankLink, CardPayment, CashSession, Outcome, Resolution, SaleEngine, SaleError, Step,
};
use bills::BillsEnd;

/// The devices the kiosk sells through.
pub struct KioskDevices {
    pub readers: Readers,
    /// The reader meter cards go into.
    pub card_reader: String,
    /// The reader bank cards go into; without one (or without `bank`) only cash is taken.
    pub bank_reader: Option<String>,
    pub acceptor: Box<dyn CashAcceptor + Send>,
    pub printer: Box<dyn ReceiptPrinter + Send>,
    pub bank: Option<BankLink>,
}

/// How long each screen waits for the customer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// The account screen and the payment choice, before the card is handed back.
    pub choose: Duration,
    /// Since the last banknote; then what is in is sold (or, if nothing, the card handed back).
    pub banknotes: Duration,
    pub bank_card: Duration,
    /// The pad's own PIN timeout (1 to 120 s).
    pub pin: Duration,
    /// The result stays up this long after the card is taken.
    pub result: Duration,
    /// The operator is signed out after this long without a command.
    pub operator: Duration,
    /// Between rounds of recovery, re-sell and reversals while no customer is in.
    pub housekeeping: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            choose: Duration::from_secs(60),
            banknotes: Duration::from_secs(60),
            bank_card: Duration::from_secs(60),
            pin: Duration::from_secs(60),
            result: Duration::from_secs(8),
            operator: Duration::from_secs(300),
            housekeeping: Duration::from_secs(30),
        }
    }
}

/// What the customer or the operator asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Buy this much electricity, in money or in energy.
    Buy(Purchase),
    PayCash,
    PayCard,
    /// Stop inserting banknotes and buy with what is in.
    BuyWithPaid,
    /// Pay bills: at the attract screen, an account's by its number; at the account screen,
    /// the card's account's arrears before buying.
    PayBills,
    /// The account number (户号) typed for 缴费.
    BillAccount(String),
    /// Go on from a bill payment's result to buying.
    Continue,
    /// Hand the card back (refused once money is in: then the customer buys with what is in).
    Cancel,
    /// The operator's screens were asked for (only between customers).
    Operator,
    OperatorPin(String),
    Operate(Operate),
}

/// What an operator does on the operator screens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Operate {
    StartClearing,
    CashBoxRemoved,
    CashBoxReplaced,
    /// What the operator counted in the cash box.
    Count(Fen),
    EndClearing,
    /// Settles an item, with the operator's reason (kept in the journal).
    Resolve(i64, Resolution, String),
    Reprint,
    SignOn,
    Settle,
    /// Back in service after the fleet took the kiosk out of it.
    BackInService,
    SignOut,
}

/// The running kiosk: its worker thread and what it shows.
pub struct Kiosk {
    commands: Sender<Command>,
    shared: Arc<Shared>,
    worker: Option<JoinHandle<()>>,
    /// The fleet link's thread, while the kiosk reports to a fleet.
    fleet: Option<JoinHandle<()>>,
    /// Builds the fleet rolls out, prepared on the link's thread.
    rollouts: Arc<Rollouts>,
    /// Commands from the fleet, for the worker between customers.
    remote: Arc<RemoteCommands>,
}

/// A loaded plugin as the fleet hears of it.
fn plugin_report(p: &crate::plugin::Plugin) -> selfvend_fleet_wire::PluginReport {
    selfvend_fleet_wire::PluginReport {
        name: crate::fleet::one_line(&p.name),
        version: crate::fleet::one_line(&p.inspection.version.to_string()),
        signer: crate::fleet::one_line(&p.signer.to_string()),
        sha256: p.sha256.clone(),
    }
}

struct Shared {
    view: Mutex<View>,
    /// Told of every change to the view (a window's repaint request).
    changed: Box<dyn Fn() + Send + Sync>,
    stopping: AtomicBool,
    /// Ends the worker's wait on the card reader, so a command is taken at once.
    waker: Mutex<Waker>,
    /// The worker is blocked in that wait (waking it at any other time could end a card
    /// exchange's own wait in the same PC/SC context).
    waiting: AtomicBool,
    /// The devices as the last housekeeping found them, and when the screen last changed:
    /// what the fleet's heartbeats report.
    devices: Mutex<Vec<DeviceLine>>,
    screen_since: Mutex<Instant>,
    /// The plugins running, as heartbeats report them (a rollout's switch changes them).
    plugins: Mutex<Vec<selfvend_fleet_wire::PluginReport>>,
}

impl Shared {
    fn view(&self) -> MutexGuard<'_, View> {
        self.view.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn set(&self, update: impl FnOnce(&mut View)) {
        let mut view = self.view();
        let before = (view.screen.clone(), view.countdown);
        update(&mut view);
        if (view.screen.clone(), view.countdown) != before {
            if view.screen != before.0 {
                *self.screen_since.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
            }
            view.seq += 1;
            drop(view);
            (self.changed)();
        }
    }

    fn show(&self, screen: Screen) {
        self.set(|v| {
            v.screen = screen;
            v.countdown = None;
        });
    }

    fn stopping(&self) -> bool {
        self.stopping.load(Ordering::Relaxed)
    }

    fn wake(&self) {
        if self.waiting.load(Ordering::SeqCst) {
            self.waker.lock().unwrap_or_else(|p| p.into_inner()).wake();
        }
    }
}

impl Kiosk {
    /// Starts the kiosk's worker: it recovers what the journal shows unfinished, signs on with
    /// the acquirer and shows the attract screen. `changed` is called whenever the view changes.
    pub fn start(
        config: KioskConfig,
        engine: SaleEngine,
        devices: KioskDevices,
        timeouts: Timeouts,
        changed: impl Fn() + Send + Sync + 'static,
    ) -> Kiosk {
        let shared = Arc::new(Shared {
            view: Mutex::new(View {
                screen: Screen::Starting,
                countdown: None,
                seq: 0,
            }),
            changed: Box::new(changed),
            stopping: AtomicBool::new(false),
            waker: Mutex::new(devices.readers.waker()),
            waiting: AtomicBool::new(false),
            devices: Mutex::new(Vec::new()),
            screen_since: Mutex::new(Instant::now()),
            plugins: Mutex::new(Vec::new()),
        });
        let (commands, inbox) = mpsc::channel();
        let plugins = engine
            .plugins()
            .chain(devices.bank.as_ref().map(|l| l.dialect()))
            .map(plugin_report)
            .take(selfvend_fleet_wire::MAX_LIST)
            .collect();
        *shared.plugins.lock().unwrap_or_else(|p| p.into_inner()) = plugins;
        let rollouts = Arc::new(Rollouts::new(config.clone()));
        let remote = Arc::new(RemoteCommands::default());
        let worker = Worker {
            config,
            engine,
            devices,
            timeouts,
            inbox,
            shared: shared.clone(),
            acceptor_error: None,
            last_housekeeping: None,
            reader_fault: None,
            rollouts: rollouts.clone(),
            remote: remote.clone(),
            taken_out: None,
        };
        let worker = std::thread::Builder::new()
            .name("kiosk".into())
            .spawn(move || worker.run())
            .expect("spawning the kiosk's worker thread");
        Kiosk {
            commands,
            shared,
            worker: Some(worker),
            fleet: None,
            rollouts,
            remote,
        }
    }

    /// Reports to the fleet through `link` every `every`, on a thread of its own, until the
    /// kiosk stops.
    pub fn report_to(&mut self, link: FleetLink, every: Duration) -> std::io::Result<()> {
        let (live, stop) = (self.shared.clone(), self.shared.clone());
        let (rollouts, reported) = (self.rollouts.clone(), self.rollouts.clone());
        let (remote, done) = (self.remote.clone(), self.remote.clone());
        let busy = Arc::new(AtomicBool::new(false));
        self.fleet = Some(link.spawn(
            every,
            move || {
                let view = live.view().clone();
                let devices = live
                    .devices
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .clone();
                let shown = live
                    .screen_since
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .elapsed();
                let mut beat = heartbeat(&view, shown, &devices);
                let config = reported.configs().current();
                beat.cash_box.capacity = config.kiosk.cash_box_capacity.unwrap_or(0);
                beat.config = Some(reported.configs().report());
                beat.plugins = live
                    .plugins
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .clone();
                beat.rollouts = reported.steps();
                beat.commands_done = done.reports();
                beat
            },
            move || stop.stopping(),
            move |link, reply| {
                if !reply.desired.commands.is_empty() || !remote.reports().is_empty() {
                    match link.open_journal() {
                        Ok(mut journal) => {
                            remote.offer(link, &mut journal, &reply.desired.commands);
                        }
                        Err(e) => tracing::warn!("remote commands: {e}"),
                    }
                }
                // Downloads, compiles and pings (a config's too) take a while: on a thread of their own, one at a
                // time, so heartbeats and the journal's shipping go on (the next heartbeat's
                // reply brings a wish again if this one was busy).
                if reply.desired.plugins.is_empty() && reply.desired.config.is_none() {
                    rollouts.apply(link, &reply.desired);
                    return;
                }
                if busy.swap(true, Ordering::SeqCst) {
                    return;
                }
                let (rollouts, busy, link) = (rollouts.clone(), busy.clone(), link.clone());
                let desired = reply.desired.clone();
                let spawned = std::thread::Builder::new()
                    .name("rollout".into())
                    .spawn(move || {
                        rollouts.apply(&link, &desired);
                        busy.store(false, Ordering::SeqCst);
                    });
                if let Err(e) = spawned {
                    tracing::error!("the rollout thread did not start: {e}");
                }
            },
        )?);
        Ok(())
    }

    /// What to show now.
    pub fn view(&self) -> View {
        self.shared.view().clone()
    }

    /// The devices as the last housekeeping found them, and how long the screen has shown.
    pub fn status(&self) -> (Vec<DeviceLine>, Duration) {
        let devices = self
            .shared
            .devices
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let since = self
            .shared
            .screen_since
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .elapsed();
        (devices, since)
    }

    pub fn send(&self, command: Command) {
        // A worker that stopped shows it in its view; nothing else to do with the command.
        let _ = self.commands.send(command);
        self.shared.wake();
    }
}

impl Drop for Kiosk {
    fn drop(&mut self) {
        self.shared.stopping.store(true, Ordering::Relaxed);
        self.shared.wake();
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
        }
        if let Some(fleet) = self.fleet.take() {
            let _ = fleet.join();
        }
    }
}

/// What a wait ended with.
#[derive(Debug)]
enum Event {
    Command(Command),
    /// The watched card arrived (or left, for [`Watch::Out`]).
    Card,
    TimedOut,
    Stopping,
}

/// Which card a wait watches for.
#[derive(Clone, Copy)]
enum Watch<'a> {
    None,
    In(&'a str),
    Out(&'a str),
}

/// The longest a wait blocks on the card reader before it looks at its inbox again. A command
/// wakes it at once; this bounds the rare command sent just before the wait began.
const TICK: Duration = Duration::from_secs(1);
/// How often an idle kiosk looks for a build a rollout staged.
const SWITCH_LOOK: Duration = Duration::from_secs(2);

struct Worker {
    config: KioskConfig,
    engine: SaleEngine,
    devices: KioskDevices,
    timeouts: Timeouts,
    inbox: Receiver<Command>,
    shared: Arc<Shared>,
    /// Why the acceptor last failed, for the operator's device list.
    acceptor_error: Option<String>,
    last_housekeeping: Option<Instant>,
    /// What is wrong with the card reader, while something is (logged when it changes).
    reader_fault: Option<String>,
    rollouts: Arc<Rollouts>,
    remote: Arc<RemoteCommands>,
    /// Who took the kiosk out of service from the fleet, while it is (the journal keeps it
    /// across restarts).
    taken_out: Option<String>,
}

/// A worker that stops for any reason other than the kiosk's own stop leaves the window saying
/// so, rather than a screen frozen mid-sale.
impl Drop for Worker {
    fn drop(&mut self) {
        if !self.shared.stopping() {
            self.shared.show(Screen::OutOfService {
                why: "the kiosk's controller stopped; see the log".into(),
            });
        }
    }
}

impl Worker {
    fn run(mut self) {
        let shared = self.shared.clone();
        self.engine
            .on_progress(move |step| shared.show(Screen::Processing(step)));
        if let Err(e) = self.devices.acceptor.enable(&[]) {
            self.acceptor_error = Some(e.to_string());
        }
        self.housekeeping();
        self.taken_out = self
            .engine
            .journal()
            .taken_out_of_service()
            .unwrap_or_else(|e| {
                tracing::error!("whether the fleet took the kiosk out of service: {e}");
                None
            });
        let reader = self.devices.card_reader.clone();
        // A card left in from before is taken out before the first session starts. Every
        // session ends with its card out (or the next customer's card just in).
        let left_in = self
            .devices
            .readers
            .wait(&reader, false, Some(Duration::ZERO));
        self.shared.show(match left_in {
            Ok(false) => Screen::TakeCard,
            _ => Screen::Attract,
        });
        loop {
            match self.wait_for(Watch::Out(&reader), None, false) {
                Event::Card => break,
                Event::Stopping => return,
                Event::Command(Command::Operator) => self.operator(),
                Event::Command(_) | Event::TimedOut => {}
            }
        }
        while !self.shared.stopping() {
            self.switch_plugins();
            self.apply_config();
            self.remote_commands();
            let look = SWITCH_LOOK.min(self.timeouts.housekeeping);
            if let Some(by) = &self.taken_out {
                self.shared.show(Screen::OutOfService {
                    why: format!("taken out of service from the fleet by {by}"),
                });
                match self.wait_for(Watch::None, Some(look), false) {
                    Event::Command(Command::Operator) => self.operator(),
                    Event::Stopping => return,
                    Event::TimedOut => self.housekeeping(),
                    _ => {}
                }
                continue;
            }
            // While the reader is out of service, that stays on the screen until it answers.
            if self.reader_fault.is_none() {
                self.shared.show(Screen::Attract);
            }
            match self.wait_for(Watch::In(&reader), Some(look), false) {
                Event::Card => self.session(),
                Event::Command(Command::Operator) => self.operator(),
                Event::Command(Command::PayBills) => self.bill_counter(),
                Event::Stopping => return,
                Event::Command(_) => {}
                Event::TimedOut => self.housekeeping(),
            }
        }
    }

    /// Waits for the watched card, a command, or `timeout`, shown as a countdown.
    fn wait(&mut self, watch: Watch<'_>, timeout: Option<Duration>) -> Event {
        self.wait_for(watch, timeout, true)
    }

    /// [`wait`](Self::wait), with the countdown shown or not.
    fn wait_for(&mut self, watch: Watch<'_>, timeout: Option<Duration>, shown: bool) -> Event {
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            if self.shared.stopping() {
                return Event::Stopping;
            }
            if let Some(deadline) = deadline {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Event::TimedOut;
                }
                if shown {
                    self.shared
                        .set(|v| v.countdown = Some(left.as_secs_f64().ceil() as u64));
                }
            }
            // Until the countdown's next whole second, the deadline, or a tick.
            let block = match deadline {
                Some(deadline) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    let to_next_second = Duration::from_nanos(left.subsec_nanos().into());
                    if shown && !to_next_second.is_zero() {
                        to_next_second.min(TICK)
                    } else {
                        left.min(TICK)
                    }
                }
                None => TICK,
            };
            let (reader, present) = match watch {
                Watch::None => match self.inbox.recv_timeout(block) {
                    Ok(c) => return Event::Command(c),
                    Err(RecvTimeoutError::Timeout) => continue,
                    Err(RecvTimeoutError::Disconnected) => return Event::Stopping,
                },
                Watch::In(r) => (r, true),
                Watch::Out(r) => (r, false),
            };
            // Raised before the inbox is looked at: a command sent after the look wakes the wait.
            self.shared.waiting.store(true, Ordering::SeqCst);
            match self.inbox.try_recv() {
                Ok(c) => {
                    self.shared.waiting.store(false, Ordering::SeqCst);
                    return Event::Command(c);
                }
                Err(mpsc::TryRecvError::Disconnected) => return Event::Stopping,
                Err(mpsc::TryRecvError::Empty) => {}
            }
            let waited = self.devices.readers.wait(reader, present, Some(block));
            self.shared.waiting.store(false, Ordering::SeqCst);
            match waited {
                Ok(true) => {
                    self.reader_back();
                    return Event::Card;
                }
                Ok(false) => self.reader_back(),
                Err(e) => {
                    self.out_of_service(e.to_string());
                    return Event::TimedOut;
                }
            }
        }
    }

    /// The card reader answers again.
    fn reader_back(&mut self) {
        if let Some(fault) = self.reader_fault.take() {
            tracing::info!("the card reader answers again (after: {fault})");
            if matches!(self.shared.view().screen, Screen::OutOfService { .. }) {
                self.shared.show(Screen::Attract);
            }
        }
    }

    /// Shows why the kiosk cannot sell, logs it when it changes, and connects to pcscd afresh
    /// (a restarted pcscd leaves the old context dead).
    fn out_of_service(&mut self, why: String) {
        if self.reader_fault.as_deref() != Some(why.as_str()) {
            tracing::error!("out of service: {why}");
        }
        self.shared.show(Screen::OutOfService { why: why.clone() });
        self.reader_fault = Some(why);
        std::thread::sleep(Duration::from_secs(2));
        if let Ok(readers) = Readers::establish() {
            *self.shared.waker.lock().unwrap_or_else(|p| p.into_inner()) = readers.waker();
            self.devices.readers = readers;
        }
    }

    /// Recovery, re-sell, write confirmations, queued period reports, bank reversals and the
    /// acquirer's sign-on. Each failure is logged and tried again next round.
    fn housekeeping(&mut self) {
        let due = self
            .last_housekeeping
            .is_none_or(|t| t.elapsed() >= self.timeouts.housekeeping);
        if !due {
            return;
        }
        self.last_housekeeping = Some(Instant::now());
        let lines = self.device_lines();
        *self
            .shared
            .devices
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = lines;
        if let Err(e) = self.engine.recover() {
            tracing::warn!("recovery: {e}");
        }
        if let Err(e) = self.engine.resell() {
            tracing::warn!("re-sell: {e}");
        }
        if let Some(link) = &self.devices.bank {
            if let Err(e) = self.engine.recover_debits(link) {
                tracing::warn!("bank-card recovery: {e}");
            }
            match self.engine.signed_on() {
                Ok(Some(_)) => {
                    if let Err(e) = self.engine.forward_reversals(link) {
                        tracing::warn!("bank-card reversals: {e}");
                    }
                }
                // A settlement left unanswered goes again first; it signs on when answered.
                Ok(None) if matches!(self.engine.settling(), Ok(Some(_))) => {
                    if let Err(e) = self.engine.settle(link) {
                        tracing::warn!("settlement sent again: {e}");
                    }
                }
                Ok(None) => {
                    if let Err(e) = self.engine.sign_on(link) {
                        tracing::warn!("acquirer sign-on: {e}");
                    }
                }
                Err(e) => tracing::warn!("acquirer sign-on: {e}"),
            }
        } else if self.config.acquirer.is_none()
            && let Err(e) = self.engine.unlinked_reversals()
        {
            tracing::warn!("bank-card reversals with no acquirer: {e}");
        }
    }

    /// Shows `screen`. Commands pressed on an earlier screen are dropped: they were meant for
    /// what the customer saw then.
    fn screen(&mut self, screen: Screen) {
        while self.inbox.try_recv().is_ok() {}
        self.shared.show(screen);
    }

    /// One customer, from the card going in to the card coming out.
    fn session(&mut self) {
        self.screen(Screen::Reading);
        let reader = self.devices.card_reader.clone();
        let started = self
            .devices
            .readers
            .connect(&reader)
            .map_err(|e| e.to_string())
            .and_then(|card| {
                let card: SharedCard = Arc::new(Mutex::new(card));
                self.engine.start(card).map_err(|e| customer_reason(&e))
            });
        let mut s = match started {
            Ok(s) => s,
            Err(reason) => return self.finish(ResultView::Refused { reason }),
        };
        let mut refusal = None;
        let quote = loop {
            self.screen(Screen::Account(account_view(
                &self.config,
                &s,
                refusal.clone(),
            )));
            match self.wait(Watch::Out(&reader), Some(self.timeouts.choose)) {
                Event::Command(Command::Buy(purchase)) => {
                    match self.engine.quote(&mut s, purchase) {
                        Ok(quote) => break quote,
                        Err(e @ (SaleError::Refused(_) | SaleError::OutOfLimits(..))) => {
                            refusal = Some(customer_reason(&e));
                        }
                        Err(e) => {
                            let reason = customer_reason(&e);
                            self.hand_back(s);
                            return self.finish(ResultView::Refused { reason });
                        }
                    }
                }
                Event::Command(Command::PayBills) => match self.settle_arrears(&mut s, &reader) {
                    BillsEnd::Back => refusal = None,
                    BillsEnd::Gone => return self.hand_back(s),
                },
                Event::Command(Command::Cancel) | Event::TimedOut => {
                    self.hand_back(s);
                    return self.finish(ResultView::Cancelled { caught: Fen(0) });
                }
                Event::Card | Event::Stopping => return self.hand_back(s),
                Event::Command(_) => {}
            }
        };
        let due = quote.amount;
        let price = PriceView {
            arrears: quote.arrears,
            energy: quote.energy,
            steps: if s.tariff_steps.len() > 1 {
                s.tariff_steps.clone()
            } else {
                Vec::new()
            },
        };
        let mut notice = None;
        loop {
            let bank = self.bank_open();
            if !bank && notice.is_none() {
                return self.pay_cash(s, due, price);
            }
            self.screen(Screen::Method {
                due,
                price: price.clone(),
                bank,
                notice: notice.take(),
            });
            match self.wait(Watch::Out(&reader), Some(self.timeouts.choose)) {
                Event::Command(Command::PayCash) => return self.pay_cash(s, due, price),
                Event::Command(Command::PayCard) if bank => {
                    match self.pay_card(due, true, |engine, link, card, pin| {
                        engine.pay_by_card(&mut s, link, card, Some(pin))
                    }) {
                        Ok(()) => return self.complete(s),
                        Err(why) => notice = Some(why),
                    }
                }
                Event::Command(Command::Cancel) | Event::TimedOut => {
                    self.hand_back(s);
                    return self.finish(ResultView::Cancelled { caught: Fen(0) });
                }
                Event::Card | Event::Stopping => return self.hand_back(s),
                Event::Command(_) => {}
            }
        }
    }

    /// Whether bank cards are taken now: a reader, a link, and a batch signed on to.
    fn bank_open(&self) -> bool {
        self.devices.bank.is_some()
            && self.devices.bank_reader.is_some()
            && matches!(self.engine.signed_on(), Ok(Some(_)))
    }

    /// Whether the meter card is in its reader now (an unanswering reader says no).
    fn meter_card_in(&self) -> bool {
        let absent =
            self.devices
                .readers
                .wait(&self.devices.card_reader, false, Some(Duration::ZERO));
        matches!(absent, Ok(false))
    }

    /// Banknotes until `due` is paid. Money in is always sold: when the customer stops, asks
    /// to buy with what is in, or pulls the card. A banknote already drawn in is finished
    /// (credited or given back) before the session moves on.
    fn pay_cash(&mut self, mut s: CashSession, due: Fen, price: PriceView) {
        self.screen(Screen::Paying {
            due,
            price: price.clone(),
            paid: Fen(0),
        });
        let Worker {
            engine,
            devices,
            inbox,
            shared,
            timeouts,
            ..
        } = self;
        let mut watch = NoteWatch::new(
            inbox,
            shared,
            &devices.readers,
            Some(&devices.card_reader),
            timeouts.banknotes,
            due,
            price,
        );
        let taken = engine.take_cash_watched(
            &mut s,
            devices.acceptor.as_mut(),
            timeouts.banknotes,
            &mut |paid| watch.go_on(paid),
        );
        let card_out = watch.card_out;
        let failed = match taken {
            Ok(_) => {
                self.acceptor_error = None;
                None
            }
            Err(e) => {
                tracing::error!("taking banknotes: {e}");
                self.acceptor_error = Some(e.to_string());
                Some(e)
            }
        };
        if s.paid() > Fen(0) {
            return self.complete(s);
        }
        let caught: u64 = s.caught.iter().map(|(_, f)| f.0).sum();
        self.hand_back(s);
        if let Some(e) = failed {
            return self.finish(ResultView::Refused {
                reason: customer_reason(&e),
            });
        }
        if !card_out || caught > 0 {
            self.finish(ResultView::Cancelled {
                caught: Fen(caught),
            });
        }
    }

    /// A bank-card payment of `due`: card, PIN, debit (by `pay`), and the card handed back.
    /// `Err` says why nothing was debited (or why what was is being reversed), for the payment
    /// choice to show. With `for_meter_card`, the debit is asked for only with the meter card
    /// still in (what is bought is written onto it).
    fn pay_card(
        &mut self,
        due: Fen,
        for_meter_card: bool,
        pay: impl FnOnce(
            &mut SaleEngine,
            &BankLink,
            &BankCard,
            &PinBlock,
        ) -> Result<CardPayment, SaleError>,
    ) -> Result<(), CardNotice> {
        let Some(bank_reader) = self.devices.bank_reader.clone() else {
            return Err(CardNotice::NotTaken);
        };
        // A card left by someone before goes back to its owner, never into this payment.
        self.take_bank_card(&bank_reader);
        self.screen(Screen::BankCard { due });
        match self.wait(Watch::In(&bank_reader), Some(self.timeouts.bank_card)) {
            Event::Card => {}
            Event::Command(Command::Cancel) => return Err(CardNotice::Cancelled),
            _ => return Err(CardNotice::NoCard),
        }
        let paid = self.debit(due, &bank_reader, for_meter_card, pay);
        self.take_bank_card(&bank_reader);
        paid
    }

    /// Reads the bank card in `bank_reader`, has the PIN entered and asks for the debit.
    fn debit(
        &mut self,
        due: Fen,
        bank_reader: &str,
        for_meter_card: bool,
        pay: impl FnOnce(
            &mut SaleEngine,
            &BankLink,
            &BankCard,
            &PinBlock,
        ) -> Result<CardPayment, SaleError>,
    ) -> Result<(), CardNotice> {
        let link = self.devices.bank.as_ref().ok_or(CardNotice::NotTaken)?;
        let pad = link.pin_pad().clone();
        // Reversals owed go first, before the customer is asked for anything.
        if let Err(e) = self.engine.forward_reversals(link) {
            tracing::warn!("bank-card reversals: {e}");
        }
        self.screen(Screen::Reading);
        let card = self
            .devices
            .readers
            .connect(bank_reader)
            .map_err(|e| e.to_string())
            .and_then(|mut pc| bank_card::read(&mut pc).map_err(|e| e.to_string()))
            .map_err(|why| failed(format!("the bank card: {why}")))?;
        self.screen(Screen::Pin { due, digits: 0 });
        let shared = self.shared.clone();
        let entry = pad
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_pin(
                &card.pan,
                self.config.policy.customer_pin_min_digits,
                self.config.policy.customer_pin_max_digits,
                self.timeouts.pin,
                &mut |digits| shared.show(Screen::Pin { due, digits }),
            )
            .map_err(|e| failed(format!("the PIN pad: {e}")))?;
        let block = match entry {
            PinEntry::Entered(block) => block,
            PinEntry::Cancelled => return Err(CardNotice::PinCancelled),
            PinEntry::TimedOut => return Err(CardNotice::PinTimedOut),
        };
        // The customer's money is taken only for a meter card still here to be written.
        if for_meter_card && !self.meter_card_in() {
            return Err(CardNotice::MeterCardOut);
        }
        self.screen(Screen::Debiting { due });
        let link = self.devices.bank.as_ref().ok_or(CardNotice::NotTaken)?;
        match pay(&mut self.engine, link, &card, &block) {
            Ok(CardPayment::Approved { .. }) => Ok(()),
            Ok(CardPayment::Declined(d)) => Err(CardNotice::Declined(d.message)),
            Err(e) => Err(card_notice(&e)),
        }
    }

    /// Asks for the bank card back and waits for it (the sale goes on after a while: a debit
    /// made is sold whether or not the card was taken).
    fn take_bank_card(&mut self, bank_reader: &str) {
        if matches!(
            self.devices
                .readers
                .wait(bank_reader, false, Some(Duration::ZERO)),
            Ok(false)
        ) {
            self.screen(Screen::TakeBankCard);
            while let Event::Command(_) =
                self.wait(Watch::Out(bank_reader), Some(self.timeouts.bank_card))
            {}
        }
    }

    /// Sells what is paid, writes the card, prints the receipt, and shows how it ended.
    fn complete(&mut self, mut s: CashSession) {
        self.screen(Screen::Processing(Step::Sell));
        let paid = s.paid();
        let result = match self.engine.complete(&mut s, self.devices.printer.as_mut()) {
            Ok(done) => match done.outcome {
                Outcome::Credited { grant, .. } => ResultView::Credited {
                    paid,
                    energy_wh: grant.energy.0,
                },
                Outcome::GrantedNotWritten { grant, .. } => ResultView::NotWritten {
                    paid,
                    energy_wh: grant.energy.0,
                },
                Outcome::Refused { refusal, .. } => ResultView::RefundOwed {
                    paid,
                    reason: refusal.message,
                },
                Outcome::Pending { .. } => ResultView::Pending { paid },
                Outcome::Unsold { reason, .. } => ResultView::RefundOwed { paid, reason },
            },
            // The payment is in the journal (an open payment goes to an operator at the next
            // start; a sale with a serial is finished by recovery), but no receipt says so.
            Err(e) => {
                tracing::error!("completing a paid sale: {e}");
                ResultView::Fault {
                    paid,
                    card: s.card().card_serial.clone(),
                }
            }
        };
        self.finish(result);
    }

    /// Ends a session with nothing paid (a caught banknote's receipt is printed).
    fn hand_back(&mut self, s: CashSession) {
        if let Err(e) = self.engine.cancel(s, self.devices.printer.as_mut()) {
            tracing::error!("ending a session: {e}");
        }
    }

    /// Shows how the session ended until the card is taken, and a little longer; then runs the
    /// housekeeping if it is due.
    fn finish(&mut self, result: ResultView) {
        self.screen(Screen::Result(result));
        let reader = self.devices.card_reader.clone();
        loop {
            match self.wait(Watch::Out(&reader), None) {
                // A button pressed on an earlier screen does not end this one.
                Event::Command(_) => {}
                Event::Card => {
                    // A next customer's card ends it early (the attract screen's wait takes it).
                    self.wait_for(Watch::In(&reader), Some(self.timeouts.result), false);
                    break;
                }
                Event::TimedOut | Event::Stopping => break,
            }
        }
        self.housekeeping();
    }

    /// Each device and backend as it answers now.
    fn device_lines(&mut self) -> Vec<DeviceLine> {
        let line = |device: Device, state: Result<DeviceState, DeviceState>| DeviceLine {
            device,
            ok: state.is_ok(),
            state: state.unwrap_or_else(|e| e),
        };
        let failed = |e: &dyn std::fmt::Display| DeviceState::Failed(e.to_string());
        let readers = self.devices.readers.names().map_err(|e| failed(&e));
        let reader_state = |reader: &str| {
            readers.clone().and_then(|names| {
                if names.iter().any(|n| n == reader) {
                    Ok(DeviceState::Present(reader.to_string()))
                } else {
                    Err(DeviceState::Missing(reader.to_string()))
                }
            })
        };
        let mut lines = vec![line(
            Device::CardReader,
            reader_state(&self.devices.card_reader),
        )];
        if let Some(bank_reader) = &self.devices.bank_reader {
            lines.push(line(Device::BankCardReader, reader_state(bank_reader)));
        }
        let acceptor = self.devices.acceptor.enable(&[]).map_err(|e| failed(&e));
        let acceptor = acceptor.and(match &self.acceptor_error {
            Some(e) => Err(DeviceState::LastFailure(e.to_string())),
            None => Ok(DeviceState::Inhibited),
        });
        lines.push(line(Device::BanknoteValidator, acceptor));
        let printer = match self.devices.printer.status() {
            Ok(s) if s.is_ready() => Ok(DeviceState::Printer(s)),
            Ok(s) => Err(DeviceState::Printer(s)),
            Err(e) => Err(failed(&e)),
        };
        lines.push(line(Device::ReceiptPrinter, printer));
        if let Some(link) = &self.devices.bank {
            let pad = link
                .pin_pad()
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .status()
                .map(|s| DeviceState::Keys {
                    pin: s.pin_key,
                    mac: s.mac_key,
                })
                .map_err(|e| failed(&e));
            lines.push(line(Device::PinPad, pad));
            let batch = match self.engine.signed_on() {
                Ok(Some(batch)) => Ok(DeviceState::SignedOn(batch)),
                Ok(None) => Err(DeviceState::NotSignedOn),
                Err(e) => Err(failed(&e)),
            };
            lines.push(line(Device::Acquirer(link.entry.name.clone()), batch));
        }
        for (name, state) in self.engine.ping_backends() {
            lines.push(line(
                Device::Backend(name),
                state
                    .map(|()| DeviceState::Answers)
                    .map_err(DeviceState::Failed),
            ));
        }
        lines
    }
}

/// What the customer does while banknotes go in: the paying screen kept current (with the
/// countdown while nothing is in), a stop asked for, the card pulled from `reader`, the kiosk
/// stopping. Shared by a sale's banknotes and a bill's.
struct NoteWatch<'w> {
    inbox: &'w Receiver<Command>,
    shared: &'w Shared,
    readers: &'w Readers,
    reader: Option<&'w str>,
    patience: Duration,
    due: Fen,
    price: PriceView,
    last_paid: Fen,
    last_note: Instant,
    /// The card left during the payment.
    card_out: bool,
}

impl<'w> NoteWatch<'w> {
    fn new(
        inbox: &'w Receiver<Command>,
        shared: &'w Shared,
        readers: &'w Readers,
        reader: Option<&'w str>,
        patience: Duration,
        due: Fen,
        price: PriceView,
    ) -> Self {
        NoteWatch {
            inbox,
            shared,
            readers,
            reader,
            patience,
            due,
            price,
            last_paid: Fen(0),
            last_note: Instant::now(),
            card_out: false,
        }
    }

    /// Told what is paid after each poll of the acceptor: whether to keep taking banknotes.
    fn go_on(&mut self, paid: Fen) -> bool {
        if paid != self.last_paid {
            self.last_paid = paid;
            self.last_note = Instant::now();
        }
        // With money in, the wait ends in a sale, not a cancellation: no countdown.
        let left = self.patience.saturating_sub(self.last_note.elapsed());
        let (due, price) = (self.due, self.price.clone());
        self.shared.set(|v| {
            v.screen = Screen::Paying { due, price, paid };
            v.countdown = (paid == Fen(0)).then(|| left.as_secs_f64().ceil() as u64);
        });
        let asked = self.inbox.try_recv().ok();
        let readers = self.readers;
        let gone = self.reader.is_some_and(|reader| {
            matches!(readers.wait(reader, false, Some(Duration::ZERO)), Ok(true))
        });
        self.card_out |= gone;
        match asked {
            Some(Command::Cancel) if paid == Fen(0) => false,
            Some(Command::BuyWithPaid) if paid > Fen(0) => false,
            _ => !gone && !self.shared.stopping(),
        }
    }
}

/// The acquirer link, for the operator's bank commands.
fn bank_link(devices: &KioskDevices) -> Result<&BankLink, String> {
    devices
        .bank
        .as_ref()
        .ok_or_else(|| "no acquirer is configured".to_string())
}

/// Why a session cannot go on, in words for the customer.
/// A bank-card failure the customer is told of; its detail goes to the log.
fn failed(detail: String) -> CardNotice {
    tracing::warn!("bank-card payment: {detail}");
    CardNotice::Failed(detail)
}

/// What the customer is told of an engine error ending a bank-card try.
fn card_notice(e: &SaleError) -> CardNotice {
    match e {
        SaleError::Refused(r) => CardNotice::Refused(r.message.clone()),
        SaleError::DebitReversed(fen) => CardNotice::Reversed(*fen),
        other => failed(other.to_string()),
    }
}

fn customer_reason(e: &SaleError) -> String {
    match e {
        SaleError::Refused(r) => r.message.clone(),
        other => other.to_string(),
    }
}

fn account_view(config: &KioskConfig, s: &CashSession, refusal: Option<String>) -> AccountView {
    let a: &Account = &s.account;
    AccountView {
        customer_name: a.customer_name.clone(),
        customer_number: a.customer_number.clone(),
        meter_number: a.meter_number.clone(),
        address: a.address.clone(),
        status: a.status,
        last_purchase: a
            .last_purchase
            .as_ref()
            .map(|p| format!("{} ¥{} {}", p.at, p.amount, p.energy)),
        arrears: a.arrears,
        price_fen_per_kwh: a.price_fen_per_kwh,
        min: config.limits.min_purchase_fen,
        max: config.limits.max_purchase_fen,
        refusal,
        rewritten: s.rewritten,
    }
}
