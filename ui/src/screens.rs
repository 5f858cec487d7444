//! The kiosk's screens, drawn from the controller's [`View`]: plain data filled in from the
//! engine. A screen decides nothing; it shows what it is given and reports what was pressed as
//! an [`Action`]. Touch only: large targets, numbers on a keypad.

use eframe::egui::{self, Align, Button, Color32, Layout, RichText, Ui, vec2};
use selfvend_host::backend::Purchase;
use selfvend_host::kiosk::Command;
pub use selfvend_host::kiosk::{
    AccountStatus, AccountView, BillResultView, BillsView, OperatorView, PriceView, ResultView,
    Screen, View,
};
use selfvend_host::money::{Fen, Wh};
pub use selfvend_host::sale::Step;

use crate::lang::{Lang, Words};

/// What was pressed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    SwitchLanguage,
    /// For the kiosk's controller.
    Send(Command),
}

/// Amounts offered as one touch, in fen.
const PRESETS: [Fen; 4] = [Fen(1000), Fen(2000), Fen(5000), Fen(10000)];
const BIG: egui::Vec2 = egui::Vec2::new(220.0, 96.0);

/// The amount keypad's own state: the yuan typed so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Keypad {
    pub digits: String,
    /// The customer buys kilowatt-hours rather than an amount of money.
    pub by_energy: bool,
    /// The operator's reason for settling an item, one of [`Words::reasons`].
    pub reason: Option<usize>,
}

