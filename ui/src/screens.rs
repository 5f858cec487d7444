//! The customer's screens, drawn from a [`Screen`]: plain data the kiosk's controller fills in
//! from the engine. A screen decides nothing; it shows what it is given and reports what the
//! customer pressed as an [`Action`]. Touch only: large targets, numbers on a keypad.

use eframe::egui::{self, Align, Button, Color32, Layout, RichText, Ui, vec2};
use selfvend_host::money::Fen;

use crate::lang::{Lang, Words};

/// What a customer screen shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Screen {
    /// Waiting for a meter card.
    Attract,
    /// A card went in and is being read.
    Reading,
    /// The account, and the amount to buy.
    Account(AccountView),
    /// Banknotes going in.
    Paying { due: Fen, paid: Fen },
    /// The sale under way: the step it is at.
    Processing(Step),
    /// How it ended.
    Result(ResultView),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountView {
    pub customer_name: String,
    pub customer_number: String,
    pub meter_number: String,
    pub address: String,
    /// As the backend words it (amount, energy, date).
    pub last_purchase: Option<String>,
    pub arrears: Fen,
    pub price_fen_per_kwh: u32,
    pub min: Fen,
    pub max: Fen,
    /// Why this account cannot buy now, in the backend's words.
    pub refusal: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Sell,
    Write,
    Print,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResultView {
    Credited {
        paid: Fen,
        energy_wh: u64,
    },
    /// Paid, and the sale is not finished: what happens to the money is on the receipt.
    Pending {
        paid: Fen,
    },
    Refused {
        reason: String,
    },
}

/// What the customer pressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    SwitchLanguage,
    Buy(Fen),
    Cancel,
}

/// Amounts offered as one touch, in fen.
const PRESETS: [Fen; 4] = [Fen(1000), Fen(2000), Fen(5000), Fen(10000)];
const BIG: egui::Vec2 = egui::Vec2::new(220.0, 96.0);

/// The amount keypad's own state: the yuan typed so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Keypad {
    pub digits: String,
}

/// Draws `screen` in `lang`; returns what the customer pressed, if anything.
pub fn screen_ui(ui: &mut Ui, lang: Lang, screen: &Screen, keypad: &mut Keypad) -> Option<Action> {
    let w = lang.words();
    let mut action = None;
    ui.horizontal(|ui| {
        ui.label(RichText::new(w.title).heading());
        ui.with_layout(Layout::right_to_left(Align::Center), |ui| {
            if ui
                .add(Button::new(w.switch).min_size(vec2(160.0, 64.0)))
                .clicked()
            {
                action = Some(Action::SwitchLanguage);
            }
        });
    });
    ui.separator();
    let pressed = match screen {
        Screen::Attract => {
            centred(ui, |ui| {
                ui.label(RichText::new(w.insert_card).size(72.0).strong());
                ui.label(w.insert_card_hint);
            });
            None
        }
        Screen::Reading => {
            centred(ui, |ui| {
                ui.label(RichText::new(w.reading_card).size(64.0).strong());
                ui.label(w.keep_card_in);
            });
            None
        }
        Screen::Account(view) => account_ui(ui, w, view, keypad),
        Screen::Paying { due, paid } => {
            centred(ui, |ui| {
                ui.label(RichText::new(w.insert_banknotes).size(56.0).strong());
                ui.label(RichText::new(format!("{}{}{}", w.due, w.sep, w.money(*due))).size(40.0));
                ui.label(
                    RichText::new(format!("{}{}{}", w.paid, w.sep, w.money(*paid)))
                        .size(56.0)
                        .color(Color32::DARK_GREEN),
                );
                ui.label(w.accepted_notes);
                ui.label(w.no_change);
            });
            None
        }
        Screen::Processing(step) => {
            centred(ui, |ui| {
                ui.label(RichText::new(w.processing).size(56.0).strong());
                // One line, the step under way in blue: 售电 → 写卡 → 打印.
                let mut steps = egui::text::LayoutJob::default();
                for (i, (s, name)) in [
                    (Step::Sell, w.step_sell),
                    (Step::Write, w.step_write),
                    (Step::Print, w.step_print),
                ]
                .into_iter()
                .enumerate()
                {
                    let format = |color| egui::TextFormat {
                        font_id: egui::FontId::proportional(40.0),
                        color,
                        ..Default::default()
                    };
                    if i > 0 {
                        steps.append("  →  ", 0.0, format(Color32::GRAY));
                    }
                    let color = if s == *step {
                        Color32::DARK_BLUE
                    } else {
                        Color32::GRAY
                    };
                    steps.append(name, 0.0, format(color));
                }
                ui.label(steps);
            });
            None
        }
        Screen::Result(result) => {
            centred(ui, |ui| match result {
                ResultView::Credited { paid, energy_wh } => {
                    ui.label(RichText::new(w.credited).size(64.0).strong());
                    ui.label(format!("{}{}{}", w.paid, w.sep, w.money(*paid)));
                    ui.label(format!("{}{}{} kWh", w.energy, w.sep, kwh(*energy_wh)));
                    ui.label(RichText::new(w.take_card_and_receipt).size(40.0));
                }
                ResultView::Pending { paid } => {
                    ui.label(RichText::new(w.pending).size(64.0).strong());
                    ui.label(format!("{}{}{}", w.paid, w.sep, w.money(*paid)));
                    ui.label(w.pending_detail);
                    ui.label(RichText::new(w.take_card_and_receipt).size(40.0));
                }
                ResultView::Refused { reason } => {
                    ui.label(RichText::new(w.refused).size(64.0).strong());
                    ui.label(reason);
                    ui.label(RichText::new(w.take_card_and_receipt).size(40.0));
                }
            });
            None
        }
    };
    action.or(pressed)
}

