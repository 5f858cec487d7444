//! `selfvend bench …`: performance figures, printed one per line.

mod clearing;
mod fleet;
mod sale;
mod soak;
mod ui;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Subcommand;
use selfvend_host::authority::BackendAuthority;
use selfvend_host::backend::{
    CardRef, Endpoint, PaymentKind, Purchase, SaleRequest, WriteConfirmation,
};
use selfvend_host::card::{CardChannel, ChannelError, CreditGrant, ReaderKind, VerifyOutcome};
use selfvend_host::card_reader::{PcscCard, Readers};
use selfvend_host::cash_acceptor::{
    CashAcceptor, CashEvent, CashHandler, Denomination, EscrowDecision, NotRecorded,
};
use selfvend_host::codecs;
use selfvend_host::config::{KioskConfig, PluginRole};
use selfvend_host::id003::{Id003Acceptor, Id003Settings};
use selfvend_host::money::Fen;
use selfvend_host::plugin::inspect::PluginKind;
use selfvend_host::plugin::trust::TrustStore;
use selfvend_host::plugin::{Plugin, PluginLimits, PluginRuntime};
use selfvend_host::plugin::{SharedAuthority, SharedCard};
use selfvend_sim::cpu_card::CpuCard;
use selfvend_sim::encryption_machine::EncryptionMachine;
use selfvend_sim::id003_validator::{Action, SimulatedValidator};
use selfvend_sim::meter::{Meter, MeterInsert};
use selfvend_sim::reference_backend::{Listen, ReferenceBackend};
use selfvend_sim::sle4442::{self, Sle4442};
use selfvend_sim::vpcd::{Inserted, lock};

