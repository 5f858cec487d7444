//! What the host allows each plugin call (`[plugin_limits]`).

use std::time::Duration;

/// How much each plugin call may take, from the kiosk config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginLimits {
    /// Wall time a call may spend running plugin code (time waiting on the card or the
    /// backend is not counted; those have their own deadlines).
    pub call_deadline: Duration,
    /// Linear memory one instance may grow to.
    pub memory_bytes: usize,
    /// Bytes of stderr and log lines kept per instance.
    pub log_bytes: usize,
    /// Pre-allocate instance slots (wasmtime's pooling allocator).
    pub pooling: bool,
}

impl Default for PluginLimits {
    fn default() -> Self {
        PluginLimits {
            call_deadline: Duration::from_millis(2000),
            memory_bytes: 64 << 20,
            log_bytes: 64 << 10,
            pooling: true,
        }
    }
}
