//! Fleet alerts end to end: heartbeats over real HTTP open and close device alerts once each,
//! a kiosk whose heartbeats stop is `down` until it is heard again, and every opening and
//! closing reaches a webhook once, retried with backoff after the webhook fails.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use selfvend_host::fleet::FleetLink;
use selfvend_host::fleet_wire::{DeviceReport, Heartbeat};
use selfvend_tests::fleet_rig::{FleetDb, FleetServer};
use selfvend_tests::kiosk_rig::Kiosk;
use selfvend_tests::{selfvend_with, text};

/// What the webhook took: (event, kind) of each alert it was sent.
type Taken = Arc<Mutex<Vec<(String, String)>>>;

/// A webhook on loopback that fails its first request (HTTP 500) and takes the rest.
fn webhook() -> (String, Taken) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/alerts", listener.local_addr().unwrap());
    let taken = Arc::new(Mutex::new(Vec::new()));
    let log = taken.clone();
    std::thread::spawn(move || {
        for (n, stream) in listener.incoming().enumerate() {
            let mut stream = stream.unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut length = 0;
            loop {
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                if line == "\r\n" || line.is_empty() {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap();
                }
            }
            let mut body = vec![0; length];
            reader.read_exact(&mut body).unwrap();
            let status = if n == 0 {
                "500 Internal Server Error"
            } else {
                "200 OK"
            };
            if n > 0 {
                let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
                log.lock().unwrap().push((
                    json["event"].as_str().unwrap().to_string(),
                    json["kind"].as_str().unwrap().to_string(),
                ));
            }
            let _ = write!(stream, "HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n");
        }
    });
    (url, taken)
}

fn beat(printer: &str, open_items: u32) -> Heartbeat {
    Heartbeat {
        screen: "attract".into(),
        screen_secs: 1,
        money_in_fen: 0,
        devices: vec![DeviceReport {
            device: "printer".into(),
            name: String::new(),
            state: printer.into(),
            detail: String::new(),
        }],
        cash_box: Default::default(),
        open_items,
        items: Vec::new(),
        period: Default::default(),
        software_version: "test".into(),
        plugins: Vec::new(),
        journal_head: 0,
        rollouts: Vec::new(),
        commands_done: Vec::new(),
        config: None,
    }
}

fn wait_for(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < deadline, "waited too long for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn each_alert_opens_and_closes_once_and_reaches_the_webhook_once_each_way() {
    let k = Kiosk::new();
    let db = FleetDb::new();
    let (url, taken) = webhook();
    let server = FleetServer::start_with(&db, &["--heartbeat-secs", "1", "--webhook", &url]);
    let code = db.pairing_code();
    let out = selfvend_with(
        &k.config.path,
        &["fleet", "pair", "--server", &server.url, "--code", &code],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let link = FleetLink::load(k.journal.parent().unwrap())
        .unwrap()
        .unwrap();
    let open =
        || db.sql("SELECT string_agg(kind, ',' ORDER BY kind) FROM alerts WHERE closed_at IS NULL");

    // Out of paper with an operator item: two alerts, opened once however often it is said.
    for _ in 0..4 {
        link.heartbeat(&beat("paper-out", 1)).unwrap();
    }
    assert_eq!(open(), "operator-items,printer-paper-out");
    assert_eq!(db.sql("SELECT count(*) FROM alerts"), "2");
    // The webhook failed the first delivery; it was sent again after its backoff.
    wait_for("both openings delivered", || {
        taken.lock().unwrap().len() == 2
    });
    assert_eq!(
        db.sql("SELECT count(*) FROM alerts WHERE opened_sent_at IS NOT NULL"),
        "2"
    );

    // Paper loaded, item settled: both close, each closing delivered once.
    link.heartbeat(&beat("ok", 0)).unwrap();
    link.heartbeat(&beat("ok", 0)).unwrap();
    assert_eq!(open(), "");
    wait_for("both closings delivered", || {
        taken.lock().unwrap().len() == 4
    });

    // Silent for three heartbeats: down, until it is heard again.
    wait_for("the kiosk down", || open() == "down");
    link.heartbeat(&beat("ok", 0)).unwrap();
    assert_eq!(open(), "");
    wait_for("down opened and closed", || {
        taken.lock().unwrap().len() == 6
    });
    std::thread::sleep(Duration::from_millis(1500));

    let mut events = taken.lock().unwrap().clone();
    events[..2].sort();
    events[2..4].sort();
    let as_str: Vec<(&str, &str)> = events
        .iter()
        .map(|(e, k)| (e.as_str(), k.as_str()))
        .collect();
    assert_eq!(
        as_str,
        [
            ("opened", "operator-items"),
            ("opened", "printer-paper-out"),
            ("closed", "operator-items"),
            ("closed", "printer-paper-out"),
            ("opened", "down"),
            ("closed", "down"),
        ]
    );
}
