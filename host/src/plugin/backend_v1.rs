//! Bindings for `selfvend:backend@1.x`: the host side of the backend-dialect world (the
//! connection the host owns), and conversions between generated and host types.

use wasmtime::component::Resource;

use super::PluginState;
use super::inspect::Version;
use crate::backend as host;
use crate::card;
use crate::money::{Fen, Wh};

/// The newest `selfvend:backend` this host speaks.
pub const VERSION: Version = Version {
    major: 1,
    minor: 0,
    patch: 0,
};

wasmtime::component::bindgen!({
    path: "../wit/backend",
    world: "backend-dialect",
    imports: { default: trappable },
    with: {
        "selfvend:backend/connection.connection": ConnectionBinding,
    },
});

use selfvend::backend::{connection, log, types};

/// A dialect's error as the guest returned it, before the host checks it.
pub type GuestBackendError = types::BackendError;

/// An open connection to the configured endpoint, owned by the host.
pub struct ConnectionBinding(host::Connection);

impl types::Host for PluginState {}

impl connection::Host for PluginState {}

fn net_error(e: host::NetError) -> connection::NetError {
    match e {
        host::NetError::Timeout => connection::NetError::Timeout,
        host::NetError::Closed => connection::NetError::Closed,
        host::NetError::ConnectFailed(s) => connection::NetError::ConnectFailed(s),
        host::NetError::TooLarge => connection::NetError::TooLarge,
        host::NetError::Io(s) => connection::NetError::Io(s),
    }
}

/// Open connections per call: a dialect needs one or two, never hundreds.
const MAX_TABLE_CONNECTIONS: usize = 8;

impl connection::HostConnection for PluginState {
    fn open(
        &mut self,
    ) -> wasmtime::Result<Result<Resource<ConnectionBinding>, connection::NetError>> {
        let Some(endpoint) = self.endpoint.clone() else {
            return Ok(Err(connection::NetError::ConnectFailed(
                "no backend endpoint is configured".into(),
            )));
        };
        if self.open_connections >= MAX_TABLE_CONNECTIONS {
            return Ok(Err(connection::NetError::Io(
                "too many connections in one session".into(),
            )));
        }
        match self.waiting(|_| endpoint.connect()) {
            Ok(conn) => {
                self.open_connections += 1;
                Ok(Ok(self.table.push(ConnectionBinding(conn))?))
            }
            Err(e) => Ok(Err(net_error(e))),
        }
    }

    fn send(
        &mut self,
        this: Resource<ConnectionBinding>,
        data: Vec<u8>,
    ) -> wasmtime::Result<Result<(), connection::NetError>> {
        let endpoint = self
            .endpoint
            .clone()
            .expect("a connection exists only with an endpoint");
        let result = self.waiting(|s| -> wasmtime::Result<_> {
            let conn = s.table.get_mut(&this)?;
            Ok(conn.0.send(&endpoint, &mut s.wire, &data))
        })?;
        Ok(result.map_err(net_error))
    }

    fn receive(
        &mut self,
        this: Resource<ConnectionBinding>,
        max: u32,
    ) -> wasmtime::Result<Result<Vec<u8>, connection::NetError>> {
        let endpoint = self
            .endpoint
            .clone()
            .expect("a connection exists only with an endpoint");
        let result = self.waiting(|s| -> wasmtime::Result<_> {
            let conn = s.table.get_mut(&this)?;
            Ok(conn.0.receive(&endpoint, &mut s.wire, max as usize))
        })?;
        Ok(result.map_err(net_error))
    }

    fn drop(&mut self, this: Resource<ConnectionBinding>) -> wasmtime::Result<()> {
        self.table.delete(this)?;
        self.open_connections = self.open_connections.saturating_sub(1);
        Ok(())
    }
}

impl log::Host for PluginState {
    fn log(&mut self, level: log::Level, message: String) -> wasmtime::Result<()> {
        let level = match level {
            log::Level::Debug => "debug",
            log::Level::Info => "info",
            log::Level::Warn => "warn",
            log::Level::Error => "error",
        };
        self.log.line(level, &message);
        Ok(())
    }
}

/// Limits on what a dialect may return, so a reply cannot flood the host.
const MAX_TEXT: usize = 512;
const MAX_BYTES: usize = 4096;
const MAX_LIST: usize = 64;

