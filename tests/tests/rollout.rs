//! Plugin rollouts from the fleet to kiosk processes (`selfvend-kiosk-child`, the kiosk as
//! `selfvend kiosk` assembles it, without a window), on the real PostgreSQL: canaries first,
//! a failed self-check rolling the build back everywhere it landed, a kiosk offline through a
//! rollout catching up, builds the kiosk's own trust store refuses, and SIGKILL mid-switch.

use std::path::{Path, PathBuf};

use selfvend_host::plugin::trust::SecretKey;
use selfvend_tests::fleet_rig::{FleetDb, FleetServer};
use selfvend_tests::kiosk_process::{KioskProcess, wait_for};
use selfvend_tests::kiosk_rig::World;
use selfvend_tests::webdriver::Browser;

const ADMIN_PASSWORD: &str = "correct horse 电池";

/// A build of `plugin` that is not the one the kiosks run: the same code with a custom section
/// naming `tag` (a vendor's next release, as far as bytes go), signed by `key`, as
/// `<plugin's stem>-<tag>.wasm`.
fn rebuilt(dir: &Path, plugin: &Path, tag: &str, key: &SecretKey) -> PathBuf {
    let mut bytes = std::fs::read(plugin).unwrap();
    let name = b"selfvend-test-build";
    let mut section = vec![name.len() as u8];
    section.extend_from_slice(name);
    section.extend_from_slice(tag.as_bytes());
    bytes.push(0);
    bytes.push(section.len() as u8);
    bytes.extend_from_slice(&section);
    let stem = plugin.file_stem().unwrap().to_string_lossy();
    let path = dir.join(format!("{stem}-{tag}.wasm"));
    std::fs::write(&path, &bytes).unwrap();
    key.sign_file(&path, &bytes).unwrap();
    path
}

fn sha256_of(path: &Path) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(std::fs::read(path).unwrap()))
}

fn admin(db: &FleetDb, args: &[&str]) -> String {
    db.admin(args)
        .unwrap_or_else(|e| panic!("selfvend-fleet {args:?}: {e}"))
        .trim()
        .to_string()
}

/// Rolls build `sha` of the fixed-text dialect out to `kiosk` alone; the rollout's id.
fn roll_out_to(db: &FleetDb, sha: &str, kiosk: &KioskProcess) -> String {
    admin(
        db,
        &[
            "rollout",
            "create",
            "--plugin",
            "fixed-text",
            "--build",
            sha,
            "--kiosk",
            &kiosk.id,
            "--by",
            "admin",
        ],
    )
}

fn step(rollout: &str, kiosk: &KioskProcess) -> String {
    format!(
        "SELECT coalesce(step, 'none') FROM rollout_kiosks \
         WHERE rollout_id = {rollout} AND kiosk_id = '{}'",
        kiosk.id
    )
}

/// How many kiosks last reported running build `sha` of the fixed-text dialect.
fn running(sha: &str) -> String {
    format!(
        "SELECT count(*) FROM kiosks, jsonb_array_elements(heartbeat->'plugins') p
         WHERE p->>'name' = 'fixed-text' AND p->>'sha256' = '{sha}'"
    )
}

fn state(rollout: &str) -> String {
    format!("SELECT state FROM rollouts WHERE id = {rollout}")
}

