//! Contract 1.1 in the reference backend's books: quotes, bills and bill payments. An account's
//! arrears are what its bills still owe; a payment settles the oldest bill first, its late fee
//! before its amount, and what is paid beyond the bills is kept as the account's credit (预存),
//! as utilities do for a kiosk that gives no change.

use rusqlite::{Connection, OptionalExtension, params};

use super::ledger::{
    Answer, Buy, CardInfo, Ledger, Outcome, Payment, Reason, Refusal, payment_name,
    reason_from_name, reason_name,
};
use super::tariff::QuoteAnswer;

/// One open bill, as much of it as is still owed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BillInfo {
    pub bill_id: String,
    pub period: String,
    pub amount_fen: u64,
    pub late_fee_fen: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BillsAnswer {
    pub customer_number: String,
    pub customer_name: String,
    pub address: String,
    pub bills: Vec<BillInfo>,
    pub total_fen: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BillReceiptAnswer {
    pub payment_id: String,
    pub amount_fen: u64,
    pub remaining_fen: u64,
}

impl Ledger {
    pub(super) fn quote(&mut self, card: &CardInfo, buy: Buy) -> rusqlite::Result<Outcome> {
        let row = match self.known_card(card)? {
            Ok(row) => row,
            Err(refusal) => return Ok(Err(refusal)),
        };
        Ok(self.policy(&row, card, buy)?.map(|p| {
            Answer::Quote(QuoteAnswer {
                amount_fen: p.amount_fen,
                arrears_fen: p.arrears_fen,
                electricity: p.electricity,
            })
        }))
    }

    pub(super) fn bill_query(&mut self, customer_number: &str) -> rusqlite::Result<Outcome> {
        let customer = self
            .db
            .query_row(
                "SELECT name, address FROM customers WHERE customer_number = ?1",
                [customer_number],
                |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)),
            )
            .optional()?;
        let Some((customer_name, address)) = customer else {
            return Ok(Err(unknown_account(customer_number)));
        };
        let bills = open_bills(&self.db, customer_number)?;
        Ok(Ok(Answer::Bills(Box::new(BillsAnswer {
            customer_number: customer_number.to_string(),
            customer_name,
            address,
            total_fen: bills.iter().map(|b| b.amount_fen + b.late_fee_fen).sum(),
            bills,
        }))))
    }

    pub(super) fn bill_pay(
        &mut self,
        terminal_id: &str,
        kiosk_serial: u64,
        customer_number: &str,
        amount_fen: u64,
        payment: Payment,
    ) -> rusqlite::Result<Outcome> {
        let tx = self.db.unchecked_transaction()?;
        if let Some(previous) = previous_payment(&tx, terminal_id, kiosk_serial)? {
            return Ok(match previous {
                Ok((receipt, customer, amount))
                    if customer == customer_number && amount == amount_fen =>
                {
                    Ok(Answer::BillReceipt(receipt))
                }
                Ok(_) => Err(Refusal::new(
                    Reason::Other,
                    format!("终端流水号{kiosk_serial}已用于另一笔缴费"),
                )),
                Err(refusal) => Err(refusal),
            });
        }
        let known: bool = tx.query_row(
            "SELECT count(*) > 0 FROM customers WHERE customer_number = ?1",
            [customer_number],
            |r| r.get(0),
        )?;
        let owed = open_bills(&tx, customer_number)?
            .iter()
            .map(|b| b.amount_fen + b.late_fee_fen)
            .sum::<u64>();
        let decided = if !known {
            Err(unknown_account(customer_number))
        } else if owed == 0 {
            Err(Refusal::new(Reason::Other, "该户没有待缴账单"))
        } else if amount_fen == 0 {
            Err(Refusal::new(Reason::OverLimit, "缴费金额须大于0元"))
        } else {
            Ok(())
        };
        let outcome = match decided {
            Ok(()) => {
                tx.execute(
                    "INSERT INTO bill_payments (terminal_id, kiosk_serial, customer_number,
                     amount_fen, remaining_fen, payment) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    params![
                        terminal_id,
                        kiosk_serial as i64,
                        customer_number,
                        amount_fen as i64,
                        owed.saturating_sub(amount_fen) as i64,
                        payment_name(payment)
                    ],
                )?;
                let id = tx.last_insert_rowid();
                settle_oldest(&tx, customer_number, amount_fen.min(owed))?;
                tx.execute(
                    "UPDATE customers SET prepaid_fen = prepaid_fen + ?2
                     WHERE customer_number = ?1",
                    params![customer_number, amount_fen.saturating_sub(owed) as i64],
                )?;
                Ok(Answer::BillReceipt(BillReceiptAnswer {
                    payment_id: payment_id(id),
                    amount_fen,
                    remaining_fen: owed.saturating_sub(amount_fen),
                }))
            }
            Err(refusal) => {
                tx.execute(
                    "INSERT INTO refused_bill_payments VALUES (?1, ?2, ?3, ?4)",
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
        Ok(outcome)
    }

    pub(super) fn bill_payment_status(
        &mut self,
        terminal_id: &str,
        kiosk_serial: u64,
    ) -> rusqlite::Result<Outcome> {
        Ok(
            match previous_payment(&self.db, terminal_id, kiosk_serial)? {
                Some(Ok((receipt, _, _))) => Ok(Answer::BillReceipt(receipt)),
                Some(Err(refusal)) => Err(refusal),
                None => Err(Refusal::new(
                    Reason::SaleNotFound,
                    format!("无此缴费: 终端{terminal_id}流水号{kiosk_serial}"),
                )),
            },
        )
    }

    /// Adds a bill to an account (the utility's monthly billing run).
    pub fn add_bill(
        &mut self,
        bill_id: &str,
        customer_number: &str,
        period: &str,
        amount_fen: u64,
        late_fee_fen: u64,
    ) -> rusqlite::Result<()> {
        self.db.execute(
            "INSERT INTO bills (bill_id, customer_number, period, amount_fen, late_fee_fen)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                bill_id,
                customer_number,
                period,
                amount_fen as i64,
                late_fee_fen as i64
            ],
        )?;
        Ok(())
    }

    /// Whether an account's sales settle its arrears first (`true`) or are refused until the
    /// arrears are paid.
    pub fn set_deduct_arrears(
        &mut self,
        customer_number: &str,
        deduct: bool,
    ) -> rusqlite::Result<()> {
        self.db.execute(
            "UPDATE customers SET arrears_mode = ?2 WHERE customer_number = ?1",
            params![customer_number, if deduct { "deduct" } else { "pay-first" }],
        )?;
        Ok(())
    }

    /// Sets the energy a meter's account bought this year before these books.
    pub fn set_year_base(&mut self, meter_number: &str, wh: u64) -> rusqlite::Result<()> {
        self.db.execute(
            "UPDATE meters SET year_base_wh = ?2 WHERE meter_number = ?1",
            params![meter_number, wh as i64],
        )?;
        Ok(())
    }

    /// What an account has paid beyond its bills (预存), in fen.
    pub fn prepaid_fen(&self, customer_number: &str) -> u64 {
        self.db
            .query_row(
                "SELECT prepaid_fen FROM customers WHERE customer_number = ?1",
                [customer_number],
                |r| r.get::<_, i64>(0),
            )
            .map_or(0, |f| f as u64)
    }

    /// What an account still owes, in fen.
    pub fn owed_fen(&self, customer_number: &str) -> u64 {
        open_bills(&self.db, customer_number)
            .map(|bills| bills.iter().map(|b| b.amount_fen + b.late_fee_fen).sum())
            .unwrap_or(0)
    }

    /// The bill payments booked for a terminal: (kiosk serial, account, fen, payment kind).
    pub fn bill_payments(&self, terminal_id: &str) -> Vec<(u64, String, u64, String)> {
        let Ok(mut stmt) = self.db.prepare(
            "SELECT kiosk_serial, customer_number, amount_fen, payment FROM bill_payments
             WHERE terminal_id = ?1 ORDER BY id",
        ) else {
            return Vec::new();
        };
        stmt.query_map([terminal_id], |r| {
            Ok((
                r.get::<_, i64>(0)? as u64,
                r.get(1)?,
                r.get::<_, i64>(2)? as u64,
                r.get(3)?,
            ))
        })
        .map(|rows| rows.filter_map(Result::ok).collect())
        .unwrap_or_default()
    }
}