/// Draws `view` in `lang`; returns what was pressed, if anything.
pub fn screen_ui(ui: &mut Ui, lang: Lang, view: &View, keypad: &mut Keypad) -> Option<Action> {
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
            if let Some(secs) = view.countdown {
                ui.label(
                    RichText::new(format!("{}{}{secs} {}", w.time_left, w.sep, w.seconds))
                        .size(32.0)
                        .color(Color32::DARK_RED),
                );
            }
        });
    });
    ui.separator();
    let send = |c: Command| Some(Action::Send(c));
    let pressed = match &view.screen {
        Screen::Starting => {
            centred(ui, |ui| {
                ui.label(RichText::new(w.starting).size(56.0).strong());
            });
            None
        }
        Screen::TakeBankCard => {
            centred(ui, |ui| {
                ui.label(RichText::new(w.take_bank_card).size(64.0).strong());
            });
            None
        }
        Screen::TakeCard => {
            centred(ui, |ui| {
                ui.label(RichText::new(w.take_card_out).size(64.0).strong());
            });
            service_ui(ui, w).and_then(send)
        }
        Screen::Attract => {
            let bills = centred(ui, |ui| {
                ui.label(RichText::new(w.insert_card).size(72.0).strong());
                ui.label(w.insert_card_hint);
                ui.add_space(24.0);
                ui.add(Button::new(w.pay_bills).min_size(BIG))
                    .clicked()
                    .then_some(Command::PayBills)
            });
            bills.or_else(|| service_ui(ui, w)).and_then(send)
        }
        Screen::AccountEntry { refusal } => centred(ui, |ui| {
            ui.label(RichText::new(w.enter_account).size(56.0).strong());
            if let Some(refusal) = refusal {
                ui.label(RichText::new(refusal).size(32.0).color(Color32::DARK_RED));
            }
            ui.label(
                RichText::new(format!("{}{}{}", w.customer_number, w.sep, keypad.digits))
                    .size(48.0),
            );
            let confirmed = keypad_ui(ui, w, keypad, 20, w.confirm, |d| !d.is_empty());
            let back = ui.add(Button::new(w.back).min_size(BIG)).clicked();
            if confirmed {
                Some(Command::BillAccount(std::mem::take(&mut keypad.digits)))
            } else {
                back.then_some(Command::Cancel)
            }
        })
        .and_then(send),
        Screen::OutOfService { why } => {
            centred(ui, |ui| {
                ui.label(RichText::new(w.out_of_service).size(72.0).strong());
                ui.label(RichText::new(why).color(Color32::GRAY));
            });
            service_ui(ui, w).and_then(send)
        }
        Screen::Reading => {
            centred(ui, |ui| {
                ui.label(RichText::new(w.reading_card).size(64.0).strong());
                ui.label(w.keep_card_in);
            });
            None
        }
        Screen::Account(account) => account_ui(ui, w, account, keypad),
        Screen::Method {
            due,
            price,
            bank,
            notice,
        } => centred(ui, |ui| {
            ui.label(RichText::new(w.choose_method).size(56.0).strong());
            ui.label(RichText::new(format!("{}{}{}", w.due, w.sep, w.money(*due))).size(40.0));
            price_ui(ui, w, *due, price);
            if let Some(notice) = notice {
                ui.label(
                    RichText::new(w.card_notice(notice))
                        .size(32.0)
                        .color(Color32::DARK_RED),
                );
            }
            ui.add_space(24.0);
            let mut chosen = None;
            if ui.add(Button::new(w.pay_cash).min_size(BIG)).clicked() {
                chosen = Some(Command::PayCash);
            }
            if *bank && ui.add(Button::new(w.pay_card).min_size(BIG)).clicked() {
                chosen = Some(Command::PayCard);
            }
            if ui.add(Button::new(w.cancel).min_size(BIG)).clicked() {
                chosen = Some(Command::Cancel);
            }
            chosen
        })
        .and_then(send),
        Screen::Paying { due, price, paid } => centred(ui, |ui| {
            ui.label(RichText::new(w.insert_banknotes).size(56.0).strong());
            ui.label(RichText::new(format!("{}{}{}", w.due, w.sep, w.money(*due))).size(40.0));
            price_ui(ui, w, *due, price);
            ui.label(
                RichText::new(format!("{}{}{}", w.paid, w.sep, w.money(*paid)))
                    .size(56.0)
                    .color(Color32::DARK_GREEN),
            );
            ui.label(format!(
                "{}{}{}",
                w.still_due,
                w.sep,
                w.money(Fen(due.0.saturating_sub(paid.0)))
            ));
            ui.label(w.accepted_notes);
            ui.label(w.no_change);
            ui.add_space(24.0);
            // With money in, the way out is to buy with it: the kiosk never cancels it.
            if *paid == Fen(0) {
                ui.add(Button::new(w.cancel).min_size(BIG))
                    .clicked()
                    .then_some(Command::Cancel)
            } else {
                ui.add(Button::new(w.buy_with_paid).min_size(vec2(360.0, 96.0)))
                    .clicked()
                    .then_some(Command::BuyWithPaid)
            }
        })
        .and_then(send),
        Screen::BankCard { due } => centred(ui, |ui| {
            ui.label(RichText::new(w.insert_bank_card).size(64.0).strong());
            ui.label(RichText::new(format!("{}{}{}", w.due, w.sep, w.money(*due))).size(40.0));
            ui.add_space(24.0);
            ui.add(Button::new(w.cancel).min_size(BIG))
                .clicked()
                .then_some(Command::Cancel)
        })
        .and_then(send),
        Screen::Pin { due, digits } => {
            centred(ui, |ui| {
                ui.label(RichText::new(w.enter_pin).size(56.0).strong());
                ui.label(RichText::new(format!("{}{}{}", w.due, w.sep, w.money(*due))).size(40.0));
                let stars = "*".repeat(usize::from(*digits));
                ui.label(RichText::new(format!("[ {stars} ]")).size(56.0));
                ui.label(w.pin_hint);
            });
            None
        }
        Screen::Debiting { due } => {
            centred(ui, |ui| {
                ui.label(RichText::new(w.debiting).size(56.0).strong());
                ui.label(RichText::new(format!("{}{}{}", w.due, w.sep, w.money(*due))).size(40.0));
            });
            None
        }
        Screen::Processing(step) => {
            centred(ui, |ui| {
                ui.label(RichText::new(w.processing).size(56.0).strong());
                ui.label(steps(w, *step));
            });
            None
        }
        Screen::Result(result) => {
            centred(ui, |ui| result_ui(ui, w, result));
            None
        }
        Screen::Bills(bills) => centred(ui, |ui| bills_ui(ui, w, bills)).and_then(send),
        Screen::BillResult(result) => {
            centred(ui, |ui| bill_result_ui(ui, w, result)).and_then(send)
        }
        Screen::OperatorPin { refused } => centred(ui, |ui| {
            ui.label(RichText::new(w.operator_pin).size(48.0).strong());
            if let Some(refused) = refused {
                ui.label(RichText::new(refused).color(Color32::DARK_RED));
            }
            ui.label(RichText::new("*".repeat(keypad.digits.len())).size(48.0));
            let confirmed = keypad_ui(ui, w, keypad, 12, w.sign_in, |d| {
                (4..=12).contains(&d.len())
            });
            let cancelled = ui.add(Button::new(w.cancel).min_size(BIG)).clicked();
            if confirmed {
                Some(Command::OperatorPin(std::mem::take(&mut keypad.digits)))
            } else {
                cancelled.then_some(Command::Cancel)
            }
        })
        .and_then(send),
        Screen::Operator(op) => crate::operator::operator_ui(ui, w, op, keypad).and_then(send),
    };
    action.or(pressed)
}