#[test]
fn a_build_reaches_the_canary_then_the_fleet_an_offline_kiosk_catches_up_and_all_roll_back() {
    let world = World::new();
    let db = FleetDb::new();
    let server = FleetServer::start_with(&db, &["--heartbeat-secs", "1"]);
    let jinan = world.jinan.fixed_text_address().to_string();
    let mut kiosks: Vec<KioskProcess> = (1..=3)
        .map(|n| KioskProcess::paired(&world, &db, &server, n, &jinan))
        .collect();
    for k in &mut kiosks[..2] {
        k.start();
    }
    let original = sha256_of(&world.files[2].1);
    for k in &kiosks[..2] {
        wait_for(
            &db,
            &format!(
                "SELECT count(*) FROM kiosks WHERE id = '{}' AND heartbeat IS NOT NULL",
                k.id
            ),
            "1",
        );
        assert_eq!(k.runs(&db), original);
    }

    let dir = world.plugins.dir.path();
    let build = rebuilt(dir, &world.files[2].1, "2.0", &world.plugins.key);
    let sha = admin(&db, &["upload", build.to_str().unwrap(), "--by", "admin"]);
    assert_eq!(sha, sha256_of(&build));
    let rollout = admin(
        &db,
        &[
            "rollout",
            "create",
            "--plugin",
            "fixed-text",
            "--build",
            &sha,
            "--region",
            "3701",
            "--canary",
            &kiosks[0].id,
            "--by",
            "admin",
        ],
    );

    // The canary first; the rest only once it runs the build.
    wait_for(&db, &step(&rollout, &kiosks[0]), "active");
    wait_for(&db, &state(&rollout), "fleet");
    wait_for(&db, &step(&rollout, &kiosks[1]), "active");
    let opened = db.sql(&format!(
        "SELECT (SELECT at FROM rollout_events WHERE rollout_id = {rollout} AND what LIKE 'every canary%')
                <= (SELECT step_at FROM rollout_kiosks WHERE rollout_id = {rollout} AND kiosk_id = '{}')",
        kiosks[1].id
    ));
    assert_eq!(
        opened, "t",
        "a kiosk took the build before the canary ran it"
    );
    wait_for(&db, &running(&sha), "2");
    assert_eq!(kiosks[0].runs(&db), sha);
    let detail = db.sql(&step(&rollout, &kiosks[0]).replace("coalesce(step, 'none')", "detail"));
    assert!(
        detail.contains("signed by selfvend test key")
            && detail.contains("self-check: Provincial Marketing System (fictional) fixed-text ")
            && detail.ends_with(", pinged jinan-power"),
        "{detail}"
    );
    // The third kiosk was off through all of it: the rollout waits for it.
    assert_eq!(db.sql(&state(&rollout)), "fleet");
    assert_eq!(db.sql(&step(&rollout, &kiosks[2])), "none");
    let status = admin(&db, &["rollout", "status", &rollout]);
    assert!(status.contains(&format!("rollout {rollout} fixed-text {} (fixed_text_dialect-2.0.wasm): fleet, 2 of 3 kiosks run it", &sha[..12])), "{status}");
    assert!(
        status.contains(&format!("  {} K-ROLL-01 (canary): active", kiosks[0].id)),
        "{status}"
    );
    assert!(
        status.contains(&format!("  {} K-ROLL-03: not yet heard", kiosks[2].id)),
        "{status}"
    );

    kiosks[2].start();
    wait_for(&db, &step(&rollout, &kiosks[2]), "active");
    wait_for(&db, &state(&rollout), "complete");
    // Its own disk says so too: the build is installed, the old one kept to go back to.
    let state_file = std::fs::read_to_string(kiosks[2].data.join("plugins/state.json")).unwrap();
    assert!(
        state_file.contains(&format!("\"current\": \"{sha}\"")),
        "{state_file}"
    );
    assert!(state_file.contains("\"previous\": null"), "{state_file}");

    // The admin sees it in the console, is told what is wrong with a mistaken rollout, and
    // rolls this one back from there: every kiosk goes back to the build it ran before.
    db.add_user("admin", ADMIN_PASSWORD, "admin");
    let b = Browser::start();
    b.go(&format!("{}/login?lang=zh", server.url));
    b.type_into("#name", "admin");
    b.type_into("#password", ADMIN_PASSWORD);
    b.submit("#sign-in");
    b.go(&format!("{}/rollouts", server.url));
    assert_eq!(b.text(&format!("#state-{rollout}")), "已完成");
    let table = b.text(&format!("#kiosks-{rollout}"));
    assert!(table.contains("K-ROLL-01（先行）"), "{table}");
    assert_eq!(table.matches("运行中").count(), 3, "{table}");
    assert!(b.text("#builds").contains("fixed_text_dialect-2.0.wasm"));
    // A vendor's next build, uploaded from the browser as it was shipped.
    let next = rebuilt(dir, &world.files[2].1, "2.5", &world.plugins.key);
    b.choose_file("#upload-component", &next);
    b.choose_file(
        "#upload-signature",
        &PathBuf::from(format!("{}.sig", next.display())),
    );
    b.submit("#upload");
    assert!(b.text("#builds").contains("fixed_text_dialect-2.5.wasm"));
    assert_eq!(
        db.sql(&format!(
            "SELECT uploaded_by FROM plugin_builds WHERE sha256 = '{}'",
            sha256_of(&next)
        )),
        "admin"
    );
    b.choose_file("#upload-component", &next);
    b.submit("#upload");
    assert_eq!(
        b.text("#error"),
        "choose the build's .wasm file and its .sig file"
    );
    b.type_into("#new-plugin", "fixed-text");
    b.type_into("#new-build", "<b>abc</b>");
    b.type_into("#new-region", "3701");
    b.submit("#create");
    assert_eq!(
        b.text("#error"),
        "build \"<b>abc</b>\": not a SHA-256 in hex"
    );
    b.submit(&format!("#rollback-{rollout}"));
    assert_eq!(b.text(&format!("#state-{rollout}")), "已回滚");
    assert_eq!(
        db.sql(&format!("SELECT why FROM rollouts WHERE id = {rollout}")),
        "rolled back by admin"
    );
    for k in &kiosks {
        wait_for(&db, &step(&rollout, k), "rolled-back");
    }
    wait_for(&db, &running(&original), "3");
    assert_eq!(
        db.admin(&["rollout", "pause", &rollout, "--by", "admin"])
            .unwrap_err()
            .lines()
            .next()
            .unwrap(),
        format!("Error: rollout {rollout} is rolled-back: not paused")
    );
    for k in &mut kiosks {
        k.stop();
    }
}

