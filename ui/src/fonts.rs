//! The kiosk's fonts: egui's own for Latin text, and a Chinese font loaded explicitly (egui
//! ships none, and a missing glyph would draw as a box on a customer's screen).

use std::path::Path;
use std::sync::Arc;

use eframe::egui::{self, FontData, FontDefinitions, FontFamily};

/// WenQuanYi Micro Hei, from Debian's `fonts-wqy-microhei`.
pub const CJK_FONT: &str = "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc";

#[derive(Debug, thiserror::Error)]
#[error("the kiosk's Chinese font {path} cannot be read ({cause}); install fonts-wqy-microhei")]
pub struct FontError {
    path: String,
    cause: std::io::Error,
}

/// egui's fonts with the Chinese font behind each family.
pub fn definitions(cjk: &Path) -> Result<FontDefinitions, FontError> {
    let bytes = std::fs::read(cjk).map_err(|cause| FontError {
        path: cjk.display().to_string(),
        cause,
    })?;
    let mut fonts = FontDefinitions::default();
    fonts
        .font_data
        .insert("cjk".into(), Arc::new(FontData::from_owned(bytes)));
    for family in [FontFamily::Proportional, FontFamily::Monospace] {
        fonts.families.entry(family).or_default().push("cjk".into());
    }
    Ok(fonts)
}

/// Installs the fonts and the kiosk's text sizes: large, for reading at arm's length.
pub fn install(ctx: &egui::Context, cjk: &Path) -> Result<(), FontError> {
    ctx.set_fonts(definitions(cjk)?);
    ctx.all_styles_mut(|style| {
        use egui::{FontId, TextStyle};
        style.text_styles = [
            (TextStyle::Heading, FontId::proportional(48.0)),
            (TextStyle::Body, FontId::proportional(28.0)),
            (TextStyle::Button, FontId::proportional(32.0)),
            (TextStyle::Small, FontId::proportional(20.0)),
            (TextStyle::Monospace, FontId::monospace(28.0)),
        ]
        .into();
        style.spacing.button_padding = egui::vec2(24.0, 16.0);
        style.spacing.item_spacing = egui::vec2(16.0, 16.0);
    });
    Ok(())
}
