//! The backend's side of the fixed-length text dialect (docs/dialects/fixed-text.md).

use std::io::Read;
use std::net::TcpStream;

use encoding_rs::GB18030;

use super::Wire;
use super::ledger::{
    Answer, AuthPurpose, Business, Buy, CardInfo, Outcome, Payment, Reason, Request, Status, Total,
};

pub struct FixedText;

impl Wire for FixedText {
    fn read_request(&self, stream: &mut TcpStream) -> Result<Request, Vec<u8>> {
        let mut header = [0u8; 4];
        stream
            .read_exact(&mut header)
            .map_err(|e| format_error("0000", &format!("读报文头失败: {e}")))?;
        let len = std::str::from_utf8(&header)
            .ok()
            .filter(|s| s.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|s| s.parse::<usize>().ok())
            .filter(|&n| n >= 4)
            .ok_or_else(|| format_error("0000", "报文长度不是4位数字"))?;
        let mut body = vec![0; len];
        stream
            .read_exact(&mut body)
            .map_err(|e| format_error("0000", &format!("报文不完整: {e}")))?;
        let code = String::from_utf8_lossy(&body[..4]).into_owned();
        parse_request(&body).map_err(|why| format_error(&code, &why))
    }

    fn reply(&self, request: &Request, outcome: &Outcome) -> Vec<u8> {
        let code = tx_code(request);
        let mut w = Writer::default();
        w.raw(code.as_bytes());
        match outcome {
            Ok(Answer::BuyCheck {
                refusal,
                min_fen,
                max_fen,
            }) => {
                match refusal {
                    None => head(&mut w, "00", "可以购电"),
                    Some(r) => head(&mut w, response_code(r.reason), &r.message),
                }
                w.n(*min_fen, 12);
                w.n(*max_fen, 12);
            }
            Ok(answer) => {
                head(&mut w, "00", "交易成功");
                let all = matches!(
                    request,
                    Request::Reconcile {
                        all_business_types: true,
                        ..
                    }
                );
                answer_fields(&mut w, answer, all);
            }
            Err(refusal) => head(&mut w, response_code(refusal.reason), &refusal.message),
        }
        w.frame()
    }

    fn flood_header(&self) -> Vec<u8> {
        b"9999".to_vec()
    }

    fn name(&self) -> &'static str {
        "fixed-text"
    }
}

fn head(w: &mut Writer, code: &str, message: &str) {
    w.raw(code.as_bytes());
    w.a(message, 40);
}

fn answer_fields(w: &mut Writer, answer: &Answer, all_business_types: bool) {
    match answer {
        Answer::Done | Answer::BuyCheck { .. } => {}
        Answer::Account(a) => {
            w.a(&a.customer_number, 20);
            w.a(&a.customer_name, 40);
            w.a(&a.address, 80);
            w.a(&a.meter_number, 20);
            w.a(&a.card_serial, 20);
            w.a(
                match a.status {
                    Status::Active => "0",
                    Status::Closed => "1",
                    Status::Suspended => "2",
                },
                1,
            );
            w.n(u64::from(a.purchase_count), 6);
            w.n(u64::from(a.price_fen_per_kwh), 6);
            w.n(a.arrears_fen, 12);
            match &a.last_purchase {
                None => w.n(0, 1),
                Some(p) => {
                    w.n(1, 1);
                    w.n(p.amount_fen, 12);
                    w.n(p.energy_wh, 12);
                    w.a(&p.at, 19);
                    w.a(&p.place, 40);
                }
            }
        }
        Answer::Grant(g) => {
            w.a(&g.sale_id, 20);
            w.n(u64::from(g.purchase_count), 6);
            w.n(g.amount_fen, 12);
            w.n(g.energy_wh, 12);
            w.b(&g.token);
        }
        Answer::Bytes(b) => w.b(b),
        Answer::Quote(q) => {
            w.n(q.amount_fen, 12);
            w.n(q.arrears_fen, 12);
            w.n(q.electricity.electricity_fen, 12);
            w.n(q.electricity.energy_wh, 12);
            w.n(q.electricity.parts.len() as u64, 2);
            for p in &q.electricity.parts {
                w.n(p.energy_wh, 12);
                w.n(u64::from(p.price_fen_per_kwh), 6);
                w.n(p.amount_fen, 12);
            }
        }
        Answer::Bills(b) => {
            w.a(&b.customer_number, 20);
            w.a(&b.customer_name, 40);
            w.a(&b.address, 80);
            w.n(b.bills.len() as u64, 2);
            for bill in &b.bills {
                w.a(&bill.bill_id, 20);
                w.a(&bill.period, 10);
                w.n(bill.amount_fen, 12);
                w.n(bill.late_fee_fen, 12);
            }
            w.n(b.total_fen, 12);
        }
        Answer::BillReceipt(r) => {
            w.a(&r.payment_id, 20);
            w.n(r.amount_fen, 12);
            w.n(r.remaining_fen, 12);
        }
        Answer::Reconciled(r) => {
            w.a(if r.matched { "1" } else { "0" }, 1);
            totals(w, &r.totals, all_business_types);
            w.n(r.differences.len() as u64, 2);
            for d in &r.differences {
                w.a(d, 80);
            }
        }
    }
}

