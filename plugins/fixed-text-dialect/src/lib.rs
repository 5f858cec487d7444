//! Backend dialect FT1 ("fixed-text", `docs/dialects/fixed-text.md`): the fixed-length text
//! interface common in Chinese provincial utility marketing systems.
//!
//! One request per TCP connection: the kiosk sends one frame and reads one frame back. A frame is
//! `LLLL` (four ASCII digits, the body's byte length) then the body. A request body is the
//! transaction code `N(4)`, the terminal id `A(16)` and the transaction's fields; a reply body
//! repeats the transaction code, then a response code `N(2)`, a message `A(40)` and, on `00`
//! (and for can-buy refusals), the transaction's fields. Fields have fixed widths: `N(w)`
//! zero-padded digits, `A(w)` GB18030 text padded with spaces, `B` a three-digit byte count then
//! upper-case hex, `O` a presence flag then a `B`.
//!
//! `wire` encodes and decodes fields, `blocks` the blocks several transactions share, `frame`
//! carries one exchange over the host's connection, `reply` reads a reply's header and maps its
//! response code, `billing` is contract 1.1's quotes and bills.
//!
//! With the `contract-1-0` feature the dialect is built against the frozen 1.0 WIT
//! (`wit/backend-1.0`), without `billing`: the build a kiosk ran before 1.1, which the tests use
//! to prove a 1.0 dialect still loads and sells on a 1.1 host.

#[cfg(not(feature = "contract-1-0"))]
mod billing;
mod blocks;
mod frame;
mod reply;
mod wire;

use exports::selfvend::backend::dialect::{
    Account, AuthRequest, BuyCheck, CardRef, CreditGrant, DialectInfo, Guest, PeriodReport,
    Purchase, Reconciliation, SaleOutcome, SaleRequest, WriteConfirmation,
};
use selfvend::backend::log::{Level, log};
use selfvend::backend::types::{AccountStatus, AuthPurpose, PaymentKind, PurchaseRecord};

use reply::Reply;
use wire::{Result, Writer};

#[cfg(not(feature = "contract-1-0"))]
wit_bindgen::generate!({ path: "../../wit/backend", world: "backend-dialect" });
#[cfg(feature = "contract-1-0")]
wit_bindgen::generate!({ path: "../../wit/backend-1.0", world: "backend-dialect" });

struct FixedText;

/// Sends the request `w` has built and reads the reply's header.
fn call(w: Writer) -> Result<Reply> {
    let tx = w.tx();
    let body = frame::exchange(tx, &w.finish()?)?;
    let reply = Reply::parse(tx, body)?;
    // The code only: replies to 3001 and 3002 carry key material.
    log(
        Level::Debug,
        &format!("{tx}: response code {}", reply.code()),
    );
    Ok(reply)
}

impl Guest for FixedText {
    fn about() -> DialectInfo {
        DialectInfo {
            vendor: "Provincial Marketing System (fictional)".into(),
            name: "fixed-text".into(),
            version: if cfg!(feature = "contract-1-0") {
                "1.0.0"
            } else {
                "1.1.0"
            }
            .into(),
        }
    }

    fn ping() -> Result<()> {
        call(Writer::new("0000", "")?)?.success()?;
        Ok(())
    }

    fn account_query(card: CardRef) -> Result<Account> {
        let mut w = Writer::new("1001", "")?;
        w.card(&card)?;
        let reply = call(w)?;
        let mut r = reply.success()?;
        let customer_number = r.a(20, "customer number")?;
        let customer_name = r.a(40, "name")?;
        let address = r.a(80, "address")?;
        let meter_number = r.a(20, "meter number")?;
        let card_serial = r.a(20, "card serial")?;
        let status = match r.a(1, "status")?.as_str() {
            "0" => AccountStatus::Active,
            "1" => AccountStatus::Closed,
            "2" => AccountStatus::Suspended,
            other => {
                return Err(r.malformed(format_args!("status {other:?} is not 0, 1 or 2")));
            }
        };
        let purchase_count = r.n32(6, "purchase count")?;
        let price_fen_per_kwh = r.n32(6, "price")?;
        let arrears_fen = r.n(12, "arrears")?;
        let last_purchase = if r.flag("last purchase flag")? {
            Some(PurchaseRecord {
                amount_fen: r.n(12, "last purchase amount")?,
                energy_wh: r.n(12, "last purchase energy")?,
                at: r.a(19, "last purchase time")?,
                place: r.a(40, "last purchase place")?,
            })
        } else {
            None
        };
        Ok(Account {
            customer_number,
            customer_name,
            address,
            meter_number,
            card_serial,
            status,
            purchase_count,
            price_fen_per_kwh,
            arrears_fen,
            last_purchase,
        })
    }

