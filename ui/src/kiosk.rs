//! The kiosk assembled from its config: the journal and the sale engine with every plugin the
//! config names.

use anyhow::Context;
use selfvend_host::config::{KioskConfig, PluginRole};
use selfvend_host::journal::Journal;
use selfvend_host::plugin::Plugin;
use selfvend_host::sale::SaleEngine;

/// The journal file in the config's data directory, created with it when missing.
pub fn journal(config: &KioskConfig) -> anyhow::Result<Journal> {
    std::fs::create_dir_all(&config.kiosk.data_dir)
        .with_context(|| format!("creating {}", config.kiosk.data_dir.display()))?;
    Ok(Journal::open(
        &config.kiosk.data_dir.join("journal.sqlite"),
    )?)
}

/// The sale engine over the config's journal, with its codecs and dialects loaded.
pub fn sale_engine(config: &KioskConfig) -> anyhow::Result<SaleEngine> {
    let runtime = crate::backend_cmd::runtime(config)?;
    let load = |role: PluginRole| -> anyhow::Result<Vec<Plugin>> {
        config
            .plugins
            .iter()
            .filter(|p| p.role == role)
            .map(|p| Ok(runtime.load(&p.name, &p.file)?))
            .collect()
    };
    Ok(SaleEngine::new(
        config,
        journal(config)?,
        load(PluginRole::CardCodec)?,
        load(PluginRole::BackendDialect)?,
    ))
}
