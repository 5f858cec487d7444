//! {{name}}: an acquirer dialect for the "DEMO" line protocol, in Rust.
//!
//! Replace the protocol with your acquirer's; keep the rules each function states, which
//! `selfvend plugin test` checks. The DEMO protocol: one request per TCP connection. The kiosk
//! sends one line and the acquirer answers one line, each UTF-8 text ending in "\n", its fields
//! separated by "|". Every line but the sign-on's ends in `|MAC`: 16 hex digits, the MAC of
//! the line's bytes before that "|", made by the PIN pad (`security.mac`) under the MAC key the
//! last sign-on delivered.
//!
//!   SIGNON|terminal|merchant|stan|batch
//!       -> OK|stan|PIN key|its check|MAC key|its check  (hex; keys under the master key)
//!   SALE|terminal|merchant|stan|batch|fen|PAN|expiry|Track 2 hex|PIN block hex or empty|MAC
//!       -> APPROVED|stan|RRN|auth code|fen|MMDDhhmmss|MAC, or DECLINED|stan|code|message|MAC
//!   REVERSAL|terminal|merchant|stan|batch|fen|PAN|expiry|Track 2 hex|NO-ANSWER or CANCELLED|MAC
//!       -> OK|stan|MAC
//!   SETTLE|terminal|merchant|stan|batch|count|fen|MAC   -> OK|stan|count|fen|MAC
//!
//! Any request may get `NO|stan|message|MAC` instead: the acquirer did nothing (a MAC error,
//! sign on first). `stan` in a reply repeats the request's. Money is in fen.
//!
//! Card data never reaches the log: no PAN, no Track 2, no PIN block, however short.
//!
//! WIT errors in Rust: every export returns `Result<_, AcquirerError>`; an imported function's
//! error is its `Err`. A panic traps the instance, which the kiosk treats as a broken plugin.

use exports::selfvend::payment::dialect::{
    AcquirerError, DialectInfo, Guest, PurchaseOutcome, PurchaseRequest, ReversalRequest,
    Settlement, SettlementRequest, SignOnRequest, WorkingKeys,
};
use selfvend::backend::connection::{Connection, NetError};
use selfvend::backend::log::{Level, log};
use selfvend::payment::security;
use selfvend::payment::types::{
    Approval, BankCard, Decline, DeclineCode, ReversalReason, Terminal,
};

// `generate_all`: the world imports `connection` and `log` from the `selfvend:backend` package.
wit_bindgen::generate!({ path: "wit", world: "acquirer-dialect", generate_all });

type Result<T> = std::result::Result<T, AcquirerError>;

/// The longest reply line read; a longer one is malformed.
const MAX_REPLY: usize = 1024;
/// The longest text the kiosk takes in an error or a decline.
const MAX_TEXT: usize = 256;

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

fn malformed(text: String) -> AcquirerError {
    AcquirerError::MalformedReply(fit(&text))
}

fn unknown(text: String) -> AcquirerError {
    AcquirerError::OutcomeUnknown(fit(&text))
}

fn unreachable(text: String) -> AcquirerError {
    AcquirerError::Unreachable(fit(&text))
}

fn refused(text: String) -> AcquirerError {
    AcquirerError::Refused(fit(&text))
}

fn security_failure(text: String) -> AcquirerError {
    AcquirerError::Security(fit(&text))
}

/// The fields of a reply after its first, read in order, each checked and named in any error.
struct Fields {
    command: &'static str,
    fields: Vec<String>,
    next: usize,
}