    fn can_buy(card: CardRef, purchase: Purchase) -> Result<BuyCheck> {
        let mut w = Writer::new("1002", "")?;
        w.card(&card)?.buy(&purchase)?;
        let reply = call(w)?;
        // Refusal codes carry min and max too: "may not buy", not a failed call.
        let refusal = reply.refusal()?;
        let mut r = reply.fields();
        Ok(BuyCheck {
            refusal,
            min_fen: r.n(12, "min")?,
            max_fen: r.n(12, "max")?,
        })
    }

    fn sale(request: SaleRequest) -> Result<CreditGrant> {
        let payment = match request.payment {
            PaymentKind::Cash => "1",
            PaymentKind::BankCard => "2",
        };
        let mut w = Writer::new("2001", &request.terminal_id)?;
        w.n(16, request.kiosk_serial, "kiosk serial")?
            .card(&request.card)?
            .buy(&request.purchase)?
            .a(1, payment, "payment")?
            .n(12, request.paid_fen, "paid")?;
        call(w)?.success()?.grant()
    }

    fn sale_status(terminal_id: String, kiosk_serial: u64) -> Result<SaleOutcome> {
        let mut w = Writer::new("2002", &terminal_id)?;
        w.n(16, kiosk_serial, "kiosk serial")?;
        let reply = call(w)?;
        if reply.code() == "07" {
            return Ok(SaleOutcome::NotFound);
        }
        match reply.refusal()? {
            None => Ok(SaleOutcome::Granted(reply.fields().grant()?)),
            Some(refusal) => Ok(SaleOutcome::Refused(refusal)),
        }
    }

    fn confirm_write(confirmation: WriteConfirmation) -> Result<()> {
        let written = if confirmation.written { "1" } else { "0" };
        let mut w = Writer::new("2003", &confirmation.terminal_id)?;
        w.n(16, confirmation.kiosk_serial, "kiosk serial")?
            .a(20, &confirmation.card_serial, "card serial")?
            .a(1, written, "written")?
            .o(confirmation.return_data.as_deref(), "return data")?;
        call(w)?.success()?;
        Ok(())
    }

    fn authenticate(request: AuthRequest) -> Result<Vec<u8>> {
        let purpose = match request.purpose {
            AuthPurpose::ExternalAuthenticate => "E",
            AuthPurpose::CommandMac => "M",
            AuthPurpose::VerifyCardMac => "V",
        };
        let mut w = Writer::new("3001", "")?;
        w.a(20, &request.card_serial, "card serial")?
            .a(1, purpose, "purpose")?
            .b(&request.challenge, "challenge")?
            .b(&request.data, "data")?;
        call(w)?.success()?.b("result")
    }

    fn card_password(card: CardRef) -> Result<Vec<u8>> {
        let mut w = Writer::new("3002", "")?;
        w.card(&card)?;
        call(w)?.success()?.b("password")
    }

    fn reconcile(report: PeriodReport) -> Result<Reconciliation> {
        let mut w = Writer::new("4001", &report.terminal_id)?;
        w.n(10, report.period_id, "period id")?
            .a(19, &report.opened_at, "opened")?
            .a(19, &report.closed_at, "closed")?
            .totals(&report.totals)?;
        let reply = call(w)?;
        let mut r = reply.success()?;
        let matched = r.flag("matched")?;
        let backend_totals = r.totals()?;
        let count = r.count(2, "difference count")?;
        let differences = (0..count)
            .map(|_| r.a(80, "difference"))
            .collect::<Result<Vec<_>>>()?;
        Ok(Reconciliation {
            matched,
            backend_totals,
            differences,
        })
    }
}

#[allow(unsafe_code)]
mod glue {
    use super::FixedText;
    crate::export!(FixedText with_types_in crate);
}
