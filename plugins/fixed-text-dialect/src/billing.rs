//! Contract 1.1 in FT1: quote (`1003`), bill query (`5001`), bill payment (`5002`) and its
//! status (`5003`), and reconciliation by four business types (`4002`).

use crate::exports::selfvend::backend::billing::{
    Bill, BillAccount, BillPaymentOutcome, BillPaymentRequest, BillReceipt, Business,
    BusinessCount, Guest, PeriodReconciliation, PeriodTotals, PriceQuote, TariffStep,
};
use crate::selfvend::backend::types::{CardRef, PaymentKind, Purchase};
use crate::wire::{Reader, Result, Writer};
use crate::{FixedText, call};

impl Guest for FixedText {
    fn quote(card: CardRef, purchase: Purchase) -> Result<PriceQuote> {
        let mut w = Writer::new("1003", "")?;
        w.card(&card)?.buy(&purchase)?;
        let reply = call(w)?;
        let mut r = reply.success()?;
        let amount_fen = r.n(12, "amount")?;
        let arrears_fen = r.n(12, "arrears")?;
        let electricity_fen = r.n(12, "electricity")?;
        let energy_wh = r.n(12, "energy")?;
        let count = r.count(2, "step count")?;
        let steps = (0..count)
            .map(|_| {
                Ok(TariffStep {
                    energy_wh: r.n(12, "step energy")?,
                    price_fen_per_kwh: r.n32(6, "step price")?,
                    amount_fen: r.n(12, "step amount")?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(PriceQuote {
            amount_fen,
            arrears_fen,
            electricity_fen,
            energy_wh,
            steps,
        })
    }

    fn bill_query(customer_number: String) -> Result<BillAccount> {
        let mut w = Writer::new("5001", "")?;
        w.a(20, &customer_number, "customer number")?;
        let reply = call(w)?;
        let mut r = reply.success()?;
        let customer_number = r.a(20, "customer number")?;
        let customer_name = r.a(40, "name")?;
        let address = r.a(80, "address")?;
        let count = r.count(2, "bill count")?;
        let bills = (0..count)
            .map(|_| {
                Ok(Bill {
                    bill_id: r.a(20, "bill id")?,
                    period: r.a(10, "bill period")?,
                    amount_fen: r.n(12, "bill amount")?,
                    late_fee_fen: r.n(12, "bill late fee")?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(BillAccount {
            customer_number,
            customer_name,
            address,
            bills,
            total_fen: r.n(12, "total")?,
        })
    }

    fn bill_pay(request: BillPaymentRequest) -> Result<BillReceipt> {
        let payment = match request.payment {
            PaymentKind::Cash => "1",
            PaymentKind::BankCard => "2",
        };
        let mut w = Writer::new("5002", &request.terminal_id)?;
        w.n(16, request.kiosk_serial, "kiosk serial")?
            .a(20, &request.customer_number, "customer number")?
            .n(12, request.amount_fen, "amount")?
            .a(1, payment, "payment")?;
        receipt(&mut call(w)?.success()?)
    }

    fn bill_payment_status(terminal_id: String, kiosk_serial: u64) -> Result<BillPaymentOutcome> {
        let mut w = Writer::new("5003", &terminal_id)?;
        w.n(16, kiosk_serial, "kiosk serial")?;
        let reply = call(w)?;
        if reply.code() == "07" {
            return Ok(BillPaymentOutcome::NotFound);
        }
        match reply.refusal()? {
            None => Ok(BillPaymentOutcome::Paid(receipt(&mut reply.fields())?)),
            Some(refusal) => Ok(BillPaymentOutcome::Refused(refusal)),
        }
    }

    fn reconcile_period(report: PeriodTotals) -> Result<PeriodReconciliation> {
        let mut w = Writer::new("4002", &report.terminal_id)?;
        w.n(10, report.period_id, "period id")?
            .a(19, &report.opened_at, "opened")?
            .a(19, &report.closed_at, "closed")?
            .n(2, report.totals.len() as u64, "totals count")?;
        for total in &report.totals {
            w.n(2, business_code(total.business), "business")?
                .n(8, total.count.into(), "business count")?
                .n(14, total.amount_fen, "business amount")?;
        }
        let reply = call(w)?;
        let mut r = reply.success()?;
        let matched = r.flag("matched")?;
        let count = r.count(2, "totals count")?;
        let mut backend_totals = Vec::with_capacity(count);
        for _ in 0..count {
            let business = match r.digits(2, "business")? {
                "01" => Business::CashSale,
                "02" => Business::BankCardSale,
                "03" => Business::CashBillPayment,
                "04" => Business::BankCardBillPayment,
                other => {
                    return Err(r.malformed(format_args!("business {other} is not 01 to 04")));
                }
            };
            backend_totals.push(BusinessCount {
                business,
                count: r.n32(8, "business count")?,
                amount_fen: r.n(14, "business amount")?,
            });
        }
        let count = r.count(2, "difference count")?;
        let differences = (0..count)
            .map(|_| r.a(80, "difference"))
            .collect::<Result<Vec<_>>>()?;
        Ok(PeriodReconciliation {
            matched,
            backend_totals,
            differences,
        })
    }
}

fn business_code(b: Business) -> u64 {
    match b {
        Business::CashSale => 1,
        Business::BankCardSale => 2,
        Business::CashBillPayment => 3,
        Business::BankCardBillPayment => 4,
    }
}

fn receipt(r: &mut Reader<'_>) -> Result<BillReceipt> {
    Ok(BillReceipt {
        backend_payment_id: r.a(20, "backend payment id")?,
        amount_fen: r.n(12, "amount")?,
        remaining_fen: r.n(12, "remaining")?,
    })
}
