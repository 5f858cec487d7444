//! The plugin runtime: one engine, one linker per plugin kind, a pre-instantiated component
//! per plugin, and a fresh sandboxed instance per customer session.
//!
//! Loading a plugin: read bytes → check the detached signature against the trust store →
//! read its declarations (kind, contract version, imports against the allowlist) → load the
//! compiled code from the host's cache or compile it → link it once into an `InstancePre`.
//! Nothing untrusted is compiled, and nothing compiled elsewhere is loaded.

pub mod cache;
pub mod inspect;
pub mod installed;
pub mod log;
pub mod trust;

mod acquirer;
mod backend_v1;
mod bounded_sleep;
mod card_v1;
mod payment_v1;

pub use acquirer::{AcquirerCallError, AcquirerSession};

use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, HasSelf, Linker, ResourceTable};
use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, ResourceLimiter, Store,
    Trap, UpdateDeadline,
};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::backend::{self as net, Endpoint, WireRecord};
use crate::card::{self, CardAuthority, CardChannel};
use cache::{CodeCache, Lookup};
use inspect::{Inspection, PluginKind};
use log::PluginLog;
use trust::{Signer, TrustStore};

/// The card in a reader, shared between its device and the codec calls that use it.
pub type SharedCard = Arc<Mutex<dyn CardChannel>>;
/// The utility's authority for one card write.
pub type SharedAuthority = Arc<Mutex<dyn CardAuthority>>;

pub use selfvend_config::PluginLimits;

/// Why a plugin could not be loaded, or a call into it failed.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    #[error(transparent)]
    Trust(#[from] trust::TrustError),
    #[error("{path}: {cause}")]
    Read {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("{path}: refused: {cause}")]
    Refused {
        path: PathBuf,
        cause: inspect::InspectError,
    },
    #[error("{path}: does not compile: {reason}")]
    Compile { path: PathBuf, reason: String },
    #[error("{path}: does not link: {reason}")]
    Link { path: PathBuf, reason: String },
    #[error(transparent)]
    Cache(#[from] cache::CacheError),
    #[error("the plugin engine could not start: {0}")]
    Engine(String),
    #[error("plugin {plugin} is a {found}, not a {expected}")]
    WrongKind {
        plugin: String,
        expected: PluginKind,
        found: PluginKind,
    },
    #[error("plugin {plugin}: {call} ran past its {deadline_ms} ms deadline and was stopped")]
    Timeout {
        plugin: String,
        call: &'static str,
        deadline_ms: u128,
    },
    #[error(
        "plugin {plugin}: {call} tried to grow memory past its {cap_mib} MiB cap and was stopped"
    )]
    MemoryExceeded {
        plugin: String,
        call: &'static str,
        cap_mib: usize,
    },
    #[error("plugin {plugin}: {call} trapped: {reason}{}", log_note(.log_tail))]
    Trapped {
        plugin: String,
        call: &'static str,
        reason: String,
        log_tail: String,
    },
    #[error("plugin {plugin}: {call} returned a bad result: {reason}")]
    BadResult {
        plugin: String,
        call: &'static str,
        reason: String,
    },
    #[error("plugin {plugin}: this instance failed earlier and was discarded; start a new session")]
    Discarded { plugin: String },
}

fn log_note(tail: &str) -> String {
    if tail.is_empty() {
        String::new()
    } else {
        format!(" (plugin log: {tail})")
    }
}

/// The runtime: one engine for every plugin, a linker per plugin kind.
pub struct PluginRuntime {
    engine: Engine,
    ticker: Arc<EpochTicker>,
    card_linker: Linker<PluginState>,
    backend_linker: Linker<PluginState>,
    acquirer_linker: Linker<PluginState>,
    trust: TrustStore,
    /// False only in the kit's runtime, which loads plugins nobody signed yet.
    verify_signatures: bool,
    cache: CodeCache,
    limits: PluginLimits,
}

impl std::fmt::Debug for PluginRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginRuntime")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

/// How often the epoch advances; deadlines are whole ticks.
const EPOCH_TICK: Duration = Duration::from_millis(5);

impl PluginRuntime {
    /// Builds the engine and linkers; compiled code is cached in `cache_dir`.
    pub fn new(
        trust: TrustStore,
        cache_dir: &Path,
        limits: PluginLimits,
    ) -> Result<Self, PluginError> {
        let engine = engine(&limits).map_err(|e| PluginError::Engine(e.to_string()))?;
        let ticker = EpochTicker::start(&engine);
        let cache = CodeCache::open(cache_dir, &engine)?;
        let link_err =
            |e: wasmtime::Error| PluginError::Engine(format!("linking host functions: {e}"));
        let mut card_linker = bounded_sleep::wasi_linker(&engine).map_err(link_err)?;
        card_v1::CardCodec::add_to_linker::<_, HasSelf<_>>(&mut card_linker, |s| s)
            .map_err(link_err)?;
        let mut backend_linker = bounded_sleep::wasi_linker(&engine).map_err(link_err)?;
        backend_v1::BackendDialect::add_to_linker::<_, HasSelf<_>>(&mut backend_linker, |s| s)
            .map_err(link_err)?;
        let mut acquirer_linker = bounded_sleep::wasi_linker(&engine).map_err(link_err)?;
        payment_v1::AcquirerDialect::add_to_linker::<_, HasSelf<_>>(&mut acquirer_linker, |s| s)
            .map_err(link_err)?;
        Ok(PluginRuntime {
            engine,
            ticker,
            card_linker,
            backend_linker,
            acquirer_linker,
            trust,
            verify_signatures: true,
            cache,
            limits,
        })
    }

