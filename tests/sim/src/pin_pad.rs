//! An encrypting PIN pad on the far end of a real pty, speaking `docs/devices/pin-pad.md`: it
//! holds a master key (a test key), takes working keys encrypted under it, lets a scripted
//! customer type a PIN on its keys, and answers with an ISO 9564 format 0 PIN block under the
//! PIN key, and with ISO 9797-1 MACs under the MAC key.
//!
//! The helpers for PIN blocks and wrapped keys are shared with the acquirer simulator, which
//! checks what this pad makes.

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use des::TdesEde2;
use des::cipher::{BlockCipherDecrypt, BlockCipherEncrypt, KeyInit};
use serialport::{SerialPort, TTYPort};

use crate::encryption_machine::retail_mac_full;

/// The pad's master key. TEST KEY ONLY: it is in the source, so it protects nothing.
pub const TEST_MASTER_KEY: [u8; 16] = *b"selfvend-TESTKEY";

/// What the scripted customer (or the line) does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PadAction {
    /// A digit key.
    Digit(u8),
    Enter,
    Cancel,
    /// The clear key: the digits so far are gone.
    Clear,
    /// The next answer is line noise.
    Garbage,
    /// The next answer has a wrong LRC.
    BadLrc,
    /// The pad hears nothing for the next this many frames.
    Silence(u32),
}

impl PadAction {
    /// The digits of `pin` then Enter, as a customer types them.
    pub fn pin(pin: &str) -> Vec<PadAction> {
        let mut keys: Vec<PadAction> = pin.bytes().map(|b| PadAction::Digit(b - b'0')).collect();
        keys.push(PadAction::Enter);
        keys
    }
}

/// 3DES-ECB (two-key) of one block.
pub fn tdes_encrypt(key: &[u8; 16], block: [u8; 8]) -> [u8; 8] {
    let mut b = block.into();
    TdesEde2::new(key.into()).encrypt_block(&mut b);
    b.into()
}

pub fn tdes_decrypt(key: &[u8; 16], block: [u8; 8]) -> [u8; 8] {
    let mut b = block.into();
    TdesEde2::new(key.into()).decrypt_block(&mut b);
    b.into()
}

/// A key's check value: the first 4 bytes of its encryption of zeros.
pub fn check_value(key: &[u8; 16]) -> [u8; 4] {
    let e = tdes_encrypt(key, [0; 8]);
    [e[0], e[1], e[2], e[3]]
}

/// A working key as an acquirer delivers it: encrypted under `master`, with its check value.
pub fn wrap_key(master: &[u8; 16], key: &[u8; 16]) -> ([u8; 16], [u8; 4]) {
    let mut out = [0u8; 16];
    for (i, half) in key.chunks(8).enumerate() {
        let block: [u8; 8] = half.try_into().expect("8-byte halves");
        out[i * 8..i * 8 + 8].copy_from_slice(&tdes_encrypt(master, block));
    }
    (out, check_value(key))
}

fn unwrap_key(master: &[u8; 16], wrapped: &[u8]) -> [u8; 16] {
    let mut out = [0u8; 16];
    for (i, half) in wrapped.chunks(8).enumerate() {
        let block: [u8; 8] = half.try_into().expect("8-byte halves");
        out[i * 8..i * 8 + 8].copy_from_slice(&tdes_decrypt(master, block));
    }
    out
}

/// The 12 PAN digits a format 0 block is bound to (rightmost, before the check digit).
pub fn pan12(pan: &str) -> String {
    let without_check = &pan[..pan.len() - 1];
    without_check[without_check.len() - 12..].to_string()
}

/// ISO 9564-1 format 0 clear PIN block for `pin` and the 12 PAN digits.
pub fn clear_pin_block(pin: &str, pan12: &str) -> [u8; 8] {
    let mut pin_field = format!("0{:X}{pin}", pin.len());
    while pin_field.len() < 16 {
        pin_field.push('F');
    }
    let pin_field = hex::decode(pin_field).expect("hex");
    let pan_field = hex::decode(format!("0000{pan12}")).expect("digits");
    let mut block = [0u8; 8];
    for i in 0..8 {
        block[i] = pin_field[i] ^ pan_field[i];
    }
    block
}

/// The PIN inside an encrypted format 0 block, if it is one for this PAN.
pub fn decode_pin_block(pin_key: &[u8; 16], pan: &str, block: &[u8; 8]) -> Option<String> {
    let clear = tdes_decrypt(pin_key, *block);
    let pan_field = hex::decode(format!("0000{}", pan12(pan))).ok()?;
    let pin_field: Vec<u8> = clear.iter().zip(&pan_field).map(|(a, b)| a ^ b).collect();
    let nibbles = hex::encode_upper(pin_field);
    let len = usize::from_str_radix(nibbles.get(1..2)?, 16).ok()?;
    if !nibbles.starts_with('0') || !(4..=12).contains(&len) {
        return None;
    }
    let pin = &nibbles[2..2 + len];
    let pad = &nibbles[2 + len..];
    (pin.bytes().all(|b| b.is_ascii_digit()) && pad.bytes().all(|b| b == b'F'))
        .then(|| pin.to_string())
}

