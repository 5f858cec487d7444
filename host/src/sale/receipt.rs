//! The customer's receipt: what was bought and exactly what happens to their money, kept in the
//! journal with its intent so an operator can print it again.

use std::fmt;

use serde_json::json;

use super::{CashSession, Outcome, SaleEngine, SaleError};
use crate::backend::BackendGrant;
use crate::money::{Fen, Wh};
use crate::receipt_printer::{Line, Receipt, ReceiptPrinter};

/// What a receipt is for: a sale, or a session's payment that sold nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReceiptOf {
    Sale(u64),
    Payment(Option<i64>),
    /// A bill payment, by its serial.
    Bill(u64),
}

impl ReceiptOf {
    /// The journal's key for it: `{"serial": N}`, `{"payment": N}` or `{"bill": N}`.
    fn key(self) -> (&'static str, serde_json::Value) {
        match self {
            ReceiptOf::Sale(serial) => ("serial", json!(serial)),
            ReceiptOf::Payment(payment) => ("payment", json!(payment)),
            ReceiptOf::Bill(serial) => ("bill", json!(serial)),
        }
    }
}

impl fmt::Display for ReceiptOf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReceiptOf::Sale(serial) => write!(f, "sale {serial}"),
            ReceiptOf::Payment(Some(payment)) => write!(f, "payment {payment} (nothing sold)"),
            ReceiptOf::Payment(None) => f.write_str("a session that sold nothing"),
            ReceiptOf::Bill(serial) => write!(f, "bill payment {serial}"),
        }
    }
}

impl SaleEngine {
    /// Journals `receipt`'s intent and prints it; a receipt cut short is journaled for a
    /// reprint, not lost. Returns whether it came out whole.
    pub(super) fn print_receipt(
        &mut self,
        printer: &mut dyn ReceiptPrinter,
        of: ReceiptOf,
        receipt: &Receipt,
    ) -> Result<bool, SaleError> {
        let (key, id) = of.key();
        // The receipt itself is kept with its intent, so it can be printed again.
        self.journal
            .append("receipt-intent", json!({key: id, "receipt": receipt}))?;
        fail::fail_point!("sale.after-receipt-intent");
        self.print(printer, of, receipt)
    }

    /// Prints `receipt`; a receipt cut short is journaled for a reprint, not lost.
    fn print(
        &mut self,
        printer: &mut dyn ReceiptPrinter,
        of: ReceiptOf,
        receipt: &Receipt,
    ) -> Result<bool, SaleError> {
        let (key, id) = of.key();
        match self.wait(|| printer.print(receipt)) {
            Ok(_) => {
                self.journal.note("receipt-printed", json!({key: id}));
                Ok(true)
            }
            Err(e) => {
                self.journal
                    .append("receipt-unfinished", json!({key: id, "why": e.to_string()}))?;
                Ok(false)
            }
        }
    }

    /// Prints the last receipt again, marked as a copy; `None` when there was none. Returns
    /// what it was for and whether the copy came out whole.
    pub fn reprint_last(
        &mut self,
        printer: &mut dyn ReceiptPrinter,
    ) -> Result<Option<(ReceiptOf, bool)>, SaleError> {
        let Some(entry) = self.journal.last_entry("receipt-intent")? else {
            return Ok(None);
        };
        let of = match (entry.body["serial"].as_u64(), entry.body["bill"].as_u64()) {
            (Some(serial), _) => ReceiptOf::Sale(serial),
            (None, Some(serial)) => ReceiptOf::Bill(serial),
            (None, None) => ReceiptOf::Payment(entry.body["payment"].as_i64()),
        };
        let original: Receipt =
            serde_json::from_value(entry.body["receipt"].clone()).map_err(|e| {
                SaleError::Corrupt(format!("the receipt in journal row {}: {e}", entry.id))
            })?;
        let mut copy = Receipt::new().with(Line::new("（重印 / COPY）").centred());
        for line in original.lines() {
            copy.push(line.clone());
        }
        let (key, id) = of.key();
        self.journal
            .append("receipt-reprint-intent", json!({key: id}))?;
        let printed = self.print(printer, of, &copy)?;
        self.journal.flush()?;
        Ok(Some((of, printed)))
    }

    /// The receipt of a session that sold nothing, with the banknotes caught on the way in.
    pub(super) fn unsold_receipt(&self, s: &CashSession) -> Receipt {
        let mut r = Receipt::new()
            .with(Line::new("自助售电凭证").bold().double().centred())
            .with(Line::new(format!("终端号：{}", self.terminal_id)))
            .with(Line::new(format!("卡号：{}", s.data.card_serial)))
            .with(Line::new("未售电"));
        caught_lines(&mut r, &s.caught);
        r
    }

