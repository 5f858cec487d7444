//! The vendor kit as a meter manufacturer uses it: `selfvend plugin new` in each language, the
//! project built with its README's own command, and `selfvend plugin test` on the result, on
//! the shipped codecs and on codecs with bugs planted in them.

use std::path::{Path, PathBuf};
use std::process::Command;

use selfvend_sim::encryption_machine::EncryptionMachine;
use selfvend_sim::sle4442;
use selfvend_tests::{selfvend_in, text, wasm_dir};
use serde_json::Value;

/// `selfvend plugin test ARGS --json`: whether it exited 0, and the report.
fn kit(dir: &Path, args: &[&str]) -> (bool, Value) {
    let mut all = vec!["plugin", "test"];
    all.extend_from_slice(args);
    all.push("--json");
    let out = selfvend_in(dir, &all);
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "plugin test printed no report ({e}): {}{}",
            text(&out.stdout),
            text(&out.stderr)
        )
    });
    assert_eq!(out.status.success(), report["passed"] == true, "{report:#}");
    (out.status.success(), report)
}

fn check<'r>(report: &'r Value, name: &str) -> &'r Value {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no check {name:?} in {report:#}"))
}

/// The details of every check named `name`, in order (a transcript may make a call twice).
fn details(report: &Value, name: &str) -> Vec<String> {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["name"] == name)
        .map(|c| c["detail"].as_str().unwrap_or_default().to_string())
        .collect()
}

fn failed(report: &Value) -> Vec<String> {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["passed"] == false)
        .map(|c| c["name"].as_str().unwrap().to_string())
        .collect()
}

/// Where the scaffolds' own builds keep their output between runs.
fn scaffold_target() -> PathBuf {
    wasm_dir().join("../../kit-scaffolds")
}

/// The tools `./dev` installs (componentize-py, componentize-js) ahead of the PATH.
fn tool_path() -> String {
    let tools = std::env::var("SELFVEND_TOOLS_PATH").unwrap_or_default();
    format!("{tools}:{}", std::env::var("PATH").unwrap_or_default())
}

/// `selfvend plugin new --kind card-codec` into `parent/name`.
fn scaffold(parent: &Path, lang: &str, name: &str) -> PathBuf {
    scaffold_kind(parent, "card-codec", lang, name)
}

