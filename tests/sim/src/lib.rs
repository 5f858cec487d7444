//! Simulators of what a kiosk talks to, each speaking the protocol the real thing speaks: the
//! utility's reference backend and its encryption machine. Tests and the demo kiosk use them.

pub mod encryption_machine;
pub mod reference_backend;