/// The operator's way in, small and out of the customer's way.
fn service_ui(ui: &mut Ui, w: &Words) -> Option<Command> {
    ui.with_layout(Layout::bottom_up(Align::Max), |ui| {
        ui.button(w.service).clicked().then_some(Command::Operator)
    })
    .inner
}

/// One line, the step under way in blue: 售电 → 写卡 → 打印.
fn steps(w: &Words, step: Step) -> egui::text::LayoutJob {
    let mut job = egui::text::LayoutJob::default();
    let names = [
        (Step::Sell, w.step_sell),
        (Step::Write, w.step_write),
        (Step::Print, w.step_print),
    ];
    for (i, (s, name)) in names.into_iter().enumerate() {
        let format = |color| egui::TextFormat {
            font_id: egui::FontId::proportional(40.0),
            color,
            ..Default::default()
        };
        if i > 0 {
            job.append("  →  ", 0.0, format(Color32::GRAY));
        }
        let color = if s == step {
            Color32::DARK_BLUE
        } else {
            Color32::GRAY
        };
        job.append(name, 0.0, format(color));
    }
    job
}

fn result_ui(ui: &mut Ui, w: &Words, result: &ResultView) {
    let headline = |ui: &mut Ui, text: &str| ui.label(RichText::new(text).size(64.0).strong());
    let paid = |ui: &mut Ui, fen: &Fen| ui.label(format!("{}{}{}", w.paid, w.sep, w.money(*fen)));
    match result {
        ResultView::Credited {
            paid: fen,
            energy_wh,
        } => {
            headline(ui, w.credited);
            paid(ui, fen);
            ui.label(format!("{}{}{} kWh", w.energy, w.sep, kwh(*energy_wh)));
        }
        ResultView::NotWritten {
            paid: fen,
            energy_wh,
        } => {
            headline(ui, w.not_written);
            paid(ui, fen);
            ui.label(format!("{}{}{} kWh", w.energy, w.sep, kwh(*energy_wh)));
            ui.label(w.not_written_detail);
        }
        ResultView::Pending { paid: fen } => {
            headline(ui, w.pending);
            paid(ui, fen);
            ui.label(w.pending_detail);
        }
        ResultView::RefundOwed { paid: fen, reason } => {
            headline(ui, w.refund_owed);
            paid(ui, fen);
            ui.label(reason);
            ui.label(w.refund_detail);
        }
        ResultView::Refused { reason } => {
            headline(ui, w.refused);
            ui.label(reason);
        }
        ResultView::Fault { paid: fen, card } => {
            headline(ui, w.fault);
            paid(ui, fen);
            ui.label(format!("{}{}{card}", w.fault_detail, w.sep));
        }
        ResultView::Cancelled { caught } => {
            headline(ui, w.cancelled);
            if *caught > Fen(0) {
                ui.label(RichText::new(w.money(*caught)).size(40.0));
                ui.label(RichText::new(w.caught).color(Color32::DARK_RED));
            }
            ui.label(RichText::new(w.take_card).size(40.0));
            return;
        }
    }
    ui.label(RichText::new(w.take_card_and_receipt).size(40.0));
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
            action = Some(Action::Send(Command::Cancel));
        }
        let closed = match view.status {
            AccountStatus::Active => None,
            AccountStatus::Closed => Some(w.account_closed),
            AccountStatus::Suspended => Some(w.account_suspended),
        };
        if let Some(why) = closed {
            right.label(RichText::new(why).size(40.0).color(Color32::DARK_RED));
            return;
        }
        if let Some(refusal) = &view.refusal {
            right.label(RichText::new(refusal).size(32.0).color(Color32::DARK_RED));
        }
        // Arrears are settled here, in the same visit, before buying.
        if view.arrears > Fen(0)
            && right
                .add(Button::new(w.pay_arrears).min_size(PRESET))
                .clicked()
        {
            action = Some(Action::Send(Command::PayBills));
        }
        if let Some(purchase) = amount_ui(right, w, view, keypad) {
            action = Some(Action::Send(Command::Buy(purchase)));
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
    if view.rewritten.is_some() {
        ui.label(RichText::new(w.rewritten).color(Color32::DARK_GREEN));
    }
}

