//! `selfvend bench fleet`: N simulated kiosks against a fleet server on the real PostgreSQL,
//! over real HTTP with real Ed25519 signatures. Each pairs with a code of its own, sends a
//! heartbeat every five seconds, and ships hash-chained journal rows of a kiosk's real kinds as
//! fast as the server takes them (a fleet catching up after an outage); meanwhile a console
//! user loads the fleet page. Prints the issue's four lines.

use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use selfvend_host::fleet::http::request;
use selfvend_host::fleet::{FleetLink, Identity, pair_identity};
use selfvend_host::fleet_wire::{
    AuditRow, CashBox, DeviceReport, GENESIS, Heartbeat, PeriodTotals, PluginReport, row_hash,
};

/// Rows per journal batch, a kiosk's heartbeat interval, and the threads that send heartbeats
/// (the rest send journal batches).
const BATCH: usize = 100;
const HEARTBEAT: Duration = Duration::from_secs(5);
const HEARTBEAT_THREADS: usize = 96;

/// A simulated kiosk: its link and where its journal has got to.
struct SimKiosk {
    link: FleetLink,
    next_id: i64,
    last_hash: String,
}

/// The kinds and bodies a cash sale writes, in order.
const SALE: &[(&str, &str)] = &[
    (
        "payment-opened",
        r#"{"card":"3701000000000001","due_fen":5000}"#,
    ),
    ("banknote-escrowed", r#"{"fen":5000,"payment":1}"#),
    ("banknote-credited", r#"{"fen":5000,"payment":1}"#),
    (
        "sale-intent",
        r#"{"card":"3701000000000001","paid_fen":5000,"purchase":{"money":5000}}"#,
    ),
    ("serial-allocated", r#"{"serial":1}"#),
    (
        "sale-granted",
        r#"{"serial":1,"backend_sale_id":"S0000000001","energy_wh":89285}"#,
    ),
    (
        "card-write-intent",
        r#"{"serial":1,"card":"3701000000000001"}"#,
    ),
    ("card-written", r#"{"serial":1,"purchase_count":1}"#),
    ("receipt-printed", r#"{"serial":1,"lines":14}"#),
];

impl SimKiosk {
    /// The next `n` rows of its journal, chained.
    fn rows(&mut self, n: usize) -> Vec<AuditRow> {
        (0..n)
            .map(|_| {
                let id = self.next_id;
                let (kind, body) = SALE[(id as usize - 1) % SALE.len()];
                let at = "2026-12-04T10:00:00.000Z";
                let hash = row_hash(&self.last_hash, id, at, kind, body);
                let row = AuditRow {
                    id,
                    at: at.into(),
                    kind: kind.into(),
                    body: body.into(),
                    prev_hash: std::mem::replace(&mut self.last_hash, hash.clone()),
                    hash,
                };
                self.next_id += 1;
                row
            })
            .collect()
    }
}

fn heartbeat(head: i64) -> Heartbeat {
    let device = |device: &str| DeviceReport {
        device: device.into(),
        name: String::new(),
        state: "ok".into(),
        detail: String::new(),
    };
    Heartbeat {
        screen: "attract".into(),
        screen_secs: 42,
        money_in_fen: 0,
        devices: ["card-reader", "validator", "printer", "pin-pad"]
            .into_iter()
            .map(device)
            .collect(),
        cash_box: CashBox {
            notes: vec![(10, 31), (20, 12), (50, 40), (100, 57)],
            capacity: 1000,
        },
        open_items: 0,
        items: Vec::new(),
        period: PeriodTotals {
            period: 3,
            sales: 48,
            sales_fen: 1_251_000,
            bill_payments: 9,
            bill_payments_fen: 203_517,
        },
        software_version: env!("CARGO_PKG_VERSION").into(),
        // The demo kiosk's plugins, as a kiosk reports them.
        plugins: [
            "hengtai-sle4442",
            "lanling-cpu",
            "fixed-text",
            "json-http",
            "iso8583",
        ]
        .into_iter()
        .map(|name| PluginReport {
            name: name.into(),
            version: "1.1.0".into(),
            signer: "Hengtai Meters (key 11ef4ae3b12cd72e)".into(),
            sha256: String::new(),
        })
        .collect(),
        journal_head: head,
        rollouts: Vec::new(),
        commands_done: Vec::new(),
        config: None,
    }
}

fn p99(samples: &mut [f64]) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    samples.sort_by(f64::total_cmp);
    samples[((samples.len() as f64 * 0.99) as usize).min(samples.len() - 1)]
}

pub fn run(
    server: &str,
    codes: &Path,
    kiosks: usize,
    minutes: f64,
    login: &str,
    password: &str,
) -> anyhow::Result<()> {
    let codes: Vec<String> = std::fs::read_to_string(codes)
        .with_context(|| format!("reading pairing codes from {}", codes.display()))?
        .lines()
        .map(str::to_string)
        .collect();
    anyhow::ensure!(
        codes.len() >= kiosks,
        "{} pairing codes for {kiosks} kiosks",
        codes.len()
    );
    let workers = kiosks.clamp(1, 16);
    let started = Instant::now();
    // Pair every kiosk, the workers sharing the codes.
    let paired: Vec<Vec<SimKiosk>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|w| {
                let codes = &codes;
                scope.spawn(move || -> anyhow::Result<Vec<SimKiosk>> {
                    (w..kiosks)
                        .step_by(workers)
                        .map(|i| {
                            let identity = Identity::generate();
                            let paired = pair_identity(
                                &identity,
                                server,
                                &codes[i],
                                &format!("BENCH-{i:05}"),
                                "3701",
                            )?;
                            Ok(SimKiosk {
                                link: FleetLink::new(paired, identity, "unused".into()),
                                next_id: 1,
                                last_hash: GENESIS.into(),
                            })
                        })
                        .collect()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a pairing worker"))
            .collect::<anyhow::Result<_>>()
    })?;
    eprintln!(
        "{kiosks} kiosks paired in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let deadline = Instant::now() + Duration::from_secs_f64(minutes * 60.0);
    let rows = AtomicU64::new(0);
    let beats = AtomicU64::new(0);
    let failures = AtomicU64::new(0);
    let ingest_ms = Mutex::new(Vec::new());
    let console_ms = Mutex::new(Vec::new());
    let done = AtomicBool::new(false);
    let cookie = sign_in(server, login, password)?;
    let measured = Instant::now();
    // Heartbeats from threads of their own, each kiosk every five seconds as a kiosk sends
    // them; journal batches from the others, as fast as the server takes them.
    let beaters: Vec<Vec<(FleetLink, i64)>> = {
        let mut lanes: Vec<Vec<(FleetLink, i64)>> =
            (0..HEARTBEAT_THREADS).map(|_| Vec::new()).collect();
        for (i, k) in paired.iter().flatten().enumerate() {
            lanes[i % HEARTBEAT_THREADS].push((k.link.clone(), 0));
        }
        lanes
    };
    std::thread::scope(|scope| {
        for lane in beaters {
            let (beats, failures) = (&beats, &failures);
            scope.spawn(move || {
                let every = HEARTBEAT.div_f64(lane.len().max(1) as f64);
                let mut next = Instant::now();
                'beating: loop {
                    for (link, head) in &lane {
                        if Instant::now() >= deadline {
                            break 'beating;
                        }
                        match link.heartbeat(&heartbeat(*head)) {
                            Ok(_) => beats.fetch_add(1, Ordering::Relaxed),
                            Err(_) => failures.fetch_add(1, Ordering::Relaxed),
                        };
                        next += every;
                        if let Some(wait) = next.checked_duration_since(Instant::now()) {
                            std::thread::sleep(wait);
                        }
                    }
                }
            });
        }
        for mut mine in paired {
            let (rows, failures, ingest_ms) = (&rows, &failures, &ingest_ms);
            scope.spawn(move || {
                let mut latencies = Vec::new();
                while Instant::now() < deadline {
                    for k in &mut mine {
                        if Instant::now() >= deadline {
                            break;
                        }
                        let batch = k.rows(BATCH);
                        let sent = Instant::now();
                        match k.link.send_batch(batch) {
                            Ok(_) => {
                                latencies.push(sent.elapsed().as_secs_f64() * 1000.0);
                                rows.fetch_add(BATCH as u64, Ordering::Relaxed);
                            }
                            Err(e) => {
                                failures.fetch_add(1, Ordering::Relaxed);
                                eprintln!("batch refused: {e}");
                            }
                        }
                    }
                }
                ingest_ms.lock().unwrap().extend(latencies);
            });
        }
        let (console_ms, done, cookie) = (&console_ms, &done, &cookie);
        scope.spawn(move || {
            while Instant::now() < deadline && !done.load(Ordering::Relaxed) {
                let sent = Instant::now();
                let page = request(
                    "GET",
                    server,
                    "/",
                    &[("Cookie", cookie.clone())],
                    b"",
                    Duration::from_secs(30),
                );
                if matches!(&page, Ok(r) if r.status == 200) {
                    console_ms
                        .lock()
                        .unwrap()
                        .push(sent.elapsed().as_secs_f64() * 1000.0);
                }
                std::thread::sleep(Duration::from_millis(500));
            }
        });
    });
    done.store(true, Ordering::Relaxed);
    let secs = measured.elapsed().as_secs_f64();
    let failed = failures.load(Ordering::Relaxed);
    if failed > 0 {
        eprintln!("{failed} requests failed");
    }
    println!(
        "ingest: {:.0} rows/s",
        rows.load(Ordering::Relaxed) as f64 / secs
    );
    println!("ingest p99: {:.1} ms", p99(&mut ingest_ms.lock().unwrap()));
    println!(
        "heartbeats: {:.0}/s",
        beats.load(Ordering::Relaxed) as f64 / secs
    );
    println!(
        "console fleet page p99: {:.1} ms",
        p99(&mut console_ms.lock().unwrap())
    );
    Ok(())
}

/// The `name=value` of cookie `name` that `reply` sets.
fn set_cookie(reply: &selfvend_host::fleet::http::Reply, name: &str) -> Option<String> {
    reply
        .headers
        .iter()
        .find(|(header, value)| {
            header.eq_ignore_ascii_case("set-cookie") && value.starts_with(&format!("{name}="))
        })
        .and_then(|(_, value)| value.split(';').next())
        .map(str::to_string)
}

/// Signs `login` in to the console as a browser does (the sign-in page first, for its CSRF
/// token); the session cookie.
fn sign_in(server: &str, login: &str, password: &str) -> anyhow::Result<String> {
    let page = request("GET", server, "/login", &[], b"", Duration::from_secs(30))?;
    let login_cookie = set_cookie(&page, "selfvend_login").context("the sign-in page's cookie")?;
    let token = login_cookie.split_once('=').map_or("", |(_, t)| t);
    let form = format!("name={login}&password={password}&csrf={token}");
    let reply = request(
        "POST",
        server,
        "/login",
        &[
            (
                "Content-Type",
                "application/x-www-form-urlencoded".to_string(),
            ),
            ("Cookie", login_cookie.clone()),
        ],
        form.as_bytes(),
        Duration::from_secs(30),
    )?;
    set_cookie(&reply, "selfvend_session")
        .with_context(|| format!("signing in as {login}: HTTP {}", reply.status))
}
