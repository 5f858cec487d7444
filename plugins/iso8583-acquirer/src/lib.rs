//! Acquirer dialect CUP-8583 (`docs/acquirers/iso8583.md`): the ISO 8583:1987 POS messages of
//! China UnionPay's acquirers, cut to what a self-service kiosk needs: sign-on, purchase,
//! reversal and settlement.
//!
//! One request per TCP connection. A message is a two-byte length, a TPDU, a BCD MTI, a primary
//! bitmap and the fields it marks. Every message but sign-on carries a MAC in field 64, computed
//! and checked by the host's PIN pad, since the MAC key never leaves it. An answer means nothing
//! until it is shown to be this request's (MTI + 10, the same STAN and terminal) and the
//! acquirer's (its MAC); only then is its response code read.
//!
//! `wire` encodes and decodes single fields and the bitmap, `message` builds requests and parses
//! answers by the field table, `exchange` carries one exchange over the host's connection.
//! Nothing here logs or puts in an error a PAN, Track 2 data, a PIN block or a key.

mod exchange;
mod message;
mod wire;

use exports::selfvend::payment::dialect::{
    AcquirerError, DialectInfo, Guest, PurchaseOutcome, PurchaseRequest, ReversalRequest,
    Settlement, SettlementRequest, SignOnRequest, WorkingKeys,
};
use selfvend::backend::log::{Level, log};
use selfvend::payment::security;
use selfvend::payment::types::{
    Approval, BankCard, Decline, DeclineCode, ReversalReason, Terminal,
};

use message::{Answer, MAC_LEN, Message, Mti, Result, unsendable};

// `generate_all`: the world imports `connection` and `log` from the `selfvend:backend` package.
wit_bindgen::generate!({
    path: "../../wit/payment",
    world: "acquirer-dialect",
    generate_all,
});

/// Field 3 of a purchase and its reversal.
const PROCESSING_CODE: &str = "000000";
/// Field 22: read from the chip, with the PIN entered or without one.
const CHIP_WITH_PIN: &str = "051";
const CHIP_NO_PIN: &str = "052";
/// Field 25: a normal presentment.
const POS_CONDITION: &str = "00";
/// Field 26: the PIN pad takes up to 12 digits.
const PIN_CAPTURE: &str = "12";
/// Field 49: CNY.
const CURRENCY: &str = "156";
/// Field 53: an ISO 9564 format 0 PIN block under a double-length key.
const SECURITY_CONTROL: &str = "2600000000000000";
/// Field 52: a PIN block is one 3DES block.
const PIN_BLOCK_LEN: usize = 8;
/// Field 62 of an 0810 is the PIN key, its check value, the MAC key and its check value.
const KEY_LEN: usize = 16;
const CHECK_LEN: usize = 4;
const KEYS_LEN: usize = 2 * (KEY_LEN + CHECK_LEN);
/// Field 48 of an 0510: amount (12 digits) and count (3), then the balance flag.
const TOTALS_DIGITS: usize = 15;

struct Iso8583;

impl Guest for Iso8583 {
    fn about() -> DialectInfo {
        DialectInfo {
            vendor: "China UnionPay acquirers (ISO 8583:1987)".into(),
            name: "cup-8583".into(),
            version: "1.0.0".into(),
        }
    }

    fn sign_on(request: SignOnRequest) -> Result<WorkingKeys> {
        let mti = Mti::SIGN_ON;
        let mut m = start(mti, &request.terminal, request.stan)?;
        // "003": the terminal takes double-length keys.
        m.set(60, batch_field(mti, "00", request.batch)? + "003");
        let answer = call(&m)?;
        done(&answer)?;
        let keys = answer.binary(62)?;
        let keys: &[u8; KEYS_LEN] = keys.try_into().map_err(|_| {
            answer.field_error(62, format_args!("is {} bytes, not {KEYS_LEN}", keys.len()))
        })?;
        let (pin_key, rest) = keys.split_at(KEY_LEN);
        let (pin_key_check, rest) = rest.split_at(CHECK_LEN);
        let (mac_key, mac_key_check) = rest.split_at(KEY_LEN);
        Ok(WorkingKeys {
            pin_key: pin_key.to_vec(),
            pin_key_check: pin_key_check.to_vec(),
            mac_key: mac_key.to_vec(),
            mac_key_check: mac_key_check.to_vec(),
        })
    }