    /// The conformance kit's runtime (`selfvend plugin test`): the kiosk's engine and limits,
    /// but it loads plugins without checking a signature. A kiosk never builds one.
    pub fn unsigned(cache_dir: &Path, limits: PluginLimits) -> Result<Self, PluginError> {
        let mut runtime = Self::new(TrustStore::empty(), cache_dir, limits)?;
        runtime.verify_signatures = false;
        Ok(runtime)
    }

    pub fn trust(&self) -> &TrustStore {
        &self.trust
    }

    pub fn limits(&self) -> &PluginLimits {
        &self.limits
    }

    /// Loads, verifies and pre-instantiates the plugin at `path`, named `name` in logs.
    pub fn load(&self, name: &str, path: &Path) -> Result<Plugin, PluginError> {
        let bytes = std::fs::read(path).map_err(|cause| PluginError::Read {
            path: path.to_path_buf(),
            cause,
        })?;
        let signer = if self.verify_signatures {
            self.trust.verify(path, &bytes)?
        } else {
            Signer::unsigned()
        };
        let inspection = inspect::inspect(&bytes).map_err(|cause| PluginError::Refused {
            path: path.to_path_buf(),
            cause,
        })?;
        let sha256 = hex::encode(Sha256::digest(&bytes));
        let started = Instant::now();
        let (component, cache_status) = match self.cache.lookup(&self.engine, &sha256) {
            Lookup::Hit(component) => (component, CacheStatus::Hit),
            Lookup::Miss => (self.compile(path, &bytes, &sha256)?, CacheStatus::Compiled),
            Lookup::Refused(reason) => {
                tracing::warn!(
                    plugin = name,
                    "compiled-code cache entry refused, recompiling: {reason}"
                );
                (
                    self.compile(path, &bytes, &sha256)?,
                    CacheStatus::Recompiled(reason),
                )
            }
        };
        let load_time = started.elapsed();
        let link = |e: wasmtime::Error| PluginError::Link {
            path: path.to_path_buf(),
            reason: e.to_string(),
        };
        let pre = match inspection.kind {
            PluginKind::CardCodec => Pre::Card(
                card_v1::CardCodecPre::new(
                    self.card_linker.instantiate_pre(&component).map_err(link)?,
                )
                .map_err(link)?,
            ),
            PluginKind::BackendDialect => {
                let pre = self
                    .backend_linker
                    .instantiate_pre(&component)
                    .map_err(link)?;
                let dialect = backend_v1::DialectIndices::new(&pre).map_err(link)?;
                // A 1.0 dialect has no `billing`; one that claims 1.1 must export it.
                let billing = (inspection.version >= backend_v1::BILLING)
                    .then(|| backend_v1::BillingIndices::new(&pre))
                    .transpose()
                    .map_err(link)?;
                Pre::Backend(BackendPre {
                    pre,
                    dialect,
                    billing,
                })
            }
            PluginKind::AcquirerDialect => Pre::Acquirer(
                payment_v1::AcquirerDialectPre::new(
                    self.acquirer_linker
                        .instantiate_pre(&component)
                        .map_err(link)?,
                )
                .map_err(link)?,
            ),
        };
        Ok(Plugin {
            name: name.to_string(),
            path: path.to_path_buf(),
            sha256,
            size: bytes.len(),
            signer,
            inspection,
            cache_status,
            load_time,
            pre,
            engine: self.engine.clone(),
            ticker: self.ticker.clone(),
            limits: self.limits.clone(),
        })
    }

    fn compile(&self, path: &Path, bytes: &[u8], sha256: &str) -> Result<Component, PluginError> {
        let component = Component::new(&self.engine, bytes).map_err(|e| PluginError::Compile {
            path: path.to_path_buf(),
            reason: format!("{e:#}"),
        })?;
        self.cache.store(sha256, &component)?;
        Ok(component)
    }
}

fn engine(limits: &PluginLimits) -> wasmtime::Result<Engine> {
    let mut config = Config::new();
    config.wasm_component_model(true);
    config.epoch_interruption(true);
    if limits.pooling {
        let mut pool = PoolingAllocationConfig::default();
        pool.total_component_instances(64);
        pool.total_core_instances(512);
        pool.total_memories(128);
        pool.total_tables(128);
        pool.max_memories_per_component(8);
        pool.max_tables_per_component(8);
        pool.max_core_instances_per_component(32);
        pool.max_memory_size(limits.memory_bytes);
        // Resetting the first 64 KiB with memset beats madvise + page faults for every session:
        // `selfvend bench plugin` measured p50 18.6 us against 22-33 us without it.
        pool.linear_memory_keep_resident(64 << 10);
        pool.table_keep_resident(64 << 10);
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    }
    Engine::new(&config)
}

