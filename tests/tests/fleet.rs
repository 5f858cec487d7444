//! The kiosk and its fleet server over real HTTP on loopback, the server's store a database of
//! its own in the real PostgreSQL cluster: pairing by a one-time code, journal rows shipped in
//! chain order and stored once, heartbeats, a kiosk with the wrong key refused, an edited
//! journal raising one tamper alert that holds ingest until an admin accepts the break, a
//! replayed request refused, and ingest resuming after the server restarts.

use std::os::unix::fs::PermissionsExt;

use selfvend_host::fleet::FleetLink;
use selfvend_host::journal::Journal;
use selfvend_tests::fleet_rig::{FleetDb, FleetServer};
use selfvend_tests::kiosk_rig::{Kiosk, chen_xiaoming, zhang_san};
use selfvend_tests::{selfvend_with, sql, text};

fn cli(k: &Kiosk, args: &[&str]) -> Result<String, String> {
    let out = selfvend_with(&k.config.path, args);
    if out.status.success() {
        Ok(text(&out.stdout))
    } else {
        Err(text(&out.stderr))
    }
}

fn pair(k: &Kiosk, server: &FleetServer, db: &FleetDb) -> String {
    let code = db.pairing_code();
    let said = cli(
        k,
        &["fleet", "pair", "--server", &server.url, "--code", &code],
    )
    .unwrap();
    let kiosk_id = said.trim().rsplit(' ').next().unwrap().to_string();
    assert_eq!(
        said,
        format!("paired with {} as kiosk {kiosk_id}\n", server.url)
    );
    kiosk_id
}

fn stored_rows(db: &FleetDb, kiosk: &str) -> u64 {
    db.sql(&format!(
        "SELECT count(*) FROM journal_rows WHERE kiosk_id = '{kiosk}'"
    ))
    .parse()
    .unwrap()
}

#[test]
fn a_kiosk_pairs_once_and_ships_its_journal_to_the_fleet_once() {
    let mut k = Kiosk::new();
    let card = zhang_san(&k);
    k.sell(&card, 5000);
    let db = FleetDb::new();
    let server = FleetServer::start(&db);

    // An unpaired kiosk says so; a made-up code is refused.
    assert_eq!(
        cli(&k, &["fleet", "sync"]).unwrap_err(),
        "selfvend: this kiosk is not paired with a fleet server (`selfvend fleet pair`)\n"
    );
    let refused = cli(
        &k,
        &["fleet", "pair", "--server", &server.url, "--code", "NOPE"],
    );
    assert!(
        refused.as_ref().unwrap_err().contains(
            "the fleet server refused: the pairing code is unknown, used already or expired: \
             ask for a new one (HTTP 403)"
        ),
        "{refused:?}"
    );
    let kiosk_id = pair(&k, &server, &db);
    // The identity key is the kiosk's alone.
    let key = k.journal.with_file_name("fleet-identity.key");
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(
        db.sql(&format!(
            "SELECT terminal_id, region, journal_head FROM kiosks WHERE id = '{kiosk_id}'"
        )),
        "K-SALE-01|3701|0"
    );

    let rows = Journal::open(&k.journal).unwrap().last_id().unwrap();
    assert_eq!(
        cli(&k, &["fleet", "sync"]).unwrap(),
        format!("sent {rows} journal rows; the fleet holds {rows} of them\n")
    );
    assert_eq!(stored_rows(&db, &kiosk_id), rows as u64);
    // Stored exactly as the kiosk hashed them: the sale is there, in the kiosk's words.
    let journal = Journal::open(&k.journal).unwrap();
    let last = &journal.raw_rows(rows, 1).unwrap()[0];
    assert_eq!(
        db.sql(&format!(
            "SELECT kind, hash FROM journal_rows WHERE kiosk_id = '{kiosk_id}' AND id = {rows}"
        )),
        format!("{}|{}", last.kind, last.hash)
    );
    assert_eq!(
        db.sql(&format!(
            "SELECT count(*) FROM journal_rows WHERE kiosk_id = '{kiosk_id}'
             AND kind = 'sale-intent' AND body LIKE '%\"paid_fen\":5000%'"
        )),
        "1"
    );
    // The heartbeat carries the period's takings and the cash box.
    assert_eq!(
        db.sql(&format!(
            "SELECT heartbeat->'period'->>'sales_fen', heartbeat->'cash_box'->'notes'::text,
                    last_heartbeat_at IS NOT NULL
             FROM kiosks WHERE id = '{kiosk_id}'"
        )),
        "5000|[[50, 1]]|t"
    );
    // Nothing new, nothing sent.
    assert_eq!(
        cli(&k, &["fleet", "sync"]).unwrap(),
        format!("sent 0 journal rows; the fleet holds {rows} of them\n")
    );

    // A batch sent twice (the acknowledgement lost, say) is stored once.
    let link = FleetLink::load(k.journal.parent().unwrap())
        .unwrap()
        .unwrap();
    let again = link.ship(&journal, 0).unwrap();
    assert_eq!((again.head, again.sent), (rows, rows as usize));
    assert_eq!(stored_rows(&db, &kiosk_id), rows as u64);
    assert_eq!(db.sql("SELECT count(*) FROM alerts"), "0");

    // The code paired one kiosk and cannot pair another.
    let code: String = db.sql(&format!(
        "SELECT code FROM pairing_codes WHERE kiosk_id = '{kiosk_id}'"
    ));
    let other = Kiosk::new();
    let reused = cli(
        &other,
        &["fleet", "pair", "--server", &server.url, "--code", &code],
    );
    assert!(
        reused
            .unwrap_err()
            .contains("unknown, used already or expired"),
        "a code paired twice"
    );
}

