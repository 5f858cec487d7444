//! The fleet side of the rigs: a database of its own in the PostgreSQL cluster that `./dev test`
//! starts (`SELFVEND_TEST_PG`), read with `psql` as an admin would, and the `selfvend-fleet`
//! server as a process of its own on a loopback port.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use crate::selfvend_bin;

/// One test's fleet database.
pub struct FleetDb {
    pub url: String,
}

impl Default for FleetDb {
    fn default() -> Self {
        FleetDb::new()
    }
}

impl FleetDb {
    /// A new, empty database in the test cluster.
    pub fn new() -> FleetDb {
        let admin = std::env::var("SELFVEND_TEST_PG")
            .expect("SELFVEND_TEST_PG: run the tests with ./dev test, which starts PostgreSQL");
        let name = format!(
            "fleet_{}_{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        );
        psql(&admin, &format!("CREATE DATABASE {name}"));
        FleetDb {
            url: admin.replace("dbname=postgres", &format!("dbname={name}")),
        }
    }

    /// What `query` prints, one row per line, columns separated by `|`.
    pub fn sql(&self, query: &str) -> String {
        psql(&self.url, query)
    }

    /// Adds console user `name` with `password` and `role`, as an admin would.
    pub fn add_user(&self, name: &str, password: &str, role: &str) {
        let mut child = Command::new(fleet_bin())
            .args([
                "--db", &self.url, "user-add", "--name", name, "--role", role,
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("run selfvend-fleet");
        {
            use std::io::Write;
            let mut stdin = child.stdin.take().unwrap();
            writeln!(stdin, "{password}").unwrap();
        }
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "user-add failed");
    }

    /// What `selfvend-fleet ARGS` on this database prints, as an admin runs it; its error if
    /// it fails.
    pub fn admin(&self, args: &[&str]) -> Result<String, String> {
        let out = Command::new(fleet_bin())
            .args(["--db", &self.url])
            .args(args)
            .output()
            .expect("run selfvend-fleet");
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// A one-time pairing code, as an admin makes it.
    pub fn pairing_code(&self) -> String {
        self.admin(&["pairing-code"]).unwrap().trim().to_string()
    }
}

fn psql(url: &str, query: &str) -> String {
    let out = Command::new("psql")
        .args([url, "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", query])
        .output()
        .expect("run psql");
    assert!(
        out.status.success(),
        "psql: {query}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .trim_end()
        .to_string()
}

pub fn fleet_bin() -> std::path::PathBuf {
    selfvend_bin().with_file_name("selfvend-fleet")
}

/// `selfvend-fleet serve` on a free loopback port; killed when dropped.
pub struct FleetServer {
    child: Child,
    pub url: String,
}

impl FleetServer {
    pub fn start(db: &FleetDb) -> FleetServer {
        FleetServer::start_with(db, &[])
    }

    /// The server with more `serve` options (`--heartbeat-secs 1`, say).
    pub fn start_with(db: &FleetDb, options: &[&str]) -> FleetServer {
        let mut child = Command::new(fleet_bin())
            .args(["--db", &db.url, "serve", "--listen", "127.0.0.1:0"])
            .args(options)
            .stdout(Stdio::piped())
            .spawn()
            .expect("run selfvend-fleet serve");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let url = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("selfvend-fleet said {line:?}"))
            .to_string();
        FleetServer { child, url }
    }
}

impl Drop for FleetServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
