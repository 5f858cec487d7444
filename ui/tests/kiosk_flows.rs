//! Whole customer and operator flows through the kiosk's window, driven by AccessKit labels as a
//! person would: the demo kiosk of `config/demo.toml` with its real engine, journal and plugins,
//! on the simulators (virtual cards in the rig's pcscd, the validator, printer and PIN pad on
//! ptys, the reference backends and the acquirer on loopback). `./dev test` starts the rig.

use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use eframe::egui;
use egui_kittest::Harness;
use egui_kittest::kittest::Queryable;
use selfvend_host::card_reader::Readers;
use selfvend_host::config::{KioskConfig, ReaderDevice};
use selfvend_host::journal::Journal;
use selfvend_host::kiosk::{
    AccountStatus, BillResultView, CardNotice, Device, DeviceState, OperatorMessage, OperatorView,
    Reconciled, ResultView, Screen, Timeouts, View,
};
use selfvend_host::money::Fen;
use selfvend_ui::app::KioskApp;
use selfvend_ui::demo::{DEMO_PAN, Demo, METER_READER};
use selfvend_ui::fonts;

/// The demo uses both of the rig's vpcd slots: one flow at a time.
static RIG: Mutex<()> = Mutex::new(());

const ZHANG_SAN: &str = "Insert 张三 · Hengtai SLE4442";
const CHEN_XIAOMING: &str = "Insert 陈小明 · Lanling CPU";
const WANG_WU: &str = "Insert 王五 · account closed";

struct Flow {
    h: Harness<'static, KioskApp>,
    _rig: std::sync::MutexGuard<'static, ()>,
}

/// `receipt` has the line `line`.
fn assert_printed(receipt: &[String], line: &str) {
    assert!(
        receipt.iter().any(|l| l == line),
        "no line `{line}` in {receipt:#?}"
    );
}

fn quick() -> Timeouts {
    Timeouts {
        result: Duration::from_millis(300),
        housekeeping: Duration::from_secs(2),
        ..Timeouts::default()
    }
}

impl Flow {
    fn start(timeouts: Timeouts) -> Flow {
        let mut flow = Flow::start_with(timeouts, |_, _| {});
        flow.wait("the attract screen", |s| *s == Screen::Attract);
        flow
    }

    /// The demo kiosk; `before` may change its config (already pointed at the simulators) and
    /// use the simulators before the kiosk starts.
    fn start_with(timeouts: Timeouts, before: impl FnOnce(&mut KioskConfig, &mut Demo)) -> Flow {
        let rig = RIG.lock().unwrap_or_else(|p| p.into_inner());
        let port = std::env::var("SELFVEND_VPCD_PORT")
            .expect("SELFVEND_VPCD_PORT: run the tests with ./dev test, which starts the PC/SC rig")
            .parse()
            .unwrap();
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let mut config = KioskConfig::load(&root.join("config/demo.toml")).unwrap();
        let mut demo = Demo::start(&mut config, port).unwrap();
        before(&mut config, &mut demo);
        let kiosk = selfvend_ui::kiosk::start(&config, timeouts, || {}).unwrap();
        let h = Harness::builder()
            .with_size(egui::vec2(1600.0, 800.0))
            .with_context_setup(|ctx| selfvend_ui::setup(ctx, Path::new(fonts::CJK_FONT)).unwrap())
            .build_ui_state(
                |ui, app: &mut KioskApp| app.kiosk_ui(ui),
                KioskApp::new(kiosk, Some(demo)),
            );
        Flow { h, _rig: rig }
    }

    fn demo(&mut self) -> &mut Demo {
        self.h.state_mut().demo.as_mut().unwrap()
    }

    /// Draws frames until the kiosk shows what `shows` wants; returns that screen.
    fn wait(&mut self, what: &str, shows: impl Fn(&Screen) -> bool) -> Screen {
        self.wait_view(what, |v| shows(&v.screen)).screen
    }

