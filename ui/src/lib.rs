//! The kiosk's window and how it is assembled from its config, for the `selfvend` binary and
//! for the tests that drive it.

pub mod app;
pub mod demo;
pub mod fonts;
pub mod kiosk;
pub mod lang;
pub mod operator;
pub mod operator_text;
pub mod screens;

use std::path::Path;

use eframe::egui;

/// The kiosk's look on `ctx`: its fonts and text sizes, on a light theme for a bright lobby.
pub fn setup(ctx: &egui::Context, cjk_font: &Path) -> Result<(), fonts::FontError> {
    fonts::install(ctx, cjk_font)?;
    ctx.set_visuals(egui::Visuals::light());
    Ok(())
}

/// Runs `add` in a central panel over the whole window, whatever margin `ui` was given (a test
/// harness gives one), so a screen is laid out exactly as the kiosk's window lays it out.
pub fn whole_window_ui<R>(ui: &mut egui::Ui, add: impl FnOnce(&mut egui::Ui) -> R) -> R {
    let all = ui.ctx().content_rect();
    ui.scope_builder(egui::UiBuilder::new().max_rect(all), |ui| {
        ui.set_clip_rect(all);
        egui::CentralPanel::default().show(ui, add).inner
    })
    .inner
}