fn scaffold_kind(parent: &Path, kind: &str, lang: &str, name: &str) -> PathBuf {
    let out = selfvend_in(
        parent,
        &["plugin", "new", "--kind", kind, "--lang", lang, name],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    parent.join(name)
}

/// The first `sh` block under the README's "## Build", as the vendor would copy it.
fn readme_build_command(dir: &Path) -> String {
    let readme = std::fs::read_to_string(dir.join("README.md")).unwrap();
    let build = readme.split("## Build").nth(1).expect("a Build section");
    let block = build.split("```sh\n").nth(1).expect("a sh block");
    block.split("```").next().unwrap().trim().to_string()
}

/// The arguments of the README's `selfvend plugin test` command, as the vendor would copy it.
fn readme_kit_args(dir: &Path) -> Vec<String> {
    let readme = std::fs::read_to_string(dir.join("README.md")).unwrap();
    let test = readme.split("## Test").nth(1).expect("a Test section");
    let block = test.split("```sh\n").nth(1).expect("a sh block");
    let command = block.split("```").next().unwrap().trim();
    let args = command
        .strip_prefix("selfvend plugin test ")
        .unwrap_or_else(|| panic!("the README's test command is {command:?}"));
    args.split_whitespace().map(str::to_string).collect()
}

fn run_in(dir: &Path, command: &str) {
    let out = Command::new("sh")
        .arg("-c")
        .arg(command)
        .current_dir(dir)
        .env("PATH", tool_path())
        .env("CARGO_TARGET_DIR", scaffold_target())
        .output()
        .expect("run sh");
    assert!(
        out.status.success(),
        "{command} in {}: {}{}",
        dir.display(),
        text(&out.stdout),
        text(&out.stderr)
    );
}

/// Builds a scaffolded project as its README says; returns its component.
fn build(dir: &Path, lang: &str) -> PathBuf {
    if lang == "js" {
        // The README's install step; npm's cache already holds the pinned package.
        run_in(
            dir,
            "npm install --prefer-offline --no-audit --no-fund --silent",
        );
    }
    run_in(dir, &readme_build_command(dir));
    let name = dir.file_name().unwrap().to_string_lossy().into_owned();
    match lang {
        "rust" => scaffold_target().join(format!(
            "wasm32-wasip2/release/{}.wasm",
            name.replace('-', "_")
        )),
        _ => dir.join(format!("{name}.wasm")),
    }
}

/// The scaffold's test terminal master key, as its acquirer README gives it.
const MASTER_KEY: &str = "44454D4F2D544553542D4F4E4C592D4B";

const KIT_CARD: [&str; 8] = [
    "--memory",
    "sle4442",
    "--image",
    "kit/card.hex",
    "--image",
    "kit/used-card.hex",
    "--psc",
    "FFFFFF",
];

#[test]
fn a_new_card_codec_in_each_language_builds_with_its_own_command_and_passes_the_kit() {
    let parent = tempfile::tempdir().unwrap();
    for lang in ["rust", "python", "js"] {
        let dir = scaffold(parent.path(), lang, &format!("acme-{lang}"));
        for file in [
            "README.md",
            ".gitignore",
            "wit/card.wit",
            "kit/card.hex",
            "kit/used-card.hex",
        ] {
            assert!(dir.join(file).is_file(), "{lang}: no {file}");
        }
        let readme = std::fs::read_to_string(dir.join("README.md")).unwrap();
        let wasm = build(&dir, lang);
        let mut args = vec![wasm.to_str().unwrap()];
        args.extend(KIT_CARD);
        let (passed, report) = kit(&dir, &args);
        assert!(passed, "{lang}: {report:#}");
        assert_eq!(
            report["summary"],
            format!(
                "PASS {}: all 24 checks passed",
                wasm.file_stem().unwrap().to_string_lossy()
            )
        );
        assert!(
            check(&report, "used-card.hex: tear-safe write")["detail"]
                .as_str()
                .unwrap()
                .starts_with("cut after each of the write's 16 bytes"),
            "{report:#}"
        );
        assert_eq!(report["counts"]["card.hex: write-credit APDUs"], 4);
        // The kit's command in the README is the one just run.
        assert!(readme.contains(&KIT_CARD.join(" ")), "{readme}");
    }
    // The pinned tools the READMEs name are the ones `./dev` installs.
    let python = std::fs::read_to_string(parent.path().join("acme-python/README.md")).unwrap();
    assert!(python.contains("componentize-py==0.25.1"), "{python}");
    let package = std::fs::read_to_string(parent.path().join("acme-js/package.json")).unwrap();
    assert!(package.contains("\"@bytecodealliance/componentize-js\": \"0.23.0\""));
    assert!(package.contains("--disable http fetch-event"));
}

#[test]
fn a_new_dialect_of_each_kind_in_each_language_builds_with_its_own_command_and_passes_the_kit() {
    let parent = tempfile::tempdir().unwrap();
    for (kind, wit, checks) in [
        ("backend-dialect", "wit/backend.wit", 25),
        ("acquirer-dialect", "wit/payment.wit", 15),
    ] {
        for lang in ["rust", "python", "js"] {
            let name = format!("{}-{lang}", &kind[..kind.find('-').unwrap()]);
            let dir = scaffold_kind(parent.path(), kind, lang, &name);
            for file in ["README.md", ".gitignore", wit, "kit/transcript.toml"] {
                assert!(dir.join(file).is_file(), "{name}: no {file}");
            }
            let wasm = build(&dir, lang);
            let stem = wasm.file_stem().unwrap().to_string_lossy().into_owned();
            // The README's own test command, on the component its build command wrote.
            let args = readme_kit_args(&dir);
            let file = wasm.file_name().unwrap().to_string_lossy();
            assert!(
                args[0].ends_with(&*file),
                "{name}: the README tests {}",
                args[0]
            );
            let mut args: Vec<&str> = args.iter().map(String::as_str).collect();
            let path = wasm.to_string_lossy().into_owned();
            args[0] = &path;
            let (passed, report) = kit(&dir, &args);
            assert!(passed, "{name}: {report:#}");
            assert_eq!(
                report["summary"],
                format!("PASS {stem}: all {checks} checks passed")
            );
            if kind == "backend-dialect" {
                // The transcript's grant, and its refusals, NONE included, read as such.
                let sales = details(&report, "sale replayed");
                assert!(
                    sales[0].contains("purchase_count: 1, amount: Fen(5000), energy: Wh(89285)"),
                    "{name}: {sales:?}"
                );
                assert_eq!(sales[1], "refused: 请先缴清欠费 35.20 元", "{name}");
                assert!(
                    details(&report, "can-buy replayed")[1].contains(
                        "refusal: Some(Refusal { code: OverLimit, message: \"单次购电不得超过 5000 元\" })"
                    ),
                    "{name}: {report:#}"
                );
                assert_eq!(
                    details(&report, "sale-status replayed")[1],
                    "success (NotFound)",
                    "{name}"
                );
                assert!(
                    check(&report, "every call implemented or not-supported")["detail"]
                        .as_str()
                        .unwrap()
                        .contains("quote not-supported, bill-query not-supported"),
                    "{name}: {report:#}"
                );
                // A malformed reply names its field.
                let transcript = std::fs::read_to_string(dir.join("kit/transcript.toml")).unwrap();
                let from = "|A|0|56|0\\n";
                assert!(transcript.contains(from), "{transcript}");
                std::fs::write(
                    dir.join("bad.toml"),
                    transcript.replace(from, "|A|x|56|0\\n"),
                )
                .unwrap();
                let (passed, report) = kit(&dir, &[&path, "--transcript", "bad.toml"]);
                assert!(!passed);
                let detail = check(&report, "account-query replayed")["detail"]
                    .as_str()
                    .unwrap();
                assert!(
                    detail.starts_with(
                        "the recorded reply gave malformed-reply: ACCOUNT reply, field 7 \
                         (purchase count): "
                    ) && (detail.ends_with("x\" is not a number")
                        || detail.ends_with("x' is not a number")),
                    "{name}: {detail}"
                );
                if lang == "rust" {
                    // A PSC written to the log is named, and not shown again in the report.
                    let source = dir.join("src/lib.rs");
                    let code = std::fs::read_to_string(&source).unwrap();
                    let from = "let psc = f.hex(\"PSC\")?;";
                    assert!(code.contains(from), "the scaffold no longer has {from:?}");
                    let to = "let psc = f.hex(\"PSC\")?; log(Level::Info, &format!(\"PSC {}\", hex(&psc)));";
                    std::fs::write(&source, code.replacen(from, to, 1)).unwrap();
                    let wasm = build(&dir, lang);
                    let (passed, report) = kit(
                        &dir,
                        &[
                            wasm.to_str().unwrap(),
                            "--transcript",
                            "kit/transcript.toml",
                        ],
                    );
                    assert!(!passed);
                    assert_eq!(failed(&report), ["no card data in the log"]);
                    assert_eq!(
                        check(&report, "no card data in the log")["detail"],
                        "card-password logged the PSC: [info] PSC […]"
                    );
                }
            } else {
                assert_eq!(
                    check(&report, "purchase replayed")["detail"],
                    "success (Approved(Approval { rrn: \"612345678901\", auth_code: \"A12345\", \
                     amount: Fen(5000), acquirer_time: \"1207093012\" }))",
                    "{name}"
                );
                assert_eq!(check(&report, "no card data in the log")["passed"], true);
                let purchases = details(&report, "purchase replayed");
                assert_eq!(
                    purchases[1],
                    "success (Declined(Decline { code: InsufficientFunds, response_code: \"51\", \
                     message: \"余额不足\" }))",
                    "{name}"
                );
                assert_eq!(purchases[2], "refused: MAC 错误，请重新签到", "{name}");
                // A reply whose MAC does not verify may not be the acquirer's, an approval, a
                // decline or a refusal alike: the purchase's outcome is unknown, and the kiosk
                // reverses it.
                let transcript = std::fs::read_to_string(dir.join("kit/transcript.toml")).unwrap();
                let mut bad = transcript.clone();
                for mac in ["D0B99A2964303EFD", "F32D4C3538EF0B69", "3C65719D2A225E2E"] {
                    assert!(bad.contains(mac), "{transcript}");
                    bad = bad.replace(mac, &mac.replace('E', "F").replace('D', "E"));
                }
                std::fs::write(dir.join("bad.toml"), bad).unwrap();
                let (passed, report) = kit(
                    &dir,
                    &[
                        &path,
                        "--master-key",
                        MASTER_KEY,
                        "--transcript",
                        "bad.toml",
                    ],
                );
                assert!(!passed);
                assert_eq!(
                    details(&report, "purchase replayed"),
                    ["the recorded reply gave outcome-unknown: SALE: the reply's MAC does not verify";
                        3],
                    "{name}"
                );
            }
        }
    }
}

/// Plants `bug` (a text replacement) in a fresh Rust scaffold, builds it, runs the kit.
fn planted(parent: &Path, name: &str, from: &str, to: &str) -> Value {
    let dir = scaffold(parent, "rust", name);
    let source = dir.join("src/lib.rs");
    let code = std::fs::read_to_string(&source).unwrap();
    assert!(code.contains(from), "the scaffold no longer has {from:?}");
    std::fs::write(&source, code.replacen(from, to, 1)).unwrap();
    let wasm = build(&dir, "rust");
    let mut args = vec![wasm.to_str().unwrap()];
    args.extend(KIT_CARD);
    let (passed, report) = kit(&dir, &args);
    assert!(!passed, "{name}: the kit passed a planted bug: {report:#}");
    report
}

#[test]
fn the_kit_names_each_planted_bug() {
    let parent = tempfile::tempdir().unwrap();

    // A slot read without its CRC: a torn write reads as a credit.
    let report = planted(
        parent.path(),
        "tear-unsafe",
        "if crc16(&raw[..14]) != u16::from_be_bytes([raw[14], raw[15]]) {",
        "if raw[0] == 0 {",
    );
    assert_eq!(
        failed(&report),
        [
            "card.hex: tear-safe write",
            "used-card.hex: tear-safe write"
        ]
    );
    assert_eq!(
        check(&report, "card.hex: tear-safe write")["detail"],
        "power cut after 3 of the write's 16 bytes: the re-write was refused (grant rejected: \
         grant carries purchase count 1; the card's next is 2), so the kiosk would tell the \
         backend \"not written\", but the card's purchase count is 1"
    );
    assert!(
        report["summary"]
            .as_str()
            .unwrap()
            .starts_with("FAIL tear_unsafe: card.hex: tear-safe write: power cut after 3")
    );
    let trace = check(&report, "card.hex: tear-safe write")["trace"]
        .as_array()
        .unwrap()
        .clone();
    assert!(trace.contains(&Value::from(
        "< (power cut during the write: the card was pulled)"
    )));

    // Every credit written over slot A: safe on a new card, not on one whose credit it destroys.
    let report = planted(
        parent.path(),
        "in-place",
        "write(channel, image.free_slot(), &slot.encode()",
        "write(channel, SLOTS[0], &slot.encode()",
    );
    assert_eq!(failed(&report), ["used-card.hex: tear-safe write"]);
    assert_eq!(
        check(&report, "used-card.hex: tear-safe write")["detail"],
        "power cut after 1 of the write's 16 bytes: the card's purchase count went back from 1 \
         to 0: the torn write destroyed the credit the card held"
    );

    // A refused PSC presented again.
    let report = planted(
        parent.path(),
        "psc-retry",
        "present_psc(channel, &psc)?;",
        "if present_psc(channel, &psc).is_err() { present_psc(channel, &psc)?; }",
    );
    assert_eq!(
        failed(&report),
        [
            "card.hex: PSC presented at most once",
            "card.hex: bad answers give typed errors",
            "used-card.hex: PSC presented at most once",
            "used-card.hex: bad answers give typed errors"
        ]
    );
    assert_eq!(
        check(&report, "card.hex: PSC presented at most once")["detail"],
        "a refused PSC was presented 2 times: the card went from 3 tries left to 1"
    );
    assert_eq!(
        check(&report, "card.hex: bad answers give typed errors")["detail"],
        "a 1-byte answer at APDU 3 of write-credit: the PSC was presented 2 times"
    );

    // A grant for another card written.
    let report = planted(
        parent.path(),
        "any-card",
        "        image.check_serial(&grant)?;\n        if image.current",
        "        if image.current",
    );
    assert_eq!(
        failed(&report),
        [
            "card.hex: grant for another card",
            "used-card.hex: grant for another card"
        ]
    );
    assert_eq!(
        check(&report, "card.hex: grant for another card")["detail"],
        "accepted: card 3701000000000009 purchase 1 was written"
    );
}

#[test]
fn a_javascript_codec_that_lets_a_channel_error_out_is_named_as_a_trap_in_the_first_line() {
    let parent = tempfile::tempdir().unwrap();
    let dir = scaffold(parent.path(), "js", "leaky");
    let source = dir.join("app.js");
    let code = std::fs::read_to_string(&source).unwrap();
    let from = "    const channel = e.payload ?? e;\n";
    assert!(code.contains(from));
    std::fs::write(
        &source,
        code.replacen(from, "    throw e;\n    const channel = e;\n", 1),
    )
    .unwrap();
    let wasm = build(&dir, "js");
    let (passed, report) = kit(
        &dir,
        &[
            wasm.to_str().unwrap(),
            KIT_CARD[0],
            KIT_CARD[1],
            KIT_CARD[2],
            KIT_CARD[3],
        ],
    );
    assert!(!passed);
    let summary = report["summary"].as_str().unwrap();
    assert!(
        summary.starts_with("FAIL leaky: bad answers give typed errors: the host refusing the command at APDU 1 of identify: plugin leaky: identify trapped:"),
        "{summary}"
    );
}

#[test]
fn the_shipped_hengtai_codec_passes_the_kit_on_a_card_its_utility_issued() {
    let dir = tempfile::tempdir().unwrap();
    let machine = EncryptionMachine::new([0x11; 16]);
    let card = sle4442::ht01::issue(
        &machine,
        "3701000000000042",
        "3701",
        "C3701000042",
        "M3701000042",
    );
    std::fs::write(dir.path().join("ht01.bin"), card.memory).unwrap();
    let psc = hex::encode(machine.memory_card_psc("3701000000000042"));
    let wasm = wasm_dir().join("hengtai_sle4442_codec.wasm");
    let (passed, report) = kit(
        dir.path(),
        &[
            wasm.to_str().unwrap(),
            "--memory",
            "sle4442",
            "--image",
            "ht01.bin",
            "--psc",
            &psc,
            "--token",
            "0A0B0C0D0E",
        ],
    );
    assert!(passed, "{report:#}");
    assert_eq!(
        check(&report, "read")["detail"],
        "card 3701000000000042 of utility 3701, purchase count 0, pending none"
    );
    assert_eq!(report["counts"]["write-credit APDUs"], 6);
}

#[test]
fn the_shipped_lanling_codec_passes_the_kit_on_a_virtual_cpu_card() {
    let dir = tempfile::tempdir().unwrap();
    let codec = wasm_dir().join("lanling_cpu_codec.wasm");
    let sim = wasm_dir().join("lanling_card_sim.wasm");
    let (passed, report) = kit(
        dir.path(),
        &[
            codec.to_str().unwrap(),
            "--card-sim",
            sim.to_str().unwrap(),
            "--token",
            "0102030405",
        ],
    );
    assert!(passed, "{report:#}");
    assert_eq!(
        report["summary"],
        "PASS lanling_cpu_codec: all 11 checks passed"
    );
    assert_eq!(
        check(&report, "identify")["detail"],
        "claims the card as lanling-cpu-esam1 (a write needs the encryption machine)"
    );
    assert!(
        check(&report, "tear-safe write")["detail"]
            .as_str()
            .unwrap()
            .starts_with("cut after each of the write's 7 APDUs"),
        "{report:#}"
    );
    // A component of another world is refused as a virtual card, saying so.
    let hengtai = wasm_dir().join("hengtai_sle4442_codec.wasm");
    let out = selfvend_in(
        dir.path(),
        &[
            "plugin",
            "test",
            codec.to_str().unwrap(),
            "--card-sim",
            hengtai.to_str().unwrap(),
        ],
    );
    assert!(!out.status.success());
    assert!(
        text(&out.stderr)
            .contains("hengtai_sle4442_codec.wasm: is not a selfvend:card-sim virtual card"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn bad_kit_input_is_refused_with_what_and_where() {
    let dir = tempfile::tempdir().unwrap();
    let wasm = wasm_dir().join("hengtai_sle4442_codec.wasm");
    let wasm = wasm.to_str().unwrap();
    std::fs::write(dir.path().join("short.hex"), "A2 13 10 91\nzz\n").unwrap();
    std::fs::write(dir.path().join("not.wasm"), b"\0asm\x01\0\0\0").unwrap();
    let cases: [(&[&str], &str); 4] = [
        (
            &[wasm, "--memory", "sle4442", "--image", "short.hex"],
            "short.hex: line 2: 'z' is not a hex digit",
        ),
        (
            &[wasm, "--memory", "sle5542", "--image", "short.hex"],
            "--memory \"sle5542\": the kit plays sle4442, sle4428 or at24",
        ),
        (
            &[wasm],
            "a card codec is tested on a card: give --memory TYPE --image FILE, or --card-sim \
             SIM.wasm",
        ),
        (
            &["not.wasm"],
            "not.wasm: refused: not a WebAssembly component: a core module, not a component \
             (build a component: for Rust, the wasm32-wasip2 target)",
        ),
    ];
    for (args, error) in cases {
        let mut all = vec!["plugin", "test"];
        all.extend_from_slice(args);
        let out = selfvend_in(dir.path(), &all);
        assert!(!out.status.success());
        let stderr = text(&out.stderr);
        assert!(stderr.contains(error), "{args:?}: {stderr}");
        assert!(stderr.lines().count() <= 2, "{stderr}");
    }
}

/// Records the kit's calls from the reference backend through `dialect` at `address`, then
/// tests the dialect against the recording.
fn recorded_and_tested(dir: &Path, wasm: &str, address: &str) -> (bool, Value) {
    let calls = Path::new(env!("CARGO_MANIFEST_DIR")).join("kit/backend-calls.toml");
    let out = selfvend_in(
        dir,
        &[
            "plugin",
            "test",
            wasm,
            "--transcript",
            calls.to_str().unwrap(),
            "--record",
            address,
            "--out",
            "recorded.toml",
        ],
    );
    assert!(
        out.status.success(),
        "recording: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let recorded = std::fs::read_to_string(dir.join("recorded.toml")).unwrap();
    assert!(recorded.contains("[[call.exchange]]"), "{recorded}");
    kit(dir, &[wasm, "--transcript", "recorded.toml"])
}

#[test]
fn the_shipped_backend_dialects_pass_the_kit_on_transcripts_recorded_from_a_backend() {
    for name in [
        "fixed_text_dialect",
        "json_http_dialect",
        "fixed_text_dialect_1_0",
    ] {
        let dir = tempfile::tempdir().unwrap();
        // A backend of its own, with its books as seeded.
        let backend = selfvend_sim::reference_backend::ReferenceBackend::start(
            &dir.path().join("books.sqlite"),
            selfvend_sim::reference_backend::Listen::default(),
        )
        .unwrap();
        let address = match name {
            "json_http_dialect" => backend.json_http_address(),
            _ => backend.fixed_text_address(),
        };
        let wasm = wasm_dir().join(format!("{name}.wasm"));
        let (passed, report) =
            recorded_and_tested(dir.path(), wasm.to_str().unwrap(), &address.to_string());
        assert!(passed, "{name}: {report:#}");
        assert_eq!(
            report["summary"],
            format!("PASS {name}: all 21 checks passed"),
            "{report:#}"
        );
        let sale = check(&report, "sale under faults")["detail"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(
            sale.starts_with("no reply after the request: outcome-unknown; a reply later than the kiosk waits: outcome-unknown"),
            "{name}: {sale}"
        );
    }
}

#[test]
fn the_kit_catches_a_dialect_that_reports_a_timeout_as_a_refusal() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("line.toml"),
        r#"
[[call]]
call = "sale"
sale = { terminal_id = "KIT-0001", kiosk_serial = 7, payment = "cash", paid = 5000, purchase = { money = 5000 }, card = { card_serial = "3701000000000001", utility_code = "3701", customer_number = "C370100001", meter_number = "M3701000001", purchase_count = 0, pending = 0, pending_energy = 0 } }
[[call.exchange]]
sent = "SALE 7\n"
reply = "GRANT S-7 1 5000\n"
"#,
    )
    .unwrap();
    let good = wasm_dir().join("line_backend.wasm");
    let (passed, report) = kit(
        dir.path(),
        &[good.to_str().unwrap(), "--transcript", "line.toml"],
    );
    assert!(passed, "{report:#}");
    let planted = wasm_dir().join("line_backend_timeout_refusal.wasm");
    let (passed, report) = kit(
        dir.path(),
        &[planted.to_str().unwrap(), "--transcript", "line.toml"],
    );
    assert!(!passed);
    assert_eq!(
        failed(&report),
        [
            "sale under faults",
            "every call implemented or not-supported"
        ]
    );
    assert_eq!(
        report["summary"],
        "FAIL line_backend_timeout_refusal: sale under faults: a reply later than the kiosk \
         waits: reported a refusal (\"backend said no (timed out)\") with no answer: it must be \
         outcome-unknown (the kiosk does not take it) (2 of 4 checks failed)"
    );
    assert_eq!(
        check(&report, "every call implemented or not-supported")["detail"],
        "ping: no reply, reported an answer"
    );
    // A transcript that does not parse names the call and the key.
    std::fs::write(
        dir.path().join("bad.toml"),
        "[[call]]\ncall = \"sale\"\nsale = { kiosk_serial = 7 }\n",
    )
    .unwrap();
    let out = selfvend_in(
        dir.path(),
        &[
            "plugin",
            "test",
            good.to_str().unwrap(),
            "--transcript",
            "bad.toml",
        ],
    );
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("bad.toml: call 1 (sale): missing field `terminal_id`"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn a_missing_trust_directory_is_named_with_its_config_key_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("kiosk.toml");
    std::fs::write(
        &config,
        "[kiosk]\nterminal_id = \"KIT-0002\"\nregion = \"3701\"\ndata_dir = \"data\"\n\n[trust]\ndir = \"nonexist\"\n",
    )
    .unwrap();
    let out = selfvend_in(dir.path(), &["--config", "kiosk.toml", "check"]);
    assert!(!out.status.success());
    assert_eq!(
        text(&out.stderr).trim(),
        "selfvend: kiosk.toml:7: `[trust] dir`: nonexist: No such file or directory (os error 2)"
    );
}

#[test]
fn the_shipped_acquirer_dialect_passes_the_kit_and_one_that_logs_the_pan_is_caught() {
    let acquirer = selfvend_sim::acquirer::Acquirer::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let calls = Path::new(env!("CARGO_MANIFEST_DIR")).join("kit/acquirer-calls.toml");
    let master = hex::encode(selfvend_sim::pin_pad::TEST_MASTER_KEY);
    let wasm = wasm_dir().join("iso8583_acquirer.wasm");
    let out = selfvend_in(
        dir.path(),
        &[
            "plugin",
            "test",
            wasm.to_str().unwrap(),
            "--master-key",
            &master,
            "--transcript",
            calls.to_str().unwrap(),
            "--record",
            &acquirer.address().to_string(),
            "--out",
            "recorded.toml",
        ],
    );
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let (passed, report) = kit(
        dir.path(),
        &[
            wasm.to_str().unwrap(),
            "--master-key",
            &master,
            "--transcript",
            "recorded.toml",
        ],
    );
    assert!(passed, "{report:#}");
    assert!(
        check(&report, "no card data in the log")["detail"]
            .as_str()
            .unwrap()
            .starts_with("no PAN, Track 2 or PIN block in the log or an error of any of "),
        "{report:#}"
    );
    let purchase = check(&report, "purchase under faults")["detail"]
        .as_str()
        .unwrap();
    assert!(
        purchase.starts_with("no reply after the request: outcome-unknown; a reply later than the kiosk waits: outcome-unknown"),
        "{purchase}"
    );

    let planted = wasm_dir().join("iso8583_acquirer_pan_log.wasm");
    let (passed, report) = kit(
        dir.path(),
        &[
            planted.to_str().unwrap(),
            "--master-key",
            &master,
            "--transcript",
            "recorded.toml",
        ],
    );
    assert!(!passed);
    assert_eq!(failed(&report), ["no card data in the log"]);
    assert_eq!(
        check(&report, "no card data in the log")["detail"],
        "purchase logged the PAN: [info] purchase with card ***************0128"
    );
}
