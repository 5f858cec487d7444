//! A bank card read through the rig's pcscd: the virtual UnionPay debit card's payment
//! application is selected and its Track 2 data taken apart; a T=0 card, a damaged card and a
//! card with no payment application end as the cardholder would expect.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use selfvend_host::bank_card::{self, BankCardError};
use selfvend_host::card_reader::{PcscCard, Readers};
use selfvend_sim::encryption_machine::EncryptionMachine;
use selfvend_sim::sle4442;
use selfvend_sim::unionpay_card::{DEBIT_AID, UnionPayCard};
use selfvend_sim::vpcd::{Inserted, VirtualCard};
use selfvend_tests::ReaderSlot;

const WAIT: Option<Duration> = Some(Duration::from_secs(10));

/// Inserts `card` and reads it as a bank card.
fn read<C: VirtualCard>(card: C) -> Result<bank_card::BankCard, BankCardError> {
    let slot = ReaderSlot::take();
    let readers = Readers::establish().unwrap();
    // The slot's last card must be seen gone first.
    assert!(readers.wait(&slot.reader, false, WAIT).unwrap());
    let _inserted = Inserted::insert(Arc::new(Mutex::new(card)), slot.address).unwrap();
    assert!(readers.wait(&slot.reader, true, WAIT).unwrap());
    let mut pc: PcscCard = readers.connect(&slot.reader).unwrap();
    bank_card::read(&mut pc)
}

#[test]
fn a_unionpay_debit_card_gives_its_pan_expiry_and_service_code() {
    let card = read(UnionPayCard::wang_fang()).unwrap();
    assert_eq!(card.aid, DEBIT_AID);
    assert_eq!(card.pan, "6222021234567890128");
    assert_eq!(
        (card.expiry.as_str(), card.service_code.as_str()),
        ("3012", "201")
    );
    assert_eq!(card.track2, UnionPayCard::wang_fang().track2());
    // Anything that prints the card shows the PAN masked.
    let shown = format!("{card:?}");
    assert!(shown.contains("622202*********0128"), "{shown}");
    assert!(!shown.contains("6222021234567890128"), "{shown}");
}

#[test]
fn a_t0_card_answering_through_get_response_reads_the_same() {
    let mut t0 = UnionPayCard::wang_fang();
    t0.t0 = true;
    assert_eq!(read(t0).unwrap().pan, "6222021234567890128");
}

#[test]
fn a_damaged_track2_is_refused_with_the_pan_masked() {
    let mut damaged = UnionPayCard::wang_fang();
    // Two digits in the middle of the PAN are changed.
    damaged.corrupt_track2_at = Some(3);
    assert_eq!(
        read(damaged).unwrap_err().to_string(),
        "the card's Track 2 data: PAN 622202*********0128 fails its check digit"
    );
}

#[test]
fn a_meter_card_is_not_a_bank_card() {
    let memory = sle4442::ht01::issue(
        &EncryptionMachine::default(),
        "3701000000000001",
        "3701",
        "C370100001",
        "M3701000001",
    );
    assert_eq!(
        read(memory).unwrap_err(),
        BankCardError::NoPaymentApplication
    );
}
