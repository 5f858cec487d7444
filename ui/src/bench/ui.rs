//! `selfvend bench ui`: what the kiosk's window costs.
//!
//! - **frame cpu**: the CPU time of each frame (egui's layout of the kiosk's screens plus
//!   tessellation into triangles; not the GPU's drawing) at 1280x800, a frame every 16 ms
//!   through a scripted demo cash sale, card in to card out.
//! - **idle cpu**: the `selfvend kiosk` process's CPU time over `idle_secs` on the attract
//!   screen, as a share of one core. The window repaints only on events, so this is the worker
//!   watching the card reader and its housekeeping.
//! - **start to attract screen**: from spawning `selfvend kiosk` to its first attract frame,
//!   with the plugins already compiled in the cache (a first run warms it).
//! - **rss**: the kiosk process's resident memory on the attract screen.
//!
//! The kiosk runs in demo mode (the config names no hardware), so this needs the rig's pcscd
//! (`./dev run bench ui` starts it) and a display (Xvfb is fine).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use eframe::egui;
use selfvend_host::backend::Purchase;
use selfvend_host::config::KioskConfig;
use selfvend_host::kiosk::{Command as KioskCommand, Screen, Timeouts};
use selfvend_host::money::Fen;
use selfvend_sim::id003_validator::Action;
use selfvend_ui::app::KioskApp;
use selfvend_ui::demo::Demo;

use super::{ms, percentile};

pub fn run(config_path: &Path, idle_secs: u64) -> anyhow::Result<()> {
    let port: u16 = std::env::var("SELFVEND_VPCD_PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .context("the kiosk runs in demo mode, on the rig's pcscd: run `./dev run bench ui`")?;
    if std::env::var_os("DISPLAY").is_none() && std::env::var_os("WAYLAND_DISPLAY").is_none() {
        bail!(
            "the kiosk's window needs a display (on a headless machine, start Xvfb and set DISPLAY)"
        );
    }
    window(config_path, idle_secs)?;
    frames(config_path, port)
}

/// A `selfvend kiosk` child, killed when dropped.
struct Kiosk {
    child: Child,
}

impl Drop for Kiosk {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `selfvend kiosk` and waits for its attract screen; returns it and how long it took.
fn start_kiosk(config_path: &Path) -> anyhow::Result<(Kiosk, Duration)> {
    let started = Instant::now();
    let mut child = Command::new(std::env::current_exe()?)
        .arg("--config")
        .arg(config_path)
        .arg("kiosk")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting `selfvend kiosk`")?;
    let stderr = child.stderr.take().context("the kiosk's stderr")?;
    let kiosk = Kiosk { child };
    let (said, heard) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if said.send(line).is_err() {
                return;
            }
        }
    });
    let mut lines = Vec::new();
    loop {
        match heard.recv_timeout(Duration::from_secs(60)) {
            Ok(line) if line.starts_with("selfvend: attract screen after") => {
                return Ok((kiosk, started.elapsed()));
            }
            Ok(line) => lines.push(line),
            Err(_) => bail!(
                "`selfvend kiosk` showed no attract screen within 60 s; it said:\n{}",
                lines.join("\n")
            ),
        }
    }
}

/// Start time, idle CPU and RSS of the real kiosk process.
fn window(config_path: &Path, idle_secs: u64) -> anyhow::Result<()> {
    // The first start compiles the plugins into the cache; the second is the one measured.
    drop(start_kiosk(config_path)?);
    let (kiosk, started) = start_kiosk(config_path)?;
    println!("start to attract screen: {:.0} ms", ms(started));
    let pid = kiosk.child.id();
    // Sign-on and the first round of housekeeping happen at start; let them pass.
    std::thread::sleep(Duration::from_secs(2));
    let before = thread_ticks(pid)?;
    let measured = Instant::now();
    std::thread::sleep(Duration::from_secs(idle_secs));
    let after = thread_ticks(pid)?;
    let (mut kiosk_ticks, mut sim_ticks) = (0, 0);
    for (thread, (name, ticks)) in &after {
        let spent = ticks - before.get(thread).map_or(0, |(_, t)| *t);
        if SIMULATOR_THREADS.iter().any(|s| name.starts_with(s)) {
            sim_ticks += spent;
        } else {
            kiosk_ticks += spent;
        }
    }
    let share = |ticks: u64| -> anyhow::Result<f64> {
        Ok(ticks as f64 / clock_ticks_per_second()? / measured.elapsed().as_secs_f64() * 100.0)
    };
    println!(
        "idle cpu: {:.2} % over {idle_secs} s on the attract screen (the kiosk's own threads; \
         the demo's simulators in the same process add {:.2} %)",
        share(kiosk_ticks)?,
        share(sim_ticks)?
    );
    println!("rss: {} MB", rss_kib(pid)? / 1024);
    Ok(())
}