fn unknown_account(customer_number: &str) -> Refusal {
    Refusal {
        reason: Reason::UnknownCard,
        message: format!("户号{customer_number}不存在"),
    }
}

fn payment_id(id: i64) -> String {
    format!("P{id:011}")
}

/// The account's bills with something owed, oldest first, as much of each as is owed.
fn open_bills(db: &Connection, customer_number: &str) -> rusqlite::Result<Vec<BillInfo>> {
    let mut stmt = db.prepare(
        "SELECT bill_id, period, amount_fen, late_fee_fen, paid_fen FROM bills
         WHERE customer_number = ?1 AND paid_fen < amount_fen + late_fee_fen
         ORDER BY period, bill_id",
    )?;
    stmt.query_map([customer_number], |r| {
        let (amount, late, paid) = (
            r.get::<_, i64>(2)? as u64,
            r.get::<_, i64>(3)? as u64,
            r.get::<_, i64>(4)? as u64,
        );
        Ok(BillInfo {
            bill_id: r.get(0)?,
            period: r.get(1)?,
            late_fee_fen: late.saturating_sub(paid),
            amount_fen: amount - paid.saturating_sub(late),
        })
    })?
    .collect()
}

/// Applies `fen` to the account's bills, oldest first.
pub(super) fn settle_oldest(
    db: &Connection,
    customer_number: &str,
    mut fen: u64,
) -> rusqlite::Result<()> {
    for bill in open_bills(db, customer_number)? {
        if fen == 0 {
            break;
        }
        let take = fen.min(bill.amount_fen + bill.late_fee_fen);
        db.execute(
            "UPDATE bills SET paid_fen = paid_fen + ?2 WHERE bill_id = ?1",
            params![bill.bill_id, take as i64],
        )?;
        fen -= take;
    }
    Ok(())
}

