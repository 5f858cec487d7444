//! {{name}}: a backend dialect for the "DEMO" line protocol, in Rust.
//!
//! Replace the protocol with your backend's; keep the rules each function states, which
//! `selfvend plugin test` checks. The DEMO protocol: one request per TCP connection. The kiosk
//! sends one line and the backend answers one line, each UTF-8 text ending in "\n", its fields
//! separated by "|". A request is a command and its fields; a reply is `OK|fields…`, `NONE`
//! (no such sale), or `NO|code|message` (a refusal, its code one of ACCOUNT-CLOSED, ARREARS,
//! CREDIT-NOT-TAKEN, OVER-LIMIT, UNKNOWN-CARD, CARD-MISMATCH, OTHER).
//!
//!   PING                                         -> OK
//!   ACCOUNT|serial|utility|customer|meter|count  -> OK|customer|name|address|meter|serial|
//!                                                   A, C or S|count|fen per kWh|arrears fen
//!   CANBUY|serial|customer|count|M or E|value    -> OK|min fen|max fen, or NO|code|message
//!   SALE|terminal|kiosk serial|serial|customer|count|M or E|value|CASH or CARD|paid fen
//!                                                -> OK|kiosk serial|sale id|count|fen|Wh|token hex
//!   STATUS|terminal|kiosk serial                 -> as SALE, or NONE
//!   CONFIRM|terminal|kiosk serial|serial|Y or N|return data hex  -> OK
//!   PSC|serial|customer                          -> OK|PSC hex
//!   RECON|terminal|period|opened|closed|then count|fen for cash sales, bank-card sales and
//!        cash bill payments                      -> OK|the backend's six figures
//!
//! "M" buys money in fen, "E" energy in Wh. Contract 1.1's billing calls, and `authenticate`
//! (CPU cards), are `not-supported`: the kiosk then prices from the account.
//!
//! WIT errors in Rust: every export returns `Result<_, BackendError>`; an imported function's
//! error is its `Err`. A panic traps the instance, which the kiosk treats as a broken plugin.

use exports::selfvend::backend::billing::{
    BillAccount, BillPaymentOutcome, BillPaymentRequest, BillReceipt, Guest as Billing,
    PeriodReconciliation, PeriodTotals, PriceQuote,
};
use exports::selfvend::backend::dialect::{
    Account, AuthRequest, BuyCheck, CardRef, CreditGrant, DialectInfo, Guest, PeriodReport,
    Purchase, Reconciliation, SaleOutcome, SaleRequest, WriteConfirmation,
};
use selfvend::backend::connection::{Connection, NetError};
use selfvend::backend::log::{Level, log};
use selfvend::backend::types::{
    AccountStatus, BackendError, BusinessTotal, BusinessType, PaymentKind, Refusal, RefusalCode,
};

wit_bindgen::generate!({ path: "wit", world: "backend-dialect" });

type Result<T> = std::result::Result<T, BackendError>;

/// The longest reply line read; a longer one is malformed.
const MAX_REPLY: usize = 4096;
/// The longest text the kiosk takes in an error or a refusal.
const MAX_TEXT: usize = 512;

/// `text` as the kiosk takes it: control characters as spaces, cut to `MAX_TEXT` bytes. A
/// longer or stranger text would make the kiosk take the answer as the plugin's failure.
fn fit(text: &str) -> String {
    let mut out = String::new();
    for c in text.chars() {
        if out.len() + c.len_utf8() > MAX_TEXT - '…'.len_utf8() {
            out.push('…');
            break;
        }
        out.push(if c.is_control() { ' ' } else { c });
    }
    out
}

/// A value quoted in an error: at most its first 32 characters.
fn quote(value: &str) -> String {
    let start: String = value.chars().take(32).collect();
    match start.len() < value.len() {
        true => format!("{start:?}…"),
        false => format!("{start:?}"),
    }
}

fn malformed(text: String) -> BackendError {
    BackendError::MalformedReply(fit(&text))
}

fn unknown(text: String) -> BackendError {
    BackendError::OutcomeUnknown(fit(&text))
}