/// A preset's button: smaller than [`BIG`], so presets and keypad fit beside the account.
const PRESET: egui::Vec2 = egui::Vec2::new(200.0, 72.0);

/// Energy offered as one touch, in kWh.
const ENERGY_PRESETS: [u64; 4] = [50, 100, 200, 500];

/// Presets and the keypad, in money or in kWh at the account's price; only purchases whose
/// price is within the limits can be confirmed.
fn amount_ui(ui: &mut Ui, w: &Words, view: &AccountView, keypad: &mut Keypad) -> Option<Purchase> {
    let mut chosen = None;
    let price = u64::from(view.price_fen_per_kwh.max(1));
    // What the backend's price makes of each: the engine prices it again when it quotes.
    let cost = |p: Purchase| match p {
        Purchase::Money(fen) => fen,
        Purchase::Energy(wh) => Fen((wh.0 * price).div_ceil(1000)),
    };
    let energy = |p: Purchase| match p {
        Purchase::Money(fen) => Wh(fen.0 * 1000 / price),
        Purchase::Energy(wh) => wh,
    };
    let allowed = |p: Purchase| (view.min..=view.max).contains(&cost(p));
    ui.horizontal(|ui| {
        ui.label(RichText::new(w.choose_amount).size(36.0));
        let other = if keypad.by_energy {
            w.by_money
        } else {
            w.by_energy
        };
        if ui.button(other).clicked() {
            keypad.by_energy = !keypad.by_energy;
            keypad.digits.clear();
        }
    });
    let presets: Vec<Purchase> = if keypad.by_energy {
        ENERGY_PRESETS
            .iter()
            .map(|k| Purchase::Energy(Wh(k * 1000)))
            .collect()
    } else {
        PRESETS.iter().map(|f| Purchase::Money(*f)).collect()
    };
    egui::Grid::new("presets").show(ui, |ui| {
        for (i, preset) in presets.into_iter().filter(|p| allowed(*p)).enumerate() {
            let label = match preset {
                Purchase::Money(fen) => w.money(fen),
                Purchase::Energy(wh) => format!("{} kWh", wh.0 / 1000),
            };
            let hint = match preset {
                Purchase::Money(_) => format!("≈ {}", energy(preset)),
                Purchase::Energy(_) => w.money(cost(preset)),
            };
            ui.vertical(|ui| {
                if ui.add(Button::new(label).min_size(PRESET)).clicked() {
                    chosen = Some(preset);
                }
                ui.label(RichText::new(hint).small().color(Color32::GRAY));
            });
            if i % 2 == 1 {
                ui.end_row();
            }
        }
    });
    let by_energy = keypad.by_energy;
    let typed = |digits: &str| {
        let n = digits.parse::<u64>().ok()?;
        let p = if by_energy {
            Purchase::Energy(Wh(n * 1000))
        } else {
            Purchase::Money(Fen(n * 100))
        };
        allowed(p).then_some(p)
    };
    let unit = if keypad.by_energy { "kWh" } else { w.yuan };
    let summary = match typed(&keypad.digits) {
        Some(p) if keypad.by_energy => format!(" = {}", w.money(cost(p))),
        Some(p) => format!(" ≈ {}", energy(p)),
        None => String::new(),
    };
    ui.label(format!(
        "{}{}{} {unit}{summary}",
        w.other_amount, w.sep, keypad.digits
    ));
    if keypad_ui(ui, w, keypad, 5, w.confirm, |d| typed(d).is_some()) {
        chosen = typed(&keypad.digits);
    }
    chosen
}

