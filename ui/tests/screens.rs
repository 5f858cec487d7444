//! Every customer screen, in both languages, rendered headless at the kiosk's 1280x800 and
//! written to `docs/screens/` for people to look at; and the screens driven through their
//! AccessKit labels as a customer would.

use std::path::{Path, PathBuf};

use eframe::egui;
use egui_kittest::Harness;
use egui_kittest::kittest::Queryable;
use selfvend_host::backend::{Purchase, TariffStep};
use selfvend_host::kiosk::{
    BillResultView, BillsView, CardNotice, Command, Device, DeviceLine, DeviceState, ItemLine,
    OperatorMessage, OperatorView, PluginLine, View,
};
use selfvend_host::money::{Fen, Wh};
use selfvend_host::receipt_printer::{Paper, PrinterStatus};
use selfvend_host::sale::Resolution;
use selfvend_ui::fonts;
use selfvend_ui::lang::Lang;
use selfvend_ui::screens::{
    AccountStatus, AccountView, Action, Keypad, PriceView, ResultView, Screen, Step, screen_ui,
};

struct Shown {
    lang: Lang,
    screen: Screen,
    countdown: Option<u64>,
    keypad: Keypad,
    pressed: Vec<Action>,
}

fn harness(lang: Lang, screen: Screen) -> Harness<'static, Shown> {
    Harness::builder()
        .with_size(egui::vec2(1280.0, 800.0))
        .with_theme(egui::Theme::Light)
        .with_context_setup(|ctx| selfvend_ui::setup(ctx, Path::new(fonts::CJK_FONT)).unwrap())
        .wgpu()
        .build_ui_state(
            |ui, shown: &mut Shown| {
                // As the kiosk's window shows it: one panel over the whole screen.
                let pressed = selfvend_ui::whole_window_ui(ui, |ui| {
                    let view = View {
                        screen: shown.screen.clone(),
                        countdown: shown.countdown,
                        seq: 0,
                    };
                    screen_ui(ui, shown.lang, &view, &mut shown.keypad)
                });
                if let Some(action) = pressed {
                    if action == Action::SwitchLanguage {
                        shown.lang = shown.lang.other();
                    }
                    shown.pressed.push(action);
                }
            },
            Shown {
                lang,
                countdown: match screen {
                    Screen::Account(_) | Screen::Paying { .. } | Screen::Method { .. } => Some(42),
                    _ => None,
                },
                screen,
                keypad: Keypad::default(),
                pressed: Vec::new(),
            },
        )
}

fn zhang_san() -> AccountView {
    AccountView {
        customer_name: "张三".into(),
        customer_number: "C370100001".into(),
        meter_number: "M3701000001".into(),
        address: "济南市历下区泉城路1号".into(),
        status: AccountStatus::Active,
        last_purchase: Some("2026-11-01 50.00 元".into()),
        arrears: Fen(0),
        price_fen_per_kwh: 55,
        min: Fen(100),
        max: Fen(500_000),
        refusal: None,
        rewritten: None,
    }
}

fn operator() -> OperatorView {
    let device = |device, ok, state| DeviceLine { device, ok, state };
    let paper_out = PrinterStatus {
        offline: true,
        cover_open: false,
        paper: Paper::Out,
        fault: None,
    };
    OperatorView {
        devices: vec![
            device(
                Device::CardReader,
                true,
                DeviceState::Present("selfvend vpcd 00 00".into()),
            ),
            device(Device::BanknoteValidator, true, DeviceState::Inhibited),
            device(
                Device::ReceiptPrinter,
                false,
                DeviceState::Printer(paper_out),
            ),
            device(
                Device::Backend("jinan-power".into()),
                true,
                DeviceState::Answers,
            ),
        ],
        plugins: vec![PluginLine {
            name: "hengtai-sle4442".into(),
            kind: "card-codec".into(),
            version: "1.0.0".into(),
            signer: "DEVELOPMENT (11ef4ae3b12cd72e)".into(),
        }],
        period: 3,
        period_state: "clearing".into(),
        report: vec!["清机报表".into(), "现金售电 2 笔 70.00 元".into()],
        items: vec![ItemLine {
            id: 7,
            serial: None,
            reason: "纸币器故障，50.00 元纸币可能在机内且未入账（卡号 3701000000000001）".into(),
            caught: Some(Fen(5000)),
            resolutions: vec![Resolution::Refund, Resolution::Dismiss],
        }],
        journal: vec!["    42  2026-11-25T01:02:03.000Z  clearing-started".into()],
        message: Some(OperatorMessage::ClearingStarted(3)),
        taken_out: None,
    }
}

