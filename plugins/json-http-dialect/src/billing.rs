//! Contract 1.1 in JH1: `quote`, `bill-query`, `bill-pay`, `bill-payment-status` and
//! `reconcile-period` (four business types).

use serde::{Deserialize, Serialize};

use crate::exports::selfvend::backend::billing::{
    Bill, BillAccount, BillPaymentOutcome, BillPaymentRequest, BillReceipt, Business,
    BusinessCount, Guest, PeriodReconciliation, PeriodTotals, PriceQuote, TariffStep,
};
use crate::selfvend::backend::types::{BackendError, CardRef, PaymentKind, Purchase, Refusal};
use crate::{CardJson, Code, Failure, JsonHttp, Payment, PurchaseJson, exchange};

impl Guest for JsonHttp {
    fn quote(card: CardRef, purchase: Purchase) -> Result<PriceQuote, BackendError> {
        let request = QuoteBody {
            card: card.into(),
            purchase: purchase.into(),
        };
        let q: QuoteData = exchange("quote", &request)?.result()?;
        Ok(PriceQuote {
            amount_fen: q.amount_fen,
            arrears_fen: q.arrears_fen,
            electricity_fen: q.electricity_fen,
            energy_wh: q.energy_wh,
            steps: q
                .steps
                .into_iter()
                .map(|s| TariffStep {
                    energy_wh: s.energy_wh,
                    price_fen_per_kwh: s.price_fen_per_kwh,
                    amount_fen: s.amount_fen,
                })
                .collect(),
        })
    }

    fn bill_query(customer_number: String) -> Result<BillAccount, BackendError> {
        let a: BillsData = exchange("bill-query", &BillQueryBody { customer_number })?.result()?;
        Ok(BillAccount {
            customer_number: a.customer_number,
            customer_name: a.customer_name,
            address: a.address,
            bills: a
                .bills
                .into_iter()
                .map(|b| Bill {
                    bill_id: b.bill_id,
                    period: b.period,
                    amount_fen: b.amount_fen,
                    late_fee_fen: b.late_fee_fen,
                })
                .collect(),
            total_fen: a.total_fen,
        })
    }

    fn bill_pay(request: BillPaymentRequest) -> Result<BillReceipt, BackendError> {
        let body = BillPayBody {
            terminal_id: request.terminal_id,
            kiosk_serial: request.kiosk_serial,
            customer_number: request.customer_number,
            amount_fen: request.amount_fen,
            payment: match request.payment {
                PaymentKind::Cash => Payment::Cash,
                PaymentKind::BankCard => Payment::BankCard,
            },
        };
        let r: ReceiptData = exchange("bill-pay", &body)?.result()?;
        Ok(r.into())
    }

    fn bill_payment_status(
        terminal_id: String,
        kiosk_serial: u64,
    ) -> Result<BillPaymentOutcome, BackendError> {
        let body = StatusBody {
            terminal_id,
            kiosk_serial,
        };
        let reply = exchange("bill-payment-status", &body)?;
        match reply.code {
            Code::Success => Ok(BillPaymentOutcome::Paid(
                reply.data::<ReceiptData>()?.into(),
            )),
            Code::Failure(Failure::NoSuchSale) => Ok(BillPaymentOutcome::NotFound),
            Code::Failure(Failure::Refused(code)) => Ok(BillPaymentOutcome::Refused(Refusal {
                code,
                message: reply.message,
            })),
            Code::Failure(failure) => Err(reply.error(failure)),
        }
    }

    fn reconcile_period(report: PeriodTotals) -> Result<PeriodReconciliation, BackendError> {
        let body = PeriodBody {
            terminal_id: report.terminal_id,
            period_id: report.period_id,
            opened_at: report.opened_at,
            closed_at: report.closed_at,
            totals: report.totals.into_iter().map(Into::into).collect(),
        };
        let r: PeriodData = exchange("reconcile-period", &body)?.result()?;
        Ok(PeriodReconciliation {
            matched: r.matched,
            backend_totals: r.totals.into_iter().map(Into::into).collect(),
            differences: r.differences,
        })
    }
}

#[derive(Serialize)]
struct QuoteBody {
    card: CardJson,
    purchase: PurchaseJson,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct QuoteData {
    amount_fen: u64,
    arrears_fen: u64,
    electricity_fen: u64,
    energy_wh: u64,
    steps: Vec<StepData>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct StepData {
    energy_wh: u64,
    price_fen_per_kwh: u32,
    amount_fen: u64,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct BillQueryBody {
    customer_number: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct BillsData {
    customer_number: String,
    customer_name: String,
    address: String,
    bills: Vec<BillData>,
    total_fen: u64,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct BillData {
    bill_id: String,
    period: String,
    amount_fen: u64,
    late_fee_fen: u64,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct BillPayBody {
    terminal_id: String,
    kiosk_serial: u64,
    customer_number: String,
    amount_fen: u64,
    payment: Payment,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct StatusBody {
    terminal_id: String,
    kiosk_serial: u64,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ReceiptData {
    payment_id: String,
    amount_fen: u64,
    remaining_fen: u64,
}

impl From<ReceiptData> for BillReceipt {
    fn from(r: ReceiptData) -> Self {
        BillReceipt {
            backend_payment_id: r.payment_id,
            amount_fen: r.amount_fen,
            remaining_fen: r.remaining_fen,
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PeriodBody {
    terminal_id: String,
    period_id: u64,
    opened_at: String,
    closed_at: String,
    totals: Vec<CountJson>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PeriodData {
    matched: bool,
    totals: Vec<CountJson>,
    differences: Vec<String>,
}

/// `Total` with all four business types.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct CountJson {
    business: BusinessJson,
    count: u32,
    amount_fen: u64,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum BusinessJson {
    CashSale,
    BankCardSale,
    CashBillPayment,
    BankCardBillPayment,
}

impl From<BusinessCount> for CountJson {
    fn from(c: BusinessCount) -> Self {
        CountJson {
            business: match c.business {
                Business::CashSale => BusinessJson::CashSale,
                Business::BankCardSale => BusinessJson::BankCardSale,
                Business::CashBillPayment => BusinessJson::CashBillPayment,
                Business::BankCardBillPayment => BusinessJson::BankCardBillPayment,
            },
            count: c.count,
            amount_fen: c.amount_fen,
        }
    }
}

impl From<CountJson> for BusinessCount {
    fn from(c: CountJson) -> Self {
        BusinessCount {
            business: match c.business {
                BusinessJson::CashSale => Business::CashSale,
                BusinessJson::BankCardSale => Business::BankCardSale,
                BusinessJson::CashBillPayment => Business::CashBillPayment,
                BusinessJson::BankCardBillPayment => Business::BankCardBillPayment,
            },
            count: c.count,
            amount_fen: c.amount_fen,
        }
    }
}
