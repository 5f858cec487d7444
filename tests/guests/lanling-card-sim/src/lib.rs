//! The simulators' Lanling CPU card (`tests/sim/src/cpu_card.rs`, the same source) and its
//! utility's encryption machine, as a `selfvend:card-sim` virtual card: how a vendor hands the
//! conformance kit a card it cannot play itself. The card is 张三's neighbour in Guangzhou,
//! `4401000000000001`, as the reference backend seeds it.

// The simulator's modules, compiled here unchanged (its APDU helpers under the name the card
// modules use); the parts a virtual card does not use are dead code in this build.
#![allow(dead_code)]

#[path = "../../../sim/src/cpu_card.rs"]
mod cpu_card;
#[path = "../../../sim/src/encryption_machine.rs"]
mod encryption_machine;
#[path = "../../../sim/src/sle4442.rs"]
mod sle4442;
#[path = "../../../sim/src/apdu.rs"]
mod vpcd;

use std::cell::RefCell;

use cpu_card::CpuCard;
use encryption_machine::EncryptionMachine;
use exports::selfvend::card_sim::card::{Guest as Card, ReaderKind};
use exports::selfvend::card_sim::issuer::{AuthPurpose, Guest as Issuer};
use vpcd::{Response, VirtualCard};

wit_bindgen::generate!({ path: "../../../wit/card-sim", world: "virtual-card" });

const SERIAL: &str = "4401000000000001";

thread_local! {
    static CARD: RefCell<CpuCard> = RefCell::new(CpuCard::issue(
        &EncryptionMachine::default(),
        SERIAL,
        "4401",
        "C440100001",
        "M4401000001",
    ));
}

struct Sim;

impl Card for Sim {
    fn atr() -> Vec<u8> {
        CARD.with_borrow_mut(|c| {
            c.reset();
            c.atr()
        })
    }

    fn kind() -> ReaderKind {
        ReaderKind::Contact
    }

    fn transmit(command: Vec<u8>) -> Vec<u8> {
        match CARD.with_borrow_mut(|c| c.command(&command)) {
            Response::Answer(r) => r,
            // A CPU card's update is atomic: it never tears inside a command.
            Response::Torn => vec![0x65, 0x81],
        }
    }
}

impl Issuer for Sim {
    fn card_password() -> Result<Vec<u8>, String> {
        Err("a CPU card has no PSC".into())
    }

    fn authenticate(
        purpose: AuthPurpose,
        challenge: Vec<u8>,
        data: Vec<u8>,
    ) -> Result<Vec<u8>, String> {
        let m = EncryptionMachine::default();
        match purpose {
            AuthPurpose::ExternalAuthenticate => m
                .external_authenticate(SERIAL, &challenge)
                .map(|c| c.to_vec())
                .map_err(|e| format!("{e:?}")),
            AuthPurpose::CommandMac => m
                .command_mac(SERIAL, &challenge, &data)
                .map(|c| c.to_vec())
                .map_err(|e| format!("{e:?}")),
            AuthPurpose::VerifyCardMac => match m.verify_card_mac(SERIAL, &challenge, &data) {
                Ok(true) => Ok(Vec::new()),
                Ok(false) => Err("the card's MAC does not check".into()),
                Err(e) => Err(format!("{e:?}")),
            },
        }
    }
}

#[allow(unsafe_code)]
mod glue {
    use super::Sim;
    crate::export!(Sim with_types_in crate);
}
