//! The utility's encryption machine (加密机), simulated: card keys diversified from the card
//! serial, CPU-card authentication and MACs, memory-card PSCs, and the MAC that makes a credit
//! grant acceptable to a meter. The reference backend and the virtual cards both use it, so a
//! grant the backend issues verifies on the card and in the meter.
//!
//! Algorithms are the PBOC/State-Grid family: 2-key 3DES, key diversification by encrypting the
//! card's diversification data and its complement, and the ISO 9797-1 algorithm 3 ("retail")
//! MAC with ISO 9797-1 padding method 2.

use des::cipher::{BlockCipherDecrypt, BlockCipherEncrypt, KeyInit};
use des::{Des, TdesEde2};
use sha2::{Digest, Sha256};

/// The TEST-ONLY master key of the simulated machine. A real machine keeps its keys in hardware.
pub const TEST_MASTER_KEY: [u8; 16] = *b"TEST-ONLY-MASTER";

/// Version byte at the start of every credit token this machine issues.
pub const TOKEN_VERSION: u8 = 0x01;

/// What a diversified card key is for; each has its own master.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyUse {
    /// The kiosk proves itself to the card (EXTERNAL AUTHENTICATE).
    ExternalAuth,
    /// The card proves itself to the kiosk (INTERNAL AUTHENTICATE, card MACs).
    InternalAuth,
    /// Secure messaging on UPDATE BINARY.
    CommandMac,
    /// The credit token a meter checks before it takes a purchase.
    Credit,
    /// A memory card's PSC.
    Psc,
}

impl KeyUse {
    fn tag(self) -> u8 {
        match self {
            KeyUse::ExternalAuth => 0x11,
            KeyUse::InternalAuth => 0x22,
            KeyUse::CommandMac => 0x33,
            KeyUse::Credit => 0x44,
            KeyUse::Psc => 0x55,
        }
    }
}

/// Why the machine would not compute.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MachineError {
    #[error("the challenge is {0} bytes; it must be 4 or 8")]
    Challenge(usize),
    #[error("the data is {0} bytes; a card MAC needs the message and its 4-byte MAC")]
    ShortData(usize),
}

/// The simulated encryption machine.
#[derive(Clone)]
pub struct EncryptionMachine {
    master: [u8; 16],
}

impl std::fmt::Debug for EncryptionMachine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EncryptionMachine { .. }")
    }
}

impl Default for EncryptionMachine {
    fn default() -> Self {
        Self::new(TEST_MASTER_KEY)
    }
}

impl EncryptionMachine {
    pub fn new(master: [u8; 16]) -> Self {
        Self { master }
    }

    /// The card's key for `use_`, diversified from its serial.
    pub fn card_key(&self, use_: KeyUse, card_serial: &str) -> [u8; 16] {
        let mut master = self.master;
        master.iter_mut().for_each(|b| *b ^= use_.tag());
        let digest = Sha256::digest(card_serial.as_bytes());
        let mut data = [0u8; 8];
        data.copy_from_slice(&digest[..8]);
        let complement = data.map(|b| !b);
        let mut key = [0u8; 16];
        key[..8].copy_from_slice(&tdes_encrypt(&master, data));
        key[8..].copy_from_slice(&tdes_encrypt(&master, complement));
        key
    }

    /// The cryptogram for EXTERNAL AUTHENTICATE: the card's 8-byte challenge under the card's
    /// external-authentication key.
    pub fn external_authenticate(
        &self,
        card_serial: &str,
        challenge: &[u8],
    ) -> Result<[u8; 8], MachineError> {
        self.cryptogram(KeyUse::ExternalAuth, card_serial, challenge)
    }

    /// The challenge encrypted under the card's key for `use_`.
    fn cryptogram(
        &self,
        use_: KeyUse,
        card_serial: &str,
        challenge: &[u8],
    ) -> Result<[u8; 8], MachineError> {
        let block = challenge_block(challenge)?;
        Ok(tdes_encrypt(&self.card_key(use_, card_serial), block))
    }

    /// The secure-messaging MAC of a command: `data` under the card's command-MAC key, chained
    /// from the card's challenge.
    pub fn command_mac(
        &self,
        card_serial: &str,
        challenge: &[u8],
        data: &[u8],
    ) -> Result<[u8; 4], MachineError> {
        let iv = challenge_block(challenge)?;
        Ok(retail_mac(
            &self.card_key(KeyUse::CommandMac, card_serial),
            iv,
            data,
        ))
    }

    /// Checks a MAC the card made: `data` is the message followed by its 4-byte MAC, under the
    /// card's internal-authentication key chained from the kiosk's challenge.
    pub fn verify_card_mac(
        &self,
        card_serial: &str,
        challenge: &[u8],
        data: &[u8],
    ) -> Result<bool, MachineError> {
        let Some(split) = data.len().checked_sub(4) else {
            return Err(MachineError::ShortData(data.len()));
        };
        let (message, mac) = data.split_at(split);
        Ok(self.card_mac(card_serial, challenge, message)? == mac)
    }

    /// The MAC a card makes over `message` for `verify_card_mac`.
    pub fn card_mac(
        &self,
        card_serial: &str,
        challenge: &[u8],
        message: &[u8],
    ) -> Result<[u8; 4], MachineError> {
        let iv = challenge_block(challenge)?;
        Ok(retail_mac(
            &self.card_key(KeyUse::InternalAuth, card_serial),
            iv,
            message,
        ))
    }

