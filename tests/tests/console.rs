//! The fleet console in real headless Chromium over WebDriver, against the fleet server on the
//! real PostgreSQL: sign-in (wrong passwords slowed, then locked), the demo-like kiosk's sale
//! appearing after it paired and synced, its clearing with the cash short, the kiosk going down
//! when its heartbeats stop, markup from a kiosk shown as text, and an admin's pairing code.

use selfvend_host::clearing;
use selfvend_host::fleet::FleetLink;
use selfvend_host::fleet_wire::{DeviceReport, Heartbeat};
use selfvend_host::journal::Journal;
use selfvend_host::money::Fen;
use selfvend_tests::fleet_rig::{FleetDb, FleetServer};
use selfvend_tests::kiosk_rig::{Kiosk, OPERATOR_PIN, zhang_san};
use selfvend_tests::webdriver::Browser;
use selfvend_tests::{selfvend_with, text};

const ADMIN_PASSWORD: &str = "correct horse 电池";

fn sign_in(b: &Browser, server: &FleetServer, name: &str, password: &str) {
    b.go(&format!("{}/login", server.url));
    b.type_into("#name", name);
    b.type_into("#password", password);
    b.submit("#sign-in");
}

#[test]
fn an_admin_sees_the_kiosk_sell_and_go_down_and_markup_stays_text() {
    let mut k = Kiosk::new();
    let card = zhang_san(&k);
    k.sell(&card, 5000);
    // Cleared: the operator finds 40.00 where 50.00 should be.
    {
        let mut journal = Journal::open(&k.journal).unwrap();
        clearing::start(&mut journal, &k.config, OPERATOR_PIN).unwrap();
        clearing::box_removed(&mut journal).unwrap();
        clearing::count(&mut journal, Fen(4000)).unwrap();
        clearing::box_replaced(&mut journal).unwrap();
        clearing::end(&mut journal, &k.config, OPERATOR_PIN, None, &k.dialects()).unwrap();
    }
    let db = FleetDb::new();
    db.add_user("admin", ADMIN_PASSWORD, "admin");
    let server = FleetServer::start_with(&db, &["--heartbeat-secs", "2"]);
    let code = db.pairing_code();
    let out = selfvend_with(
        &k.config.path,
        &["fleet", "pair", "--server", &server.url, "--code", &code],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = selfvend_with(&k.config.path, &["fleet", "sync"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let link = FleetLink::load(k.journal.parent().unwrap())
        .unwrap()
        .unwrap();
    let kiosk_id = link.paired().kiosk_id.clone();

    let b = Browser::start();
    // Not signed in: the console sends you to sign in.
    b.go(&server.url);
    assert_eq!(b.text("#sign-in"), "登录");
    sign_in(&b, &server, "admin", "wrong password");
    assert_eq!(b.text("#error"), "用户名或密码错误");
    // The kiosk reports in, as it does every few seconds.
    let out = selfvend_with(&k.config.path, &["fleet", "sync"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    sign_in(&b, &server, "admin", ADMIN_PASSWORD);
    assert_eq!(b.text("#user"), "admin (admin)");
    let row = b.text(&format!("#kiosk-{kiosk_id}"));
    assert!(row.contains("K-SALE-01"), "{row}");
    assert!(row.contains("在线"), "{row}");
    assert!(row.contains("operator-cli"), "{row}");

    // The kiosk's page: the sale, the chain intact; in English too.
    b.submit(&format!("#kiosk-{kiosk_id} a"));
    let sales = b.text("#sales");
    assert!(
        sales.contains("售电 3701000000000001 张三 山东省济南市历下区泉城路1号3单元502室 50.00 元"),
        "{sales}"
    );
    assert!(b.text("#chain").starts_with("完整"), "{}", b.text("#chain"));
    b.go(&format!("{}/kiosks/{kiosk_id}?lang=en", server.url));
    assert!(
        b.text("#chain").starts_with("intact"),
        "{}",
        b.text("#chain")
    );
    assert!(b.text("#sales").contains("50.00 yuan"));
    b.go(&format!("{}/kiosks/{kiosk_id}?lang=zh", server.url));
    // Its own clearing report, the cash short.
    let clearings = b.text("#clearings");
    assert!(
        clearings.contains(" 50.00 40.00 short 10.00 3701: 50.00"),
        "{clearings}"
    );

    // Takings across the fleet, per day, utility and business.
    b.go(&server.url);
    b.submit("#takings-link");
    let takings = b.text("#takings");
    assert!(takings.contains(" 3701 现金售电 1 50.00"), "{takings}");

    // The clearings across the fleet: the cash short, the utility's sales.
    b.go(&server.url);
    b.submit("#clearings-link");
    let clearings = b.text("#clearings");
    assert!(
        clearings.contains(&format!("{kiosk_id} K-SALE-01 1 ")),
        "{clearings}"
    );
    assert!(
        clearings.contains(" 50.00 40.00 short 10.00 3701: 50.00"),
        "{clearings}"
    );

    // What a kiosk sends is shown as text, never run as markup.
    let mut beat = Heartbeat {
        screen: "attract".into(),
        screen_secs: 3,
        money_in_fen: 0,
        devices: vec![DeviceReport {
            device: "printer".into(),
            name: String::new(),
            state: "paper-out".into(),
            detail: "<script>document.title='pwned'</script><b>x</b>".into(),
        }],
        cash_box: Default::default(),
        open_items: 0,
        items: Vec::new(),
        period: Default::default(),
        software_version: "'); DROP TABLE kiosks; --".into(),
        plugins: Vec::new(),
        journal_head: 0,
        rollouts: Vec::new(),
        commands_done: Vec::new(),
        config: None,
    };
    beat.cash_box.notes = vec![(50, 1)];
    link.heartbeat(&beat).unwrap();
    b.go(&format!("{}/kiosks/{kiosk_id}", server.url));
    let devices = b.text("#devices");
    assert!(
        devices.contains("<script>document.title='pwned'</script><b>x</b>"),
        "{devices}"
    );
    assert!(b.page_text().contains("'); DROP TABLE kiosks; --"));
    assert_eq!(db.sql("SELECT count(*) FROM kiosks"), "1");

    // Its heartbeats stop: after three missed, it is down.
    std::thread::sleep(std::time::Duration::from_millis(6500));
    b.go(&server.url);
    let row = b.text(&format!("#kiosk-{kiosk_id}"));
    assert!(row.contains("离线"), "{row}");

    // An admin makes a pairing code.
    b.submit("#new-pairing-code");
    let code = b.text("#pairing-code");
    assert_eq!(code.len(), 12, "{code}");
    assert_eq!(
        db.sql(&format!(
            "SELECT count(*) FROM pairing_codes WHERE code = '{code}' AND used_at IS NULL"
        )),
        "1"
    );

    // Signed out, the pages are closed again.
    b.submit("#sign-out");
    b.go(&server.url);
    assert_eq!(b.text("#sign-in"), "登录");
}

#[test]
fn repeated_wrong_passwords_are_slowed_then_locked() {
    let db = FleetDb::new();
    db.add_user("viewer", ADMIN_PASSWORD, "viewer");
    let server = FleetServer::start(&db);
    let b = Browser::start();
    for _ in 0..4 {
        sign_in(&b, &server, "viewer", "guess");
        assert_eq!(b.text("#error"), "用户名或密码错误");
    }
    assert_eq!(
        db.sql("SELECT failed_logins FROM users WHERE name = 'viewer'"),
        "4"
    );
    sign_in(&b, &server, "viewer", "guess");
    assert_eq!(b.text("#error"), "密码错误次数过多，已锁定15分钟");
    // Locked: even the right password is refused.
    sign_in(&b, &server, "viewer", ADMIN_PASSWORD);
    assert_eq!(b.text("#error"), "密码错误次数过多，已锁定15分钟");
    assert_eq!(
        db.sql("SELECT failed_logins, locked_until > now() FROM users WHERE name = 'viewer'"),
        "5|t"
    );
}
