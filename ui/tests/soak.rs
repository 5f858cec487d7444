//! The seeded fault campaign (`selfvend bench soak`) run as a user runs it, on the real rigs of
//! `./dev test`: a few fixed seeds of 60 customers each must end with no money lost, no double
//! credit and nothing unresolved, across the validator, the acquirer, the backends, the cards,
//! the meters and the journal.

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn selfvend_bin() -> PathBuf {
    std::env::var_os("SELFVEND_BIN")
        .map(PathBuf::from)
        .expect("SELFVEND_BIN: run the tests with ./dev test, which builds the binary")
}

#[test]
fn sixty_customers_with_seeded_faults_lose_nothing_and_credit_once() {
    for seed in ["11", "2026"] {
        let out = Command::new(selfvend_bin())
            .arg("--config")
            .arg(root().join("config/demo.toml"))
            .args(["bench", "soak", "--customers", "60", "--seed", seed])
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "seed {seed}:\n{stdout}\n{stderr}");
        let lines: Vec<&str> = stdout.lines().collect();
        for expected in [
            "customers: 60",
            "lost fen: 0",
            "double credits: 0",
            "unresolved: 0",
        ] {
            assert!(
                lines.contains(&expected),
                "seed {seed}: no `{expected}` in\n{stdout}"
            );
        }
        let injected = lines
            .iter()
            .find_map(|l| l.strip_prefix("faults injected: "))
            .and_then(|l| l.split(' ').next())
            .and_then(|n| n.parse::<u32>().ok())
            .unwrap_or(0);
        assert!(
            injected >= 30,
            "seed {seed}: only {injected} faults\n{stdout}"
        );
        // Some customers' kiosk process was killed with SIGKILL at a failpoint.
        let killed = lines
            .iter()
            .find_map(|l| l.strip_prefix("kiosk processes: "))
            .and_then(|l| l.split(' ').next())
            .and_then(|n| n.parse::<u32>().ok())
            .unwrap_or(0);
        assert!(
            killed >= 1,
            "seed {seed}: no kiosk process killed\n{stdout}"
        );
        assert!(
            lines.iter().any(|l| l.starts_with("customers/s: ")),
            "seed {seed}:\n{stdout}"
        );
    }
}
