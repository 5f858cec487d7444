//! The bank side of a kiosk for bank-card tests: the acquirer simulator on loopback with
//! 王芳's debit card on its books, the encrypting PIN pad on a pty with the host's driver
//! open on it, and the ISO 8583 acquirer dialect plugin, signed and loaded.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use selfvend_host::backend::Endpoint;
use selfvend_host::bank_card::{self, BankCard};
use selfvend_host::config::AcquirerEntry;
use selfvend_host::payment::{Security, Terminal};
use selfvend_host::pin_pad::{PinBlock, PinEntry, PinPad};
use selfvend_host::plugin::{AcquirerSession, Plugin};
use selfvend_host::sale::BankLink;
use selfvend_sim::acquirer::Acquirer;
use selfvend_sim::pin_pad::{PadAction, SimulatedPinPad};
use selfvend_sim::unionpay_card::UnionPayCard;
use selfvend_sim::vpcd::Inserted;

use crate::SignedPlugins;
use crate::kiosk_rig::{WAIT, World};

/// 王芳's card and PIN, and what is on her account.
pub const PAN: &str = "6222021234567890128";
pub const PIN: &str = "135790";
pub const BALANCE_FEN: u64 = 100_000;

pub struct Bank {
    pub acquirer: Acquirer,
    pub pad_sim: SimulatedPinPad,
    pub pad: Arc<Mutex<PinPad>>,
    /// The dialect, for tests that call it directly.
    pub plugin: Plugin,
    pub link: BankLink,
    pub entry: AcquirerEntry,
}

impl Bank {
    pub fn new(plugins: &SignedPlugins) -> Bank {
        let acquirer = Acquirer::start().unwrap();
        acquirer.add_card(PAN, PIN, BALANCE_FEN);
        acquirer.set_today(2026, 11);
        let pad_sim = SimulatedPinPad::start().unwrap();
        let pad = Arc::new(Mutex::new(
            PinPad::open(Path::new(pad_sim.path()), Duration::from_millis(500)).unwrap(),
        ));
        let file = plugins.signed("iso8583_acquirer");
        let runtime = plugins.runtime();
        let entry = AcquirerEntry {
            name: "unionpay-acquirer".into(),
            dialect: "iso8583".into(),
            endpoint: Endpoint {
                address: acquirer.address().to_string(),
                connect_timeout: Duration::from_secs(2),
                io_timeout: Duration::from_secs(2),
                max_request_bytes: 4096,
                max_reply_bytes: 4096,
            },
            terminal: Terminal {
                terminal_id: "KSALE001".into(),
                merchant_id: "898370148160001".into(),
            },
        };
        let link = BankLink::new(
            entry.clone(),
            runtime.load("iso8583", &file).unwrap(),
            pad.clone(),
        );
        Bank {
            plugin: runtime.load("iso8583", &file).unwrap(),
            acquirer,
            pad_sim,
            pad,
            link,
            entry,
        }
    }

    /// A dialect session MACing through the PIN pad.
    pub fn session(&self) -> AcquirerSession {
        let security: Arc<Mutex<dyn Security>> = self.pad.clone();
        self.plugin
            .acquirer_session(self.entry.endpoint.clone(), Some(security))
            .unwrap()
    }

    /// The customer types `pin` on the pad for `card`; the PIN block the pad makes.
    pub fn enter_pin(&self, card: &BankCard, pin: &str) -> PinBlock {
        self.pad_sim.act(&PadAction::pin(pin));
        let entry = self
            .pad
            .lock()
            .unwrap()
            .get_pin(&card.pan, 4, 12, Duration::from_secs(30), &mut |_| {})
            .unwrap();
        match entry {
            PinEntry::Entered(block) => block,
            other => panic!("expected a PIN block, got {other:?}"),
        }
    }
}

/// 王芳's card, read through the world's PC/SC slot (then taken out again).
pub fn read_bank_card(w: &World) -> BankCard {
    assert!(w.readers.wait(&w.slot.reader, false, WAIT).unwrap());
    let inserted = Inserted::insert(
        Arc::new(Mutex::new(UnionPayCard::wang_fang())),
        w.slot.address,
    )
    .unwrap();
    assert!(w.readers.wait(&w.slot.reader, true, WAIT).unwrap());
    let card = {
        let mut pc = w.readers.connect(&w.slot.reader).unwrap();
        bank_card::read(&mut pc).unwrap()
    };
    inserted.pull_out();
    card
}