    fn purchase(request: PurchaseRequest) -> Result<PurchaseOutcome> {
        // The bug the conformance kit must catch (built only for its test): the card number logged.
        #[cfg(feature = "planted-pan-log")]
        log(
            Level::Info,
            &format!("purchase with card {}", request.card.pan),
        );
        let mti = Mti::PURCHASE;
        let mut m = start(mti, &request.terminal, request.stan)?;
        card(&mut m, &request.card)?;
        m.set(3, PROCESSING_CODE)
            .set(4, numeric(mti, 4, "the amount", request.amount_fen, 12)?)
            .set(25, POS_CONDITION)
            .set(35, track2(mti, &request.card.track2)?)
            .set(49, CURRENCY)
            .set(60, batch_field(mti, "22", request.batch)?);
        match &request.pin_block {
            Some(block) if block.len() != PIN_BLOCK_LEN => {
                return Err(AcquirerError::Security(format!(
                    "{mti} request: field 52 (PIN block) is {} bytes, not {PIN_BLOCK_LEN}",
                    block.len()
                )));
            }
            Some(block) => {
                m.set(22, CHIP_WITH_PIN)
                    .set(26, PIN_CAPTURE)
                    .set(52, block.as_slice())
                    .set(53, SECURITY_CONTROL);
            }
            None => {
                m.set(22, CHIP_NO_PIN);
            }
        }
        let answer = call(&m)?;
        answer.echoes_if_present(&m, 3)?;
        answer.echoes_if_present(&m, 4)?;
        let code = answer.text(39)?;
        if code == "00" {
            return approval(&answer).map(PurchaseOutcome::Approved);
        }
        if let Some(e) = did_nothing(answer.mti(), code) {
            return Err(e);
        }
        let (decline_code, message) = match decline(code) {
            Some((decline_code, message)) => (decline_code, message.to_owned()),
            None => (DeclineCode::Other, format!("交易失败（应答码 {code}）")),
        };
        Ok(PurchaseOutcome::Declined(Decline {
            code: decline_code,
            response_code: code.to_owned(),
            message,
        }))
    }

    fn reversal(request: ReversalRequest) -> Result<()> {
        let mti = Mti::REVERSAL;
        let reason = match request.reason {
            ReversalReason::NoAnswer => "98",
            ReversalReason::Cancelled => "06",
        };
        let mut m = start(mti, &request.terminal, request.stan)?;
        card(&mut m, &request.card)?;
        // A reversal carries no PIN block, so its entry mode says none was included.
        m.set(3, PROCESSING_CODE)
            .set(4, numeric(mti, 4, "the amount", request.amount_fen, 12)?)
            .set(22, CHIP_NO_PIN)
            .set(25, POS_CONDITION)
            .set(39, reason)
            .set(49, CURRENCY)
            .set(60, batch_field(mti, "23", request.batch)?);
        let answer = call(&m)?;
        answer.echoes_if_present(&m, 3)?;
        answer.echoes_if_present(&m, 4)?;
        // 25: the acquirer has no such purchase, so no debit stands: nothing is left to undo.
        if answer.text(39)? == "25" {
            return Ok(());
        }
        done(&answer)
    }

    fn settle(request: SettlementRequest) -> Result<Settlement> {
        let mti = Mti::SETTLEMENT;
        let amount = numeric(mti, 48, "the amount", request.amount_fen, 12)?;
        let count = numeric(mti, 48, "the count", request.count.into(), 3)?;
        let mut m = start(mti, &request.terminal, request.stan)?;
        m.set(48, amount + &count)
            .set(60, batch_field(mti, "50", request.batch)?);
        let answer = call(&m)?;
        done(&answer)?;
        acquirer_totals(&answer)
    }
}

/// Sends `request` and returns its answer once it is shown to be the acquirer's (its MAC) and
/// this request's (the same STAN, terminal and merchant).
fn call(request: &Message) -> Result<Answer> {
    let mti = request.mti();
    let frame = request.frame(|data| request_mac(mti, data))?;
    let answer = Answer::parse(mti.answer(), exchange::exchange(mti, &frame)?)?;
    // The MTI and the response code only: messages carry card data and keys.
    let code = answer
        .field(39)
        .map_or("none".into(), String::from_utf8_lossy);
    log(
        Level::Debug,
        &format!("{} answer: response code {code}", answer.mti()),
    );
    authenticate(&answer, mti)?;
    answer.echoes(request, 11)?;
    answer.echoes(request, 41)?;
    answer.echoes_if_present(request, 42)?;
    Ok(answer)
}