/// Advances the engine's epoch on a background thread while any plugin instance exists, so an
/// idle kiosk does not wake every tick; the thread ends soon after the engine is dropped.
struct EpochTicker {
    instances: Mutex<usize>,
    woken: Condvar,
}

impl EpochTicker {
    fn start(engine: &Engine) -> Arc<EpochTicker> {
        let ticker = Arc::new(EpochTicker {
            instances: Mutex::new(0),
            woken: Condvar::new(),
        });
        let weak = engine.weak();
        let shared = ticker.clone();
        std::thread::Builder::new()
            .name("plugin-epoch".into())
            .spawn(move || {
                loop {
                    let mut instances = shared.instances.lock().unwrap_or_else(|p| p.into_inner());
                    while *instances == 0 {
                        // Woken by a new instance, or each second to see whether the engine is gone.
                        let (guard, _) = shared
                            .woken
                            .wait_timeout(instances, Duration::from_secs(1))
                            .unwrap_or_else(|p| p.into_inner());
                        instances = guard;
                        if weak.upgrade().is_none() {
                            return;
                        }
                    }
                    drop(instances);
                    let Some(engine) = weak.upgrade() else {
                        return;
                    };
                    engine.increment_epoch();
                    drop(engine);
                    std::thread::sleep(EPOCH_TICK);
                }
            })
            .expect("spawning the epoch thread at start-up");
        ticker
    }

    /// Counts an instance for as long as the returned guard lives.
    fn ticking(self: &Arc<Self>) -> Ticking {
        *self.instances.lock().unwrap_or_else(|p| p.into_inner()) += 1;
        self.woken.notify_one();
        Ticking(self.clone())
    }
}

/// Keeps the epoch advancing while a plugin instance lives.
struct Ticking(Arc<EpochTicker>);

impl Drop for Ticking {
    fn drop(&mut self) {
        *self.0.instances.lock().unwrap_or_else(|p| p.into_inner()) -= 1;
    }
}

/// Where a plugin's compiled code came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheStatus {
    Hit,
    Compiled,
    /// A cache entry was refused (the reason) and the plugin was compiled again.
    Recompiled(String),
}

enum Pre {
    Card(card_v1::CardCodecPre<PluginState>),
    Backend(BackendPre),
    Acquirer(payment_v1::AcquirerDialectPre<PluginState>),
}

/// A backend dialect, linked: its exports are found one by one, so that a dialect of any 1.x
/// contract loads, and `billing` is there only when the dialect has it.
struct BackendPre {
    pre: wasmtime::component::InstancePre<PluginState>,
    dialect: backend_v1::DialectIndices,
    billing: Option<backend_v1::BillingIndices>,
}

/// A verified, compiled and linked plugin, ready to instantiate.
pub struct Plugin {
    pub name: String,
    pub path: PathBuf,
    pub sha256: String,
    pub size: usize,
    pub signer: Signer,
    pub inspection: Inspection,
    pub cache_status: CacheStatus,
    /// Time to get compiled code: a compile, or a cache load.
    pub load_time: Duration,
    pre: Pre,
    engine: Engine,
    ticker: Arc<EpochTicker>,
    limits: PluginLimits,
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin")
            .field("name", &self.name)
            .field("kind", &self.inspection.kind)
            .finish_non_exhaustive()
    }
}

impl Plugin {
    pub fn kind(&self) -> PluginKind {
        self.inspection.kind
    }

    /// The limits every call of this plugin runs under.
    pub fn limits(&self) -> &PluginLimits {
        &self.limits
    }

    /// A fresh card-codec instance for one customer session.
    pub fn card_session(&self) -> Result<CardCodecSession, PluginError> {
        let Pre::Card(pre) = &self.pre else {
            return Err(self.wrong_kind(PluginKind::CardCodec));
        };
        let mut sandbox = self.sandbox(None, None);
        let bindings = sandbox.enter("instantiate", |store| pre.instantiate(store))?;
        Ok(CardCodecSession { sandbox, bindings })
    }

    /// A fresh backend-dialect instance for one session, talking to `endpoint`.
    pub fn backend_session(&self, endpoint: Endpoint) -> Result<BackendSession, PluginError> {
        let Pre::Backend(pre) = &self.pre else {
            return Err(self.wrong_kind(PluginKind::BackendDialect));
        };
        let mut sandbox = self.sandbox(Some(endpoint), None);
        let bindings = sandbox.enter("instantiate", |store| {
            let instance = pre.pre.instantiate(&mut *store)?;
            Ok(BackendExports {
                dialect: pre.dialect.load(&mut *store, &instance)?,
                billing: pre
                    .billing
                    .as_ref()
                    .map(|b| b.load(&mut *store, &instance))
                    .transpose()?,
            })
        })?;
        Ok(BackendSession {
            sandbox,
            bindings,
            overruled: None,
        })
    }