fn every_screen() -> Vec<(&'static str, Screen)> {
    vec![
        ("starting", Screen::Starting),
        ("attract", Screen::Attract),
        ("reading", Screen::Reading),
        ("account", Screen::Account(zhang_san())),
        (
            "account-refused",
            Screen::Account(AccountView {
                arrears: Fen(1250),
                refusal: Some("欠费 12.50 元，请先到营业厅缴费".into()),
                ..zhang_san()
            }),
        ),
        (
            "paying",
            Screen::Paying {
                due: Fen(5000),
                price: PriceView {
                    energy: Wh(89_285),
                    ..PriceView::default()
                },
                paid: Fen(2000),
            },
        ),
        (
            "paying-arrears",
            Screen::Paying {
                due: Fen(10_000),
                price: PriceView {
                    arrears: Fen(1_250),
                    energy: Wh(156_250),
                    steps: Vec::new(),
                },
                paid: Fen(0),
            },
        ),
        (
            "account-closed",
            Screen::Account(AccountView {
                status: AccountStatus::Closed,
                ..zhang_san()
            }),
        ),
        (
            "method",
            Screen::Method {
                due: Fen(10_000),
                price: PriceView {
                    arrears: Fen(0),
                    energy: Wh(164_754),
                    steps: vec![
                        TariffStep {
                            energy: Wh(10_000),
                            price_fen_per_kwh: 56,
                            amount: Fen(560),
                        },
                        TariffStep {
                            energy: Wh(154_754),
                            price_fen_per_kwh: 61,
                            amount: Fen(9_440),
                        },
                    ],
                },
                bank: true,
                notice: Some(CardNotice::Declined("密码错误".into())),
            },
        ),
        ("bank-card", Screen::BankCard { due: Fen(5000) }),
        (
            "pin",
            Screen::Pin {
                due: Fen(5000),
                digits: 4,
            },
        ),
        ("debiting", Screen::Debiting { due: Fen(5000) }),
        ("take-bank-card", Screen::TakeBankCard),
        ("take-card", Screen::TakeCard),
        ("processing", Screen::Processing(Step::Write)),
        (
            "credited",
            Screen::Result(ResultView::Credited {
                paid: Fen(5000),
                energy_wh: 90_909,
            }),
        ),
        (
            "pending",
            Screen::Result(ResultView::Pending { paid: Fen(5000) }),
        ),
        (
            "not-written",
            Screen::Result(ResultView::NotWritten {
                paid: Fen(5000),
                energy_wh: 90_909,
            }),
        ),
        (
            "refund-owed",
            Screen::Result(ResultView::RefundOwed {
                paid: Fen(5000),
                reason: "该户已销户".into(),
            }),
        ),
        (
            "refused",
            Screen::Result(ResultView::Refused {
                reason: "该户已销户，请到营业厅办理".into(),
            }),
        ),
        (
            "cancelled-caught",
            Screen::Result(ResultView::Cancelled { caught: Fen(5000) }),
        ),
        (
            "fault",
            Screen::Result(ResultView::Fault {
                paid: Fen(5000),
                card: "3701000000000001".into(),
            }),
        ),
        (
            "out-of-service",
            Screen::OutOfService {
                why: "reader `selfvend vpcd 00 00`: not connected".into(),
            },
        ),
        (
            "bills",
            Screen::Bills(BillsView {
                customer_name: "李四".into(),
                customer_number: "C370100002".into(),
                bills: vec![
                    ("2026-09".into(), Fen(700), Fen(0)),
                    ("2026-10".into(), Fen(500), Fen(50)),
                ],
                total: Fen(1250),
                bank: true,
                notice: None,
            }),
        ),
        (
            "bill-paid",
            Screen::BillResult(BillResultView::Paid {
                paid: Fen(1300),
                remaining: Fen(0),
            }),
        ),
        (
            "account-entry",
            Screen::AccountEntry {
                refusal: Some("户号99不存在".into()),
            },
        ),
        ("operator-pin", Screen::OperatorPin { refused: None }),
        ("operator", Screen::Operator(Box::new(operator()))),
    ]
}

/// Where the pictures for people go: `docs/screens/` at the project's root.
fn pictures() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/screens");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn every_screen_in_both_languages_is_written_for_people() {
    let dir = pictures();
    for (name, screen) in every_screen() {
        for lang in [Lang::Zh, Lang::En] {
            let mut h = harness(lang, screen.clone());
            h.run();
            let image = h.render().unwrap();
            assert_eq!((image.width(), image.height()), (1280, 800));
            image
                .save(dir.join(format!("{name}-{}.png", lang.code())))
                .unwrap();
        }
    }
}

#[test]
fn the_attract_screen_asks_for_the_card_and_switches_language() {
    let mut h = harness(Lang::Zh, Screen::Attract);
    h.get_by_label("请插入电卡");
    h.get_by_label("English").click();
    h.run();
    h.get_by_label("Please insert your meter card");
    assert_eq!(h.state().pressed, [Action::SwitchLanguage]);
    h.get_by_label("中文").click();
    h.run();
    h.get_by_label("请插入电卡");
}

