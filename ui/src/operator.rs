//! The operator's screen, reached with the operator PIN: the devices and plugins as they answer
//! now, clearing, the items the kiosk could not finish, the journal, reprint and the bank.

use eframe::egui::{self, Button, Color32, RichText, ScrollArea, Ui, vec2};
use selfvend_host::kiosk::{Command, Operate, OperatorView};
use selfvend_host::money::Fen;
use selfvend_host::sale::Resolution;

use crate::lang::Words;
use crate::operator_text;
use crate::screens::{Keypad, keypad_ui};

const WIDE: egui::Vec2 = egui::Vec2::new(200.0, 56.0);

/// Draws the operator's screen; returns the command pressed, if any.
pub fn operator_ui(
    ui: &mut Ui,
    w: &Words,
    op: &OperatorView,
    keypad: &mut Keypad,
) -> Option<Command> {
    // Denser than the customer's screens: the operator stands close and reads more.
    let style = ui.style_mut();
    for size in style.text_styles.values_mut() {
        size.size = (size.size * 0.7).round();
    }
    style.spacing.item_spacing = vec2(10.0, 8.0);
    let mut pressed = None;
    let mut press = |c: Operate| pressed = Some(Command::Operate(c));
    if let Some(message) = &op.message {
        ui.label(
            RichText::new(operator_text::message(w.lang, message))
                .size(24.0)
                .color(Color32::DARK_BLUE),
        );
    }
    if let Some(by) = &op.taken_out {
        ui.horizontal(|ui| {
            ui.label(
                RichText::new(w.taken_out_by(by))
                    .size(24.0)
                    .color(Color32::DARK_RED),
            );
            if ui
                .add(Button::new(w.back_in_service).min_size(WIDE))
                .clicked()
            {
                press(Operate::BackInService);
            }
        });
    }
    ui.horizontal(|ui| {
        for (label, c) in [
            (w.reprint, Operate::Reprint),
            (w.sign_on, Operate::SignOn),
            (w.settle, Operate::Settle),
            (w.sign_out, Operate::SignOut),
        ] {
            if ui.add(Button::new(label).min_size(WIDE)).clicked() {
                press(c);
            }
        }
    });
    ui.separator();
    ui.columns(2, |columns| {
        let [left, right] = columns else {
            return;
        };
        ScrollArea::vertical().id_salt("left").show(left, |ui| {
            ui.heading(w.manual_items);
            if op.items.is_empty() {
                ui.label(w.nothing_open);
            }
            if !op.items.is_empty() {
                ui.label(w.choose_reason);
                ui.horizontal_wrapped(|ui| {
                    for (i, reason) in w.reasons.iter().enumerate() {
                        if ui
                            .selectable_label(keypad.reason == Some(i), *reason)
                            .clicked()
                        {
                            keypad.reason = Some(i);
                        }
                    }
                });
            }
            let reason = keypad.reason.map(|i| w.reasons[i]);
            for item in &op.items {
                ui.label(format!("#{} {}", item.id, item.reason));
                ui.horizontal(|ui| {
                    for resolution in &item.resolutions {
                        let label = match resolution {
                            Resolution::Refund => w.refund,
                            Resolution::Resell => w.resell,
                            Resolution::Dismiss => w.dismiss,
                        };
                        let button = Button::new(format!("{label} #{}", item.id));
                        if ui.add_enabled(reason.is_some(), button).clicked()
                            && let Some(reason) = reason
                        {
                            press(Operate::Resolve(item.id, *resolution, reason.to_string()));
                        }
                    }
                });
            }
            ui.heading(w.devices);
            egui::Grid::new("devices").striped(true).show(ui, |ui| {
                for d in &op.devices {
                    let color = if d.ok {
                        Color32::DARK_GREEN
                    } else {
                        Color32::DARK_RED
                    };
                    ui.label(
                        RichText::new(if d.ok { w.device_ok } else { w.device_fail }).color(color),
                    );
                    ui.label(operator_text::device(w.lang, &d.device));
                    ui.label(operator_text::device_state(w.lang, &d.state));
                    ui.end_row();
                }
            });
            ui.heading(w.plugins);
            egui::Grid::new("plugins").striped(true).show(ui, |ui| {
                for p in &op.plugins {
                    ui.label(&p.name);
                    ui.label(&p.kind);
                    ui.label(&p.version);
                    ui.label(&p.signer);
                    ui.end_row();
                }
            });
            ui.heading(w.journal);
            for line in &op.journal {
                ui.monospace(line);
            }
        });
        let ui = right;
        ui.heading(format!(
            "{} {}{}{} ({})",
            w.clearing,
            w.period,
            w.sep,
            op.period,
            operator_text::period_state(w.lang, &op.period_state)
        ));
        if op.period_state == "clearing" {
            ui.horizontal(|ui| {
                for (label, c) in [
                    (w.box_removed, Operate::CashBoxRemoved),
                    (w.box_replaced, Operate::CashBoxReplaced),
                    (w.end_clearing, Operate::EndClearing),
                ] {
                    if ui.add(Button::new(label).min_size(WIDE)).clicked() {
                        press(c);
                    }
                }
            });
            ui.label(format!(
                "{}{}{} {}",
                w.count_cash, w.sep, keypad.digits, w.yuan
            ));
            if keypad_ui(ui, w, keypad, 7, w.count_cash, |d| !d.is_empty()) {
                if let Ok(yuan) = keypad.digits.parse::<u64>() {
                    press(Operate::Count(Fen(yuan * 100)));
                }
                keypad.digits.clear();
            }
        } else if ui
            .add(Button::new(w.start_clearing).min_size(vec2(240.0, 56.0)))
            .clicked()
        {
            press(Operate::StartClearing);
        }
        ScrollArea::vertical().id_salt("report").show(ui, |ui| {
            for line in &op.report {
                ui.monospace(line);
            }
        });
    });
    pressed
}
