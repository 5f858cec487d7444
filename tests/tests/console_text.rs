//! What reaches the fleet from outside is stored and shown as text, never run as markup or SQL:
//! every field a kiosk sends (pairing, heartbeats, journal rows), what backends said (customer
//! names and addresses in the journal), and a console user's own name. Also the console's own
//! guards: the sign-in form's CSRF token, the headers that forbid framing and scripts, the cash
//! box's fill and days to full, fleet-wide operator items, and an admin accepting a broken chain
//! in the browser.

use selfvend_host::fleet::http::request;
use selfvend_host::fleet::{FleetLink, Identity, Paired, pair_identity};
use selfvend_host::fleet_wire::{
    AuditRow, CashBox, DeviceReport, GENESIS, Heartbeat, OpenItem, PluginReport, row_hash,
};
use selfvend_tests::fleet_rig::{FleetDb, FleetServer};
use selfvend_tests::webdriver::Browser;

/// Markup, a script, and SQL that would drop a table if it were ever spliced into a query.
const HOSTILE: &str = "<script>document.title='pwned'</script><b>粗</b>'; DROP TABLE kiosks; --";
const PASSWORD: &str = "a long enough password";

fn hostile(field: &str) -> String {
    format!("{field}{HOSTILE}")
}

/// Journal rows chained after `prev` from `first`, each `(at, kind, body)`.
fn chained(first: i64, prev: &str, rows: &[(String, &str, String)]) -> Vec<AuditRow> {
    let mut prev = prev.to_string();
    let mut out = Vec::new();
    for (i, (at, kind, body)) in rows.iter().enumerate() {
        let id = first + i as i64;
        let hash = row_hash(&prev, id, at, kind, body);
        out.push(AuditRow {
            id,
            at: at.clone(),
            kind: kind.to_string(),
            body: body.clone(),
            prev_hash: prev.clone(),
            hash: hash.clone(),
        });
        prev = hash;
    }
    out
}

fn beat(journal_head: i64) -> Heartbeat {
    Heartbeat {
        screen: hostile("screen"),
        screen_secs: 2,
        money_in_fen: 0,
        devices: vec![DeviceReport {
            device: hostile("device"),
            name: hostile("name"),
            state: hostile("state"),
            detail: hostile("detail"),
        }],
        // 36 of 40: at 90 %, an alert.
        cash_box: CashBox {
            notes: vec![(100, 36)],
            capacity: 40,
        },
        open_items: 1,
        items: vec![OpenItem {
            id: 7,
            serial: Some(42),
            card: hostile("card"),
            reason: hostile("reason"),
            caught_fen: 5000,
        }],
        period: Default::default(),
        software_version: hostile("software"),
        plugins: vec![PluginReport {
            name: hostile("plugin"),
            version: hostile("version"),
            signer: hostile("signer"),
            sha256: String::new(),
        }],
        journal_head,
        rollouts: Vec::new(),
        commands_done: Vec::new(),
        config: None,
    }
}

fn sign_in(b: &Browser, server: &FleetServer, name: &str) {
    b.go(&format!("{}/login?lang=en", server.url));
    b.type_into("#name", name);
    b.type_into("#password", PASSWORD);
    b.submit("#sign-in");
}