/// Totals; 4001 (contract 1.0) names three business types and never carries the fourth.
fn totals(w: &mut Writer, totals: &[Total], all_business_types: bool) {
    let totals: Vec<&Total> = totals
        .iter()
        .filter(|t| all_business_types || t.business != Business::BankCardBillPayment)
        .collect();
    w.n(totals.len() as u64, 2);
    for t in totals {
        w.n(
            match t.business {
                Business::CashSale => 1,
                Business::BankCardSale => 2,
                Business::CashBillPayment => 3,
                Business::BankCardBillPayment => 4,
            },
            2,
        );
        w.n(u64::from(t.count), 8);
        w.n(t.amount_fen, 14);
    }
}

fn response_code(reason: Reason) -> &'static str {
    match reason {
        Reason::UnknownCard => "01",
        Reason::AccountClosed => "02",
        Reason::Arrears => "03",
        Reason::CreditNotTaken => "04",
        Reason::OverLimit => "05",
        Reason::CardMismatch => "06",
        Reason::SaleNotFound => "07",
        Reason::Other => "08",
        Reason::NotSupported => "09",
        Reason::SystemError => "96",
    }
}

fn tx_code(request: &Request) -> &'static str {
    match request {
        Request::Ping => "0000",
        Request::AccountQuery(_) => "1001",
        Request::CanBuy(..) => "1002",
        Request::Sale { .. } => "2001",
        Request::SaleStatus { .. } => "2002",
        Request::ConfirmWrite { .. } => "2003",
        Request::Authenticate { .. } => "3001",
        Request::CardPassword(_) => "3002",
        Request::Quote(..) => "1003",
        Request::Reconcile {
            all_business_types: false,
            ..
        } => "4001",
        Request::Reconcile {
            all_business_types: true,
            ..
        } => "4002",
        Request::BillQuery(_) => "5001",
        Request::BillPay { .. } => "5002",
        Request::BillPaymentStatus { .. } => "5003",
    }
}

/// Code 90: the request did not parse, nothing was done.
fn format_error(code: &str, why: &str) -> Vec<u8> {
    let mut w = Writer::default();
    let code = if code.len() == 4 && code.bytes().all(|b| b.is_ascii_digit()) {
        code
    } else {
        "0000"
    };
    w.raw(code.as_bytes());
    head(
        &mut w,
        "90",
        &truncate_gb(&format!("报文格式错误: {why}"), 40),
    );
    w.frame()
}

