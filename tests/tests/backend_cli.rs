//! `selfvend backend ping|account` as an operator runs them, against the reference backend
//! started as its own process, the way the README shows.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use selfvend_tests::{SignedPlugins, selfvend_bin, selfvend_with, text};

/// The reference backend as a child process; killed when dropped.
struct BackendProcess {
    child: Child,
    fixed_text: String,
    json_http: String,
}

impl BackendProcess {
    fn start(db: &Path) -> BackendProcess {
        let bin = selfvend_bin().with_file_name("selfvend-reference-backend");
        let mut child = Command::new(&bin)
            .args(["--db", &db.display().to_string()])
            .args(["--fixed-text", "127.0.0.1:0", "--json-http", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{}: {e}", bin.display()));
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut address = |prefix: &str| {
            let line = lines.next().expect("a line").expect("stdout");
            line.strip_prefix(prefix)
                .unwrap_or_else(|| panic!("expected {prefix:?}, got {line:?}"))
                .to_string()
        };
        address("books: ");
        let fixed_text = address("fixed-text listening on ");
        let json_http = address("json-http listening on ");
        BackendProcess {
            child,
            fixed_text,
            json_http,
        }
    }
}

impl Drop for BackendProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A kiosk config naming both dialects and one backend per utility.
fn kiosk_config(rig: &SignedPlugins, backend: &BackendProcess) -> PathBuf {
    let fixed = rig.signed("fixed_text_dialect");
    let json = rig.signed("json_http_dialect");
    let path = rig.dir.path().join("kiosk.toml");
    std::fs::write(
        &path,
        format!(
            r#"
[kiosk]
terminal_id = "CLI-0001"
region = "3701"
data_dir = "data"

[trust]
dir = "trust"

[[plugin]]
name = "fixed-text"
role = "backend-dialect"
file = "{}"

[[plugin]]
name = "json-http"
role = "backend-dialect"
file = "{}"

[[backend]]
name = "jinan-power"
dialect = "fixed-text"
utility_codes = ["3701"]
address = "{}"

[[backend]]
name = "guangzhou-power"
dialect = "json-http"
utility_codes = ["4401"]
address = "{}"
"#,
            fixed.display(),
            json.display(),
            backend.fixed_text,
            backend.json_http
        ),
    )
    .unwrap();
    path
}

#[test]
fn an_operator_pings_both_backends_and_looks_up_accounts() {
    let rig = SignedPlugins::new();
    let backend = BackendProcess::start(&rig.dir.path().join("books.sqlite"));
    let config = kiosk_config(&rig, &backend);

    let out = selfvend_with(&config, &["backend", "ping"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let lines: Vec<String> = text(&out.stdout).lines().map(String::from).collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(lines[0].starts_with(&format!(
        "jinan-power (fixed-text 1.1.0 at {}): answered in ",
        backend.fixed_text
    )));
    assert!(lines[1].starts_with(&format!(
        "guangzhou-power (json-http 1.1.0 at {}): answered in ",
        backend.json_http
    )));

    let out = selfvend_with(
        &config,
        &[
            "backend",
            "account",
            "--card-serial",
            "4401000000000001",
            "--utility",
            "4401",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("customer name:   陈小明\n"), "{stdout}");
    assert!(stdout.contains("address:         广东省广州市天河区天河路385号1201房\n"));
    assert!(stdout.contains("price:           56 fen/kWh\n"));

    let out = selfvend_with(
        &config,
        &[
            "backend",
            "account",
            "--card-serial",
            "3701000000000002",
            "--backend",
            "jinan-power",
        ],
    );
    assert!(text(&out.stdout).contains("customer name:   李四\n"));
    assert!(text(&out.stdout).contains("arrears:         1250 fen\n"));

    let out = selfvend_with(
        &config,
        &[
            "backend",
            "account",
            "--card-serial",
            "3701999",
            "--utility",
            "3701",
        ],
    );
    assert!(!out.status.success());
    assert_eq!(
        text(&out.stderr),
        format!(
            "selfvend: jinan-power at {}: the backend refused: 卡号3701999未登记\n",
            backend.fixed_text
        )
    );

    let out = selfvend_with(&config, &["backend", "account", "--card-serial", "1"]);
    assert_eq!(
        text(&out.stderr),
        "selfvend: 2 backends are configured; name one with --backend or --utility\n"
    );
}

#[test]
fn an_operator_prints_an_accounts_bills_through_each_dialect() {
    let rig = SignedPlugins::new();
    let backend = BackendProcess::start(&rig.dir.path().join("books.sqlite"));
    let config = kiosk_config(&rig, &backend);

    let out = selfvend_with(
        &config,
        &[
            "backend",
            "bill",
            "--account",
            "3701200005",
            "--utility",
            "3701",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "account:  3701200005 孙七\n\
         address:  山东省济南市天桥区北园大街200号\n\
         bill:     2026-10 B3701-202610-0005 86.50 yuan + late fee 1.30 yuan\n\
         bill:     2026-11 B3701-202611-0005 93.20 yuan\n\
         owed:     181.00 yuan\n"
    );
    let out = selfvend_with(
        &config,
        &[
            "backend",
            "bill",
            "--account",
            "4401200005",
            "--backend",
            "guangzhou-power",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).ends_with("owed:     156.30 yuan\n"));

    let out = selfvend_with(
        &config,
        &[
            "backend",
            "bill",
            "--account",
            "C37010000X",
            "--utility",
            "3701",
        ],
    );
    assert!(!out.status.success());
    assert_eq!(
        text(&out.stderr),
        format!(
            "selfvend: jinan-power at {}: the backend refused: 户号C37010000X不存在\n",
            backend.fixed_text
        )
    );
    let out = selfvend_with(
        &config,
        &[
            "backend",
            "bill",
            "--account",
            "C3701 0005",
            "--utility",
            "3701",
        ],
    );
    assert_eq!(
        text(&out.stderr),
        "selfvend: account number \"C3701 0005\" may hold only letters and digits, not ' '\n"
    );
}

#[test]
fn a_backend_that_is_down_fails_the_ping_with_the_reason() {
    let rig = SignedPlugins::new();
    let backend = BackendProcess::start(&rig.dir.path().join("books.sqlite"));
    let config = kiosk_config(&rig, &backend);
    let fixed = backend.fixed_text.clone();
    drop(backend);

    let out = selfvend_with(&config, &["backend", "ping", "--backend", "jinan-power"]);
    assert!(!out.status.success());
    let stdout = text(&out.stdout);
    assert!(
        stdout.starts_with(&format!(
            "jinan-power (fixed-text at {fixed}): backend unreachable: "
        )),
        "{stdout}"
    );
    assert!(stdout.contains("Connection refused"), "{stdout}");
}

#[test]
fn the_reference_backend_names_a_bad_fault() {
    let bin = selfvend_bin().with_file_name("selfvend-reference-backend");
    let scratch = tempfile::tempdir().unwrap();
    let out = Command::new(bin)
        .current_dir(scratch.path())
        .args(["--fault", "sell=drop-reply"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert_eq!(
        text(&out.stderr),
        "selfvend-reference-backend: --fault \"sell=drop-reply\": no call named \"sell\" (calls: ping, account-query, \
         can-buy, sale, sale-status, confirm-write, authenticate, card-password, reconcile, quote, bill-query, bill-pay, bill-payment-status)\n"
    );
    // Nothing was started or created.
    assert!(!scratch.path().join("build").exists());
}
