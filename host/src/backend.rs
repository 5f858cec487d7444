//! The utility backend as the host sees it: the endpoint transport the host owns, and what a
//! dialect returns. Plugin bindings convert their generated types into these.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};

use crate::money::{Fen, Wh};

pub use selfvend_config::Endpoint;

/// Why the transport could not carry bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NetError {
    #[error("timed out")]
    Timeout,
    #[error("the backend closed the connection")]
    Closed,
    #[error("could not connect: {0}")]
    ConnectFailed(String),
    #[error("over the byte cap")]
    TooLarge,
    #[error("{0}")]
    Io(String),
}

/// What one plugin call did on the wire, so the host can tell "never sent" from "sent, no reply".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WireRecord {
    pub bytes_sent: usize,
    pub bytes_received: usize,
    /// The first transport error after a request was sent.
    pub error_after_send: Option<NetError>,
}

impl WireRecord {
    /// Why the peer's answer to a sent request is known not to have come in full: a transport
    /// error after sending, or not one byte back. Then a refusal, or a status that gives money
    /// back, cannot be the peer's own.
    pub fn no_answer(&self) -> Option<String> {
        match &self.error_after_send {
            Some(net) => Some(net.to_string()),
            None if self.bytes_sent > 0 && self.bytes_received == 0 => Some("no reply".into()),
            None => None,
        }
    }
}

/// One open connection to the endpoint, with the call's byte budget.
#[derive(Debug)]
pub struct Connection {
    stream: TcpStream,
}

/// Opens a connection to `endpoint` under its connect deadline.
pub fn connect(endpoint: &Endpoint) -> Result<Connection, NetError> {
    let addrs: Vec<SocketAddr> = endpoint
        .address
        .to_socket_addrs()
        .map_err(|e| NetError::ConnectFailed(format!("{}: {e}", endpoint.address)))?
        .collect();
    let mut last = NetError::ConnectFailed(format!("{}: no address", endpoint.address));
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, endpoint.connect_timeout) {
            Ok(stream) => {
                let setup = |s: &TcpStream| -> std::io::Result<()> {
                    s.set_read_timeout(Some(endpoint.io_timeout))?;
                    s.set_write_timeout(Some(endpoint.io_timeout))?;
                    s.set_nodelay(true)
                };
                setup(&stream).map_err(|e| NetError::Io(e.to_string()))?;
                return Ok(Connection { stream });
            }
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => last = NetError::Timeout,
            Err(e) => last = NetError::ConnectFailed(format!("{}: {e}", endpoint.address)),
        }
    }
    Err(last)
}

impl Connection {
    /// Sends all of `data`, charging it to `wire` against `endpoint`'s cap.
    pub fn send(
        &mut self,
        endpoint: &Endpoint,
        wire: &mut WireRecord,
        data: &[u8],
    ) -> Result<(), NetError> {
        if wire.bytes_sent + data.len() > endpoint.max_request_bytes {
            return Err(NetError::TooLarge);
        }
        let result = self
            .stream
            .write_all(data)
            .and_then(|()| self.stream.flush());
        match result {
            Ok(()) => {
                wire.bytes_sent += data.len();
                Ok(())
            }
            Err(e) => {
                // A partial write may have reached the backend.
                let err = io_error(e);
                wire.bytes_sent += 1;
                wire.error_after_send.get_or_insert(err.clone());
                Err(err)
            }
        }
    }

    /// Receives at most `max` bytes (an empty result means the backend closed).
    pub fn receive(
        &mut self,
        endpoint: &Endpoint,
        wire: &mut WireRecord,
        max: usize,
    ) -> Result<Vec<u8>, NetError> {
        let room = endpoint.max_reply_bytes.saturating_sub(wire.bytes_received);
        if room == 0 {
            return self.fail_after_send(wire, NetError::TooLarge);
        }
        let mut buf = vec![0; max.clamp(1, room.min(64 * 1024))];
        match self.stream.read(&mut buf) {
            Ok(n) => {
                buf.truncate(n);
                wire.bytes_received += n;
                Ok(buf)
            }
            Err(e) => self.fail_after_send(wire, io_error(e)),
        }
    }

    fn fail_after_send<T>(&mut self, wire: &mut WireRecord, err: NetError) -> Result<T, NetError> {
        if wire.bytes_sent > 0 {
            wire.error_after_send.get_or_insert(err.clone());
        }
        Err(err)
    }
}

fn io_error(e: std::io::Error) -> NetError {
    match e.kind() {
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => NetError::Timeout,
        std::io::ErrorKind::ConnectionReset
        | std::io::ErrorKind::BrokenPipe
        | std::io::ErrorKind::UnexpectedEof => NetError::Closed,
        _ => NetError::Io(e.to_string()),
    }
}

