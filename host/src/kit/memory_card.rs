//! The kit's memory cards: SLE4442, SLE4428 and AT24 EEPROM cards behind the class FF
//! pseudo-APDUs an ACS-style reader's firmware offers (`docs/vendors/memory-cards.md`).
//!
//! The chip writes byte by byte, so the kit can cut the power after any byte of a write.

use std::fmt;

/// A memory chip the kit can play.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemoryType {
    /// Siemens/Infineon SLE4442: 256 bytes, a 3-byte PSC with a 3-try error counter.
    Sle4442,
    /// SLE4428: 1024 bytes, a 2-byte PSC with an 8-try error counter.
    Sle4428,
    /// An I2C EEPROM (AT24C02 and kin): 256 bytes, no PSC.
    At24,
}

impl MemoryType {
    pub const ALL: [MemoryType; 3] = [MemoryType::Sle4442, MemoryType::Sle4428, MemoryType::At24];

    pub fn parse(name: &str) -> Result<MemoryType, String> {
        match name {
            "sle4442" => Ok(MemoryType::Sle4442),
            "sle4428" => Ok(MemoryType::Sle4428),
            "at24" => Ok(MemoryType::At24),
            other => Err(format!(
                "--memory {other:?}: the kit plays sle4442, sle4428 or at24"
            )),
        }
    }

    pub fn size(self) -> usize {
        match self {
            MemoryType::Sle4442 | MemoryType::At24 => 256,
            MemoryType::Sle4428 => 1024,
        }
    }

    /// What an ACS reader reports as the card's ATR (an I2C card has none: the reader's own).
    pub fn atr(self) -> Vec<u8> {
        match self {
            MemoryType::Sle4442 => vec![0x3B, 0x04, 0xA2, 0x13, 0x10, 0x91],
            MemoryType::Sle4428 => vec![0x3B, 0x04, 0x92, 0x23, 0x10, 0x91],
            MemoryType::At24 => vec![0x3B, 0x04, 0x49, 0x32, 0x43, 0x2E],
        }
    }

    /// The card type byte of `FF A4 00 00 01 tt`.
    pub fn select_code(self) -> u8 {
        match self {
            MemoryType::Sle4442 => 0x06,
            MemoryType::Sle4428 => 0x05,
            MemoryType::At24 => 0x01,
        }
    }

    pub fn psc_len(self) -> usize {
        match self {
            MemoryType::Sle4442 => 3,
            MemoryType::Sle4428 => 2,
            MemoryType::At24 => 0,
        }
    }

    /// The error counter of a card no wrong PSC was presented to.
    fn full_counter(self) -> u8 {
        match self {
            MemoryType::Sle4442 => 0x07,
            _ => 0xFF,
        }
    }
}

impl fmt::Display for MemoryType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MemoryType::Sle4442 => "sle4442",
            MemoryType::Sle4428 => "sle4428",
            MemoryType::At24 => "at24",
        })
    }
}

/// What the card did with one command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// The response, status word included.
    Response(Vec<u8>),
    /// The power went during the command: the reader reports the card gone.
    Torn,
}

/// One memory card in the kit's reader.
#[derive(Debug, Clone)]
pub struct MemoryCard {
    pub kind: MemoryType,
    pub memory: Vec<u8>,
    /// Bytes 0–31 of an SLE4442 that can no longer be written.
    protected: [bool; 32],
    psc: Vec<u8>,
    error_counter: u8,
    psc_presented: bool,
    selected: bool,
    /// Bytes the card writes before the power goes; `None` never tears.
    pub tear_after_bytes: Option<u32>,
    /// Bytes written into main memory so far (a witness for the tear points).
    pub bytes_written: u32,
    /// PSC presentations so far, right or wrong.
    pub psc_presentations: u32,
}

impl MemoryCard {
    /// A card with these contents and PSC (which must be as long as the chip's).
    pub fn new(kind: MemoryType, image: Vec<u8>, psc: Vec<u8>) -> Result<MemoryCard, String> {
        if image.len() != kind.size() {
            return Err(format!(
                "the image is {} bytes; an {kind} holds {}",
                image.len(),
                kind.size()
            ));
        }
        if psc.len() != kind.psc_len() {
            return Err(format!(
                "the PSC is {} bytes; an {kind} takes {}",
                psc.len(),
                kind.psc_len()
            ));
        }
        Ok(MemoryCard {
            kind,
            memory: image,
            protected: [false; 32],
            psc,
            error_counter: kind.full_counter(),
            psc_presented: false,
            selected: false,
            tear_after_bytes: None,
            bytes_written: 0,
            psc_presentations: 0,
        })
    }

