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
    minor: 1,
    patch: 0,
};

/// The first version with the `billing` interface.
pub const BILLING: Version = Version {
    major: 1,
    minor: 1,
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

use exports::selfvend::backend::billing;
use selfvend::backend::{connection, log, types};

/// The exported interfaces, looked up one by one: a 1.0 dialect exports `dialect@1.0.0`
/// (found by wasmtime's semver-compatible lookup) and no `billing`.
pub type DialectIndices = exports::selfvend::backend::dialect::GuestIndices;
pub type Dialect = exports::selfvend::backend::dialect::Guest;
pub type BillingIndices = billing::GuestIndices;
pub type Billing = billing::Guest;

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
        match self.waiting(|_| host::connect(&endpoint)) {
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

/// A one-line, non-empty text: an id or a period, printed as one line.
fn line(field: &str, s: String) -> Result<String, String> {
    let s = text(field, s)?;
    if s.is_empty() || s.contains('\n') {
        Err(format!("{field} must be one line of text, not {s:?}"))
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
        payment: payment_kind(r.payment),
        paid_fen: r.paid.0,
    }
}

fn payment_kind(p: host::PaymentKind) -> types::PaymentKind {
    match p {
        host::PaymentKind::Cash => types::PaymentKind::Cash,
        host::PaymentKind::BankCard => types::PaymentKind::BankCard,
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

fn business_type(b: host::BusinessType) -> Option<types::BusinessType> {
    match b {
        host::BusinessType::CashSale => Some(types::BusinessType::CashSale),
        host::BusinessType::BankCardSale => Some(types::BusinessType::BankCardSale),
        host::BusinessType::CashBillPayment => Some(types::BusinessType::CashBillPayment),
        host::BusinessType::BankCardBillPayment => None,
    }
}

/// The report in 1.0 terms. A total 1.0 cannot name is left out when it is empty, and
/// refused (`Err` with the reason) when it is not: no total is silently dropped.
pub(super) fn period_report(r: &host::PeriodReport) -> Result<types::PeriodReport, String> {
    let mut totals = Vec::new();
    for t in &r.totals {
        match business_type(t.business) {
            Some(business) => totals.push(types::BusinessTotal {
                business,
                count: t.count,
                amount_fen: t.amount.0,
            }),
            None if t.count == 0 && t.amount.0 == 0 => {}
            None => {
                return Err(format!(
                    "the dialect speaks contract 1.0, which cannot report {} {:?} totalling {} fen",
                    t.count, t.business, t.amount.0
                ));
            }
        }
    }
    Ok(types::PeriodReport {
        terminal_id: r.terminal_id.clone(),
        period_id: r.period_id,
        opened_at: r.opened_at.clone(),
        closed_at: r.closed_at.clone(),
        totals,
    })
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

pub(super) fn billing_business(b: host::BusinessType) -> billing::Business {
    match b {
        host::BusinessType::CashSale => billing::Business::CashSale,
        host::BusinessType::BankCardSale => billing::Business::BankCardSale,
        host::BusinessType::CashBillPayment => billing::Business::CashBillPayment,
        host::BusinessType::BankCardBillPayment => billing::Business::BankCardBillPayment,
    }
}

pub(super) fn period_totals(r: &host::PeriodReport) -> billing::PeriodTotals {
    billing::PeriodTotals {
        terminal_id: r.terminal_id.clone(),
        period_id: r.period_id,
        opened_at: r.opened_at.clone(),
        closed_at: r.closed_at.clone(),
        totals: r
            .totals
            .iter()
            .map(|t| billing::BusinessCount {
                business: billing_business(t.business),
                count: t.count,
                amount_fen: t.amount.0,
            })
            .collect(),
    }
}

pub(super) fn period_reconciliation(
    r: billing::PeriodReconciliation,
) -> Result<host::Reconciliation, String> {
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
                    billing::Business::CashSale => host::BusinessType::CashSale,
                    billing::Business::BankCardSale => host::BusinessType::BankCardSale,
                    billing::Business::CashBillPayment => host::BusinessType::CashBillPayment,
                    billing::Business::BankCardBillPayment => {
                        host::BusinessType::BankCardBillPayment
                    }
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

/// A quote, checked to add up: arrears and electricity make the amount, the steps make the
/// electricity and the energy.
pub(super) fn quote(q: billing::PriceQuote) -> Result<host::Quote, String> {
    if q.steps.len() > MAX_LIST {
        return Err(format!(
            "quote has {} tariff steps (limit {MAX_LIST})",
            q.steps.len()
        ));
    }
    if q.electricity_fen == 0 || q.energy_wh == 0 {
        return Err(format!(
            "quote sells no energy ({} fen of electricity, {} Wh)",
            q.electricity_fen, q.energy_wh
        ));
    }
    if q.arrears_fen.checked_add(q.electricity_fen) != Some(q.amount_fen) {
        return Err(format!(
            "quote amount-fen {} is not arrears-fen {} + electricity-fen {}",
            q.amount_fen, q.arrears_fen, q.electricity_fen
        ));
    }
    let steps: Vec<host::TariffStep> = q
        .steps
        .into_iter()
        .map(|s| host::TariffStep {
            energy: Wh(s.energy_wh),
            price_fen_per_kwh: s.price_fen_per_kwh,
            amount: Fen(s.amount_fen),
        })
        .collect();
    if !steps.is_empty() {
        let fen = steps
            .iter()
            .try_fold(0u64, |a, s| a.checked_add(s.amount.0));
        let wh = steps
            .iter()
            .try_fold(0u64, |a, s| a.checked_add(s.energy.0));
        if fen != Some(q.electricity_fen) || wh != Some(q.energy_wh) {
            return Err(format!(
                "quote steps add up to {} fen and {} Wh, not electricity-fen {} and energy-wh {}",
                fen.map_or("more than u64".into(), |f| f.to_string()),
                wh.map_or("more than u64".into(), |w| w.to_string()),
                q.electricity_fen,
                q.energy_wh
            ));
        }
    }
    Ok(host::Quote {
        amount: Fen(q.amount_fen),
        arrears: Fen(q.arrears_fen),
        electricity: Fen(q.electricity_fen),
        energy: Wh(q.energy_wh),
        steps,
    })
}

/// An account's bills, checked: the total is the bills' amounts and late fees.
pub(super) fn bill_account(a: billing::BillAccount) -> Result<host::BillAccount, String> {
    if a.bills.len() > MAX_LIST {
        return Err(format!(
            "bill-query returned {} bills (limit {MAX_LIST})",
            a.bills.len()
        ));
    }
    let bills = a
        .bills
        .into_iter()
        .map(|b| -> Result<_, String> {
            Ok(host::Bill {
                bill_id: line("bill-id", b.bill_id)?,
                period: line("bill period", b.period)?,
                amount: Fen(b.amount_fen),
                late_fee: Fen(b.late_fee_fen),
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let owed = bills.iter().try_fold(0u64, |a, b| {
        a.checked_add(b.amount.0)?.checked_add(b.late_fee.0)
    });
    if owed != Some(a.total_fen) {
        return Err(format!(
            "bill-query total-fen {} is not the bills' amounts and late fees ({})",
            a.total_fen,
            owed.map_or("more than u64".into(), |f| format!("{f} fen"))
        ));
    }
    Ok(host::BillAccount {
        customer_number: line("customer-number", a.customer_number)?,
        customer_name: text("customer-name", a.customer_name)?,
        address: text("address", a.address)?,
        bills,
        total: Fen(a.total_fen),
    })
}

pub(super) fn bill_payment_request(r: &host::BillPaymentRequest) -> billing::BillPaymentRequest {
    billing::BillPaymentRequest {
        terminal_id: r.terminal_id.clone(),
        kiosk_serial: r.kiosk_serial,
        customer_number: r.customer_number.clone(),
        amount_fen: r.amount.0,
        payment: payment_kind(r.payment),
    }
}

pub(super) fn bill_receipt(r: billing::BillReceipt) -> Result<host::BillReceipt, String> {
    Ok(host::BillReceipt {
        backend_payment_id: line("backend-payment-id", r.backend_payment_id)?,
        amount: Fen(r.amount_fen),
        remaining: Fen(r.remaining_fen),
    })
}

pub(super) fn bill_payment_status(
    s: billing::BillPaymentOutcome,
) -> Result<host::BillPaymentStatus, String> {
    Ok(match s {
        billing::BillPaymentOutcome::Paid(r) => host::BillPaymentStatus::Paid(bill_receipt(r)?),
        billing::BillPaymentOutcome::NotFound => host::BillPaymentStatus::NotFound,
        billing::BillPaymentOutcome::Refused(r) => host::BillPaymentStatus::Refused(refusal(r)?),
    })
}
