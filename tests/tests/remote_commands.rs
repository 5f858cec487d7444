//! Remote commands from the fleet to a kiosk process on the real PostgreSQL: out of service
//! (held across a restart) and back, the journal sent again, a period's reconciliation sent
//! again; each done once and audited in the kiosk's journal with who asked.

use selfvend_tests::fleet_rig::{FleetDb, FleetServer};
use selfvend_tests::kiosk_process::{KioskProcess, wait_for};
use selfvend_tests::kiosk_rig::{OPERATOR_PIN, World};
use selfvend_tests::sql;

fn command(db: &FleetDb, kiosk: &KioskProcess, args: &[&str]) -> String {
    let mut all = vec!["command", "--kiosk", &kiosk.id, "--by", "ops"];
    all.extend_from_slice(args);
    db.admin(&all).unwrap().trim().to_string()
}

fn outcome(id: &str) -> String {
    format!("SELECT coalesce(outcome, 'pending') FROM kiosk_commands WHERE id = {id}")
}

fn screen(kiosk: &KioskProcess) -> String {
    format!("SELECT screen FROM kiosks WHERE id = '{}'", kiosk.id)
}

/// The operator clears the kiosk from its command line (the kiosk process runs meanwhile).
fn clear(kiosk: &KioskProcess) {
    for step in [
        &["clearing", "start", "--pin-stdin"][..],
        &["clearing", "end", "--pin-stdin"],
    ] {
        let mut child = std::process::Command::new(selfvend_tests::selfvend_bin())
            .arg("--config")
            .arg(&kiosk.config)
            .args(step)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        writeln!(child.stdin.take().unwrap(), "{OPERATOR_PIN}").unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{step:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn the_fleet_takes_a_kiosk_out_of_service_and_back_and_has_it_send_its_journal_and_reconciliation()
{
    let world = World::new();
    let db = FleetDb::new();
    let server = FleetServer::start_with(&db, &["--heartbeat-secs", "1"]);
    let jinan = world.jinan.fixed_text_address().to_string();
    let mut kiosk = KioskProcess::paired(&world, &db, &server, 1, &jinan);
    kiosk.start();
    wait_for(&db, &screen(&kiosk), "attract");
    let journal = kiosk.data.join("journal.sqlite");

    // Out of service, between customers, and still so after a restart.
    let out = command(&db, &kiosk, &["out-of-service"]);
    wait_for(&db, &outcome(&out), "out of service");
    wait_for(&db, &screen(&kiosk), "out-of-service");
    let why = db.sql(&format!(
        "SELECT d->>'detail' FROM kiosks, jsonb_array_elements(heartbeat->'devices') d
         WHERE id = '{}' AND d->>'device' = 'kiosk'",
        kiosk.id
    ));
    assert_eq!(
        why,
        "taken out of service from the fleet by ops (command line)"
    );
    kiosk.stop();
    kiosk.start();
    std::thread::sleep(std::time::Duration::from_secs(3));
    wait_for(&db, &screen(&kiosk), "out-of-service");

    // Listed again (a reply the kiosk never saw, say): reported again, done once.
    db.sql(&format!(
        "UPDATE kiosk_commands SET done_at = NULL, outcome = NULL WHERE id = {out}"
    ));
    wait_for(&db, &outcome(&out), "out of service");
    assert_eq!(
        sql(
            &journal,
            &format!(
                "SELECT count(*) FROM audit WHERE kind = 'remote-command' \
                 AND json_extract(body, '$.id') = {out} \
                 AND json_extract(body, '$.by') = 'ops (command line)'"
            )
        ),
        1
    );

    let back = command(&db, &kiosk, &["back-in-service"]);
    wait_for(&db, &outcome(&back), "back in service");
    wait_for(&db, &screen(&kiosk), "attract");

    // The whole journal again, compared row by row with what the fleet holds.
    let resend = command(&db, &kiosk, &["send-journal"]);
    let rows = sql(&journal, "SELECT max(id) FROM audit");
    let said = {
        wait_for(
            &db,
            &format!("SELECT outcome IS NOT NULL FROM kiosk_commands WHERE id = {resend}"),
            "t",
        );
        db.sql(&outcome(&resend))
    };
    let sent: u64 = said
        .strip_prefix("sent all ")
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{said}"));
    assert!(sent >= rows, "{said}");
    assert!(said.ends_with(" each as sent"), "{said}");
    let held = |kiosk: &KioskProcess| {
        db.sql(&format!(
            "SELECT ingest_held FROM kiosks WHERE id = '{}'",
            kiosk.id
        ))
    };
    assert_eq!(held(&kiosk), "f");

    // A row the fleet holds that is not what the kiosk wrote is found by the next resend.
    db.sql(&format!(
        "UPDATE journal_rows SET body = body || ' ' WHERE kiosk_id = '{}' AND id = 2",
        kiosk.id
    ));
    let again = command(&db, &kiosk, &["send-journal"]);
    wait_for(
        &db,
        &format!("SELECT outcome IS NOT NULL FROM kiosk_commands WHERE id = {again}"),
        "t",
    );
    let said = db.sql(&outcome(&again));
    assert!(
        said.starts_with("failed: the fleet server refused: "),
        "{said}"
    );
    assert_eq!(held(&kiosk), "t");

    // A period not closed cannot be reconciled, and says so; a closed one is sent again.
    let open = command(&db, &kiosk, &["resend-reconciliation", "--period", "1"]);
    wait_for(
        &db,
        &outcome(&open),
        "failed: period 1 is not being cleared; start clearing first",
    );
    clear(&kiosk);
    let closed = command(&db, &kiosk, &["resend-reconciliation", "--period", "1"]);
    wait_for(
        &db,
        &format!("SELECT outcome IS NOT NULL FROM kiosk_commands WHERE id = {closed}"),
        "t",
    );
    assert_eq!(
        db.sql(&outcome(&closed)),
        "period 1: every backend had matched it already"
    );
    // A command the server refuses to make names what is wrong.
    assert_eq!(
        db.admin(&[
            "command",
            "--kiosk",
            &kiosk.id,
            "--by",
            "ops",
            "resend-reconciliation"
        ])
        .unwrap_err()
        .lines()
        .next()
        .unwrap(),
        "Error: a reconciliation is sent again for a period: name it"
    );
    kiosk.stop();
}