#[derive(Subcommand)]
pub enum BenchCommand {
    /// Compile time, cached load time, and fresh instance + one call, for both allocators.
    Plugin {
        plugin: PathBuf,
        /// The trust directory (default: the config's).
        #[arg(long)]
        trust: Option<PathBuf>,
        /// Instantiate+call rounds per allocator.
        #[arg(long, default_value_t = 5000)]
        rounds: usize,
    },
    /// Account query + sale + write confirmation against the reference backend on loopback,
    /// through each configured dialect that the reference backend speaks.
    Backend {
        /// Sales per dialect.
        #[arg(long, default_value_t = 500)]
        rounds: usize,
    },
    /// Credit writes onto each vendor's virtual card through pcscd: APDUs per step against the
    /// layout's minimum, and the time of a card session (identify, read, write, verify).
    Card {
        /// The vpcd slot the virtual cards are inserted into (default: the rig's that
        /// `./dev run` starts, else the system pcscd's 127.0.0.1:35963).
        #[arg(long)]
        vpcd: Option<SocketAddr>,
        /// The reader pcscd shows for that slot.
        #[arg(long)]
        reader: Option<String>,
        /// Sales per card.
        #[arg(long, default_value_t = 50)]
        rounds: usize,
    },
    /// Complete cash sales through every rig: host overhead per sale and fsyncs per sale.
    Sale {
        /// The vpcd slot the virtual cards are inserted into (default: the rig's that
        /// `./dev run` starts, else the system pcscd's 127.0.0.1:35963).
        #[arg(long)]
        vpcd: Option<SocketAddr>,
        /// The reader pcscd shows for that slot.
        #[arg(long)]
        reader: Option<String>,
        /// Sales per card type.
        #[arg(long, default_value_t = 30)]
        rounds: usize,
    },
    /// Banknotes through the simulated ID-003 validator over a pty: the driver's own time per
    /// banknote, beyond the protocol's waits.
    Cash {
        /// Banknotes to feed.
        #[arg(long, default_value_t = 1000)]
        notes: usize,
    },
    /// The clearing report of a period of many sales, on a scratch journal.
    Clearing {
        /// Sales in the period.
        #[arg(long, default_value_t = 1_000_000)]
        sales: usize,
    },
    /// The kiosk's window: frame CPU time through a scripted sale, idle CPU on the attract
    /// screen, start to attract screen, resident memory. Runs the demo (`./dev run bench ui`).
    Ui {
        /// Seconds on the attract screen to measure idle CPU over.
        #[arg(long, default_value_t = 10)]
        idle_secs: u64,
    },
    /// A whole demo kiosk through many customers with seeded purchases and faults, then the
    /// money rules across the validator, the acquirer, the backends, the cards, the meters and
    /// the journal (`./dev run bench soak`). Exits non-zero on a broken rule.
    /// N simulated kiosks against a fleet server: ingest rows/s and p99, heartbeats/s, and the
    /// console's fleet page p99 (`./dev run bench fleet` starts the server and the database).
    Fleet {
        #[arg(long)]
        server: String,
        /// One pairing code per line, one per kiosk (`selfvend-fleet pairing-code --count N`).
        #[arg(long)]
        codes: PathBuf,
        #[arg(long, default_value_t = 1000)]
        kiosks: usize,
        #[arg(long, default_value_t = 1.0)]
        minutes: f64,
        /// A console user's name and password.
        #[arg(long)]
        login: String,
        #[arg(long)]
        password: String,
    },
    Soak {
        #[arg(long, default_value_t = 60)]
        customers: u64,
        /// The seed of the customers and their faults (a run is replayed with its seed).
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
}

pub fn run(cmd: BenchCommand, config: &Path) -> anyhow::Result<ExitCode> {
    match cmd {
        BenchCommand::Plugin {
            plugin,
            trust,
            rounds,
        } => {
            let trust = match trust {
                Some(dir) => dir,
                None => KioskConfig::load(config)?.trust_dir,
            };
            bench_plugin(&plugin, &trust, rounds)?;
        }
        BenchCommand::Backend { rounds } => bench_backend(&KioskConfig::load(config)?, rounds)?,
        BenchCommand::Sale {
            vpcd,
            reader,
            rounds,
        } => {
            let (vpcd, reader) = card_slot(vpcd, reader)?;
            sale::run(&KioskConfig::load(config)?, vpcd, &reader, rounds)?
        }
        BenchCommand::Card {
            vpcd,
            reader,
            rounds,
        } => {
            let (vpcd, reader) = card_slot(vpcd, reader)?;
            bench_card(&KioskConfig::load(config)?, vpcd, &reader, rounds)?
        }
        BenchCommand::Cash { notes } => bench_cash(notes)?,
        BenchCommand::Clearing { sales } => clearing::run(sales)?,
        BenchCommand::Ui { idle_secs } => ui::run(config, idle_secs)?,
        BenchCommand::Fleet {
            server,
            codes,
            kiosks,
            minutes,
            login,
            password,
        } => fleet::run(&server, &codes, kiosks, minutes, &login, &password)?,
        BenchCommand::Soak { customers, seed } => {
            if !soak::run(config, customers, seed)? {
                return Ok(ExitCode::FAILURE);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn bench_plugin(path: &Path, trust: &Path, rounds: usize) -> anyhow::Result<()> {
    let name = path
        .file_stem()
        .map_or("plugin".into(), |s| s.to_string_lossy().into_owned());
    for pooling in [true, false] {
        let cache = tempfile::tempdir().context("making a scratch cache directory")?;
        let limits = PluginLimits {
            pooling,
            ..PluginLimits::default()
        };
        let runtime = PluginRuntime::new(
            TrustStore::load(trust)?,
            &cache.path().join("cache"),
            limits,
        )?;
        println!(
            "allocator: {}",
            if pooling { "pooling" } else { "on-demand" }
        );

        let started = Instant::now();
        let plugin = runtime.load(&name, path)?;
        let compile = started.elapsed();
        let mut cached = Vec::new();
        for _ in 0..20 {
            let started = Instant::now();
            runtime.load(&name, path)?;
            cached.push(started.elapsed());
        }
        let mut round_trips = Vec::with_capacity(rounds);
        for _ in 0..rounds.min(200) {
            instantiate_and_call(&plugin)?;
        }
        for _ in 0..rounds {
            let started = Instant::now();
            instantiate_and_call(&plugin)?;
            round_trips.push(started.elapsed());
        }
        println!("compile: {:.1} ms", ms(compile));
        println!("cached load: {:.2} ms", ms(percentile(&mut cached, 50)));
        println!(
            "instantiate+call p50: {:.1} us",
            us(percentile(&mut round_trips, 50))
        );
        println!(
            "instantiate+call p99: {:.1} us",
            us(percentile(&mut round_trips, 99))
        );
    }
    Ok(())
}

fn bench_backend(config: &KioskConfig, rounds: usize) -> anyhow::Result<()> {
    let books = tempfile::tempdir().context("making a scratch directory for the books")?;
    let backend = ReferenceBackend::start(&books.path().join("books.sqlite"), Listen::default())?;
    let runtime = selfvend_ui::kiosk::runtime(config)?;
    let mut ran = 0;
    for entry in config
        .plugins
        .iter()
        .filter(|p| p.role == PluginRole::BackendDialect)
    {
        let plugin = runtime.load(&entry.name, &entry.file)?;
        let info = plugin.backend_session(endpoint(String::new()))?.about()?;
        // The reference backend speaks each dialect on its own port; a seeded card per utility.
        let (address, card_serial, utility) = match info.name.as_str() {
            "fixed-text" => (backend.fixed_text_address(), "3701000000000001", "3701"),
            "json-http" => (backend.json_http_address(), "4401000000000001", "4401"),
            other => {
                println!(
                    "{}: the reference backend does not speak {other}",
                    entry.name
                );
                continue;
            }
        };
        let mut card = CardRef {
            card_serial: card_serial.into(),
            utility_code: utility.into(),
            ..CardRef::default()
        };
        // Kiosk serials are unique per terminal: one terminal per dialect.
        let terminal_id = format!("BENCH-{}", info.name);
        let mut samples = Vec::with_capacity(rounds);
        for serial in 1..=(rounds + rounds / 10) as u64 {
            let started = Instant::now();
            let mut session = plugin.backend_session(endpoint(address.to_string()))?;
            session.account_query(&card)?;
            let grant = session.sale(&SaleRequest {
                terminal_id: terminal_id.clone(),
                kiosk_serial: serial,
                card: card.clone(),
                purchase: Purchase::Money(Fen(1000)),
                payment: PaymentKind::Cash,
                paid: Fen(1000),
            })?;
            session.confirm_write(&WriteConfirmation {
                terminal_id: terminal_id.clone(),
                kiosk_serial: serial,
                card_serial: card.card_serial.clone(),
                written: true,
                return_data: None,
            })?;
            card.purchase_count = grant.purchase_count;
            // The first tenth warms caches and is not counted.
            if serial as usize > rounds / 10 {
                samples.push(started.elapsed());
            }
        }
        println!(
            "{} ({} over {}): sale round trip p50: {:.2} ms, p99: {:.2} ms",
            entry.name,
            info.name,
            address,
            ms(percentile(&mut samples, 50)),
            ms(percentile(&mut samples, 99))
        );
        ran += 1;
    }
    if ran == 0 {
        anyhow::bail!(
            "{} configures no backend dialect the reference backend speaks",
            config.path.display()
        );
    }
    Ok(())
}

/// Counts the APDUs a codec sends through the real reader.
struct Counting {
    card: PcscCard,
    apdus: usize,
}

impl CardChannel for Counting {
    fn atr(&self) -> Vec<u8> {
        self.card.atr()
    }
    fn reader_kind(&self) -> ReaderKind {
        self.card.reader_kind()
    }
    fn transmit(&mut self, command: &[u8]) -> Result<Vec<u8>, ChannelError> {
        self.apdus += 1;
        self.card.transmit(command)
    }
}

/// What the bench needs of each vendor's card: how to issue it, how its meter takes a credit,
/// and the fewest APDUs its layout allows for a credit write.
enum BenchCard {
    Memory(Arc<Mutex<Sle4442>>),
    Cpu(Arc<Mutex<CpuCard>>),
}

/// Where the benches insert their virtual cards, and the reader that shows them: the one
/// given; else the first slot of the rig's pcscd (`./dev run` starts it and names its port in
/// `SELFVEND_VPCD_PORT`); else a system pcscd's vpcd at its packaged port.
fn card_slot(
    vpcd: Option<SocketAddr>,
    reader: Option<String>,
) -> anyhow::Result<(SocketAddr, String)> {
    let rig = std::env::var("SELFVEND_VPCD_PORT").ok();
    let (default_vpcd, default_reader) = match (&rig, vpcd) {
        (Some(port), None) => {
            let port: u16 = port
                .parse()
                .with_context(|| format!("SELFVEND_VPCD_PORT `{port}` is not a port"))?;
            (
                SocketAddr::from(([127, 0, 0, 1], port)),
                "selfvend vpcd 00 00",
            )
        }
        _ => (
            SocketAddr::from(([127, 0, 0, 1], 35963)),
            "Virtual PCD 00 00",
        ),
    };
    Ok((
        vpcd.unwrap_or(default_vpcd),
        reader.unwrap_or_else(|| default_reader.to_string()),
    ))
}

fn bench_card(
    config: &KioskConfig,
    vpcd: SocketAddr,
    reader: &str,
    rounds: usize,
) -> anyhow::Result<()> {
    let codecs = crate::card_cmd::card_codecs(config)?;
    let books = tempfile::tempdir().context("making a scratch directory for the books")?;
    let backend = ReferenceBackend::start(&books.path().join("books.sqlite"), Listen::default())?;
    let runtime = selfvend_ui::kiosk::runtime(config)?;
    let readers = Readers::establish()?;
    let machine = EncryptionMachine::default();
    for (card, utility, minimum) in [
        (
            BenchCard::Memory(Arc::new(Mutex::new(sle4442::ht01::issue(
                &machine,
                "3701000000000001",
                "3701",
                "C370100001",
                "M3701000001",
            )))),
            "3701",
            "4: read the slots, present the PSC, write the slot body, write its CRC",
        ),
        (
            BenchCard::Cpu(Arc::new(Mutex::new(CpuCard::issue(
                &machine,
                "4401000000000001",
                "4401",
                "C440100001",
                "M4401000001",
            )))),
            "4401",
            "6: select, read the wallet, get challenge, external authenticate, get challenge, \
             update with MAC",
        ),
    ] {
        let entry = config
            .backend_for(utility)
            .with_context(|| format!("no backend serves utility {utility}"))?;
        let dialect = config
            .plugins
            .iter()
            .find(|p| p.name == entry.dialect)
            .with_context(|| format!("no [[plugin]] named `{}`", entry.dialect))?;
        let dialect = runtime.load(&dialect.name, &dialect.file)?;
        let name = dialect
            .backend_session(endpoint(String::new()))?
            .about()?
            .name;
        let address = match name.as_str() {
            "fixed-text" => backend.fixed_text_address(),
            "json-http" => backend.json_http_address(),
            other => anyhow::bail!("the reference backend does not speak {other}"),
        };
        let inserted = match &card {
            BenchCard::Memory(c) => Inserted::insert(c.clone(), vpcd),
            BenchCard::Cpu(c) => Inserted::insert(c.clone(), vpcd),
        }
        .with_context(|| format!("inserting a virtual card at vpcd {vpcd}"))?;
        if !readers.wait(reader, true, Some(Duration::from_secs(10)))? {
            anyhow::bail!("reader `{reader}` did not see the card inserted at {vpcd}");
        }
        let mut meter = Meter::new(
            if utility == "3701" {
                "M3701000001"
            } else {
                "M4401000001"
            },
            machine.clone(),
        );
        let mut sessions = Vec::with_capacity(rounds);
        let mut counts = (0, 0, 0, 0);
        let mut codec_name = String::new();
        for serial in 1..=rounds as u64 {
            let counting = Arc::new(Mutex::new(Counting {
                card: readers.connect(reader)?,
                apdus: 0,
            }));
            let shared: SharedCard = counting.clone();
            let apdus = || {
                let mut c = counting.lock().unwrap_or_else(|p| p.into_inner());
                std::mem::take(&mut c.apdus)
            };
            let started = Instant::now();
            let found = codecs::identify(&codecs, &shared)?;
            codec_name = found.codec.name.clone();
            let mut session = found.session;
            let identify = apdus();
            let data = session.read(&shared)?;
            let read = apdus();
            let card_ref = CardRef {
                card_serial: data.card_serial.clone(),
                utility_code: data.utility_code.clone(),
                purchase_count: data.purchase_count,
                ..CardRef::default()
            };
            let sale_started = Instant::now();
            let granted = dialect
                .backend_session(endpoint(address.to_string()))?
                .sale(&SaleRequest {
                    terminal_id: "BENCH-CARD".into(),
                    kiosk_serial: serial + if utility == "3701" { 0 } else { 1 << 32 },
                    card: card_ref.clone(),
                    purchase: Purchase::Money(Fen(1000)),
                    payment: PaymentKind::Cash,
                    paid: Fen(1000),
                })?;
            let sale_time = sale_started.elapsed();
            let grant = CreditGrant {
                card_serial: data.card_serial.clone(),
                purchase_count: granted.purchase_count,
                amount: granted.amount,
                energy: granted.energy,
                token: granted.token,
            };
            let authority: SharedAuthority = Arc::new(Mutex::new(BackendAuthority::new(
                dialect.backend_session(endpoint(address.to_string()))?,
                card_ref,
            )));
            session.write_credit(&shared, &grant, &authority)?;
            let write = apdus();
            if session.verify(&shared, &grant)? != VerifyOutcome::Written {
                anyhow::bail!("{codec_name}: the card does not carry the grant it was just given");
            }
            let verify = apdus();
            sessions.push(started.elapsed() - sale_time);
            counts = (identify, read, write, verify);
            // The customer takes the card to the meter so the next sale can be written.
            let taken = match &card {
                BenchCard::Memory(c) => meter.insert_hengtai(&mut lock(c)),
                BenchCard::Cpu(c) => meter.insert_lanling(&mut lock(c)),
            };
            if !matches!(taken, MeterInsert::Credited { .. }) {
                anyhow::bail!("{codec_name}: the meter did not take the credit: {taken:?}");
            }
        }
        drop(inserted);
        readers.wait(reader, false, Some(Duration::from_secs(10)))?;
        println!(
            "{codec_name}: write-credit {} APDUs (layout minimum {minimum}); identify {}, read {}, verify {}",
            counts.2, counts.0, counts.1, counts.3
        );
        println!(
            "{codec_name}: card session (identify, read, write, verify) through pcscd p50: {:.1} ms, p99: {:.1} ms",
            ms(percentile(&mut sessions, 50)),
            ms(percentile(&mut sessions, 99))
        );
    }
    Ok(())
}

/// Feeds `notes` banknotes (each denomination in turn) through the simulated ID-003 validator
/// on a pty, stacking every one, and prints the driver's overhead per banknote.
///
/// Method: the driver adds up the time it spends blocked reading the port (the validator
/// answering, the simulator's own work included) and sleeping between polls
/// ([`Id003Acceptor::time_waiting`]): those are the protocol's waits. The rest of the wall time
/// is the host's own — framing, CRCs, the event state machine, the handler, the writes — and
/// the overhead is that rest divided by the banknotes. Polls are not paced here (interval 0),
/// which keeps the run short and leaves the overhead unchanged; power up and initialisation
/// happen before the clock starts.
fn bench_cash(notes: usize) -> anyhow::Result<()> {
    struct Counter {
        credited: Fen,
        stacked: usize,
    }
    impl CashHandler for Counter {
        fn event(&mut self, event: &CashEvent) -> Result<(), NotRecorded> {
            match event {
                CashEvent::Credited(note) => {
                    self.credited = self
                        .credited
                        .checked_add(note.value())
                        .ok_or_else(|| NotRecorded("the credited total overflows".into()))?;
                }
                CashEvent::Stacked(_) => self.stacked += 1,
                _ => {}
            }
            Ok(())
        }
        fn decide(&mut self, _: Denomination) -> EscrowDecision {
            EscrowDecision::Stack
        }
    }

    anyhow::ensure!(notes > 0, "--notes must be at least 1");
    let validator = SimulatedValidator::start().context("starting the simulated validator")?;
    let settings = Id003Settings {
        reply_timeout: Duration::from_secs(2),
        poll_interval: Duration::ZERO,
    };
    let mut acceptor = Id003Acceptor::open(Path::new(validator.path()), 9600, settings)?;
    acceptor.enable(&Denomination::ALL)?;
    let mut counter = Counter {
        credited: Fen(0),
        stacked: 0,
    };
    while !validator.is_idle() {
        acceptor.poll(&mut counter)?;
    }

    let mut expected = Fen(0);
    for i in 0..notes {
        let note = Denomination::ALL[i % Denomination::ALL.len()];
        let yuan = u32::try_from(note.value().0 / 100).context("a banknote's value in yuan")?;
        validator.act(Action::Insert(yuan));
        expected = expected
            .checked_add(note.value())
            .context("the total overflows")?;
    }
    let waited_before = acceptor.time_waiting();
    let started = Instant::now();
    let mut polls = 0u64;
    while counter.stacked < notes {
        acceptor.poll(&mut counter)?;
        polls += 1;
    }
    let total = started.elapsed();
    let waiting = acceptor.time_waiting() - waited_before;

    let tally = validator.tally();
    if counter.credited != expected || tally.credited.len() != notes {
        anyhow::bail!(
            "credited {} yuan by the driver and {} banknotes by the validator; fed {notes} \
             banknotes worth {expected} yuan",
            counter.credited,
            tally.credited.len()
        );
    }
    println!(
        "{notes} banknotes ({expected} yuan) credited once each in {:.2} s over {}, {:.1} status \
         requests per banknote",
        total.as_secs_f64(),
        validator.path(),
        polls as f64 / notes as f64
    );
    println!(
        "driver overhead per banknote: {:.0} us",
        us(total.saturating_sub(waiting)) / notes as f64
    );
    Ok(())
}

fn endpoint(address: String) -> Endpoint {
    Endpoint {
        address,
        connect_timeout: Duration::from_millis(1000),
        io_timeout: Duration::from_millis(5000),
        max_request_bytes: 64 * 1024,
        max_reply_bytes: 64 * 1024,
    }
}

fn instantiate_and_call(plugin: &Plugin) -> anyhow::Result<()> {
    match plugin.kind() {
        PluginKind::CardCodec => {
            plugin.card_session()?.about()?;
        }
        PluginKind::BackendDialect => {
            plugin.backend_session(endpoint(String::new()))?.about()?;
        }
        PluginKind::AcquirerDialect => {
            plugin
                .acquirer_session(endpoint(String::new()), None)?
                .about()?;
        }
    }
    Ok(())
}

fn percentile(samples: &mut [Duration], p: usize) -> Duration {
    samples.sort();
    samples[(samples.len() * p / 100).min(samples.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}