#[test]
fn a_build_that_fails_its_self_check_on_one_kiosk_is_rolled_back_everywhere_it_landed() {
    let world = World::new();
    let db = FleetDb::new();
    let server = FleetServer::start_with(&db, &["--heartbeat-secs", "1"]);
    let jinan = world.jinan.fixed_text_address().to_string();
    // The second kiosk's Jinan backend is not there: the new build's ping fails there only.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let mut kiosks: Vec<KioskProcess> = [(1, &jinan), (2, &dead), (3, &jinan)]
        .into_iter()
        .map(|(n, address)| KioskProcess::paired(&world, &db, &server, n, address))
        .collect();
    for k in &mut kiosks {
        k.start();
    }
    let original = sha256_of(&world.files[2].1);
    wait_for(&db, &running(&original), "3");

    let build = rebuilt(
        world.plugins.dir.path(),
        &world.files[2].1,
        "2.1",
        &world.plugins.key,
    );
    let sha = admin(&db, &["upload", build.to_str().unwrap(), "--by", "admin"]);
    let rollout = admin(
        &db,
        &[
            "rollout",
            "create",
            "--plugin",
            "fixed-text",
            "--build",
            &sha,
            "--kiosk",
            &kiosks[0].id,
            "--kiosk",
            &kiosks[1].id,
            "--kiosk",
            &kiosks[2].id,
            "--canary",
            &kiosks[0].id,
            "--by",
            "admin",
        ],
    );
    wait_for(&db, &state(&rollout), "rolled-back");
    let why = db.sql(&format!("SELECT why FROM rollouts WHERE id = {rollout}"));
    assert!(
        why.starts_with(&format!(
            "kiosk {}: self-check: ping to backend jinan-power",
            kiosks[1].id
        )),
        "{why}"
    );
    assert_eq!(db.sql(&step(&rollout, &kiosks[1])), "failed");
    // The canary ran it; it goes back, as does the third kiosk if it got that far.
    wait_for(&db, &step(&rollout, &kiosks[0]), "rolled-back");
    wait_for(&db, &running(&original), "3");
    assert_eq!(db.sql(&running(&sha)), "0");
    // The third kiosk never took it, or went back.
    wait_for(
        &db,
        &step(&rollout, &kiosks[2]).replace(
            "coalesce(step, 'none')",
            "coalesce(step, 'none') IN ('none', 'rolled-back')",
        ),
        "t",
    );
    assert_eq!(db.sql(&step(&rollout, &kiosks[1])), "failed");
    for k in &mut kiosks {
        k.stop();
    }
}