/// A numeric keypad of at most `max` digits; returns whether `confirm` was pressed (it is
/// enabled only when `acceptable` says so).
pub fn keypad_ui(
    ui: &mut Ui,
    w: &Words,
    keypad: &mut Keypad,
    max: usize,
    confirm: &str,
    acceptable: impl Fn(&str) -> bool,
) -> bool {
    const KEY: egui::Vec2 = egui::Vec2::new(120.0, 56.0);
    let mut confirmed = false;
    egui::Grid::new(("keypad", confirm)).show(ui, |ui| {
        for row in [["1", "2", "3"], ["4", "5", "6"], ["7", "8", "9"]] {
            for key in row {
                if ui.add(Button::new(key).min_size(KEY)).clicked() && keypad.digits.len() < max {
                    keypad.digits.push_str(key);
                }
            }
            ui.end_row();
        }
        if ui.add(Button::new(w.clear).min_size(KEY)).clicked() {
            keypad.digits.clear();
        }
        if ui.add(Button::new("0").min_size(KEY)).clicked() && keypad.digits.len() < max {
            keypad.digits.push('0');
        }
        let ok = acceptable(&keypad.digits);
        confirmed = ui
            .add_enabled(ok, Button::new(confirm).min_size(KEY))
            .clicked();
        ui.end_row();
    });
    confirmed
}

fn centred<R>(ui: &mut Ui, add: impl FnOnce(&mut Ui) -> R) -> R {
    ui.add_space(96.0);
    ui.vertical_centered(add).inner
}

fn kwh(wh: u64) -> String {
    format!("{}.{:03}", wh / 1000, wh % 1000)
}

/// What the amount due buys, as quoted: the arrears it settles first, the energy, and a stepped
/// tariff's steps (backend text is never shown here: only numbers).
fn price_ui(ui: &mut Ui, w: &Words, due: Fen, price: &PriceView) {
    // A bill payment buys no energy: nothing to break down.
    if price.energy == Wh(0) && price.arrears == Fen(0) {
        return;
    }
    let energy = format!("{} kWh", kwh_text(price.energy));
    let line = if price.arrears.0 > 0 {
        format!(
            "{} = {} {} + {} {} → {energy}",
            w.money(due),
            w.arrears_part,
            w.money(price.arrears),
            w.electricity,
            w.money(Fen(due.0.saturating_sub(price.arrears.0))),
        )
    } else {
        format!("{} → {energy}", w.money(due))
    };
    ui.label(RichText::new(line).size(32.0));
    for step in &price.steps {
        ui.label(format!(
            "{} {} kWh × {}/kWh = {}",
            w.tariff_step,
            kwh_text(step.energy),
            w.money(Fen(u64::from(step.price_fen_per_kwh))),
            w.money(step.amount)
        ));
    }
}