/// A frame: STX, LEN, CMD, DATA, ETX, LRC.
fn frame(cmd: u8, data: &[u8]) -> Vec<u8> {
    let mut f = vec![0x02];
    f.extend_from_slice(&((data.len() + 1) as u16).to_be_bytes());
    f.push(cmd);
    f.extend_from_slice(data);
    f.push(0x03);
    let lrc = f[1..].iter().fold(0u8, |a, b| a ^ b);
    f.push(lrc);
    f
}

struct Entry {
    min: usize,
    max: usize,
    deadline: Instant,
    pan12: String,
    digits: String,
}

struct Pad {
    pin_key: Option<[u8; 16]>,
    mac_key: Option<[u8; 16]>,
    keys: VecDeque<PadAction>,
    entry: Option<Entry>,
    garbage_next: bool,
    bad_lrc_next: bool,
    deaf_for: u32,
    /// PIN blocks made (a test witness that the PIN went nowhere else).
    pin_blocks: u32,
}

impl Pad {
    fn answer(&mut self, cmd: u8, data: &[u8]) -> Vec<u8> {
        let rc = |code: u8| frame(cmd | 0x80, &[code]);
        match (cmd, data) {
            (0x10, []) => {
                let mut d = vec![0x00, 1, u8::from(self.pin_key.is_some())];
                d.push(u8::from(self.mac_key.is_some()));
                d.extend_from_slice(b"SV-EPP 1.0");
                frame(0x90, &d)
            }
            (0x11, [slot @ (1 | 2), rest @ ..]) if rest.len() == 20 => {
                let key = unwrap_key(&TEST_MASTER_KEY, &rest[..16]);
                if check_value(&key) != rest[16..] {
                    return rc(0xE1);
                }
                if *slot == 1 {
                    self.pin_key = Some(key);
                } else {
                    self.mac_key = Some(key);
                }
                rc(0x00)
            }
            (0x11, _) => rc(0xE3),
            (0x12, _) if self.entry.is_some() => rc(0xE7),
            (0x12, [min, max, secs, pan @ ..]) => {
                let ok = (4..=12).contains(min)
                    && (*min..=12).contains(max)
                    && (1..=120).contains(secs)
                    && pan.len() == 12
                    && pan.iter().all(u8::is_ascii_digit);
                if !ok {
                    return rc(0xE3);
                }
                if self.pin_key.is_none() {
                    return rc(0xE4);
                }
                self.entry = Some(Entry {
                    min: usize::from(*min),
                    max: usize::from(*max),
                    deadline: Instant::now() + Duration::from_secs(u64::from(*secs)),
                    pan12: String::from_utf8_lossy(pan).into_owned(),
                    digits: String::new(),
                });
                rc(0x00)
            }
            (0x13, []) => {
                self.entry = None;
                rc(0x00)
            }
            (0x14, data) if !data.is_empty() => match self.mac_key {
                None => rc(0xE5),
                Some(key) => {
                    let mut d = vec![0x00];
                    d.extend_from_slice(&retail_mac_full(&key, [0; 8], data));
                    frame(0x94, &d)
                }
            },
            (0x14, _) => rc(0xE3),
            _ => rc(0xE6),
        }
    }

    /// What the customer's next key (or the clock) makes the pad say during an entry.
    fn tick(&mut self) -> Option<Vec<u8>> {
        let entry = self.entry.as_mut()?;
        if Instant::now() >= entry.deadline {
            self.entry = None;
            return Some(frame(0xA1, &[0xC2]));
        }
        let key = self.keys.pop_front()?;
        match key {
            PadAction::Digit(d) if entry.digits.len() < entry.max => {
                entry.digits.push(char::from(b'0' + d));
                Some(frame(0xA0, &[entry.digits.len() as u8]))
            }
            PadAction::Digit(_) => None,
            PadAction::Clear => {
                entry.digits.clear();
                Some(frame(0xA0, &[0]))
            }
            PadAction::Cancel => {
                self.entry = None;
                Some(frame(0xA1, &[0xC1]))
            }
            PadAction::Enter if entry.digits.len() < entry.min => None,
            PadAction::Enter => {
                let clear = clear_pin_block(&entry.digits, &entry.pan12);
                let key = self.pin_key.expect("an entry starts only with a PIN key");
                let mut d = vec![0x00];
                d.extend_from_slice(&tdes_encrypt(&key, clear));
                self.entry = None;
                self.pin_blocks += 1;
                Some(frame(0xA1, &d))
            }
            // Line faults apply at once (see `apply`); they are never queued.
            PadAction::Garbage | PadAction::BadLrc | PadAction::Silence(_) => None,
        }
    }

    fn apply(&mut self, action: PadAction) {
        match action {
            PadAction::Garbage => self.garbage_next = true,
            PadAction::BadLrc => self.bad_lrc_next = true,
            PadAction::Silence(n) => self.deaf_for = n,
            key => self.keys.push_back(key),
        }
    }

