//! The fleet's part of kiosks' configs, from `selfvend-fleet config set` to a kiosk process
//! (`selfvend-kiosk-child`) on the real PostgreSQL: a document the kiosk would refuse is
//! refused by the server with its file, line, key and reason; a good one reaches the kiosk
//! between customers and survives its restart; one that fails on the kiosk (a backend moved to
//! an address that does not answer, a backend the kiosk does not have) is refused there and
//! the kiosk keeps the version it ran.

use std::path::Path;

use selfvend_tests::fleet_rig::{FleetDb, FleetServer};
use selfvend_tests::kiosk_process::{KioskProcess, wait_for};
use selfvend_tests::kiosk_rig::World;

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_string()
}

fn set(db: &FleetDb, file: &str, kiosk: Option<&str>) -> Result<String, String> {
    let mut args = vec!["config", "set", file, "--by", "admin"];
    if let Some(k) = kiosk {
        args.extend(["--kiosk", k]);
    }
    db.admin(&args).map(|out| out.trim().to_string())
}

fn reported(kiosk: &KioskProcess, field: &str) -> String {
    format!(
        "SELECT coalesce(heartbeat->'config'->>'{field}', 'none') FROM kiosks WHERE id = '{}'",
        kiosk.id
    )
}

#[test]
fn a_config_the_kiosks_would_refuse_is_refused_by_the_server_and_nothing_is_stored() {
    let db = FleetDb::new();
    let dir = tempfile::tempdir().unwrap();
    for (text, error) in [
        (
            "# the fleet's defaults\n[policy]\nresell_max_attempts = 500\n",
            "defaults.toml:3: `policy.resell_max_attempts`: 500 is outside 1..=100",
        ),
        (
            "[kiosk]\nterminal_id = \"K-EVIL\"\n",
            "defaults.toml:2: `kiosk.terminal_id`: unknown field `terminal_id`, expected \
             `cash_box_capacity`",
        ),
        (
            "[[backend]]\nname = \"jinan-power\"\naddress = \"jinan\"\n",
            "defaults.toml:3: `backend.address`: address `jinan` is not host:port",
        ),
        (
            "[limits]\nmin_purchase_fen = 900\nmax_purchase_fen = 100\n",
            "defaults.toml:1: min_purchase_fen is above max_purchase_fen",
        ),
        ("[policy\n", "defaults.toml:1: "),
    ] {
        let file = write(dir.path(), "defaults.toml", text);
        let err = set(&db, &file, None).unwrap_err();
        assert!(
            err.contains(&format!("{}/{error}", dir.path().display())),
            "{text}: {err}"
        );
    }
    assert_eq!(db.sql("SELECT count(*) FROM config_versions"), "0");
    let shown = db.admin(&["config", "show"]).unwrap();
    assert!(shown.starts_with("# version 0\n"), "{shown}");

    let good = write(
        dir.path(),
        "defaults.toml",
        "[limits]\nmax_purchase_fen = 300000\n",
    );
    let version = set(&db, &good, None).unwrap();
    let shown = db.admin(&["config", "show"]).unwrap();
    assert!(
        shown.starts_with(&format!("# version {version}\n")),
        "{shown}"
    );
    assert!(shown.contains("max_purchase_fen = 300000"), "{shown}");
    let err = set(&db, &good, Some("K-NOBODY")).unwrap_err();
    assert!(err.contains("no paired kiosk K-NOBODY"), "{err}");
}

#[test]
fn a_config_reaches_a_kiosk_and_one_that_fails_there_leaves_it_on_the_version_before() {
    let world = World::new();
    let db = FleetDb::new();
    let server = FleetServer::start_with(&db, &["--heartbeat-secs", "1"]);
    let jinan = world.jinan.fixed_text_address().to_string();
    let mut kiosk = KioskProcess::paired(&world, &db, &server, 1, &jinan);
    let dir = world.plugins.dir.path();
    kiosk.start();
    wait_for(&db, &reported(&kiosk, "running"), "0");

    // The defaults: the kiosk reports their version, and the cash box they set.
    let defaults = write(
        dir,
        "defaults.toml",
        "[kiosk]\ncash_box_capacity = 1234\n\n[policy]\nresell_max_attempts = 5\n",
    );
    let v1 = set(&db, &defaults, None).unwrap();
    wait_for(&db, &reported(&kiosk, "running"), &v1);
    wait_for(
        &db,
        &format!(
            "SELECT heartbeat->'cash_box'->>'capacity' FROM kiosks WHERE id = '{}'",
            kiosk.id
        ),
        "1234",
    );
    let applied = std::fs::read_to_string(kiosk.data.join("fleet-config.json")).unwrap();
    assert!(applied.contains("cash_box_capacity = 1234"), "{applied}");

    // This kiosk's backend moved to an address nothing answers: its ping fails, the kiosk
    // refuses the version and keeps the one it ran.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let nowhere = closed.local_addr().unwrap().to_string();
    drop(closed);
    let moved = write(
        dir,
        "moved.toml",
        &format!("[[backend]]\nname = \"jinan-power\"\naddress = \"{nowhere}\"\n"),
    );
    let v2 = set(&db, &moved, Some(&kiosk.id)).unwrap();
    wait_for(&db, &reported(&kiosk, "refused"), &v2);
    assert_eq!(db.sql(&reported(&kiosk, "running")), v1);
    let why = db.sql(&reported(&kiosk, "why"));
    assert!(
        why.starts_with(&format!(
            "the fleet's config version {v2}: ping to backend jinan-power at {nowhere}: "
        )),
        "{why}"
    );
    let shown = db.admin(&["config", "show", "--kiosk", &kiosk.id]).unwrap();
    assert!(shown.starts_with(&format!("# version {v2}\n")), "{shown}");
    assert!(shown.contains(&nowhere) && shown.contains("cash_box_capacity = 1234"));

    // A backend this kiosk's own file does not name checks alone, and is refused on the kiosk.
    let stranger = write(
        dir,
        "stranger.toml",
        "[[backend]]\nname = \"wuhan-power\"\naddress = \"127.0.0.1:9\"\n",
    );
    let v3 = set(&db, &stranger, Some(&kiosk.id)).unwrap();
    wait_for(&db, &reported(&kiosk, "refused"), &v3);
    let why = db.sql(&reported(&kiosk, "why"));
    assert!(
        why.contains("it sets backend `wuhan-power`, which this kiosk's file does not name"),
        "{why}"
    );

    // Back to the defaults alone plus a good override: applied, and kept across a restart.
    let good = write(dir, "good.toml", "[limits]\nmax_purchase_fen = 200000\n");
    let v4 = set(&db, &good, Some(&kiosk.id)).unwrap();
    wait_for(&db, &reported(&kiosk, "running"), &v4);
    kiosk.stop();
    kiosk.start();
    wait_for(&db, &reported(&kiosk, "running"), &v4);
    wait_for(&db, &reported(&kiosk, "refused"), "none");
    kiosk.stop();
}
