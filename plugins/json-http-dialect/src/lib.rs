//! The JH1 backend dialect, JSON over HTTP/1.1, as `docs/dialects/json-http.md` defines it.
//!
//! Each call is one `POST /api/v1/<call>` on a connection of its own, with a JSON body. Every 200
//! reply carries an envelope `{code, message, data}`: `0000` puts the call's result in `data`,
//! `1001`–`1007` are refusals whose message is shown to the customer, `2001` is "no such sale"
//! (sale-status only), `9001` is "call not offered", and `9999` a system error that did nothing,
//! as is HTTP 503. Binary values are hex strings, money integer fen, energy integer Wh, and names
//! camelCase.
//!
//! `http` frames the request and reads the one response; `de` reads JSON so that a reply that
//! does not fit is reported with the name of the field that was wrong; `billing` is contract
//! 1.1's quotes and bills.

mod billing;
mod de;
mod http;

use std::fmt::Display;

use serde::de::{DeserializeOwned, Error as _};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

use exports::selfvend::backend::dialect::{
    Account, AuthRequest, BackendError, BuyCheck, CardRef, CreditGrant, DialectInfo, Guest,
    PeriodReport, Purchase, Reconciliation, SaleOutcome, SaleRequest, WriteConfirmation,
};
use selfvend::backend::log::{Level, log};
use selfvend::backend::types::{
    AccountStatus, AuthPurpose, BusinessTotal, BusinessType, PaymentKind, PurchaseRecord, Refusal,
    RefusalCode,
};

wit_bindgen::generate!({ path: "../../wit/backend", world: "backend-dialect" });

struct JsonHttp;

impl Guest for JsonHttp {
    fn about() -> DialectInfo {
        DialectInfo {
            vendor: "Municipal Utility Cloud Platform (fictional)".into(),
            name: "json-http".into(),
            version: "1.1.0".into(),
        }
    }

    fn ping() -> Result<(), BackendError> {
        let _: Option<Empty> = exchange("ping", &Empty {})?.result()?;
        Ok(())
    }

    fn account_query(card: CardRef) -> Result<Account, BackendError> {
        let request = CardBody { card: card.into() };
        let account: AccountData = exchange("account-query", &request)?.result()?;
        Ok(account.into())
    }

    fn can_buy(card: CardRef, purchase: Purchase) -> Result<BuyCheck, BackendError> {
        let request = CanBuyBody {
            card: card.into(),
            purchase: purchase.into(),
        };
        let reply = exchange("can-buy", &request)?;
        match reply.code {
            // A refusal that comes with limits answers the check ("may not buy"); without
            // them it is an ordinary refusal of the call.
            Code::Failure(Failure::Refused(code)) if !reply.data.is_null() => {
                let limits: LimitsData = reply.data()?;
                Ok(BuyCheck {
                    refusal: Some(Refusal {
                        code,
                        message: reply.message,
                    }),
                    min_fen: limits.min_fen,
                    max_fen: limits.max_fen,
                })
            }
            _ => {
                let limits: LimitsData = reply.result()?;
                Ok(BuyCheck {
                    refusal: None,
                    min_fen: limits.min_fen,
                    max_fen: limits.max_fen,
                })
            }
        }
    }

    fn sale(request: SaleRequest) -> Result<CreditGrant, BackendError> {
        let grant: GrantData = exchange("sale", &SaleBody::from(request))?.result()?;
        Ok(grant.into())
    }

    fn sale_status(terminal_id: String, kiosk_serial: u64) -> Result<SaleOutcome, BackendError> {
        let request = SaleStatusBody {
            terminal_id,
            kiosk_serial,
        };
        let reply = exchange("sale-status", &request)?;
        match reply.code {
            Code::Success => Ok(SaleOutcome::Granted(reply.data::<GrantData>()?.into())),
            Code::Failure(Failure::NoSuchSale) => Ok(SaleOutcome::NotFound),
            Code::Failure(Failure::Refused(code)) => Ok(SaleOutcome::Refused(Refusal {
                code,
                message: reply.message,
            })),
            Code::Failure(failure) => Err(reply.error(failure)),
        }
    }

    fn confirm_write(confirmation: WriteConfirmation) -> Result<(), BackendError> {
        let request = ConfirmWriteBody::from(confirmation);
        let _: Option<Empty> = exchange("confirm-write", &request)?.result()?;
        Ok(())
    }

    fn authenticate(request: AuthRequest) -> Result<Vec<u8>, BackendError> {
        let reply: AuthenticateData =
            exchange("authenticate", &AuthenticateBody::from(request))?.result()?;
        Ok(reply.result)
    }

