//! The backend's side of the JSON-over-HTTP/1.1 dialect (docs/dialects/json-http.md).
//! Account queries and reconciliations are answered with chunked bodies, everything else with
//! `Content-Length`, so a client meets both.

use std::io::Read;
use std::net::TcpStream;

use serde::Deserialize;
use serde_json::{Value, json};

use super::Wire;
use super::ledger::{
    Answer, AuthPurpose, Business, Buy, CardInfo, Outcome, Payment, Reason, Request, Status, Total,
};

pub struct JsonHttp;

const MAX_HEAD: usize = 16 * 1024;
const MAX_BODY: usize = 256 * 1024;

impl Wire for JsonHttp {
    fn read_request(&self, stream: &mut TcpStream) -> Result<Request, Vec<u8>> {
        let (path, body) =
            read_http(stream).map_err(|(status, why)| response(status, &why, false))?;
        parse_request(&path, &body).map_err(|why| {
            let envelope = json!({"code": "9999", "message": format!("请求格式错误，交易未处理: {why}"), "data": null});
            response(200, &envelope.to_string(), false)
        })
    }

    fn reply(&self, request: &Request, outcome: &Outcome) -> Vec<u8> {
        let envelope = match outcome {
            Ok(Answer::BuyCheck {
                refusal,
                min_fen,
                max_fen,
            }) => {
                let (code, message) = match refusal {
                    None => ("0000", "可以购电".to_string()),
                    Some(r) => (envelope_code(r.reason), r.message.clone()),
                };
                json!({"code": code, "message": message, "data": {"minFen": min_fen, "maxFen": max_fen}})
            }
            Ok(answer) => {
                let all = matches!(
                    request,
                    Request::Reconcile {
                        all_business_types: true,
                        ..
                    }
                );
                json!({"code": "0000", "message": "交易成功", "data": data(answer, all)})
            }
            Err(r) => json!({"code": envelope_code(r.reason), "message": r.message, "data": null}),
        };
        let chunked = matches!(
            request,
            Request::AccountQuery(_) | Request::Reconcile { .. } | Request::BillQuery(_)
        );
        response(200, &envelope.to_string(), chunked)
    }

    fn flood_header(&self) -> Vec<u8> {
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2000000\r\n\r\n"
            .to_vec()
    }

    fn name(&self) -> &'static str {
        "json-http"
    }
}

fn data(answer: &Answer, all_business_types: bool) -> Value {
    match answer {
        Answer::Done | Answer::BuyCheck { .. } => Value::Null,
        Answer::Account(a) => json!({
            "customerNumber": a.customer_number,
            "customerName": a.customer_name,
            "address": a.address,
            "meterNumber": a.meter_number,
            "cardSerial": a.card_serial,
            "status": match a.status {
                Status::Active => "active",
                Status::Closed => "closed",
                Status::Suspended => "suspended",
            },
            "purchaseCount": a.purchase_count,
            "priceFenPerKwh": a.price_fen_per_kwh,
            "arrearsFen": a.arrears_fen,
            "lastPurchase": a.last_purchase.as_ref().map(|p| json!({
                "amountFen": p.amount_fen,
                "energyWh": p.energy_wh,
                "at": p.at,
                "place": p.place,
            })),
        }),
        Answer::Grant(g) => json!({
            "saleId": g.sale_id,
            "purchaseCount": g.purchase_count,
            "amountFen": g.amount_fen,
            "energyWh": g.energy_wh,
            "token": hex::encode_upper(&g.token),
        }),
        // Both byte answers share one shape; the call decides the name.
        Answer::Bytes(b) => {
            json!({"result": hex::encode_upper(b), "password": hex::encode_upper(b)})
        }
        Answer::Reconciled(r) => json!({
            "matched": r.matched,
            // `reconcile` (contract 1.0) never carries the fourth business type.
            "totals": r.totals.iter()
                .filter(|t| all_business_types || t.business != Business::BankCardBillPayment)
                .map(|t| json!({
                "business": business_name(t.business),
                "count": t.count,
                "amountFen": t.amount_fen,
            })).collect::<Vec<_>>(),
            "differences": r.differences,
        }),
        Answer::Quote(q) => json!({
            "amountFen": q.amount_fen,
            "arrearsFen": q.arrears_fen,
            "electricityFen": q.electricity.electricity_fen,
            "energyWh": q.electricity.energy_wh,
            "steps": q.electricity.parts.iter().map(|p| json!({
                "energyWh": p.energy_wh,
                "priceFenPerKwh": p.price_fen_per_kwh,
                "amountFen": p.amount_fen,
            })).collect::<Vec<_>>(),
        }),
        Answer::Bills(b) => json!({
            "customerNumber": b.customer_number,
            "customerName": b.customer_name,
            "address": b.address,
            "bills": b.bills.iter().map(|bill| json!({
                "billId": bill.bill_id,
                "period": bill.period,
                "amountFen": bill.amount_fen,
                "lateFeeFen": bill.late_fee_fen,
            })).collect::<Vec<_>>(),
            "totalFen": b.total_fen,
        }),
        Answer::BillReceipt(r) => json!({
            "paymentId": r.payment_id,
            "amountFen": r.amount_fen,
            "remainingFen": r.remaining_fen,
        }),
    }
}

