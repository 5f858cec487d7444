//! The card's commands (ISO 7816-4) over the host's channel, each answer's status word and
//! data length checked before anything looks at the data.

use crate::exports::selfvend::card::codec::{CardChannel, CardError};
use crate::selfvend::card::types::{ApduFailure, ChannelError};

/// SELECT the electricity application `1001`.
const SELECT: [u8; 7] = [0x00, 0xA4, 0x00, 0x00, 0x02, 0x10, 0x01];
/// The header of UPDATE BINARY with secure messaging, at offset 0 of the wallet file (SFI 2).
const UPDATE_WALLET_SM: [u8; 4] = [0x04, 0xD6, 0x82, 0x00];
/// The length of the secure-messaging MAC appended to a command.
pub const MAC_LEN: usize = 4;

/// The card carried the command out.
const SW_OK: u16 = 0x9000;
/// EXTERNAL AUTHENTICATE: the cryptogram is wrong.
const SW_WRONG_CRYPTOGRAM: u16 = 0x6300;
/// Secure messaging: the MAC is wrong.
const SW_WRONG_MAC: u16 = 0x6988;

/// The card in the reader, spoken to in this card's commands.
pub struct Card<'a> {
    channel: &'a CardChannel,
}

/// A card's answer split into its data and its status word.
struct Response {
    data: Vec<u8>,
    status: u16,
}

impl<'a> Card<'a> {
    pub fn new(channel: &'a CardChannel) -> Self {
        Self { channel }
    }

    /// Selects the electricity application; every session starts here.
    pub fn select(&self) -> Result<(), CardError> {
        let step = "select the electricity application";
        self.transmit(step, &SELECT)?.expect(step, &SELECT, 0)?;
        Ok(())
    }

    /// Reads `len` bytes from offset 0 of the file with short identifier `sfi`.
    pub fn read_binary(&self, sfi: u8, len: u8, step: &str) -> Result<Vec<u8>, CardError> {
        let command = [0x00, 0xB0, 0x80 | sfi, 0x00, len];
        self.transmit(step, &command)?
            .expect(step, &command, len.into())
    }

    /// Asks the card for an `len`-byte challenge (8 for external authentication, 4 for a MAC).
    pub fn get_challenge(&self, len: u8) -> Result<Vec<u8>, CardError> {
        let step = format!("get challenge ({len} bytes)");
        let command = [0x00, 0x84, 0x00, 0x00, len];
        self.transmit(&step, &command)?
            .expect(&step, &command, len.into())
    }

    /// Proves the kiosk to the card with the cryptogram over the card's last 8-byte challenge.
    pub fn external_authenticate(&self, cryptogram: &[u8; 8]) -> Result<(), CardError> {
        let step = "external authenticate";
        let mut command = vec![0x00, 0x82, 0x00, 0x00, 0x08];
        command.extend_from_slice(cryptogram);
        let response = self.transmit(step, &command)?;
        if response.status == SW_WRONG_CRYPTOGRAM {
            return Err(CardError::AuthRefused(
                "the card refused the external-authentication cryptogram (63 00)".into(),
            ));
        }
        response.expect(step, &command, 0)?;
        Ok(())
    }

    /// Replaces the wallet file under secure messaging. `mac` gets the MAC input
    /// `04 D6 82 00 Lc data` (Lc counting the data and the MAC) and returns its MAC.
    pub fn update_wallet_sm(
        &self,
        data: &[u8],
        mac: impl FnOnce(&[u8]) -> Result<[u8; MAC_LEN], CardError>,
    ) -> Result<(), CardError> {
        let step = "update wallet file (secure messaging)";
        let lc = data
            .len()
            .checked_add(MAC_LEN)
            .and_then(|n| u8::try_from(n).ok())
            .ok_or_else(|| {
                CardError::GrantRejected(format!(
                    "a wallet of {} bytes does not fit one command",
                    data.len()
                ))
            })?;
        let mut command = UPDATE_WALLET_SM.to_vec();
        command.push(lc);
        command.extend_from_slice(data);
        let mac = mac(&command)?;
        command.extend_from_slice(&mac);
        let response = self.transmit(step, &command)?;
        if response.status == SW_WRONG_MAC {
            return Err(CardError::AuthRefused(
                "the card refused the wallet update's MAC (69 88)".into(),
            ));
        }
        response.expect(step, &command, 0)?;
        Ok(())
    }

    /// Sends one command and splits off the status word.
    fn transmit(&self, step: &str, command: &[u8]) -> Result<Response, CardError> {
        let answer = self.channel.transmit(command).map_err(|err| match err {
            ChannelError::CardRemoved => CardError::CardRemoved,
            ChannelError::ReaderFault(text) => CardError::ReaderFault(text),
            ChannelError::Refused(text) => {
                CardError::ReaderFault(format!("host refused the command: {text}"))
            }
        })?;
        let Some((data, &[sw1, sw2])) = answer.split_last_chunk::<2>() else {
            return Err(CardError::Malformed(format!(
                "{step}: the card answered {} with {} byte(s), too few for a status word",
                command_name(command),
                answer.len()
            )));
        };
        Ok(Response {
            data: data.to_vec(),
            status: u16::from_be_bytes([sw1, sw2]),
        })
    }
}

impl Response {
    /// The data of a command the card carried out, exactly `len` bytes of it.
    fn expect(self, step: &str, command: &[u8], len: usize) -> Result<Vec<u8>, CardError> {
        if self.status != SW_OK {
            return Err(CardError::UnexpectedStatus(ApduFailure {
                step: step.into(),
                header: command.iter().take(4).copied().collect(),
                status: self.status,
            }));
        }
        if self.data.len() != len {
            return Err(CardError::Malformed(format!(
                "{step}: the card answered {} with {} data bytes; {len} were asked",
                command_name(command),
                self.data.len()
            )));
        }
        Ok(self.data)
    }
}

/// The command's name from its instruction byte, for messages.
fn command_name(command: &[u8]) -> &'static str {
    match command.get(1) {
        Some(0xA4) => "SELECT",
        Some(0xB0) => "READ BINARY",
        Some(0x84) => "GET CHALLENGE",
        Some(0x82) => "EXTERNAL AUTHENTICATE",
        Some(0xD6) => "UPDATE BINARY",
        _ => "the command",
    }
}
