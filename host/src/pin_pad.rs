//! The encrypting PIN pad on a serial port, in the protocol of `docs/devices/pin-pad.md`:
//! framed commands `02 LEN CMD DATA 03 LRC`, working keys loaded encrypted under the pad's
//! master key, PIN entry on the pad's own keys reported digit by digit, and an ISO 9564
//! format 0 PIN block out, encrypted under the PIN key.
//!
//! The host never sees a clear PIN or a clear key. A [`PinBlock`] prints as `PinBlock(..)`;
//! nothing here logs, and no error carries a PIN block or a key.

use std::io::{Read, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use serialport::{ClearBuffer, DataBits, FlowControl, Parity, SerialPort, StopBits, TTYPort};

const STX: u8 = 0x02;
const ETX: u8 = 0x03;
/// The longest CMD + DATA either side sends.
const MAX_LEN: usize = 2049;

mod command {
    pub const STATUS: u8 = 0x10;
    pub const LOAD_WORKING_KEY: u8 = 0x11;
    pub const GET_PIN: u8 = 0x12;
    pub const ABORT: u8 = 0x13;
    pub const MAC: u8 = 0x14;
    pub const DIGITS: u8 = 0xA0;
    pub const ENTRY_ENDED: u8 = 0xA1;
}

/// Result codes.
mod rc {
    pub const DONE: u8 = 0x00;
    pub const CANCELLED: u8 = 0xC1;
    pub const TIMED_OUT: u8 = 0xC2;
}

fn meaning(code: u8) -> &'static str {
    match code {
        0xC1 => "the customer pressed Cancel",
        0xC2 => "the customer took too long",
        0xC3 => "the host aborted the entry",
        0xE1 => "the check value does not match the key",
        0xE2 => "no master key is loaded",
        0xE3 => "a field is out of range",
        0xE4 => "no PIN key is loaded",
        0xE5 => "no MAC key is loaded",
        0xE6 => "unknown command",
        0xE7 => "busy: a PIN entry is under way",
        _ => "an unknown result code",
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PinPadError {
    #[error("{port}: cannot open the PIN pad: {source}")]
    Open {
        port: String,
        source: std::io::Error,
    },
    #[error("{port}: {source}")]
    Io {
        port: String,
        source: std::io::Error,
    },
    #[error("{port}: the PIN pad did not answer {command} within {waited:?}")]
    Silent {
        port: String,
        command: &'static str,
        waited: Duration,
    },
    /// Bytes that are not a frame of the protocol (bad STX, ETX, LRC or length).
    #[error("{port}: the PIN pad sent garbage in answer to {command}: {what}")]
    Garbage {
        port: String,
        command: &'static str,
        what: String,
    },
    #[error("{port}: the PIN pad refused {command}: {meaning} (result {code:02X})")]
    Refused {
        port: String,
        command: &'static str,
        code: u8,
        meaning: &'static str,
    },
    /// A well-formed frame that is not an answer to what was asked.
    #[error("{port}: the PIN pad answered {command} with {what}")]
    Unexpected {
        port: String,
        command: &'static str,
        what: String,
    },
    #[error("{0}")]
    BadRequest(String),
}

/// Which working key a [`PinPad::load_working_key`] loads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeySlot {
    Pin,
    Mac,
}

/// A PIN block encrypted under the PIN key. Its bytes go into the purchase message and
/// nowhere else; it never prints.
#[derive(Clone, PartialEq, Eq)]
pub struct PinBlock([u8; 8]);

impl PinBlock {
    pub fn bytes(&self) -> &[u8; 8] {
        &self.0
    }
}

impl std::fmt::Debug for PinBlock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PinBlock(..)")
    }
}

/// How a PIN entry ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PinEntry {
    Entered(PinBlock),
    Cancelled,
    TimedOut,
}

/// What the pad says of itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PadStatus {
    pub master_key: bool,
    pub pin_key: bool,
    pub mac_key: bool,
    pub model: String,
}

