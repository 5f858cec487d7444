//! The sandbox holds: hostile guests are stopped with a clear error naming the plugin and the
//! call, the host keeps serving, and a well-behaved plugin beside them keeps working.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use selfvend_host::card::{
    AuthRequest, AuthorityError, CardAuthority, CardChannel, CardError, ChannelError, CreditGrant,
    ReaderKind, VerifyOutcome,
};
use selfvend_host::money::{Fen, Wh};
use selfvend_host::plugin::{
    CacheStatus, CodecError, Plugin, PluginError, PluginLimits, PluginRuntime, SharedAuthority,
    SharedCard,
};
use selfvend_tests::{RecordCard, SignedPlugins};

fn limits() -> PluginLimits {
    PluginLimits {
        call_deadline: Duration::from_millis(300),
        memory_bytes: 32 << 20,
        log_bytes: 16 << 10,
        pooling: true,
    }
}

struct Rig {
    plugins: SignedPlugins,
    runtime: PluginRuntime,
    hostile: Plugin,
    plain: Plugin,
}

fn rig() -> Rig {
    let plugins = SignedPlugins::new();
    let runtime =
        PluginRuntime::new(plugins.trust(), &plugins.cache_dir(), limits()).expect("runtime");
    let hostile = runtime
        .load("hostile-card", &plugins.signed("hostile_card"))
        .expect("load hostile");
    let plain = runtime
        .load("plain-card", &plugins.signed("plain_card"))
        .expect("load plain");
    Rig {
        plugins,
        runtime,
        hostile,
        plain,
    }
}

fn card(atr: &str) -> SharedCard {
    RecordCard::shared(atr.as_bytes(), "CARD-1|4101|C-77|M-88|3")
}

/// Runs hostile mode `mode` in a fresh session and returns what `identify` gave.
fn hostile(
    rig: &Rig,
    mode: &str,
) -> Result<Option<selfvend_host::card::Identification>, CodecError> {
    rig.hostile
        .card_session()
        .expect("fresh hostile session")
        .identify(&card(mode))
}

/// The plain codec does a full read-write-verify after whatever the hostile one did.
fn plain_still_works(rig: &Rig) {
    let card = RecordCard::shared(b"plain", "CARD-1|4101|C-77|M-88|3");
    let shared: SharedCard = card.clone();
    let mut session = rig.plain.card_session().expect("plain session");
    assert!(session.identify(&shared).expect("identify").is_some());
    let data = session.read(&shared).expect("read");
    assert_eq!(
        (data.card_serial.as_str(), data.purchase_count),
        ("CARD-1", 3)
    );
    let grant = CreditGrant {
        card_serial: "CARD-1".into(),
        purchase_count: 4,
        amount: Fen(5000),
        energy: Wh(8000),
        token: vec![],
    };
    let authority: SharedAuthority = Arc::new(Mutex::new(TestAuthority { psc: None }));
    session
        .write_credit(&shared, &grant, &authority)
        .expect("write");
    assert_eq!(
        session.verify(&shared, &grant).expect("verify"),
        VerifyOutcome::Written
    );
    assert_eq!(card.lock().unwrap().record, "CARD-1|4101|C-77|M-88|4");
}

/// The utility's authority in these tests: a PSC when given one, never a MAC.
struct TestAuthority {
    psc: Option<Vec<u8>>,
}

impl CardAuthority for TestAuthority {
    fn card_password(&mut self) -> Result<Vec<u8>, AuthorityError> {
        self.psc
            .clone()
            .ok_or_else(|| AuthorityError::NotAllowed("no PSC in this test".into()))
    }

    fn authenticate(&mut self, _: AuthRequest) -> Result<Vec<u8>, AuthorityError> {
        Err(AuthorityError::NotAllowed("no MAC in this test".into()))
    }
}

#[test]
fn an_endless_loop_is_stopped_at_the_deadline() {
    let rig = rig();
    let started = Instant::now();
    let err = hostile(&rig, "loop").unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(
        err.to_string(),
        "plugin hostile-card: identify ran past its 300 ms deadline and was stopped"
    );
    plain_still_works(&rig);
}

