//! `selfvend-kiosk-child CONFIG`: the whole kiosk as `selfvend kiosk` starts it (the worker, the
//! devices and the fleet link, through the host's `kiosk::assembly`), without a window, as a
//! process of its own: the rollout tests run several against one fleet server. It runs until
//! its standard input closes. With `SELFVEND_KILL_AT=<failpoint>` it kills itself with SIGKILL
//! there, as a power cut would.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use selfvend_host::config::KioskConfig;
use selfvend_host::kiosk::Timeouts;
use selfvend_host::kiosk::assembly;

fn main() -> ExitCode {
    tracing_subscriber_init();
    let _failpoints = fail::FailScenario::setup();
    selfvend_tests::kill_at_failpoint_from_env();
    let Some(path) = std::env::args_os().nth(1).map(PathBuf::from) else {
        eprintln!("usage: selfvend-kiosk-child CONFIG");
        return ExitCode::from(2);
    };
    let kiosk = KioskConfig::load(&path)
        .map_err(|e| e.to_string())
        .and_then(|config| {
            assembly::start(&config, Timeouts::default(), || {}).map_err(|e| e.to_string())
        });
    let kiosk = match kiosk {
        Ok(kiosk) => kiosk,
        Err(e) => {
            eprintln!("selfvend-kiosk-child: {e}");
            return ExitCode::FAILURE;
        }
    };
    eprintln!("selfvend-kiosk-child: started");
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
    drop(kiosk);
    ExitCode::SUCCESS
}

/// The kiosk's log on stderr, at `SELFVEND_LOG` (info by default).
fn tracing_subscriber_init() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SELFVEND_LOG")
        .unwrap_or_else(|_| "info".into());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}