fn text(field: &str, s: String) -> Result<String, String> {
    if s.len() > MAX_TEXT {
        Err(format!(
            "{field} is {} bytes long (limit {MAX_TEXT})",
            s.len()
        ))
    } else if s.chars().any(|c| c.is_control() && c != '\n') {
        Err(format!("{field} contains control characters"))
    } else {
        Ok(s)
    }
}

pub(super) fn bytes(field: &str, b: Vec<u8>) -> Result<Vec<u8>, String> {
    if b.len() > MAX_BYTES {
        Err(format!(
            "{field} is {} bytes long (limit {MAX_BYTES})",
            b.len()
        ))
    } else {
        Ok(b)
    }
}

pub(super) fn dialect_info(i: types::DialectInfo) -> Result<host::DialectInfo, String> {
    Ok(host::DialectInfo {
        vendor: text("vendor", i.vendor)?,
        name: text("name", i.name)?,
        version: text("version", i.version)?,
    })
}

pub(super) fn card_ref(c: &host::CardRef) -> types::CardRef {
    types::CardRef {
        card_serial: c.card_serial.clone(),
        utility_code: c.utility_code.clone(),
        customer_number: c.customer_number.clone(),
        meter_number: c.meter_number.clone(),
        purchase_count: c.purchase_count,
        pending_fen: c.pending.0,
        pending_wh: c.pending_energy.0,
        return_data: c.return_data.clone(),
    }
}

pub(super) fn purchase(p: host::Purchase) -> types::Purchase {
    match p {
        host::Purchase::Money(f) => types::Purchase::Money(f.0),
        host::Purchase::Energy(w) => types::Purchase::Energy(w.0),
    }
}

fn refusal(r: types::Refusal) -> Result<host::Refusal, String> {
    Ok(host::Refusal {
        code: match r.code {
            types::RefusalCode::AccountClosed => host::RefusalCode::AccountClosed,
            types::RefusalCode::Arrears => host::RefusalCode::Arrears,
            types::RefusalCode::CreditNotTaken => host::RefusalCode::CreditNotTaken,
            types::RefusalCode::OverLimit => host::RefusalCode::OverLimit,
            types::RefusalCode::UnknownCard => host::RefusalCode::UnknownCard,
            types::RefusalCode::CardMismatch => host::RefusalCode::CardMismatch,
            types::RefusalCode::Other => host::RefusalCode::Other,
        },
        message: text("refusal message", r.message)?,
    })
}

pub(super) fn account(a: types::Account) -> Result<host::Account, String> {
    Ok(host::Account {
        customer_number: text("customer-number", a.customer_number)?,
        customer_name: text("customer-name", a.customer_name)?,
        address: text("address", a.address)?,
        meter_number: text("meter-number", a.meter_number)?,
        card_serial: text("card-serial", a.card_serial)?,
        status: match a.status {
            types::AccountStatus::Active => host::AccountStatus::Active,
            types::AccountStatus::Closed => host::AccountStatus::Closed,
            types::AccountStatus::Suspended => host::AccountStatus::Suspended,
        },
        purchase_count: a.purchase_count,
        price_fen_per_kwh: a.price_fen_per_kwh,
        arrears: Fen(a.arrears_fen),
        last_purchase: a
            .last_purchase
            .map(|p| -> Result<_, String> {
                Ok(host::PurchaseRecord {
                    amount: Fen(p.amount_fen),
                    energy: Wh(p.energy_wh),
                    at: text("last-purchase at", p.at)?,
                    place: text("last-purchase place", p.place)?,
                })
            })
            .transpose()?,
    })
}

pub(super) fn buy_check(c: types::BuyCheck) -> Result<host::BuyCheck, String> {
    if c.min_fen > c.max_fen && c.refusal.is_none() {
        return Err(format!(
            "can-buy allows a minimum of {} fen above its maximum of {} fen",
            c.min_fen, c.max_fen
        ));
    }
    Ok(host::BuyCheck {
        refusal: c.refusal.map(refusal).transpose()?,
        min: Fen(c.min_fen),
        max: Fen(c.max_fen),
    })
}

pub(super) fn sale_request(r: &host::SaleRequest) -> types::SaleRequest {
    types::SaleRequest {
        terminal_id: r.terminal_id.clone(),
        kiosk_serial: r.kiosk_serial,
        card: card_ref(&r.card),
        purchase: purchase(r.purchase),
        payment: match r.payment {
            host::PaymentKind::Cash => types::PaymentKind::Cash,
            host::PaymentKind::BankCard => types::PaymentKind::BankCard,
        },
        paid_fen: r.paid.0,
    }
}