    fn card_password(card: CardRef) -> Result<Vec<u8>, BackendError> {
        let request = CardBody { card: card.into() };
        let reply: PasswordData = exchange("card-password", &request)?.result()?;
        Ok(reply.password)
    }

    fn reconcile(report: PeriodReport) -> Result<Reconciliation, BackendError> {
        let reply: ReconcileData = exchange("reconcile", &ReconcileBody::from(report))?.result()?;
        Ok(Reconciliation {
            matched: reply.matched,
            backend_totals: reply.totals.into_iter().map(Into::into).collect(),
            differences: reply.differences,
        })
    }
}

/// The export glue `export!` generates declares `unsafe` FFI functions; allow that here only.
#[allow(unsafe_code)]
mod glue {
    use super::JsonHttp;
    crate::export!(JsonHttp with_types_in crate);
}

/// Posts `request` to `call` and reads the reply's envelope; transport, HTTP and envelope
/// failures are errors already.
fn exchange(call: &'static str, request: &impl Serialize) -> Result<Reply, BackendError> {
    let json = serde_json::to_vec(request)
        .map_err(|e| unreachable(format!("{call}: could not encode the request: {e}")))?;
    let body = http::post(call, &json)?;
    let text = std::str::from_utf8(&body)
        .map_err(|e| malformed(call, format!("the body is not UTF-8 ({e})")))?;
    if text.trim().is_empty() {
        return Err(malformed(call, "the body is empty"));
    }
    let value: Value = serde_json::from_str(text)
        .map_err(|e| malformed(call, format!("the body is not JSON ({e})")))?;
    if !value.is_object() {
        return Err(malformed(call, "the body is not a JSON object"));
    }
    let envelope: Envelope = de::from_value(&value, "").map_err(|e| malformed(call, e))?;
    let code = Code::parse(&envelope.code)
        .ok_or_else(|| malformed(call, format!("code {:?} is not a JH1 code", envelope.code)))?;
    log(Level::Debug, &format!("{call}: code {}", envelope.code));
    Ok(Reply {
        call,
        code,
        message: envelope.message,
        data: envelope.data,
    })
}

/// A `MalformedReply` for `call`, naming the part of the reply that was wrong.
pub(crate) fn malformed(call: &str, what: impl Display) -> BackendError {
    BackendError::MalformedReply(bounded(&format!("{call} reply: {what}")))
}

/// An `Unreachable`: nothing reached the backend, nothing was done, or no whole reply came.
pub(crate) fn unreachable(why: impl Display) -> BackendError {
    BackendError::Unreachable(bounded(&why.to_string()))
}

/// Error texts are quoted from replies at times; the host takes at most 512 bytes, and no
/// control characters.
fn bounded(text: &str) -> String {
    const LIMIT: usize = 500;
    let mut out = String::new();
    for c in text.chars() {
        let c = if c.is_control() { ' ' } else { c };
        if out.len() + c.len_utf8() > LIMIT {
            break;
        }
        out.push(c);
    }
    out
}

/// Every 200 reply's body.
#[derive(Deserialize)]
struct Envelope {
    code: String,
    message: String,
    /// An object or null; required all the same.
    data: Value,
}

/// An envelope code, read against the spec's table.
#[derive(Clone, Copy)]
enum Code {
    Success,
    Failure(Failure),
}

/// The codes other than `0000`.
#[derive(Clone, Copy)]
enum Failure {
    Refused(RefusalCode),
    NoSuchSale,
    NotOffered,
    SystemError,
}

impl Code {
    /// `None` for a code the table does not have.
    fn parse(code: &str) -> Option<Self> {
        let refused = |code| Some(Code::Failure(Failure::Refused(code)));
        match code {
            "0000" => Some(Code::Success),
            "1001" => refused(RefusalCode::UnknownCard),
            "1002" => refused(RefusalCode::AccountClosed),
            "1003" => refused(RefusalCode::Arrears),
            "1004" => refused(RefusalCode::CreditNotTaken),
            "1005" => refused(RefusalCode::OverLimit),
            "1006" => refused(RefusalCode::CardMismatch),
            "1007" => refused(RefusalCode::Other),
            "2001" => Some(Code::Failure(Failure::NoSuchSale)),
            "9001" => Some(Code::Failure(Failure::NotOffered)),
            "9999" => Some(Code::Failure(Failure::SystemError)),
            _ => None,
        }
    }
}

/// One call's reply envelope, its code read.
struct Reply {
    call: &'static str,
    code: Code,
    message: String,
    data: Value,
}

impl Reply {
    /// Reads `data` as `T`.
    fn data<T: DeserializeOwned>(&self) -> Result<T, BackendError> {
        de::from_value(&self.data, "data").map_err(|e| malformed(self.call, e))
    }