/// The card a backend request is about.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct CardRef {
    pub card_serial: String,
    pub utility_code: String,
    pub customer_number: String,
    pub meter_number: String,
    pub purchase_count: u32,
    /// Credit on the card the meter has not taken yet.
    pub pending: Fen,
    pub pending_energy: Wh,
    /// The meter's return data off the card, unchanged.
    pub return_data: Option<Vec<u8>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum AccountStatus {
    Active,
    Closed,
    Suspended,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PurchaseRecord {
    pub amount: Fen,
    pub energy: Wh,
    pub at: String,
    pub place: String,
}

/// An account as the backend knows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Account {
    pub customer_number: String,
    pub customer_name: String,
    pub address: String,
    pub meter_number: String,
    pub card_serial: String,
    pub status: AccountStatus,
    pub purchase_count: u32,
    pub price_fen_per_kwh: u32,
    pub arrears: Fen,
    pub last_purchase: Option<PurchaseRecord>,
}

/// What the customer buys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Purchase {
    Money(Fen),
    Energy(Wh),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PaymentKind {
    Cash,
    BankCard,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RefusalCode {
    AccountClosed,
    Arrears,
    CreditNotTaken,
    OverLimit,
    UnknownCard,
    CardMismatch,
    Other,
}

/// A refusal with the backend's own message.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Refusal {
    pub code: RefusalCode,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct BuyCheck {
    pub refusal: Option<Refusal>,
    pub min: Fen,
    pub max: Fen,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SaleRequest {
    pub terminal_id: String,
    pub kiosk_serial: u64,
    pub card: CardRef,
    pub purchase: Purchase,
    pub payment: PaymentKind,
    pub paid: Fen,
}

/// The credit the backend granted.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BackendGrant {
    pub backend_sale_id: String,
    pub purchase_count: u32,
    pub amount: Fen,
    pub energy: Wh,
    pub token: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SaleStatus {
    Granted(BackendGrant),
    NotFound,
    Refused(Refusal),
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct WriteConfirmation {
    pub terminal_id: String,
    pub kiosk_serial: u64,
    pub card_serial: String,
    pub written: bool,
    pub return_data: Option<Vec<u8>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BusinessType {
    CashSale,
    BankCardSale,
    CashBillPayment,
    /// Since contract 1.1; a 1.0 dialect's `reconcile` has no such total.
    BankCardBillPayment,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BusinessTotal {
    pub business: BusinessType,
    pub count: u32,
    pub amount: Fen,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PeriodReport {
    pub terminal_id: String,
    pub period_id: u64,
    pub opened_at: String,
    pub closed_at: String,
    pub totals: Vec<BusinessTotal>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Reconciliation {
    pub matched: bool,
    pub backend_totals: Vec<BusinessTotal>,
    pub differences: Vec<String>,
}

/// The part of a purchase sold at one step of a stepped tariff.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TariffStep {
    pub energy: Wh,
    pub price_fen_per_kwh: u32,
    pub amount: Fen,
}

/// The backend's price of a purchase (contract 1.1): checked by the host to add up.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Quote {
    /// What the customer pays: `arrears` + `electricity`.
    pub amount: Fen,
    pub arrears: Fen,
    pub electricity: Fen,
    pub energy: Wh,
    pub steps: Vec<TariffStep>,
}

/// One open bill of an account.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Bill {
    pub bill_id: String,
    pub period: String,
    pub amount: Fen,
    pub late_fee: Fen,
}

/// Checks an account number (户号) typed by a customer or an operator: 1 to 20 ASCII letters
/// and digits, as every dialect can carry it.
pub fn check_account_number(number: &str) -> Result<(), String> {
    if number.is_empty() || number.len() > 20 {
        return Err(format!(
            "account number {number:?} must be 1 to 20 characters, not {}",
            number.chars().count()
        ));
    }
    match number.chars().find(|c| !c.is_ascii_alphanumeric()) {
        Some(c) => Err(format!(
            "account number {number:?} may hold only letters and digits, not {c:?}"
        )),
        None => Ok(()),
    }
}

/// An account's open bills, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BillAccount {
    pub customer_number: String,
    pub customer_name: String,
    pub address: String,
    pub bills: Vec<Bill>,
    /// Everything owed: checked by the host to equal the bills' amounts and late fees.
    pub total: Fen,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BillPaymentRequest {
    pub terminal_id: String,
    pub kiosk_serial: u64,
    pub customer_number: String,
    pub amount: Fen,
    pub payment: PaymentKind,
}

/// The backend's record of a bill payment.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BillReceipt {
    pub backend_payment_id: String,
    pub amount: Fen,
    /// What the account still owes after it.
    pub remaining: Fen,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum BillPaymentStatus {
    Paid(BillReceipt),
    NotFound,
    Refused(Refusal),
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DialectInfo {
    pub vendor: String,
    pub name: String,
    pub version: String,
}

/// Why a backend call failed, in terms the sale engine acts on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackendError {
    #[error("the backend refused: {}", .0.message)]
    Refused(Refusal),
    /// The request was sent and no complete answer came back: the backend may have acted.
    #[error("outcome unknown: {0}")]
    OutcomeUnknown(String),
    /// Nothing reached the backend.
    #[error("backend unreachable: {0}")]
    Unreachable(String),
    #[error("malformed reply: {0}")]
    MalformedReply(String),
    #[error("the backend does not offer this call")]
    NotSupported,
}