/// What the books say of a bill payment already received: its receipt (with its account and
/// amount), or its refusal.
type PreviousPayment = Result<(BillReceiptAnswer, String, u64), Refusal>;

fn previous_payment(
    db: &Connection,
    terminal_id: &str,
    kiosk_serial: u64,
) -> rusqlite::Result<Option<PreviousPayment>> {
    let paid = db
        .query_row(
            "SELECT id, amount_fen, remaining_fen, customer_number FROM bill_payments
             WHERE terminal_id = ?1 AND kiosk_serial = ?2",
            params![terminal_id, kiosk_serial as i64],
            |r| {
                let amount_fen = r.get::<_, i64>(1)? as u64;
                Ok((
                    BillReceiptAnswer {
                        payment_id: payment_id(r.get(0)?),
                        amount_fen,
                        remaining_fen: r.get::<_, i64>(2)? as u64,
                    },
                    r.get::<_, String>(3)?,
                    amount_fen,
                ))
            },
        )
        .optional()?;
    if let Some(found) = paid {
        return Ok(Some(Ok(found)));
    }
    let refusal = db
        .query_row(
            "SELECT reason, message FROM refused_bill_payments
             WHERE terminal_id = ?1 AND kiosk_serial = ?2",
            params![terminal_id, kiosk_serial as i64],
            |r| {
                Ok(Refusal {
                    reason: reason_from_name(&r.get::<_, String>(0)?),
                    message: r.get(1)?,
                })
            },
        )
        .optional()?;
    Ok(refusal.map(Err))
}