    /// The call's result from `data` on `0000`; any other code as the table's error.
    fn result<T: DeserializeOwned>(self) -> Result<T, BackendError> {
        match self.code {
            Code::Success => self.data(),
            Code::Failure(failure) => Err(self.error(failure)),
        }
    }

    /// The error a non-success code means for a call that has no special use for it.
    fn error(self, failure: Failure) -> BackendError {
        match failure {
            Failure::Refused(code) => BackendError::Refused(Refusal {
                code,
                message: self.message,
            }),
            Failure::NoSuchSale => malformed(
                self.call,
                "code 2001 (not found) is meaningful for sale-status and bill-payment-status only",
            ),
            Failure::NotOffered => BackendError::NotSupported,
            Failure::SystemError => unreachable(format!("backend answered 9999: {}", self.message)),
        }
    }
}

/// The request of ping, and the `data` of ping and confirm-write: `{}` (or null in a reply).
#[derive(Serialize, Deserialize)]
struct Empty {}

/// `Card`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CardJson {
    card_serial: String,
    utility_code: String,
    customer_number: String,
    meter_number: String,
    purchase_count: u32,
    pending_fen: u64,
    pending_wh: u64,
    return_data: Option<String>,
}

impl From<CardRef> for CardJson {
    fn from(card: CardRef) -> Self {
        CardJson {
            card_serial: card.card_serial,
            utility_code: card.utility_code,
            customer_number: card.customer_number,
            meter_number: card.meter_number,
            purchase_count: card.purchase_count,
            pending_fen: card.pending_fen,
            pending_wh: card.pending_wh,
            return_data: card.return_data.map(hex::encode_upper),
        }
    }
}

/// `Purchase`: an amount in fen or in Wh.
#[derive(Serialize)]
struct PurchaseJson {
    kind: PurchaseKind,
    amount: u64,
}

#[derive(Serialize)]
#[serde(rename_all = "lowercase")]
enum PurchaseKind {
    Money,
    Energy,
}

impl From<Purchase> for PurchaseJson {
    fn from(purchase: Purchase) -> Self {
        match purchase {
            Purchase::Money(fen) => PurchaseJson {
                kind: PurchaseKind::Money,
                amount: fen,
            },
            Purchase::Energy(wh) => PurchaseJson {
                kind: PurchaseKind::Energy,
                amount: wh,
            },
        }
    }
}

/// `Total`, sent in a period report and read back in the reconciliation.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct TotalJson {
    business: Business,
    count: u32,
    amount_fen: u64,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum Business {
    CashSale,
    BankCardSale,
    CashBillPayment,
}

impl From<BusinessTotal> for TotalJson {
    fn from(total: BusinessTotal) -> Self {
        TotalJson {
            business: match total.business {
                BusinessType::CashSale => Business::CashSale,
                BusinessType::BankCardSale => Business::BankCardSale,
                BusinessType::CashBillPayment => Business::CashBillPayment,
            },
            count: total.count,
            amount_fen: total.amount_fen,
        }
    }
}

impl From<TotalJson> for BusinessTotal {
    fn from(total: TotalJson) -> Self {
        BusinessTotal {
            business: match total.business {
                Business::CashSale => BusinessType::CashSale,
                Business::BankCardSale => BusinessType::BankCardSale,
                Business::CashBillPayment => BusinessType::CashBillPayment,
            },
            count: total.count,
            amount_fen: total.amount_fen,
        }
    }
}

/// The request of account-query and of card-password.
#[derive(Serialize)]
struct CardBody {
    card: CardJson,
}

