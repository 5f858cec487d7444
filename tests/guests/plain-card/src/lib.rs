//! A minimal, well-behaved card codec for a test card whose one record is plain text, used beside hostile codecs in tests.

use exports::selfvend::card::codec::{
    CardAuthority, CardChannel, CardData, CardError, CodecInfo, CreditGrant, Guest, Identification,
    VerifyOutcome,
};
use selfvend::card::log::{Level, log};
use selfvend::card::types::{ApduFailure, CardRole, ChannelError, WriteAuth};

wit_bindgen::generate!({ path: "../../../wit/card", world: "card-codec" });

/// The ATR of a plain test card.
const PLAIN_ATR: &[u8] = b"plain";
/// READ RECORD: the whole record, as text.
const READ_RECORD: [u8; 5] = [0x00, 0xB0, 0x00, 0x00, 0x00];
/// UPDATE RECORD header; the new record text follows Lc.
const UPDATE_RECORD_HEADER: [u8; 4] = [0x00, 0xD6, 0x00, 0x00];
/// The status word of a command the card carried out.
const SW_OK: u16 = 0x9000;

struct PlainCard;

impl Guest for PlainCard {
    fn about() -> CodecInfo {
        CodecInfo {
            vendor: "selfvend tests".into(),
            name: "plain-card".into(),
            version: "0.1.0".into(),
        }
    }

    fn identify(card: &CardChannel) -> Result<Option<Identification>, CardError> {
        Ok((card.atr() == PLAIN_ATR).then(|| Identification {
            card_type: "plain-test-card".into(),
            write_auth: WriteAuth::None,
        }))
    }

    fn read(card: &CardChannel) -> Result<CardData, CardError> {
        let data = read_record(card)?;
        log(
            Level::Info,
            &format!("plain-card read {}", data.card_serial),
        );
        eprintln!("plain-card: read ok");
        Ok(data)
    }

    fn write_credit(
        card: &CardChannel,
        grant: CreditGrant,
        _authority: &CardAuthority,
    ) -> Result<(), CardError> {
        let data = read_record(card)?;
        check_serial(&data, &grant)?;
        if data.purchase_count.checked_add(1) != Some(grant.purchase_count) {
            return Err(CardError::GrantRejected(format!(
                "grant carries purchase count {}, card is at {}",
                grant.purchase_count, data.purchase_count
            )));
        }
        let record = format!(
            "{}|{}|{}|{}|{}",
            data.card_serial,
            data.utility_code,
            data.customer_number,
            data.meter_number,
            grant.purchase_count
        );
        let lc = u8::try_from(record.len()).map_err(|_| {
            CardError::GrantRejected(format!("record of {} bytes does not fit", record.len()))
        })?;
        let mut command = Vec::with_capacity(UPDATE_RECORD_HEADER.len() + 1 + record.len());
        command.extend_from_slice(&UPDATE_RECORD_HEADER);
        command.push(lc);
        command.extend_from_slice(record.as_bytes());
        transmit(card, "update record", &command)?;
        Ok(())
    }

    fn verify(card: &CardChannel, grant: CreditGrant) -> Result<VerifyOutcome, CardError> {
        let data = read_record(card)?;
        check_serial(&data, &grant)?;
        Ok(if data.purchase_count == grant.purchase_count {
            VerifyOutcome::Written
        } else {
            VerifyOutcome::NotWritten
        })
    }
}

/// Refuses a grant issued for another card.
fn check_serial(data: &CardData, grant: &CreditGrant) -> Result<(), CardError> {
    if data.card_serial == grant.card_serial {
        Ok(())
    } else {
        Err(CardError::WrongCard(format!(
            "grant is for card {}, the reader holds card {}",
            grant.card_serial, data.card_serial
        )))
    }
}

/// Reads and parses the card's record: `serial|utility|customer|meter|purchase_count`.
fn read_record(card: &CardChannel) -> Result<CardData, CardError> {
    let body = transmit(card, "read record", &READ_RECORD)?;
    let text = std::str::from_utf8(&body)
        .map_err(|err| CardError::Malformed(format!("record is not UTF-8: {err}")))?;
    let fields: Vec<&str> = text.split('|').collect();
    let [serial, utility, customer, meter, count] = fields[..] else {
        return Err(CardError::Malformed(format!(
            "record has {} fields, expected 5",
            fields.len()
        )));
    };
    let purchase_count = count
        .parse()
        .map_err(|err| CardError::Malformed(format!("purchase_count {count:?}: {err}")))?;
    Ok(CardData {
        card_serial: non_empty("serial", serial)?,
        utility_code: non_empty("utility", utility)?,
        customer_number: non_empty("customer", customer)?,
        meter_number: non_empty("meter", meter)?,
        role: CardRole::User,
        purchase_count,
        pending: None,
        return_data: None,
    })
}

/// Returns a record field, or names it if it is empty.
fn non_empty(field: &str, value: &str) -> Result<String, CardError> {
    if value.is_empty() {
        Err(CardError::Malformed(format!("{field} is empty")))
    } else {
        Ok(value.to_owned())
    }
}

/// Sends one command and returns the response body, failing on a status word other than 9000.
fn transmit(card: &CardChannel, step: &str, command: &[u8]) -> Result<Vec<u8>, CardError> {
    let mut response = card.transmit(command).map_err(|err| match err {
        ChannelError::CardRemoved => CardError::CardRemoved,
        ChannelError::ReaderFault(text) => CardError::ReaderFault(text),
        ChannelError::Refused(text) => {
            CardError::ReaderFault(format!("host refused {step}: {text}"))
        }
    })?;
    let Some(body_len) = response.len().checked_sub(2) else {
        return Err(CardError::Malformed(format!(
            "{step}: response of {} bytes has no status word",
            response.len()
        )));
    };
    let status = u16::from_be_bytes([response[body_len], response[body_len + 1]]);
    if status != SW_OK {
        return Err(CardError::UnexpectedStatus(ApduFailure {
            step: step.into(),
            header: command.iter().take(4).copied().collect(),
            status,
        }));
    }
    response.truncate(body_len);
    Ok(response)
}

/// The export glue `export!` generates declares `unsafe` FFI functions; allow that here only.
#[allow(unsafe_code)]
mod glue {
    use super::PlainCard;

    crate::export!(PlainCard with_types_in crate);
}
