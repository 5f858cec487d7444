//! The card codecs a kiosk has loaded, and which one the card in the reader belongs to.

use crate::card::{CardError, Identification};
use crate::plugin::{CardCodecSession, CodecError, Plugin, PluginError, SharedCard};

/// Why no codec could take the card.
#[derive(Debug, thiserror::Error)]
pub enum IdentifyError {
    #[error("no loaded codec knows this card (ATR {atr})")]
    Unknown { atr: String },
    /// Two vendors claim the card: the kiosk does not guess which one may write it.
    #[error("codecs `{first}` and `{second}` both claim this card (ATR {atr})")]
    Ambiguous {
        first: String,
        second: String,
        atr: String,
    },
    #[error("codec `{codec}` while identifying the card: {cause}")]
    Codec { codec: String, cause: CodecError },
}

/// The codec that claimed the card, with the session it claimed it in.
pub struct Identified<'a> {
    pub codec: &'a Plugin,
    pub session: CardCodecSession,
    pub identification: Identification,
}

/// Asks each codec in turn whether the card is its own. A card is handed to the one codec that
/// claims it; a codec that fails while looking is passed over unless the card or the reader
/// is the problem.
pub fn identify<'a>(
    codecs: &'a [Plugin],
    card: &SharedCard,
) -> Result<Identified<'a>, IdentifyError> {
    let atr = hex::encode_upper(card.lock().unwrap_or_else(|p| p.into_inner()).atr());
    let mut claimed: Option<Identified<'a>> = None;
    for codec in codecs {
        let fail = |cause: CodecError| IdentifyError::Codec {
            codec: codec.name.clone(),
            cause,
        };
        let mut session = codec
            .card_session()
            .map_err(|e: PluginError| fail(e.into()))?;
        let identification = match session.identify(card) {
            Ok(Some(identification)) => identification,
            Ok(None) => continue,
            Err(CodecError::Card(e @ (CardError::CardRemoved | CardError::ReaderFault(_)))) => {
                return Err(fail(e.into()));
            }
            Err(e) => {
                tracing::warn!(codec = %codec.name, "identify failed, passing the card on: {e}");
                continue;
            }
        };
        if let Some(first) = &claimed {
            return Err(IdentifyError::Ambiguous {
                first: first.codec.name.clone(),
                second: codec.name.clone(),
                atr,
            });
        }
        claimed = Some(Identified {
            codec,
            session,
            identification,
        });
    }
    claimed.ok_or(IdentifyError::Unknown { atr })
}