    /// A fresh acquirer-dialect instance for one exchange with the acquirer at `endpoint`;
    /// `security` (the PIN pad) MACs its messages.
    pub fn acquirer_session(
        &self,
        endpoint: Endpoint,
        security: Option<Arc<Mutex<dyn crate::payment::Security>>>,
    ) -> Result<AcquirerSession, PluginError> {
        let Pre::Acquirer(pre) = &self.pre else {
            return Err(self.wrong_kind(PluginKind::AcquirerDialect));
        };
        let mut sandbox = self.sandbox(Some(endpoint), security);
        let bindings = sandbox.enter("instantiate", |store| pre.instantiate(store))?;
        Ok(AcquirerSession::new(sandbox, bindings))
    }

    fn wrong_kind(&self, expected: PluginKind) -> PluginError {
        PluginError::WrongKind {
            plugin: self.name.clone(),
            expected,
            found: self.kind(),
        }
    }

    fn sandbox(
        &self,
        endpoint: Option<Endpoint>,
        security: Option<Arc<Mutex<dyn crate::payment::Security>>>,
    ) -> Sandbox {
        let log = PluginLog::new(&self.name, self.limits.log_bytes);
        let state = PluginState {
            wasi: empty_wasi(&log),
            table: ResourceTable::new(),
            cap: MemoryCap {
                bytes: self.limits.memory_bytes,
                exceeded: false,
            },
            log,
            psc_granted: false,
            apdus_this_call: 0,
            authentications_this_call: 0,
            endpoint,
            security,
            open_connections: 0,
            wire: WireRecord::default(),
            call: "instantiate",
            call_started: Instant::now(),
            host_wait: Duration::ZERO,
            session_wait: Duration::ZERO,
            budget: self.limits.call_deadline,
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.cap);
        store.epoch_deadline_callback(|ctx| match ctx.data().time_left() {
            Duration::ZERO => Ok(UpdateDeadline::Interrupt),
            left => Ok(UpdateDeadline::Continue(ticks(left))),
        });
        Sandbox {
            store,
            _ticking: self.ticker.ticking(),
            plugin: self.name.clone(),
            limits: self.limits.clone(),
            discarded: false,
        }
    }
}

fn ticks(d: Duration) -> u64 {
    (d.as_micros() / EPOCH_TICK.as_micros()) as u64 + 1
}

/// A WASI context that grants nothing: no files, no sockets, no name lookup, no environment or
/// arguments, stdin closed; stdout and stderr go to the plugin's bounded log.
fn empty_wasi(log: &PluginLog) -> WasiCtx {
    WasiCtx::builder()
        .stdout(log.clone())
        .stderr(log.clone())
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false)
        .socket_addr_check(|_, _| Box::pin(async { false }))
        .build()
}

/// Per-instance host state. Lives in the `Store`, so nothing survives a session.
pub struct PluginState {
    wasi: WasiCtx,
    table: ResourceTable,
    cap: MemoryCap,
    log: PluginLog,
    /// The card's PSC was handed out in this session: never again.
    psc_granted: bool,
    apdus_this_call: u32,
    /// Requests to the utility's encryption machine in this call: bounded, since their time is
    /// off the plugin's clock.
    authentications_this_call: u32,
    endpoint: Option<Endpoint>,
    /// What MACs an acquirer dialect's messages (the PIN pad); none for other kinds.
    security: Option<Arc<Mutex<dyn crate::payment::Security>>>,
    open_connections: usize,
    wire: WireRecord,
    /// The export being called, for the host's limits and their messages.
    call: &'static str,
    call_started: Instant,
    /// Time this call spent waiting on the card or the backend, not running plugin code.
    host_wait: Duration,
    /// `host_wait` over every call of this session.
    session_wait: Duration,
    budget: Duration,
}

impl PluginState {
    /// Runs host I/O for the plugin, keeping its time off the plugin's deadline.
    fn waiting<R>(&mut self, f: impl FnOnce(&mut Self) -> R) -> R {
        let started = Instant::now();
        let r = f(self);
        self.host_wait += started.elapsed();
        self.session_wait += started.elapsed();
        r
    }

    /// What is left of this call's deadline: its own time, not its time waiting on the host.
    fn time_left(&self) -> Duration {
        let own_time = self.call_started.elapsed().saturating_sub(self.host_wait);
        self.budget.saturating_sub(own_time)
    }
}

impl WasiView for PluginState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

struct MemoryCap {
    bytes: usize,
    exceeded: bool,
}

impl ResourceLimiter for MemoryCap {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.bytes {
            self.exceeded = true;
            return Err(wasmtime::Error::msg(format!(
                "memory cap of {} bytes reached",
                self.bytes
            )));
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }
}

/// A store and the bookkeeping that turns its failures into `PluginError`s.
struct Sandbox {
    store: Store<PluginState>,
    _ticking: Ticking,
    plugin: String,
    limits: PluginLimits,
    discarded: bool,
}

impl Sandbox {
    /// Enters the plugin for `call`. After any trap the instance is unusable and is discarded.
    fn enter<R>(
        &mut self,
        call: &'static str,
        f: impl FnOnce(&mut Store<PluginState>) -> wasmtime::Result<R>,
    ) -> Result<R, PluginError> {
        // Reset first: a discarded instance's call must not read the last call's wire.
        {
            let state = self.store.data_mut();
            state.apdus_this_call = 0;
            state.authentications_this_call = 0;
            state.wire = WireRecord::default();
            state.call = call;
            state.call_started = Instant::now();
            state.host_wait = Duration::ZERO;
        }
        if self.discarded {
            return Err(PluginError::Discarded {
                plugin: self.plugin.clone(),
            });
        }
        self.store
            .set_epoch_deadline(ticks(self.limits.call_deadline));
        match f(&mut self.store) {
            Ok(r) => Ok(r),
            Err(e) => {
                self.discarded = true;
                Err(self.classify(call, e))
            }
        }
    }