    /// The credit token for a grant: version byte, then a MAC binding the card, its new purchase
    /// count, the amount and the energy. A meter takes the credit only if this verifies.
    pub fn credit_token(
        &self,
        card_serial: &str,
        purchase_count: u32,
        amount_fen: u64,
        energy_wh: u64,
    ) -> Vec<u8> {
        let mac = self.credit_mac(card_serial, purchase_count, amount_fen, energy_wh);
        let mut token = vec![TOKEN_VERSION];
        token.extend_from_slice(&mac);
        token
    }

    /// Whether `token` is this machine's token for exactly this grant.
    pub fn verify_credit_token(
        &self,
        card_serial: &str,
        purchase_count: u32,
        amount_fen: u64,
        energy_wh: u64,
        token: &[u8],
    ) -> bool {
        token.len() == 5
            && token[0] == TOKEN_VERSION
            && token[1..] == self.credit_mac(card_serial, purchase_count, amount_fen, energy_wh)
    }

    fn credit_mac(
        &self,
        card_serial: &str,
        purchase_count: u32,
        amount_fen: u64,
        energy_wh: u64,
    ) -> [u8; 4] {
        let mut message = card_serial.as_bytes().to_vec();
        message.extend_from_slice(&purchase_count.to_be_bytes());
        message.extend_from_slice(&amount_fen.to_be_bytes());
        message.extend_from_slice(&energy_wh.to_be_bytes());
        retail_mac(
            &self.card_key(KeyUse::Credit, card_serial),
            [0; 8],
            &message,
        )
    }

    /// A memory card's 3-byte PSC.
    pub fn memory_card_psc(&self, card_serial: &str) -> [u8; 3] {
        let block = tdes_encrypt(&self.card_key(KeyUse::Psc, card_serial), [0; 8]);
        [block[0], block[1], block[2]]
    }
}

/// A 4-byte challenge is padded with zeros to a block, as PBOC cards do.
fn challenge_block(challenge: &[u8]) -> Result<[u8; 8], MachineError> {
    let mut block = [0u8; 8];
    match challenge.len() {
        4 | 8 => {
            block[..challenge.len()].copy_from_slice(challenge);
            Ok(block)
        }
        n => Err(MachineError::Challenge(n)),
    }
}

fn tdes_encrypt(key: &[u8; 16], block: [u8; 8]) -> [u8; 8] {
    let cipher = TdesEde2::new(key.into());
    let mut block = block.into();
    cipher.encrypt_block(&mut block);
    block.into()
}

/// ISO 9797-1 MAC algorithm 3 with padding method 2, the first 4 bytes (as the cards use it).
pub fn retail_mac(key: &[u8; 16], iv: [u8; 8], data: &[u8]) -> [u8; 4] {
    let mac = retail_mac_full(key, iv, data);
    [mac[0], mac[1], mac[2], mac[3]]
}

/// ISO 9797-1 MAC algorithm 3 with padding method 2: single-DES CBC under the left key half,
/// the last block finished with 3DES; all 8 bytes.
pub fn retail_mac_full(key: &[u8; 16], iv: [u8; 8], data: &[u8]) -> [u8; 8] {
    let left: [u8; 8] = key[..8].try_into().expect("16-byte key");
    let right: [u8; 8] = key[8..].try_into().expect("16-byte key");
    let k1 = Des::new(&left.into());
    let k2 = Des::new(&right.into());
    let mut padded = data.to_vec();
    padded.push(0x80);
    while !padded.len().is_multiple_of(8) {
        padded.push(0);
    }
    let mut chain = iv;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_des_matches_the_fips_81_example() {
        // FIPS 81 Appendix B: key 0123456789ABCDEF, "Now is t" -> 3FA40E8A984D4815.
        let k = Des::new(&hex_block("0123456789ABCDEF").into());
        let mut b = (*b"Now is t").into();
        k.encrypt_block(&mut b);
        let out: [u8; 8] = b.into();
        assert_eq!(hex::encode_upper(out), "3FA40E8A984D4815");
    }

    #[test]
    fn keys_differ_by_card_and_by_use() {
        let m = EncryptionMachine::default();
        assert_ne!(
            m.card_key(KeyUse::Credit, "A"),
            m.card_key(KeyUse::Credit, "B")
        );
        assert_ne!(
            m.card_key(KeyUse::Credit, "A"),
            m.card_key(KeyUse::Psc, "A")
        );
    }

    #[test]
    fn a_token_verifies_only_for_its_own_grant() {
        let m = EncryptionMachine::default();
        let t = m.credit_token("4401000000000001", 3, 5000, 89_285);
        assert!(m.verify_credit_token("4401000000000001", 3, 5000, 89_285, &t));
        assert!(!m.verify_credit_token("4401000000000001", 4, 5000, 89_285, &t));
        assert!(!m.verify_credit_token("4401000000000002", 3, 5000, 89_285, &t));
    }

    #[test]
    fn a_card_mac_verifies_and_a_changed_byte_does_not() {
        let m = EncryptionMachine::default();
        let mac = m.card_mac("C1", &[1, 2, 3, 4], b"wallet").unwrap();
        let mut data = b"wallet".to_vec();
        data.extend_from_slice(&mac);
        assert!(m.verify_card_mac("C1", &[1, 2, 3, 4], &data).unwrap());
        data[0] ^= 1;
        assert!(!m.verify_card_mac("C1", &[1, 2, 3, 4], &data).unwrap());
        assert_eq!(
            m.external_authenticate("C1", &[0; 5]),
            Err(MachineError::Challenge(5))
        );
    }

    fn hex_block(s: &str) -> [u8; 8] {
        hex::decode(s).unwrap().try_into().unwrap()
    }
}