#[test]
fn a_kiosk_with_the_wrong_key_or_revoked_is_refused() {
    let k = Kiosk::new();
    let db = FleetDb::new();
    let server = FleetServer::start(&db);
    let kiosk_id = pair(&k, &server, &db);
    // Another key in the kiosk's place: its requests do not verify.
    let key = k.journal.with_file_name("fleet-identity.key");
    std::fs::remove_file(&key).unwrap();
    selfvend_host::fleet::Identity::load_or_make(k.journal.parent().unwrap()).unwrap();
    let refused = cli(&k, &["fleet", "sync"]).unwrap_err();
    assert!(
        refused.contains(&format!(
            "the fleet server refused: kiosk {kiosk_id}: the signature does not verify with \
             this kiosk's key (HTTP 401)"
        )),
        "{refused}"
    );
    assert_eq!(stored_rows(&db, &kiosk_id), 0);
    // Its own key again, but revoked by an admin: refused all the same.
    std::fs::remove_file(&key).unwrap();
    std::fs::remove_file(k.journal.with_file_name("fleet.json")).unwrap();
    let kiosk_id = pair(&k, &server, &db);
    // It has been heard from, so the server knows its key without reading it.
    cli(&k, &["fleet", "sync"]).unwrap();
    assert_eq!(
        db.admin(&["revoke", "--kiosk", &kiosk_id]),
        Ok(format!("kiosk {kiosk_id} revoked\n"))
    );
    let refused = cli(&k, &["fleet", "sync"]).unwrap_err();
    assert!(
        refused.contains(&format!(
            "the fleet server refused: kiosk {kiosk_id} is revoked (HTTP 403)"
        )),
        "{refused}"
    );
    // A key others can read is not used at all.
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let refused = cli(&k, &["fleet", "sync"]).unwrap_err();
    assert!(
        refused.contains("readable by others (mode 644)"),
        "{refused}"
    );
}