#[test]
fn a_sleep_is_cut_at_the_deadline_not_when_the_plugin_wakes() {
    let rig = rig();
    let started = Instant::now();
    // The guest asks for a minute: a blocking wait the epoch cannot interrupt.
    let err = hostile(&rig, "sleep").unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(
        err.to_string(),
        "plugin hostile-card: identify ran past its 300 ms deadline and was stopped"
    );
    plain_still_works(&rig);
}

#[test]
fn a_memory_bomb_is_stopped_at_the_cap() {
    let rig = rig();
    let err = hostile(&rig, "grow-memory").unwrap_err();
    assert!(
        matches!(err, CodecError::Plugin(PluginError::MemoryExceeded { .. })),
        "{err}"
    );
    assert_eq!(
        err.to_string(),
        "plugin hostile-card: identify tried to grow memory past its 32 MiB cap and was stopped"
    );
    plain_still_works(&rig);
}

#[test]
fn endless_recursion_is_a_stack_overflow() {
    let rig = rig();
    let err = hostile(&rig, "recurse").unwrap_err();
    assert!(
        err.to_string()
            .starts_with("plugin hostile-card: identify trapped: stack overflow"),
        "{err}"
    );
    plain_still_works(&rig);
}

#[test]
fn a_panic_is_a_trap_with_the_panic_message() {
    let rig = rig();
    let err = hostile(&rig, "panic").unwrap_err();
    let text = err.to_string();
    assert!(
        text.starts_with("plugin hostile-card: identify trapped:"),
        "{text}"
    );
    assert!(text.contains("hostile-card panicked on purpose"), "{text}");
    plain_still_works(&rig);
}

#[test]
fn an_oversized_result_is_refused() {
    let rig = rig();
    let err = hostile(&rig, "huge-list").unwrap_err();
    assert_eq!(
        err.to_string(),
        "plugin hostile-card: identify returned a bad result: card-type is 8388608 bytes long (limit 128)"
    );
    plain_still_works(&rig);
}

#[test]
fn files_environment_and_sockets_are_not_there() {
    let rig = rig();
    let msg = |mode| match hostile(&rig, mode) {
        Err(CodecError::Card(CardError::Malformed(m))) => m,
        other => panic!("{mode}: {other:?}"),
    };
    let file = msg("open-file");
    assert!(file.starts_with("file: read /etc/passwd: "), "{file}");
    assert!(!file.contains("OK"), "a plugin read a file: {file}");
    assert_eq!(msg("read-env"), "env: 0 vars, 0 args");
    let socket = msg("open-socket");
    assert!(
        socket.starts_with("socket: connect 127.0.0.1:22: "),
        "{socket}"
    );
    assert!(
        !socket.contains("connected") && !socket.contains("OK"),
        "a plugin reached the network: {socket}"
    );
    plain_still_works(&rig);
}

#[test]
fn a_stderr_flood_is_bounded_and_harmless() {
    let plugins = SignedPlugins::new();
    // Writing 10 MiB line by line takes the guest seconds; give it the time, not the log room.
    let limits = PluginLimits {
        call_deadline: Duration::from_secs(60),
        ..limits()
    };
    let runtime = PluginRuntime::new(plugins.trust(), &plugins.cache_dir(), limits).unwrap();
    let hostile = runtime
        .load("hostile-card", &plugins.signed("hostile_card"))
        .unwrap();
    let mut session = hostile.card_session().unwrap();
    assert_eq!(session.identify(&card("stderr-flood")).unwrap(), None);
    let log = session.log();
    assert!(log.starts_with("flood line 0\n"), "{}", &log[..40]);
    assert!(
        log.len() < (16 << 10) + 100,
        "log grew to {} bytes",
        log.len()
    );
    assert!(
        log.trim_end().ends_with("more bytes dropped]"),
        "no drop note"
    );
}

/// A card behind a slow reader: every APDU takes `delay`.
struct SlowCard {
    inner: Arc<Mutex<RecordCard>>,
    delay: Duration,
}

impl CardChannel for SlowCard {
    fn atr(&self) -> Vec<u8> {
        self.inner.lock().unwrap().atr()
    }

