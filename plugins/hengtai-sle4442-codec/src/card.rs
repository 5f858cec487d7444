//! The SLE4442 behind an ACS-style reader: the class FF pseudo-APDUs this codec sends, each
//! checked for its status word and its data length.

use crate::exports::selfvend::card::codec::{CardChannel, CardError};
use crate::selfvend::card::types::{ApduFailure, ChannelError};

/// The status word of a command the card carried out.
const SW_OK: u16 = 0x9000;
/// SW1 of the answer to a PSC presentation; SW2 is the error counter.
const SW1_PSC: u8 = 0x90;
/// The status word a locked card may answer instead.
const SW_LOCKED: u16 = 0x6983;
/// The error counter after a right PSC.
const COUNTER_FULL: u8 = 0x07;

/// The card in the reader, spoken to through the host's channel.
pub struct Card<'a> {
    channel: &'a CardChannel,
}

impl<'a> Card<'a> {
    pub fn new(channel: &'a CardChannel) -> Self {
        Card { channel }
    }

    /// Selects the SLE4442 card type; this starts a new card session (the PSC is forgotten).
    pub fn select(&self) -> Result<(), CardError> {
        self.no_data(&[0xFF, 0xA4, 0x00, 0x00, 0x01, 0x06], "select card type")
    }

    /// Reads `len` bytes of main memory from `addr`.
    pub fn read(&self, addr: u8, len: u8, step: &str) -> Result<Vec<u8>, CardError> {
        let data = self.expect_ok(&[0xFF, 0xB0, 0x00, addr, len], step)?;
        if data.len() != usize::from(len) {
            return Err(CardError::Malformed(format!(
                "{step}: the card returned {} bytes from {addr:02X}; the read asked for {len}",
                data.len()
            )));
        }
        Ok(data)
    }

    /// Writes `data` into main memory at `addr`; the card writes it byte by byte, in order.
    pub fn write(&self, addr: u8, data: &[u8], step: &str) -> Result<(), CardError> {
        let Ok(len) = u8::try_from(data.len()) else {
            return Err(CardError::Malformed(format!(
                "{step}: {} bytes do not fit one write command",
                data.len()
            )));
        };
        let mut command = vec![0xFF, 0xD0, 0x00, addr, len];
        command.extend_from_slice(data);
        self.no_data(&command, step)
    }

    /// Reads the PSC error counter: `07` untouched, fewer set bits after wrong PSCs, `00` locked.
    pub fn error_counter(&self) -> Result<u8, CardError> {
        let step = "read PSC error counter";
        let data = self.expect_ok(&[0xFF, 0xB1, 0x00, 0x00, 0x04], step)?;
        match data[..] {
            [counter, _, _, _] => Ok(counter),
            _ => Err(CardError::Malformed(format!(
                "{step}: the card returned {} bytes; the command asked for 4",
                data.len()
            ))),
        }
    }

    /// Presents the PSC once; a wrong one costs a try, so the caller never presents again.
    pub fn present_psc(&self, psc: &[u8; 3]) -> Result<(), CardError> {
        let step = "present PSC";
        let header = [0xFF, 0x20, 0x00, 0x00];
        let mut command = header.to_vec();
        command.push(0x03);
        command.extend_from_slice(psc);
        let (data, status) = self.transmit(&command, step)?;
        if !data.is_empty() {
            return Err(no_data_expected(step, data.len()));
        }
        let [sw1, counter] = status.to_be_bytes();
        match (sw1, counter) {
            (SW1_PSC, COUNTER_FULL) => Ok(()),
            (SW1_PSC, 0x00) => Err(CardError::CardLocked),
            // Tries left are the counter's set bits (03 → 2, 01 → 1).
            (SW1_PSC, counter) if counter < COUNTER_FULL => {
                Err(CardError::PscRefused(tries_left(counter)))
            }
            _ if status == SW_LOCKED => Err(CardError::CardLocked),
            _ => Err(unexpected(step, &header, status)),
        }
    }

    /// Sends a command that answers only `90 00`.
    fn no_data(&self, command: &[u8], step: &str) -> Result<(), CardError> {
        let data = self.expect_ok(command, step)?;
        if data.is_empty() {
            Ok(())
        } else {
            Err(no_data_expected(step, data.len()))
        }
    }

    /// Sends a command and returns its data, failing on a status word other than `90 00`.
    fn expect_ok(&self, command: &[u8], step: &str) -> Result<Vec<u8>, CardError> {
        let (data, status) = self.transmit(command, step)?;
        if status == SW_OK {
            Ok(data)
        } else {
            Err(unexpected(step, command, status))
        }
    }

    /// Sends one command; returns the response data and the status word.
    fn transmit(&self, command: &[u8], step: &str) -> Result<(Vec<u8>, u16), CardError> {
        let response = self.channel.transmit(command).map_err(|err| match err {
            ChannelError::CardRemoved => CardError::CardRemoved,
            ChannelError::ReaderFault(text) => CardError::ReaderFault(text),
            ChannelError::Refused(text) => {
                CardError::ReaderFault(format!("host refused the command: {text}"))
            }
        })?;
        let Some((data, &[sw1, sw2])) = response.split_last_chunk::<2>() else {
            return Err(CardError::Malformed(format!(
                "{step}: the card answered {} byte(s), too few for a status word",
                response.len()
            )));
        };
        Ok((data.to_vec(), u16::from_be_bytes([sw1, sw2])))
    }
}

/// A status word other than the one the step expects.
fn unexpected(step: &str, command: &[u8], status: u16) -> CardError {
    CardError::UnexpectedStatus(ApduFailure {
        step: step.into(),
        header: command.iter().take(4).copied().collect(),
        status,
    })
}

/// Data in the answer to a command that answers only a status word.
fn no_data_expected(step: &str, len: usize) -> CardError {
    CardError::Malformed(format!(
        "{step}: the card answered {len} data byte(s) where only a status word belongs"
    ))
}

/// The tries a 3-bit PSC error counter has left: its set bits.
fn tries_left(counter: u8) -> u8 {
    (counter & 1) + ((counter >> 1) & 1) + ((counter >> 2) & 1)
}