/// Cuts text to at most `max` GB18030 bytes on a character boundary.
fn truncate_gb(s: &str, max: usize) -> String {
    let mut out = String::new();
    for c in s.chars() {
        let mut candidate = out.clone();
        candidate.push(c);
        if GB18030.encode(&candidate).0.len() > max {
            break;
        }
        out = candidate;
    }
    out
}

fn parse_request(body: &[u8]) -> Result<Request, String> {
    let mut r = Reader { body, pos: 0 };
    let code = r.text(4, "transaction code")?;
    let terminal_id = r.text(16, "terminal id")?;
    let request = match code.as_str() {
        "0000" => Request::Ping,
        "1001" => Request::AccountQuery(r.card()?),
        "1002" => Request::CanBuy(r.card()?, r.buy()?),
        "1003" => Request::Quote(r.card()?, r.buy()?),
        "2001" => {
            let kiosk_serial = r.num(16, "kiosk serial")?;
            let card = r.card()?;
            let buy = r.buy()?;
            let payment = r.payment()?;
            Request::Sale {
                terminal_id,
                kiosk_serial,
                card,
                buy,
                payment,
                paid_fen: r.num(12, "paid")?,
            }
        }
        "2002" => Request::SaleStatus {
            terminal_id,
            kiosk_serial: r.num(16, "kiosk serial")?,
        },
        "2003" => Request::ConfirmWrite {
            terminal_id,
            kiosk_serial: r.num(16, "kiosk serial")?,
            card_serial: r.text(20, "card serial")?,
            written: match r.text(1, "written")?.as_str() {
                "1" => true,
                "0" => false,
                other => return Err(format!("written {other:?} is not 1 or 0")),
            },
            return_data: r.optional_bytes("return data")?,
        },
        "3001" => Request::Authenticate {
            card_serial: r.text(20, "card serial")?,
            purpose: match r.text(1, "purpose")?.as_str() {
                "E" => AuthPurpose::ExternalAuthenticate,
                "M" => AuthPurpose::CommandMac,
                "V" => AuthPurpose::VerifyCardMac,
                other => return Err(format!("purpose {other:?} is not E, M or V")),
            },
            challenge: r.bytes("challenge")?,
            data: r.bytes("data")?,
        },
        "3002" => Request::CardPassword(r.card()?),
        "4001" | "4002" => {
            let all_business_types = code == "4002";
            let period_id = r.num(10, "period id")?;
            let opened_at = r.text(19, "opened")?;
            let closed_at = r.text(19, "closed")?;
            let count = r.num(2, "total count")?;
            let mut totals = Vec::new();
            for _ in 0..count {
                totals.push(Total {
                    business: match r.num(2, "business")? {
                        1 => Business::CashSale,
                        2 => Business::BankCardSale,
                        3 => Business::CashBillPayment,
                        4 if all_business_types => Business::BankCardBillPayment,
                        other => return Err(format!("business {other:02} is not known to {code}")),
                    },
                    count: r.num(8, "count")? as u32,
                    amount_fen: r.num(14, "amount")?,
                });
            }
            Request::Reconcile {
                all_business_types,
                terminal_id,
                period_id,
                opened_at,
                closed_at,
                totals,
            }
        }
        "5001" => Request::BillQuery(r.text(20, "customer number")?),
        "5002" => Request::BillPay {
            terminal_id,
            kiosk_serial: r.num(16, "kiosk serial")?,
            customer_number: r.text(20, "customer number")?,
            amount_fen: r.num(12, "amount")?,
            payment: r.payment()?,
        },
        "5003" => Request::BillPaymentStatus {
            terminal_id,
            kiosk_serial: r.num(16, "kiosk serial")?,
        },
        other => return Err(format!("unknown transaction code {other:?}")),
    };
    if r.pos != body.len() {
        return Err(format!("{} bytes after the last field", body.len() - r.pos));
    }
    Ok(request)
}