#[test]
fn a_build_the_kiosks_trust_store_does_not_trust_never_runs_until_its_root_endorses_the_key() {
    let world = World::new();
    let trust = world.plugins.dir.path().join("trust");
    let root = SecretKey::generate("Jinan Power root");
    let root_pub = root
        .write(&world.plugins.dir.path().join("root.key"))
        .unwrap();
    std::fs::create_dir_all(trust.join("roots")).unwrap();
    std::fs::copy(&root_pub, trust.join("roots/jinan-root.pub")).unwrap();
    let vendor = SecretKey::generate("Acme Meters");
    let vendor_pub = vendor
        .write(&world.plugins.dir.path().join("acme.key"))
        .unwrap();
    let vendor_pub_path = vendor_pub;
    let vendor_pub = selfvend_host::plugin::trust::PublicKey::read(&vendor_pub_path).unwrap();

    let db = FleetDb::new();
    let server = FleetServer::start_with(&db, &["--heartbeat-secs", "1"]);
    let jinan = world.jinan.fixed_text_address().to_string();
    let mut kiosk = KioskProcess::paired(&world, &db, &server, 1, &jinan);
    kiosk.start();
    let original = sha256_of(&world.files[2].1);
    let build = rebuilt(world.plugins.dir.path(), &world.files[2].1, "acme", &vendor);
    let sha = admin(&db, &["upload", build.to_str().unwrap(), "--by", "admin"]);
    let roll_out = || roll_out_to(&db, &sha, &kiosk);
    let refused = |rollout: &str| {
        wait_for(&db, &state(rollout), "rolled-back");
        let detail = db.sql(&format!(
            "SELECT detail FROM rollout_kiosks WHERE rollout_id = {rollout}"
        ));
        assert!(detail.starts_with("verify: "), "{detail}");
        assert!(
            detail.contains(&format!(
                "signed by key {}, which is not in the trust store",
                vendor_pub.id()
            )),
            "{detail}"
        );
    };

    // The server pushed it; the kiosk's own trust store refuses it.
    let first = roll_out();
    refused(&first);
    // A statement the fleet's own key signed is carried, and refused by the kiosk.
    let fleet_key = SecretKey::generate("the fleet");
    let forged = world.plugins.dir.path().join("forged.endorsement");
    std::fs::write(
        &forged,
        selfvend_host::plugin::trust::endorsement::Endorsement::write(&fleet_key, &vendor_pub),
    )
    .unwrap();
    admin(&db, &["endorse", forged.to_str().unwrap(), "--by", "admin"]);
    let second = roll_out();
    refused(&second);
    assert_eq!(kiosk.runs(&db), original);
    assert!(
        !kiosk.data.join("endorsements").exists()
            || std::fs::read_dir(kiosk.data.join("endorsements"))
                .unwrap()
                .next()
                .is_none()
    );

    // The root's own statement, carried the same way, makes the key trusted.
    let endorsed = world.plugins.dir.path().join("acme.endorsement");
    std::fs::write(
        &endorsed,
        selfvend_host::plugin::trust::endorsement::Endorsement::write(&root, &vendor_pub),
    )
    .unwrap();
    admin(
        &db,
        &["endorse", endorsed.to_str().unwrap(), "--by", "admin"],
    );
    let third = roll_out();
    wait_for(&db, &step(&third, &kiosk), "active");
    let detail = db.sql(&format!(
        "SELECT detail FROM rollout_kiosks WHERE rollout_id = {third}"
    ));
    assert!(
        detail.contains("signed by Acme Meters (endorsed by Jinan Power root)"),
        "{detail}"
    );
    wait_for(&db, &running(&sha), "1");

    // The kiosk's owner revokes the vendor's key: the root's statement, still carried, no
    // longer makes the vendor's next build trusted.
    std::fs::create_dir_all(trust.join("revoked")).unwrap();
    std::fs::copy(&vendor_pub_path, trust.join("revoked/acme.pub")).unwrap();
    let next = rebuilt(
        world.plugins.dir.path(),
        &world.files[2].1,
        "acme-2",
        &vendor,
    );
    let next_sha = admin(&db, &["upload", next.to_str().unwrap(), "--by", "admin"]);
    let fourth = roll_out_to(&db, &next_sha, &kiosk);
    refused(&fourth);
    kiosk.stop();
}