    fn wait_view(&mut self, what: &str, shows: impl Fn(&View) -> bool) -> View {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            self.h.step();
            let view = self.h.state().kiosk.view();
            if shows(&view) {
                self.h.step();
                return view;
            }
            assert!(
                Instant::now() < deadline,
                "waited for {what}; the kiosk shows {view:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Draws frames until `done` holds of the flow (its journal, its simulators).
    fn wait_until(&mut self, what: &str, done: impl Fn(&mut Flow) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !done(self) {
            assert!(Instant::now() < deadline, "waited for {what}");
            self.h.step();
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn press(&mut self, label: &str) {
        self.h.get_by_label(label).click_accesskit();
        self.h.step();
        self.h.step();
    }

    fn shows(&self, label: &str) -> bool {
        self.h.query_by_label(label).is_some()
    }

    fn result(&mut self) -> ResultView {
        match self.wait("a result", |s| matches!(s, Screen::Result(_))) {
            Screen::Result(r) => r,
            _ => unreachable!(),
        }
    }

    /// The demo's journal, opened beside the kiosk's own connection.
    fn journal(&mut self) -> Journal {
        Journal::open(&self.demo().dir.path().join("data/journal.sqlite")).unwrap()
    }

    fn sale_states(&mut self) -> Vec<(u64, String, u64)> {
        self.journal()
            .sales(selfvend_host::sale::SALE_STATES, None)
            .unwrap()
            .into_iter()
            .map(|s| (s.serial, s.state, s.paid_fen))
            .collect()
    }

    /// Inserts a card, waits for its account and picks the ¥`yuan` preset.
    fn choose(&mut self, card: &str, yuan: u64) {
        self.press(card);
        self.wait("the account", |s| matches!(s, Screen::Account(_)));
        self.press(&format!("{yuan}.00 元"));
    }

    fn pay_cash(&mut self, card: &str, yuan: u64) {
        self.choose(card, yuan);
        self.wait("the payment choice", |s| matches!(s, Screen::Method { .. }));
        self.press("现金支付");
        self.wait("the banknote screen", |s| {
            matches!(s, Screen::Paying { .. })
        });
    }

    /// 维护, the demo operator's PIN on the keypad, 登录: the operator screen.
    fn sign_in_as_operator(&mut self) -> Box<OperatorView> {
        self.press("维护");
        self.wait("the operator PIN", |s| {
            matches!(s, Screen::OperatorPin { .. })
        });
        for digit in ["1", "2", "3", "4", "5", "6"] {
            self.press(digit);
        }
        self.press("登录");
        match self.wait("the operator screen", |s| matches!(s, Screen::Operator(_))) {
            Screen::Operator(op) => op,
            _ => unreachable!(),
        }
    }

    /// Chooses ¥`yuan` for `card`, pays by bank card, inserts 王芳's card: the PIN prompt.
    fn reach_the_pin_pad(&mut self, card: &str, yuan: u64) {
        self.choose(card, yuan);
        self.wait("bank cards offered", |s| {
            matches!(s, Screen::Method { bank: true, .. })
        });
        self.press("银行卡支付");
        self.wait("the bank card prompt", |s| {
            matches!(s, Screen::BankCard { .. })
        });
        assert!(self.shows("请插入银行卡"));
        self.press("Insert bank card");
        self.wait("the PIN prompt", |s| {
            matches!(s, Screen::Pin { digits: 0, .. })
        });
    }

    /// The result says sold and not written, and so does the receipt.
    fn sold_not_written(&mut self, paid: Fen) {
        let result = self.result();
        assert!(
            matches!(result, ResultView::NotWritten { paid: p, .. } if p == paid),
            "{result:?}"
        );
        assert!(self.shows("已购电，未写入电卡"));
        assert_printed(
            &self.demo().last_receipt(),
            "已购电但未写入电卡：请再次插卡补写",
        );
    }

    /// `card` goes back in: sale 1, of `paid`, is written onto it before the account shows.
    fn written_on_return(&mut self, card: &str, paid: Fen) {
        self.press(card);
        self.wait(
            "the account, the earlier sale written",
            |s| matches!(s, Screen::Account(a) if a.rewritten == Some(1)),
        );
        assert!(self.shows("上次购电已补写入电卡"));
        assert_eq!(self.sale_states(), [(1, "written".to_string(), paid.0)]);
        self.press("取消");
        self.result();
        self.take_card_out();
    }

    fn take_card_out(&mut self) {
        self.press("Pull the meter card");
        self.wait("the attract screen", |s| *s == Screen::Attract);
    }
}

#[test]
fn a_cash_sale_from_card_to_receipt() {
    let mut f = Flow::start(quick());
    f.press(ZHANG_SAN);
    f.wait("the account", |s| matches!(s, Screen::Account(_)));
    assert!(f.shows("张三"));
    assert!(f.shows("山东省济南市历下区泉城路1号3单元502室"));
    f.press("50.00 元");
    f.wait("the payment choice with bank cards offered", |s| {
        matches!(s, Screen::Method { bank: true, .. })
    });
    f.press("现金支付");
    f.wait("the banknote screen", |s| {
        matches!(
            s,
            Screen::Paying {
                due: Fen(5000),
                paid: Fen(0),
                ..
            }
        )
    });
    f.press("¥20");
    f.wait("¥20 paid", |s| {
        matches!(
            s,
            Screen::Paying {
                due: Fen(5000),
                paid: Fen(2000),
                ..
            }
        )
    });
    assert!(f.shows("已投：20.00 元"));
    f.press("¥10");
    f.press("¥20");
    let result = f.result();
    assert!(
        matches!(result, ResultView::Credited { paid: Fen(5000), energy_wh } if energy_wh > 0),
        "{result:?}"
    );
    assert!(f.shows("购电成功"));
    let receipt = f.demo().last_receipt();
    assert_printed(&receipt, "实收金额：50.00元");
    assert_printed(&receipt, "购电成功，请将电卡插入电表");
    assert_eq!(f.sale_states(), [(1, "written".to_string(), 5000)]);
    f.take_card_out();
}

#[test]
fn a_paired_kiosk_reports_its_sale_cash_box_and_plugins_and_goes_down_in_the_console() {
    use selfvend_tests::fleet_rig::{FleetDb, FleetServer};
    use selfvend_tests::webdriver::Browser;
    let db = FleetDb::new();
    db.add_user("admin", "an admin's long password", "admin");
    // Down after three missed heartbeats of one second.
    let server = FleetServer::start_with(&db, &["--heartbeat-secs", "1"]);
    let mut f = Flow::start_with(quick(), |config, _| {
        config.policy.fleet_heartbeat = Duration::from_secs(1);
        selfvend_host::fleet::pair(
            &config.kiosk.data_dir,
            &server.url,
            &db.pairing_code(),
            config.kiosk.terminal_id.as_str(),
            &config.kiosk.region,
        )
        .unwrap();
    });
    f.wait("the attract screen", |s| *s == Screen::Attract);
    f.pay_cash(ZHANG_SAN, 50);
    f.press("¥50");
    f.result();
    f.take_card_out();
    // The link's own thread ships the sale and reports what the kiosk holds.
    let reported = || {
        db.sql(
            "SELECT heartbeat->>'screen', heartbeat->'cash_box'->>'capacity',
                    heartbeat->'cash_box'->'notes'->>0,
                    (SELECT string_agg(p->>'name' || ' ' || (p->>'signer'), ', ' ORDER BY 1)
                     FROM jsonb_array_elements(heartbeat->'plugins') p),
                    (SELECT count(*) FROM journal_rows WHERE kind = 'sale-granted')
             FROM kiosks",
        )
    };
    f.wait_until("the sale and the cash box at the fleet", |_| {
        reported().starts_with("attract|1000|[50, 1]|") && reported().ends_with("|1")
    });
    let plugins = reported();
    for name in ["hengtai-sle4442 ", "lanling-cpu ", "json-http ", "iso8583 "] {
        assert!(plugins.contains(name), "{name} in {plugins}");
    }

    // In the console: the demo kiosk online with its sale, then down once it stops.
    let kiosk = db.sql("SELECT id FROM kiosks");
    let b = Browser::start();
    b.go(&format!("{}/login", server.url));
    b.type_into("#name", "admin");
    b.type_into("#password", "an admin's long password");
    b.submit("#sign-in");
    let row = b.text(&format!("#kiosk-{kiosk}"));
    assert!(row.contains("DEMO-0001") && row.contains("在线"), "{row}");
    b.go(&format!("{}/kiosks/{kiosk}", server.url));
    let sales = b.text("#sales");
    assert!(
        sales.contains("售电") && sales.contains("张三") && sales.contains("50.00 元"),
        "{sales}"
    );
    assert!(
        b.text("#cash-box").starts_with("1 张 · 50.00 元"),
        "{}",
        b.text("#cash-box")
    );
    drop(f);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        b.go(&server.url);
        let row = b.text(&format!("#kiosk-{kiosk}"));
        if row.contains("离线") {
            break;
        }
        assert!(Instant::now() < deadline, "still not down: {row}");
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn a_bank_card_sale_with_the_pin_on_the_pad() {
    let mut f = Flow::start(quick());
    f.reach_the_pin_pad(CHEN_XIAOMING, 100);
    assert!(f.shows("请在密码键盘上输入银行卡密码"));
    f.press("PIN 135790 + Enter");
    f.wait("the bank card asked back", |s| *s == Screen::TakeBankCard);
    assert!(f.shows("请取回银行卡"));
    f.press("Pull bank card");
    let result = f.result();
    assert!(
        matches!(
            result,
            ResultView::Credited {
                paid: Fen(10000),
                ..
            }
        ),
        "{result:?}"
    );
    let receipt = f.demo().last_receipt();
    assert!(
        receipt
            .iter()
            .any(|l| l.starts_with("银行卡支付：622202") && l.ends_with("0128")),
        "{receipt:?}"
    );
    assert_eq!(f.demo().acquirer.balance(DEMO_PAN), Some(100_000 - 10_000));
    assert_eq!(f.sale_states(), [(1, "written".to_string(), 10000)]);
    f.take_card_out();
}

#[test]
fn a_wrong_pin_is_declined_and_the_customer_pays_cash_instead() {
    let mut f = Flow::start(quick());
    f.reach_the_pin_pad(ZHANG_SAN, 20);
    f.press("Wrong PIN + Enter");
    f.wait("the bank card asked back", |s| *s == Screen::TakeBankCard);
    f.press("Pull bank card");
    let screen = f.wait("the payment choice again", |s| {
        matches!(
            s,
            Screen::Method {
                notice: Some(_),
                ..
            }
        )
    });
    assert_eq!(
        f.demo().acquirer.balance(DEMO_PAN),
        Some(100_000),
        "{screen:?}"
    );
    f.press("现金支付");
    f.press("¥20");
    assert!(matches!(
        f.result(),
        ResultView::Credited {
            paid: Fen(2000),
            ..
        }
    ));
    f.take_card_out();
}

#[test]
fn a_pin_cancelled_on_the_pad_is_told_in_the_customers_words_and_takes_nothing() {
    let mut f = Flow::start(quick());
    f.reach_the_pin_pad(ZHANG_SAN, 20);
    f.press("Cancel on pad");
    f.wait("the bank card asked back", |s| *s == Screen::TakeBankCard);
    f.press("Pull bank card");
    f.wait("the payment choice, told why", |s| {
        matches!(
            s,
            Screen::Method {
                notice: Some(CardNotice::PinCancelled),
                ..
            }
        )
    });
    assert!(f.shows("已取消输入密码，未扣款"));
    assert_eq!(f.demo().acquirer.balance(DEMO_PAN), Some(100_000));
    f.press("取消");
    f.result();
    f.take_card_out();
}

#[test]
fn a_closed_account_is_refused_before_any_money_goes_in() {
    let mut f = Flow::start(quick());
    f.press(WANG_WU);
    f.wait(
        "the closed account",
        |s| matches!(s, Screen::Account(a) if a.status == AccountStatus::Closed),
    );
    assert!(f.shows("该户已销户，不能购电，请到营业厅办理"));
    assert!(f.h.query_by_label("50.00 元").is_none());
    f.press("取消");
    assert_eq!(f.result(), ResultView::Cancelled { caught: Fen(0) });
    assert!(f.shows("请取回电卡"));
    assert!(f.sale_states().is_empty());
    f.take_card_out();
}

#[test]
fn a_backend_down_after_the_cash_went_in_leaves_a_pending_sale_on_the_receipt() {
    let mut f = Flow::start(quick());
    f.pay_cash(ZHANG_SAN, 50);
    f.demo().set_backends_down(true);
    f.press("¥50");
    let result = f.result();
    assert_eq!(result, ResultView::Pending { paid: Fen(5000) });
    assert!(f.shows("交易待处理"));
    let receipt = f.demo().last_receipt();
    assert_printed(&receipt, "交易待处理：结果确认后自动补售电");
    assert_eq!(f.sale_states(), [(1, "never-reached".to_string(), 5000)]);
    f.take_card_out();
}

#[test]
fn a_card_pulled_during_its_write_is_written_when_it_comes_back() {
    let mut f = Flow::start(quick());
    f.pay_cash(CHEN_XIAOMING, 20);
    f.demo().tear_next_write();
    f.press("¥20");
    f.sold_not_written(Fen(2000));
    f.take_card_out();
    f.written_on_return(CHEN_XIAOMING, Fen(2000));
}

#[test]
fn an_idle_customer_gets_the_card_back_but_money_in_is_always_sold() {
    let mut f = Flow::start(Timeouts {
        choose: Duration::from_secs(2),
        banknotes: Duration::from_secs(2),
        ..quick()
    });
    // Nothing paid: the account screen counts down and hands the card back.
    f.press(ZHANG_SAN);
    f.wait_view("a countdown on the account", |v| {
        matches!(v.screen, Screen::Account(_)) && v.countdown.is_some()
    });
    assert_eq!(f.result(), ResultView::Cancelled { caught: Fen(0) });
    f.take_card_out();
    // ¥20 in of ¥50, then nothing: the ¥20 is sold, never cancelled.
    f.pay_cash(ZHANG_SAN, 50);
    f.press("¥20");
    f.wait("¥20 paid", |s| {
        matches!(
            s,
            Screen::Paying {
                paid: Fen(2000),
                ..
            }
        )
    });
    assert!(f.shows("按已投金额购电"));
    assert!(f.h.query_by_label("取消").is_none());
    let result = f.result();
    assert!(
        matches!(
            result,
            ResultView::Credited {
                paid: Fen(2000),
                ..
            }
        ),
        "{result:?}"
    );
    assert_eq!(f.sale_states(), [(1, "written".to_string(), 2000)]);
    f.take_card_out();
}

#[test]
fn an_operator_settles_a_caught_banknote_and_clears_the_kiosk() {
    let mut f = Flow::start(quick());
    f.pay_cash(ZHANG_SAN, 50);
    f.press("Jam a ¥50 in the stacker");
    f.wait_until("the caught banknote handed to an operator", |f| {
        f.journal().manual_items(false).unwrap().len() == 1
    });
    f.press("取消");
    let result = f.result();
    assert_eq!(result, ResultView::Cancelled { caught: Fen(5000) });
    let receipt = f.demo().last_receipt();
    assert_printed(&receipt, "50.00元纸币卡在机内未入账");
    f.take_card_out();

    let op = f.sign_in_as_operator();
    assert_eq!(op.items.len(), 1, "{op:?}");
    assert_eq!(op.items[0].caught, Some(Fen(5000)));
    for device in [
        Device::CardReader,
        Device::BankCardReader,
        Device::ReceiptPrinter,
        Device::PinPad,
    ] {
        assert!(
            op.devices.iter().any(|d| d.device == device && d.ok),
            "{device:?}: {:?}",
            op.devices
        );
    }
    assert!(
        op.devices
            .iter()
            .any(|d| matches!(d.device, Device::Acquirer(_)) && d.ok)
    );
    // Named and described in the screen's language.
    assert!(f.shows("电卡读卡器"));
    assert!(f.shows("凭条打印机"));
    assert!(f.shows("就绪"));
    assert!(op.plugins.iter().any(|p| p.name == "iso8583"));
    let item = op.items[0].id;
    f.press("钱箱清点核实");
    f.press(&format!("退款 #{item}"));
    f.wait(
        "the item settled",
        |s| matches!(s, Screen::Operator(op) if op.items.is_empty()),
    );
    let settled = f.journal().manual_items(true).unwrap();
    assert_eq!(
        settled[0].resolution.as_deref(),
        Some("refunded: 钱箱清点核实 (operator screen)")
    );
    f.press("重印凭条");
    f.wait(
        "the copy printed",
        |s| matches!(s, Screen::Operator(op) if op.message == Some(OperatorMessage::Reprinted)),
    );
    assert!(f.shows("已重印上一张凭条"));
    let copy = f.demo().last_receipt();
    assert_eq!(
        copy.first().map(String::as_str),
        Some("（重印 / COPY）"),
        "{copy:?}"
    );
    assert!(
        copy.contains(&"50.00元纸币卡在机内未入账".to_string()),
        "{copy:?}"
    );
    f.press("开始清机");
    f.wait(
        "clearing",
        |s| matches!(s, Screen::Operator(op) if op.period_state == "clearing"),
    );
    assert!(f.shows("账期 1 清机中，暂停售电"));
    f.press("钱箱已取出");
    f.press("钱箱已放回");
    // The jammed note was found and refunded: the box holds nothing the kiosk credited.
    f.press("0");
    f.press("录入清点金额");
    f.wait("the count taken", |s| {
        matches!(s, Screen::Operator(op)
            if op.message == Some(OperatorMessage::Counted { counted: Fen(0), expected: Fen(0) }))
    });
    assert!(f.shows("清点 0.00 元，应有 0.00 元"));
    f.press("结束清机");
    let screen = f.wait(
        "period 2",
        |s| matches!(s, Screen::Operator(op) if op.period == 2),
    );
    let Screen::Operator(op) = screen else {
        unreachable!()
    };
    let Some(OperatorMessage::PeriodClosed {
        closed: 1,
        next: 2,
        backends,
        ..
    }) = &op.message
    else {
        panic!("{op:?}");
    };
    let mut answers: Vec<_> = backends.iter().map(|(b, a)| (b.as_str(), a)).collect();
    answers.sort_by_key(|(b, _)| *b);
    assert_eq!(
        answers,
        [
            ("guangzhou-power", &Reconciled::Matched),
            ("jinan-power", &Reconciled::Matched)
        ]
    );
    assert!(f.demo().last_receipt().iter().any(|l| l.contains("清机")));
    f.press("银行结算");
    f.wait("the bank batch settled", |s| {
        matches!(s, Screen::Operator(op)
            if matches!(op.message, Some(OperatorMessage::Settled { .. })))
    });
    f.press("退出");
    f.wait("the attract screen", |s| *s == Screen::Attract);
}

#[test]
fn a_purchase_by_energy_is_priced_by_the_backend_and_paid_in_small_notes() {
    let mut f = Flow::start(quick());
    f.press(ZHANG_SAN);
    f.wait("the account", |s| matches!(s, Screen::Account(_)));
    f.press("按电量购买");
    // 50 kWh at 张三's ¥0.56/kWh.
    assert!(f.shows("28.00 元"));
    f.press("50 kWh");
    f.wait("the payment choice", |s| matches!(s, Screen::Method { .. }));
    f.press("现金支付");
    f.wait("the banknote screen", |s| {
        matches!(
            s,
            Screen::Paying {
                due: Fen(2800),
                paid: Fen(0),
                ..
            }
        )
    });
    for note in ["¥20", "¥5", "¥1", "¥1", "¥1"] {
        f.press(note);
    }
    let result = f.result();
    assert_eq!(
        result,
        ResultView::Credited {
            paid: Fen(2800),
            energy_wh: 50_000
        }
    );
    assert!(
        f.demo()
            .last_receipt()
            .contains(&"购电电量：50.000kWh".to_string())
    );
    f.take_card_out();
}

#[test]
fn a_card_pulled_with_money_in_is_sold_and_written_when_it_comes_back() {
    let mut f = Flow::start(quick());
    f.pay_cash(ZHANG_SAN, 50);
    f.press("¥20");
    f.wait("¥20 paid", |s| {
        matches!(
            s,
            Screen::Paying {
                paid: Fen(2000),
                ..
            }
        )
    });
    // The customer walks off with the card: the ¥20 is sold all the same.
    f.press("Pull the meter card");
    f.sold_not_written(Fen(2000));
    f.wait("the attract screen", |s| *s == Screen::Attract);
    f.written_on_return(ZHANG_SAN, Fen(2000));
}

#[test]
fn a_card_reader_that_is_not_there_puts_the_kiosk_out_of_service_and_keeps_it_there() {
    let mut f = Flow::start_with(quick(), |config, _| {
        config.devices.card_reader = Some(ReaderDevice {
            reader: "selfvend vpcd 00 07".into(),
        });
    });
    let screen = f.wait("out of service", |s| {
        matches!(s, Screen::OutOfService { .. })
    });
    let Screen::OutOfService { why } = screen else {
        unreachable!()
    };
    assert!(why.contains("selfvend vpcd 00 07"), "{why}");
    assert!(f.shows("暂停服务"));
    // It does not flicker back to the attract screen while the reader stays away.
    let until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < until {
        f.h.step();
        let screen = f.h.state().kiosk.view().screen;
        assert!(matches!(screen, Screen::OutOfService { .. }), "{screen:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    // The operator can still get in, and sees why.
    let op = f.sign_in_as_operator();
    let reader = op
        .devices
        .iter()
        .find(|d| d.device == Device::CardReader)
        .unwrap();
    assert!(
        !reader.ok && matches!(reader.state, DeviceState::Missing(_)),
        "{reader:?}"
    );
    assert!(f.shows("selfvend vpcd 00 07 未连接"));
    f.press("退出");
}

#[test]
fn a_kiosk_the_fleet_took_out_of_service_stays_so_until_its_operator_puts_it_back() {
    // The fleet took it out of service before this start: its journal says so.
    let mut f = Flow::start_with(quick(), |config, _| {
        let mut journal = selfvend_ui::kiosk::journal(config).unwrap();
        let command = selfvend_host::fleet_wire::RemoteCommand {
            id: 7,
            command: selfvend_host::fleet_wire::CommandKind::OutOfService,
            period: None,
            by: "ops".into(),
        };
        selfvend_host::remote_command::record(&mut journal, &command, Ok("out of service".into()))
            .unwrap();
    });
    let screen = f.wait("out of service", |s| {
        matches!(s, Screen::OutOfService { .. })
    });
    assert_eq!(
        screen,
        Screen::OutOfService {
            why: "taken out of service from the fleet by ops".into()
        }
    );
    assert!(f.shows("暂停服务"));
    // A card goes in and nothing starts.
    f.press(ZHANG_SAN);
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        f.h.step();
        let screen = f.h.state().kiosk.view().screen;
        assert!(matches!(screen, Screen::OutOfService { .. }), "{screen:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    f.press("Pull the meter card");
    // The operator sees who took it out, and puts it back.
    let op = f.sign_in_as_operator();
    assert_eq!(op.taken_out.as_deref(), Some("ops"));
    assert!(f.shows("已由管理平台远程暂停服务，下达人：ops"));
    f.press("恢复服务");
    f.wait("back in service", |s| {
        matches!(s, Screen::Operator(op)
            if op.message == Some(OperatorMessage::BackInService) && op.taken_out.is_none())
    });
    assert!(f.shows("已恢复服务"));
    f.press("退出");
    f.wait("the attract screen", |s| *s == Screen::Attract);
    let kinds = f.journal().entries(1, 1000).unwrap();
    let back = kinds
        .iter()
        .rev()
        .find(|e| e.kind == "back-in-service")
        .unwrap();
    assert_eq!(back.body["by"], "the operator at the kiosk");
}

#[test]
fn a_card_left_in_when_the_kiosk_starts_is_asked_out_first() {
    let mut f = Flow::start_with(quick(), |_, demo| {
        demo.insert_meter_card(0).unwrap();
        let readers = Readers::establish().unwrap();
        assert!(
            readers
                .wait(METER_READER, true, Some(Duration::from_secs(10)))
                .unwrap()
        );
    });
    f.wait("the card asked out", |s| *s == Screen::TakeCard);
    assert!(f.shows("请取出读卡器中的电卡"));
    f.take_card_out();
    f.press(ZHANG_SAN);
    f.wait("the account", |s| matches!(s, Screen::Account(_)));
    f.press("取消");
    f.result();
    f.take_card_out();
}

#[test]
fn a_customer_in_arrears_pays_them_and_buys_in_one_visit() {
    let mut f = Flow::start(quick());
    f.press("Insert 李四 · arrears");
    f.wait("the account", |s| matches!(s, Screen::Account(_)));
    assert!(f.shows("12.50 元"));
    // Buying first is refused with the backend's words; paying the arrears is offered.
    f.press("50.00 元");
    f.wait(
        "the refusal",
        |s| matches!(s, Screen::Account(a) if a.refusal.is_some()),
    );
    assert!(f.shows("您有欠费12.50元，请先缴清"));
    f.press("缴纳欠费");
    f.wait("the bills", |s| matches!(s, Screen::Bills(_)));
    assert!(f.shows("2026-09  7.00 元"));
    assert!(f.shows("2026-10  5.00 元 + 滞纳金 0.50 元"));
    assert!(f.shows("合计应缴：12.50 元"));
    // No change is given: 13.00 goes in, 0.50 is kept as the account's credit.
    assert!(f.shows("现金应投：13.00 元 (0.50 元 预存)"));
    f.press("现金支付");
    f.wait("the banknote screen", |s| {
        matches!(s, Screen::Paying { due: Fen(1300), .. })
    });
    for note in ["¥10", "¥1", "¥1", "¥1"] {
        f.press(note);
    }
    f.wait("the bill paid", |s| {
        matches!(
            s,
            Screen::BillResult(BillResultView::Paid {
                paid: Fen(1300),
                remaining: Fen(0)
            })
        )
    });
    assert!(f.shows("尚欠：0.00 元"));
    let receipt = f.demo().last_receipt();
    assert_printed(&receipt, "自助缴费凭证");
    assert_printed(&receipt, "缴费成功");
    assert_printed(&receipt, "实收金额：13.00元");
    assert_printed(&receipt, "尚欠金额：0.00元");
    // Back at the account, arrears gone: the same visit buys.
    f.press("继续");
    f.wait(
        "the account without arrears",
        |s| matches!(s, Screen::Account(a) if a.arrears == Fen(0) && a.refusal.is_none()),
    );
    f.press("50.00 元");
    f.wait("the payment choice", |s| matches!(s, Screen::Method { .. }));
    f.press("现金支付");
    f.wait("the banknote screen", |s| {
        matches!(s, Screen::Paying { due: Fen(5000), .. })
    });
    f.press("¥50");
    let result = f.result();
    assert!(
        matches!(
            result,
            ResultView::Credited {
                paid: Fen(5000),
                ..
            }
        ),
        "{result:?}"
    );
    assert_eq!(f.sale_states(), [(2, "written".to_string(), 5000)]);
    let bills = f
        .journal()
        .bill_payments(selfvend_host::journal::BILL_STATES)
        .unwrap();
    assert_eq!(
        bills
            .iter()
            .map(|b| (b.serial, b.state.as_str(), b.paid_fen))
            .collect::<Vec<_>>(),
        [(1, "paid", 1300)]
    );
    f.take_card_out();
}

#[test]
fn a_postpaid_customer_types_the_account_number_and_pays_the_bills_in_cash() {
    let mut f = Flow::start(quick());
    f.press("缴费（输入户号）");
    f.wait("the account number", |s| {
        matches!(s, Screen::AccountEntry { .. })
    });
    // A number the backend does not know is refused in its words, and can be typed again.
    for digit in "370199".chars() {
        f.press(&digit.to_string());
    }
    f.press("确认");
    f.wait("the refusal", |s| {
        matches!(s, Screen::AccountEntry { refusal: Some(_) })
    });
    assert!(f.shows("户号370199不存在"));
    f.press("清除");
    for digit in "3701200005".chars() {
        f.press(&digit.to_string());
    }
    f.press("确认");
    f.wait("the bills", |s| matches!(s, Screen::Bills(_)));
    assert!(f.shows("户名 孙七  户号 3701200005"));
    assert!(f.shows("合计应缴：181.00 元"));
    f.press("现金支付");
    f.wait("the banknote screen", |s| {
        matches!(
            s,
            Screen::Paying {
                due: Fen(18_100),
                ..
            }
        )
    });
    for note in ["¥100", "¥50", "¥20", "¥10", "¥1"] {
        f.press(note);
    }
    f.wait("the bill paid", |s| {
        matches!(
            s,
            Screen::BillResult(BillResultView::Paid {
                paid: Fen(18_100),
                remaining: Fen(0)
            })
        )
    });
    let receipt = f.demo().last_receipt();
    assert_printed(&receipt, "户号：3701200005");
    assert_printed(&receipt, "实收金额：181.00元");
    assert_printed(&receipt, "缴费成功");
    f.press("继续");
    f.wait("the attract screen", |s| *s == Screen::Attract);
    let bills = f
        .journal()
        .bill_payments(selfvend_host::journal::BILL_STATES)
        .unwrap();
    assert_eq!(
        bills
            .iter()
            .map(|b| (b.customer_number.as_str(), b.state.as_str(), b.paid_fen))
            .collect::<Vec<_>>(),
        [("3701200005", "paid", 18_100)]
    );
}

#[test]
fn a_postpaid_customer_pays_the_bills_by_bank_card_after_a_wrong_pin() {
    let mut f = Flow::start(quick());
    f.press("缴费（输入户号）");
    f.wait("the account number", |s| {
        matches!(s, Screen::AccountEntry { .. })
    });
    for digit in "3701200005".chars() {
        f.press(&digit.to_string());
    }
    f.press("确认");
    f.wait(
        "the bills, bank cards offered",
        |s| matches!(s, Screen::Bills(b) if b.bank),
    );
    assert!(f.shows("合计应缴：181.00 元"));
    // A declined card takes nothing and the bills are offered again, with the bank's words.
    for pin in ["Wrong PIN + Enter", "PIN 135790 + Enter"] {
        f.press("银行卡支付");
        f.wait("the bank card prompt", |s| {
            matches!(s, Screen::BankCard { due: Fen(18_100) })
        });
        f.press("Insert bank card");
        f.wait("the PIN prompt", |s| {
            matches!(s, Screen::Pin { digits: 0, .. })
        });
        f.press(pin);
        f.wait("the bank card asked back", |s| *s == Screen::TakeBankCard);
        f.press("Pull bank card");
        if pin.starts_with("Wrong") {
            f.wait(
                "the bills with the decline",
                |s| matches!(s, Screen::Bills(b) if b.notice.is_some()),
            );
            assert_eq!(f.demo().acquirer.balance(DEMO_PAN), Some(100_000));
        }
    }
    // A card pays exactly what is owed: nothing is kept as credit.
    f.wait("the bill paid", |s| {
        matches!(
            s,
            Screen::BillResult(BillResultView::Paid {
                paid: Fen(18_100),
                remaining: Fen(0)
            })
        )
    });
    let receipt = f.demo().last_receipt();
    assert_printed(&receipt, "户号：3701200005");
    assert_printed(&receipt, "实收金额：181.00元");
    assert_printed(&receipt, "缴费成功");
    assert!(
        receipt
            .iter()
            .any(|l| l.starts_with("银行卡支付：622202") && l.ends_with("0128")),
        "{receipt:?}"
    );
    assert!(
        receipt.iter().any(|l| l.starts_with("参考号：")),
        "{receipt:?}"
    );
    f.press("继续");
    f.wait("the attract screen", |s| *s == Screen::Attract);
    assert_eq!(f.demo().acquirer.balance(DEMO_PAN), Some(100_000 - 18_100));
    let journal = f.journal();
    let bills = journal
        .bill_payments(selfvend_host::journal::BILL_STATES)
        .unwrap();
    assert_eq!(
        bills
            .iter()
            .map(|b| (b.payment.as_str(), b.state.as_str(), b.paid_fen))
            .collect::<Vec<_>>(),
        [("bank-card", "paid", 18_100)]
    );
    let debits = journal.debits(&["approved"]).unwrap();
    assert_eq!(
        debits
            .iter()
            .map(|d| (d.amount_fen, d.serial, d.bill_serial))
            .collect::<Vec<_>>(),
        [(18_100, None, Some(bills[0].serial))]
    );
}