struct Reader<'a> {
    body: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize, what: &str) -> Result<&[u8], String> {
        let field = self
            .body
            .get(self.pos..self.pos + n)
            .ok_or_else(|| format!("{what} is missing (body ends at byte {})", self.body.len()))?;
        self.pos += n;
        Ok(field)
    }

    fn text(&mut self, width: usize, what: &str) -> Result<String, String> {
        let raw = self.take(width, what)?;
        let (text, had_errors) = GB18030.decode_without_bom_handling(raw);
        if had_errors {
            return Err(format!("{what} is not GB18030 text"));
        }
        Ok(text.trim_end_matches(' ').to_string())
    }

    fn num(&mut self, width: usize, what: &str) -> Result<u64, String> {
        let raw = self.take(width, what)?;
        if !raw.iter().all(u8::is_ascii_digit) {
            return Err(format!(
                "{what} {:?} is not {width} digits",
                String::from_utf8_lossy(raw)
            ));
        }
        std::str::from_utf8(raw)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("{what} is out of range"))
    }

    fn bytes(&mut self, what: &str) -> Result<Vec<u8>, String> {
        let n = self.num(3, what)? as usize;
        let raw = self.take(n * 2, what)?;
        hex::decode(raw).map_err(|_| format!("{what} is not hex"))
    }

    fn optional_bytes(&mut self, what: &str) -> Result<Option<Vec<u8>>, String> {
        match self.num(1, what)? {
            0 => Ok(None),
            1 => self.bytes(what).map(Some),
            other => Err(format!("{what} presence flag {other} is not 0 or 1")),
        }
    }

    fn card(&mut self) -> Result<CardInfo, String> {
        Ok(CardInfo {
            card_serial: self.text(20, "card serial")?,
            utility_code: self.text(8, "utility code")?,
            customer_number: self.text(20, "customer number")?,
            meter_number: self.text(20, "meter number")?,
            purchase_count: self.num(6, "purchase count")? as u32,
            pending_fen: self.num(12, "pending fen")?,
            pending_wh: self.num(12, "pending Wh")?,
            return_data: self.optional_bytes("return data")?,
        })
    }

    fn payment(&mut self) -> Result<Payment, String> {
        match self.text(1, "payment")?.as_str() {
            "1" => Ok(Payment::Cash),
            "2" => Ok(Payment::BankCard),
            other => Err(format!("payment {other:?} is not 1 or 2")),
        }
    }

    fn buy(&mut self) -> Result<Buy, String> {
        let kind = self.text(1, "purchase kind")?;
        let quantity = self.num(12, "quantity")?;
        match kind.as_str() {
            "M" => Ok(Buy::Money(quantity)),
            "E" => Ok(Buy::Energy(quantity)),
            other => Err(format!("purchase kind {other:?} is not M or E")),
        }
    }
}

/// Writes a body; values the backend writes always fit (its books hold them), so over-long
/// text is cut on a character boundary rather than refused.
#[derive(Default)]
struct Writer {
    body: Vec<u8>,
}

impl Writer {
    fn raw(&mut self, bytes: &[u8]) {
        self.body.extend_from_slice(bytes);
    }

    fn n(&mut self, value: u64, width: usize) {
        let s = format!("{value:0width$}");
        self.raw(&s.as_bytes()[s.len().saturating_sub(width)..]);
    }

    fn a(&mut self, text: &str, width: usize) {
        let text = truncate_gb(text, width);
        let (bytes, _, _) = GB18030.encode(&text);
        self.raw(&bytes);
        self.body
            .extend(std::iter::repeat_n(b' ', width - bytes.len()));
    }

    fn b(&mut self, bytes: &[u8]) {
        let bytes = &bytes[..bytes.len().min(999)];
        self.n(bytes.len() as u64, 3);
        self.raw(hex::encode_upper(bytes).as_bytes());
    }

    fn frame(self) -> Vec<u8> {
        let mut out = format!("{:04}", self.body.len().min(9999)).into_bytes();
        out.extend_from_slice(&self.body);
        out
    }
}