#[test]
fn every_field_from_a_kiosk_a_backend_or_a_user_is_stored_and_shown_as_text() {
    let db = FleetDb::new();
    // A user name is 64 characters at most.
    let user = "<i>o'brien</i>\"; DROP TABLE users; --".to_string();
    db.add_user(&user, PASSWORD, "admin");
    let server = FleetServer::start(&db);

    // A kiosk pairs under a hostile terminal id and region.
    let identity = Identity::generate();
    let code = db.pairing_code();
    let paired = pair_identity(
        &identity,
        &server.url,
        &code,
        &hostile("terminal"),
        &hostile("region"),
    )
    .unwrap();
    let kiosk = paired.kiosk_id.clone();
    let dir = tempfile::tempdir().unwrap();
    let link = FleetLink::new(
        Paired {
            server: server.url.clone(),
            kiosk_id: kiosk.clone(),
        },
        identity,
        dir.path().join("journal.sqlite"),
    );
    // It has sold for a week: 14 banknotes in 7 days, 2 a day.
    db.sql(&format!(
        "UPDATE kiosks SET paired_at = now() - interval '8 days' WHERE id = '{kiosk}'"
    ));
    let day_ago = db.sql(
        "SELECT to_char(now() AT TIME ZONE 'UTC' - interval '1 day',
                        'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')",
    );
    let text = |v: &str| serde_json::to_string(v).unwrap();
    let mut rows: Vec<(String, &str, String)> = (0..14)
        .map(|_| {
            (
                day_ago.clone(),
                "banknote-credited",
                r#"{"fen":10000}"#.to_string(),
            )
        })
        .collect();
    // What backends named the customers, as the journal keeps it.
    rows.push((
        day_ago.clone(),
        "sale-intent",
        format!(
            r#"{{"card":{},"paid_fen":5000,"customer_name":{},"address":{}}}"#,
            text(&hostile("sale-card")),
            text(&hostile("sale-customer")),
            text(&hostile("sale-address"))
        ),
    ));
    rows.push((
        day_ago.clone(),
        "bill-pay-intent",
        format!(
            r#"{{"account":{},"paid_fen":3000,"customer_name":{},"address":{}}}"#,
            text(&hostile("bill-account")),
            text(&hostile("bill-customer")),
            text(&hostile("bill-address"))
        ),
    ));
    rows.push((
        day_ago.clone(),
        "sale-granted",
        format!(
            r#"{{"serial":1,"utility":{},"paid_fen":5000,"payment":"cash"}}"#,
            text(&hostile("utility"))
        ),
    ));
    // A body whose amount is no number does not break the fleet's reports.
    rows.push((
        day_ago.clone(),
        "sale-granted",
        format!(
            r#"{{"serial":2,"utility":{},"paid_fen":"9999999999999999999999","payment":"cash"}}"#,
            text(&hostile("utility"))
        ),
    ));
    rows.push((
        day_ago.clone(),
        "clearing-ended",
        format!(
            r#"{{"period":1,"report":{{"closed_at":{},"cash":{{"expected":5000,"counted":5000,
                "difference":{}}},"utilities":[{{"utility":{},"sold":{{"fen":5000}}}}]}}}}"#,
            text(&hostile("closed")),
            text(&hostile("difference")),
            text(&hostile("cleared-utility"))
        ),
    ));
    let rows = chained(1, GENESIS, &rows);
    let head = rows.last().unwrap().id;
    assert_eq!(link.send_batch(rows).unwrap(), head);
    link.heartbeat(&beat(head)).unwrap();

    // Stored as sent: the tables are all there, the values byte for byte.
    assert_eq!(
        db.sql(&format!(
            "SELECT terminal_id = '{t}', region = '{r}' FROM kiosks",
            t = hostile("terminal").replace('\'', "''"),
            r = hostile("region").replace('\'', "''"),
        )),
        "t|t"
    );
    assert_eq!(
        db.sql("SELECT count(*) FROM journal_rows"),
        head.to_string()
    );
    assert_eq!(
        db.sql(&format!(
            "SELECT heartbeat->'items'->0->>'reason' = '{}' FROM kiosks",
            hostile("reason").replace('\'', "''")
        )),
        "t"
    );

    let b = Browser::start();
    sign_in(&b, &server, &user);
    assert_eq!(b.text("#user"), format!("{user} (admin)"));
    let fleet_row = b.text(&format!("#kiosk-{kiosk}"));
    for field in ["terminal", "region", "screen"] {
        assert!(fleet_row.contains(&hostile(field)), "{field}: {fleet_row}");
    }

    b.go(&format!("{}/kiosks/{kiosk}?lang=en", server.url));
    assert_eq!(b.title(), format!("{kiosk} · Self-service kiosk fleet"));
    let page = b.page_text();
    for field in [
        "device",
        "name",
        "state",
        "detail",
        "card",
        "reason",
        "software",
        "plugin",
        "version",
        "signer",
        "sale-card",
        "sale-customer",
        "sale-address",
        "bill-account",
        "bill-customer",
        "bill-address",
    ] {
        assert!(
            page.contains(&hostile(field)),
            "{field} on the kiosk's page"
        );
    }
    // 36 of 40 notes; 4 more at 2 a day.
    assert_eq!(
        b.text("#cash-box"),
        "36 notes · 3600.00 yuan · 90% of 40 · full in about 2.0 days"
    );
    let items = b.text("#items");
    assert!(items.contains("7 42 card"), "{items}");
    assert!(items.contains("50.00 yuan"), "{items}");
    let alerts = b.text("#alerts");
    assert!(alerts.contains("cash-box-full: 36 of 40 notes"), "{alerts}");

    // The fleet's open items, its takings and clearings.
    b.go(&format!("{}/items?lang=en", server.url));
    let items = b.text("#items");
    assert!(items.contains(&hostile("terminal")), "{items}");
    assert!(items.contains(&hostile("reason")), "{items}");
    b.go(&format!("{}/takings?lang=en", server.url));
    assert!(b.text("#takings").contains(&hostile("utility")));
    b.go(&format!("{}/clearings?lang=en", server.url));
    let clearings = b.text("#clearings");
    for field in ["closed", "difference", "cleared-utility"] {
        assert!(clearings.contains(&hostile(field)), "{field}: {clearings}");
    }
    // No script ran, and no table was dropped.
    assert_eq!(b.title(), "Clearings · Self-service kiosk fleet");
    assert_eq!(db.sql("SELECT count(*) FROM kiosks"), "1");
    assert_eq!(db.sql("SELECT count(*) FROM users"), "1");

    // A row that breaks the chain holds ingest; the admin accepts the break in the browser.
    let forked = chained(
        head + 1,
        &"f".repeat(64),
        &[(day_ago.clone(), "sale-intent", "{}".to_string())],
    );
    let refused = link.send_batch(forked.clone()).unwrap_err().to_string();
    assert!(
        refused.contains("ingest is held until an admin acts"),
        "{refused}"
    );
    b.go(&format!("{}/kiosks/{kiosk}?lang=en", server.url));
    assert!(
        b.text("#chain").starts_with("broken: ingest held"),
        "{}",
        b.text("#chain")
    );
    b.submit("#release");
    assert!(
        b.text("#chain").starts_with("intact"),
        "{}",
        b.text("#chain")
    );
    let releases = b.text("#releases");
    assert!(releases.contains(&format!("{user} · after row {head} · row {}", head + 1)));
    // The release was for that row: another in its place holds ingest again.
    let other = chained(
        head + 1,
        &"e".repeat(64),
        &[(day_ago.clone(), "sale-intent", "{}".to_string())],
    );
    let refused = link.send_batch(other.clone()).unwrap_err().to_string();
    assert!(
        refused.contains("ingest is held until an admin acts"),
        "{refused}"
    );
    // Released for the row that broke it now, that row goes in, and the one before does not.
    db.admin(&["release", "--kiosk", &kiosk, "--by", "ops"])
        .unwrap();
    assert_eq!(link.send_batch(other).unwrap(), head + 1);
    assert_eq!(
        db.sql(&format!(
            "SELECT count(*) FROM chain_releases WHERE kiosk_id = '{kiosk}'"
        )),
        "2"
    );
    let refused = link.send_batch(forked).unwrap_err().to_string();
    assert!(
        refused.contains("was never received") || refused.contains("changed"),
        "{refused}"
    );
}

