//! A virtual CPU meter card in the State Grid style, Lanling layout "LL-ESAM1"
//! (docs/cards/lanling-cpu.md): ISO 7816-4 SELECT, READ BINARY, GET CHALLENGE, EXTERNAL and
//! INTERNAL AUTHENTICATE, and UPDATE BINARY of the wallet under secure messaging. Its keys are
//! diversified from its serial by the utility's encryption machine at issue.

use des::TdesEde2;
use des::cipher::{BlockCipherEncrypt, KeyInit};

use crate::encryption_machine::{EncryptionMachine, KeyUse, retail_mac};
use crate::sle4442::ht01::{bcd, padded};
use crate::vpcd::{Response, VirtualCard, answer, parse_apdu, status};

/// `3B 6C 00 00` and the historical bytes `LANLING-CPU1`.
pub fn atr() -> Vec<u8> {
    let mut atr = vec![0x3B, 0x6C, 0x00, 0x00];
    atr.extend_from_slice(b"LANLING-CPU1");
    atr
}

const SW_OK: u16 = 0x9000;
pub const WALLET_LEN: usize = 18;

pub struct CpuCard {
    pub serial: String,
    pub parameters: [u8; 35],
    pub wallet: [u8; WALLET_LEN],
    pub return_file: [u8; 12],
    external_key: [u8; 16],
    internal_key: [u8; 16],
    mac_key: [u8; 16],
    selected: bool,
    authenticated: bool,
    challenge8: Option<[u8; 8]>,
    challenge4: Option<[u8; 4]>,
    counter: u64,
    /// Wallet updates the card accepted (a test witness).
    pub wallet_updates: u32,
}

impl CpuCard {
    /// Issues a Lanling user card personalised with keys diversified from its serial.
    pub fn issue(
        machine: &EncryptionMachine,
        card_serial: &str,
        utility_code: &str,
        customer_number: &str,
        meter_number: &str,
    ) -> CpuCard {
        let mut parameters = [0u8; 35];
        parameters[0..8].copy_from_slice(&bcd(card_serial));
        parameters[8..10].copy_from_slice(&bcd(utility_code));
        parameters[10] = 0x01;
        parameters[11..23].copy_from_slice(&padded(customer_number));
        parameters[23..35].copy_from_slice(&padded(meter_number));
        CpuCard {
            serial: card_serial.into(),
            parameters,
            wallet: [0; WALLET_LEN],
            return_file: [0; 12],
            external_key: machine.card_key(KeyUse::ExternalAuth, card_serial),
            internal_key: machine.card_key(KeyUse::InternalAuth, card_serial),
            mac_key: machine.card_key(KeyUse::CommandMac, card_serial),
            selected: false,
            authenticated: false,
            challenge8: None,
            challenge4: None,
            counter: 0,
            wallet_updates: 0,
        }
    }

    /// A challenge no one can predict from outside the card (good enough for a simulator).
    fn challenge<const N: usize>(&mut self) -> [u8; N] {
        self.counter += 1;
        let mut block = [0u8; 8];
        block.copy_from_slice(&self.counter.to_be_bytes());
        let cipher = TdesEde2::new(&self.internal_key.into());
        let mut b = block.into();
        cipher.encrypt_block(&mut b);
        let out: [u8; 8] = b.into();
        out[..N].try_into().expect("N is 4 or 8")
    }

    fn encrypt(key: &[u8; 16], block: [u8; 8]) -> [u8; 8] {
        let cipher = TdesEde2::new(key.into());
        let mut b = block.into();
        cipher.encrypt_block(&mut b);
        b.into()
    }

    fn read_binary(&self, sfi: u8, offset: usize, le: usize) -> Response {
        if !self.selected {
            return status(0x6985);
        }
        let file: &[u8] = match sfi {
            1 => &self.parameters,
            2 => &self.wallet,
            3 => &self.return_file,
            _ => return status(0x6A82),
        };
        // Le 256 (00) means "all of it", as far as the file goes.
        let end = if le == 256 { file.len() } else { offset + le };
        match file.get(offset..end) {
            Some(data) => answer(data, SW_OK),
            None => status(0x6B00),
        }
    }

    fn external_authenticate(&mut self, cryptogram: &[u8]) -> Response {
        let Some(challenge) = self.challenge8.take() else {
            return status(0x6982);
        };
        if cryptogram == Self::encrypt(&self.external_key, challenge) {
            self.authenticated = true;
            status(SW_OK)
        } else {
            self.authenticated = false;
            status(0x6300)
        }
    }

    fn update_wallet(&mut self, header: [u8; 4], body: &[u8]) -> Response {
        if !self.selected {
            return status(0x6985);
        }
        let Some(challenge) = self.challenge4.take() else {
            return status(0x6982);
        };
        if !self.authenticated {
            return status(0x6982);
        }
        if header[3] != 0 {
            return status(0x6B00);
        }
        let Some(split) = body.len().checked_sub(4) else {
            return status(0x6700);
        };
        let (data, mac) = body.split_at(split);
        let mut input = header.to_vec();
        input.push(body.len() as u8);
        input.extend_from_slice(data);
        let mut iv = [0u8; 8];
        iv[..4].copy_from_slice(&challenge);
        if retail_mac(&self.mac_key, iv, &input) != mac {
            return status(0x6988);
        }
        if data.len() != WALLET_LEN {
            return status(0x6700);
        }
        self.wallet.copy_from_slice(data);
        self.wallet_updates += 1;
        status(SW_OK)
    }
}

impl VirtualCard for CpuCard {
    fn atr(&self) -> Vec<u8> {
        atr()
    }

    fn reset(&mut self) {
        self.selected = false;
        self.authenticated = false;
        self.challenge8 = None;
        self.challenge4 = None;
    }

    fn command(&mut self, apdu: &[u8]) -> Response {
        let Some((header, data, le)) = parse_apdu(apdu) else {
            return status(0x6700);
        };
        match (header, data, le) {
            ([0x00, 0xA4, 0x00, 0x00], [0x10, 0x01], _) => {
                self.reset();
                self.selected = true;
                status(SW_OK)
            }
            ([0x00, 0xA4, ..], _, _) => status(0x6A82),
            ([0x00, 0xB0, p1, p2], [], Some(le)) if p1 & 0x80 != 0 => {
                self.read_binary(p1 & 0x1F, usize::from(p2), le)
            }
            ([0x00, 0x84, 0x00, 0x00], [], Some(8)) => {
                let c = self.challenge::<8>();
                self.challenge8 = Some(c);
                answer(&c, SW_OK)
            }
            ([0x00, 0x84, 0x00, 0x00], [], Some(4)) => {
                let c = self.challenge::<4>();
                self.challenge4 = Some(c);
                answer(&c, SW_OK)
            }
            ([0x00, 0x82, 0x00, 0x00], cryptogram, None) if cryptogram.len() == 8 => {
                self.external_authenticate(cryptogram)
            }
            ([0x00, 0x88, 0x00, 0x00], challenge, _) if challenge.len() == 8 => {
                let block: [u8; 8] = challenge.try_into().expect("8 bytes");
                answer(&Self::encrypt(&self.internal_key, block), SW_OK)
            }
            ([0x04, 0xD6, 0x82, _], body, None) => self.update_wallet(header, body),
            ([0x00 | 0x04, ..], _, _) => status(0x6D00),
            _ => status(0x6E00),
        }
    }
}

impl std::fmt::Debug for CpuCard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CpuCard")
            .field("serial", &self.serial)
            .finish_non_exhaustive()
    }
}