#[test]
fn a_kiosk_killed_during_a_switch_starts_with_the_old_build_or_the_new_one() {
    let world = World::new();
    let db = FleetDb::new();
    let server = FleetServer::start_with(&db, &["--heartbeat-secs", "1"]);
    let jinan = world.jinan.fixed_text_address().to_string();
    let mut kiosk = KioskProcess::paired(&world, &db, &server, 1, &jinan);
    let original = sha256_of(&world.files[2].1);
    let build = rebuilt(
        world.plugins.dir.path(),
        &world.files[2].1,
        "3.0",
        &world.plugins.key,
    );
    let sha = admin(&db, &["upload", build.to_str().unwrap(), "--by", "admin"]);
    let state_file = kiosk.data.join("plugins/state.json");

    // Killed with the new build on disk, before the switch is written: the old build runs.
    kiosk.start_killed_at(Some("rollout.before-switch"));
    let rollout = roll_out_to(&db, &sha, &kiosk);
    kiosk.wait_killed();
    assert!(!state_file.exists(), "a switch was written");
    assert!(kiosk.data.join(format!("plugins/{sha}.wasm")).exists());
    kiosk.start();
    wait_for(&db, &step(&rollout, &kiosk), "active");
    wait_for(&db, &running(&sha), "1");
    kiosk.stop();

    // Killed just after the switch back is written: it starts with the old build.
    kiosk.start_killed_at(Some("rollout.after-switch"));
    admin(&db, &["rollout", "rollback", &rollout, "--by", "admin"]);
    kiosk.wait_killed();
    let written = std::fs::read_to_string(&state_file).unwrap();
    assert!(written.contains("\"current\": null"), "{written}");
    kiosk.start();
    wait_for(&db, &step(&rollout, &kiosk), "rolled-back");
    wait_for(&db, &running(&original), "1");
    assert_eq!(
        db.sql(&format!(
            "SELECT screen FROM kiosks WHERE id = '{}'",
            kiosk.id
        )),
        "attract"
    );
    kiosk.stop();
}

