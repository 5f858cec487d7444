//! Rigs for selfvend's end-to-end tests: where the built guest components are, how tests sign
//! them, and simple in-process cards for sandbox tests that need no reader.

pub mod bank_rig;
pub mod dialect_rig;
pub mod fleet_rig;
pub mod kiosk_process;
pub mod kiosk_rig;
pub mod webdriver;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use selfvend_host::card::{CardChannel, ChannelError, ReaderKind};
use selfvend_host::plugin::trust::{SecretKey, TrustStore};

/// The directory holding guest components built for wasm32-wasip2 (`./dev test` sets it).
pub fn wasm_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("SELFVEND_WASM_DIR") {
        return PathBuf::from(dir);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    target.join("wasm32-wasip2/release")
}

/// A scratch kiosk: a trust store with one fresh test key, and signed copies of guests.
pub struct SignedPlugins {
    pub dir: tempfile::TempDir,
    pub key: SecretKey,
}

impl SignedPlugins {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("scratch dir");
        std::fs::create_dir(dir.path().join("trust")).expect("trust dir");
        let key = SecretKey::generate("selfvend test key");
        let public = key
            .write(&dir.path().join("test.key"))
            .expect("write test key");
        std::fs::copy(public, dir.path().join("trust/test.pub")).expect("trust test key");
        SignedPlugins { dir, key }
    }

    /// A plugin runtime that trusts this rig's key, with default limits.
    pub fn runtime(&self) -> selfvend_host::plugin::PluginRuntime {
        selfvend_host::plugin::PluginRuntime::new(
            self.trust(),
            &self.cache_dir(),
            selfvend_host::plugin::PluginLimits::default(),
        )
        .expect("plugin runtime")
    }

    pub fn trust(&self) -> TrustStore {
        TrustStore::load(&self.dir.path().join("trust")).expect("load trust")
    }

    pub fn cache_dir(&self) -> PathBuf {
        self.dir.path().join("cache")
    }

    /// Copies the built guest `name` (e.g. `plain_card`) here, unsigned.
    pub fn copy(&self, name: &str) -> PathBuf {
        let from = wasm_dir().join(format!("{name}.wasm"));
        let to = self.dir.path().join(format!("{name}.wasm"));
        std::fs::copy(&from, &to).unwrap_or_else(|e| {
            panic!(
                "{}: {e}; build the guests first (./dev test does)",
                from.display()
            )
        });
        to
    }

    /// Copies the built guest `name` here and signs it with the trusted test key.
    pub fn signed(&self, name: &str) -> PathBuf {
        let path = self.copy(name);
        self.sign(&path);
        path
    }

    pub fn sign(&self, path: &Path) {
        let bytes = std::fs::read(path).expect("read plugin");
        self.key.sign_file(path, &bytes).expect("sign plugin");
    }
}

impl Default for SignedPlugins {
    fn default() -> Self {
        Self::new()
    }
}

/// A card held in memory that answers the `plain-card` test codec's two APDUs: READ (00 B0)
/// returns the record, UPDATE (00 D6) replaces it. For sandbox tests only; reader tests
/// use the virtual cards behind the real pcscd.
pub struct RecordCard {
    pub atr: Vec<u8>,
    pub record: String,
    pub apdus: usize,
}

impl RecordCard {
    pub fn shared(atr: &[u8], record: &str) -> Arc<Mutex<RecordCard>> {
        Arc::new(Mutex::new(RecordCard {
            atr: atr.to_vec(),
            record: record.into(),
            apdus: 0,
        }))
    }
}

impl CardChannel for RecordCard {
    fn atr(&self) -> Vec<u8> {
        self.atr.clone()
    }

    fn reader_kind(&self) -> ReaderKind {
        ReaderKind::Contact
    }