/// The PIN pad's MAC of a request. Without one nothing is sent: the acquirer would only refuse
/// the request, and it would carry the card's data for nothing.
fn request_mac(mti: Mti, data: &[u8]) -> Result<[u8; MAC_LEN]> {
    let mac = security::mac(data).map_err(|e| {
        AcquirerError::Security(format!("{mti} request: the PIN pad cannot MAC it: {e}"))
    })?;
    mac.as_slice().try_into().map_err(|_| {
        AcquirerError::Security(format!(
            "{mti} request: the PIN pad's MAC is {} bytes, not {MAC_LEN}",
            mac.len()
        ))
    })
}

/// Checks that the acquirer sent `answer`: its MAC, recomputed by the PIN pad, must match.
///
/// An answer to a purchase that cannot be verified is `outcome-unknown`, because only a
/// verified answer may say the card was not debited. To any other request it is
/// `malformed-reply`, except an answer without a MAC that says the acquirer did nothing
/// (`A0`, `77`, `96`): an acquirer that found the request's MAC wrong, or has no keys for the
/// terminal, has no MAC to give, and believing it can only make the host sign on or try again.
fn authenticate(answer: &Answer, request: Mti) -> Result<()> {
    let mti = answer.mti();
    if !mti.is_maced() {
        return Ok(());
    }
    let unverified = |why: &str| {
        let why = format!("{mti} answer: {why}");
        if request == Mti::PURCHASE {
            AcquirerError::OutcomeUnknown(why)
        } else {
            AcquirerError::MalformedReply(why)
        }
    };
    let Some((data, mac)) = answer.mac() else {
        let nothing_done = answer
            .field(39)
            .and_then(|code| std::str::from_utf8(code).ok())
            .is_some_and(|code| did_nothing(mti, code).is_some());
        if request != Mti::PURCHASE && nothing_done {
            return Ok(());
        }
        return Err(unverified("it has no MAC (field 64)"));
    };
    let expected = security::mac(data).map_err(|e| {
        AcquirerError::OutcomeUnknown(format!(
            "{mti} answer: the PIN pad cannot MAC it to verify it: {e}"
        ))
    })?;
    if !same_mac(&expected, mac) {
        return Err(unverified("the answer's MAC does not verify"));
    }
    Ok(())
}

/// Compares MACs in a time that does not depend on where they differ.
fn same_mac(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0, |diff, (x, y)| diff | (x ^ y)) == 0
}

/// Field 39 of an answer to anything but a purchase: `00` is done; any other code is an error.
fn done(answer: &Answer) -> Result<()> {
    let code = answer.text(39)?;
    if code == "00" {
        return Ok(());
    }
    Err(did_nothing(answer.mti(), code).unwrap_or_else(|| {
        answer.field_error(
            39,
            format_args!("{code} is not one a {} may carry", answer.mti()),
        )
    }))
}

/// The response codes with which the acquirer says it did nothing, as the errors they are.
fn did_nothing(answer: Mti, code: &str) -> Option<AcquirerError> {
    let why =
        |what: &str| format!("{answer} answer: response code {code}: {what}; nothing was done");
    match code {
        "A0" => Some(AcquirerError::Refused(why(
            "the acquirer found the request's MAC wrong",
        ))),
        "77" => Some(AcquirerError::Refused(why(
            "sign on first, the acquirer does not know the batch or the keys",
        ))),
        "96" => Some(AcquirerError::Unreachable(why(
            "system malfunction at the acquirer",
        ))),
        _ => None,
    }
}

/// The decline a purchase's response code stands for, with the message the customer sees.
fn decline(code: &str) -> Option<(DeclineCode, &'static str)> {
    Some(match code {
        "51" => (DeclineCode::InsufficientFunds, "余额不足"),
        "55" => (DeclineCode::WrongPin, "密码错误"),
        "75" => (DeclineCode::PinTriesExceeded, "密码错误次数超限"),
        "62" => (DeclineCode::CardBlocked, "卡片受限"),
        "14" => (DeclineCode::InvalidCard, "无效卡"),
        "54" => (DeclineCode::ExpiredCard, "卡片过期"),
        _ => return None,
    })
}

