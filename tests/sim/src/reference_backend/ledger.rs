//! The reference backend's books: customers, meters, cards, tariffs, sales and periods in its own
//! SQLite file, and the utility's rules for selling. Both wire front-ends call into this.

use std::path::Path;

use rusqlite::{Connection, OptionalExtension, params};

use super::bills::{self, BillReceiptAnswer, BillsAnswer};
use super::tariff::{self, QuoteAnswer};
use crate::encryption_machine::EncryptionMachine;

/// The card as the kiosk read it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CardInfo {
    pub card_serial: String,
    pub utility_code: String,
    pub customer_number: String,
    pub meter_number: String,
    pub purchase_count: u32,
    pub pending_fen: u64,
    pub pending_wh: u64,
    pub return_data: Option<Vec<u8>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Buy {
    Money(u64),
    Energy(u64),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Payment {
    Cash,
    BankCard,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthPurpose {
    ExternalAuthenticate,
    CommandMac,
    VerifyCardMac,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Business {
    CashSale,
    BankCardSale,
    CashBillPayment,
    BankCardBillPayment,
}

impl Business {
    pub const ALL: [Business; 4] = [
        Business::CashSale,
        Business::BankCardSale,
        Business::CashBillPayment,
        Business::BankCardBillPayment,
    ];
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Total {
    pub business: Business,
    pub count: u32,
    pub amount_fen: u64,
}

/// One request, whichever wire it came over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Ping,
    AccountQuery(CardInfo),
    CanBuy(CardInfo, Buy),
    Sale {
        terminal_id: String,
        kiosk_serial: u64,
        card: CardInfo,
        buy: Buy,
        payment: Payment,
        paid_fen: u64,
    },
    SaleStatus {
        terminal_id: String,
        kiosk_serial: u64,
    },
    ConfirmWrite {
        terminal_id: String,
        kiosk_serial: u64,
        card_serial: String,
        written: bool,
        return_data: Option<Vec<u8>>,
    },
    Authenticate {
        card_serial: String,
        purpose: AuthPurpose,
        challenge: Vec<u8>,
        data: Vec<u8>,
    },
    CardPassword(CardInfo),
    /// Contract 1.1: the price of a purchase, as `Sale` would make it.
    Quote(CardInfo, Buy),
    /// Contract 1.1: an account's open bills, by account number.
    BillQuery(String),
    BillPay {
        terminal_id: String,
        kiosk_serial: u64,
        customer_number: String,
        amount_fen: u64,
        payment: Payment,
    },
    BillPaymentStatus {
        terminal_id: String,
        kiosk_serial: u64,
    },
    /// Both contracts' reconcile: 1.0's (`reconcile`) names three business types, 1.1's
    /// (`reconcile-period`, `all_business_types`) all four.
    Reconcile {
        all_business_types: bool,
        terminal_id: String,
        period_id: u64,
        opened_at: String,
        closed_at: String,
        totals: Vec<Total>,
    },
}

/// Request types, for fault injection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Call {
    Ping,
    AccountQuery,
    CanBuy,
    Sale,
    SaleStatus,
    ConfirmWrite,
    Authenticate,
    CardPassword,
    Reconcile,
    Quote,
    BillQuery,
    BillPay,
    BillPaymentStatus,
}

impl Call {
    pub const ALL: [Call; 13] = [
        Call::Ping,
        Call::AccountQuery,
        Call::CanBuy,
        Call::Sale,
        Call::SaleStatus,
        Call::ConfirmWrite,
        Call::Authenticate,
        Call::CardPassword,
        Call::Reconcile,
        Call::Quote,
        Call::BillQuery,
        Call::BillPay,
        Call::BillPaymentStatus,
    ];

    /// The name used on the command line and in the JSON paths.
    pub fn name(self) -> &'static str {
        match self {
            Call::Ping => "ping",
            Call::AccountQuery => "account-query",
            Call::CanBuy => "can-buy",
            Call::Sale => "sale",
            Call::SaleStatus => "sale-status",
            Call::ConfirmWrite => "confirm-write",
            Call::Authenticate => "authenticate",
            Call::CardPassword => "card-password",
            Call::Reconcile => "reconcile",
            Call::Quote => "quote",
            Call::BillQuery => "bill-query",
            Call::BillPay => "bill-pay",
            Call::BillPaymentStatus => "bill-payment-status",
        }
    }

    pub fn from_name(name: &str) -> Option<Call> {
        Call::ALL.into_iter().find(|c| c.name() == name)
    }
}

impl Request {
    pub fn call(&self) -> Call {
        match self {
            Request::Ping => Call::Ping,
            Request::AccountQuery(_) => Call::AccountQuery,
            Request::CanBuy(..) => Call::CanBuy,
            Request::Sale { .. } => Call::Sale,
            Request::SaleStatus { .. } => Call::SaleStatus,
            Request::ConfirmWrite { .. } => Call::ConfirmWrite,
            Request::Authenticate { .. } => Call::Authenticate,
            Request::CardPassword(_) => Call::CardPassword,
            Request::Reconcile { .. } => Call::Reconcile,
            Request::Quote(..) => Call::Quote,
            Request::BillQuery(_) => Call::BillQuery,
            Request::BillPay { .. } => Call::BillPay,
            Request::BillPaymentStatus { .. } => Call::BillPaymentStatus,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Active,
    Closed,
    Suspended,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastPurchase {
    pub amount_fen: u64,
    pub energy_wh: u64,
    pub at: String,
    pub place: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountInfo {
    pub customer_number: String,
    pub customer_name: String,
    pub address: String,
    pub meter_number: String,
    pub card_serial: String,
    pub status: Status,
    pub purchase_count: u32,
    pub price_fen_per_kwh: u32,
    pub arrears_fen: u64,
    pub last_purchase: Option<LastPurchase>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub sale_id: String,
    pub purchase_count: u32,
    pub amount_fen: u64,
    pub energy_wh: u64,
    pub token: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReconcileAnswer {
    pub matched: bool,
    pub totals: Vec<Total>,
    pub differences: Vec<String>,
}

/// Why the backend refuses, or could not act.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    UnknownCard,
    AccountClosed,
    Arrears,
    CreditNotTaken,
    OverLimit,
    CardMismatch,
    Other,
    /// Sale status and bill-payment status only: no such sale or payment.
    SaleNotFound,
    NotSupported,
    /// Nothing was done (the request did not parse, or the books could not be written).
    SystemError,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub reason: Reason,
    pub message: String,
}

impl Refusal {
    pub(super) fn new(reason: Reason, message: impl Into<String>) -> Self {
        Self {
            reason,
            message: message.into(),
        }
    }
}

/// The answer to one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    Done,
    Account(Box<AccountInfo>),
    /// Always an answer, never a failure: `refusal` says whether the account may buy.
    BuyCheck {
        refusal: Option<Refusal>,
        min_fen: u64,
        max_fen: u64,
    },
    Grant(Grant),
    Bytes(Vec<u8>),
    Reconciled(ReconcileAnswer),
    Quote(QuoteAnswer),
    Bills(Box<BillsAnswer>),
    BillReceipt(BillReceiptAnswer),
}

pub type Outcome = Result<Answer, Refusal>;

/// The smallest and largest single purchase, in fen.
pub const MIN_PURCHASE_FEN: u64 = 100;
pub const MAX_PURCHASE_FEN: u64 = 500_000;

/// The backend's books.
pub struct Ledger {
    pub(super) db: Connection,
    machine: EncryptionMachine,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS tariffs (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    price_fen_per_kwh INTEGER NOT NULL CHECK (price_fen_per_kwh > 0)
);
CREATE TABLE IF NOT EXISTS customers (
    customer_number TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    address TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('active', 'closed', 'suspended')),
    -- How a sale treats arrears: refused until they are paid, or deducted from it first.
    arrears_mode TEXT NOT NULL DEFAULT 'pay-first' CHECK (arrears_mode IN ('pay-first', 'deduct')),
    -- Paid beyond the bills (预存): the account's credit.
    prepaid_fen INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS meters (
    meter_number TEXT PRIMARY KEY,
    customer_number TEXT NOT NULL REFERENCES customers,
    tariff_id INTEGER NOT NULL REFERENCES tariffs,
    -- The last purchase count the meter reported taking, from return data.
    taken_count INTEGER,
    -- Energy the account bought this year before these books: where its stepped tariff starts.
    year_base_wh INTEGER NOT NULL DEFAULT 0
);
-- A tariff's steps (阶梯): each prices a year's energy up to `up_to_kwh` (NULL: no bound).
CREATE TABLE IF NOT EXISTS tariff_steps (
    tariff_id INTEGER NOT NULL REFERENCES tariffs,
    up_to_kwh INTEGER,
    price_fen_per_kwh INTEGER NOT NULL CHECK (price_fen_per_kwh > 0)
);
-- Bills; an account's arrears are what its bills still owe.
CREATE TABLE IF NOT EXISTS bills (
    bill_id TEXT PRIMARY KEY,
    customer_number TEXT NOT NULL REFERENCES customers,
    period TEXT NOT NULL,
    amount_fen INTEGER NOT NULL CHECK (amount_fen > 0),
    late_fee_fen INTEGER NOT NULL DEFAULT 0 CHECK (late_fee_fen >= 0),
    paid_fen INTEGER NOT NULL DEFAULT 0 CHECK (paid_fen >= 0 AND paid_fen <= amount_fen + late_fee_fen)
);
CREATE TABLE IF NOT EXISTS bill_payments (
    id INTEGER PRIMARY KEY,
    terminal_id TEXT NOT NULL,
    kiosk_serial INTEGER NOT NULL,
    customer_number TEXT NOT NULL REFERENCES customers,
    amount_fen INTEGER NOT NULL CHECK (amount_fen > 0),
    remaining_fen INTEGER NOT NULL,
    payment TEXT NOT NULL CHECK (payment IN ('cash', 'bank-card')),
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%S', 'now', 'localtime')),
    UNIQUE (terminal_id, kiosk_serial)
);
CREATE TABLE IF NOT EXISTS refused_bill_payments (
    terminal_id TEXT NOT NULL,
    kiosk_serial INTEGER NOT NULL,
    reason TEXT NOT NULL,
    message TEXT NOT NULL,
    PRIMARY KEY (terminal_id, kiosk_serial)
);
CREATE TABLE IF NOT EXISTS cards (
    card_serial TEXT PRIMARY KEY,
    kind TEXT NOT NULL CHECK (kind IN ('memory', 'cpu')),
    utility_code TEXT NOT NULL,
    customer_number TEXT NOT NULL REFERENCES customers,
    meter_number TEXT NOT NULL REFERENCES meters,
    purchase_count INTEGER NOT NULL,
    lost INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS sales (
    id INTEGER PRIMARY KEY,
    terminal_id TEXT NOT NULL,
    kiosk_serial INTEGER NOT NULL,
    card_serial TEXT NOT NULL REFERENCES cards,
    purchase_count INTEGER NOT NULL,
    amount_fen INTEGER NOT NULL,
    energy_wh INTEGER NOT NULL,
    paid_fen INTEGER NOT NULL,
    -- The part of paid_fen that settled arrears (deduct accounts); amount_fen is the rest.
    arrears_fen INTEGER NOT NULL DEFAULT 0,
    payment TEXT NOT NULL CHECK (payment IN ('cash', 'bank-card')),
    token BLOB NOT NULL,
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%S', 'now', 'localtime')),
    UNIQUE (terminal_id, kiosk_serial)
);
CREATE TABLE IF NOT EXISTS refused_sales (
    terminal_id TEXT NOT NULL,
    kiosk_serial INTEGER NOT NULL,
    reason TEXT NOT NULL,
    message TEXT NOT NULL,
    PRIMARY KEY (terminal_id, kiosk_serial)
);
CREATE TABLE IF NOT EXISTS write_confirmations (
    id INTEGER PRIMARY KEY,
    sale_id INTEGER NOT NULL REFERENCES sales,
    written INTEGER NOT NULL,
    return_data BLOB,
    received_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%S', 'now', 'localtime'))
);
CREATE TABLE IF NOT EXISTS periods (
    terminal_id TEXT NOT NULL,
    period_id INTEGER NOT NULL,
    opened_at TEXT NOT NULL,
    closed_at TEXT NOT NULL,
    matched INTEGER NOT NULL,
    PRIMARY KEY (terminal_id, period_id)
);
";

/// Customers the reference backend starts with: two utilities, one per card kind, and an
/// account for each refusal the backend makes by policy.
const SEED: &str = "
INSERT INTO tariffs VALUES (1, '居民生活用电', 56), (2, '一般工商业用电', 80);
INSERT INTO tariff_steps VALUES (1, 2520, 56), (1, 4800, 61), (1, NULL, 86), (2, NULL, 80);
INSERT INTO customers VALUES
    ('C370100001', '张三', '山东省济南市历下区泉城路1号3单元502室', 'active', 'pay-first', 0),
    ('C370100002', '李四', '山东省济南市市中区经七路88号', 'active', 'pay-first', 0),
    ('C370100003', '王五', '山东省济南市槐荫区经十路16号', 'closed', 'pay-first', 0),
    ('3701200005', '孙七', '山东省济南市天桥区北园大街200号', 'active', 'pay-first', 0),
    ('C440100001', '陈小明', '广东省广州市天河区天河路385号1201房', 'active', 'pay-first', 0),
    ('C440100002', '黄丽', '广东省广州市越秀区北京路50号', 'active', 'pay-first', 0),
    ('C440100003', '周强', '广东省广州市海珠区江南大道中99号', 'suspended', 'pay-first', 0),
    ('4401200005', '吴芳', '广东省广州市白云区机场路12号', 'active', 'pay-first', 0);
INSERT INTO meters (meter_number, customer_number, tariff_id) VALUES
    ('M3701000001', 'C370100001', 1),
    ('M3701000002', 'C370100002', 1),
    ('M3701000003', 'C370100003', 1),
    ('M3701000005', '3701200005', 1),
    ('M4401000001', 'C440100001', 1),
    ('M4401000002', 'C440100002', 2),
    ('M4401000003', 'C440100003', 1),
    ('M4401000005', '4401200005', 1);
-- 李四 owes 12.50 yuan; 孙七 and 吴芳 are post-paid accounts (no card) with bills to pay.
INSERT INTO bills (bill_id, customer_number, period, amount_fen, late_fee_fen) VALUES
    ('B3701-202609-0002', 'C370100002', '2026-09', 700, 0),
    ('B3701-202610-0002', 'C370100002', '2026-10', 500, 50),
    ('B3701-202610-0005', '3701200005', '2026-10', 8650, 130),
    ('B3701-202611-0005', '3701200005', '2026-11', 9320, 0),
    ('B4401-202611-0005', '4401200005', '2026-11', 15630, 0);
INSERT INTO cards VALUES
    ('3701000000000001', 'memory', '3701', 'C370100001', 'M3701000001', 0, 0),
    ('3701000000000002', 'memory', '3701', 'C370100002', 'M3701000002', 0, 0),
    ('3701000000000003', 'memory', '3701', 'C370100003', 'M3701000003', 0, 0),
    ('3701000000000009', 'memory', '3701', 'C370100001', 'M3701000001', 0, 1),
    ('4401000000000001', 'cpu', '4401', 'C440100001', 'M4401000001', 0, 0),
    ('4401000000000002', 'cpu', '4401', 'C440100002', 'M4401000002', 0, 0),
    ('4401000000000003', 'cpu', '4401', 'C440100003', 'M4401000003', 0, 0);
";

/// Return data as the simulated meters write it: tag `R`, the purchase count the meter has
/// taken (u16), remaining energy in Wh (u32), total energy used in Wh (u32), status (u8).
pub fn parse_return_data(raw: &[u8]) -> Option<u32> {
    match raw {
        [b'R', c0, c1, _rest @ ..] if raw.len() == 12 => {
            Some(u32::from(u16::from_be_bytes([*c0, *c1])))
        }
        _ => None,
    }
}

#[derive(Debug, thiserror::Error)]
#[error("reference backend database {path}: {source}")]
pub struct LedgerError {
    path: String,
    source: rusqlite::Error,
}

impl Ledger {
    /// Opens (creating and seeding when new) the books at `path`.
    pub fn open(path: &Path, machine: EncryptionMachine) -> Result<Ledger, LedgerError> {
        let err = |source| LedgerError {
            path: path.display().to_string(),
            source,
        };
        let db = Connection::open(path).map_err(err)?;
        // A simulator's books: WAL without a sync per commit keeps the benchmark about the kiosk.
        db.execute_batch(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA foreign_keys=ON;",
        )
        .map_err(err)?;
        db.execute_batch(SCHEMA).map_err(err)?;
        let empty: i64 = db
            .query_row("SELECT count(*) FROM tariffs", [], |r| r.get(0))
            .map_err(err)?;
        if empty == 0 {
            db.execute_batch(SEED).map_err(err)?;
        }
        Ok(Ledger { db, machine })
    }

    /// Answers one request. A database failure answers "system error, nothing done", because
    /// every change is made in one transaction.
    pub fn handle(&mut self, request: &Request) -> Outcome {
        let result = match request {
            Request::Ping => Ok(Ok(Answer::Done)),
            Request::AccountQuery(card) => self.account_query(card),
            Request::CanBuy(card, buy) => self.can_buy(card, *buy),
            Request::Sale {
                terminal_id,
                kiosk_serial,
                card,
                buy,
                payment,
                paid_fen,
            } => self.sale(terminal_id, *kiosk_serial, card, *buy, *payment, *paid_fen),
            Request::SaleStatus {
                terminal_id,
                kiosk_serial,
            } => self.sale_status(terminal_id, *kiosk_serial),
            Request::ConfirmWrite {
                terminal_id,
                kiosk_serial,
                card_serial,
                written,
                return_data,
            } => self.confirm_write(
                terminal_id,
                *kiosk_serial,
                card_serial,
                *written,
                return_data.as_deref(),
            ),
            Request::Authenticate {
                card_serial,
                purpose,
                challenge,
                data,
            } => self.authenticate(card_serial, *purpose, challenge, data),
            Request::CardPassword(card) => self.card_password(card),
            Request::Quote(card, buy) => self.quote(card, *buy),
            Request::BillQuery(customer_number) => self.bill_query(customer_number),
            Request::BillPay {
                terminal_id,
                kiosk_serial,
                customer_number,
                amount_fen,
                payment,
            } => self.bill_pay(
                terminal_id,
                *kiosk_serial,
                customer_number,
                *amount_fen,
                *payment,
            ),
            Request::BillPaymentStatus {
                terminal_id,
                kiosk_serial,
            } => self.bill_payment_status(terminal_id, *kiosk_serial),
            Request::Reconcile {
                all_business_types: _,
                terminal_id,
                period_id,
                opened_at,
                closed_at,
                totals,
            } => self.reconcile(terminal_id, *period_id, opened_at, closed_at, totals),
        };
        result.unwrap_or_else(|e| {
            Err(Refusal::new(
                Reason::SystemError,
                format!("后台数据库错误，交易未处理: {e}"),
            ))
        })
    }

    /// How many sales the books hold for this terminal (tests count duplicates with it).
    pub fn sale_count(&self, terminal_id: &str) -> u64 {
        self.db
            .query_row(
                "SELECT count(*) FROM sales WHERE terminal_id = ?1",
                [terminal_id],
                |r| r.get::<_, i64>(0),
            )
            .map_or(0, |n| n as u64)
    }

    /// Whether terminal `terminal_id`'s period `period_id` was reconciled and matched; `None`
    /// when it was never reported.
    pub fn period_matched(&self, terminal_id: &str, period_id: u64) -> Option<bool> {
        self.db
            .query_row(
                "SELECT matched FROM periods WHERE terminal_id = ?1 AND period_id = ?2",
                params![terminal_id, period_id as i64],
                |r| r.get(0),
            )
            .ok()
    }

    /// The backend's purchase count for a card.
    pub fn card_purchase_count(&self, card_serial: &str) -> Option<u32> {
        self.db
            .query_row(
                "SELECT purchase_count FROM cards WHERE card_serial = ?1",
                [card_serial],
                |r| r.get(0),
            )
            .ok()
    }

    /// The write confirmations recorded for a sale: (written, return data).
    pub fn confirmations(
        &self,
        terminal_id: &str,
        kiosk_serial: u64,
    ) -> Vec<(bool, Option<Vec<u8>>)> {
        let Ok(mut stmt) = self.db.prepare(
            "SELECT c.written, c.return_data FROM write_confirmations c JOIN sales s
             ON s.id = c.sale_id WHERE s.terminal_id = ?1 AND s.kiosk_serial = ?2 ORDER BY c.id",
        ) else {
            return Vec::new();
        };
        stmt.query_map(params![terminal_id, kiosk_serial as i64], |r| {
            Ok((r.get::<_, bool>(0)?, r.get(1)?))
        })
        .map(|rows| rows.filter_map(Result::ok).collect())
        .unwrap_or_default()
    }

    /// The last purchase count a meter reported taking.
    pub fn meter_taken_count(&self, meter_number: &str) -> Option<u32> {
        self.db
            .query_row(
                "SELECT taken_count FROM meters WHERE meter_number = ?1",
                [meter_number],
                |r| r.get(0),
            )
            .ok()
            .flatten()
    }

    fn card_row(&self, card_serial: &str) -> rusqlite::Result<Option<CardRow>> {
        self.db
            .query_row(
                "SELECT c.kind, c.utility_code, c.customer_number, c.meter_number,
                        c.purchase_count, c.lost, cu.name, cu.address, cu.status,
                        (SELECT coalesce(sum(amount_fen + late_fee_fen - paid_fen), 0) FROM bills b
                         WHERE b.customer_number = c.customer_number),
                        cu.arrears_mode = 'deduct', m.tariff_id
                 FROM cards c JOIN customers cu USING (customer_number)
                 JOIN meters m ON m.meter_number = c.meter_number
                 WHERE c.card_serial = ?1",
                [card_serial],
                |r| {
                    Ok(CardRow {
                        kind: r.get(0)?,
                        utility_code: r.get(1)?,
                        customer_number: r.get(2)?,
                        meter_number: r.get(3)?,
                        purchase_count: r.get(4)?,
                        lost: r.get(5)?,
                        name: r.get(6)?,
                        address: r.get(7)?,
                        status: match r.get::<_, String>(8)?.as_str() {
                            "active" => Status::Active,
                            "closed" => Status::Closed,
                            _ => Status::Suspended,
                        },
                        arrears_fen: r.get::<_, i64>(9)? as u64,
                        deduct_arrears: r.get(10)?,
                        tariff_id: r.get(11)?,
                    })
                },
            )
            .optional()
    }

    /// The card as the backend knows it, or the refusal for a card it does not serve.
    pub(super) fn known_card(&self, card: &CardInfo) -> rusqlite::Result<Result<CardRow, Refusal>> {
        let Some(row) = self.card_row(&card.card_serial)? else {
            return Ok(Err(Refusal::new(
                Reason::UnknownCard,
                format!("卡号{}未登记", card.card_serial),
            )));
        };
        if row.lost {
            return Ok(Err(Refusal::new(
                Reason::UnknownCard,
                format!("卡号{}已挂失", card.card_serial),
            )));
        }
        let mismatch = |what: &str| {
            Ok(Err(Refusal::new(
                Reason::CardMismatch,
                format!("卡内{what}与档案不符"),
            )))
        };
        if !card.utility_code.is_empty() && card.utility_code != row.utility_code {
            return mismatch("单位代码");
        }
        if !card.customer_number.is_empty() && card.customer_number != row.customer_number {
            return mismatch("用户编号");
        }
        if !card.meter_number.is_empty() && card.meter_number != row.meter_number {
            return mismatch("表号");
        }
        Ok(Ok(row))
    }

    fn account_query(&mut self, card: &CardInfo) -> rusqlite::Result<Outcome> {
        let row = match self.known_card(card)? {
            Ok(row) => row,
            Err(refusal) => return Ok(Err(refusal)),
        };
        if let Some(raw) = &card.return_data {
            self.record_return_data(&row.meter_number, raw)?;
        }
        let last_purchase = self
            .db
            .query_row(
                "SELECT amount_fen, energy_wh, created_at, terminal_id FROM sales
                 WHERE card_serial = ?1 ORDER BY id DESC LIMIT 1",
                [&card.card_serial],
                |r| {
                    Ok(LastPurchase {
                        amount_fen: r.get::<_, i64>(0)? as u64,
                        energy_wh: r.get::<_, i64>(1)? as u64,
                        at: r.get(2)?,
                        place: format!("自助终端{}", r.get::<_, String>(3)?),
                    })
                },
            )
            .optional()?;
        let price_fen_per_kwh = self.next_price(&row)?;
        Ok(Ok(Answer::Account(Box::new(AccountInfo {
            customer_number: row.customer_number,
            customer_name: row.name,
            address: row.address,
            meter_number: row.meter_number,
            card_serial: card.card_serial.clone(),
            status: row.status,
            purchase_count: row.purchase_count,
            price_fen_per_kwh,
            arrears_fen: row.arrears_fen,
            last_purchase,
        }))))
    }

    fn can_buy(&mut self, card: &CardInfo, buy: Buy) -> rusqlite::Result<Outcome> {
        let refusal = match self.known_card(card)? {
            Ok(row) => self.policy(&row, card, buy)?.err(),
            Err(refusal) => Some(refusal),
        };
        Ok(Ok(Answer::BuyCheck {
            refusal,
            min_fen: MIN_PURCHASE_FEN,
            max_fen: MAX_PURCHASE_FEN,
        }))
    }

    /// The utility's rules for one purchase; on success, its price as the sale will make it.
    pub(super) fn policy(
        &self,
        row: &CardRow,
        card: &CardInfo,
        buy: Buy,
    ) -> rusqlite::Result<Result<Priced, Refusal>> {
        match row.status {
            Status::Active => {}
            Status::Closed => {
                return Ok(Err(Refusal::new(
                    Reason::AccountClosed,
                    "该户已销户，不能购电",
                )));
            }
            Status::Suspended => {
                return Ok(Err(Refusal::new(
                    Reason::AccountClosed,
                    "该户已暂停供电，请到营业厅办理",
                )));
            }
        }
        if row.arrears_fen > 0 && !row.deduct_arrears {
            return Ok(Err(Refusal::new(
                Reason::Arrears,
                format!(
                    "您有欠费{}.{:02}元，请先缴清",
                    row.arrears_fen / 100,
                    row.arrears_fen % 100
                ),
            )));
        }
        if card.pending_fen > 0 || card.pending_wh > 0 {
            return Ok(Err(Refusal::new(
                Reason::CreditNotTaken,
                "卡内尚有未输入电表的电量，请先插入电表",
            )));
        }
        if card.purchase_count < row.purchase_count {
            return Ok(Err(Refusal::new(
                Reason::CardMismatch,
                "上次购电尚未写入卡内，请先补写卡",
            )));
        }
        if card.purchase_count > row.purchase_count {
            return Ok(Err(Refusal::new(
                Reason::CardMismatch,
                "卡内购电次数与档案不符",
            )));
        }
        let steps = self.tariff_steps(row)?;
        let arrears = if row.deduct_arrears {
            row.arrears_fen
        } else {
            0
        };
        let priced = match buy {
            Buy::Money(fen) if fen <= arrears => {
                return Ok(Err(Refusal::new(
                    Reason::Arrears,
                    format!("购电金额须大于欠费{}.{:02}元", arrears / 100, arrears % 100),
                )));
            }
            Buy::Money(fen) => tariff::energy_for(&steps, fen - arrears),
            Buy::Energy(wh) => tariff::money_for(&steps, wh),
        };
        let Some(amount_fen) = priced.electricity_fen.checked_add(arrears) else {
            return Ok(Err(Refusal::new(Reason::OverLimit, "购电金额过大")));
        };
        if !(MIN_PURCHASE_FEN..=MAX_PURCHASE_FEN).contains(&amount_fen) {
            return Ok(Err(Refusal::new(
                Reason::OverLimit,
                format!(
                    "单次购电金额须在{}元至{}元之间",
                    MIN_PURCHASE_FEN / 100,
                    MAX_PURCHASE_FEN / 100
                ),
            )));
        }
        Ok(Ok(Priced {
            amount_fen,
            arrears_fen: arrears,
            electricity: priced,
        }))
    }

    /// The card's tariff from where its meter's account stands this year.
    fn tariff_steps(&self, row: &CardRow) -> rusqlite::Result<Vec<tariff::Step>> {
        let used_wh: i64 = self.db.query_row(
            "SELECT m.year_base_wh + coalesce((SELECT sum(s.energy_wh) FROM sales s
                 JOIN cards c ON c.card_serial = s.card_serial
                 WHERE c.meter_number = m.meter_number
                 AND substr(s.created_at, 1, 4) = strftime('%Y', 'now', 'localtime')), 0)
             FROM meters m WHERE m.meter_number = ?1",
            [&row.meter_number],
            |r| r.get(0),
        )?;
        let mut stmt = self.db.prepare(
            "SELECT up_to_kwh, price_fen_per_kwh FROM tariff_steps WHERE tariff_id = ?1
             ORDER BY up_to_kwh IS NULL, up_to_kwh",
        )?;
        let bounds = stmt
            .query_map([row.tariff_id], |r| {
                Ok((r.get::<_, Option<i64>>(0)?, r.get::<_, u32>(1)?))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(tariff::steps_from(&bounds, used_wh.max(0) as u64))
    }

    /// The price of the account's next kWh.
    fn next_price(&self, row: &CardRow) -> rusqlite::Result<u32> {
        Ok(self
            .tariff_steps(row)?
            .first()
            .map_or(0, |s| s.price_fen_per_kwh))
    }

    fn sale(
        &mut self,
        terminal_id: &str,
        kiosk_serial: u64,
        card: &CardInfo,
        buy: Buy,
        payment: Payment,
        paid_fen: u64,
    ) -> rusqlite::Result<Outcome> {
        let tx = self.db.unchecked_transaction()?;
        if let Some(previous) = previous_outcome(&tx, terminal_id, kiosk_serial)? {
            return Ok(match previous {
                Ok((grant, serial)) if serial == card.card_serial => Ok(Answer::Grant(grant)),
                Ok(_) => Err(Refusal::new(
                    Reason::Other,
                    format!("终端流水号{kiosk_serial}已用于另一张卡"),
                )),
                Err(refusal) => Err(refusal),
            });
        }
        let row = self.known_card(card)?;
        let decided = match &row {
            Ok(row) => self.policy(row, card, buy)?,
            Err(refusal) => Err(refusal.clone()),
        };
        let decided = decided.and_then(|priced| {
            if paid_fen == priced.amount_fen {
                Ok(priced)
            } else {
                Err(Refusal::new(
                    Reason::Other,
                    format!("实收金额{paid_fen}分与购电金额{}分不符", priced.amount_fen),
                ))
            }
        });
        let tx_outcome = match decided {
            Ok(priced) => {
                let amount_fen = priced.electricity.electricity_fen;
                let energy_wh = priced.electricity.energy_wh;
                let purchase_count = row.as_ref().map_or(0, |r| r.purchase_count) + 1;
                let token = self.machine.credit_token(
                    &card.card_serial,
                    purchase_count,
                    amount_fen,
                    energy_wh,
                );
                tx.execute(
                    "INSERT INTO sales (terminal_id, kiosk_serial, card_serial, purchase_count,
                     amount_fen, energy_wh, paid_fen, arrears_fen, payment, token)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                    params![
                        terminal_id,
                        kiosk_serial as i64,
                        card.card_serial,
                        purchase_count,
                        amount_fen as i64,
                        energy_wh as i64,
                        paid_fen as i64,
                        priced.arrears_fen as i64,
                        payment_name(payment),
                        token,
                    ],
                )?;
                if let Ok(row) = &row {
                    bills::settle_oldest(&tx, &row.customer_number, priced.arrears_fen)?;
                }
                let id = tx.last_insert_rowid();
                tx.execute(
                    "UPDATE cards SET purchase_count = ?1 WHERE card_serial = ?2",
                    params![purchase_count, card.card_serial],
                )?;
                Ok(Answer::Grant(Grant {
                    sale_id: sale_id(id),
                    purchase_count,
                    amount_fen,
                    energy_wh,
                    token,
                }))
            }
            Err(refusal) => {
                tx.execute(
                    "INSERT INTO refused_sales VALUES (?1, ?2, ?3, ?4)",
                    params![
                        terminal_id,
                        kiosk_serial as i64,
                        reason_name(refusal.reason),
                        refusal.message
                    ],
                )?;
                Err(refusal)
            }
        };
        tx.commit()?;
        Ok(tx_outcome)
    }

    fn sale_status(&mut self, terminal_id: &str, kiosk_serial: u64) -> rusqlite::Result<Outcome> {
        Ok(
            match previous_outcome(&self.db, terminal_id, kiosk_serial)? {
                Some(Ok((grant, _))) => Ok(Answer::Grant(grant)),
                Some(Err(refusal)) => Err(refusal),
                None => Err(Refusal::new(
                    Reason::SaleNotFound,
                    format!("无此交易: 终端{terminal_id}流水号{kiosk_serial}"),
                )),
            },
        )
    }

    fn confirm_write(
        &mut self,
        terminal_id: &str,
        kiosk_serial: u64,
        card_serial: &str,
        written: bool,
        return_data: Option<&[u8]>,
    ) -> rusqlite::Result<Outcome> {
        let sale: Option<(i64, String, String)> = self
            .db
            .query_row(
                "SELECT s.id, s.card_serial, c.meter_number FROM sales s JOIN cards c
                 USING (card_serial) WHERE s.terminal_id = ?1 AND s.kiosk_serial = ?2",
                params![terminal_id, kiosk_serial as i64],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?;
        let Some((id, serial, meter)) = sale else {
            return Ok(Err(Refusal::new(
                Reason::Other,
                format!("无此交易: 终端{terminal_id}流水号{kiosk_serial}"),
            )));
        };
        if serial != card_serial {
            return Ok(Err(Refusal::new(
                Reason::CardMismatch,
                format!("交易{kiosk_serial}不是卡号{card_serial}的交易"),
            )));
        }
        let tx = self.db.unchecked_transaction()?;
        tx.execute(
            "INSERT INTO write_confirmations (sale_id, written, return_data) VALUES (?1, ?2, ?3)",
            params![id, written, return_data],
        )?;
        tx.commit()?;
        if let Some(raw) = return_data {
            self.record_return_data(&meter, raw)?;
        }
        Ok(Ok(Answer::Done))
    }

    fn record_return_data(&mut self, meter_number: &str, raw: &[u8]) -> rusqlite::Result<()> {
        if let Some(taken) = parse_return_data(raw) {
            self.db.execute(
                "UPDATE meters SET taken_count = ?1 WHERE meter_number = ?2",
                params![taken, meter_number],
            )?;
        }
        Ok(())
    }

    fn authenticate(
        &mut self,
        card_serial: &str,
        purpose: AuthPurpose,
        challenge: &[u8],
        data: &[u8],
    ) -> rusqlite::Result<Outcome> {
        let Some(row) = self.card_row(card_serial)? else {
            return Ok(Err(Refusal::new(
                Reason::UnknownCard,
                format!("卡号{card_serial}未登记"),
            )));
        };
        if row.kind != "cpu" {
            return Ok(Err(Refusal::new(
                Reason::Other,
                format!("卡号{card_serial}不是CPU卡"),
            )));
        }
        let m = &self.machine;
        let result = match purpose {
            AuthPurpose::ExternalAuthenticate => m
                .external_authenticate(card_serial, challenge)
                .map(|c| c.to_vec()),
            AuthPurpose::CommandMac => m
                .command_mac(card_serial, challenge, data)
                .map(|c| c.to_vec()),
            AuthPurpose::VerifyCardMac => match m.verify_card_mac(card_serial, challenge, data) {
                Ok(true) => Ok(Vec::new()),
                Ok(false) => {
                    return Ok(Err(Refusal::new(Reason::Other, "卡片MAC校验失败")));
                }
                Err(e) => Err(e),
            },
        };
        Ok(result
            .map(Answer::Bytes)
            .map_err(|e| Refusal::new(Reason::Other, format!("加密机拒绝: {e}"))))
    }

    fn card_password(&mut self, card: &CardInfo) -> rusqlite::Result<Outcome> {
        let row = match self.known_card(card)? {
            Ok(row) => row,
            Err(refusal) => return Ok(Err(refusal)),
        };
        if row.kind != "memory" {
            return Ok(Err(Refusal::new(
                Reason::Other,
                format!("卡号{}是CPU卡，没有卡密码", card.card_serial),
            )));
        }
        Ok(Ok(Answer::Bytes(
            self.machine.memory_card_psc(&card.card_serial).to_vec(),
        )))
    }

    fn reconcile(
        &mut self,
        terminal_id: &str,
        period_id: u64,
        opened_at: &str,
        closed_at: &str,
        kiosk_totals: &[Total],
    ) -> rusqlite::Result<Outcome> {
        let mut stmt = self.db.prepare(
            "SELECT 'sale', payment, count(*), coalesce(sum(paid_fen), 0) FROM sales
             WHERE terminal_id = ?1 AND created_at >= ?2 AND created_at <= ?3 GROUP BY payment
             UNION ALL
             SELECT 'bill', payment, count(*), coalesce(sum(amount_fen), 0) FROM bill_payments
             WHERE terminal_id = ?1 AND created_at >= ?2 AND created_at <= ?3 GROUP BY payment",
        )?;
        let mut ours: Vec<Total> = stmt
            .query_map(params![terminal_id, opened_at, closed_at], |r| {
                let cash = r.get::<_, String>(1)? == "cash";
                Ok(Total {
                    business: match (r.get::<_, String>(0)?.as_str(), cash) {
                        ("sale", true) => Business::CashSale,
                        ("sale", false) => Business::BankCardSale,
                        (_, true) => Business::CashBillPayment,
                        (_, false) => Business::BankCardBillPayment,
                    },
                    count: r.get(2)?,
                    amount_fen: r.get::<_, i64>(3)? as u64,
                })
            })?
            .collect::<rusqlite::Result<_>>()?;
        drop(stmt);
        ours.sort_by_key(|t| Business::ALL.iter().position(|b| *b == t.business));
        let mut differences = Vec::new();
        for business in Business::ALL {
            let pick = |totals: &[Total]| {
                totals
                    .iter()
                    .filter(|t| t.business == business)
                    .fold((0u64, 0u64), |(c, a), t| {
                        (c + u64::from(t.count), a.saturating_add(t.amount_fen))
                    })
            };
            let (kc, ka) = pick(kiosk_totals);
            let (bc, ba) = pick(&ours);
            if (kc, ka) != (bc, ba) {
                differences.push(format!(
                    "{}: 终端{kc}笔{ka}分，后台{bc}笔{ba}分",
                    business_name(business)
                ));
            }
        }
        let matched = differences.is_empty();
        self.db.execute(
            "INSERT OR REPLACE INTO periods VALUES (?1, ?2, ?3, ?4, ?5)",
            params![terminal_id, period_id as i64, opened_at, closed_at, matched],
        )?;
        Ok(Ok(Answer::Reconciled(ReconcileAnswer {
            matched,
            totals: ours,
            differences,
        })))
    }
}

pub(super) struct CardRow {
    kind: String,
    utility_code: String,
    pub(super) customer_number: String,
    meter_number: String,
    purchase_count: u32,
    lost: bool,
    name: String,
    address: String,
    status: Status,
    arrears_fen: u64,
    deduct_arrears: bool,
    tariff_id: i64,
}

/// What the books say of a sale already received: its grant (and card), or its refusal.
fn previous_outcome(
    db: &Connection,
    terminal_id: &str,
    kiosk_serial: u64,
) -> rusqlite::Result<Option<Result<(Grant, String), Refusal>>> {
    let grant = db
        .query_row(
            "SELECT id, purchase_count, amount_fen, energy_wh, token, card_serial FROM sales
             WHERE terminal_id = ?1 AND kiosk_serial = ?2",
            params![terminal_id, kiosk_serial as i64],
            |r| {
                Ok((
                    Grant {
                        sale_id: sale_id(r.get(0)?),
                        purchase_count: r.get(1)?,
                        amount_fen: r.get::<_, i64>(2)? as u64,
                        energy_wh: r.get::<_, i64>(3)? as u64,
                        token: r.get(4)?,
                    },
                    r.get(5)?,
                ))
            },
        )
        .optional()?;
    if let Some(found) = grant {
        return Ok(Some(Ok(found)));
    }
    let refusal = db
        .query_row(
            "SELECT reason, message FROM refused_sales WHERE terminal_id = ?1 AND kiosk_serial = ?2",
            params![terminal_id, kiosk_serial as i64],
            |r| {
                Ok(Refusal::new(
                    reason_from_name(&r.get::<_, String>(0)?),
                    r.get::<_, String>(1)?,
                ))
            },
        )
        .optional()?;
    Ok(refusal.map(Err))
}

fn sale_id(id: i64) -> String {
    format!("S{id:011}")
}

pub(super) fn payment_name(payment: Payment) -> &'static str {
    match payment {
        Payment::Cash => "cash",
        Payment::BankCard => "bank-card",
    }
}

/// A purchase priced by the utility's rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Priced {
    /// What the customer pays.
    pub amount_fen: u64,
    /// The part that settles arrears first.
    pub arrears_fen: u64,
    pub electricity: tariff::Priced,
}

const REASONS: [(Reason, &str); 7] = [
    (Reason::UnknownCard, "unknown-card"),
    (Reason::AccountClosed, "account-closed"),
    (Reason::Arrears, "arrears"),
    (Reason::CreditNotTaken, "credit-not-taken"),
    (Reason::OverLimit, "over-limit"),
    (Reason::CardMismatch, "card-mismatch"),
    (Reason::Other, "other"),
];

pub(super) fn reason_name(reason: Reason) -> &'static str {
    REASONS
        .iter()
        .find(|(r, _)| *r == reason)
        .map_or("other", |(_, n)| n)
}

pub(super) fn reason_from_name(name: &str) -> Reason {
    REASONS
        .iter()
        .find(|(_, n)| *n == name)
        .map_or(Reason::Other, |(r, _)| *r)
}

fn business_name(b: Business) -> &'static str {
    match b {
        Business::CashSale => "现金售电",
        Business::BankCardSale => "银行卡售电",
        Business::CashBillPayment => "现金缴费",
        Business::BankCardBillPayment => "银行卡缴费",
    }
}