    fn transmit(&mut self, command: &[u8]) -> Result<Vec<u8>, ChannelError> {
        self.apdus += 1;
        match command {
            [0x00, 0xB0, ..] => {
                let mut r = self.record.as_bytes().to_vec();
                r.extend_from_slice(&[0x90, 0x00]);
                Ok(r)
            }
            [0x00, 0xD6, _, _, len, data @ ..] if *len as usize == data.len() => {
                self.record = String::from_utf8_lossy(data).into_owned();
                Ok(vec![0x90, 0x00])
            }
            _ => Ok(vec![0x6D, 0x00]),
        }
    }
}

/// `selfvend ARGS` run in directory `dir`, as a vendor or an operator runs it there.
pub fn selfvend_in(dir: &Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new(selfvend_bin())
        .current_dir(dir)
        .args(args)
        .output()
        .expect("run selfvend")
}

/// Runs `selfvend --config CONFIG ARGS…` and returns what it printed.
pub fn selfvend_with(config: &Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new(selfvend_bin())
        .arg("--config")
        .arg(config)
        .args(args)
        .output()
        .expect("run selfvend")
}

/// Bytes a program printed, as text.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The `selfvend` binary (`./dev test` sets `SELFVEND_BIN`).
pub fn selfvend_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("SELFVEND_BIN") {
        return PathBuf::from(bin);
    }
    wasm_dir().join("../../release/selfvend")
}

/// A vpcd reader slot of the test rig's pcscd (`./dev test` starts it), held by one test at a
/// time: a card inserted at `address` appears in reader `reader`.
pub struct ReaderSlot {
    pub address: std::net::SocketAddr,
    pub reader: String,
    index: usize,
}

static SLOTS: Mutex<Vec<bool>> = Mutex::new(Vec::new());
static SLOT_FREED: std::sync::Condvar = std::sync::Condvar::new();

fn rig_var(name: &str) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            panic!(
                "{name} is not set: the PC/SC rig is not running; run the tests with ./dev test, \
                 which starts pcscd with vpcd readers"
            )
        })
}

impl ReaderSlot {
    /// Takes a free slot, waiting for one if every slot is in use.
    pub fn take() -> ReaderSlot {
        let port = rig_var("SELFVEND_VPCD_PORT");
        let mut busy = SLOTS.lock().unwrap_or_else(|p| p.into_inner());
        // One vpcd reader with two slots.
        busy.resize(2, false);
        let index = loop {
            if let Some(i) = busy.iter().position(|b| !b) {
                break i;
            }
            busy = SLOT_FREED.wait(busy).unwrap_or_else(|p| p.into_inner());
        };
        busy[index] = true;
        ReaderSlot {
            address: ([127, 0, 0, 1], (port + index) as u16).into(),
            reader: format!("selfvend vpcd 00 {index:02}"),
            index,
        }
    }
}

impl Drop for ReaderSlot {
    fn drop(&mut self) {
        SLOTS.lock().unwrap_or_else(|p| p.into_inner())[self.index] = false;
        SLOT_FREED.notify_one();
    }
}

/// One number from the journal, read by the sqlite3 shell (an outside reader); a query the
/// shell refuses fails the test rather than reading as 0.
pub fn sql(journal: &Path, query: &str) -> u64 {
    let out = std::process::Command::new("sqlite3")
        .arg(journal)
        .arg(query)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "sqlite3 {query}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("sqlite3 {query}: {stdout:?} is not a number: {e}"))
}

/// Has a kiosk process kill itself with SIGKILL at the failpoint `SELFVEND_KILL_AT` names, if
/// it names one, as a power cut would: no destructor runs, nothing is flushed.
pub fn kill_at_failpoint_from_env() {
    let Ok(point) = std::env::var("SELFVEND_KILL_AT") else {
        return;
    };
    fail::cfg_callback(point, || {
        let _ = std::process::Command::new("kill")
            .args(["-9", &std::process::id().to_string()])
            .status();
        loop {
            std::thread::sleep(std::time::Duration::from_secs(1));
        }
    })
    .expect("a failpoint callback");
}
