//! Bindings for `selfvend:payment@1.x`: the acquirer-dialect world. Its connection and log
//! are `selfvend:backend`'s, served by the same host code; `security` is the PIN pad's MAC.

use super::PluginState;
use super::inspect::Version;
use crate::bank_card::BankCard;
use crate::money::Fen;
use crate::payment as host;

/// The newest `selfvend:payment` this host speaks.
pub const VERSION: Version = Version {
    major: 1,
    minor: 0,
    patch: 0,
};

wasmtime::component::bindgen!({
    path: "../wit/payment",
    world: "acquirer-dialect",
    imports: { default: trappable },
    with: {
        "selfvend:backend/connection": super::backend_v1::selfvend::backend::connection,
        "selfvend:backend/log": super::backend_v1::selfvend::backend::log,
    },
});

use selfvend::payment::{security, types};

pub type GuestAcquirerError = types::AcquirerError;

impl types::Host for PluginState {}

impl security::Host for PluginState {
    fn mac(&mut self, data: Vec<u8>) -> wasmtime::Result<Result<Vec<u8>, String>> {
        let Some(security) = self.security.clone() else {
            return Ok(Err("no PIN pad is attached to this session".into()));
        };
        if data.is_empty() || data.len() > MAX_MAC_INPUT {
            return Ok(Err(format!(
                "a MAC is over 1 to {MAX_MAC_INPUT} bytes, not {}",
                data.len()
            )));
        }
        let mac = self.waiting(|_| {
            security
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .mac(&data)
        });
        Ok(mac.map(|m| m.to_vec()))
    }
}

/// The longest message a dialect may ask the PIN pad to MAC.
const MAX_MAC_INPUT: usize = 2048;
const MAX_TEXT: usize = 256;

fn text(field: &str, s: String) -> Result<String, String> {
    if s.len() > MAX_TEXT {
        Err(format!(
            "{field} is {} bytes long (limit {MAX_TEXT})",
            s.len()
        ))
    } else if s.chars().any(char::is_control) {
        Err(format!("{field} contains control characters"))
    } else {
        Ok(s)
    }
}

fn fixed<const N: usize>(field: &str, b: Vec<u8>) -> Result<[u8; N], String> {
    let len = b.len();
    b.try_into()
        .map_err(|_| format!("{field} is {len} bytes, not {N}"))
}

pub(super) fn dialect_info(i: types::DialectInfo) -> Result<crate::backend::DialectInfo, String> {
    Ok(crate::backend::DialectInfo {
        vendor: text("vendor", i.vendor)?,
        name: text("name", i.name)?,
        version: text("version", i.version)?,
    })
}

fn terminal(t: &host::Terminal) -> types::Terminal {
    types::Terminal {
        terminal_id: t.terminal_id.clone(),
        merchant_id: t.merchant_id.clone(),
    }
}

fn card(c: &BankCard) -> types::BankCard {
    types::BankCard {
        pan: c.pan.clone(),
        expiry: c.expiry.clone(),
        track2: c.track2.clone(),
    }
}

pub(super) fn sign_on(t: &host::Terminal, stan: u32, batch: u32) -> types::SignOnRequest {
    types::SignOnRequest {
        terminal: terminal(t),
        stan,
        batch,
    }
}

pub(super) fn working_keys(k: types::WorkingKeys) -> Result<host::WorkingKeys, String> {
    Ok(host::WorkingKeys {
        pin_key: fixed("pin-key", k.pin_key)?,
        pin_key_check: fixed("pin-key-check", k.pin_key_check)?,
        mac_key: fixed("mac-key", k.mac_key)?,
        mac_key_check: fixed("mac-key-check", k.mac_key_check)?,
    })
}

pub(super) fn purchase(r: &host::PurchaseRequest) -> types::PurchaseRequest {
    types::PurchaseRequest {
        terminal: terminal(&r.terminal),
        stan: r.stan,
        batch: r.batch,
        amount_fen: r.amount.0,
        card: card(&r.card),
        pin_block: r.pin_block.map(|b| b.to_vec()),
    }
}

pub(super) fn purchase_outcome(
    o: types::PurchaseOutcome,
    asked: Fen,
) -> Result<host::PurchaseOutcome, String> {
    Ok(match o {
        types::PurchaseOutcome::Approved(a) => {
            // An approval for another amount is not the purchase the kiosk asked for.
            if a.amount_fen != asked.0 {
                return Err(format!(
                    "approved {} fen for a purchase of {} fen",
                    a.amount_fen, asked.0
                ));
            }
            host::PurchaseOutcome::Approved(host::Approval {
                rrn: text("rrn", a.rrn)?,
                auth_code: text("auth-code", a.auth_code)?,
                amount: Fen(a.amount_fen),
                acquirer_time: text("acquirer-time", a.acquirer_time)?,
            })
        }
        types::PurchaseOutcome::Declined(d) => host::PurchaseOutcome::Declined(host::Decline {
            code: match d.code {
                types::DeclineCode::InsufficientFunds => host::DeclineCode::InsufficientFunds,
                types::DeclineCode::WrongPin => host::DeclineCode::WrongPin,
                types::DeclineCode::PinTriesExceeded => host::DeclineCode::PinTriesExceeded,
                types::DeclineCode::CardBlocked => host::DeclineCode::CardBlocked,
                types::DeclineCode::InvalidCard => host::DeclineCode::InvalidCard,
                types::DeclineCode::ExpiredCard => host::DeclineCode::ExpiredCard,
                types::DeclineCode::Other => host::DeclineCode::Other,
            },
            response_code: text("response-code", d.response_code)?,
            message: text("decline message", d.message)?,
        }),
    })
}

pub(super) fn reversal(r: &host::ReversalRequest) -> types::ReversalRequest {
    types::ReversalRequest {
        terminal: terminal(&r.terminal),
        stan: r.stan,
        batch: r.batch,
        amount_fen: r.amount.0,
        card: card(&r.card),
        reason: match r.reason {
            host::ReversalReason::NoAnswer => types::ReversalReason::NoAnswer,
            host::ReversalReason::Cancelled => types::ReversalReason::Cancelled,
        },
    }
}

pub(super) fn settlement_request(r: &host::SettlementRequest) -> types::SettlementRequest {
    types::SettlementRequest {
        terminal: terminal(&r.terminal),
        stan: r.stan,
        batch: r.batch,
        count: r.count,
        amount_fen: r.amount.0,
    }
}

pub(super) fn settlement(s: types::Settlement) -> host::Settlement {
    host::Settlement {
        balanced: s.balanced,
        acquirer_count: s.acquirer_count,
        acquirer_amount: Fen(s.acquirer_amount_fen),
    }
}

pub(super) fn acquirer_error(e: GuestAcquirerError) -> Result<host::AcquirerError, String> {
    Ok(match e {
        types::AcquirerError::Refused(s) => host::AcquirerError::Refused(text("refused", s)?),
        types::AcquirerError::OutcomeUnknown(s) => {
            host::AcquirerError::OutcomeUnknown(text("outcome-unknown", s)?)
        }
        types::AcquirerError::Unreachable(s) => {
            host::AcquirerError::Unreachable(text("unreachable", s)?)
        }
        types::AcquirerError::MalformedReply(s) => {
            host::AcquirerError::MalformedReply(text("malformed-reply", s)?)
        }
        types::AcquirerError::Security(s) => host::AcquirerError::Security(text("security", s)?),
    })
}