    /// A card of this type with nothing on it (all bytes FF), and the chip's default PSC.
    pub fn blank(kind: MemoryType) -> MemoryCard {
        let psc = vec![0xFF; kind.psc_len()];
        MemoryCard::new(kind, vec![0xFF; kind.size()], psc).expect("sizes are the chip's")
    }

    pub fn atr(&self) -> Vec<u8> {
        self.kind.atr()
    }

    /// Power on (a new insert): what the chip held in RAM is gone.
    pub fn power_on(&mut self) {
        self.psc_presented = false;
        self.selected = false;
    }

    pub fn locked(&self) -> bool {
        self.error_counter == 0
    }

    /// Tries a PSC presentation could still spend.
    pub fn tries_left(&self) -> u32 {
        self.error_counter.count_ones()
    }

    pub fn command(&mut self, apdu: &[u8]) -> Answer {
        let Some((&[cla, ins, p1, p2], body)) = apdu.split_first_chunk::<4>() else {
            return status(0x6700);
        };
        if cla != 0xFF {
            return status(0x6E00);
        }
        let addr = usize::from(p1) << 8 | usize::from(p2);
        // Case 2 (Le only) or case 3 (Lc and data), short APDUs.
        let (data, le) = match body {
            [] => (&[][..], None),
            [le] => (&[][..], Some(if *le == 0 { 256 } else { usize::from(*le) })),
            [lc, data @ ..] if data.len() == usize::from(*lc) => (data, None),
            _ => return status(0x6700),
        };
        if ins == 0xA4 {
            return match (p1, p2, data) {
                (0, 0, [t]) if *t == self.kind.select_code() => {
                    self.selected = true;
                    self.psc_presented = false;
                    status(0x9000)
                }
                (0, 0, [_]) => status(0x6A81),
                _ => status(0x6B00),
            };
        }
        if !self.selected {
            // The reader does not know what chip it holds until the card type is selected.
            return status(0x6986);
        }
        match (ins, data, le) {
            (0xB0, [], Some(len)) => self.read(addr, len),
            (0xD0, data, None) if !data.is_empty() => self.write(addr, data),
            (0x20, psc, None) if self.kind.psc_len() > 0 && p1 == 0 && p2 == 0 => {
                self.present_psc(psc)
            }
            (0xB1, [], Some(len)) if self.kind.psc_len() > 0 && addr == 0 => {
                self.security_memory(len)
            }
            (0xB2, [], Some(4)) if self.kind == MemoryType::Sle4442 && addr == 0 => {
                answer(&self.protection_bits())
            }
            (0xD1, data, None) if self.kind == MemoryType::Sle4442 && !data.is_empty() => {
                self.protect(addr, data)
            }
            (0xD2, new, None) if self.kind.psc_len() > 0 && new.len() == self.kind.psc_len() => {
                if !self.psc_presented {
                    return status(0x6982);
                }
                self.psc = new.to_vec();
                status(0x9000)
            }
            (0xB0 | 0xD0 | 0x20 | 0xB1 | 0xB2 | 0xD1 | 0xD2, _, _) => status(0x6700),
            _ => status(0x6D00),
        }
    }

    fn read(&self, addr: usize, len: usize) -> Answer {
        match self.memory.get(addr..addr + len) {
            Some(data) => answer(data),
            None => status(0x6B00),
        }
    }

    fn write(&mut self, addr: usize, data: &[u8]) -> Answer {
        if self.locked() {
            return status(0x6983);
        }
        if self.kind.psc_len() > 0 && !self.psc_presented {
            return status(0x6982);
        }
        if addr + data.len() > self.memory.len() {
            return status(0x6B00);
        }
        for (i, byte) in data.iter().enumerate() {
            if let Some(left) = self.tear_after_bytes.as_mut() {
                if *left == 0 {
                    self.tear_after_bytes = None;
                    self.power_on();
                    return Answer::Torn;
                }
                *left -= 1;
            }
            let at = addr + i;
            if at >= 32 || !self.protected[at] || self.kind != MemoryType::Sle4442 {
                self.memory[at] = *byte;
            }
            self.bytes_written += 1;
        }
        status(0x9000)
    }

    fn protect(&mut self, addr: usize, data: &[u8]) -> Answer {
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
        status(0x9000)
    }

    fn present_psc(&mut self, psc: &[u8]) -> Answer {
        if psc.len() != self.kind.psc_len() {
            return status(0x6700);
        }
        self.psc_presentations += 1;
        if self.locked() {
            return status(0x9000);
        }
        // The chip spends a try before it compares, so pulling the card cannot save one.
        let before = self.error_counter;
        self.error_counter = before & (before >> 1);
        if psc == self.psc {
            self.error_counter = self.kind.full_counter();
            self.psc_presented = true;
        }
        status(0x9000 | u16::from(self.error_counter))
    }

