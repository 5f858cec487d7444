//! A virtual SLE4442 memory card as an ACS-style reader presents it: the reader firmware's
//! class FF pseudo-APDUs and the chip behind them, played as one (vpcd passes class FF through).
//! Writes happen byte by byte, so a write can be torn after any byte.

use crate::vpcd::{Response, VirtualCard, answer, parse_apdu, status};

/// What an ACS reader reports for an SLE4442: a TS/T0 prefix and the chip's 4-byte ATR.
pub const ATR: [u8; 6] = [0x3B, 0x04, 0xA2, 0x13, 0x10, 0x91];

const SW_OK: u16 = 0x9000;

pub struct Sle4442 {
    pub memory: [u8; 256],
    /// Bytes 0–31 that can no longer be written.
    pub protected: [bool; 32],
    psc: [u8; 3],
    /// The 3-bit PSC error counter: 07, 03, 01, then 00 locked for ever.
    pub error_counter: u8,
    psc_presented: bool,
    /// Bytes to write before the card loses power; `None` never tears.
    pub tear_after_bytes: Option<u32>,
    /// PSC presentations seen, right or wrong (a test witness).
    pub psc_presentations: u32,
}

impl Sle4442 {
    /// A blank chip with this PSC.
    pub fn blank(psc: [u8; 3]) -> Sle4442 {
        let mut memory = [0u8; 256];
        memory[..4].copy_from_slice(&ATR[2..]);
        Sle4442 {
            memory,
            protected: [false; 32],
            psc,
            error_counter: 0x07,
            psc_presented: false,
            tear_after_bytes: None,
            psc_presentations: 0,
        }
    }

    pub fn locked(&self) -> bool {
        self.error_counter == 0
    }

    fn select(&mut self) -> Response {
        self.psc_presented = false;
        status(SW_OK)
    }

    fn read(&self, addr: usize, len: usize) -> Response {
        match self.memory.get(addr..addr + len) {
            Some(data) if len > 0 => answer(data, SW_OK),
            _ => status(0x6B00),
        }
    }

    fn write(&mut self, addr: usize, data: &[u8]) -> Response {
        if self.locked() {
            return status(0x6983);
        }
        if !self.psc_presented {
            return status(0x6982);
        }
        if addr + data.len() > 256 {
            return status(0x6B00);
        }
        for (i, byte) in data.iter().enumerate() {
            if let Some(left) = self.tear_after_bytes.as_mut() {
                if *left == 0 {
                    self.tear_after_bytes = None;
                    return Response::Torn;
                }
                *left -= 1;
            }
            let at = addr + i;
            if at >= 32 || !self.protected[at] {
                self.memory[at] = *byte;
            }
        }
        status(SW_OK)
    }

    fn protect(&mut self, addr: usize, data: &[u8]) -> Response {
        if !self.psc_presented {
            return status(0x6982);
        }
        if addr + data.len() > 32 {
            return status(0x6B00);
        }
        for (i, byte) in data.iter().enumerate() {
            if self.memory[addr + i] == *byte {
                self.protected[addr + i] = true;
            }
        }
        status(SW_OK)
    }

    fn present_psc(&mut self, psc: &[u8]) -> Response {
        self.psc_presentations += 1;
        if self.locked() {
            return answer(&[], 0x9000);
        }
        // The chip spends a try before it compares, so pulling the card cannot save one.
        let before = self.error_counter;
        self.error_counter = before & (before >> 1);
        if psc == self.psc {
            self.error_counter = 0x07;
            self.psc_presented = true;
        }
        status(0x9000 | u16::from(self.error_counter))
    }

    fn protection_bits(&self) -> [u8; 4] {
        let mut bits = [0u8; 4];
        for (i, p) in self.protected.iter().enumerate() {
            if !p {
                bits[i / 8] |= 1 << (i % 8);
            }
        }
        bits
    }
}

impl VirtualCard for Sle4442 {
    fn atr(&self) -> Vec<u8> {
        ATR.to_vec()
    }

    fn reset(&mut self) {
        self.psc_presented = false;
    }

    fn command(&mut self, apdu: &[u8]) -> Response {
        let Some((header, data, le)) = parse_apdu(apdu) else {
            return status(0x6700);
        };
        let addr = usize::from(header[3]);
        match (header, data, le) {
            ([0xFF, 0xA4, 0x00, 0x00], [0x06], None) => self.select(),
            ([0xFF, 0xA4, ..], _, _) => status(0x6A81),
            ([0xFF, 0xB0, 0x00, _], [], Some(len)) => self.read(addr, len),
            ([0xFF, 0xB1, 0x00, 0x00], [], Some(4)) => {
                let shown = if self.psc_presented { self.psc } else { [0; 3] };
                answer(&[self.error_counter, shown[0], shown[1], shown[2]], SW_OK)
            }
            ([0xFF, 0xB2, 0x00, 0x00], [], Some(4)) => answer(&self.protection_bits(), SW_OK),
            ([0xFF, 0xD0, 0x00, _], data, None) if !data.is_empty() => self.write(addr, data),
            ([0xFF, 0xD1, 0x00, _], data, None) if !data.is_empty() => self.protect(addr, data),
            ([0xFF, 0x20, 0x00, 0x00], psc, None) if psc.len() == 3 => self.present_psc(psc),
            ([0xFF, 0xD2, 0x00, 0x01], new, None) if new.len() == 3 => {
                if !self.psc_presented {
                    return status(0x6982);
                }
                self.psc.copy_from_slice(new);
                status(SW_OK)
            }
            ([0xFF, ..], _, _) => status(0x6D00),
            _ => status(0x6E00),
        }
    }
}