/// An encrypting PIN pad on a serial port.
pub struct PinPad {
    port: TTYPort,
    name: String,
    reply_timeout: Duration,
}

impl PinPad {
    /// Opens the pad on `port` (9600 8N1); `reply_timeout` bounds the wait for each answer.
    pub fn open(port: &Path, reply_timeout: Duration) -> Result<PinPad, PinPadError> {
        let name = port.display().to_string();
        let serial = serialport::new(name.as_str(), 9600)
            .data_bits(DataBits::Eight)
            .parity(Parity::None)
            .stop_bits(StopBits::One)
            .flow_control(FlowControl::None)
            .timeout(Duration::from_millis(20))
            .open_native()
            .map_err(|e| PinPadError::Open {
                port: name.clone(),
                source: e.into(),
            })?;
        Ok(PinPad {
            port: serial,
            name,
            reply_timeout,
        })
    }

    pub fn status(&mut self) -> Result<PadStatus, PinPadError> {
        let data = self.call(command::STATUS, &[], "status")?;
        let [master, pin, mac, model @ ..] = data.as_slice() else {
            return Err(self.unexpected("status", format!("{} status bytes", data.len())));
        };
        Ok(PadStatus {
            master_key: *master == 1,
            pin_key: *pin == 1,
            mac_key: *mac == 1,
            model: String::from_utf8_lossy(model).into_owned(),
        })
    }

    /// Loads a working key delivered by the acquirer, encrypted under the pad's master key,
    /// with its check value; a key whose check value does not match is refused by the pad.
    pub fn load_working_key(
        &mut self,
        slot: KeySlot,
        encrypted: &[u8; 16],
        check_value: &[u8; 4],
    ) -> Result<(), PinPadError> {
        let mut data = vec![match slot {
            KeySlot::Pin => 0x01,
            KeySlot::Mac => 0x02,
        }];
        data.extend_from_slice(encrypted);
        data.extend_from_slice(check_value);
        self.call(command::LOAD_WORKING_KEY, &data, "load working key")?;
        Ok(())
    }

    /// Has the customer enter a PIN of `min..=max` digits for the card `pan`, within `timeout`.
    /// `on_digits` hears how many digits are entered after each key (to show as many `*`).
    pub fn get_pin(
        &mut self,
        pan: &str,
        min: u8,
        max: u8,
        timeout: Duration,
        on_digits: &mut dyn FnMut(u8),
    ) -> Result<PinEntry, PinPadError> {
        let secs = timeout.as_secs();
        if !(4..=12).contains(&min) || !(min..=12).contains(&max) || !(1..=120).contains(&secs) {
            return Err(PinPadError::BadRequest(format!(
                "a PIN of {min} to {max} digits within {secs} s is outside what a pad takes \
                 (4 to 12 digits, 1 to 120 s)"
            )));
        }
        let mut data = vec![min, max, secs as u8];
        data.extend_from_slice(pan_digits(pan)?.as_bytes());
        let entry = match self.call(command::GET_PIN, &data, "get PIN") {
            // The pad said why it will not start; it is not in an entry.
            Err(e @ PinPadError::Refused { .. }) => return Err(e),
            Err(e) => Err(e),
            Ok(_) => self.pin_entry(max, timeout, on_digits),
        };
        if entry.is_err() {
            // A pad left in PIN entry answers every later command "busy": end it, best effort
            // (the entry's own error is the one to report).
            let _ = self.abort();
        }
        entry
    }

