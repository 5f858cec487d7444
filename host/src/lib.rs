//! selfvend-host: the kiosk core as a library — plugin runtime, devices, journal, sale engine
//! and config. It knows nothing of the UI; `ui/` drives it.

pub mod authority;
pub mod backend;
pub mod bank_card;
pub mod card;
pub mod card_reader;
pub mod cash_acceptor;
pub mod clearing;
pub mod codecs;
pub mod escpos;
pub mod fleet;
pub mod fleet_config;
pub mod id003;
pub mod journal;
pub mod kiosk;
pub mod kit;
pub mod payment;
pub mod pin_pad;
pub mod plugin;
pub mod receipt_printer;
pub mod remote_command;
pub mod rollout;
pub mod sale;

/// The kiosk's config: a crate of its own, so the fleet server checks configs with the kiosk's
/// code.
pub use selfvend_config as config;
pub use selfvend_config::money;
/// The messages a kiosk and its fleet server exchange.
pub use selfvend_fleet_wire as fleet_wire;