#[test]
fn an_edited_journal_raises_one_tamper_alert_and_holds_its_ingest() {
    let mut k = Kiosk::new();
    let card = zhang_san(&k);
    k.sell(&card, 2000);
    let db = FleetDb::new();
    let server = FleetServer::start(&db);
    let kiosk_id = pair(&k, &server, &db);
    cli(&k, &["fleet", "sync"]).unwrap();
    let shipped = stored_rows(&db, &kiosk_id) as i64;

    // Another sale, then someone lowers it in the journal file with the sqlite3 shell.
    k.sell(&chen_xiaoming(&k), 5000);
    let edited = sql(
        &k.journal,
        &format!("SELECT id FROM audit WHERE kind = 'sale-intent' AND id > {shipped}"),
    ) as i64;
    let out = std::process::Command::new("sqlite3")
        .arg(&k.journal)
        .arg(format!(
            "UPDATE audit SET body = replace(body, '\"paid_fen\":5000', '\"paid_fen\":500')
             WHERE id = {edited}"
        ))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let refused = cli(&k, &["fleet", "sync"]).unwrap_err();
    assert!(
        refused.contains(&format!(
            "the journal's chain is broken (row {edited} was changed after it was written"
        )),
        "{refused}"
    );
    // What came before the edit is kept, nothing after it; one alert, open.
    assert_eq!(stored_rows(&db, &kiosk_id) as i64, edited - 1);
    let alerts = || {
        db.sql(&format!(
            "SELECT kind, closed_at IS NULL FROM alerts WHERE kiosk_id = '{kiosk_id}'"
        ))
    };
    assert_eq!(alerts(), "chain-broken|t");
    // Held: sent again, it is refused without a second alert.
    let held = cli(&k, &["fleet", "sync"]).unwrap_err();
    assert!(
        held.contains("ingest is held until an admin acts"),
        "{held}"
    );
    assert_eq!(alerts(), "chain-broken|t");
    assert_eq!(stored_rows(&db, &kiosk_id) as i64, edited - 1);

    // An admin accepts the break: the edited row is stored as the kiosk sends it, marked with
    // the break, and everything after it follows; the alert closes, the release is recorded.
    assert_eq!(
        db.admin(&["release", "--kiosk", &kiosk_id, "--by", "li.admin"]),
        Ok(format!("kiosk {kiosk_id}: ingest resumes from the break\n"))
    );
    cli(&k, &["fleet", "sync"]).unwrap();
    let head = sql(&k.journal, "SELECT max(id) FROM audit") as i64;
    assert_eq!(stored_rows(&db, &kiosk_id) as i64, head);
    assert_eq!(
        db.sql(&format!(
            "SELECT id, body LIKE '%\"paid_fen\":500,%', accepted_break LIKE 'row {edited} was changed%'
             FROM journal_rows WHERE kiosk_id = '{kiosk_id}' AND accepted_break IS NOT NULL"
        )),
        format!("{edited}|t|t")
    );
    assert_eq!(alerts(), "chain-broken|f");
    assert_eq!(
        db.sql(&format!(
            "SELECT released_by, head FROM chain_releases WHERE kiosk_id = '{kiosk_id}'"
        )),
        format!("li.admin (command line)|{}", edited - 1)
    );
    // The acceptance was for that break only: the next edit holds ingest again.
    {
        let mut journal = Journal::open(&k.journal).unwrap();
        journal.note("account-shown", serde_json::json!({"arrears_fen": 3000}));
        journal.flush().unwrap();
    }
    let next = sql(&k.journal, "SELECT max(id) FROM audit") as i64;
    let out = std::process::Command::new("sqlite3")
        .arg(&k.journal)
        .arg(format!(
            "UPDATE audit SET body = replace(body, '3000', '300') WHERE id = {next}"
        ))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let refused = cli(&k, &["fleet", "sync"]).unwrap_err();
    assert!(
        refused.contains(&format!("(row {next} was changed after it was written")),
        "{refused}"
    );
    assert_eq!(stored_rows(&db, &kiosk_id) as i64, next - 1);
}