    fn classify(&self, call: &'static str, e: wasmtime::Error) -> PluginError {
        let plugin = self.plugin.clone();
        let state = self.store.data();
        if state.cap.exceeded {
            return PluginError::MemoryExceeded {
                plugin,
                call,
                cap_mib: self.limits.memory_bytes >> 20,
            };
        }
        match e.downcast_ref::<Trap>() {
            Some(Trap::Interrupt) => PluginError::Timeout {
                plugin,
                call,
                deadline_ms: self.limits.call_deadline.as_millis(),
            },
            Some(Trap::StackOverflow) => PluginError::Trapped {
                plugin,
                call,
                reason: "stack overflow".into(),
                log_tail: state.log.tail(300),
            },
            Some(trap) => PluginError::Trapped {
                plugin,
                call,
                reason: trap.to_string(),
                log_tail: state.log.tail(300),
            },
            None => PluginError::Trapped {
                plugin,
                call,
                reason: format!("{e:#}"),
                log_tail: state.log.tail(300),
            },
        }
    }

    fn bad_result(&mut self, call: &'static str, reason: String) -> PluginError {
        self.discarded = true;
        PluginError::BadResult {
            plugin: self.plugin.clone(),
            call,
            reason,
        }
    }

    fn log(&self) -> String {
        self.store.data().log.text()
    }
}