/// The Hengtai "HT01" layout (docs/cards/hengtai-sle4442.md), as the utility's card issuing
/// system and the vendor's meter know it.
pub mod ht01 {
    use super::Sle4442;
    use crate::encryption_machine::EncryptionMachine;

    pub const SLOT_A: usize = 0x40;
    pub const SLOT_B: usize = 0x60;
    pub const RETURN: usize = 0x80;

    /// A credit slot, decoded.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Slot {
        pub sequence: u8,
        pub purchase_count: u16,
        pub amount_fen: u32,
        pub energy_wh: u32,
        pub taken: bool,
        pub token: [u8; 5],
    }

    impl Slot {
        pub fn decode(raw: &[u8]) -> Option<Slot> {
            if raw.len() != 32 || crc16(&raw[..30]) != u16::from_be_bytes([raw[30], raw[31]]) {
                return None;
            }
            Some(Slot {
                sequence: raw[0],
                purchase_count: u16::from_be_bytes([raw[1], raw[2]]),
                amount_fen: u32::from_be_bytes(raw[3..7].try_into().ok()?),
                energy_wh: u32::from_be_bytes(raw[7..11].try_into().ok()?),
                taken: raw[11] == 0x01,
                token: raw[12..17].try_into().ok()?,
            })
        }

        pub fn encode(&self) -> [u8; 32] {
            let mut raw = [0u8; 32];
            raw[0] = self.sequence;
            raw[1..3].copy_from_slice(&self.purchase_count.to_be_bytes());
            raw[3..7].copy_from_slice(&self.amount_fen.to_be_bytes());
            raw[7..11].copy_from_slice(&self.energy_wh.to_be_bytes());
            raw[11] = u8::from(self.taken);
            raw[12..17].copy_from_slice(&self.token);
            let crc = crc16(&raw[..30]);
            raw[30..].copy_from_slice(&crc.to_be_bytes());
            raw
        }
    }

    /// CRC-16/CCITT-FALSE.
    pub fn crc16(data: &[u8]) -> u16 {
        let mut crc = 0xFFFFu16;
        for byte in data {
            crc ^= u16::from(*byte) << 8;
            for _ in 0..8 {
                crc = if crc & 0x8000 != 0 {
                    (crc << 1) ^ 0x1021
                } else {
                    crc << 1
                };
            }
        }
        crc
    }

    /// Issues a Hengtai user card: header, account block, protection, PSC from the machine.
    pub fn issue(
        machine: &EncryptionMachine,
        card_serial: &str,
        utility_code: &str,
        customer_number: &str,
        meter_number: &str,
    ) -> Sle4442 {
        let mut card = Sle4442::blank(machine.memory_card_psc(card_serial));
        let m = &mut card.memory;
        m[0x04..0x08].copy_from_slice(b"HT01");
        m[0x08..0x10].copy_from_slice(&bcd(card_serial));
        m[0x10..0x12].copy_from_slice(&bcd(utility_code));
        m[0x12] = 0x01;
        m[0x20..0x2C].copy_from_slice(&padded(customer_number));
        m[0x2C..0x38].copy_from_slice(&padded(meter_number));
        card.protected[..0x13].fill(true);
        card
    }

    /// The current slot (the valid one with the newer sequence), and where it is.
    pub fn current(card: &Sle4442) -> Option<(usize, Slot)> {
        let a = Slot::decode(&card.memory[SLOT_A..SLOT_A + 32]);
        let b = Slot::decode(&card.memory[SLOT_B..SLOT_B + 32]);
        match (a, b) {
            (Some(a), Some(b)) if newer(b.sequence, a.sequence) => Some((SLOT_B, b)),
            (Some(a), _) => Some((SLOT_A, a)),
            (None, Some(b)) => Some((SLOT_B, b)),
            (None, None) => None,
        }
    }

    fn newer(b: u8, a: u8) -> bool {
        (1..=127).contains(&b.wrapping_sub(a))
    }

    pub(crate) fn bcd(digits: &str) -> Vec<u8> {
        digits
            .as_bytes()
            .chunks(2)
            .map(|pair| ((pair[0] - b'0') << 4) | (pair.get(1).map_or(0, |d| d - b'0')))
            .collect()
    }

    pub(crate) fn padded(text: &str) -> [u8; 12] {
        let mut out = [b' '; 12];
        out[..text.len()].copy_from_slice(text.as_bytes());
        out
    }
}

impl std::fmt::Debug for Sle4442 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sle4442")
            .field("error_counter", &self.error_counter)
            .finish_non_exhaustive()
    }
}
