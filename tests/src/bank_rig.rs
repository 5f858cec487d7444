//! The bank side of a kiosk for bank-card tests: the acquirer simulator on loopback with
//! 王芳's debit card on its books, the encrypting PIN pad on a pty with the host's driver
//! open on it, and the ISO 8583 acquirer dialect plugin, signed and loaded.

use std::path::{Path, PathBuf};
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

/// The bank's far ends: the acquirer with 王芳's account, the PIN pad, the signed dialect.
pub struct BankSims {
    pub acquirer: Acquirer,
    pub pad_sim: SimulatedPinPad,
    pub entry: AcquirerEntry,
    pub plugin_file: PathBuf,
}

impl BankSims {
    pub fn start(plugins: &SignedPlugins) -> BankSims {
        let acquirer = Acquirer::start().unwrap();
        acquirer.add_card(PAN, PIN, BALANCE_FEN);
        acquirer.set_today(2026, 11);
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
        BankSims {
            acquirer,
            pad_sim: SimulatedPinPad::start().unwrap(),
            entry,
            plugin_file: plugins.signed("iso8583_acquirer"),
        }
    }
}

/// The bank's far ends and the host's side of them in this process: the PIN pad driver open
/// on the pad, the dialect loaded, and the engine's link.
pub struct Bank {
    pub sims: BankSims,
    pub pad: Arc<Mutex<PinPad>>,
    /// The dialect, for tests that call it directly.
    pub plugin: Plugin,
    pub link: BankLink,
}

impl std::ops::Deref for Bank {
    type Target = BankSims;
    fn deref(&self) -> &BankSims {
        &self.sims
    }
}

impl Bank {
    pub fn new(plugins: &SignedPlugins) -> Bank {
        let sims = BankSims::start(plugins);
        let pad = Arc::new(Mutex::new(
            PinPad::open(Path::new(sims.pad_sim.path()), Duration::from_millis(500)).unwrap(),
        ));
        let runtime = plugins.runtime();
        let load = || runtime.load("iso8583", &sims.plugin_file).unwrap();
        let link = BankLink::new(sims.entry.clone(), load(), pad.clone());
        Bank {
            plugin: load(),
            pad,
            link,
            sims,
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

impl BankSims {
    /// `w`'s kiosk config with this acquirer, its dialect and the PIN pad added, written
    /// beside it (so the journal is the same); returns its path.
    pub fn kiosk_config(&self, w: &World) -> PathBuf {
        let mut toml = std::fs::read_to_string(&w.config.path).unwrap();
        toml += &format!(
            "[[plugin]]\nname = \"iso8583\"\nrole = \"acquirer-dialect\"\nfile = \"{}\"\n\
             [acquirer]\nname = \"{}\"\ndialect = \"iso8583\"\naddress = \"{}\"\n\
             terminal_id = \"{}\"\nmerchant_id = \"{}\"\n\
             [devices.pinpad]\nport = \"{}\"\nbaud = 9600\n",
            self.plugin_file.display(),
            self.entry.name,
            self.entry.endpoint.address,
            self.entry.terminal.terminal_id,
            self.entry.terminal.merchant_id,
            self.pad_sim.path(),
        );
        let path = w.config.path.with_file_name("kiosk-bank.toml");
        std::fs::write(&path, toml).unwrap();
        path
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