impl Fields {
    /// The error for the field just read: its place (the first after the reply's kind is 1)
    /// and its name.
    fn bad(&self, name: &str, what: std::fmt::Arguments) -> AcquirerError {
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

    /// Text the kiosk keeps as a reference: not empty, at most 64 bytes.
    fn id(&mut self, name: &str) -> Result<String> {
        let value = self.text(name)?;
        match value.len() {
            0 => Err(self.bad(name, format_args!("empty"))),
            1..=64 => Ok(value),
            n => Err(self.bad(name, format_args!("{n} bytes, over 64"))),
        }
    }

    /// The acquirer's local time, `MMDDhhmmss`.
    fn time(&mut self, name: &str) -> Result<String> {
        let value = self.text(name)?;
        match value.len() == 10 && value.bytes().all(|b| b.is_ascii_digit()) {
            true => Ok(value),
            false => Err(self.bad(name, format_args!("{} is not MMDDhhmmss", quote(&value)))),
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

    fn hex(&mut self, name: &str, len: usize) -> Result<Vec<u8>> {
        let value = self.text(name)?;
        match unhex(&value) {
            Some(bytes) if bytes.len() == len => Ok(bytes),
            _ => Err(self.bad(
                name,
                format_args!("{} is not {len} bytes of hex", quote(&value)),
            )),
        }
    }

    /// The reply's STAN, which must be the request's: a reply to another request says nothing
    /// of this one.
    fn stan(&mut self, stan: u32) -> Result<()> {
        let theirs = self.number("stan")?;
        match theirs == u64::from(stan) {
            true => Ok(()),
            false => Err(self.bad("stan", format_args!("{theirs}, where {stan} was sent"))),
        }
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

fn unhex(text: &str) -> Option<Vec<u8>> {
    let digit = |b: u8| char::from(b).to_digit(16);
    text.as_bytes()
        .chunks(2)
        .map(|p| match p {
            [hi, lo] => Some((digit(*hi)? * 16 + digit(*lo)?) as u8),
            _ => None,
        })
        .collect()
}

/// A request line's text before its MAC. A field holding "|" or a line break could not be sent
/// as itself, so the request is not sent at all; the error names the field, never its value,
/// which may be card data.
fn line(command: &'static str, fields: &[(&str, &str)]) -> Result<String> {
    let mut line = command.to_string();
    for (name, value) in fields {
        if value.contains(['|', '\n', '\r']) {
            return Err(unreachable(format!(
                "{command}: not sent: the {name} holds a \"|\" or a line break"
            )));
        }
        line.push('|');
        line.push_str(value);
    }
    Ok(line)
}

/// `text` and its MAC from the PIN pad. A pad that cannot MAC is `security`: nothing was sent.
fn with_mac(command: &str, text: &str) -> Result<String> {
    let mac = security::mac(text.as_bytes())
        .map_err(|e| security_failure(format!("{command}: the PIN pad could not MAC: {e}")))?;
    Ok(format!("{text}|{}", hex(&mac)))
}

fn net(command: &str, doing: &str, e: NetError) -> String {
    let why = match e {
        NetError::Timeout => "timed out".to_string(),
        NetError::Closed => "the acquirer closed the connection".to_string(),
        NetError::ConnectFailed(s) => format!("could not connect: {s}"),
        NetError::TooLarge => "over the byte cap".to_string(),
        NetError::Io(s) => s,
    };
    format!("{command}: {doing}: {why}")
}

/// Sends `request` and reads one reply line, without its end of line. Until the request is
/// sent, a failure is `unreachable`; after it, the acquirer may have acted, so a failure is
/// `outcome-unknown` (and a purchase is reversed).
fn exchange(command: &'static str, request: String) -> Result<String> {
    let conn = Connection::open().map_err(|e| unreachable(net(command, "connecting", e)))?;
    conn.send(format!("{request}\n").as_bytes())
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
                "{command}: the acquirer closed the connection after {} bytes, before the reply's end of line",
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
    String::from_utf8(reply).map_err(|e| {
        malformed(format!(
            "{command} reply: not UTF-8 at byte {}",
            e.utf8_error().valid_up_to()
        ))
    })
}

/// Sends a MAC'd request and returns the reply's kind and fields once its MAC verifies. A reply
/// whose MAC does not verify may not be the acquirer's: its outcome is unknown.
fn call(command: &'static str, stan: u32, fields: &[(&str, &str)]) -> Result<(String, Fields)> {
    let request = with_mac(command, &line(command, fields)?)?;
    let reply = exchange(command, request)?;
    let (text, mac) = reply
        .rsplit_once('|')
        .ok_or_else(|| malformed(format!("{command} reply: no MAC")))?;
    let ours = security::mac(text.as_bytes()).map_err(|e| {
        unknown(format!(
            "{command}: the PIN pad could not check the reply's MAC: {e}"
        ))
    })?;
    if mac.len() != 16 || !mac.eq_ignore_ascii_case(&hex(&ours)) {
        return Err(unknown(format!(
            "{command}: the reply's MAC does not verify"
        )));
    }
    let mut parts = text.split('|').map(str::to_string);
    let kind = parts.next().unwrap_or_default();
    let mut f = Fields {
        command,
        fields: parts.collect(),
        next: 0,
    };
    // The kind only: a reply carries card data.
    log(
        Level::Info,
        &format!("{command} stan {stan}: {}", short(&kind)),
    );
    if kind == "NO" {
        f.stan(stan)?;
        let message = f.text("message")?;
        f.end()?;
        return Err(refused(message));
    }
    Ok((kind, f))
}

/// A reply's kind as far as the log and errors show it: the acquirer's, but unchecked.
fn short(kind: &str) -> String {
    kind.chars().take(16).collect()
}

fn card_fields<'a>(card: &'a BankCard, track2: &'a str) -> [(&'static str, &'a str); 3] {
    [
        ("card number", &card.pan),
        ("expiry", &card.expiry),
        ("Track 2", track2),
    ]
}

fn terminal_fields(t: &Terminal) -> [(&'static str, &str); 2] {
    [
        ("terminal id", &t.terminal_id),
        ("merchant id", &t.merchant_id),
    ]
}

fn decline_code(code: &str) -> DeclineCode {
    match code {
        "51" => DeclineCode::InsufficientFunds,
        "55" => DeclineCode::WrongPin,
        "75" => DeclineCode::PinTriesExceeded,
        "41" | "43" | "62" => DeclineCode::CardBlocked,
        "14" => DeclineCode::InvalidCard,
        "54" => DeclineCode::ExpiredCard,
        _ => DeclineCode::Other,
    }
}

struct Dialect;

impl Guest for Dialect {
    fn about() -> DialectInfo {
        DialectInfo {
            vendor: "Your Acquirer Software Company".into(),
            name: "{{name}}".into(),
            version: "0.1.0".into(),
        }
    }

    /// Not MAC'd: the keys it fetches are what MACs are made with. They come encrypted under
    /// the PIN pad's master key; the pad checks each against its check value as it loads it.
    fn sign_on(request: SignOnRequest) -> Result<WorkingKeys> {
        let (stan, batch) = (request.stan.to_string(), request.batch.to_string());
        let mut fields = terminal_fields(&request.terminal).to_vec();
        fields.extend([("stan", stan.as_str()), ("batch", batch.as_str())]);
        let reply = exchange("SIGNON", line("SIGNON", &fields)?)?;
        let mut parts = reply.split('|').map(str::to_string);
        let kind = parts.next().unwrap_or_default();
        let mut f = Fields {
            command: "SIGNON",
            fields: parts.collect(),
            next: 0,
        };
        log(
            Level::Info,
            &format!("SIGNON stan {}: {}", request.stan, short(&kind)),
        );
        match kind.as_str() {
            "OK" => {}
            "NO" => {
                f.stan(request.stan)?;
                let message = f.text("message")?;
                f.end()?;
                return Err(refused(message));
            }
            _ => {
                return Err(malformed(format!(
                    "SIGNON reply: starts {:?}, not OK or NO",
                    short(&kind)
                )));
            }
        }
        // The STAN, so that an old sign-on's reply cannot bring back old keys.
        f.stan(request.stan)?;
        let keys = WorkingKeys {
            pin_key: f.hex("PIN key", 16)?,
            pin_key_check: f.hex("PIN key check", 4)?,
            mac_key: f.hex("MAC key", 16)?,
            mac_key_check: f.hex("MAC key check", 4)?,
        };
        f.end()?;
        Ok(keys)
    }

    /// Changes state: the acquirer debits the card.
    fn purchase(request: PurchaseRequest) -> Result<PurchaseOutcome> {
        let (stan, batch) = (request.stan.to_string(), request.batch.to_string());
        let amount = request.amount_fen.to_string();
        let track2 = hex(&request.card.track2);
        let pin_block = hex(request.pin_block.as_deref().unwrap_or_default());
        let mut fields = terminal_fields(&request.terminal).to_vec();
        fields.extend([
            ("stan", stan.as_str()),
            ("batch", &batch),
            ("amount", &amount),
        ]);
        fields.extend(card_fields(&request.card, &track2));
        fields.push(("PIN block", &pin_block));
        let (kind, mut f) = call("SALE", request.stan, &fields)?;
        let outcome = match kind.as_str() {
            "APPROVED" => {
                f.stan(request.stan)?;
                PurchaseOutcome::Approved(Approval {
                    rrn: f.id("RRN")?,
                    auth_code: f.id("auth code")?,
                    amount_fen: f.number("amount")?,
                    acquirer_time: f.time("time")?,
                })
            }
            "DECLINED" => {
                f.stan(request.stan)?;
                let response_code = f.id("response code")?;
                PurchaseOutcome::Declined(Decline {
                    code: decline_code(&response_code),
                    response_code,
                    message: fit(&f.text("message")?),
                })
            }
            other => {
                return Err(malformed(format!(
                    "SALE reply: starts {:?}, not APPROVED, DECLINED or NO",
                    short(other)
                )));
            }
        };
        f.end()?;
        Ok(outcome)
    }

    /// Changes state: the acquirer undoes the purchase. The kiosk sends it until it is
    /// acknowledged, so the acquirer must take a repeat as the same reversal.
    fn reversal(request: ReversalRequest) -> Result<()> {
        let (stan, batch) = (request.stan.to_string(), request.batch.to_string());
        let amount = request.amount_fen.to_string();
        let track2 = hex(&request.card.track2);
        let reason = match request.reason {
            ReversalReason::NoAnswer => "NO-ANSWER",
            ReversalReason::Cancelled => "CANCELLED",
        };
        let mut fields = terminal_fields(&request.terminal).to_vec();
        fields.extend([
            ("stan", stan.as_str()),
            ("batch", &batch),
            ("amount", &amount),
        ]);
        fields.extend(card_fields(&request.card, &track2));
        fields.push(("reason", reason));
        let (kind, mut f) = call("REVERSAL", request.stan, &fields)?;
        if kind != "OK" {
            return Err(malformed(format!(
                "REVERSAL reply: starts {:?}, not OK or NO",
                short(&kind)
            )));
        }
        f.stan(request.stan)?;
        f.end()
    }

    /// Changes state: the acquirer closes the batch.
    fn settle(request: SettlementRequest) -> Result<Settlement> {
        let (stan, batch) = (request.stan.to_string(), request.batch.to_string());
        let (count, amount) = (request.count.to_string(), request.amount_fen.to_string());
        let mut fields = terminal_fields(&request.terminal).to_vec();
        fields.extend([
            ("stan", stan.as_str()),
            ("batch", &batch),
            ("count", &count),
            ("amount", &amount),
        ]);
        let (kind, mut f) = call("SETTLE", request.stan, &fields)?;
        if kind != "OK" {
            return Err(malformed(format!(
                "SETTLE reply: starts {:?}, not OK or NO",
                short(&kind)
            )));
        }
        f.stan(request.stan)?;
        let acquirer_count = f.number32("count")?;
        let acquirer_amount_fen = f.number("amount")?;
        f.end()?;
        Ok(Settlement {
            balanced: (acquirer_count, acquirer_amount_fen) == (request.count, request.amount_fen),
            acquirer_count,
            acquirer_amount_fen,
        })
    }
}

export!(Dialect);