fn account_ui(ui: &mut Ui, w: &Words, view: &AccountView, keypad: &mut Keypad) -> Option<Action> {
    let mut action = None;
    ui.columns(2, |columns| {
        let [left, right] = columns else {
            return;
        };
        account_details_ui(left, w, view);
        left.add_space(24.0);
        if left.add(Button::new(w.cancel).min_size(BIG)).clicked() {
            action = Some(Action::Cancel);
        }
        if let Some(refusal) = &view.refusal {
            right.label(RichText::new(refusal).size(40.0).color(Color32::DARK_RED));
        } else if let Some(chosen) = amount_ui(right, w, view, keypad) {
            action = Some(chosen);
        }
    });
    action
}

fn account_details_ui(ui: &mut Ui, w: &Words, view: &AccountView) {
    egui::Grid::new("account").num_columns(2).show(ui, |ui| {
        let mut row = |name: &str, value: &str| {
            ui.label(name);
            ui.label(RichText::new(value).strong());
            ui.end_row();
        };
        row(w.customer_name, &view.customer_name);
        row(w.customer_number, &view.customer_number);
        row(w.meter_number, &view.meter_number);
        row(w.address, &view.address);
        if let Some(last) = &view.last_purchase {
            row(w.last_purchase, last);
        }
        if view.arrears > Fen(0) {
            row(w.arrears, &w.money(view.arrears));
        }
        row(
            w.price,
            &format!("{} {}/kWh", Fen(u64::from(view.price_fen_per_kwh)), w.yuan),
        );
    });
}

/// Presets and the keypad; only amounts within the account's limits can be confirmed.
fn amount_ui(ui: &mut Ui, w: &Words, view: &AccountView, keypad: &mut Keypad) -> Option<Action> {
    let mut action = None;
    ui.label(RichText::new(w.choose_amount).size(36.0));
    egui::Grid::new("presets").show(ui, |ui| {
        let offered = PRESETS
            .into_iter()
            .filter(|p| *p >= view.min && *p <= view.max);
        for (i, preset) in offered.enumerate() {
            if ui.add(Button::new(w.money(preset)).min_size(BIG)).clicked() {
                action = Some(Action::Buy(preset));
            }
            if i % 2 == 1 {
                ui.end_row();
            }
        }
    });
    ui.label(format!(
        "{}{}{} {}",
        w.other_amount, w.sep, keypad.digits, w.yuan
    ));
    const KEY: egui::Vec2 = egui::Vec2::new(120.0, 64.0);
    egui::Grid::new("keypad").show(ui, |ui| {
        for row in [["1", "2", "3"], ["4", "5", "6"], ["7", "8", "9"]] {
            for key in row {
                if ui.add(Button::new(key).min_size(KEY)).clicked() && keypad.digits.len() < 5 {
                    keypad.digits.push_str(key);
                }
            }
            ui.end_row();
        }
        if ui.add(Button::new(w.clear).min_size(KEY)).clicked() {
            keypad.digits.clear();
        }
        if ui.add(Button::new("0").min_size(KEY)).clicked()
            && !keypad.digits.is_empty()
            && keypad.digits.len() < 5
        {
            keypad.digits.push('0');
        }
        let typed = keypad.digits.parse::<u64>().ok().map(|y| Fen(y * 100));
        let valid = typed.filter(|f| *f >= view.min && *f <= view.max);
        if ui
            .add_enabled(valid.is_some(), Button::new(w.confirm).min_size(KEY))
            .clicked()
        {
            action = valid.map(Action::Buy);
        }
        ui.end_row();
    });
    action
}

fn centred(ui: &mut Ui, add: impl FnOnce(&mut Ui)) {
    ui.add_space(120.0);
    ui.vertical_centered(add);
}

fn kwh(wh: u64) -> String {
    format!("{}.{:03}", wh / 1000, wh % 1000)
}