/// The demo's simulator threads (`selfvend_sim` names them), which a real kiosk does not run.
const SIMULATOR_THREADS: &[&str] = &[
    "acquirer",
    "escpos-printer",
    "id003-validator",
    "pin-pad",
    "virtual-card",
    "refbackend",
];

/// Each thread of process `pid`: its name and its utime + stime, in clock ticks.
fn thread_ticks(pid: u32) -> anyhow::Result<std::collections::HashMap<String, (String, u64)>> {
    let mut threads = std::collections::HashMap::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let task = task?.path();
        let (Ok(stat), Ok(name)) = (
            std::fs::read_to_string(task.join("stat")),
            std::fs::read_to_string(task.join("comm")),
        ) else {
            continue; // The thread ended.
        };
        // The fields after the parenthesised name; utime and stime are the 14th and 15th.
        let after = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("");
        let fields: Vec<u64> = after
            .split_whitespace()
            .skip(11)
            .take(2)
            .filter_map(|f| f.parse().ok())
            .collect();
        let ticks = fields.iter().sum();
        threads.insert(task.display().to_string(), (name.trim().to_string(), ticks));
    }
    Ok(threads)
}

fn clock_ticks_per_second() -> anyhow::Result<f64> {
    let out = Command::new("getconf").arg("CLK_TCK").output()?;
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .context("getconf CLK_TCK")
}

fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .with_context(|| format!("/proc/{pid}/status has no VmRSS"))
}

/// Frame CPU time through a scripted cash sale in this process, on the demo's simulators.
fn frames(config_path: &Path, port: u16) -> anyhow::Result<()> {
    let mut config = KioskConfig::load(config_path)?;
    let mut demo = Demo::start(&mut config, port)?;
    let kiosk = selfvend_ui::kiosk::start(&config, Timeouts::default(), || {})?;
    let ctx = egui::Context::default();
    selfvend_ui::setup(&ctx, Path::new(selfvend_ui::fonts::CJK_FONT))?;
    // The kiosk's screen alone, at its 1280x800 (the demo's panel is not the kiosk's).
    let mut app = KioskApp::new(kiosk, None);
    let mut times = Vec::new();
    let mut frame = |app: &mut KioskApp| {
        let input = egui::RawInput {
            screen_rect: Some(egui::Rect::from_min_size(
                egui::Pos2::ZERO,
                egui::vec2(1280.0, 800.0),
            )),
            ..Default::default()
        };
        let started = Instant::now();
        let output = ctx.run_ui(input, |ui| app.kiosk_ui(ui));
        let triangles = ctx.tessellate(output.shapes, output.pixels_per_point);
        times.push(started.elapsed());
        std::hint::black_box(triangles);
        std::thread::sleep(Duration::from_millis(16));
    };
    let mut until = |app: &mut KioskApp, what: &str, shows: &dyn Fn(&Screen) -> bool| {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            frame(app);
            if shows(&app.kiosk.view().screen) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("the scripted sale waited 30 s for {what}");
            }
        }
    };
    until(&mut app, "the attract screen", &|s| *s == Screen::Attract)?;
    demo.insert_meter_card(0)?;
    until(&mut app, "the account", &|s| {
        matches!(s, Screen::Account(_))
    })?;
    app.kiosk
        .send(KioskCommand::Buy(Purchase::Money(Fen(5000))));
    until(&mut app, "the payment choice", &|s| {
        matches!(s, Screen::Method { .. })
    })?;
    app.kiosk.send(KioskCommand::PayCash);
    until(&mut app, "the banknotes", &|s| {
        matches!(s, Screen::Paying { .. })
    })?;
    for yuan in [20, 20, 10] {
        demo.validator.act(Action::Insert(yuan));
    }
    until(&mut app, "the result", &|s| matches!(s, Screen::Result(_)))?;
    demo.pull_meter_card();
    until(&mut app, "the attract screen again", &|s| {
        *s == Screen::Attract
    })?;
    let count = times.len();
    let p50 = percentile(&mut times, 50);
    let p99 = percentile(&mut times, 99);
    let max = times.last().copied().unwrap_or_default();
    println!(
        "frame cpu p99: {:.2} ms (p50 {:.2} ms, max {:.2} ms, {count} frames of a cash sale at 1280x800)",
        ms(p99),
        ms(p50),
        ms(max)
    );
    Ok(())
}