    /// Follows a PIN entry the pad has started until it ends.
    fn pin_entry(
        &mut self,
        max: u8,
        timeout: Duration,
        on_digits: &mut dyn FnMut(u8),
    ) -> Result<PinEntry, PinPadError> {
        // The pad times the customer; the host waits a little longer for its verdict.
        let deadline = Instant::now() + timeout + self.reply_timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let (cmd, data) = self.read_frame("get PIN", left)?;
            match (cmd, data.as_slice()) {
                (command::DIGITS, [n]) if *n <= max => on_digits(*n),
                (command::ENTRY_ENDED, [rc::DONE, block @ ..]) => {
                    let block: [u8; 8] = block
                        .try_into()
                        .map_err(|_| self.unexpected("get PIN", "a PIN block not 8 bytes long"))?;
                    return Ok(PinEntry::Entered(PinBlock(block)));
                }
                (command::ENTRY_ENDED, [rc::CANCELLED]) => return Ok(PinEntry::Cancelled),
                (command::ENTRY_ENDED, [rc::TIMED_OUT]) => return Ok(PinEntry::TimedOut),
                (command::ENTRY_ENDED, [code]) => return Err(self.refused("get PIN", *code)),
                (cmd, data) => {
                    return Err(self.unexpected(
                        "get PIN",
                        format!("command {cmd:02X} with {} bytes", data.len()),
                    ));
                }
            }
        }
    }

    /// Ends a PIN entry under way (the customer walked away, or the session ended).
    pub fn abort(&mut self) -> Result<(), PinPadError> {
        self.call(command::ABORT, &[], "abort PIN entry")?;
        Ok(())
    }

    /// The MAC of `data` under the pad's MAC key (ISO 9797-1 algorithm 3).
    pub fn mac(&mut self, data: &[u8]) -> Result<[u8; 8], PinPadError> {
        if data.is_empty() || data.len() > MAX_LEN - 1 {
            return Err(PinPadError::BadRequest(format!(
                "a MAC is over 1 to {} bytes, not {}",
                MAX_LEN - 1,
                data.len()
            )));
        }
        let mac = self.call(command::MAC, data, "MAC")?;
        mac.try_into()
            .map_err(|_| self.unexpected("MAC", "a MAC not 8 bytes long"))
    }

    /// Sends a command and returns its answer's data after the result code `00`.
    fn call(&mut self, cmd: u8, data: &[u8], name: &'static str) -> Result<Vec<u8>, PinPadError> {
        let _ = self.port.clear(ClearBuffer::Input);
        let frame = encode(cmd, data);
        self.port
            .write_all(&frame)
            .and_then(|()| self.port.flush())
            .map_err(|source| self.io(source))?;
        let deadline = Instant::now() + self.reply_timeout;
        let (answer, data) = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let (answer, data) = self.read_frame(name, left)?;
            // The tail of an earlier PIN entry (digits, its end) may still be on the line.
            if matches!(answer, command::DIGITS | command::ENTRY_ENDED) {
                continue;
            }
            break (answer, data);
        };
        if answer != cmd | 0x80 {
            return Err(self.unexpected(name, format!("command {answer:02X}")));
        }
        match data.split_first() {
            Some((&rc::DONE, rest)) => Ok(rest.to_vec()),
            Some((&code, _)) => Err(self.refused(name, code)),
            None => Err(self.unexpected(name, "no result code")),
        }
    }

    /// Reads one frame within `wait`; returns its CMD and DATA.
    fn read_frame(
        &mut self,
        name: &'static str,
        wait: Duration,
    ) -> Result<(u8, Vec<u8>), PinPadError> {
        let deadline = Instant::now() + wait;
        let mut byte = [0u8; 1];
        self.read_exact_by(&mut byte, deadline, name, wait)?;
        if byte[0] != STX {
            return Err(self.garbage(name, format!("byte {:02X} where a frame starts", byte[0])));
        }
        let mut len = [0u8; 2];
        self.read_exact_by(&mut len, deadline, name, wait)?;
        let n = usize::from(u16::from_be_bytes(len));
        if n == 0 || n > MAX_LEN {
            return Err(self.garbage(name, format!("a frame length of {n}")));
        }
        let mut rest = vec![0u8; n + 2];
        self.read_exact_by(&mut rest, deadline, name, wait)?;
        let (body, tail) = rest.split_at(n);
        if tail[0] != ETX {
            return Err(self.garbage(name, format!("byte {:02X} where ETX belongs", tail[0])));
        }
        let lrc = len
            .iter()
            .chain(body)
            .chain(&tail[..1])
            .fold(0u8, |acc, b| acc ^ b);
        if lrc != tail[1] {
            return Err(self.garbage(
                name,
                format!("LRC {:02X}, the frame's is {lrc:02X}", tail[1]),
            ));
        }
        Ok((body[0], body[1..].to_vec()))
    }

    fn read_exact_by(
        &mut self,
        buf: &mut [u8],
        deadline: Instant,
        name: &'static str,
        waited: Duration,
    ) -> Result<(), PinPadError> {
        let mut got = 0;
        while got < buf.len() {
            if Instant::now() >= deadline {
                return Err(PinPadError::Silent {
                    port: self.name.clone(),
                    command: name,
                    waited,
                });
            }
            match self.port.read(&mut buf[got..]) {
                // A hung-up line reads empty at once: wait a little rather than spin.
                Ok(0) => std::thread::sleep(Duration::from_millis(5)),
                Ok(n) => got += n,
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
                Err(e) => return Err(self.io(e)),
            }
        }
        Ok(())
    }

    fn io(&self, source: std::io::Error) -> PinPadError {
        PinPadError::Io {
            port: self.name.clone(),
            source,
        }
    }

    fn garbage(&self, command: &'static str, what: String) -> PinPadError {
        PinPadError::Garbage {
            port: self.name.clone(),
            command,
            what,
        }
    }

    fn refused(&self, command: &'static str, code: u8) -> PinPadError {
        PinPadError::Refused {
            port: self.name.clone(),
            command,
            code,
            meaning: meaning(code),
        }
    }

    fn unexpected(&self, command: &'static str, what: impl Into<String>) -> PinPadError {
        PinPadError::Unexpected {
            port: self.name.clone(),
            command,
            what: what.into(),
        }
    }
}