pub(super) fn grant(g: types::CreditGrant) -> Result<host::BackendGrant, String> {
    Ok(host::BackendGrant {
        backend_sale_id: text("backend-sale-id", g.backend_sale_id)?,
        purchase_count: g.purchase_count,
        amount: Fen(g.amount_fen),
        energy: Wh(g.energy_wh),
        token: bytes("token", g.token)?,
    })
}

pub(super) fn sale_status(s: types::SaleOutcome) -> Result<host::SaleStatus, String> {
    Ok(match s {
        types::SaleOutcome::Granted(g) => host::SaleStatus::Granted(grant(g)?),
        types::SaleOutcome::NotFound => host::SaleStatus::NotFound,
        types::SaleOutcome::Refused(r) => host::SaleStatus::Refused(refusal(r)?),
    })
}

pub(super) fn write_confirmation(c: &host::WriteConfirmation) -> types::WriteConfirmation {
    types::WriteConfirmation {
        terminal_id: c.terminal_id.clone(),
        kiosk_serial: c.kiosk_serial,
        card_serial: c.card_serial.clone(),
        written: c.written,
        return_data: c.return_data.clone(),
    }
}

pub(super) fn auth_request(card_serial: &str, r: &card::AuthRequest) -> types::AuthRequest {
    types::AuthRequest {
        card_serial: card_serial.to_string(),
        purpose: match r.purpose {
            card::AuthPurpose::ExternalAuthenticate => types::AuthPurpose::ExternalAuthenticate,
            card::AuthPurpose::CommandMac => types::AuthPurpose::CommandMac,
            card::AuthPurpose::VerifyCardMac => types::AuthPurpose::VerifyCardMac,
        },
        challenge: r.challenge.clone(),
        data: r.data.clone(),
    }
}

fn business_type(b: host::BusinessType) -> types::BusinessType {
    match b {
        host::BusinessType::CashSale => types::BusinessType::CashSale,
        host::BusinessType::BankCardSale => types::BusinessType::BankCardSale,
        host::BusinessType::CashBillPayment => types::BusinessType::CashBillPayment,
    }
}

pub(super) fn period_report(r: &host::PeriodReport) -> types::PeriodReport {
    types::PeriodReport {
        terminal_id: r.terminal_id.clone(),
        period_id: r.period_id,
        opened_at: r.opened_at.clone(),
        closed_at: r.closed_at.clone(),
        totals: r
            .totals
            .iter()
            .map(|t| types::BusinessTotal {
                business: business_type(t.business),
                count: t.count,
                amount_fen: t.amount.0,
            })
            .collect(),
    }
}

pub(super) fn reconciliation(r: types::Reconciliation) -> Result<host::Reconciliation, String> {
    if r.backend_totals.len() > MAX_LIST || r.differences.len() > MAX_LIST {
        return Err(format!("reconciliation lists are over {MAX_LIST} entries"));
    }
    Ok(host::Reconciliation {
        matched: r.matched,
        backend_totals: r
            .backend_totals
            .into_iter()
            .map(|t| host::BusinessTotal {
                business: match t.business {
                    types::BusinessType::CashSale => host::BusinessType::CashSale,
                    types::BusinessType::BankCardSale => host::BusinessType::BankCardSale,
                    types::BusinessType::CashBillPayment => host::BusinessType::CashBillPayment,
                },
                count: t.count,
                amount: Fen(t.amount_fen),
            })
            .collect(),
        differences: r
            .differences
            .into_iter()
            .map(|d| text("difference", d))
            .collect::<Result<_, _>>()?,
    })
}

pub(super) fn backend_error(e: GuestBackendError) -> Result<host::BackendError, String> {
    Ok(match e {
        types::BackendError::Refused(r) => host::BackendError::Refused(refusal(r)?),
        types::BackendError::OutcomeUnknown(s) => {
            host::BackendError::OutcomeUnknown(text("outcome-unknown", s)?)
        }
        types::BackendError::Unreachable(s) => {
            host::BackendError::Unreachable(text("unreachable", s)?)
        }
        types::BackendError::MalformedReply(s) => {
            host::BackendError::MalformedReply(text("malformed-reply", s)?)
        }
        types::BackendError::NotSupported => host::BackendError::NotSupported,
    })
}
