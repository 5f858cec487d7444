//! `selfvend-reference-backend`: runs the reference utility backend until interrupted.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Parser;
use selfvend_sim::reference_backend::{Call, Fault, Listen, ReferenceBackend};

/// The reference utility backend: fixed-length GBK text on one port, JSON over HTTP/1.1 on
/// another, its books in a SQLite file (created and seeded with demo accounts when new).
#[derive(Parser)]
struct Args {
    /// The SQLite file holding the backend's books.
    #[arg(long, default_value = "build/reference-backend.sqlite")]
    db: PathBuf,
    /// Where the fixed-length text dialect listens.
    #[arg(long, default_value = "127.0.0.1:7301")]
    fixed_text: SocketAddr,
    /// Where the JSON-over-HTTP dialect listens.
    #[arg(long, default_value = "127.0.0.1:7302")]
    json_http: SocketAddr,
    /// Misbehave on every request of one type, e.g. `sale=drop-reply`, `account-query=delay-3000`
    /// (faults: drop-reply, reply-twice, garbage, truncate, flood, delay-MS).
    #[arg(long = "fault", value_name = "CALL=FAULT")]
    faults: Vec<String>,
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(never) => match never {},
        Err(e) => {
            eprintln!("selfvend-reference-backend: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> anyhow::Result<std::convert::Infallible> {
    let faults = args
        .faults
        .iter()
        .map(|spec| parse_fault(spec))
        .collect::<anyhow::Result<Vec<_>>>()?;
    if let Some(dir) = args.db.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let backend = ReferenceBackend::start(
        &args.db,
        Listen {
            fixed_text: args.fixed_text,
            json_http: args.json_http,
        },
    )?;
    for (call, fault) in faults {
        backend.inject_always(call, fault);
    }
    println!("books: {}", args.db.display());
    println!("fixed-text listening on {}", backend.fixed_text_address());
    println!("json-http listening on {}", backend.json_http_address());
    loop {
        std::thread::park();
    }
}

fn parse_fault(spec: &str) -> anyhow::Result<(Call, Fault)> {
    let Some((call, fault)) = spec.split_once('=') else {
        bail!("--fault {spec:?}: expected CALL=FAULT");
    };
    let Some(call) = Call::from_name(call) else {
        bail!(
            "--fault {spec:?}: no call named {call:?} (calls: {})",
            Call::ALL.map(Call::name).join(", ")
        );
    };
    let Some(fault) = Fault::parse(fault) else {
        bail!(
            "--fault {spec:?}: no fault named {fault:?} \
             (faults: drop-reply, reply-twice, garbage, truncate, flood, delay-MS)"
        );
    };
    Ok((call, fault))
}
