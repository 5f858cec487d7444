//! Card codec for Hengtai Instruments' SLE4442 meter card, layout "HT01"
//! (`docs/cards/hengtai-sle4442.md`), behind an ACS-style reader's class FF pseudo-APDUs.
//!
//! Every call selects the card type and, past identification, reads bytes 00–8F in one command:
//! the card's identity, two 32-byte credit slots and the meter's return record. The current slot
//! is the valid (CRC-checked) one with the newer sequence number. A credit goes into the other
//! slot, body first and CRC last, so a torn write leaves either the old slot current or the new
//! one complete. Writing needs the card's PSC, asked of the authority once and presented once.
//!
//! `card` speaks to the card, `layout` holds the memory map and the slot logic, `crc` the
//! checksum both slots and the return record carry.

mod card;
mod crc;
mod layout;

use exports::selfvend::card::codec::{
    CardAuthority, CardChannel, CardData, CardError, CodecInfo, CreditGrant, Guest, Identification,
    VerifyOutcome,
};
use selfvend::card::authority::AuthorityError;
use selfvend::card::log::{Level, log};
use selfvend::card::types::{ReaderKind, WriteAuth};

use card::Card;
use layout::{CardImage, HT01, IMAGE, LAYOUT_TAG, SLOT_BODY_LEN, Slot};

wit_bindgen::generate!({ path: "../../wit/card", world: "card-codec" });

/// The ATR an ACS-style reader reports for an SLE4442: TS, T0, then the chip's 4 bytes.
const ATR: [u8; 6] = [0x3B, 0x04, 0xA2, 0x13, 0x10, 0x91];

struct Hengtai;

impl Guest for Hengtai {
    fn about() -> CodecInfo {
        CodecInfo {
            vendor: "Hengtai Instruments (fictional)".into(),
            name: "hengtai-sle4442".into(),
            version: "1.0.0".into(),
        }
    }

    fn identify(channel: &CardChannel) -> Result<Option<Identification>, CardError> {
        if !matches!(channel.reader_kind(), ReaderKind::MemoryCard) || channel.atr() != ATR {
            return Ok(None);
        }
        let card = Card::new(channel);
        card.select()?;
        let tag = card.read(LAYOUT_TAG.addr, LAYOUT_TAG.size(), "read layout tag")?;
        Ok((tag == HT01).then(|| Identification {
            card_type: "hengtai-sle4442-ht01".into(),
            write_auth: WriteAuth::Psc,
        }))
    }

    fn read(channel: &CardChannel) -> Result<CardData, CardError> {
        let image = read_image(&Card::new(channel))?;
        log(
            Level::Debug,
            &format!(
                "read card {}: purchase count {}",
                image.serial,
                image.purchase_count()
            ),
        );
        Ok(image.card_data())
    }

    fn write_credit(
        channel: &CardChannel,
        grant: CreditGrant,
        authority: &CardAuthority,
    ) -> Result<(), CardError> {
        let card = Card::new(channel);
        let image = read_image(&card)?;
        check_serial(&image, &grant)?;
        if image.current().is_some_and(|slot| slot.carries(&grant)) {
            log(
                Level::Info,
                &format!(
                    "card {} already carries purchase {}; nothing to write",
                    image.serial, grant.purchase_count
                ),
            );
            return Ok(());
        }
        let count = image.purchase_count();
        let next = u32::from(count) + 1;
        if grant.purchase_count != next {
            return Err(CardError::GrantRejected(format!(
                "grant carries purchase count {}; the card is at {count}, so the next is {next}",
                grant.purchase_count
            )));
        }
        if let Some(pending) = image.pending() {
            return Err(CardError::GrantRejected(format!(
                "purchase {} is still on the card, not yet taken by the meter",
                pending.purchase_count
            )));
        }
        let (target, sequence) = image.next_slot();
        let slot = Slot::for_grant(sequence, &grant)?.encode();

        match card.error_counter()? {
            0x00 => return Err(CardError::CardLocked),
            0x07 => {}
            counter => log(
                Level::Warn,
                &format!("PSC error counter is {counter:02X}: earlier PSCs were refused"),
            ),
        }
        // Asked once and presented once: a wrong PSC costs one of the card's three tries.
        let psc = authority.card_password().map_err(authority_failed)?;
        let psc = <[u8; 3]>::try_from(psc.as_slice()).map_err(|_| {
            CardError::AuthorityFailed(format!(
                "the PSC is {} bytes; an SLE4442 PSC is 3",
                psc.len()
            ))
        })?;
        card.present_psc(&psc)?;

        // Body first, CRC last: until the CRC lands the new slot is invalid and the old one
        // stays current.
        let (body, crc) = slot.split_at(SLOT_BODY_LEN);
        card.write(target.addr(), body, "write credit slot")?;
        card.write(target.crc_addr(), crc, "write credit slot CRC")?;
        log(
            Level::Info,
            &format!(
                "wrote purchase {} onto card {} in slot {target:?}, sequence {sequence}",
                grant.purchase_count, image.serial
            ),
        );
        Ok(())
    }

    fn verify(channel: &CardChannel, grant: CreditGrant) -> Result<VerifyOutcome, CardError> {
        let image = read_image(&Card::new(channel))?;
        check_serial(&image, &grant)?;
        let written = image.current().is_some_and(|slot| slot.carries(&grant));
        Ok(if written {
            VerifyOutcome::Written
        } else {
            VerifyOutcome::NotWritten
        })
    }
}

/// Starts a card session and reads and decodes bytes 00–8F.
fn read_image(card: &Card<'_>) -> Result<CardImage, CardError> {
    card.select()?;
    let image = card.read(IMAGE.addr, IMAGE.size(), "read card memory")?;
    CardImage::decode(&image)
}

/// Refuses a grant issued for another card.
fn check_serial(image: &CardImage, grant: &CreditGrant) -> Result<(), CardError> {
    if image.serial == grant.card_serial {
        Ok(())
    } else {
        Err(CardError::WrongCard(format!(
            "grant is for card {}; this card is {}",
            grant.card_serial.escape_debug(),
            image.serial
        )))
    }
}

fn authority_failed(err: AuthorityError) -> CardError {
    CardError::AuthorityFailed(match err {
        AuthorityError::Refused(text) => format!("the backend refused the PSC: {text}"),
        AuthorityError::Unavailable(text) => format!("the backend is unavailable: {text}"),
        AuthorityError::NotAllowed(text) => format!("the host did not allow the PSC: {text}"),
    })
}

/// The export glue `export!` generates declares `unsafe` FFI functions; allow that here only.
#[allow(unsafe_code)]
mod glue {
    use super::Hengtai;

    crate::export!(Hengtai with_types_in crate);
}
