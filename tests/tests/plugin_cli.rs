//! `selfvend plugin keygen|sign|verify|inspect` as a vendor and an operator use them.

use std::path::Path;
use std::process::Output;

use selfvend_tests::{SignedPlugins, selfvend_in};

fn selfvend(dir: &Path, args: &[&str]) -> Output {
    selfvend_in(dir, args)
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn a_vendor_signs_and_a_kiosk_verifies_and_inspects() {
    let rig = SignedPlugins::new();
    let dir = rig.dir.path();
    rig.copy("plain_card");
    std::fs::create_dir(dir.join("kiosk-trust")).unwrap();

    let out = selfvend(
        dir,
        &[
            "plugin",
            "keygen",
            "--out",
            "acme.key",
            "--name",
            "Acme Meters",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).starts_with("wrote acme.key (secret) and acme.key.pub (key id "));
    let out = selfvend(dir, &["plugin", "keygen", "--out", "acme.key"]);
    assert_eq!(
        stderr(&out),
        "selfvend: acme.key exists: refusing to overwrite a key\n"
    );

    let out = selfvend(
        dir,
        &["plugin", "sign", "--key", "acme.key", "plain_card.wasm"],
    );
    assert!(out.status.success(), "{}", stderr(&out));

    let out = selfvend(
        dir,
        &[
            "plugin",
            "verify",
            "--trust",
            "kiosk-trust",
            "plain_card.wasm",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("plain_card.wasm: signed by key "),
        "{}",
        stderr(&out)
    );
    assert!(
        stderr(&out).contains("which is not in the trust store kiosk-trust"),
        "{}",
        stderr(&out)
    );

    std::fs::copy(dir.join("acme.key.pub"), dir.join("kiosk-trust/acme.pub")).unwrap();
    let out = selfvend(
        dir,
        &[
            "plugin",
            "verify",
            "--trust",
            "kiosk-trust",
            "plain_card.wasm",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).starts_with("plain_card.wasm: signed by Acme Meters (key "),
        "{}",
        stdout(&out)
    );

    let out = selfvend(
        dir,
        &[
            "plugin",
            "inspect",
            "--trust",
            "kiosk-trust",
            "plain_card.wasm",
        ],
    );
    let text = stdout(&out);
    assert!(out.status.success(), "{}", stderr(&out));
    for line in [
        "kind: card codec",
        "contract: selfvend:card@1.0.0",
        "exports: selfvend:card/codec@1.0.0",
        "  selfvend:card/channel@1.0.0",
        "signer: Acme Meters (key ",
    ] {
        assert!(text.contains(line), "missing {line:?} in\n{text}");
    }
    assert!(
        text.lines()
            .any(|l| l.starts_with("sha256: ") && l.len() == 8 + 64),
        "{text}"
    );

    let out = selfvend(
        dir,
        &["plugin", "verify", "--trust", "kiosk-trust", "missing.wasm"],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).starts_with("selfvend: reading missing.wasm: "),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_config_with_a_bad_value_is_refused_with_its_line() {
    let rig = SignedPlugins::new();
    let config = rig.dir.path().join("kiosk.toml");
    std::fs::write(&config, "[kiosk]\nterminal_id = \"K1\"\nregion = \"4101\"\ndata_dir = \"d\"\n\n[trust]\ndir = \"trust\"\n\n[devices]\nprinter = { port = \"/dev/ttyS1\", baud = 1234 }\n").unwrap();
    let out = selfvend(rig.dir.path(), &["--config", "kiosk.toml", "check"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        "selfvend: kiosk.toml:10: baud 1234 is not one of [2400, 4800, 9600, 19200, 38400, 57600, 115200]\n"
    );
}
