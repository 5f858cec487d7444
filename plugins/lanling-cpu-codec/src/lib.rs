//! Card codec for Lanling Electric's CPU meter card, layout "LL-ESAM1"
//! (`docs/cards/lanling-cpu.md`).
//!
//! The card is recognised by its ATR alone. Reading selects application `1001` and decodes the
//! parameter file (serial, utility, role, customer and meter numbers), the wallet (purchase
//! count and the last credit) and the meter's return file. A credit is written as a new wallet
//! by UPDATE BINARY under secure messaging, after EXTERNAL AUTHENTICATE; the cryptogram and the
//! MAC come from the utility's encryption machine through the host's `card-authority`, so the
//! codec never holds a key. Writing the grant the wallet already carries succeeds without a
//! write, so a retried sale is safe.

mod apdu;
mod files;

use apdu::{Card, MAC_LEN};
use exports::selfvend::card::codec::{
    CardAuthority, CardChannel, CardData, CardError, CodecInfo, CreditGrant, Guest, Identification,
    VerifyOutcome,
};
use files::{
    PARAMETER_LEN, PARAMETER_SFI, ParameterFile, RETURN_LEN, RETURN_SFI, ReturnFile, WALLET_LEN,
    WALLET_SFI, Wallet,
};
use selfvend::card::authority::{AuthPurpose, AuthRequest, AuthorityError};
use selfvend::card::log::{Level, log};
use selfvend::card::types::{ReaderKind, WriteAuth};

wit_bindgen::generate!({ path: "../../wit/card", world: "card-codec" });

/// The ATR's first bytes: direct convention, T=0, 12 historical bytes.
const ATR_PREFIX: [u8; 4] = [0x3B, 0x6C, 0x00, 0x00];
/// The ATR's historical bytes.
const ATR_HISTORICAL: &[u8; 12] = b"LANLING-CPU1";
/// The challenge EXTERNAL AUTHENTICATE answers.
const AUTH_CHALLENGE_LEN: u8 = 8;
/// The challenge the wallet update's MAC is chained from.
const MAC_CHALLENGE_LEN: u8 = 4;
/// The length of the external-authentication cryptogram.
const CRYPTOGRAM_LEN: usize = 8;

struct LanlingCpu;

impl Guest for LanlingCpu {
    fn about() -> CodecInfo {
        CodecInfo {
            vendor: "Lanling Electric (fictional)".into(),
            name: "lanling-cpu".into(),
            version: "1.0.0".into(),
        }
    }

    fn identify(channel: &CardChannel) -> Result<Option<Identification>, CardError> {
        let contact = matches!(channel.reader_kind(), ReaderKind::Contact);
        let atr = channel.atr();
        let ours = contact
            && atr.split_at_checked(ATR_PREFIX.len())
                == Some((&ATR_PREFIX[..], &ATR_HISTORICAL[..]));
        Ok(ours.then(|| Identification {
            card_type: "lanling-cpu-esam1".into(),
            write_auth: WriteAuth::EncryptionMachine,
        }))
    }

    fn read(channel: &CardChannel) -> Result<CardData, CardError> {
        let card = Card::new(channel);
        card.select()?;
        let parameters = read_parameters(&card)?;
        let wallet = read_wallet(&card)?;
        let returned =
            ReturnFile::decode(&card.read_binary(RETURN_SFI, RETURN_LEN, "read return file")?)?;
        let return_data = match returned {
            ReturnFile::Blank => None,
            // The meter owns the return file; one it wrote oddly must not block a sale.
            ReturnFile::Unknown { tag } => {
                log(
                    Level::Warn,
                    &format!(
                        "return file starts with {tag:02X}, not 52 ('R'); treating it as absent"
                    ),
                );
                None
            }
            ReturnFile::Written(meter) => Some(meter.to_return_data()),
        };
        log(
            Level::Info,
            &format!(
                "read card {}: purchase count {}",
                parameters.card_serial, wallet.purchase_count
            ),
        );
        Ok(CardData {
            card_serial: parameters.card_serial,
            utility_code: parameters.utility_code,
            customer_number: parameters.customer_number,
            meter_number: parameters.meter_number,
            role: parameters.role,
            purchase_count: wallet.purchase_count,
            pending: wallet.pending(),
            return_data,
        })
    }