    /// The receipt: what was bought and exactly what happens to the customer's money.
    pub(super) fn receipt(&self, s: &CashSession, outcome: &Outcome) -> Receipt {
        let reference = match outcome {
            Outcome::Credited { serial, .. }
            | Outcome::GrantedNotWritten { serial, .. }
            | Outcome::Refused { serial, .. }
            | Outcome::Pending { serial, .. } => format!("流水号：{serial:08}"),
            Outcome::Unsold { payment, .. } => format!("付款号：{payment}"),
        };
        let mut r = Receipt::new()
            .with(Line::new("自助售电凭证").bold().double().centred())
            .with(Line::new(format!("终端号：{}", self.terminal_id)))
            .with(Line::new(reference))
            .with(Line::new(format!("户名：{}", s.account.customer_name)))
            .with(Line::new(format!("户号：{}", s.account.customer_number)))
            .with(Line::new(format!("表号：{}", s.data.meter_number)))
            .with(Line::new(format!("卡号：{}", s.data.card_serial)))
            .with(Line::new(format!("实收金额：{}元", yuan(s.paid))));
        if let Some(bank) = &s.bank {
            r.push(Line::new(format!("银行卡支付：{}", bank.pan_masked)));
            r.push(Line::new(format!("参考号：{}", bank.rrn)));
        }
        if let Outcome::Credited { grant, .. } | Outcome::GrantedNotWritten { grant, .. } = outcome
        {
            grant_lines(&mut r, s, grant);
        }
        match outcome {
            Outcome::Credited { grant, .. } => {
                r.push(Line::new(format!("购电电量：{}kWh", kwh(grant.energy))));
                r.push(Line::new(format!("购电次数：{}", grant.purchase_count)));
                r.push(Line::new(format!("交易编号：{}", grant.backend_sale_id)));
                r.push(Line::new("购电成功，请将电卡插入电表").bold());
            }
            Outcome::GrantedNotWritten { grant, .. } => {
                r.push(Line::new(format!("购电电量：{}kWh", kwh(grant.energy))));
                r.push(Line::new(format!("交易编号：{}", grant.backend_sale_id)));
                r.push(Line::new("已购电但未写入电卡：请再次插卡补写").bold());
                r.push(Line::new("请保留此凭条"));
            }
            Outcome::Refused { refusal, .. } => {
                r.push(Line::new(format!("售电失败：{}", refusal.message)).bold());
                r.push(Line::new("款项待退还，请保留此凭条联系营业厅"));
            }
            Outcome::Pending { .. } => {
                r.push(Line::new("交易待处理：结果确认后自动补售电").bold());
                r.push(Line::new("请保留此凭条"));
            }
            Outcome::Unsold { reason, .. } => {
                r.push(Line::new(format!("未售电：{reason}")).bold());
                r.push(Line::new("款项待退还，请保留此凭条联系营业厅"));
            }
        }
        caught_lines(&mut r, &s.caught);
        r
    }
}

/// How the grant splits what was paid, when the grant is what was quoted: the arrears the
/// backend kept and the tariff's steps. A grant that differs shows only what it sold.
fn grant_lines(r: &mut Receipt, s: &CashSession, grant: &BackendGrant) {
    let quoted = s.quote.filter(|q| {
        q.amount == s.paid
            && q.energy == grant.energy
            && q.arrears.0.checked_add(grant.amount.0) == Some(s.paid.0)
    });
    match quoted {
        Some(q) if q.arrears.0 > 0 => {
            r.push(Line::new(format!("抵扣欠费：{}元", yuan(q.arrears))));
            r.push(Line::new(format!("电费：{}元", yuan(grant.amount))));
        }
        None if grant.amount != s.paid => {
            r.push(Line::new(format!("电费：{}元", yuan(grant.amount))));
        }
        _ => {}
    }
    if quoted.is_some() && s.tariff_steps.len() > 1 {
        for step in &s.tariff_steps {
            r.push(Line::new(format!(
                "阶梯电价：{}kWh×{}元/kWh={}元",
                kwh(step.energy),
                yuan(Fen(u64::from(step.price_fen_per_kwh))),
                yuan(step.amount)
            )));
        }
    }
}

/// The receipt's lines for banknotes caught in the acceptor: each note and its work order.
pub(super) fn caught_lines(r: &mut Receipt, caught: &[(i64, Fen)]) {
    for (item, fen) in caught {
        let note = if fen.0 == 0 {
            "面额未知的纸币".to_string()
        } else {
            format!("{}元纸币", yuan(*fen))
        };
        r.push(Line::new(format!("{note}卡在机内未入账")).bold());
        r.push(Line::new(format!(
            "已登记待核实退还（工单{item}），请保留此凭条"
        )));
    }
}

/// Fen as yuan with two decimals: `12.50`.
pub(super) fn yuan(f: Fen) -> String {
    format!("{}.{:02}", f.0 / 100, f.0 % 100)
}

fn kwh(w: Wh) -> String {
    format!("{}.{:03}", w.0 / 1000, w.0 % 1000)
}
