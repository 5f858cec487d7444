//! The host's PC/SC reader against a virtual card in a vpcd slot of the rig's pcscd: insertion
//! and removal are seen without polling, APDUs pass unchanged, a pulled card is a typed error.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use selfvend_host::card::CardChannel;
use selfvend_host::card_reader::Readers;
use selfvend_sim::encryption_machine::EncryptionMachine;
use selfvend_sim::sle4442::{self, Sle4442};
use selfvend_sim::vpcd::Inserted;
use selfvend_tests::ReaderSlot;

const WAIT: Option<Duration> = Some(Duration::from_secs(10));

fn memory_card() -> Arc<Mutex<Sle4442>> {
    Arc::new(Mutex::new(sle4442::ht01::issue(
        &EncryptionMachine::default(),
        "3701000000000001",
        "3701",
        "C370100001",
        "M3701000001",
    )))
}

#[test]
fn a_virtual_memory_card_answers_through_pcscd() {
    let slot = ReaderSlot::take();
    let readers = Readers::establish().unwrap();
    let card = memory_card();
    let inserted = Inserted::insert(card.clone(), slot.address).unwrap();
    assert!(readers.wait(&slot.reader, true, WAIT).unwrap());
    let mut pc = readers.connect(&slot.reader).unwrap();
    assert_eq!(pc.atr(), sle4442::ATR);
    assert_eq!(
        pc.transmit(&[0xFF, 0xA4, 0x00, 0x00, 0x01, 0x06]).unwrap(),
        [0x90, 0x00]
    );
    assert_eq!(
        pc.transmit(&[0xFF, 0xB0, 0x00, 0x04, 0x04]).unwrap(),
        b"HT01\x90\x00"
    );
    inserted.pull_out();
    assert!(readers.wait(&slot.reader, false, WAIT).unwrap());
    // The session ends with a typed error, not a hang or a panic.
    assert_eq!(
        pc.transmit(&[0xFF, 0xB0, 0x00, 0x00, 0x10]),
        Err(selfvend_host::card::ChannelError::CardRemoved)
    );
}