    fn write_credit(
        channel: &CardChannel,
        grant: CreditGrant,
        authority: &CardAuthority,
    ) -> Result<(), CardError> {
        let card = Card::new(channel);
        card.select()?;
        let parameters = read_parameters(&card)?;
        let wallet = read_wallet(&card)?;
        if grant.card_serial != parameters.card_serial {
            return Err(CardError::WrongCard(format!(
                "grant is for card {}; this card is {}",
                grant.card_serial, parameters.card_serial
            )));
        }
        if wallet.holds(&grant) {
            log(
                Level::Info,
                &format!(
                    "card {} already carries purchase {}; nothing to write",
                    parameters.card_serial, grant.purchase_count
                ),
            );
            return Ok(());
        }
        check_next_purchase(&wallet, &grant)?;
        let new_wallet = Wallet::from_grant(&grant)?;

        let challenge = card.get_challenge(AUTH_CHALLENGE_LEN)?;
        let cryptogram = authenticate(
            authority,
            AuthPurpose::ExternalAuthenticate,
            challenge,
            Vec::new(),
        )?;
        let cryptogram = <[u8; CRYPTOGRAM_LEN]>::try_from(cryptogram.as_slice()).map_err(|_| {
            CardError::AuthorityFailed(format!(
                "the external-authentication cryptogram is {} bytes; the card needs {CRYPTOGRAM_LEN}",
                cryptogram.len()
            ))
        })?;
        card.external_authenticate(&cryptogram)?;

        let challenge = card.get_challenge(MAC_CHALLENGE_LEN)?;
        card.update_wallet_sm(&new_wallet.encode(), |mac_input| {
            let mac = authenticate(
                authority,
                AuthPurpose::CommandMac,
                challenge,
                mac_input.to_vec(),
            )?;
            <[u8; MAC_LEN]>::try_from(mac.as_slice()).map_err(|_| {
                CardError::AuthorityFailed(format!(
                    "the wallet update's MAC is {} bytes; the card needs {MAC_LEN}",
                    mac.len()
                ))
            })
        })?;
        log(
            Level::Info,
            &format!(
                "wrote purchase {} onto card {}",
                grant.purchase_count, parameters.card_serial
            ),
        );
        Ok(())
    }

    fn verify(channel: &CardChannel, grant: CreditGrant) -> Result<VerifyOutcome, CardError> {
        let card = Card::new(channel);
        card.select()?;
        let wallet = read_wallet(&card)?;
        Ok(if wallet.holds(&grant) {
            VerifyOutcome::Written
        } else {
            VerifyOutcome::NotWritten
        })
    }
}

fn read_parameters(card: &Card) -> Result<ParameterFile, CardError> {
    ParameterFile::decode(&card.read_binary(PARAMETER_SFI, PARAMETER_LEN, "read parameter file")?)
}

fn read_wallet(card: &Card) -> Result<Wallet, CardError> {
    Wallet::decode(&card.read_binary(WALLET_SFI, WALLET_LEN, "read wallet file")?)
}

/// Refuses a grant that is not the card's next purchase, or that would overwrite a credit the
/// meter has not taken.
fn check_next_purchase(wallet: &Wallet, grant: &CreditGrant) -> Result<(), CardError> {
    let Some(next) = wallet.purchase_count.checked_add(1) else {
        return Err(CardError::GrantRejected(format!(
            "the card is at purchase count {}, the last there can be",
            wallet.purchase_count
        )));
    };
    if grant.purchase_count != next {
        return Err(CardError::GrantRejected(format!(
            "grant carries purchase count {}; the card is at {}, so the next is {next}",
            grant.purchase_count, wallet.purchase_count
        )));
    }
    if let Some(pending) = wallet.pending() {
        return Err(CardError::GrantRejected(format!(
            "the card still carries purchase {} that the meter has not taken; \
             insert the card into the meter first",
            pending.purchase_count
        )));
    }
    Ok(())
}

/// Asks the encryption machine, through the host, for a cryptogram or MAC.
fn authenticate(
    authority: &CardAuthority,
    purpose: AuthPurpose,
    challenge: Vec<u8>,
    data: Vec<u8>,
) -> Result<Vec<u8>, CardError> {
    let what = match purpose {
        AuthPurpose::ExternalAuthenticate => "external authentication",
        AuthPurpose::CommandMac => "the wallet update's MAC",
        AuthPurpose::VerifyCardMac => "checking the card's MAC",
    };
    authority
        .authenticate(&AuthRequest {
            purpose,
            challenge,
            data,
        })
        .map_err(|err| {
            CardError::AuthorityFailed(match err {
                AuthorityError::Refused(text) => format!("{what}: the backend refused: {text}"),
                AuthorityError::Unavailable(text) => {
                    format!("{what}: the backend is unavailable: {text}")
                }
                AuthorityError::NotAllowed(text) => {
                    format!("{what}: the host does not allow it: {text}")
                }
            })
        })
}

/// The export glue `export!` generates declares `unsafe` FFI functions; allow that here only.
#[allow(unsafe_code)]
mod glue {
    use super::LanlingCpu;

    crate::export!(LanlingCpu with_types_in crate);
}