#[test]
fn a_replayed_request_is_refused_and_a_kiosk_signing_out_of_order_recovers() {
    let k = Kiosk::new();
    let db = FleetDb::new();
    let server = FleetServer::start(&db);
    let kiosk_id = pair(&k, &server, &db);
    let identity = selfvend_host::fleet::Identity::load(k.journal.parent().unwrap()).unwrap();
    let body = br#"{"rows":[]}"#;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let signed = [
        ("x-selfvend-kiosk", kiosk_id.clone()),
        ("x-selfvend-time", now.to_string()),
        (
            "x-selfvend-signature",
            identity.sign("POST", "/api/journal", now, body),
        ),
    ];
    let send = || {
        selfvend_host::fleet::http::request(
            "POST",
            &server.url,
            "/api/journal",
            &signed,
            body,
            std::time::Duration::from_secs(10),
        )
        .unwrap()
    };
    assert_eq!(send().status, 200);
    // The same request captured and sent again.
    let replayed = send();
    assert_eq!(replayed.status, 409);
    assert_eq!(
        String::from_utf8_lossy(&replayed.body),
        format!(
            "kiosk {kiosk_id}: a request signed at {now} ms, not after its last one ({now} ms): \
             replayed or out of order"
        )
    );
    // Another process of the kiosk signed later (or its clock stepped back a minute): the
    // link signs again after the server's last and gets through.
    db.sql(&format!(
        "UPDATE kiosks SET last_request_ms = {} WHERE id = '{kiosk_id}'",
        now + 60_000
    ));
    cli(&k, &["fleet", "sync"]).unwrap();
    let last: i64 = db
        .sql(&format!(
            "SELECT last_request_ms FROM kiosks WHERE id = '{kiosk_id}'"
        ))
        .parse()
        .unwrap();
    assert!(last > now + 60_000, "{last}");
}

#[test]
fn ingest_resumes_where_the_fleet_stopped_after_the_server_restarts() {
    let mut k = Kiosk::new();
    let card = zhang_san(&k);
    k.sell(&card, 1000);
    let db = FleetDb::new();
    let server = FleetServer::start(&db);
    let kiosk_id = pair(&k, &server, &db);
    cli(&k, &["fleet", "sync"]).unwrap();
    let first = stored_rows(&db, &kiosk_id);

    // The server stops; the kiosk sells on, then finds it gone.
    drop(server);
    k.sell(&chen_xiaoming(&k), 2000);
    let down = cli(&k, &["fleet", "sync"]).unwrap_err();
    assert!(
        down.contains("the fleet server cannot be reached"),
        "{down}"
    );

    // Back on another port: the kiosk's pairing names the old one, so it is told the new one
    // here as an admin would move it; ingest goes on from the row after the last one held.
    let server = FleetServer::start(&db);
    let paired = k.journal.with_file_name("fleet.json");
    let json = std::fs::read_to_string(&paired).unwrap();
    let old = serde_json::from_str::<serde_json::Value>(&json).unwrap()["server"]
        .as_str()
        .unwrap()
        .to_string();
    std::fs::write(&paired, json.replace(&old, &server.url)).unwrap();
    let rows = Journal::open(&k.journal).unwrap().last_id().unwrap();
    assert_eq!(
        cli(&k, &["fleet", "sync"]).unwrap(),
        format!(
            "sent {} journal rows; the fleet holds {rows} of them\n",
            rows as u64 - first
        )
    );
    assert_eq!(stored_rows(&db, &kiosk_id), rows as u64);
}

/// The kiosk is killed (SIGKILL) the moment the server has stored a batch and before it moves
/// on: started again, it resumes from what the server holds, and no row is stored twice.
#[test]
fn ingest_resumes_after_the_kiosk_is_killed_while_shipping() {
    let mut k = Kiosk::new();
    let card = zhang_san(&k);
    k.sell(&card, 1000);
    let db = FleetDb::new();
    let server = FleetServer::start(&db);
    let kiosk_id = pair(&k, &server, &db);
    let status = std::process::Command::new(
        selfvend_tests::selfvend_bin().with_file_name("selfvend-sale-child"),
    )
    .arg("--config")
    .arg(&k.config.path)
    .arg("--fleet-sync")
    .env("SELFVEND_KILL_AT", "fleet.after-batch-acknowledged")
    .status()
    .unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9)
    );
    let held = stored_rows(&db, &kiosk_id);
    assert_eq!(
        held as i64,
        Journal::open(&k.journal).unwrap().last_id().unwrap()
    );

    k.sell(&chen_xiaoming(&k), 2000);
    let rows = Journal::open(&k.journal).unwrap().last_id().unwrap();
    assert_eq!(
        cli(&k, &["fleet", "sync"]).unwrap(),
        format!(
            "sent {} journal rows; the fleet holds {rows} of them\n",
            rows as u64 - held
        )
    );
    assert_eq!(stored_rows(&db, &kiosk_id), rows as u64);
    assert_eq!(
        db.sql("SELECT count(*) FROM alerts WHERE kind = 'chain-broken'"),
        "0"
    );
}

