//! A minimal backend dialect for transport tests, built against contract 1.0
//! (`wit/backend-1.0`): each call sends one text line and reads one line back. `ping` sends
//! `PING` and expects `PONG`; `sale` sends `SALE <serial>` and expects `GRANT <sale id> <count>
//! <fen>`, or `REFUSE <message>`; `sale-status` sends `STATUS <serial>` and expects the same, or
//! `NONE`. Other calls are not supported.

use exports::selfvend::backend::dialect::{
    Account, AuthRequest, BackendError, BuyCheck, CardRef, CreditGrant, DialectInfo, Guest,
    PeriodReport, Purchase, Reconciliation, SaleOutcome, SaleRequest, WriteConfirmation,
};
use selfvend::backend::connection::{Connection, NetError};
use selfvend::backend::types::{Refusal, RefusalCode};

wit_bindgen::generate!({ path: "../../../wit/backend-1.0", world: "backend-dialect" });

struct LineBackend;

fn net(e: NetError) -> String {
    match e {
        NetError::Timeout => "timed out".into(),
        NetError::Closed => "closed".into(),
        NetError::ConnectFailed(s) => format!("connect failed: {s}"),
        NetError::TooLarge => "too large".into(),
        NetError::Io(s) => s,
    }
}

/// Sends `line` and returns the reply line. A failure before sending is `unreachable`; the
/// host turns anything after sending into an unknown outcome.
fn exchange(line: &str) -> Result<String, BackendError> {
    let conn = Connection::open().map_err(|e| BackendError::Unreachable(net(e)))?;
    conn.send(format!("{line}\n").as_bytes())
        .map_err(|e| BackendError::Unreachable(net(e)))?;
    let mut reply = Vec::new();
    while !reply.ends_with(b"\n") {
        let chunk = conn.receive(512).map_err(after_send)?;
        if chunk.is_empty() {
            return Err(BackendError::Unreachable("closed before the reply".into()));
        }
        reply.extend_from_slice(&chunk);
    }
    String::from_utf8(reply)
        .map(|s| s.trim_end().to_string())
        .map_err(|_| BackendError::MalformedReply("reply is not UTF-8".into()))
}

/// A failure waiting for the reply.
#[cfg(not(feature = "planted-timeout-refusal"))]
fn after_send(e: NetError) -> BackendError {
    BackendError::Unreachable(net(e))
}

/// The bug the conformance kit must catch (built only for its test): a reply that never came
/// reported as the backend's refusal, so a kiosk would refund a sale the backend may have made.
#[cfg(feature = "planted-timeout-refusal")]
fn after_send(e: NetError) -> BackendError {
    BackendError::Refused(Refusal {
        code: RefusalCode::Other,
        message: format!("backend said no ({})", net(e)),
    })
}

/// A status whose answer never came.
#[cfg(not(feature = "planted-timeout-refusal"))]
fn lost_status(e: BackendError) -> Result<SaleOutcome, BackendError> {
    Err(e)
}

/// The same bug for a status (built only for its test): a lost answer reported as "the backend
/// has no such sale", so a kiosk would give the money back or sell again.
#[cfg(feature = "planted-timeout-refusal")]
fn lost_status(_: BackendError) -> Result<SaleOutcome, BackendError> {
    Ok(SaleOutcome::NotFound)
}

/// A ping whose answer never came.
#[cfg(not(feature = "planted-timeout-refusal"))]
fn lost_ping(e: BackendError) -> Result<String, BackendError> {
    Err(e)
}

/// And a success made up (built only for its test): a backend that never answered reported as
/// answering, the shape of a grant or an approval made up from nothing.
#[cfg(feature = "planted-timeout-refusal")]
fn lost_ping(_: BackendError) -> Result<String, BackendError> {
    Ok("PONG".into())
}

/// A `GRANT <sale id> <count> <fen>` or `REFUSE <message>` reply.
fn grant(reply: &str) -> Result<CreditGrant, BackendError> {
    if let Some(message) = reply.strip_prefix("REFUSE ") {
        return Err(BackendError::Refused(Refusal {
            code: RefusalCode::Other,
            message: message.into(),
        }));
    }
    let fields: Vec<&str> = reply.split(' ').collect();
    match fields.as_slice() {
        ["GRANT", id, count, fen] => Ok(CreditGrant {
            backend_sale_id: (*id).into(),
            purchase_count: count
                .parse()
                .map_err(|_| BackendError::MalformedReply(format!("count {count:?}")))?,
            amount_fen: fen
                .parse()
                .map_err(|_| BackendError::MalformedReply(format!("amount {fen:?}")))?,
            energy_wh: 0,
            token: Vec::new(),
        }),
        _ => Err(BackendError::MalformedReply(format!(
            "unexpected reply {reply:?}"
        ))),
    }
}

impl Guest for LineBackend {
    fn about() -> DialectInfo {
        DialectInfo {
            vendor: "selfvend tests".into(),
            name: "line-backend".into(),
            version: "0.1.0".into(),
        }
    }

    fn ping() -> Result<(), BackendError> {
        match exchange("PING").or_else(lost_ping)?.as_str() {
            "PONG" => Ok(()),
            other => Err(BackendError::MalformedReply(format!(
                "expected PONG, got {other:?}"
            ))),
        }
    }

    fn account_query(_card: CardRef) -> Result<Account, BackendError> {
        Err(BackendError::NotSupported)
    }

    fn can_buy(_card: CardRef, _purchase: Purchase) -> Result<BuyCheck, BackendError> {
        Err(BackendError::NotSupported)
    }

    fn sale(request: SaleRequest) -> Result<CreditGrant, BackendError> {
        grant(&exchange(&format!("SALE {}", request.kiosk_serial))?)
    }

    fn sale_status(_terminal_id: String, kiosk_serial: u64) -> Result<SaleOutcome, BackendError> {
        let reply = match exchange(&format!("STATUS {kiosk_serial}")) {
            Ok(reply) => reply,
            Err(e) => return lost_status(e),
        };
        if reply == "NONE" {
            return Ok(SaleOutcome::NotFound);
        }
        match grant(&reply) {
            Ok(g) => Ok(SaleOutcome::Granted(g)),
            Err(BackendError::Refused(r)) => Ok(SaleOutcome::Refused(r)),
            Err(e) => Err(e),
        }
    }

    fn confirm_write(_confirmation: WriteConfirmation) -> Result<(), BackendError> {
        Err(BackendError::NotSupported)
    }

    fn authenticate(_request: AuthRequest) -> Result<Vec<u8>, BackendError> {
        Err(BackendError::NotSupported)
    }

    fn card_password(_card: CardRef) -> Result<Vec<u8>, BackendError> {
        Err(BackendError::NotSupported)
    }

    fn reconcile(_report: PeriodReport) -> Result<Reconciliation, BackendError> {
        Err(BackendError::NotSupported)
    }
}

#[allow(unsafe_code)]
mod glue {
    use super::LineBackend;
    crate::export!(LineBackend with_types_in crate);
}
