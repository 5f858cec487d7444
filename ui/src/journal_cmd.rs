//! `selfvend journal …`: the operator's view of the journal, and its audit check.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;
use selfvend_host::config::KioskConfig;
use selfvend_host::journal::Journal;

#[derive(Subcommand)]
pub enum JournalCommand {
    /// Prints entries, one per line.
    Show {
        /// The first entry to show.
        #[arg(long, default_value_t = 1)]
        from: i64,
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// The journal file (default: `journal.sqlite` in the config's data directory).
        #[arg(long)]
        journal: Option<PathBuf>,
    },
    /// Walks the hash chain; exits 1 and names each row that was edited, inserted or deleted.
    Verify {
        #[arg(long)]
        journal: Option<PathBuf>,
    },
    /// Writes every entry as JSON lines (to stdout, or to `--out`).
    Export {
        #[arg(long)]
        out: Option<PathBuf>,
        #[arg(long)]
        journal: Option<PathBuf>,
    },
}

pub fn run(cmd: JournalCommand, config: &Path) -> anyhow::Result<ExitCode> {
    let path = |given: Option<PathBuf>| -> anyhow::Result<PathBuf> {
        match given {
            Some(p) => Ok(p),
            None => Ok(KioskConfig::load(config)?
                .kiosk
                .data_dir
                .join("journal.sqlite")),
        }
    };
    match cmd {
        JournalCommand::Show {
            from,
            limit,
            journal,
        } => {
            let journal = open(&path(journal)?)?;
            for e in journal.entries(from, limit)? {
                println!("{:>8}  {}  {:<24} {}", e.id, e.at, e.kind, e.body);
            }
            Ok(ExitCode::SUCCESS)
        }
        JournalCommand::Verify { journal } => {
            let path = path(journal)?;
            let report = open(&path)?.verify()?;
            if report.problems.is_empty() {
                println!(
                    "journal {}: {} rows, the chain is intact",
                    path.display(),
                    report.rows
                );
                return Ok(ExitCode::SUCCESS);
            }
            for p in &report.problems {
                println!("row {}: {}", p.row, p.what);
            }
            println!(
                "journal {}: {} rows, {} problem(s): it was changed outside the kiosk",
                path.display(),
                report.rows,
                report.problems.len()
            );
            Ok(ExitCode::FAILURE)
        }
        JournalCommand::Export { out, journal } => {
            let journal = open(&path(journal)?)?;
            let mut sink: Box<dyn Write> = match &out {
                Some(file) => Box::new(std::io::BufWriter::new(
                    std::fs::File::create(file)
                        .with_context(|| format!("creating {}", file.display()))?,
                )),
                None => Box::new(std::io::stdout().lock()),
            };
            let mut from = 1;
            loop {
                let page = journal.entries(from, 10_000)?;
                let Some(last) = page.last() else { break };
                from = last.id + 1;
                for e in &page {
                    serde_json::to_writer(&mut sink, e)?;
                    sink.write_all(b"\n")?;
                }
            }
            sink.flush()?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Opens an existing journal; a missing file is an error here, not a new journal.
fn open(path: &Path) -> anyhow::Result<Journal> {
    if !path.exists() {
        anyhow::bail!("no journal at {}", path.display());
    }
    Ok(Journal::open(path)?)
}
