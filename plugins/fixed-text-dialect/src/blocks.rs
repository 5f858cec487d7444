//! The blocks several transactions share: `CARD`, `BUY`, `GRANT` and `TOTALS`.

use crate::selfvend::backend::types::{
    BusinessTotal, BusinessType, CardRef, CreditGrant, Purchase,
};
use crate::wire::{Reader, Result, Writer};

impl Writer {
    /// `CARD`: the card as the codec read it.
    pub fn card(&mut self, card: &CardRef) -> Result<&mut Self> {
        self.a(20, &card.card_serial, "card serial")?
            .a(8, &card.utility_code, "utility code")?
            .a(20, &card.customer_number, "customer number")?
            .a(20, &card.meter_number, "meter number")?
            .n(6, card.purchase_count.into(), "purchase count")?
            .n(12, card.pending_fen, "pending credit fen")?
            .n(12, card.pending_wh, "pending credit Wh")?
            .o(card.return_data.as_deref(), "return data")
    }

    /// `BUY`: `M` money in fen or `E` energy in Wh, then the quantity.
    pub fn buy(&mut self, purchase: &Purchase) -> Result<&mut Self> {
        let (kind, quantity) = match purchase {
            Purchase::Money(fen) => ("M", *fen),
            Purchase::Energy(wh) => ("E", *wh),
        };
        self.a(1, kind, "purchase kind")?
            .n(12, quantity, "purchase quantity")
    }

    /// `TOTALS`: the count, then business, count and amount per total.
    pub fn totals(&mut self, totals: &[BusinessTotal]) -> Result<&mut Self> {
        self.n(2, totals.len() as u64, "totals count")?;
        for total in totals {
            let business = match total.business {
                BusinessType::CashSale => 1,
                BusinessType::BankCardSale => 2,
                BusinessType::CashBillPayment => 3,
            };
            self.n(2, business, "business")?
                .n(8, total.count.into(), "business count")?
                .n(14, total.amount_fen, "business amount")?;
        }
        Ok(self)
    }
}

impl Reader<'_> {
    /// `GRANT`: the credit to write onto the card.
    pub fn grant(&mut self) -> Result<CreditGrant> {
        Ok(CreditGrant {
            backend_sale_id: self.a(20, "backend sale id")?,
            purchase_count: self.n32(6, "purchase count")?,
            amount_fen: self.n(12, "amount")?,
            energy_wh: self.n(12, "energy")?,
            token: self.b("token")?,
        })
    }

    /// `TOTALS`, as the backend counted them.
    pub fn totals(&mut self) -> Result<Vec<BusinessTotal>> {
        let count = self.count(2, "totals count")?;
        let mut totals = Vec::with_capacity(count);
        for _ in 0..count {
            let business = match self.digits(2, "business")? {
                "01" => BusinessType::CashSale,
                "02" => BusinessType::BankCardSale,
                "03" => BusinessType::CashBillPayment,
                other => {
                    return Err(
                        self.malformed(format_args!("business {other} is not 01, 02 or 03"))
                    );
                }
            };
            totals.push(BusinessTotal {
                business,
                count: self.n32(8, "business count")?,
                amount_fen: self.n(14, "business amount")?,
            });
        }
        Ok(totals)
    }
}