/// A kiosk cut off from its fleet goes on selling; 1,000 sales later the fleet is back, and the
/// kiosk catches up in batches: every row stored once, in chain order, and the heartbeat's
/// takings count every sale.
#[test]
fn a_kiosk_offline_through_a_thousand_sales_catches_up() {
    use selfvend_host::journal::NewSale;
    let k = Kiosk::new();
    let db = FleetDb::new();
    let server = FleetServer::start(&db);
    let kiosk_id = pair(&k, &server, &db);
    cli(&k, &["fleet", "sync"]).unwrap();
    drop(server);

    // A thousand cash sales of 10.00, each written as the engine writes one: its intent and
    // serial, the banknote, the grant and the card written, one commit each.
    let mut journal = Journal::open(&k.journal).unwrap();
    for i in 0..1000 {
        journal
            .commit(|b| {
                let audit = b.append(
                    "sale-intent",
                    &serde_json::json!({"card": "3701000000000001", "paid_fen": 1000, "n": i}),
                )?;
                let serial = b.allocate_serial(audit)?;
                b.record_sale(
                    &NewSale {
                        serial,
                        payment: "cash",
                        card_serial: "3701000000000001",
                        utility: "3701",
                        paid_fen: 1000,
                        request_json: "{}",
                    },
                    audit,
                )?;
                b.record_banknote(1000, audit)?;
                let granted = b.append("sale-granted", &serde_json::json!({"serial": serial}))?;
                b.sale_state(serial, &["intent"], "granted", None, granted)?;
                let written = b.append("card-written", &serde_json::json!({"serial": serial}))?;
                b.sale_state(serial, &["granted"], "written", None, written)
            })
            .unwrap();
    }
    let down = cli(&k, &["fleet", "sync"]).unwrap_err();
    assert!(down.contains("cannot be reached"), "{down}");

    // The fleet is back (on another port, which the kiosk is told).
    let server = FleetServer::start(&db);
    let paired = k.journal.with_file_name("fleet.json");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&paired).unwrap()).unwrap();
    let moved = serde_json::json!({"server": server.url, "kiosk_id": json["kiosk_id"]});
    std::fs::write(&paired, moved.to_string()).unwrap();
    let held = stored_rows(&db, &kiosk_id);
    let rows = journal.last_id().unwrap();
    assert!(rows as u64 - held >= 3000);
    assert_eq!(
        cli(&k, &["fleet", "sync"]).unwrap(),
        format!(
            "sent {} journal rows; the fleet holds {rows} of them\n",
            rows as u64 - held
        )
    );
    assert_eq!(stored_rows(&db, &kiosk_id), rows as u64);
    assert_eq!(
        db.sql(&format!(
            "SELECT count(*), min(id), max(id) FROM journal_rows WHERE kiosk_id = '{kiosk_id}'"
        )),
        format!("{rows}|1|{rows}")
    );
    assert_eq!(
        db.sql(&format!(
            "SELECT heartbeat->'period'->>'sales', heartbeat->'period'->>'sales_fen',
                    heartbeat->'cash_box'->'notes'::text
             FROM kiosks WHERE id = '{kiosk_id}'"
        )),
        "1000|1000000|[[10, 1000]]"
    );
}
