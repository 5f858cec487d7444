//! Kiosk processes for the fleet tests: `selfvend-kiosk-child`, the kiosk as `selfvend kiosk`
//! assembles it (worker, devices and fleet link) without a window, each with its own config,
//! data, validator and printer on one shared [`World`], paired with a fleet server.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::fleet_rig::{FleetDb, FleetServer};
use crate::kiosk_rig::World;

/// How long a kiosk is given to reach a step (heartbeats every second).
pub const PATIENCE: Duration = Duration::from_secs(60);

/// One kiosk process on the shared world: its own config, data, validator and printer.
pub struct KioskProcess {
    pub config: PathBuf,
    pub data: PathBuf,
    pub id: String,
    child: Option<Child>,
    _validator: selfvend_sim::id003_validator::SimulatedValidator,
    _printer: selfvend_sim::escpos_printer::SimulatedPrinter,
}

impl KioskProcess {
    /// Kiosk `n`, paired with `server`; its config is the world's, with `jinan` as the
    /// fixed-text backend's address.
    pub fn paired(
        world: &World,
        db: &FleetDb,
        server: &FleetServer,
        n: usize,
        jinan: &str,
    ) -> Self {
        let base = std::fs::read_to_string(world.plugins.dir.path().join("kiosk.toml")).unwrap();
        let validator = selfvend_sim::id003_validator::SimulatedValidator::start().unwrap();
        let printer = selfvend_sim::escpos_printer::SimulatedPrinter::start().unwrap();
        let toml = base
            .replace("K-SALE-01", &format!("K-ROLL-{n:02}"))
            .replace("data_dir = \"data\"", &format!("data_dir = \"data-{n}\""))
            .replace(&world.jinan.fixed_text_address().to_string(), jinan)
            .replace("[policy]\n", "[policy]\nfleet_heartbeat_secs = 1\n")
            + &format!(
                "[devices]\ncard_reader = {{ reader = \"{}\" }}\n\
                 cash_acceptor = {{ port = \"{}\", baud = 9600 }}\n\
                 printer = {{ port = \"{}\", baud = 9600 }}\n",
                world.slot.reader,
                validator.path(),
                printer.path()
            );
        let config = world.plugins.dir.path().join(format!("kiosk-{n}.toml"));
        std::fs::write(&config, toml).unwrap();
        let data = world.plugins.dir.path().join(format!("data-{n}"));
        std::fs::create_dir_all(&data).unwrap();
        let paired = selfvend_host::fleet::pair(
            &data,
            &server.url,
            &db.pairing_code(),
            &format!("K-ROLL-{n:02}"),
            "3701",
        )
        .unwrap();
        KioskProcess {
            config,
            data,
            id: paired.kiosk_id,
            child: None,
            _validator: validator,
            _printer: printer,
        }
    }

    pub fn start(&mut self) {
        self.spawn(&[]);
    }

    /// Starts the process; with `kill_at`, it kills itself with SIGKILL at that failpoint.
    pub fn start_killed_at(&mut self, kill_at: Option<&str>) {
        match kill_at {
            Some(point) => self.spawn(&[("SELFVEND_KILL_AT", point)]),
            None => self.spawn(&[]),
        }
    }

    /// Starts the process with failpoints set as the `fail` crate reads them
    /// (`point=action;…`, e.g. `rollout.before-switch=sleep(2000)`).
    pub fn start_with_failpoints(&mut self, failpoints: &str) {
        self.spawn(&[("FAILPOINTS", failpoints)]);
    }

    fn spawn(&mut self, env: &[(&str, &str)]) {
        let mut command = Command::new(kiosk_child());
        command.arg(&self.config).stdin(Stdio::piped()).stderr(
            std::fs::File::options()
                .create(true)
                .append(true)
                .open(self.data.join("kiosk.log"))
                .unwrap(),
        );
        command.envs(env.iter().copied());
        self.child = Some(command.spawn().expect("run selfvend-kiosk-child"));
    }

    /// Closes its input (it stops as the kiosk would) and waits for it.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            drop(child.stdin.take());
            let _ = child.wait();
        }
    }

    /// Waits until the process has died by itself (killed at its failpoint).
    pub fn wait_killed(&mut self) {
        let mut child = self.child.take().expect("a running kiosk");
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                use std::os::unix::process::ExitStatusExt;
                assert_eq!(
                    status.signal(),
                    Some(9),
                    "the kiosk was not killed: {status}"
                );
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the kiosk never reached its failpoint"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The SHA-256 of the fixed-text build the kiosk last reported running.
    pub fn runs(&self, db: &FleetDb) -> String {
        db.sql(&format!(
            "SELECT p->>'sha256' FROM kiosks, jsonb_array_elements(heartbeat->'plugins') p
             WHERE id = '{}' AND p->>'name' = 'fixed-text'",
            self.id
        ))
    }
}

impl Drop for KioskProcess {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = std::fs::read_to_string(self.data.join("kiosk.log")).unwrap_or_default();
            eprintln!("--- kiosk {} log ---\n{log}", self.id);
        }
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

pub fn kiosk_child() -> PathBuf {
    crate::selfvend_bin().with_file_name("selfvend-kiosk-child")
}

/// Waits until `query` prints `want`; fails naming what it printed last.
pub fn wait_for(db: &FleetDb, query: &str, want: &str) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let got = db.sql(query);
        if got == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{query}\nprinted {got:?}, waited for {want:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}