#[test]
fn one_plugins_failed_build_spares_anothers_and_a_build_rolled_back_late_is_never_gone_back_to() {
    let world = World::new();
    let db = FleetDb::new();
    let server = FleetServer::start_with(&db, &["--heartbeat-secs", "1"]);
    let jinan = world.jinan.fixed_text_address().to_string();
    let mut kiosk = KioskProcess::paired(&world, &db, &server, 1, &jinan);
    kiosk.start();
    let original = sha256_of(&world.files[2].1);
    wait_for(&db, &running(&original), "1");
    let dir = world.plugins.dir.path();
    let upload = |path: &Path| admin(&db, &["upload", path.to_str().unwrap(), "--by", "admin"]);

    // The dialect's good build and, right after, the codec's build by a stranger: the codec's
    // failure does not take the dialect's staged build with it.
    let dialect = upload(&rebuilt(dir, &world.files[2].1, "4.0", &world.plugins.key));
    let stranger = SecretKey::generate("Unknown Vendor");
    let codec = upload(&rebuilt(dir, &world.files[0].1, "bad", &stranger));
    let first = roll_out_to(&db, &dialect, &kiosk);
    let bad = admin(
        &db,
        &[
            "rollout",
            "create",
            "--plugin",
            "hengtai-sle4442",
            "--build",
            &codec,
            "--kiosk",
            &kiosk.id,
            "--by",
            "admin",
        ],
    );
    wait_for(&db, &state(&bad), "rolled-back");
    wait_for(&db, &state(&first), "complete");
    wait_for(&db, &running(&dialect), "1");

    // Rolled back while the kiosk was off, with the next build already on its way: the kiosk
    // goes back, takes the next one, and never goes back to the one rolled back. Each switch
    // takes longer than a heartbeat, so replies come while the worker holds one.
    kiosk.stop();
    admin(&db, &["rollout", "rollback", &first, "--by", "admin"]);
    let next = upload(&rebuilt(dir, &world.files[2].1, "4.1", &world.plugins.key));
    let second = roll_out_to(&db, &next, &kiosk);
    kiosk.start_with_failpoints("rollout.before-switch=sleep(2500)");
    wait_for(&db, &step(&first, &kiosk), "rolled-back");
    wait_for(&db, &step(&second, &kiosk), "active");
    wait_for(&db, &running(&next), "1");
    let state_file = std::fs::read_to_string(kiosk.data.join("plugins/state.json")).unwrap();
    assert!(!state_file.contains(&dialect), "{state_file}");
    // A reply that came while the switch back was being made did not stage it again (it
    // would have run after the next build and gone back to the one before).
    let log = std::fs::read_to_string(kiosk.data.join("kiosk.log")).unwrap();
    let since_start = log.rsplit("selfvend-kiosk-child: started").next().unwrap();
    let staged_back = format!("rollout {first} of fixed-text: checked (the build before");
    assert_eq!(
        since_start.matches(&staged_back).count(),
        1,
        "{since_start}"
    );
    admin(&db, &["rollout", "rollback", &second, "--by", "admin"]);
    wait_for(&db, &step(&second, &kiosk), "rolled-back");
    wait_for(&db, &running(&original), "1");
    kiosk.stop();
}

#[test]
fn a_kiosk_that_never_reports_does_not_hold_the_next_release_and_takes_only_the_newest() {
    let world = World::new();
    let db = FleetDb::new();
    let server = FleetServer::start_with(&db, &["--heartbeat-secs", "1"]);
    let jinan = world.jinan.fixed_text_address().to_string();
    let mut kiosks: Vec<KioskProcess> = (1..=2)
        .map(|n| KioskProcess::paired(&world, &db, &server, n, &jinan))
        .collect();
    kiosks[0].start();
    let dir = world.plugins.dir.path();
    let upload = |tag: &str| {
        let build = rebuilt(dir, &world.files[2].1, tag, &world.plugins.key);
        admin(&db, &["upload", build.to_str().unwrap(), "--by", "admin"])
    };
    let both = |sha: &str| {
        admin(
            &db,
            &[
                "rollout",
                "create",
                "--plugin",
                "fixed-text",
                "--build",
                sha,
                "--kiosk",
                &kiosks[0].id,
                "--kiosk",
                &kiosks[1].id,
                "--canary",
                &kiosks[0].id,
                "--by",
                "admin",
            ],
        )
    };
    // The second kiosk is off: the first release passes its canary and waits for it.
    let (first_sha, next_sha) = (upload("5.0"), upload("5.1"));
    let first = both(&first_sha);
    wait_for(&db, &state(&first), "fleet");
    let next = both(&next_sha);
    assert_eq!(db.sql(&state(&first)), "superseded");
    assert_eq!(
        db.sql(&format!(
            "SELECT what FROM rollout_events WHERE rollout_id = {first} ORDER BY id DESC LIMIT 1"
        )),
        format!("superseded by rollout {next}")
    );
    wait_for(&db, &state(&next), "fleet");
    wait_for(&db, &running(&next_sha), "1");

    // Back, it goes straight to the newest release.
    kiosks[1].start();
    wait_for(&db, &step(&next, &kiosks[1]), "active");
    wait_for(&db, &state(&next), "complete");
    assert_eq!(db.sql(&step(&first, &kiosks[1])), "none");
    assert_eq!(kiosks[1].runs(&db), next_sha);
    for k in &mut kiosks {
        k.stop();
    }
}