/// `164754` Wh as `164.754`.
fn kwh_text(wh: Wh) -> String {
    format!("{}.{:03}", wh.0 / 1000, wh.0 % 1000)
}

/// An account's open bills, and what paying them takes: in banknotes, rounded up to the yuan
/// (no change is given: the rest is the account's credit); by bank card, exactly.
fn bills_ui(ui: &mut Ui, w: &Words, bills: &BillsView) -> Option<Command> {
    ui.label(RichText::new(w.bills_title).size(56.0).strong());
    ui.label(format!(
        "{} {}  {} {}",
        w.customer_name, bills.customer_name, w.customer_number, bills.customer_number
    ));
    for (period, amount, late_fee) in &bills.bills {
        let late = if *late_fee > Fen(0) {
            format!(" + {} {}", w.late_fee, w.money(*late_fee))
        } else {
            String::new()
        };
        ui.label(RichText::new(format!("{period}  {}{late}", w.money(*amount))).size(32.0));
    }
    ui.label(
        RichText::new(format!(
            "{}{}{}",
            w.bills_total,
            w.sep,
            w.money(bills.total)
        ))
        .size(40.0)
        .strong(),
    );
    let due = selfvend_host::sale::cash_due(bills.total);
    if due > bills.total {
        ui.label(format!(
            "{}{}{} ({} {})",
            w.in_banknotes,
            w.sep,
            w.money(due),
            w.money(Fen(due.0 - bills.total.0)),
            w.prepaid
        ));
    }
    if let Some(notice) = &bills.notice {
        ui.label(
            RichText::new(w.card_notice(notice))
                .size(32.0)
                .color(Color32::DARK_RED),
        );
    }
    ui.add_space(24.0);
    let mut chosen = None;
    if ui.add(Button::new(w.pay_cash).min_size(BIG)).clicked() {
        chosen = Some(Command::PayCash);
    }
    if bills.bank && ui.add(Button::new(w.pay_card).min_size(BIG)).clicked() {
        chosen = Some(Command::PayCard);
    }
    if ui.add(Button::new(w.back).min_size(BIG)).clicked() {
        chosen = Some(Command::Cancel);
    }
    chosen
}

fn bill_result_ui(ui: &mut Ui, w: &Words, result: &BillResultView) -> Option<Command> {
    let headline = |ui: &mut Ui, text: &str| ui.label(RichText::new(text).size(64.0).strong());
    let paid = |ui: &mut Ui, fen: &Fen| ui.label(format!("{}{}{}", w.paid, w.sep, w.money(*fen)));
    match result {
        BillResultView::Paid {
            paid: fen,
            remaining,
        } => {
            headline(ui, w.bill_paid);
            paid(ui, fen);
            ui.label(format!("{}{}{}", w.still_owed, w.sep, w.money(*remaining)));
        }
        BillResultView::Pending { paid: fen } => {
            headline(ui, w.pending);
            paid(ui, fen);
            ui.label(w.bill_pending_detail);
        }
        BillResultView::RefundOwed { paid: fen, reason } => {
            headline(ui, w.refund_owed);
            paid(ui, fen);
            ui.label(reason);
            ui.label(w.refund_detail);
        }
        BillResultView::NotPaid { reason } => {
            headline(ui, w.bill_not_paid);
            ui.label(reason);
        }
    }
    ui.add_space(24.0);
    ui.add(Button::new(w.continue_buying).min_size(BIG))
        .clicked()
        .then_some(Command::Continue)
}
