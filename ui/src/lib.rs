//! The kiosk's window and how it is assembled from its config, for the `selfvend` binary and
//! for the tests that drive it.

pub mod app;
pub mod demo;
pub mod fonts;
pub mod kiosk;
pub mod lang;
pub mod operator;
pub mod screens;

use std::path::Path;

use eframe::egui;

/// The kiosk's look on `ctx`: its fonts and text sizes, on a light theme for a bright lobby.
pub fn setup(ctx: &egui::Context, cjk_font: &Path) -> Result<(), fonts::FontError> {
    fonts::install(ctx, cjk_font)?;
    ctx.set_visuals(egui::Visuals::light());
    Ok(())
}