    /// The error counter, then the PSC once it was presented (zeros before).
    fn security_memory(&self, len: usize) -> Answer {
        let mut out = vec![self.error_counter];
        if self.psc_presented {
            out.extend_from_slice(&self.psc);
        } else {
            out.resize(1 + self.psc.len(), 0);
        }
        if len != out.len() {
            return status(0x6C00 | out.len() as u16);
        }
        answer(&out)
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

fn status(sw: u16) -> Answer {
    Answer::Response(sw.to_be_bytes().to_vec())
}

fn answer(data: &[u8]) -> Answer {
    let mut out = data.to_vec();
    out.extend_from_slice(&[0x90, 0x00]);
    Answer::Response(out)
}

/// Reads a card image: the chip's size in raw bytes, or hex text (whitespace and `#` comments
/// allowed).
pub fn parse_image(kind: MemoryType, bytes: &[u8]) -> Result<Vec<u8>, String> {
    if bytes.len() == kind.size() {
        return Ok(bytes.to_vec());
    }
    let text = std::str::from_utf8(bytes).map_err(|_| {
        format!(
            "{} bytes: an {kind} image is {} raw bytes, or hex text",
            bytes.len(),
            kind.size()
        )
    })?;
    let mut digits = String::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("");
        for c in line.chars().filter(|c| !c.is_whitespace()) {
            if !c.is_ascii_hexdigit() {
                return Err(format!("line {}: {c:?} is not a hex digit", n + 1));
            }
            digits.push(c);
        }
    }
    let image =
        hex::decode(&digits).map_err(|_| format!("{} hex digits: an odd number", digits.len()))?;
    if image.len() != kind.size() {
        return Err(format!(
            "the hex text holds {} bytes; an {kind} holds {}",
            image.len(),
            kind.size()
        ));
    }
    Ok(image)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(card: &mut MemoryCard, apdu: &[u8]) -> Vec<u8> {
        match card.command(apdu) {
            Answer::Response(r) => r,
            Answer::Torn => panic!("torn"),
        }
    }

    #[test]
    fn a_write_needs_the_psc_and_tears_after_the_byte_asked() {
        let mut card = MemoryCard::new(MemoryType::Sle4442, vec![0; 256], vec![1, 2, 3]).unwrap();
        assert_eq!(ok(&mut card, &[0xFF, 0xB0, 0, 0, 1]), [0x69, 0x86]);
        assert_eq!(ok(&mut card, &[0xFF, 0xA4, 0, 0, 1, 6]), [0x90, 0]);
        assert_eq!(ok(&mut card, &[0xFF, 0xD0, 0, 0x40, 2, 9, 9]), [0x69, 0x82]);
        assert_eq!(ok(&mut card, &[0xFF, 0x20, 0, 0, 3, 1, 2, 4]), [0x90, 0x03]);
        assert_eq!(ok(&mut card, &[0xFF, 0x20, 0, 0, 3, 1, 2, 3]), [0x90, 0x07]);
        card.tear_after_bytes = Some(1);
        assert_eq!(card.command(&[0xFF, 0xD0, 0, 0x40, 2, 9, 9]), Answer::Torn);
        assert_eq!(card.memory[0x40..0x42], [9, 0]);
        assert_eq!(card.psc_presentations, 2);
        // Power went: select and PSC again.
        assert_eq!(ok(&mut card, &[0xFF, 0xB0, 0, 0x40, 2]), [0x69, 0x86]);
    }

    #[test]
    fn three_wrong_pscs_lock_an_sle4442_for_ever() {
        let mut card = MemoryCard::blank(MemoryType::Sle4442);
        ok(&mut card, &[0xFF, 0xA4, 0, 0, 1, 6]);
        for counter in [0x03, 0x01, 0x00] {
            assert_eq!(
                ok(&mut card, &[0xFF, 0x20, 0, 0, 3, 0, 0, 0]),
                [0x90, counter]
            );
        }
        assert!(card.locked());
        assert_eq!(
            ok(&mut card, &[0xFF, 0x20, 0, 0, 3, 0xFF, 0xFF, 0xFF]),
            [0x90, 0]
        );
    }

    #[test]
    fn images_are_raw_or_hex_text() {
        let raw = vec![7u8; 256];
        assert_eq!(parse_image(MemoryType::At24, &raw).unwrap(), raw);
        let text = format!("# a card\n{}\n", "07 ".repeat(256));
        assert_eq!(parse_image(MemoryType::At24, text.as_bytes()).unwrap(), raw);
        assert_eq!(
            parse_image(MemoryType::At24, b"0g").unwrap_err(),
            "line 1: 'g' is not a hex digit"
        );
        assert_eq!(
            parse_image(MemoryType::Sle4428, &[b'0'; 256]).unwrap_err(),
            "the hex text holds 128 bytes; an sle4428 holds 1024"
        );
    }
}
