//! `selfvend trust root-keygen|endorse|list`: a utility's root key, kept offline, endorses a
//! vendor's key; a kiosk trusts a vendor key it was not installed with only when its own root
//! signed the statement, whoever carried it.

use std::path::Path;
use std::process::Output;

use selfvend_tests::{SignedPlugins, selfvend_in};

fn selfvend(dir: &Path, args: &[&str]) -> Output {
    selfvend_in(dir, args)
}

fn ok(dir: &Path, args: &[&str]) -> String {
    let out = selfvend(dir, args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `selfvend plugin verify` against the kiosk's trust directory: its output or its error.
fn verify(dir: &Path) -> Result<String, String> {
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
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

fn key_id(said: &str) -> String {
    said.split("key id ").nth(1).unwrap()[..16].to_string()
}

#[test]
fn a_kiosk_trusts_a_vendor_key_only_when_its_own_root_endorsed_it() {
    let rig = SignedPlugins::new();
    let dir = rig.dir.path();
    rig.copy("plain_card");
    let said = ok(
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
    let acme = key_id(&said);
    ok(
        dir,
        &["plugin", "sign", "--key", "acme.key", "plain_card.wasm"],
    );

    // The utility's root; the kiosk is installed with its public half only.
    let said = ok(
        dir,
        &[
            "trust",
            "root-keygen",
            "--out",
            "root.key",
            "--name",
            "Jinan Power root",
        ],
    );
    assert!(
        said.starts_with("wrote root.key (secret: keep it offline) and root.key.pub (key id "),
        "{said}"
    );
    let root = key_id(&said);
    std::fs::create_dir_all(dir.join("kiosk-trust/roots")).unwrap();
    std::fs::copy(
        dir.join("root.key.pub"),
        dir.join("kiosk-trust/roots/root.pub"),
    )
    .unwrap();
    let refused = verify(dir).unwrap_err();
    assert!(
        refused.contains(&format!(
            "signed by key {acme}, which is not in the trust store"
        )),
        "{refused}"
    );

    // A statement signed by some other key (the fleet server's, say) adds nothing.
    ok(
        dir,
        &["plugin", "keygen", "--out", "fleet.key", "--name", "fleet"],
    );
    ok(
        dir,
        &[
            "trust",
            "endorse",
            "--root",
            "fleet.key",
            "acme.key.pub",
            "--out",
            "kiosk-trust/acme.endorsement",
        ],
    );
    assert!(verify(dir).is_err());
    let listed = ok(dir, &["trust", "list", "--trust", "kiosk-trust"]);
    assert!(
        listed.contains("refused kiosk-trust/acme.endorsement: endorsed by key "),
        "{listed}"
    );
    assert!(
        listed.contains("which is not one of this kiosk's root keys"),
        "{listed}"
    );

    // The root's own statement: the vendor's plugin verifies, under the endorsed name.
    std::fs::remove_file(dir.join("kiosk-trust/acme.endorsement")).unwrap();
    let said = ok(
        dir,
        &["trust", "endorse", "--root", "root.key", "acme.key.pub"],
    );
    assert_eq!(
        said,
        format!("wrote acme.endorsement: root key {root} endorses Acme Meters (key {acme})\n")
    );
    std::fs::rename(
        dir.join("acme.endorsement"),
        dir.join("kiosk-trust/acme.endorsement"),
    )
    .unwrap();
    assert_eq!(
        verify(dir).unwrap(),
        format!(
            "plain_card.wasm: signed by Acme Meters (endorsed by Jinan Power root) (key {acme})\n"
        )
    );
    assert_eq!(
        ok(dir, &["trust", "list", "--trust", "kiosk-trust"]),
        format!(
            "root    {root} Jinan Power root\n\
             trusted {acme} Acme Meters (endorsed by Jinan Power root)\n"
        )
    );

    // The statement changed on its way (another name for the key): refused.
    let path = dir.join("kiosk-trust/acme.endorsement");
    let text = std::fs::read_to_string(&path).unwrap();
    let (comment, line) = text.split_once('\n').unwrap();
    std::fs::write(
        &path,
        format!(
            "{comment}\n{}",
            line.replace("Acme Meters", "Acme Meters Official")
        ),
    )
    .unwrap();
    assert!(verify(dir).is_err());
    let listed = ok(dir, &["trust", "list", "--trust", "kiosk-trust"]);
    assert!(listed.contains("changed after it was signed"), "{listed}");

    // The root signs no plugin itself: it is not a vendor key.
    std::fs::remove_file(&path).unwrap();
    std::fs::remove_file(dir.join("plain_card.wasm.sig")).unwrap();
    ok(
        dir,
        &["plugin", "sign", "--key", "root.key", "plain_card.wasm"],
    );
    let refused = verify(dir).unwrap_err();
    assert!(
        refused.contains(&format!(
            "signed by key {root}, which is not in the trust store"
        )),
        "{refused}"
    );
}