    fn reader_kind(&self) -> ReaderKind {
        ReaderKind::Contact
    }

    fn transmit(&mut self, command: &[u8]) -> Result<Vec<u8>, ChannelError> {
        std::thread::sleep(self.delay);
        self.inner.lock().unwrap().transmit(command)
    }
}

#[test]
fn time_waiting_on_a_slow_card_is_not_counted_against_the_codec() {
    let rig = rig();
    // One APDU longer than the codec's whole 300 ms deadline.
    let slow: SharedCard = Arc::new(Mutex::new(SlowCard {
        inner: RecordCard::shared(b"plain", "CARD-1|4101|C-77|M-88|3"),
        delay: Duration::from_millis(450),
    }));
    let data = rig.plain.card_session().unwrap().read(&slow).unwrap();
    assert_eq!(data.card_serial, "CARD-1");
    assert_eq!(data.purchase_count, 3);
}

/// What the hostile codec's `identify` reported after flooding the card with APDUs.
fn flood_report(card: &SharedCard) -> String {
    let rig = rig();
    match rig.hostile.card_session().unwrap().identify(card) {
        Err(CodecError::Card(CardError::Malformed(report))) => report,
        other => panic!("identify gave {other:?}"),
    }
}

#[test]
fn identify_is_bounded_to_64_apdus_and_5_s_at_the_card() {
    // Every codec runs identify on every card: one that never stops cannot hold the reader.
    assert_eq!(
        flood_report(&card("apdu-flood")),
        "64 APDUs answered, then ChannelError::Refused(\"more than 64 APDUs in identify\")"
    );
    let slow: SharedCard = Arc::new(Mutex::new(SlowCard {
        inner: RecordCard::shared(b"apdu-flood", "CARD-1|4101|C-77|M-88|3"),
        delay: Duration::from_secs(1),
    }));
    assert_eq!(
        flood_report(&slow),
        "5 APDUs answered, then ChannelError::Refused(\"the card and the authority have taken \
         over 5 s in identify\")"
    );
}

#[test]
fn a_failed_instance_is_discarded_and_the_next_session_is_fresh() {
    let rig = rig();
    let mut session = rig.hostile.card_session().unwrap();
    session.identify(&card("panic")).unwrap_err();
    let again = session.identify(&card("ok")).unwrap_err();
    assert_eq!(
        again.to_string(),
        "plugin hostile-card: this instance failed earlier and was discarded; start a new session"
    );
    assert_eq!(hostile(&rig, "ok").unwrap(), None);
}

#[test]
fn unsigned_untrusted_and_tampered_plugins_are_refused() {
    let rig = rig();
    let unsigned = rig.plugins.dir.path().join("unsigned.wasm");
    std::fs::copy(
        selfvend_tests::wasm_dir().join("plain_card.wasm"),
        &unsigned,
    )
    .unwrap();
    let err = rig.runtime.load("plain", &unsigned).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "{}: not signed (no signature file {}.sig)",
            unsigned.display(),
            unsigned.display()
        )
    );

    let stranger = selfvend_host::plugin::trust::SecretKey::generate("Stranger");
    stranger
        .sign_file(&unsigned, &std::fs::read(&unsigned).unwrap())
        .unwrap();
    let err = rig.runtime.load("plain", &unsigned).unwrap_err();
    assert!(
        err.to_string().contains(&format!(
            "signed by key {}, which is not in the trust store",
            stranger.public_id()
        )),
        "{err}"
    );

    let tampered = rig.plugins.signed("plain_card");
    let mut bytes = std::fs::read(&tampered).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(&tampered, &bytes).unwrap();
    let err = rig.runtime.load("plain", &tampered).unwrap_err();
    assert!(
        err.to_string()
            .ends_with("does not match the file (tampered or re-built after signing)"),
        "{err}"
    );
}

