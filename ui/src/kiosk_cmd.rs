//! `selfvend kiosk`: the kiosk in its window. When the config names no hardware it runs in
//! demo mode, on the simulators, with a side panel to play the customer.

use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use eframe::egui;
use selfvend_host::config::KioskConfig;
use selfvend_host::kiosk::{Screen, Timeouts};
use selfvend_ui::app::KioskApp;
use selfvend_ui::demo::{self, Demo};
use selfvend_ui::fonts;

pub fn run(config: &Path, windowed: bool) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let mut config = KioskConfig::load(config)?;
    let demo = if selfvend_ui::kiosk::names_no_hardware(&config) {
        let port = std::env::var("SELFVEND_VPCD_PORT")
            .ok()
            .and_then(|p| p.parse().ok())
            .context(
                "the config names no hardware, so the kiosk runs in demo mode, which needs the \
                 rig's pcscd with its vpcd readers: start it with `./dev run`",
            )?;
        let demo = Demo::start(&mut config, port)?;
        eprintln!(
            "selfvend: demo mode: simulated devices; this run's journal is in {}",
            demo.dir.path().display()
        );
        Some(demo)
    } else {
        None
    };
    let width = 1280.0
        + if demo.is_some() {
            demo::PANEL_WIDTH
        } else {
            0.0
        };
    let viewport = egui::ViewportBuilder::default()
        .with_title("selfvend")
        .with_inner_size([width, 800.0])
        .with_position([0.0, 0.0])
        .with_fullscreen(!windowed && demo.is_none());
    let options = eframe::NativeOptions {
        viewport,
        ..Default::default()
    };
    eframe::run_native(
        "selfvend",
        options,
        Box::new(move |cc| {
            selfvend_ui::setup(&cc.egui_ctx, Path::new(fonts::CJK_FONT))?;
            let ctx = cc.egui_ctx.clone();
            let kiosk = selfvend_ui::kiosk::start(&config, Timeouts::default(), move || {
                ctx.request_repaint()
            })?;
            Ok(Box::new(Announce {
                app: KioskApp::new(kiosk, demo),
                started,
                announced: false,
            }))
        }),
    )
    .map_err(|e| anyhow::anyhow!("the kiosk's window: {e}"))?;
    Ok(ExitCode::SUCCESS)
}

/// Tells stderr once when the attract screen is first drawn (for `selfvend bench ui` and the
/// Xvfb test, which wait for it).
struct Announce {
    app: KioskApp,
    started: Instant,
    announced: bool,
}

impl eframe::App for Announce {
    fn ui(&mut self, ui: &mut egui::Ui, _frame: &mut eframe::Frame) {
        self.app.kiosk_ui(ui);
        if !self.announced && self.app.kiosk.view().screen == Screen::Attract {
            self.announced = true;
            eprintln!(
                "selfvend: attract screen after {} ms",
                self.started.elapsed().as_millis()
            );
        }
    }
}