#[test]
fn an_amount_is_chosen_by_a_preset_or_on_the_keypad_within_the_limits() {
    let mut h = harness(
        Lang::Zh,
        Screen::Account(AccountView {
            max: Fen(3000),
            ..zhang_san()
        }),
    );
    h.get_by_label("张三");
    // Presets above the account's maximum are not offered.
    assert!(h.query_by_label("100.00 元").is_none());
    h.get_by_label("20.00 元").click();
    h.run();
    assert_eq!(h.state().pressed, [buy(2000)]);
    // 35 yuan is over the maximum: confirm does nothing until the amount is allowed.
    h.get_by_label("3").click();
    h.run();
    h.get_by_label("5").click();
    h.run();
    h.get_by_label("确认").click();
    h.run();
    assert_eq!(h.state().pressed.len(), 1);
    h.get_by_label("清除").click();
    h.run();
    h.get_by_label("2").click();
    h.run();
    h.get_by_label("5").click();
    h.run();
    h.get_by_label("确认").click();
    h.run();
    assert_eq!(h.state().pressed, [buy(2000), buy(2500)]);
}

fn buy(fen: u64) -> Action {
    Action::Send(Command::Buy(Purchase::Money(Fen(fen))))
}

#[test]
fn a_refused_purchase_shows_the_backends_reason_beside_the_amounts() {
    let mut h = harness(
        Lang::Zh,
        Screen::Account(AccountView {
            refusal: Some("欠费 12.50 元，请先到营业厅缴费".into()),
            ..zhang_san()
        }),
    );
    h.get_by_label("欠费 12.50 元，请先到营业厅缴费");
    h.get_by_label("请选择购电金额");
    h.get_by_label("取消").click();
    h.run();
    assert_eq!(h.state().pressed, [Action::Send(Command::Cancel)]);
}

#[test]
fn the_amount_due_shows_what_it_buys_arrears_first_and_by_tariff_step() {
    let screens = every_screen();
    let find = |name: &str| screens.iter().find(|(n, _)| *n == name).unwrap().1.clone();
    let h = harness(Lang::Zh, find("paying-arrears"));
    h.get_by_label("100.00 元 = 欠费 12.50 元 + 电费 87.50 元 → 156.250 kWh");
    let h = harness(Lang::En, find("paying-arrears"));
    h.get_by_label("100.00 yuan = arrears 12.50 yuan + electricity 87.50 yuan → 156.250 kWh");
    let h = harness(Lang::Zh, find("method"));
    h.get_by_label("100.00 元 → 164.754 kWh");
    h.get_by_label("阶梯电价 10.000 kWh × 0.56 元/kWh = 5.60 元");
    h.get_by_label("阶梯电价 154.754 kWh × 0.61 元/kWh = 94.40 元");
    let h = harness(Lang::Zh, find("paying"));
    h.get_by_label("50.00 元 → 89.285 kWh");
}

#[test]
fn the_operator_screen_speaks_the_chosen_language_throughout() {
    let op = Screen::Operator(Box::new(operator()));
    let h = harness(Lang::Zh, op.clone());
    for label in [
        "账期 3 清机中，暂停售电",
        "电卡读卡器",
        "纸币识别器",
        "就绪（顾客之间禁止收币）",
        "凭条打印机",
        "缺纸",
        "售电后台 jinan-power",
        "应答正常",
        "故障",
    ] {
        h.get_by_label(label);
    }
    for english in ["card reader", "PaperOut", "paper out", "answers", "FAIL"] {
        assert!(h.query_by_label(english).is_none(), "{english}");
    }
    let h = harness(Lang::En, op);
    for label in [
        "period 3 is being cleared; sales are stopped",
        "card reader",
        "paper out",
        "backend jinan-power",
        "FAIL",
    ] {
        h.get_by_label(label);
    }
}

#[test]
fn the_bills_say_what_is_owed_and_what_goes_in_in_both_languages() {
    let screens = every_screen();
    let find = |name: &str| screens.iter().find(|(n, _)| *n == name).unwrap().1.clone();
    let mut h = harness(Lang::Zh, find("bills"));
    h.get_by_label("待缴账单");
    h.get_by_label("2026-10  5.00 元 + 滞纳金 0.50 元");
    h.get_by_label("合计应缴：12.50 元");
    h.get_by_label("现金应投：13.00 元 (0.50 元 预存)");
    h.get_by_label("现金支付").click();
    h.run();
    h.get_by_label("银行卡支付").click();
    h.run();
    assert_eq!(
        h.state().pressed,
        [
            Action::Send(Command::PayCash),
            Action::Send(Command::PayCard)
        ]
    );
    let h = harness(Lang::En, find("bills"));
    h.get_by_label("In banknotes: 13.00 yuan (0.50 yuan kept as credit)");
    h.get_by_label("Pay by bank card");
    h.get_by_label("Bills to pay");
    h.get_by_label("2026-10  5.00 yuan + late fee 0.50 yuan");
    let mut h = harness(Lang::Zh, find("bill-paid"));
    h.get_by_label("缴费成功");
    h.get_by_label("尚欠：0.00 元");
    h.get_by_label("继续").click();
    h.run();
    assert_eq!(h.state().pressed, [Action::Send(Command::Continue)]);
}