fn unreachable(text: String) -> BackendError {
    BackendError::Unreachable(fit(&text))
}

/// A reply line: `OK` and its fields, `NONE`, or a refusal.
enum Reply {
    Ok(Fields),
    None,
    No(Refusal),
}

/// The fields of an `OK` reply, read in order, each checked and named in any error.
struct Fields {
    command: &'static str,
    fields: Vec<String>,
    next: usize,
}

impl Fields {
    fn new(command: &'static str, fields: Vec<String>) -> Fields {
        Fields {
            command,
            fields,
            next: 0,
        }
    }

    /// The error for the field just read: its place (the first after OK is 1) and its name.
    fn bad(&self, name: &str, what: std::fmt::Arguments) -> BackendError {
        malformed(format!(
            "{} reply, field {} ({name}): {what}",
            self.command, self.next
        ))
    }

    fn text(&mut self, name: &str) -> Result<String> {
        self.next += 1;
        match self.fields.get(self.next - 1) {
            Some(value) => Ok(value.clone()),
            None => Err(self.bad(name, format_args!("missing"))),
        }
    }

    /// Text the kiosk keeps as an id: not empty, at most 64 bytes.
    fn id(&mut self, name: &str) -> Result<String> {
        let value = self.text(name)?;
        match value.len() {
            0 => Err(self.bad(name, format_args!("empty"))),
            1..=64 => Ok(value),
            n => Err(self.bad(name, format_args!("{n} bytes, over 64"))),
        }
    }

    fn number(&mut self, name: &str) -> Result<u64> {
        self.number_up_to(name, u64::MAX)
    }

    fn number32(&mut self, name: &str) -> Result<u32> {
        let n = self.number_up_to(name, u32::MAX.into())?;
        Ok(n as u32)
    }

