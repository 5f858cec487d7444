//! The real `selfvend kiosk` binary in a real window: an X server without a screen (Xvfb), the
//! demo config, and a photograph of the screen taken from outside with ImageMagick's `import`,
//! compared with the attract screen as the screens test renders it.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use eframe::egui;
use egui_kittest::Harness;
use image::RgbaImage;
use selfvend_host::kiosk::{Screen, View};
use selfvend_ui::fonts;
use selfvend_ui::lang::Lang;
use selfvend_ui::screens::{Keypad, screen_ui};

/// A child process killed when the test ends, however it ends.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        // SIGTERM first: Xvfb then removes its lock file and socket (SIGKILL would leave them).
        let _ = Command::new("kill").arg(self.0.id().to_string()).status();
        for _ in 0..40 {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The pid in display `n`'s lock file, if there is one.
fn lock_holder(n: u32) -> Option<u32> {
    std::fs::read_to_string(format!("/tmp/.X{n}-lock"))
        .ok()
        .and_then(|pid| pid.trim().parse().ok())
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn selfvend_bin() -> PathBuf {
    std::env::var_os("SELFVEND_BIN")
        .map(PathBuf::from)
        .expect("SELFVEND_BIN: run the tests with ./dev test, which builds the binary")
}

/// Xvfb on the first free display from :90, 1600x800 (the kiosk and the demo panel).
fn xvfb() -> (Killed, String) {
    for n in 90..120 {
        // A lock whose process is gone is stale (a server killed outright): Xvfb takes it over.
        if lock_holder(n).is_some_and(|pid| Path::new(&format!("/proc/{pid}")).exists()) {
            continue;
        }
        let display = format!(":{n}");
        let server = Killed(
            Command::new("Xvfb")
                .args([&display, "-screen", "0", "1600x800x24", "-nolisten", "tcp"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("Xvfb (Debian package xvfb; ./dev installs it)"),
        );
        // Ready when the lock is ours and the socket is there (a stale one may be there first).
        let socket = format!("/tmp/.X11-unix/X{n}");
        for _ in 0..100 {
            if lock_holder(n) == Some(server.0.id()) && Path::new(&socket).exists() {
                return (server, display);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    panic!("no Xvfb display could be started on :90 to :119");
}

/// `screen` as the screens test draws it, at the kiosk's 1280x800.
fn rendered(screen: Screen) -> RgbaImage {
    let view = View {
        screen,
        countdown: None,
        seq: 0,
    };
    let mut h = Harness::builder()
        .with_size(egui::vec2(1280.0, 800.0))
        .with_theme(egui::Theme::Light)
        .with_context_setup(|ctx| selfvend_ui::setup(ctx, Path::new(fonts::CJK_FONT)).unwrap())
        .wgpu()
        .build_ui(move |ui| {
            selfvend_ui::whole_window_ui(ui, |ui| {
                screen_ui(ui, Lang::Zh, &view, &mut Keypad::default())
            });
        });
    h.run();
    h.render().unwrap()
}

/// The share of the photograph's kiosk area (its left 1280x800) that differs visibly from
/// `reference`.
fn differing(photo: &RgbaImage, reference: &RgbaImage) -> f64 {
    let mut differ = 0u64;
    for y in 0..800 {
        for x in 0..1280 {
            let (a, b) = (photo.get_pixel(x, y), reference.get_pixel(x, y));
            let far = (0..3).any(|c| a[c].abs_diff(b[c]) > 48);
            differ += u64::from(far);
        }
    }
    differ as f64 / (1280.0 * 800.0)
}

#[test]
fn the_kiosk_binary_opens_its_window_on_the_attract_screen() {
    let (_x, display) = xvfb();
    let mut kiosk = Command::new(selfvend_bin())
        .arg("--config")
        .arg(root().join("config/demo.toml"))
        .arg("kiosk")
        .env("DISPLAY", &display)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = kiosk.stderr.take().unwrap();
    let kiosk = Killed(kiosk);
    let (said, heard) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = said.send(line);
        }
    });
    let mut lines = Vec::new();
    loop {
        match heard.recv_timeout(Duration::from_secs(60)) {
            Ok(line) if line.starts_with("selfvend: attract screen after") => break,
            Ok(line) => lines.push(line),
            Err(_) => panic!("the kiosk never showed its attract screen; it said: {lines:#?}"),
        }
    }
    // The frame that announced it is on the screen once it is swapped in.
    std::thread::sleep(Duration::from_millis(500));
    let shot = tempfile::tempdir().unwrap();
    let photo_path = shot.path().join("screen.png");
    let status = Command::new("import")
        .args(["-display", &display, "-window", "root"])
        .arg(&photo_path)
        .status()
        .expect("ImageMagick's import (Debian package imagemagick; ./dev installs it)");
    assert!(status.success());
    let photo = image::open(&photo_path).unwrap().to_rgba8();
    assert_eq!((photo.width(), photo.height()), (1600, 800));
    drop(kiosk);
    // For people: the real window, demo panel and all.
    let pictures = root().join("docs/screens");
    std::fs::create_dir_all(&pictures).unwrap();
    photo.save(pictures.join("window-attract.png")).unwrap();

    rendered(Screen::Attract)
        .save("/tmp/ref-attract.png")
        .unwrap();
    let attract = differing(&photo, &rendered(Screen::Attract));
    let reading = differing(&photo, &rendered(Screen::Reading));
    eprintln!(
        "photo vs attract: {:.3}% of pixels differ; vs reading: {:.3}%",
        attract * 100.0,
        reading * 100.0
    );
    // Two renderers (OpenGL here, wgpu there) round edges differently; the screens do not.
    assert!(
        attract < 0.005 && reading > 0.01,
        "the photographed screen differs from the attract screen in {:.2}% of its pixels and \
         from the reading screen in {:.2}%",
        attract * 100.0,
        reading * 100.0
    );
}