#[test]
fn the_console_refuses_a_sign_in_from_elsewhere_and_cannot_be_framed() {
    let db = FleetDb::new();
    db.add_user("admin", PASSWORD, "admin");
    let server = FleetServer::start(&db);
    let form = format!("name=admin&password={}", PASSWORD.replace(' ', "+"));
    let post = |cookie: Option<&str>, body: &str| {
        let mut headers = vec![(
            "Content-Type",
            "application/x-www-form-urlencoded".to_string(),
        )];
        if let Some(c) = cookie {
            headers.push(("Cookie", c.to_string()));
        }
        request(
            "POST",
            &server.url,
            "/login?lang=en",
            &headers,
            body.as_bytes(),
            std::time::Duration::from_secs(10),
        )
        .unwrap()
    };
    // A form posted from another site carries no token of the sign-in page: refused, and no
    // session is opened although the password is right.
    let forged = post(None, &form);
    assert_eq!(forged.status, 403);
    assert!(String::from_utf8_lossy(&forged.body).contains("登录"));
    assert!(
        forged
            .headers
            .iter()
            .all(|(n, v)| !(n.eq_ignore_ascii_case("set-cookie")
                && v.starts_with("selfvend_session")))
    );
    let forged = post(Some("selfvend_login=abc"), &format!("{form}&csrf=def"));
    assert_eq!(forged.status, 403);
    assert_eq!(db.sql("SELECT count(*) FROM sessions"), "0");

    // Every page forbids framing, scripts and posting elsewhere.
    let page = request(
        "GET",
        &server.url,
        "/login",
        &[("X-Forwarded-Proto", "https".to_string())],
        b"",
        std::time::Duration::from_secs(10),
    )
    .unwrap();
    assert_eq!(page.header("x-frame-options"), Some("DENY"));
    let csp = page.header("content-security-policy").unwrap();
    assert!(csp.contains("default-src 'none'"), "{csp}");
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert!(csp.contains("form-action 'self'"), "{csp}");
    // Behind an HTTPS proxy, its cookies are Secure.
    let cookie = page
        .headers
        .iter()
        .find(|(n, v)| n.eq_ignore_ascii_case("set-cookie") && v.starts_with("selfvend_login="))
        .map(|(_, v)| v.clone())
        .unwrap();
    assert!(
        cookie.ends_with("; HttpOnly; SameSite=Strict; Secure"),
        "{cookie}"
    );

    // With the sign-in page's own token, the same sign-in opens a session.
    let login_cookie = cookie.split(';').next().unwrap().to_string();
    let token = login_cookie.split_once('=').unwrap().1.to_string();
    let signed_in = post(Some(&login_cookie), &format!("{form}&csrf={token}"));
    assert_eq!(signed_in.status, 303);
    assert_eq!(db.sql("SELECT count(*) FROM sessions"), "1");
}
