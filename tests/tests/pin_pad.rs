//! The host's PIN pad driver against the simulated encrypting PIN pad on a real pty: working
//! keys loaded under the master key, a PIN typed on the pad's keys coming back only as an
//! ISO 9564 format 0 block, cancel and timeout, MACs, and a line that misbehaves.

use std::path::Path;
use std::time::Duration;

use selfvend_host::pin_pad::{KeySlot, PinEntry, PinPad, PinPadError};
use selfvend_sim::encryption_machine::retail_mac_full;
use selfvend_sim::pin_pad::{
    PadAction, SimulatedPinPad, TEST_MASTER_KEY, decode_pin_block, wrap_key,
};

const PIN_KEY: [u8; 16] = *b"pin-key TEST 001";
const MAC_KEY: [u8; 16] = *b"mac-key TEST 001";
const PAN: &str = "6222021234567890128";

/// A pad with both working keys loaded, and the host's driver on it.
fn keyed() -> (SimulatedPinPad, PinPad) {
    let sim = SimulatedPinPad::start().unwrap();
    let mut pad = PinPad::open(Path::new(sim.path()), Duration::from_millis(500)).unwrap();
    let (pik, pik_check) = wrap_key(&TEST_MASTER_KEY, &PIN_KEY);
    let (mak, mak_check) = wrap_key(&TEST_MASTER_KEY, &MAC_KEY);
    pad.load_working_key(KeySlot::Pin, &pik, &pik_check)
        .unwrap();
    pad.load_working_key(KeySlot::Mac, &mak, &mak_check)
        .unwrap();
    (sim, pad)
}

#[test]
fn a_pin_typed_on_the_pad_reaches_the_host_only_as_a_format_0_block() {
    let (sim, mut pad) = keyed();
    let status = pad.status().unwrap();
    assert!(status.master_key && status.pin_key && status.mac_key);
    assert_eq!(status.model, "SV-EPP 1.0");

    // The customer types 1 2 9, clears, then 246810 and Enter.
    let mut keys = vec![
        PadAction::Digit(1),
        PadAction::Digit(2),
        PadAction::Digit(9),
    ];
    keys.push(PadAction::Clear);
    keys.extend(PadAction::pin("246810"));
    sim.act(&keys);
    let mut shown = Vec::new();
    let entry = pad
        .get_pin(PAN, 6, 6, Duration::from_secs(30), &mut |n| shown.push(n))
        .unwrap();
    assert_eq!(shown, [1, 2, 3, 0, 1, 2, 3, 4, 5, 6]);
    let PinEntry::Entered(block) = entry else {
        panic!("expected a PIN block, got {entry:?}");
    };
    assert_eq!(format!("{block:?}"), "PinBlock(..)");
    // Only the PIN key's holder (the acquirer) can read it, and only for this card.
    assert_eq!(
        decode_pin_block(&PIN_KEY, PAN, block.bytes()).as_deref(),
        Some("246810")
    );
    assert_eq!(decode_pin_block(&MAC_KEY, PAN, block.bytes()), None);
    assert_eq!(sim.pin_blocks(), 1);
}

#[test]
fn cancel_and_timeout_end_the_entry_without_a_block() {
    let (sim, mut pad) = keyed();
    sim.act(&[PadAction::Digit(4), PadAction::Cancel]);
    let entry = pad
        .get_pin(PAN, 4, 12, Duration::from_secs(30), &mut |_| {})
        .unwrap();
    assert_eq!(entry, PinEntry::Cancelled);
    // Enter with too few digits does nothing; the pad's clock ends it.
    sim.act(&[PadAction::Digit(4), PadAction::Enter]);
    let entry = pad
        .get_pin(PAN, 4, 12, Duration::from_secs(1), &mut |_| {})
        .unwrap();
    assert_eq!(entry, PinEntry::TimedOut);
    assert_eq!(sim.pin_blocks(), 0);
}

#[test]
fn the_pad_macs_with_its_mac_key() {
    let (_sim, mut pad) = keyed();
    let message = b"0200 purchase message body";
    assert_eq!(
        pad.mac(message).unwrap(),
        retail_mac_full(&MAC_KEY, [0; 8], message)
    );
}

#[test]
fn a_working_key_with_a_wrong_check_value_is_refused_and_not_loaded() {
    let sim = SimulatedPinPad::start().unwrap();
    let mut pad = PinPad::open(Path::new(sim.path()), Duration::from_millis(500)).unwrap();
    let (pik, _) = wrap_key(&TEST_MASTER_KEY, &PIN_KEY);
    let err = pad
        .load_working_key(KeySlot::Pin, &pik, &[0, 0, 0, 0])
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "{}: the PIN pad refused load working key: the check value does not match the key \
             (result E1)",
            sim.path()
        )
    );
    assert!(!pad.status().unwrap().pin_key);
    // With no PIN key, no PIN is asked for.
    let err = pad
        .get_pin(PAN, 4, 12, Duration::from_secs(5), &mut |_| {})
        .unwrap_err();
    assert!(
        err.to_string()
            .ends_with("no PIN key is loaded (result E4)"),
        "{err}"
    );
}

#[test]
fn garbage_a_bad_lrc_and_silence_are_typed_errors() {
    let (sim, mut pad) = keyed();
    sim.act(&[PadAction::Garbage]);
    assert!(matches!(pad.status(), Err(PinPadError::Garbage { .. })));
    sim.act(&[PadAction::BadLrc]);
    match pad.status() {
        Err(e @ PinPadError::Garbage { .. }) => {
            assert!(e.to_string().contains("LRC"), "{e}")
        }
        other => panic!("expected a bad LRC, got {other:?}"),
    }
    sim.act(&[PadAction::Silence(1)]);
    assert!(matches!(pad.status(), Err(PinPadError::Silent { .. })));
    // The line recovers; the pad still answers.
    assert!(pad.status().unwrap().pin_key);
    // Requests no pad takes are refused before anything is sent.
    assert!(matches!(
        pad.get_pin("12345", 4, 12, Duration::from_secs(5), &mut |_| {}),
        Err(PinPadError::BadRequest(_))
    ));
}