fn envelope_code(reason: Reason) -> &'static str {
    match reason {
        Reason::UnknownCard => "1001",
        Reason::AccountClosed => "1002",
        Reason::Arrears => "1003",
        Reason::CreditNotTaken => "1004",
        Reason::OverLimit => "1005",
        Reason::CardMismatch => "1006",
        Reason::Other => "1007",
        Reason::SaleNotFound => "2001",
        Reason::NotSupported => "9001",
        Reason::SystemError => "9999",
    }
}

fn business_name(b: Business) -> &'static str {
    match b {
        Business::CashSale => "cash-sale",
        Business::BankCardSale => "bank-card-sale",
        Business::CashBillPayment => "cash-bill-payment",
        Business::BankCardBillPayment => "bank-card-bill-payment",
    }
}

fn response(status: u16, body: &str, chunked: bool) -> Vec<u8> {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        413 => "Payload Too Large",
        _ => "Error",
    };
    if chunked {
        return chunked_bytes(status, reason, body.as_bytes());
    }
    format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json; charset=utf-8\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// A chunked response in 64-byte chunks, some cut inside a character, as real servers do.
fn chunked_bytes(status: u16, reason: &str, body: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json; charset=utf-8\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    .into_bytes();
    for part in body.chunks(64) {
        out.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
        out.extend_from_slice(part);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

/// Reads one request: its path and body. Errors carry the HTTP status to answer with.
fn read_http(stream: &mut TcpStream) -> Result<(String, Vec<u8>), (u16, String)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(&buf) {
            Ok(httparse::Status::Complete(head_len)) => {
                if req.method != Some("POST") {
                    return Err((400, "only POST".into()));
                }
                let path = req.path.unwrap_or_default().to_string();
                let length = req
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                    .and_then(|h| {
                        std::str::from_utf8(h.value)
                            .ok()?
                            .trim()
                            .parse::<usize>()
                            .ok()
                    })
                    .ok_or((400, "Content-Length is required".to_string()))?;
                if length > MAX_BODY {
                    return Err((413, "body too large".into()));
                }
                let mut body = buf[head_len..].to_vec();
                while body.len() < length {
                    let n = stream
                        .read(&mut chunk)
                        .map_err(|e| (400, format!("reading the body: {e}")))?;
                    if n == 0 {
                        return Err((400, "body ends early".into()));
                    }
                    body.extend_from_slice(&chunk[..n]);
                }
                body.truncate(length);
                return Ok((path, body));
            }
            Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => {
                let n = stream
                    .read(&mut chunk)
                    .map_err(|e| (400, format!("reading the head: {e}")))?;
                if n == 0 {
                    return Err((400, "request ends early".into()));
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            Ok(httparse::Status::Partial) => return Err((400, "request head too large".into())),
            Err(e) => return Err((400, format!("bad request: {e}"))),
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CardJson {
    card_serial: String,
    utility_code: String,
    customer_number: String,
    meter_number: String,
    purchase_count: u32,
    pending_fen: u64,
    pending_wh: u64,
    return_data: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PurchaseJson {
    kind: String,
    amount: u64,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TotalJson {
    business: String,
    count: u32,
    amount_fen: u64,
}

fn parse_request(path: &str, body: &[u8]) -> Result<Request, String> {
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("body is not JSON: {e}"))?;
    let field = |name: &str| v.get(name).cloned().ok_or(format!("{name} is missing"));
    let get = |name: &str| -> Result<Value, String> { field(name) };
    fn typed<T: serde::de::DeserializeOwned>(name: &str, v: Value) -> Result<T, String> {
        serde_json::from_value(v).map_err(|e| format!("{name}: {e}"))
    }
    let card = || -> Result<CardInfo, String> {
        let c: CardJson = typed("card", get("card")?)?;
        Ok(CardInfo {
            card_serial: c.card_serial,
            utility_code: c.utility_code,
            customer_number: c.customer_number,
            meter_number: c.meter_number,
            purchase_count: c.purchase_count,
            pending_fen: c.pending_fen,
            pending_wh: c.pending_wh,
            return_data: c
                .return_data
                .map(|h| hex::decode(h).map_err(|_| "card.returnData is not hex".to_string()))
                .transpose()?,
        })
    };
    let buy = || -> Result<Buy, String> {
        let p: PurchaseJson = typed("purchase", get("purchase")?)?;
        match p.kind.as_str() {
            "money" => Ok(Buy::Money(p.amount)),
            "energy" => Ok(Buy::Energy(p.amount)),
            other => Err(format!("purchase.kind {other:?} is not money or energy")),
        }
    };
    let payment = || -> Result<Payment, String> {
        match typed::<String>("payment", get("payment")?)?.as_str() {
            "cash" => Ok(Payment::Cash),
            "bank-card" => Ok(Payment::BankCard),
            other => Err(format!("payment {other:?} is not cash or bank-card")),
        }
    };
    let bytes = |name: &str| -> Result<Vec<u8>, String> {
        hex::decode(typed::<String>(name, get(name)?)?).map_err(|_| format!("{name} is not hex"))
    };
    let call = path
        .strip_prefix("/api/v1/")
        .ok_or(format!("path {path:?} is not under /api/v1/"))?;
    Ok(match call {
        "ping" => Request::Ping,
        "account-query" => Request::AccountQuery(card()?),
        "can-buy" => Request::CanBuy(card()?, buy()?),
        "sale" => Request::Sale {
            terminal_id: typed("terminalId", get("terminalId")?)?,
            kiosk_serial: typed("kioskSerial", get("kioskSerial")?)?,
            card: card()?,
            buy: buy()?,
            payment: payment()?,
            paid_fen: typed("paidFen", get("paidFen")?)?,
        },
        "quote" => Request::Quote(card()?, buy()?),
        "bill-query" => Request::BillQuery(typed("customerNumber", get("customerNumber")?)?),
        "bill-pay" => Request::BillPay {
            terminal_id: typed("terminalId", get("terminalId")?)?,
            kiosk_serial: typed("kioskSerial", get("kioskSerial")?)?,
            customer_number: typed("customerNumber", get("customerNumber")?)?,
            amount_fen: typed("amountFen", get("amountFen")?)?,
            payment: payment()?,
        },
        "bill-payment-status" => Request::BillPaymentStatus {
            terminal_id: typed("terminalId", get("terminalId")?)?,
            kiosk_serial: typed("kioskSerial", get("kioskSerial")?)?,
        },
        "sale-status" => Request::SaleStatus {
            terminal_id: typed("terminalId", get("terminalId")?)?,
            kiosk_serial: typed("kioskSerial", get("kioskSerial")?)?,
        },
        "confirm-write" => Request::ConfirmWrite {
            terminal_id: typed("terminalId", get("terminalId")?)?,
            kiosk_serial: typed("kioskSerial", get("kioskSerial")?)?,
            card_serial: typed("cardSerial", get("cardSerial")?)?,
            written: typed("written", get("written")?)?,
            return_data: match v.get("returnData") {
                None | Some(Value::Null) => None,
                Some(_) => Some(bytes("returnData")?),
            },
        },
        "authenticate" => Request::Authenticate {
            card_serial: typed("cardSerial", get("cardSerial")?)?,
            purpose: match typed::<String>("purpose", get("purpose")?)?.as_str() {
                "external-authenticate" => AuthPurpose::ExternalAuthenticate,
                "command-mac" => AuthPurpose::CommandMac,
                "verify-card-mac" => AuthPurpose::VerifyCardMac,
                other => return Err(format!("purpose {other:?} is unknown")),
            },
            challenge: bytes("challenge")?,
            data: bytes("data")?,
        },
        "card-password" => Request::CardPassword(card()?),
        "reconcile" | "reconcile-period" => {
            let all_business_types = call == "reconcile-period";
            let totals: Vec<TotalJson> = typed("totals", get("totals")?)?;
            Request::Reconcile {
                all_business_types,
                terminal_id: typed("terminalId", get("terminalId")?)?,
                period_id: typed("periodId", get("periodId")?)?,
                opened_at: typed("openedAt", get("openedAt")?)?,
                closed_at: typed("closedAt", get("closedAt")?)?,
                totals: totals
                    .into_iter()
                    .map(|t| {
                        Ok(Total {
                            business: match t.business.as_str() {
                                "cash-sale" => Business::CashSale,
                                "bank-card-sale" => Business::BankCardSale,
                                "cash-bill-payment" => Business::CashBillPayment,
                                "bank-card-bill-payment" if all_business_types => {
                                    Business::BankCardBillPayment
                                }
                                other => {
                                    return Err(format!("business {other:?} is unknown to {call}"));
                                }
                            },
                            count: t.count,
                            amount_fen: t.amount_fen,
                        })
                    })
                    .collect::<Result<_, String>>()?,
            }
        }
        other => return Err(format!("no call named {other:?}")),
    })
}
