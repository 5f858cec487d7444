//! A whole kiosk on the rigs for end-to-end sale tests: the sale engine over a journal on
//! disk, a virtual card slot in the rig's pcscd, two utilities' reference backends on loopback
//! (Jinan speaking fixed-text, Guangzhou JSON over HTTP), the ID-003 validator and the ESC/POS
//! printer on ptys, and an operator whose PIN is [`OPERATOR_PIN`].

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use selfvend_host::backend::Purchase;
use selfvend_host::card_reader::Readers;
use selfvend_host::clearing;
use selfvend_host::config::{KioskConfig, PinHash};
use selfvend_host::escpos::EscPosPrinter;
use selfvend_host::id003::{Id003Acceptor, Id003Settings};
use selfvend_host::journal::Journal;
use selfvend_host::money::Fen;
use selfvend_host::plugin::{Plugin, SharedCard};
use selfvend_host::sale::{CashSession, Outcome, SaleEngine};
use selfvend_sim::encryption_machine::EncryptionMachine;
use selfvend_sim::escpos_printer::{Printout, SimulatedPrinter};
use selfvend_sim::id003_validator::{Action, SimulatedValidator};
use selfvend_sim::meter::{Meter, MeterInsert};
use selfvend_sim::reference_backend::{Listen, ReferenceBackend};
use selfvend_sim::sle4442;
use selfvend_sim::vpcd::{Inserted, SlotFaults, VirtualCard, lock};

use crate::{ReaderSlot, SignedPlugins};

pub const WAIT: Option<Duration> = Some(Duration::from_secs(10));
/// The demo operator's PIN in this rig's config.
pub const OPERATOR_PIN: &str = "246810";

pub const PATIENCE: Duration = Duration::from_secs(5);

/// The world around a kiosk: its config and signed plugins, a reader slot, both utilities'
/// backends, the validator and the printer (their far ends), and where the journal lives.
pub struct World {
    pub config: KioskConfig,
    pub files: Vec<(&'static str, PathBuf)>,
    pub journal: PathBuf,
    pub slot: ReaderSlot,
    pub readers: Readers,
    /// Utility 3701's backend (memory cards, fixed-text dialect).
    pub jinan: ReferenceBackend,
    /// Utility 4401's backend (CPU cards, JSON dialect).
    pub guangzhou: ReferenceBackend,
    pub validator: Arc<SimulatedValidator>,
    pub printer_sim: SimulatedPrinter,
    pub machine: EncryptionMachine,
    _dir: tempfile::TempDir,
    pub plugins: SignedPlugins,
}

/// A kiosk on the rigs: the world, and the engine with the devices open in this process.
pub struct Kiosk {
    pub world: World,
    pub engine: SaleEngine,
    pub acceptor: Id003Acceptor,
    pub printer: EscPosPrinter,
}

impl std::ops::Deref for Kiosk {
    type Target = World;
    fn deref(&self) -> &World {
        &self.world
    }
}

impl std::ops::DerefMut for Kiosk {
    fn deref_mut(&mut self) -> &mut World {
        &mut self.world
    }
}

/// The rigs' `[policy]`: tests re-sell without waiting, and take a backend's "no such sale" at
/// once (its request cannot be in flight: the rig's kiosk stopped, or the backend answered).
/// The plugins the rig's kiosk loads: name, role and the built guest.
const RIG_PLUGINS: [(&str, &str, &str); 4] = [
    ("hengtai-sle4442", "card-codec", "hengtai_sle4442_codec"),
    ("lanling-cpu", "card-codec", "lanling_cpu_codec"),
    ("fixed-text", "backend-dialect", "fixed_text_dialect"),
    ("json-http", "backend-dialect", "json_http_dialect"),
];

const RIG_POLICY: [(&str, &str); 2] = [
    ("resell_first_delay_secs", "0"),
    ("unknown_outcome_settle_secs", "0"),
];

impl World {
    pub fn new() -> World {
        World::with_policy(&[])
    }

    /// A world whose kiosk has these `[policy]` keys beside (or instead of) the rig's.
    pub fn with_policy(policy: &[(&str, &str)]) -> World {
        World::configured(policy, "")
    }

    /// A world whose kiosk config has `policy` keys and then the tables in `extra`.
    pub fn configured(policy: &[(&str, &str)], extra: &str) -> World {
        World::build(policy, extra, RIG_PLUGINS)
    }