/// A frame: STX, LEN, CMD, DATA, ETX, LRC.
pub fn encode(cmd: u8, data: &[u8]) -> Vec<u8> {
    debug_assert!(data.len() < MAX_LEN, "callers bound what they send");
    let len = (data.len() + 1) as u16;
    let mut frame = vec![STX];
    frame.extend_from_slice(&len.to_be_bytes());
    frame.push(cmd);
    frame.extend_from_slice(data);
    frame.push(ETX);
    let lrc = frame[1..].iter().fold(0u8, |acc, b| acc ^ b);
    frame.push(lrc);
    frame
}

/// The 12 PAN digits a format 0 PIN block is bound to: the rightmost 12 before the check digit.
pub fn pan_digits(pan: &str) -> Result<String, PinPadError> {
    if !(13..=19).contains(&pan.len()) || !pan.bytes().all(|b| b.is_ascii_digit()) {
        return Err(PinPadError::BadRequest(format!(
            "a PAN is 13 to 19 digits, not {} characters",
            pan.len()
        )));
    }
    let without_check = &pan[..pan.len() - 1];
    Ok(without_check[without_check.len() - 12..].to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_carries_its_length_and_lrc() {
        assert_eq!(encode(0x10, &[]), [0x02, 0x00, 0x01, 0x10, 0x03, 0x12]);
    }

    #[test]
    fn the_pan_digits_are_the_twelve_before_the_check_digit() {
        assert_eq!(pan_digits("43219876543210987").unwrap(), "987654321098");
        assert!(pan_digits("4321").is_err());
    }

    #[test]
    fn a_pin_block_never_prints() {
        let block = PinBlock([0x04, 0x12, 0xAC, 0x89, 0xAB, 0xCD, 0xEF, 0x67]);
        assert_eq!(format!("{block:?}"), "PinBlock(..)");
        assert_eq!(
            format!("{:?}", PinEntry::Entered(block)),
            "Entered(PinBlock(..))"
        );
    }
}
