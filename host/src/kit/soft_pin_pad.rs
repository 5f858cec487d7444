//! The kit's PIN pad, in software, for testing acquirer dialects: it holds a test terminal
//! master key (`--master-key`), takes the working keys a sign-on returns as a real pad loads
//! them (unwrapped under the master key, each checked against its check value), and MACs as
//! the kiosk's pad does: ISO 9797-1 MAC algorithm 3 (the retail MAC), padding method 2, all 8
//! bytes. A kiosk never uses it: its keys live only in its encrypting PIN pad.

use des::cipher::{BlockCipherDecrypt, BlockCipherEncrypt, KeyInit};
use des::{Des, TdesEde2};

use crate::payment::{Security, WorkingKeys};

pub struct SoftPinPad {
    master: [u8; 16],
    mac_key: Option<[u8; 16]>,
}

impl SoftPinPad {
    pub fn new(master: [u8; 16]) -> SoftPinPad {
        SoftPinPad {
            master,
            mac_key: None,
        }
    }

    /// Loads a sign-on's working MAC key, as the pad does; a wrong check value is refused.
    pub fn load(&mut self, keys: &WorkingKeys) -> Result<(), String> {
        let tdes = TdesEde2::new(&self.master.into());
        let mut key = [0u8; 16];
        for (i, half) in keys.mac_key.chunks(8).enumerate() {
            let mut block: [u8; 8] = half.try_into().expect("8-byte halves");
            let mut b = block.into();
            tdes.decrypt_block(&mut b);
            block = b.into();
            key[i * 8..i * 8 + 8].copy_from_slice(&block);
        }
        let mut zeros = [0u8; 8].into();
        TdesEde2::new(&key.into()).encrypt_block(&mut zeros);
        let check: [u8; 8] = zeros.into();
        if check[..4] != keys.mac_key_check {
            return Err("the MAC key's check value does not match under the master key".into());
        }
        self.mac_key = Some(key);
        Ok(())
    }
}

impl Security for SoftPinPad {
    fn mac(&mut self, data: &[u8]) -> Result<[u8; 8], String> {
        let key = self
            .mac_key
            .ok_or("no MAC key loaded: the transcript signs on before it MACs")?;
        Ok(retail_mac(&key, data))
    }
}

/// ISO 9797-1 MAC algorithm 3, padding method 2: single-DES CBC under the key's left half,
/// the last block finished with 2-key 3DES.
fn retail_mac(key: &[u8; 16], data: &[u8]) -> [u8; 8] {
    let left: [u8; 8] = key[..8].try_into().expect("16-byte key");
    let right: [u8; 8] = key[8..].try_into().expect("16-byte key");
    let (k1, k2) = (Des::new(&left.into()), Des::new(&right.into()));
    let mut padded = data.to_vec();
    padded.push(0x80);
    while !padded.len().is_multiple_of(8) {
        padded.push(0);
    }
    let mut chain = [0u8; 8];
    for block in padded.chunks_exact(8) {
        for (c, b) in chain.iter_mut().zip(block) {
            *c ^= b;
        }
        let mut b = chain.into();
        k1.encrypt_block(&mut b);
        chain = b.into();
    }
    let mut b = chain.into();
    k2.decrypt_block(&mut b);
    k1.encrypt_block(&mut b);
    b.into()
}