    fn garble(&mut self, mut out: Vec<u8>) -> Vec<u8> {
        if std::mem::take(&mut self.garbage_next) {
            return b"\x15\xFF\x00 NAK noise".to_vec();
        }
        if std::mem::take(&mut self.bad_lrc_next) {
            let last = out.len() - 1;
            out[last] ^= 0xFF;
        }
        out
    }
}

fn lock(p: &Mutex<Pad>) -> MutexGuard<'_, Pad> {
    p.lock().unwrap_or_else(|e| e.into_inner())
}

/// A simulated PIN pad serving one end of a pty pair; the host opens [`path`](Self::path).
pub struct SimulatedPinPad {
    path: String,
    pad: Arc<Mutex<Pad>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    _host_end: TTYPort,
}

impl SimulatedPinPad {
    /// A pad with its master key ([`TEST_MASTER_KEY`]) and no working keys.
    pub fn start() -> std::io::Result<SimulatedPinPad> {
        let (mut pad_end, host_end) = TTYPort::pair()?;
        let path = host_end
            .name()
            .ok_or_else(|| std::io::Error::other("the pty has no name"))?;
        pad_end.set_timeout(Duration::from_millis(10))?;
        let pad = Arc::new(Mutex::new(Pad {
            pin_key: None,
            mac_key: None,
            keys: VecDeque::new(),
            entry: None,
            garbage_next: false,
            bad_lrc_next: false,
            deaf_for: 0,
            pin_blocks: 0,
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (pad, stop) = (pad.clone(), stop.clone());
            std::thread::Builder::new()
                .name("pin-pad".into())
                .spawn(move || serve(pad_end, &pad, &stop))?
        };
        Ok(SimulatedPinPad {
            path,
            pad,
            stop,
            thread: Some(thread),
            _host_end: host_end,
        })
    }

    pub fn path(&self) -> &str {
        &self.path
    }

    pub fn act(&self, actions: &[PadAction]) {
        let mut pad = lock(&self.pad);
        for a in actions {
            pad.apply(*a);
        }
    }

    /// The customer walks away: the keys not yet pressed are never pressed.
    pub fn walk_away(&self) {
        lock(&self.pad).keys.clear();
    }

    /// PIN blocks the pad has made.
    pub fn pin_blocks(&self) -> u32 {
        lock(&self.pad).pin_blocks
    }
}

impl Drop for SimulatedPinPad {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Takes the next well-formed frame out of `rx` (dropping noise before an STX).
fn next_frame(rx: &mut Vec<u8>) -> Option<(u8, Vec<u8>)> {
    loop {
        let Some(start) = rx.iter().position(|&b| b == 0x02) else {
            rx.clear();
            return None;
        };
        rx.drain(..start);
        if rx.len() < 3 {
            return None;
        }
        let n = usize::from(u16::from_be_bytes([rx[1], rx[2]]));
        if n == 0 || n > 2049 {
            rx.remove(0);
            continue;
        }
        if rx.len() < n + 5 {
            return None;
        }
        let lrc = rx[1..n + 4].iter().fold(0u8, |a, b| a ^ b);
        if rx[n + 3] != 0x03 || rx[n + 4] != lrc {
            rx.remove(0);
            continue;
        }
        let f: Vec<u8> = rx.drain(..n + 5).collect();
        return Some((f[3], f[4..n + 3].to_vec()));
    }
}

fn serve(mut port: TTYPort, pad: &Mutex<Pad>, stop: &AtomicBool) {
    let mut rx = Vec::new();
    let mut buf = [0u8; 512];
    while !stop.load(Ordering::Relaxed) {
        match port.read(&mut buf) {
            Ok(n) => rx.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
        let mut out = Vec::new();
        {
            let mut p = lock(pad);
            while let Some((cmd, data)) = next_frame(&mut rx) {
                if p.deaf_for > 0 {
                    p.deaf_for -= 1;
                    continue;
                }
                let answer = p.answer(cmd, &data);
                out.push(p.garble(answer));
            }
            if let Some(event) = p.tick() {
                out.push(p.garble(event));
            }
        }
        for o in out {
            if port.write_all(&o).is_err() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_format_0_block_is_the_published_example() {
        // PIN 1234, PAN 43219876543210987: the example printed in most ISO 9564 references.
        let block = clear_pin_block("1234", &pan12("43219876543210987"));
        assert_eq!(hex::encode_upper(block), "0412AC89ABCDEF67");
    }

    #[test]
    fn a_block_decodes_only_with_its_key_and_pan() {
        let key = *b"0123456789ABCDEF";
        let block = tdes_encrypt(
            &key,
            clear_pin_block("123456", &pan12("6222021234567890128")),
        );
        assert_eq!(
            decode_pin_block(&key, "6222021234567890128", &block).as_deref(),
            Some("123456")
        );
        assert_eq!(decode_pin_block(&key, "6217001234567893", &block), None);
    }
}
