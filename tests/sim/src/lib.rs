//! Simulators of what a kiosk talks to, each speaking the protocol the real thing speaks: the
//! utility's reference backend and its encryption machine, virtual meter cards that plug into
//! the real pcscd through vpcd, the meters those cards are carried to, and the bill validator
//! and receipt printer on the far end of a pty, and the bank-card acquirer the kiosk's card
//! payments go to.

pub mod acquirer;
pub mod apdu;
pub mod cpu_card;
pub mod encryption_machine;
pub mod escpos_printer;
pub mod id003_validator;
pub mod meter;
pub mod pin_pad;
pub mod reference_backend;
pub mod sle4442;
pub mod unionpay_card;
pub mod vpcd;