#[test]
fn a_tampered_cache_file_is_refused_and_recompiled() {
    let rig = rig();
    let path = rig.plugins.signed("plain_card");
    assert_eq!(
        rig.runtime.load("plain", &path).unwrap().cache_status,
        CacheStatus::Hit
    );
    let entry = std::fs::read_dir(rig.plugins.cache_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.to_string_lossy().starts_with(
                &*rig
                    .plugins
                    .cache_dir()
                    .join(&rig.plain.sha256)
                    .to_string_lossy(),
            )
        })
        .expect("cache entry for plain-card");
    let mut bytes = std::fs::read(&entry).unwrap();
    let last = bytes.len() - 100;
    bytes[last] ^= 0xFF;
    std::fs::write(&entry, &bytes).unwrap();
    let reloaded = rig.runtime.load("plain", &path).unwrap();
    match &reloaded.cache_status {
        CacheStatus::Recompiled(why) => assert!(
            why.ends_with("integrity check failed (the file was changed outside this host)"),
            "{why}"
        ),
        other => panic!("expected a recompile, got {other:?}"),
    }
    assert_eq!(
        rig.runtime.load("plain", &path).unwrap().cache_status,
        CacheStatus::Hit
    );
    plain_still_works(&rig);
}

const FORBIDDEN_IMPORT: &str = r#"(component
  (import "evil:net/raw@1.0.0" (instance))
  (core module $m (func (export "f") (result i32) i32.const 0))
  (core instance $i (instantiate $m))
  (func $about (result u32) (canon lift (core func $i "f")))
  (instance $codec (export "about" (func $about)))
  (export "selfvend:card/codec@1.0.0" (instance $codec))
)"#;

#[test]
fn imports_outside_the_allowlist_are_refused_before_compiling() {
    let rig = rig();
    let path = rig.plugins.dir.path().join("evil.wasm");
    std::fs::write(&path, wat::parse_str(FORBIDDEN_IMPORT).unwrap()).unwrap();
    rig.plugins.sign(&path);
    let err = rig.runtime.load("evil", &path).unwrap_err();
    assert!(
        err.to_string().ends_with("refused: imports `evil:net/raw@1.0.0`, which a card codec may not use (allowed: selfvend:card/* @1.x, and wasi:io, cli, clocks, filesystem, sockets, random @0.2.x)"),
        "{err}"
    );
}

#[test]
fn a_major_version_the_host_does_not_speak_is_refused_with_what_it_speaks() {
    let rig = rig();
    let path = rig.plugins.dir.path().join("future.wasm");
    let wat = FORBIDDEN_IMPORT
        .replace("  (import \"evil:net/raw@1.0.0\" (instance))\n", "")
        .replace("codec@1.0.0", "codec@2.0.0");
    std::fs::write(&path, wat::parse_str(&wat).unwrap()).unwrap();
    rig.plugins.sign(&path);
    let err = rig.runtime.load("future", &path).unwrap_err();
    assert!(
        err.to_string().ends_with("refused: implements selfvend:card@2.0.0; this host speaks selfvend:card@1.0.0 (major 1, up to minor 0)"),
        "{err}"
    );
}

#[test]
fn the_psc_is_handed_out_once_per_session() {
    let rig = rig();
    let grant = CreditGrant {
        card_serial: "CARD-1".into(),
        purchase_count: 4,
        amount: Fen(100),
        energy: Wh(0),
        token: b"psc-twice".to_vec(),
    };
    let authority: SharedAuthority = Arc::new(Mutex::new(TestAuthority {
        psc: Some(vec![0xFF; 3]),
    }));
    let mut session = rig.hostile.card_session().unwrap();
    let err = session
        .write_credit(&card("ok"), &grant, &authority)
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "the utility's authority could not help: first: got 3 bytes; second: not allowed: the PSC was already given once in this session"
    );
    // Still refused on a later call in the same session; a new session starts afresh.
    let err = session
        .write_credit(&card("ok"), &grant, &authority)
        .unwrap_err();
    assert!(err.to_string().contains("first: not allowed"), "{err}");
    let mut fresh = rig.hostile.card_session().unwrap();
    let err = fresh
        .write_credit(&card("ok"), &grant, &authority)
        .unwrap_err();
    assert!(err.to_string().contains("first: got 3 bytes"), "{err}");
}