#[derive(Serialize)]
struct CanBuyBody {
    card: CardJson,
    purchase: PurchaseJson,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SaleBody {
    terminal_id: String,
    kiosk_serial: u64,
    card: CardJson,
    purchase: PurchaseJson,
    payment: Payment,
    paid_fen: u64,
}

#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
enum Payment {
    Cash,
    BankCard,
}

impl From<SaleRequest> for SaleBody {
    fn from(sale: SaleRequest) -> Self {
        SaleBody {
            terminal_id: sale.terminal_id,
            kiosk_serial: sale.kiosk_serial,
            card: sale.card.into(),
            purchase: sale.purchase.into(),
            payment: match sale.payment {
                PaymentKind::Cash => Payment::Cash,
                PaymentKind::BankCard => Payment::BankCard,
            },
            paid_fen: sale.paid_fen,
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SaleStatusBody {
    terminal_id: String,
    kiosk_serial: u64,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ConfirmWriteBody {
    terminal_id: String,
    kiosk_serial: u64,
    card_serial: String,
    written: bool,
    return_data: Option<String>,
}

impl From<WriteConfirmation> for ConfirmWriteBody {
    fn from(confirmation: WriteConfirmation) -> Self {
        ConfirmWriteBody {
            terminal_id: confirmation.terminal_id,
            kiosk_serial: confirmation.kiosk_serial,
            card_serial: confirmation.card_serial,
            written: confirmation.written,
            return_data: confirmation.return_data.map(hex::encode_upper),
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct AuthenticateBody {
    card_serial: String,
    purpose: Purpose,
    challenge: String,
    data: String,
}

#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
enum Purpose {
    ExternalAuthenticate,
    CommandMac,
    VerifyCardMac,
}

impl From<AuthRequest> for AuthenticateBody {
    fn from(request: AuthRequest) -> Self {
        AuthenticateBody {
            card_serial: request.card_serial,
            purpose: match request.purpose {
                AuthPurpose::ExternalAuthenticate => Purpose::ExternalAuthenticate,
                AuthPurpose::CommandMac => Purpose::CommandMac,
                AuthPurpose::VerifyCardMac => Purpose::VerifyCardMac,
            },
            challenge: hex::encode_upper(request.challenge),
            data: hex::encode_upper(request.data),
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ReconcileBody {
    terminal_id: String,
    period_id: u64,
    opened_at: String,
    closed_at: String,
    totals: Vec<TotalJson>,
}

impl From<PeriodReport> for ReconcileBody {
    fn from(report: PeriodReport) -> Self {
        ReconcileBody {
            terminal_id: report.terminal_id,
            period_id: report.period_id,
            opened_at: report.opened_at,
            closed_at: report.closed_at,
            totals: report.totals.into_iter().map(Into::into).collect(),
        }
    }
}

/// The `data` of account-query.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AccountData {
    customer_number: String,
    customer_name: String,
    address: String,
    meter_number: String,
    card_serial: String,
    status: Status,
    purchase_count: u32,
    price_fen_per_kwh: u32,
    arrears_fen: u64,
    /// Required, and null when there is none (serde would otherwise let it be left out).
    #[serde(deserialize_with = "Option::deserialize")]
    last_purchase: Option<LastPurchaseData>,
}

#[derive(Deserialize)]
#[serde(rename_all = "lowercase")]
enum Status {
    Active,
    Closed,
    Suspended,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct LastPurchaseData {
    amount_fen: u64,
    energy_wh: u64,
    at: String,
    place: String,
}

impl From<AccountData> for Account {
    fn from(account: AccountData) -> Self {
        Account {
            customer_number: account.customer_number,
            customer_name: account.customer_name,
            address: account.address,
            meter_number: account.meter_number,
            card_serial: account.card_serial,
            status: match account.status {
                Status::Active => AccountStatus::Active,
                Status::Closed => AccountStatus::Closed,
                Status::Suspended => AccountStatus::Suspended,
            },
            purchase_count: account.purchase_count,
            price_fen_per_kwh: account.price_fen_per_kwh,
            arrears_fen: account.arrears_fen,
            last_purchase: account.last_purchase.map(|last| PurchaseRecord {
                amount_fen: last.amount_fen,
                energy_wh: last.energy_wh,
                at: last.at,
                place: last.place,
            }),
        }
    }
}

/// The `data` of can-buy, on success and with a refusal alike.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct LimitsData {
    min_fen: u64,
    max_fen: u64,
}

/// `Grant`: the `data` of sale, and of sale-status when the sale was made.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GrantData {
    sale_id: String,
    purchase_count: u32,
    amount_fen: u64,
    energy_wh: u64,
    #[serde(deserialize_with = "hex_bytes")]
    token: Vec<u8>,
}

impl From<GrantData> for CreditGrant {
    fn from(grant: GrantData) -> Self {
        CreditGrant {
            backend_sale_id: grant.sale_id,
            purchase_count: grant.purchase_count,
            amount_fen: grant.amount_fen,
            energy_wh: grant.energy_wh,
            token: grant.token,
        }
    }
}

#[derive(Deserialize)]
struct AuthenticateData {
    #[serde(deserialize_with = "hex_bytes")]
    result: Vec<u8>,
}

#[derive(Deserialize)]
struct PasswordData {
    #[serde(deserialize_with = "hex_bytes")]
    password: Vec<u8>,
}

#[derive(Deserialize)]
struct ReconcileData {
    matched: bool,
    totals: Vec<TotalJson>,
    differences: Vec<String>,
}

/// Reads a hex string of either case. Errors never quote the value: it may be key material.
fn hex_bytes<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
    match Value::deserialize(deserializer)? {
        Value::String(text) => {
            hex::decode(text).map_err(|_| D::Error::custom("not an even-length hex string"))
        }
        _ => Err(D::Error::custom("not a hex string")),
    }
}
