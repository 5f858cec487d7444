//! Being written.

use std::path::Path;
use std::process::ExitCode;

use clap::Subcommand;

#[derive(Subcommand)]
pub enum ClearingCommand {}

pub fn run(cmd: ClearingCommand, _config: &Path) -> anyhow::Result<ExitCode> {
    match cmd {}
}