/// Why a card codec call failed: the card's answer, or the plugin's failure.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error(transparent)]
    Card(#[from] card::CardError),
    #[error(transparent)]
    Plugin(#[from] PluginError),
}

/// One card-codec instance, for one customer session.
pub struct CardCodecSession {
    sandbox: Sandbox,
    bindings: card_v1::CardCodec,
}

impl CardCodecSession {
    pub fn about(&mut self) -> Result<card::CodecInfo, PluginError> {
        let Self { sandbox, bindings } = self;
        let info = sandbox.enter("about", |s| bindings.selfvend_card_codec().call_about(s))?;
        card_v1::codec_info(info).map_err(|r| sandbox.bad_result("about", r))
    }

    /// Asks whether the card is this codec's.
    pub fn identify(
        &mut self,
        card: &SharedCard,
    ) -> Result<Option<card::Identification>, CodecError> {
        let found = self.with_card("identify", card, None, |b, s, ch, _| {
            b.selfvend_card_codec().call_identify(s, ch)
        })?;
        match found {
            Ok(Some(id)) => Ok(Some(
                card_v1::identification(id).map_err(|r| self.sandbox.bad_result("identify", r))?,
            )),
            Ok(None) => Ok(None),
            Err(e) => Err(self.card_error("identify", e)),
        }
    }

    pub fn read(&mut self, card: &SharedCard) -> Result<card::CardData, CodecError> {
        match self.with_card("read", card, None, |b, s, ch, _| {
            b.selfvend_card_codec().call_read(s, ch)
        })? {
            Ok(data) => {
                Ok(card_v1::card_data(data).map_err(|r| self.sandbox.bad_result("read", r))?)
            }
            Err(e) => Err(self.card_error("read", e)),
        }
    }

    pub fn write_credit(
        &mut self,
        card: &SharedCard,
        grant: &card::CreditGrant,
        authority: &SharedAuthority,
    ) -> Result<(), CodecError> {
        let grant = card_v1::grant(grant);
        let result = self.with_card("write-credit", card, Some(authority), |b, s, ch, auth| {
            let auth = auth.expect("write-credit always binds an authority");
            b.selfvend_card_codec()
                .call_write_credit(s, ch, &grant, auth)
        })?;
        result.map_err(|e| self.card_error("write-credit", e))
    }

    pub fn verify(
        &mut self,
        card: &SharedCard,
        grant: &card::CreditGrant,
    ) -> Result<card::VerifyOutcome, CodecError> {
        let grant = card_v1::grant(grant);
        match self.with_card("verify", card, None, |b, s, ch, _| {
            b.selfvend_card_codec().call_verify(s, ch, &grant)
        })? {
            Ok(v) => Ok(card_v1::verify_outcome(v)),
            Err(e) => Err(self.card_error("verify", e)),
        }
    }

    /// What the plugin logged in this session.
    pub fn log(&self) -> String {
        self.sandbox.log()
    }

    /// Binds the card (and authority) into the table for exactly one call, then unbinds them.
    fn with_card<R>(
        &mut self,
        call: &'static str,
        card: &SharedCard,
        authority: Option<&SharedAuthority>,
        f: impl FnOnce(
            &card_v1::CardCodec,
            &mut Store<PluginState>,
            wasmtime::component::Resource<card_v1::ChannelBinding>,
            Option<wasmtime::component::Resource<card_v1::AuthorityBinding>>,
        ) -> wasmtime::Result<R>,
    ) -> Result<R, PluginError> {
        let Self { sandbox, bindings } = self;
        sandbox.enter(call, |store| {
            let table = &mut store.data_mut().table;
            let ch = table.push(card_v1::ChannelBinding(card.clone()))?;
            let ch_borrow = wasmtime::component::Resource::new_borrow(ch.rep());
            let auth = authority
                .map(|a| table.push(card_v1::AuthorityBinding(a.clone())))
                .transpose()?;
            let auth_borrow = auth
                .as_ref()
                .map(|a| wasmtime::component::Resource::new_borrow(a.rep()));
            let result = f(bindings, store, ch_borrow, auth_borrow);
            let table = &mut store.data_mut().table;
            table.delete(ch)?;
            if let Some(auth) = auth {
                table.delete(auth)?;
            }
            result
        })
    }

    fn card_error(&mut self, call: &'static str, e: card_v1::GuestCardError) -> CodecError {
        match card_v1::card_error(e) {
            Ok(e) => CodecError::Card(e),
            Err(reason) => CodecError::Plugin(self.sandbox.bad_result(call, reason)),
        }
    }
}

/// Why a backend dialect call failed: the backend's answer, or the plugin's failure.
#[derive(Debug, thiserror::Error)]
pub enum DialectError {
    #[error(transparent)]
    Backend(#[from] net::BackendError),
    #[error(transparent)]
    Plugin(#[from] PluginError),
}

/// One backend-dialect instance's exports.
struct BackendExports {
    dialect: backend_v1::Dialect,
    /// Absent for a 1.0 dialect.
    billing: Option<backend_v1::Billing>,
}

/// One backend-dialect instance, for one session, bound to one endpoint.
pub struct BackendSession {
    sandbox: Sandbox,
    bindings: BackendExports,
    /// The dialect's answer to the last call (a refusal, "not found") when the backend's own
    /// never came, which the session did not take.
    overruled: Option<String>,
}

impl BackendSession {
    /// What the plugin logged in this session.
    pub fn log(&self) -> String {
        self.sandbox.log()
    }

    /// What the dialect answered to the last call where the backend's answer never came (a
    /// refusal, or "not found"), which the session took as an unknown outcome instead: a
    /// dialect's bug the conformance kit names.
    pub fn overruled(&self) -> Option<&str> {
        self.overruled.as_deref()
    }

    /// Runs one dialect call and applies the unknown-outcome rule: once request bytes went
    /// out, any failure to get a complete answer is an unknown outcome, whatever the plugin says;
    /// for a call that `changes_state`, so is an answer that does not parse.
    fn call<R>(
        &mut self,
        call: &'static str,
        changes_state: bool,
        f: impl FnOnce(
            &BackendExports,
            &mut Store<PluginState>,
        ) -> wasmtime::Result<Result<R, backend_v1::GuestBackendError>>,
    ) -> Result<R, DialectError> {
        let Self {
            sandbox,
            bindings,
            overruled,
        } = self;
        *overruled = None;
        let result = sandbox.enter(call, |store| f(bindings, store));
        let wire = sandbox.store.data().wire.clone();
        let sent = wire.bytes_sent > 0;
        match result {
            // Not one byte came back: a grant, an account or a receipt cannot be the backend's.
            // A write confirmation alone may go unanswered.
            Ok(Ok(_)) if sent && wire.bytes_received == 0 && call != "confirm-write" => {
                let why = wire.no_answer().unwrap_or_else(|| "no reply".into());
                *overruled = Some("an answer".into());
                Err(net::BackendError::OutcomeUnknown(format!(
                    "{call}: request sent, then {why}; the dialect's answer is not taken"
                ))
                .into())
            }
            Ok(Ok(r)) => Ok(r),
            Ok(Err(e)) => {
                let e = backend_v1::backend_error(e).map_err(|r| sandbox.bad_result(call, r))?;
                if let (net::BackendError::Refused(r), Some(why)) = (&e, wire.no_answer()) {
                    // The backend never said no: for a sale, a refusal would give back money it
                    // may have taken.
                    *overruled = Some(format!("a refusal (\"{}\")", r.message));
                    return Err(net::BackendError::OutcomeUnknown(format!(
                        "{call}: request sent, then {why}; the dialect's refusal is not taken"
                    ))
                    .into());
                }
                match (e, &wire.error_after_send) {
                    (net::BackendError::Refused(r), _) => Err(net::BackendError::Refused(r).into()),
                    (_, Some(net)) => Err(net::BackendError::OutcomeUnknown(format!(
                        "{call}: request sent, then {net}"
                    ))
                    .into()),
                    (net::BackendError::Unreachable(why), None) if sent => {
                        Err(net::BackendError::OutcomeUnknown(format!(
                            "{call}: request sent, then {why}"
                        ))
                        .into())
                    }
                    // Sent, a change cannot be "not supported": the backend may have made it.
                    (net::BackendError::NotSupported, None) if sent && changes_state => {
                        Err(net::BackendError::OutcomeUnknown(format!(
                            "{call}: request sent, then the dialect said the call is not supported"
                        ))
                        .into())
                    }
                    // A reply that does not parse says nothing of whether a change was made.
                    (net::BackendError::MalformedReply(why), None) if sent && changes_state => {
                        Err(net::BackendError::OutcomeUnknown(format!(
                            "{call}: request sent, reply did not parse: {why}"
                        ))
                        .into())
                    }
                    (e, _) => Err(e.into()),
                }
            }
            Err(plugin) if sent => Err(net::BackendError::OutcomeUnknown(format!(
                "{call}: request sent, then the dialect failed: {plugin}"
            ))
            .into()),
            Err(plugin) => Err(plugin.into()),
        }
    }

    fn convert<T, U>(
        &mut self,
        call: &'static str,
        r: Result<T, String>,
        f: impl FnOnce(T) -> U,
    ) -> Result<U, DialectError> {
        r.map(f)
            .map_err(|reason| self.sandbox.bad_result(call, reason).into())
    }

    pub fn about(&mut self) -> Result<net::DialectInfo, PluginError> {
        let Self {
            sandbox, bindings, ..
        } = self;
        let info = sandbox.enter("about", |s| bindings.dialect.call_about(s))?;
        backend_v1::dialect_info(info).map_err(|r| sandbox.bad_result("about", r))
    }

    pub fn ping(&mut self) -> Result<(), DialectError> {
        self.call("ping", false, |b, s| b.dialect.call_ping(s))
    }

    pub fn account_query(&mut self, card: &net::CardRef) -> Result<net::Account, DialectError> {
        let card = backend_v1::card_ref(card);
        let r = self.call("account-query", false, |b, s| {
            b.dialect.call_account_query(s, &card)
        })?;
        self.convert("account-query", backend_v1::account(r), |a| a)
    }

    pub fn can_buy(
        &mut self,
        card: &net::CardRef,
        purchase: net::Purchase,
    ) -> Result<net::BuyCheck, DialectError> {
        let card = backend_v1::card_ref(card);
        let purchase = backend_v1::purchase(purchase);
        let r = self.call("can-buy", false, |b, s| {
            b.dialect.call_can_buy(s, &card, purchase)
        })?;
        self.convert("can-buy", backend_v1::buy_check(r), |c| c)
    }

    pub fn sale(&mut self, request: &net::SaleRequest) -> Result<net::BackendGrant, DialectError> {
        let request = backend_v1::sale_request(request);
        let r = self.call("sale", true, |b, s| b.dialect.call_sale(s, &request))?;
        // The backend answered, so a grant the host refuses to accept may still have been made.
        self.convert("sale", backend_v1::grant(r), |g| g)
            .map_err(|e| match e {
                DialectError::Plugin(p) => net::BackendError::OutcomeUnknown(format!(
                    "sale: the backend answered but the dialect's grant is unusable: {p}"
                ))
                .into(),
                e => e,
            })
    }

    pub fn sale_status(
        &mut self,
        terminal_id: &str,
        kiosk_serial: u64,
    ) -> Result<net::SaleStatus, DialectError> {
        let r = self.call("sale-status", false, |b, s| {
            b.dialect.call_sale_status(s, terminal_id, kiosk_serial)
        })?;
        let status = self.convert("sale-status", backend_v1::sale_status(r), |s| s)?;
        let made_up = match &status {
            net::SaleStatus::Granted(_) => None,
            net::SaleStatus::NotFound => Some("\"not found\"".to_string()),
            net::SaleStatus::Refused(r) => Some(format!("a refusal (\"{}\")", r.message)),
        };
        self.answered("sale-status", made_up).map(|()| status)
    }

    /// Takes a status answer that would give money back (the backend never had it, or refused
    /// it) only if the backend's answer came: after a network error, the dialect made it up.
    fn answered(&mut self, call: &str, made_up: Option<String>) -> Result<(), DialectError> {
        let wire = &self.sandbox.store.data().wire;
        match (made_up, wire.no_answer()) {
            (Some(answer), Some(why)) => {
                let unknown = net::BackendError::OutcomeUnknown(format!(
                    "{call}: request sent, then {why}; the dialect's {answer} is not taken"
                ));
                self.overruled = Some(answer);
                Err(unknown.into())
            }
            _ => Ok(()),
        }
    }

    pub fn confirm_write(
        &mut self,
        confirmation: &net::WriteConfirmation,
    ) -> Result<(), DialectError> {
        let c = backend_v1::write_confirmation(confirmation);
        self.call("confirm-write", true, |b, s| {
            b.dialect.call_confirm_write(s, &c)
        })
    }

    pub fn authenticate(
        &mut self,
        card_serial: &str,
        request: &card::AuthRequest,
    ) -> Result<Vec<u8>, DialectError> {
        let request = backend_v1::auth_request(card_serial, request);
        let r = self.call("authenticate", false, |b, s| {
            b.dialect.call_authenticate(s, &request)
        })?;
        self.convert("authenticate", backend_v1::bytes("authenticate", r), |b| b)
    }

    pub fn card_password(&mut self, card: &net::CardRef) -> Result<Vec<u8>, DialectError> {
        let card = backend_v1::card_ref(card);
        let r = self.call("card-password", false, |b, s| {
            b.dialect.call_card_password(s, &card)
        })?;
        self.convert(
            "card-password",
            backend_v1::bytes("card-password", r),
            |b| b,
        )
    }

    pub fn reconcile(
        &mut self,
        report: &net::PeriodReport,
    ) -> Result<net::Reconciliation, DialectError> {
        if self.bindings.billing.is_some() {
            let totals = backend_v1::period_totals(report);
            // Sent again until answered, and a backend without it says so: a comparison of
            // totals, so "not offered" is an answer, and 1.0's reconcile is asked instead.
            match self.billing_call("reconcile-period", false, |b, s| {
                b.call_reconcile_period(s, &totals)
            }) {
                Ok(r) => {
                    return self.convert(
                        "reconcile-period",
                        backend_v1::period_reconciliation(r),
                        |r| r,
                    );
                }
                Err(DialectError::Backend(net::BackendError::NotSupported)) => {}
                Err(e) => return Err(e),
            }
        }
        let report = backend_v1::period_report(report).map_err(|why| {
            DialectError::Backend(net::BackendError::Unreachable(format!(
                "reconcile not sent: {why}"
            )))
        })?;
        let r = self.call("reconcile", true, |b, s| {
            b.dialect.call_reconcile(s, &report)
        })?;
        self.convert("reconcile", backend_v1::reconciliation(r), |r| r)
    }

    /// Whether the dialect has contract 1.1's `billing` (quotes, bills, four business types).
    pub fn has_billing(&self) -> bool {
        self.bindings.billing.is_some()
    }

    /// A `billing` call; a 1.0 dialect has none, which is `not-supported`, sending nothing.
    fn billing_call<R>(
        &mut self,
        call: &'static str,
        changes_state: bool,
        f: impl FnOnce(
            &backend_v1::Billing,
            &mut Store<PluginState>,
        ) -> wasmtime::Result<Result<R, backend_v1::GuestBackendError>>,
    ) -> Result<R, DialectError> {
        if self.bindings.billing.is_none() {
            return Err(net::BackendError::NotSupported.into());
        }
        self.call(call, changes_state, |b, s| {
            f(b.billing.as_ref().expect("checked above"), s)
        })
    }

    /// The backend's price of a purchase: stepped tariffs and arrears deduction.
    pub fn quote(
        &mut self,
        card: &net::CardRef,
        purchase: net::Purchase,
    ) -> Result<net::Quote, DialectError> {
        let card = backend_v1::card_ref(card);
        let purchase = backend_v1::purchase(purchase);
        let r = self.billing_call("quote", false, |b, s| b.call_quote(s, &card, purchase))?;
        self.convert("quote", backend_v1::quote(r), |q| q)
    }

    /// The open bills of account `customer_number` (户号).
    pub fn bill_query(&mut self, customer_number: &str) -> Result<net::BillAccount, DialectError> {
        let r = self.billing_call("bill-query", false, |b, s| {
            b.call_bill_query(s, customer_number)
        })?;
        let checked = backend_v1::bill_account(r).and_then(|a| {
            if a.customer_number == customer_number {
                Ok(a)
            } else {
                Err(format!(
                    "bill-query for {customer_number:?} answered account {:?}",
                    a.customer_number
                ))
            }
        });
        self.convert("bill-query", checked, |a| a)
    }

    /// Pays bills; idempotent on the kiosk serial, like `sale`.
    pub fn bill_pay(
        &mut self,
        request: &net::BillPaymentRequest,
    ) -> Result<net::BillReceipt, DialectError> {
        let amount = request.amount;
        let request = backend_v1::bill_payment_request(request);
        let r = self.billing_call("bill-pay", true, |b, s| b.call_bill_pay(s, &request))?;
        let checked = backend_v1::bill_receipt(r).and_then(|r| {
            if r.amount == amount {
                Ok(r)
            } else {
                Err(format!(
                    "bill-pay of {} fen answered a receipt for {} fen",
                    amount.0, r.amount.0
                ))
            }
        });
        // The backend answered, so a payment the host cannot read may still have been booked.
        self.convert("bill-pay", checked, |r| r)
            .map_err(|e| match e {
                DialectError::Plugin(p) => net::BackendError::OutcomeUnknown(format!(
                    "bill-pay: the backend answered but the dialect's receipt is unusable: {p}"
                ))
                .into(),
                e => e,
            })
    }

    /// What became of a bill payment whose outcome is unknown.
    pub fn bill_payment_status(
        &mut self,
        terminal_id: &str,
        kiosk_serial: u64,
    ) -> Result<net::BillPaymentStatus, DialectError> {
        let r = self.billing_call("bill-payment-status", false, |b, s| {
            b.call_bill_payment_status(s, terminal_id, kiosk_serial)
        })?;
        let status = self.convert(
            "bill-payment-status",
            backend_v1::bill_payment_status(r),
            |s| s,
        )?;
        let made_up = match &status {
            net::BillPaymentStatus::Paid(_) => None,
            net::BillPaymentStatus::NotFound => Some("\"not found\"".to_string()),
            net::BillPaymentStatus::Refused(r) => Some(format!("a refusal (\"{}\")", r.message)),
        };
        self.answered("bill-payment-status", made_up)
            .map(|()| status)
    }
}