    /// A world whose kiosk runs the fixed-text dialect as built against contract 1.0
    /// (`wit/backend-1.0`), for jinan's cards.
    pub fn with_contract_1_0_dialect() -> World {
        let mut plugins = RIG_PLUGINS;
        plugins[2].2 = "fixed_text_dialect_1_0";
        World::build(&[], "", plugins)
    }

    fn build(
        policy: &[(&str, &str)],
        extra: &str,
        plugin_files: [(&'static str, &'static str, &'static str); 4],
    ) -> World {
        let slot = ReaderSlot::take();
        let dir = tempfile::tempdir().unwrap();
        let jinan =
            ReferenceBackend::start(&dir.path().join("jinan.sqlite"), Listen::default()).unwrap();
        let guangzhou =
            ReferenceBackend::start(&dir.path().join("guangzhou.sqlite"), Listen::default())
                .unwrap();
        let plugins = SignedPlugins::new();
        let files = plugin_files.map(|(name, role, file)| (name, role, plugins.signed(file)));
        let mut toml = String::from(
            "[kiosk]\nterminal_id = \"K-SALE-01\"\nregion = \"3701\"\ndata_dir = \"data\"\n\
             [trust]\ndir = \"trust\"\n",
        );
        toml += &format!(
            "[operator]\npin_hash = \"{}\"\n",
            clearing::hash_pin(OPERATOR_PIN, PinHash::MIN_ITERATIONS).unwrap()
        );
        toml += "[policy]\n";
        for (key, value) in RIG_POLICY
            .iter()
            .filter(|(k, _)| !policy.iter().any(|(p, _)| p == k))
            .chain(policy)
        {
            toml += &format!("{key} = {value}\n");
        }
        for (name, role, file) in &files {
            toml += &format!(
                "[[plugin]]\nname = \"{name}\"\nrole = \"{role}\"\nfile = \"{}\"\n",
                file.display()
            );
        }
        toml += &format!(
            "[[backend]]\nname = \"jinan-power\"\ndialect = \"fixed-text\"\nutility_codes = [\"3701\"]\n\
             address = \"{}\"\n[[backend]]\nname = \"guangzhou-power\"\ndialect = \"json-http\"\n\
             utility_codes = [\"4401\"]\naddress = \"{}\"\n",
            jinan.fixed_text_address(),
            guangzhou.json_http_address()
        );
        toml += extra;
        // Written out too, so the operator CLI can be run against this kiosk.
        let config_path = plugins.dir.path().join("kiosk.toml");
        std::fs::write(&config_path, &toml).unwrap();
        let config = KioskConfig::load(&config_path).unwrap();
        let files: Vec<(&'static str, PathBuf)> =
            files.into_iter().map(|(n, _, f)| (n, f)).collect();
        std::fs::create_dir_all(&config.kiosk.data_dir).unwrap();
        let journal = config.kiosk.data_dir.join("journal.sqlite");
        let validator = Arc::new(SimulatedValidator::start().unwrap());
        let printer_sim = SimulatedPrinter::start().unwrap();
        World {
            config,
            files,
            journal,
            readers: Readers::establish().unwrap(),
            slot,
            jinan,
            guangzhou,
            validator,
            printer_sim,
            machine: EncryptionMachine::default(),
            _dir: dir,
            plugins,
        }
    }
}

impl World {
    /// The host's connection to the card in the slot.
    pub fn connect(&self) -> SharedCard {
        Arc::new(Mutex::new(self.readers.connect(&self.slot.reader).unwrap()))
    }
}

impl Default for World {
    fn default() -> Self {
        Self::new()
    }
}

impl Kiosk {
    /// A world, and a kiosk in this process with its engine and devices open.
    pub fn new() -> Kiosk {
        Kiosk::with_policy(&[])
    }

    /// [`Kiosk::new`], with these `[policy]` keys (see [`World::with_policy`]).
    pub fn with_policy(policy: &[(&str, &str)]) -> Kiosk {
        Kiosk::configured(policy, "")
    }

    /// [`Kiosk::new`], with the config of [`World::configured`].
    pub fn configured(policy: &[(&str, &str)], extra: &str) -> Kiosk {
        Kiosk::in_world(World::configured(policy, extra))
    }

    /// A kiosk in this process, its engine and devices open, in `world`.
    pub fn in_world(world: World) -> Kiosk {
        let engine = engine(&world.plugins, &world.config, &world.files, &world.journal);
        let acceptor = Id003Acceptor::open(
            Path::new(world.validator.path()),
            9600,
            Id003Settings {
                reply_timeout: Duration::from_millis(500),
                poll_interval: Duration::from_millis(1),
            },
        )
        .unwrap();
        let printer = EscPosPrinter::open(Path::new(world.printer_sim.path()), 9600).unwrap();
        Kiosk {
            world,
            engine,
            acceptor,
            printer,
        }
    }

    /// The kiosk restarts: a new engine over the same journal and plugins.
    pub fn restart(&mut self) {
        self.engine = engine(
            &self.world.plugins,
            &self.world.config,
            &self.world.files,
            &self.world.journal,
        );
    }

    /// The dialect plugins, loaded afresh (clearing reconciles through them).
    pub fn dialects(&self) -> Vec<Plugin> {
        let runtime = self.plugins.runtime();
        self.files
            .iter()
            .filter(|(n, _)| ["fixed-text", "json-http"].contains(n))
            .map(|(n, f)| runtime.load(n, f).unwrap())
            .collect()
    }

    /// A complete cash sale of `fen`, paid in one banknote of that value; the receipt is
    /// taken off the printer.
    pub fn sell<C: VirtualCard>(&mut self, card: &Arc<Mutex<C>>, fen: u64) {
        let (_inserted, mut s) = self.paid_session(card, fen);
        let done = self.engine.complete(&mut s, &mut self.printer).unwrap();
        assert!(
            matches!(done.outcome, Outcome::Credited { .. }),
            "{:?}",
            done.outcome
        );
        self.printer_sim.take_printed();
    }

    pub fn insert<C: VirtualCard>(&self, card: &Arc<Mutex<C>>) -> (Inserted, SharedCard) {
        let inserted = insert_into(self, card);
        (inserted, self.connect())
    }

    /// Inserts `card`, starts a session, chooses `fen` and pays it in one note of that value.
    pub fn paid_session<C: VirtualCard>(
        &mut self,
        card: &Arc<Mutex<C>>,
        fen: u64,
    ) -> (Inserted, CashSession) {
        let inserted = insert_into(self, card);
        (inserted, self.pay(fen))
    }

    /// With a card in the slot: starts a session, chooses `fen` and pays it in one note.
    pub fn pay(&mut self, fen: u64) -> CashSession {
        let channel = self.connect();
        let mut s = self.engine.start(channel).unwrap();
        self.engine
            .quote(&mut s, Purchase::Money(Fen(fen)))
            .unwrap();
        self.validator.act(Action::Insert((fen / 100) as u32));
        let paid = self
            .engine
            .take_cash(&mut s, &mut self.acceptor, PATIENCE)
            .unwrap();
        assert_eq!(paid, Fen(fen));
        s
    }

    pub fn printed_lines(&self) -> Vec<String> {
        self.printer_sim
            .take_printed()
            .into_iter()
            .map(|p| match p {
                Printout::Line(l) => l.text,
                Printout::Cut => "--- cut ---".into(),
                Printout::Unknown(b) => format!("unknown {b:02X?}"),
            })
            .collect()
    }

    pub fn journal_kinds(&self) -> Vec<String> {
        self.engine
            .journal()
            .entries(1, 1000)
            .unwrap()
            .into_iter()
            .map(|e| e.kind)
            .collect()
    }
}

/// An engine over the journal at `journal`, with freshly loaded plugins.
pub fn engine(
    plugins: &SignedPlugins,
    config: &KioskConfig,
    files: &[(&'static str, PathBuf)],
    journal: &Path,
) -> SaleEngine {
    let runtime = plugins.runtime();
    let load = |names: &[&str]| -> Vec<Plugin> {
        files
            .iter()
            .filter(|(n, _)| names.contains(n))
            .map(|(n, f)| runtime.load(n, f).unwrap())
            .collect()
    };
    SaleEngine::new(
        config,
        Journal::open(journal).unwrap(),
        load(&["hengtai-sle4442", "lanling-cpu"]),
        load(&["fixed-text", "json-http"]),
    )
}

/// 张三's memory card, as issued.
pub fn zhang_san(k: &World) -> Arc<Mutex<selfvend_sim::sle4442::Sle4442>> {
    Arc::new(Mutex::new(sle4442::ht01::issue(
        &k.machine,
        "3701000000000001",
        "3701",
        "C370100001",
        "M3701000001",
    )))
}

/// 陈小明's CPU card, as issued.
pub fn chen_xiaoming(k: &World) -> Arc<Mutex<selfvend_sim::cpu_card::CpuCard>> {
    Arc::new(Mutex::new(selfvend_sim::cpu_card::CpuCard::issue(
        &k.machine,
        "4401000000000001",
        "4401",
        "C440100001",
        "M4401000001",
    )))
}

fn insert_into<C: VirtualCard>(w: &World, card: &Arc<Mutex<C>>) -> Inserted {
    assert!(w.readers.wait(&w.slot.reader, false, WAIT).unwrap());
    let inserted = Inserted::insert(card.clone(), w.slot.address).unwrap();
    assert!(w.readers.wait(&w.slot.reader, true, WAIT).unwrap());
    inserted
}

/// A card a test sells to, as the outside world sees it: either vendor's, with its utility.
pub trait TestCard {
    fn insert(&self, w: &World) -> Inserted;
    /// The purchase count the card carries.
    fn purchase_count(&self) -> u64;
    fn serial(&self) -> &'static str;
    /// Its utility's backend.
    fn backend<'w>(&self, w: &'w World) -> &'w ReferenceBackend;
    fn carry_to_meter(&self, w: &World) -> MeterInsert;
    /// The card leaves the reader (`inserted`) at point `at` of what the host does next: a
    /// memory card after writing `at` bytes, a CPU card after answering `at` APDUs.
    fn tear(&self, inserted: &Inserted, at: u32);
}

pub struct MemoryCard(pub Arc<Mutex<selfvend_sim::sle4442::Sle4442>>);
pub struct CpuCard(pub Arc<Mutex<selfvend_sim::cpu_card::CpuCard>>);

impl TestCard for MemoryCard {
    fn insert(&self, w: &World) -> Inserted {
        insert_into(w, &self.0)
    }
    fn purchase_count(&self) -> u64 {
        sle4442::ht01::current(&lock(&self.0)).map_or(0, |(_, s)| u64::from(s.purchase_count))
    }
    fn serial(&self) -> &'static str {
        "3701000000000001"
    }
    fn backend<'w>(&self, w: &'w World) -> &'w ReferenceBackend {
        &w.jinan
    }
    fn carry_to_meter(&self, w: &World) -> MeterInsert {
        Meter::new("M3701000001", w.machine.clone()).insert_hengtai(&mut lock(&self.0))
    }
    fn tear(&self, _: &Inserted, at: u32) {
        lock(&self.0).tear_after_bytes = Some(at);
    }
}

impl TestCard for CpuCard {
    fn insert(&self, w: &World) -> Inserted {
        insert_into(w, &self.0)
    }
    fn purchase_count(&self) -> u64 {
        let wallet = lock(&self.0).wallet;
        u64::from(u32::from_be_bytes([
            wallet[0], wallet[1], wallet[2], wallet[3],
        ]))
    }
    fn serial(&self) -> &'static str {
        "4401000000000001"
    }
    fn backend<'w>(&self, w: &'w World) -> &'w ReferenceBackend {
        &w.guangzhou
    }
    fn carry_to_meter(&self, w: &World) -> MeterInsert {
        Meter::new("M4401000001", w.machine.clone()).insert_lanling(&mut lock(&self.0))
    }
    fn tear(&self, inserted: &Inserted, at: u32) {
        inserted.arm(SlotFaults {
            pull_after: Some(at),
            ..SlotFaults::default()
        });
    }
}

/// Issues a card for a test: either vendor's.
pub type Issue = fn(&World) -> Box<dyn TestCard>;

/// 张三's Hengtai memory card.
pub fn memory_card(w: &World) -> Box<dyn TestCard> {
    Box::new(MemoryCard(zhang_san(w)))
}

/// 陈小明's Lanling CPU card.
pub fn cpu_card(w: &World) -> Box<dyn TestCard> {
    Box::new(CpuCard(chen_xiaoming(w)))
}

/// Every sale's serial and state, in serial order.
pub fn sale_states(k: &Kiosk) -> Vec<(u64, String)> {
    k.engine
        .journal()
        .sales(selfvend_host::sale::SALE_STATES, None)
        .unwrap()
        .into_iter()
        .map(|r| (r.serial, r.state))
        .collect()
}

impl Default for Kiosk {
    fn default() -> Self {
        Self::new()
    }
}
