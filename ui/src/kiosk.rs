//! The kiosk assembled from its config (the host's `kiosk::assembly`, which the tests' kiosk
//! processes share).

pub use selfvend_host::kiosk::assembly::{
    bank_link, devices, journal, names_no_hardware, runtime, sale_engine, start,
};