/// The approval an `00` 0210 carries.
fn approval(answer: &Answer) -> Result<Approval> {
    let amount = answer.text(4)?;
    Ok(Approval {
        rrn: answer.text(37)?.to_owned(),
        auth_code: answer.text(38)?.to_owned(),
        amount_fen: amount
            .parse()
            .map_err(|_| answer.field_error(4, "is not a number"))?,
        // MMDD, then hhmmss: the contract's MMDDhhmmss.
        acquirer_time: format!("{}{}", answer.text(13)?, answer.text(12)?),
    })
}

/// Field 48 of an 0510: the acquirer's amount and count, then `1` balanced or `2` not.
fn acquirer_totals(answer: &Answer) -> Result<Settlement> {
    let totals = answer.text(48)?;
    let bad = || answer.field_error(48, "is not 15 digits then 1 or 2");
    let (digits, flag) = totals.split_at_checked(TOTALS_DIGITS).ok_or_else(bad)?;
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let (amount, count) = digits.split_at_checked(12).ok_or_else(bad)?;
    let balanced = match flag {
        "1" => true,
        "2" => false,
        _ => return Err(bad()),
    };
    Ok(Settlement {
        balanced,
        acquirer_count: count.parse().map_err(|_| bad())?,
        acquirer_amount_fen: amount.parse().map_err(|_| bad())?,
    })
}

/// Starts a request with the fields every one carries: STAN (11), terminal id (41) and
/// merchant id (42).
fn start(mti: Mti, terminal: &Terminal, stan: u32) -> Result<Message> {
    let mut m = Message::new(mti);
    m.set(11, numeric(mti, 11, "the STAN", stan.into(), 6)?)
        .set(41, padded(mti, 41, &terminal.terminal_id, 8)?)
        .set(42, padded(mti, 42, &terminal.merchant_id, 15)?);
    Ok(m)
}

/// Fields 2 (PAN) and 14 (expiry), which a purchase and its reversal both carry.
fn card(m: &mut Message, card: &BankCard) -> Result<()> {
    let mti = m.mti();
    let pan = &card.pan;
    if !(13..=19).contains(&pan.len()) || !pan.bytes().all(|b| b.is_ascii_digit()) {
        return Err(unsendable(
            mti,
            2,
            format_args!("is {} characters, not 13 to 19 digits", pan.chars().count()),
        ));
    }
    if card.expiry.len() != 4 || !card.expiry.bytes().all(|b| b.is_ascii_digit()) {
        return Err(unsendable(mti, 14, "is not 4 digits (YYMM)"));
    }
    m.set(2, pan.as_str()).set(14, card.expiry.as_str());
    Ok(())
}

/// Field 35 from the card's Track 2 equivalent data: its nibbles as digits and `D`, without
/// the `F` the card pads them with to whole bytes. Its length is checked when framed.
fn track2(mti: Mti, track2: &[u8]) -> Result<String> {
    let mut nibbles: Vec<u8> = track2.iter().flat_map(|&b| [b >> 4, b & 0x0f]).collect();
    while nibbles.last() == Some(&0x0f) {
        nibbles.pop();
    }
    nibbles
        .into_iter()
        .map(|nibble| match nibble {
            0..=9 => Some(char::from(b'0' + nibble)),
            0x0d => Some('D'),
            _ => None,
        })
        .collect::<Option<String>>()
        .filter(|track2| !track2.is_empty())
        .ok_or_else(|| unsendable(mti, 35, "is not digits and the separator D"))
}

/// Field 60: the message kind, then the batch number as six ASCII digits.
fn batch_field(mti: Mti, kind: &str, batch: u32) -> Result<String> {
    Ok(kind.to_owned() + &numeric(mti, 60, "the batch number", batch.into(), 6)?)
}

/// `value` as `width` zero-padded digits, refused when it needs more.
fn numeric(mti: Mti, field: u8, what: &str, value: u64, width: usize) -> Result<String> {
    let digits = format!("{value:0width$}");
    if digits.len() > width {
        return Err(unsendable(
            mti,
            field,
            format_args!("{what} {value} is over {width} digits"),
        ));
    }
    Ok(digits)
}

/// A terminal or merchant id, padded with spaces to its field's width. A longer or non-ASCII
/// id is refused when the request is framed.
fn padded(mti: Mti, field: u8, id: &str, width: usize) -> Result<String> {
    if id.trim().is_empty() {
        return Err(unsendable(mti, field, "is empty"));
    }
    Ok(format!("{id:<width$}"))
}

#[allow(unsafe_code)]
mod glue {
    use super::Iso8583;
    crate::export!(Iso8583 with_types_in crate);
}