    fn number_up_to(&mut self, name: &str, limit: u64) -> Result<u64> {
        let value = self.text(name)?;
        // Digits only: `parse` would take a sign.
        if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
            return Err(self.bad(name, format_args!("{} is not a number", quote(&value))));
        }
        match value.parse() {
            Ok(n) if n <= limit => Ok(n),
            _ => Err(self.bad(name, format_args!("{} is over {limit}", quote(&value)))),
        }
    }

    /// A number the reply repeats from the request: a reply to another request says nothing
    /// of this one.
    fn echo(&mut self, name: &str, sent: u64) -> Result<()> {
        match self.number(name)? {
            n if n == sent => Ok(()),
            n => Err(self.bad(name, format_args!("{n}, where {sent} was sent"))),
        }
    }

    fn hex(&mut self, name: &str) -> Result<Vec<u8>> {
        let value = self.text(name)?;
        let digit = |b: u8| char::from(b).to_digit(16);
        let bytes: Option<Vec<u8>> = value
            .as_bytes()
            .chunks(2)
            .map(|p| match p {
                [hi, lo] => Some((digit(*hi)? * 16 + digit(*lo)?) as u8),
                _ => None,
            })
            .collect();
        // Not quoted: the field may be a PSC.
        bytes.ok_or_else(|| {
            let len = value.chars().count();
            self.bad(name, format_args!("{len} characters that are not hex"))
        })
    }

    /// The reply must end here: more fields is a protocol this dialect does not know.
    fn end(self) -> Result<()> {
        match self.fields.len() == self.next {
            true => Ok(()),
            false => Err(malformed(format!(
                "{} reply: {} fields where {} were expected",
                self.command,
                self.fields.len(),
                self.next
            ))),
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect()
}

/// A request line from its fields. A field holding "|" or a line break could not be sent as
/// itself, so the request is not sent at all.
fn line(command: &'static str, fields: &[&str]) -> Result<String> {
    let mut line = command.to_string();
    for field in fields {
        if field.contains(['|', '\n', '\r']) {
            return Err(unreachable(format!(
                "{command}: not sent: the field {} holds a \"|\" or a line break",
                quote(field)
            )));
        }
        line.push('|');
        line.push_str(field);
    }
    line.push('\n');
    Ok(line)
}

fn net(command: &str, doing: &str, e: NetError) -> String {
    let why = match e {
        NetError::Timeout => "timed out".to_string(),
        NetError::Closed => "the backend closed the connection".to_string(),
        NetError::ConnectFailed(s) => format!("could not connect: {s}"),
        NetError::TooLarge => "over the byte cap".to_string(),
        NetError::Io(s) => s,
    };
    format!("{command}: {doing}: {why}")
}

/// Sends one request line and reads one reply line. Until the request is sent, a failure is
/// `unreachable`: the backend cannot have acted. After it, the backend may have acted, so a
/// failure is `outcome-unknown`; the kiosk then asks with STATUS.
fn exchange(command: &'static str, fields: &[&str]) -> Result<Reply> {
    let request = line(command, fields)?;
    let conn = Connection::open().map_err(|e| unreachable(net(command, "connecting", e)))?;
    conn.send(request.as_bytes())
        .map_err(|e| unknown(net(command, "sending", e)))?;
    let mut reply = Vec::new();
    while !reply.contains(&b'\n') {
        if reply.len() >= MAX_REPLY {
            return Err(malformed(format!(
                "{command} reply: no end of line in its first {MAX_REPLY} bytes"
            )));
        }
        let chunk = conn
            .receive((MAX_REPLY - reply.len()) as u32)
            .map_err(|e| unknown(net(command, "waiting for the reply", e)))?;
        if chunk.is_empty() {
            return Err(unknown(format!(
                "{command}: the backend closed the connection after {} bytes, before the reply's end of line",
                reply.len()
            )));
        }
        reply.extend_from_slice(&chunk);
    }
    let end = reply
        .iter()
        .position(|b| *b == b'\n')
        .unwrap_or(reply.len());
    if end + 1 != reply.len() {
        return Err(malformed(format!(
            "{command} reply: {} bytes after its end of line",
            reply.len() - end - 1
        )));
    }
    reply.truncate(end);
    let text = String::from_utf8(reply).map_err(|e| {
        malformed(format!(
            "{command} reply: not UTF-8 at byte {}",
            e.utf8_error().valid_up_to()
        ))
    })?;
    let mut fields = text.split('|').map(str::to_string);
    let reply = match fields.next().as_deref() {
        Some("OK") => Reply::Ok(Fields::new(command, fields.collect())),
        Some("NONE") if fields.next().is_none() => Reply::None,
        Some("NO") => {
            let mut f = Fields::new(command, fields.collect());
            let code = f.text("refusal code")?;
            let message = f.text("refusal message")?;
            f.end()?;
            Reply::No(Refusal {
                code: refusal_code(&code),
                message: fit(&message),
            })
        }
        // Not quoted: the line may hold a PSC.
        first => {
            let len = first.map_or(0, |f| f.chars().count());
            return Err(malformed(format!(
                "{command} reply: its first field ({len} characters) is not OK, NONE or NO"
            )));
        }
    };
    // The outcome only: a PSC reply carries key material.
    let outcome = match &reply {
        Reply::Ok(_) => "OK",
        Reply::None => "NONE",
        Reply::No(_) => "NO",
    };
    log(Level::Debug, &format!("{command}: {outcome}"));
    Ok(reply)
}

/// An `OK` reply's fields; a refusal is `refused`, anything else malformed.
fn ok(command: &'static str, fields: &[&str]) -> Result<Fields> {
    match exchange(command, fields)? {
        Reply::Ok(fields) => Ok(fields),
        Reply::No(refusal) => Err(BackendError::Refused(refusal)),
        Reply::None => Err(malformed(format!(
            "{command} reply: NONE, where OK or NO was expected"
        ))),
    }
}

/// A refusal code; one this dialect does not know is still a refusal, in the backend's words.
fn refusal_code(code: &str) -> RefusalCode {
    match code {
        "ACCOUNT-CLOSED" => RefusalCode::AccountClosed,
        "ARREARS" => RefusalCode::Arrears,
        "CREDIT-NOT-TAKEN" => RefusalCode::CreditNotTaken,
        "OVER-LIMIT" => RefusalCode::OverLimit,
        "UNKNOWN-CARD" => RefusalCode::UnknownCard,
        "CARD-MISMATCH" => RefusalCode::CardMismatch,
        _ => RefusalCode::Other,
    }
}

fn purchase(p: &Purchase) -> (&'static str, String) {
    match p {
        Purchase::Money(fen) => ("M", fen.to_string()),
        Purchase::Energy(wh) => ("E", wh.to_string()),
    }
}

/// A SALE or STATUS reply's grant, for the sale with this kiosk serial.
fn grant(mut f: Fields, kiosk_serial: u64) -> Result<CreditGrant> {
    f.echo("kiosk serial", kiosk_serial)?;
    let grant = CreditGrant {
        backend_sale_id: f.id("sale id")?,
        purchase_count: f.number32("purchase count")?,
        amount_fen: f.number("amount")?,
        energy_wh: f.number("energy")?,
        token: f.hex("token")?,
    };
    f.end()?;
    Ok(grant)
}

/// The three business types a period reports, in the order RECON carries them.
const BUSINESSES: [(BusinessType, &str); 3] = [
    (BusinessType::CashSale, "cash sales"),
    (BusinessType::BankCardSale, "bank-card sales"),
    (BusinessType::CashBillPayment, "cash bill payments"),
];

struct Dialect;

impl Guest for Dialect {
    fn about() -> DialectInfo {
        DialectInfo {
            vendor: "Your Utility Software Company".into(),
            name: "{{name}}".into(),
            version: "0.1.0".into(),
        }
    }

    fn ping() -> Result<()> {
        ok("PING", &[])?.end()
    }

    fn account_query(card: CardRef) -> Result<Account> {
        let count = card.purchase_count.to_string();
        let mut f = ok(
            "ACCOUNT",
            &[
                &card.card_serial,
                &card.utility_code,
                &card.customer_number,
                &card.meter_number,
                &count,
            ],
        )?;
        let account = Account {
            customer_number: f.text("customer number")?,
            customer_name: fit(&f.text("name")?),
            address: fit(&f.text("address")?),
            meter_number: f.text("meter number")?,
            card_serial: f.text("card serial")?,
            status: match f.text("status")?.as_str() {
                "A" => AccountStatus::Active,
                "C" => AccountStatus::Closed,
                "S" => AccountStatus::Suspended,
                other => {
                    return Err(f.bad("status", format_args!("{other:?} is not A, C or S")));
                }
            },
            purchase_count: f.number32("purchase count")?,
            price_fen_per_kwh: f.number32("price")?,
            arrears_fen: f.number("arrears")?,
            last_purchase: None,
        };
        f.end()?;
        Ok(account)
    }

    /// A refusal here is an answer ("may not buy now"), not a failed call.
    fn can_buy(card: CardRef, purchase: Purchase) -> Result<BuyCheck> {
        let count = card.purchase_count.to_string();
        let (kind, value) = self::purchase(&purchase);
        let fields = [
            card.card_serial.as_str(),
            &card.customer_number,
            &count,
            kind,
            &value,
        ];
        match exchange("CANBUY", &fields)? {
            Reply::Ok(mut f) => {
                let check = BuyCheck {
                    refusal: None,
                    min_fen: f.number("min")?,
                    max_fen: f.number("max")?,
                };
                f.end()?;
                Ok(check)
            }
            Reply::No(refusal) => Ok(BuyCheck {
                refusal: Some(refusal),
                min_fen: 0,
                max_fen: 0,
            }),
            Reply::None => Err(malformed(
                "CANBUY reply: NONE, where OK or NO was expected".into(),
            )),
        }
    }

    /// Changes state: the backend takes the sale. The kiosk serial makes a retry recognised.
    fn sale(request: SaleRequest) -> Result<CreditGrant> {
        let (kind, value) = purchase(&request.purchase);
        let payment = match request.payment {
            PaymentKind::Cash => "CASH",
            PaymentKind::BankCard => "CARD",
        };
        let card = &request.card;
        let f = ok(
            "SALE",
            &[
                &request.terminal_id,
                &request.kiosk_serial.to_string(),
                &card.card_serial,
                &card.customer_number,
                &card.purchase_count.to_string(),
                kind,
                &value,
                payment,
                &request.paid_fen.to_string(),
            ],
        )?;
        grant(f, request.kiosk_serial)
    }

    fn sale_status(terminal_id: String, kiosk_serial: u64) -> Result<SaleOutcome> {
        match exchange("STATUS", &[&terminal_id, &kiosk_serial.to_string()])? {
            Reply::Ok(f) => Ok(SaleOutcome::Granted(grant(f, kiosk_serial)?)),
            Reply::None => Ok(SaleOutcome::NotFound),
            Reply::No(refusal) => Ok(SaleOutcome::Refused(refusal)),
        }
    }

    /// Changes state: the backend books the write.
    fn confirm_write(c: WriteConfirmation) -> Result<()> {
        let written = if c.written { "Y" } else { "N" };
        let return_data = hex(c.return_data.as_deref().unwrap_or_default());
        ok(
            "CONFIRM",
            &[
                &c.terminal_id,
                &c.kiosk_serial.to_string(),
                &c.card_serial,
                written,
                &return_data,
            ],
        )?
        .end()
    }

    fn authenticate(_: AuthRequest) -> Result<Vec<u8>> {
        Err(BackendError::NotSupported)
    }

    /// The PSC is a secret: never log it.
    fn card_password(card: CardRef) -> Result<Vec<u8>> {
        let mut f = ok("PSC", &[&card.card_serial, &card.customer_number])?;
        let psc = f.hex("PSC")?;
        f.end()?;
        Ok(psc)
    }

    /// Changes state: the backend closes the period on its side.
    fn reconcile(report: PeriodReport) -> Result<Reconciliation> {
        let ours: Vec<(u64, u64)> = BUSINESSES
            .iter()
            .map(|(business, _)| {
                report
                    .totals
                    .iter()
                    .filter(|t| t.business == *business)
                    .fold((0, 0), |(n, fen), t| {
                        (n + u64::from(t.count), fen + t.amount_fen)
                    })
            })
            .collect();
        let figures: Vec<String> = ours
            .iter()
            .flat_map(|(n, fen)| [n.to_string(), fen.to_string()])
            .collect();
        let period = report.period_id.to_string();
        let mut fields = vec![
            report.terminal_id.as_str(),
            &period,
            &report.opened_at,
            &report.closed_at,
        ];
        fields.extend(figures.iter().map(String::as_str));
        let mut f = ok("RECON", &fields)?;
        let mut backend_totals = Vec::new();
        let mut differences = Vec::new();
        for ((business, what), (n, fen)) in BUSINESSES.iter().zip(&ours) {
            let count = f.number32(&format!("{what} count"))?;
            let amount_fen = f.number(&format!("{what} amount"))?;
            if (u64::from(count), amount_fen) != (*n, *fen) {
                differences.push(format!(
                    "{what}: the kiosk has {n} for {fen} fen, the backend {count} for {amount_fen} fen"
                ));
            }
            backend_totals.push(BusinessTotal {
                business: *business,
                count,
                amount_fen,
            });
        }
        f.end()?;
        Ok(Reconciliation {
            matched: differences.is_empty(),
            backend_totals,
            differences,
        })
    }
}

/// Contract 1.1. The DEMO backend has none of it: each call says so without sending anything.
impl Billing for Dialect {
    fn quote(_: CardRef, _: Purchase) -> Result<PriceQuote> {
        Err(BackendError::NotSupported)
    }

    fn bill_query(_: String) -> Result<BillAccount> {
        Err(BackendError::NotSupported)
    }

    fn bill_pay(_: BillPaymentRequest) -> Result<BillReceipt> {
        Err(BackendError::NotSupported)
    }

    fn bill_payment_status(_: String, _: u64) -> Result<BillPaymentOutcome> {
        Err(BackendError::NotSupported)
    }

    fn reconcile_period(_: PeriodTotals) -> Result<PeriodReconciliation> {
        Err(BackendError::NotSupported)
    }
}

export!(Dialect);
