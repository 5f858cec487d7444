//! A bank-card acquirer (收单机构) on loopback, speaking CUP-8583 (docs/acquirers/iso8583.md):
//! sign-on with fresh working keys wrapped under the terminal master key, purchases that debit
//! cards in its own in-memory books (once per terminal, batch and STAN, however often they are
//! sent), reversals, and batch settlement. It checks what the simulated PIN pad makes: every
//! terminal's master key is [`TEST_MASTER_KEY`], PIN blocks are ISO 9564 format 0 under the PIN
//! key, and every request but a sign-on carries an ISO 9797-1 MAC under the MAC key. Tests can
//! make it misbehave once per message type (after it has acted, as a real acquirer whose answer
//! is lost has), or refuse connections.

mod iso8583;

use std::collections::{HashMap, VecDeque};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use iso8583::{MAC_FIELD, Message};

use crate::encryption_machine::retail_mac_full;
use crate::pin_pad::{TEST_MASTER_KEY, decode_pin_block, tdes_encrypt, wrap_key};

/// The requests the acquirer serves, to aim faults at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageType {
    /// 0800 / 0810.
    SignOn,
    /// 0200 / 0210.
    Purchase,
    /// 0400 / 0410.
    Reversal,
    /// 0500 / 0510.
    Settlement,
}

impl MessageType {
    fn of(mti: u16) -> Option<MessageType> {
        Some(match mti {
            800 => MessageType::SignOn,
            200 => MessageType::Purchase,
            400 => MessageType::Reversal,
            500 => MessageType::Settlement,
            _ => return None,
        })
    }

    /// The message kind the request's field 60 must start with.
    fn kind_code(self) -> &'static str {
        match self {
            MessageType::SignOn => "00",
            MessageType::Purchase => "22",
            MessageType::Reversal => "23",
            MessageType::Settlement => "50",
        }
    }
}

/// A way to misbehave on one request. The acquirer always acts on the request first, so a
/// kiosk that sees a fault cannot know whether the card was debited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Act, wait this long, then answer.
    Delay(Duration),
    /// Act, then close without answering.
    DropReply,
    /// Act, then send the answer twice (a reader must take only the first).
    ReplyTwice,
    /// Act, then send bytes that are not the protocol.
    Garbage,
    /// Act, then send the first half of the answer and close.
    Truncate,
    /// Act, then answer with a wrong MAC. A sign-on's answer has no MAC: it gets a wrong check
    /// value for the PIN key instead, which the PIN pad must refuse.
    BadMac,
}

/// What became of a purchase.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PurchaseState {
    Approved,
    /// Refused with this response code; nothing was debited.
    Declined {
        response_code: String,
    },
    /// Approved, then reversed: the money is back on the card.
    Reversed,
}

/// One purchase the acquirer decided, as tests see it (never with the full PAN).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PurchaseRecord {
    pub terminal: String,
    pub batch: u32,
    pub stan: u32,
    pub pan_masked: String,
    pub amount_fen: u64,
    pub state: PurchaseState,
}

/// A batch settlement the acquirer answered: its own totals of the batch, and whether the
/// terminal's agreed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettlementRecord {
    pub terminal: String,
    pub batch: u32,
    pub count: u64,
    pub amount_fen: u64,
    pub balanced: bool,
}

/// Wrong PINs in a row after which a card's PIN is locked for good.
const PIN_TRIES: u32 = 3;

/// Seeds the working keys. TEST KEY ONLY: keys are derived from a counter so runs repeat.
const KEY_SEED: [u8; 16] = *b"acquirer-wk-seed";

const GARBAGE: &[u8] = b"\x00\xff\xfe<<NOT 8583>>\r\n\x1b[2J\x07";

struct Card {
    pin: String,
    balance_fen: u64,
    blocked: bool,
    expired: bool,
    wrong_pins: u32,
}

/// A terminal's sign-on: its open batch and current working keys.
struct Session {
    batch: u32,
    pin_key: [u8; 16],
    mac_key: [u8; 16],
}

/// A decided purchase with what is needed to answer it again.
struct Purchase {
    terminal: String,
    batch: u32,
    stan: u32,
    pan: String,
    amount_fen: u64,
    response_code: &'static str,
    /// Retrieval reference number and authorization code, when approved.
    approval: Option<(String, String)>,
    at: LocalTime,
    reversed: bool,
}

impl Purchase {
    fn is(&self, terminal: &str, batch: u32, stan: u32) -> bool {
        self.terminal == terminal && self.batch == batch && self.stan == stan
    }

    fn counts(&self) -> bool {
        self.approval.is_some() && !self.reversed
    }

    /// Writes this purchase's outcome into a 0210.
    fn answer(&self, answer: &mut Message) {
        answer
            .set(4, format!("{:012}", self.amount_fen))
            .set(12, self.at.time())
            .set(13, self.at.date())
            .set(39, self.response_code);
        if let Some((rrn, auth_code)) = &self.approval {
            answer.set(37, rrn.as_str()).set(38, auth_code.as_str());
        }
    }

    fn record(&self) -> PurchaseRecord {
        PurchaseRecord {
            terminal: self.terminal.clone(),
            batch: self.batch,
            stan: self.stan,
            pan_masked: mask(&self.pan),
            amount_fen: self.amount_fen,
            state: match (self.approval.is_some(), self.reversed) {
                (true, false) => PurchaseState::Approved,
                (true, true) => PurchaseState::Reversed,
                (false, _) => PurchaseState::Declined {
                    response_code: self.response_code.into(),
                },
            },
        }
    }
}

/// The card fields of a purchase or reversal, checked against the spec.
struct CardFields {
    stan: u32,
    pan: String,
    amount_fen: u64,
    /// Year and month the card is valid through.
    expiry: (u16, u8),
    pin_block: Option<[u8; 8]>,
}

impl CardFields {
    /// `None` when a field the message needs is missing or not one the spec allows.
    fn parse(request: &Message, kind: MessageType) -> Option<CardFields> {
        let is = |field: u8, value: &str| request.text(field) == Some(value);
        let pan = request.text(2).filter(|p| !p.is_empty())?.to_string();
        let pin_entered = match request.text(22)? {
            "051" => true,
            "052" => false,
            _ => return None,
        };
        let common = is(3, "000000") && is(25, "00") && is(49, "156");
        let specific = match kind {
            MessageType::Purchase => {
                let track2_matches = request
                    .text(35)
                    .and_then(|t| t.strip_prefix(pan.as_str()))
                    .is_some_and(|rest| rest.starts_with('D'));
                let pin_fields =
                    request.get(52).is_some() && is(26, "12") && is(53, "2600000000000000");
                let no_pin_fields = [26, 52, 53].iter().all(|&f| request.get(f).is_none());
                track2_matches
                    && if pin_entered {
                        pin_fields
                    } else {
                        no_pin_fields
                    }
            }
            MessageType::Reversal => is(39, "98") || is(39, "06"),
            MessageType::SignOn | MessageType::Settlement => false,
        };
        if !(common && specific) {
            return None;
        }
        let pin_block = match (kind, request.get(52)) {
            (MessageType::Purchase, Some(b)) => Some(b.try_into().ok()?),
            _ => None,
        };
        Some(CardFields {
            stan: u32::try_from(request.number(11)?).ok()?,
            pan,
            amount_fen: request.number(4)?,
            expiry: expiry_of(request.text(14)?)?,
            pin_block,
        })
    }
}

/// A card expiry `YYMM` as year and month (YY below 50 is 20YY, as EMV reads it).
fn expiry_of(yymm: &str) -> Option<(u16, u8)> {
    let yy: u16 = yymm.get(..2)?.parse().ok()?;
    let mm: u8 = yymm.get(2..)?.parse().ok()?;
    let year = if yy < 50 { 2000 + yy } else { 1900 + yy };
    (yymm.len() == 4 && (1..=12).contains(&mm)).then_some((year, mm))
}

/// The first six and last four digits, the rest starred.
fn mask(pan: &str) -> String {
    match (
        pan.get(..6),
        pan.len().checked_sub(4).and_then(|n| pan.get(n..)),
    ) {
        (Some(head), Some(tail)) if pan.len() >= 10 => {
            format!("{head}{}{tail}", "*".repeat(pan.len() - 10))
        }
        _ => "*".repeat(pan.len()),
    }
}

/// A fresh double-length working key from a counter, with odd parity as an HSM issues it.
fn working_key(tag: u8, counter: u64) -> [u8; 16] {
    let mut key = [0u8; 16];
    for (half, out) in key.chunks_mut(8).enumerate() {
        let mut block = [0u8; 8];
        block[0] = tag;
        block[1] = half as u8;
        block[2..].copy_from_slice(&counter.to_be_bytes()[2..]);
        out.copy_from_slice(&tdes_encrypt(&KEY_SEED, block));
    }
    key.map(|b| if b.count_ones() % 2 == 1 { b } else { b ^ 1 })
}

/// The acquirer's books: cards, terminals' sign-ons and every purchase decided.
#[derive(Default)]
struct Books {
    cards: HashMap<String, Card>,
    sessions: HashMap<String, Session>,
    purchases: Vec<Purchase>,
    /// The month cards are checked against, when a test has set one.
    today: Option<(u16, u8)>,
    keys_issued: u64,
    references_issued: u64,
    sign_ons: u32,
    settlements: Vec<SettlementRecord>,
    reversals_received: u32,
    /// The response code for a reversal whose purchase the acquirer never saw (`00` when
    /// unset; many acquirers answer `25`, unable to locate the original).
    unknown_reversal_code: Option<&'static str>,
    /// While set, every reversal is refused with this code and nothing is done.
    refuse_reversals: Option<&'static str>,
}

/// An answer before it is signed, with the key to sign it (none on 0810, and none when the
/// terminal never signed on).
struct Reply {
    message: Message,
    mac_key: Option<[u8; 16]>,
}

impl Reply {
    /// The framed answer, its MAC (or, on a sign-on, its PIN key check value) spoiled when
    /// `bad_mac`. `None` only if the answer cannot be encoded.
    fn sign(self, bad_mac: bool) -> Option<Vec<u8>> {
        let mut message = self.message;
        match self.mac_key {
            Some(key) => {
                let mut mac = retail_mac_full(&key, [0; 8], &message.mac_input().ok()?);
                if bad_mac {
                    mac[0] ^= 0xFF;
                }
                message.set(MAC_FIELD, mac);
            }
            None if bad_mac => {
                if let Some(keys) = message.get(62) {
                    let mut keys = keys.to_vec();
                    if let Some(pin_key_check) = keys.get_mut(16) {
                        *pin_key_check ^= 0xFF;
                    }
                    message.set(62, keys);
                }
            }
            None => {}
        }
        message.frame().ok()
    }
}

impl Books {
    /// The answer to a decoded request, having acted on it; `None` when it cannot be answered
    /// (no terminal id, STAN or merchant id to echo, or a message type this dialect lacks).
    fn answer(&mut self, request: &Message, now: LocalTime) -> Option<Reply> {
        let kind = MessageType::of(request.mti)?;
        let terminal = request.text(41)?;
        request.get(11)?;
        request.get(42)?;
        let mut answer = Message::answer_to(request);
        answer
            .echo(request, &[11, 41, 42, 60])
            .set(12, now.time())
            .set(13, now.date());
        if kind == MessageType::SignOn {
            self.sign_on(terminal, request, &mut answer);
            return Some(Reply {
                message: answer,
                mac_key: None,
            });
        }
        if kind != MessageType::Settlement {
            answer.echo(request, &[3, 4]);
        }
        let Some(session) = self.sessions.get(terminal) else {
            answer.set(39, "77");
            return Some(Reply {
                message: answer,
                mac_key: None,
            });
        };
        let (pin_key, mac_key, open_batch) = (session.pin_key, session.mac_key, session.batch);
        let mac_ok = match (request.get(MAC_FIELD), request.mac_input()) {
            (Some(mac), Ok(input)) => retail_mac_full(&mac_key, [0; 8], &input) == mac,
            _ => false,
        };
        let batch = request.text(60).and_then(|f| {
            let digits = f.strip_prefix(kind.kind_code())?;
            (digits.len() == 6 && digits.bytes().all(|b| b.is_ascii_digit()))
                .then(|| digits.parse::<u32>().ok())?
        });
        match (mac_ok, batch) {
            (false, _) => {
                answer.set(39, "A0");
            }
            (true, None) => {
                answer.set(39, "30");
            }
            // A reversal may name an earlier batch: one owed from before a sign-on still counts.
            (true, Some(b))
                if b > open_batch || (b != open_batch && kind != MessageType::Reversal) =>
            {
                answer.set(39, "77");
            }
            (true, Some(batch)) => match kind {
                MessageType::Purchase => {
                    self.purchase(terminal, batch, pin_key, request, &mut answer, now);
                }
                MessageType::Reversal => self.reverse(terminal, batch, request, &mut answer),
                MessageType::Settlement => self.settle(terminal, batch, request, &mut answer),
                MessageType::SignOn => unreachable!("a sign-on is answered above"),
            },
        }
        Some(Reply {
            message: answer,
            mac_key: Some(mac_key),
        })
    }

    /// 0800: opens the batch in field 60 and issues fresh keys.
    fn sign_on(&mut self, terminal: &str, request: &Message, answer: &mut Message) {
        let batch = request.text(60).and_then(|f| {
            let rest = f.strip_prefix("00")?;
            let (digits, keys) = rest.split_at_checked(6)?;
            let ok = digits.bytes().all(|b| b.is_ascii_digit()) && matches!(keys, "" | "003");
            ok.then(|| digits.parse::<u32>().ok())?
        });
        let Some(batch) = batch else {
            answer.set(39, "30");
            return;
        };
        self.keys_issued += 1;
        let pin_key = working_key(b'P', self.keys_issued);
        let mac_key = working_key(b'M', self.keys_issued);
        let mut field62 = Vec::with_capacity(40);
        for key in [pin_key, mac_key] {
            let (wrapped, check) = wrap_key(&TEST_MASTER_KEY, &key);
            field62.extend(wrapped);
            field62.extend(check);
        }
        self.sessions.insert(
            terminal.into(),
            Session {
                batch,
                pin_key,
                mac_key,
            },
        );
        self.sign_ons += 1;
        answer.set(39, "00").set(62, field62);
    }

    /// 0200: debits the card unless it declines; a STAN already decided gets its first answer.
    fn purchase(
        &mut self,
        terminal: &str,
        batch: u32,
        pin_key: [u8; 16],
        request: &Message,
        answer: &mut Message,
        now: LocalTime,
    ) {
        let Some(f) = CardFields::parse(request, MessageType::Purchase) else {
            answer.set(39, "30");
            return;
        };
        if let Some(done) = self
            .purchases
            .iter()
            .find(|p| p.is(terminal, batch, f.stan))
        {
            done.answer(answer);
            return;
        }
        let today = self.today.unwrap_or((now.year, now.month));
        let response_code = self.decide(&f, &pin_key, today);
        let approval = (response_code == "00").then(|| {
            self.references_issued += 1;
            let n = self.references_issued;
            (format!("{n:012}"), format!("{:06}", n % 1_000_000))
        });
        let purchase = Purchase {
            terminal: terminal.into(),
            batch,
            stan: f.stan,
            pan: f.pan,
            amount_fen: f.amount_fen,
            response_code,
            approval,
            at: now,
            reversed: false,
        };
        purchase.answer(answer);
        self.purchases.push(purchase);
    }

    /// The response code for a new purchase, debiting the card when it is `00`.
    fn decide(&mut self, f: &CardFields, pin_key: &[u8; 16], today: (u16, u8)) -> &'static str {
        if f.amount_fen == 0 {
            return "13";
        }
        let Some(card) = self.cards.get_mut(&f.pan) else {
            return "14";
        };
        if card.blocked {
            return "62";
        }
        if card.expired || f.expiry < today {
            return "54";
        }
        if card.wrong_pins >= PIN_TRIES {
            return "75";
        }
        if let Some(block) = &f.pin_block {
            // A format 0 block binds 12 PAN digits; a shorter PAN cannot have made one.
            let pin = (f.pan.len() >= 13)
                .then(|| decode_pin_block(pin_key, &f.pan, block))
                .flatten();
            if pin.as_deref() == Some(card.pin.as_str()) {
                card.wrong_pins = 0;
            } else {
                card.wrong_pins += 1;
                return if card.wrong_pins >= PIN_TRIES {
                    "75"
                } else {
                    "55"
                };
            }
        }
        if card.balance_fen < f.amount_fen {
            return "51";
        }
        card.balance_fen -= f.amount_fen;
        "00"
    }

    /// 0400: credits an approved, unreversed purchase back; acknowledged either way.
    fn reverse(&mut self, terminal: &str, batch: u32, request: &Message, answer: &mut Message) {
        let Some(f) = CardFields::parse(request, MessageType::Reversal) else {
            answer.set(39, "30");
            return;
        };
        if let Some(code) = self.refuse_reversals {
            answer.set(39, code);
            return;
        }
        self.reversals_received += 1;
        let known = self.purchases.iter().any(|p| p.is(terminal, batch, f.stan));
        if let (false, Some(code)) = (known, self.unknown_reversal_code) {
            answer.set(39, code);
            return;
        }
        let mut rrn = None;
        if let Some(p) = self
            .purchases
            .iter_mut()
            .find(|p| p.is(terminal, batch, f.stan))
        {
            if p.counts() {
                p.reversed = true;
                if let Some(card) = self.cards.get_mut(&p.pan) {
                    card.balance_fen = card.balance_fen.saturating_add(p.amount_fen);
                }
            }
            rrn = p.approval.as_ref().map(|(rrn, _)| rrn.clone());
        }
        let rrn = rrn.unwrap_or_else(|| {
            self.references_issued += 1;
            format!("{:012}", self.references_issued)
        });
        answer.set(37, rrn).set(39, "00");
    }

    /// 0500: the batch's approved, unreversed purchases against the terminal's totals.
    fn settle(&mut self, terminal: &str, batch: u32, request: &Message, answer: &mut Message) {
        let Some(theirs) = request
            .text(48)
            .filter(|t| t.len() == 15 && t.bytes().all(|b| b.is_ascii_digit()))
        else {
            answer.set(39, "30");
            return;
        };
        let (amount, count) = self
            .purchases
            .iter()
            .filter(|p| p.terminal == terminal && p.batch == batch && p.counts())
            .fold((0u64, 0u64), |(a, n), p| {
                (a.saturating_add(p.amount_fen), n + 1)
            });
        let ours = format!("{:012}{:03}", amount.min(999_999_999_999), count.min(999));
        self.settlements.push(SettlementRecord {
            terminal: terminal.to_string(),
            batch,
            count,
            amount_fen: amount,
            balanced: ours == theirs,
        });
        let balanced = if ours == theirs { '1' } else { '2' };
        answer.set(48, format!("{ours}{balanced}")).set(39, "00");
    }
}

/// The acquirer's local time: Beijing (UTC+8, no daylight saving).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct LocalTime {
    year: u16,
    month: u8,
    day: u8,
    hour: u8,
    minute: u8,
    second: u8,
}

impl LocalTime {
    fn now() -> LocalTime {
        let unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        LocalTime::from_unix(unix + 8 * 3600)
    }

    /// Civil date and time of seconds since 1970 (H. Hinnant's `civil_from_days`).
    fn from_unix(secs: u64) -> LocalTime {
        let (days, rem) = (secs / 86_400, secs % 86_400);
        let z = days + 719_468;
        let era = z / 146_097;
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        let year = yoe + era * 400 + u64::from(month <= 2);
        LocalTime {
            year: u16::try_from(year).unwrap_or(u16::MAX),
            month: month as u8,
            day: day as u8,
            hour: (rem / 3600) as u8,
            minute: (rem / 60 % 60) as u8,
            second: (rem % 60) as u8,
        }
    }

    /// Field 12, `hhmmss`.
    fn time(&self) -> String {
        format!("{:02}{:02}{:02}", self.hour, self.minute, self.second)
    }

    /// Field 13, `MMDD`.
    fn date(&self) -> String {
        format!("{:02}{:02}", self.month, self.day)
    }
}

/// State shared by the listener, the connections and the handle.
struct Shared {
    books: Mutex<Books>,
    /// One-shot faults, used in order by the next requests of each type.
    faults: Mutex<HashMap<MessageType, VecDeque<Fault>>>,
    listening: Mutex<Listening>,
    listening_changed: Condvar,
    stopping: AtomicBool,
}

/// Whether the listener should refuse connections, and whether it has closed its socket.
#[derive(Default)]
struct Listening {
    refusing: bool,
    closed: bool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicking connection thread must not take the whole simulator down with it.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A running acquirer on a loopback port. Dropping it stops the listener.
pub struct Acquirer {
    shared: Arc<Shared>,
    address: SocketAddr,
    thread: Option<JoinHandle<()>>,
}

impl Acquirer {
    /// Starts an acquirer with no cards on a free loopback port.
    pub fn start() -> std::io::Result<Acquirer> {
        let listener = TcpListener::bind(("127.0.0.1", 0))?;
        let address = listener.local_addr()?;
        let shared = Arc::new(Shared {
            books: Mutex::default(),
            faults: Mutex::default(),
            listening: Mutex::default(),
            listening_changed: Condvar::new(),
            stopping: AtomicBool::new(false),
        });
        let thread = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("acquirer".into())
                .spawn(move || serve(&shared, listener))?
        };
        Ok(Acquirer {
            shared,
            address,
            thread: Some(thread),
        })
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Issues a card (or reissues it: unblocked, unexpired, all PIN tries back).
    pub fn add_card(&self, pan: &str, pin: &str, balance_fen: u64) {
        let card = Card {
            pin: pin.into(),
            balance_fen,
            blocked: false,
            expired: false,
            wrong_pins: 0,
        };
        lock(&self.shared.books).cards.insert(pan.into(), card);
    }

    /// Blocks a card: purchases are declined `62`. A PAN never added is ignored.
    pub fn block(&self, pan: &str) {
        if let Some(card) = lock(&self.shared.books).cards.get_mut(pan) {
            card.blocked = true;
        }
    }

    /// Expires a card whatever expiry the terminal sends: purchases are declined `54`. A PAN
    /// never added is ignored.
    pub fn expire(&self, pan: &str) {
        if let Some(card) = lock(&self.shared.books).cards.get_mut(pan) {
            card.expired = true;
        }
    }

    /// The month expiries (field 14) are checked against, instead of the clock's; a card is
    /// valid through the end of its expiry month.
    pub fn set_today(&self, year: u16, month: u8) {
        lock(&self.shared.books).today = Some((year, month));
    }

    /// A card's balance in fen.
    pub fn balance(&self, pan: &str) -> Option<u64> {
        lock(&self.shared.books)
            .cards
            .get(pan)
            .map(|c| c.balance_fen)
    }

    /// Misbehaves once on the next request of type `message` (faults queue in order).
    pub fn inject(&self, message: MessageType, fault: Fault) {
        lock(&self.shared.faults)
            .entry(message)
            .or_default()
            .push_back(fault);
    }

    /// Clears every fault not yet used.
    pub fn clear_faults(&self) {
        lock(&self.shared.faults).clear();
    }

    /// Refuses connections (the listening socket is closed) until called with `false`.
    /// Returns once the listener is closed, or listening again.
    pub fn refuse_connections(&self, refuse: bool) {
        lock(&self.shared.listening).refusing = refuse;
        self.shared.listening_changed.notify_all();
        if refuse {
            // Wake the accept loop so it closes its socket now.
            let _ = TcpStream::connect_timeout(&self.address, Duration::from_millis(200));
        }
        let mut listening = lock(&self.shared.listening);
        while listening.closed != refuse && !self.shared.stopping.load(Ordering::SeqCst) {
            listening = self
                .shared
                .listening_changed
                .wait(listening)
                .unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Every purchase decided, in arrival order (repeats of a STAN are not new purchases).
    pub fn purchases(&self) -> Vec<PurchaseRecord> {
        let books = lock(&self.shared.books);
        books.purchases.iter().map(Purchase::record).collect()
    }

    /// Reversals the acquirer accepted (MAC and batch good), whether or not they found a
    /// purchase to reverse.
    pub fn reversals_received(&self) -> u32 {
        lock(&self.shared.books).reversals_received
    }

    /// The acquirer restarts and forgets every terminal's session (batch and keys): each must
    /// sign on again, and is answered `77` (without a MAC: there is no key) until it does.
    pub fn forget_sessions(&self) {
        lock(&self.shared.books).sessions.clear();
    }

    /// Answers a reversal of a purchase it never saw with `code` (`25`: unable to locate the
    /// original) instead of `00`.
    pub fn answer_unknown_reversals_with(&self, code: &'static str) {
        lock(&self.shared.books).unknown_reversal_code = Some(code);
    }

    /// Refuses every reversal with `code`, doing nothing, until called with `None`.
    pub fn refuse_reversals(&self, code: Option<&'static str>) {
        lock(&self.shared.books).refuse_reversals = code;
    }

    /// Every settlement answered, in arrival order.
    pub fn settlements(&self) -> Vec<SettlementRecord> {
        lock(&self.shared.books).settlements.clone()
    }

    /// Sign-ons answered `00`.
    pub fn sign_ons(&self) -> u32 {
        lock(&self.shared.books).sign_ons
    }
}

impl Drop for Acquirer {
    fn drop(&mut self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        lock(&self.shared.listening).refusing = false;
        self.shared.listening_changed.notify_all();
        let _ = TcpStream::connect_timeout(&self.address, Duration::from_millis(200));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Accepts connections until stopped, one thread per connection.
fn serve(shared: &Arc<Shared>, listener: TcpListener) {
    let Ok(address) = listener.local_addr() else {
        return;
    };
    let mut listener = Some(listener);
    loop {
        if shared.stopping.load(Ordering::SeqCst) {
            return;
        }
        if lock(&shared.listening).refusing {
            drop(listener.take());
            let mut listening = lock(&shared.listening);
            listening.closed = true;
            shared.listening_changed.notify_all();
            while listening.refusing && !shared.stopping.load(Ordering::SeqCst) {
                listening = shared
                    .listening_changed
                    .wait(listening)
                    .unwrap_or_else(|p| p.into_inner());
            }
            drop(listening);
            // The port was ours a moment ago; rebinding it can only race a stranger.
            while listener.is_none() && !shared.stopping.load(Ordering::SeqCst) {
                match TcpListener::bind(address) {
                    Ok(l) => listener = Some(l),
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
            lock(&shared.listening).closed = false;
            shared.listening_changed.notify_all();
            continue;
        }
        let Some(current) = &listener else {
            return;
        };
        let Ok((stream, _)) = current.accept() else {
            continue;
        };
        if shared.stopping.load(Ordering::SeqCst) || lock(&shared.listening).refusing {
            continue;
        }
        let shared = shared.clone();
        let _ = std::thread::Builder::new()
            .name("acquirer-conn".into())
            .spawn(move || handle(&shared, stream));
    }
}

/// Serves one connection: one request, one answer (or the injected fault). A request that is
/// not CUP-8583 gets no answer.
fn handle(shared: &Shared, mut stream: TcpStream) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(5)));
    let _ = stream.set_nodelay(true);
    let Some(request) = iso8583::read_frame(&mut stream).and_then(|b| Message::decode(&b).ok())
    else {
        return;
    };
    let Some(reply) = lock(&shared.books).answer(&request, LocalTime::now()) else {
        return;
    };
    let fault = MessageType::of(request.mti)
        .and_then(|kind| lock(&shared.faults).get_mut(&kind)?.pop_front());
    let Some(answer) = reply.sign(fault == Some(Fault::BadMac)) else {
        return;
    };
    let _ = match fault {
        None | Some(Fault::BadMac) => stream.write_all(&answer),
        Some(Fault::Delay(d)) => {
            std::thread::sleep(d);
            stream.write_all(&answer)
        }
        Some(Fault::DropReply) => Ok(()),
        Some(Fault::ReplyTwice) => stream
            .write_all(&answer)
            .and_then(|()| stream.write_all(&answer)),
        Some(Fault::Garbage) => stream.write_all(GARBAGE),
        Some(Fault::Truncate) => stream.write_all(&answer[..answer.len() / 2]),
    };
    let _ = stream.flush();
    // Let the client read to the end before the socket goes away.
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let mut sink = [0u8; 256];
    let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
    while matches!(stream.read(&mut sink), Ok(n) if n > 0) {}
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;
    use crate::pin_pad::{check_value, clear_pin_block, pan12, tdes_decrypt};

    const PAN: &str = "6222021234567890128";
    const PIN: &str = "123456";

    /// A terminal as small as a test needs: builds requests with the codec and MACs them
    /// with the keys its sign-on unwrapped.
    struct Terminal {
        address: SocketAddr,
        id: String,
        stan: u32,
        batch: u32,
        keys: Option<([u8; 16], [u8; 16])>,
    }

    fn unwrap_key(wrapped: &[u8]) -> [u8; 16] {
        let mut key = [0u8; 16];
        for (out, half) in key.chunks_mut(8).zip(wrapped.chunks(8)) {
            let block = half.try_into().expect("8-byte halves");
            out.copy_from_slice(&tdes_decrypt(&TEST_MASTER_KEY, block));
        }
        key
    }

    /// Sends `request` on a connection of its own; the answer, if one came.
    fn exchange_raw(address: SocketAddr, bytes: &[u8]) -> Option<Vec<u8>> {
        let mut s = TcpStream::connect(address).expect("connects");
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        s.write_all(bytes).expect("sends");
        // Done sending: a request cut short is then seen at once, not after a read timeout.
        let _ = s.shutdown(std::net::Shutdown::Write);
        iso8583::read_frame(&mut s)
    }

    impl Terminal {
        fn new(acquirer: &Acquirer, id: &str) -> Terminal {
            Terminal {
                address: acquirer.address(),
                id: id.into(),
                stan: 0,
                batch: 7,
                keys: None,
            }
        }

        fn request(&mut self, mti: u16, kind: &str) -> Message {
            self.stan += 1;
            let mut m = Message::new(mti);
            m.set(11, format!("{:06}", self.stan))
                .set(41, self.id.as_str())
                .set(42, "898110048990001")
                .set(60, format!("{kind}{:06}", self.batch));
            m
        }

        fn send(&self, request: &Message) -> Option<Message> {
            let body = exchange_raw(self.address, &request.frame().expect("encodes"))?;
            Some(Message::decode(&body).expect("the answer parses"))
        }

        /// Sends a MACed request; the answer, whose MAC must check.
        fn call(&self, mut request: Message) -> Message {
            let (_, mak) = self.keys.expect("signed on");
            let mac = retail_mac_full(&mak, [0; 8], &request.mac_input().expect("encodes"));
            request.set(MAC_FIELD, mac);
            let answer = self.send(&request).expect("an answer");
            assert_eq!(answer.mti, request.mti + 10);
            assert_eq!(answer.get(11), request.get(11));
            let mac = retail_mac_full(&mak, [0; 8], &answer.mac_input().expect("encodes"));
            assert_eq!(answer.get(MAC_FIELD), Some(mac.as_slice()), "answer MAC");
            answer
        }

        fn sign_on(&mut self) -> Message {
            let mut request = self.request(800, "00");
            request.set(60, format!("00{:06}003", self.batch));
            let answer = self.send(&request).expect("an answer");
            if let Some(keys) = answer.get(62) {
                self.keys = Some((unwrap_key(&keys[..16]), unwrap_key(&keys[20..36])));
            }
            answer
        }

        fn card_fields(&mut self, mti: u16, kind: &str, pan: &str, amount: u64) -> Message {
            let mut m = self.request(mti, kind);
            m.set(2, pan)
                .set(3, "000000")
                .set(4, format!("{amount:012}"))
                .set(14, "3012")
                .set(22, "052")
                .set(25, "00")
                .set(49, "156");
            m
        }

        fn purchase_request(&mut self, pan: &str, pin: Option<&str>, amount: u64) -> Message {
            let mut m = self.card_fields(200, "22", pan, amount);
            m.set(35, format!("{pan}D30122010000012345"));
            if let Some(pin) = pin {
                let (pik, _) = self.keys.expect("signed on");
                let block = tdes_encrypt(&pik, clear_pin_block(pin, &pan12(pan)));
                m.set(22, "051")
                    .set(26, "12")
                    .set(52, block)
                    .set(53, "2600000000000000");
            }
            m
        }

        fn purchase(&mut self, pan: &str, pin: Option<&str>, amount: u64) -> Message {
            let request = self.purchase_request(pan, pin, amount);
            self.call(request)
        }

        fn reversal(&mut self, stan: u32, pan: &str, amount: u64) -> Message {
            let mut m = self.card_fields(400, "23", pan, amount);
            m.set(11, format!("{stan:06}")).set(39, "98");
            self.call(m)
        }

        fn settle(&mut self, amount: u64, count: u32) -> Message {
            let mut m = self.request(500, "50");
            m.set(48, format!("{amount:012}{count:03}"));
            self.call(m)
        }
    }

    fn acquirer_with_card(balance: u64) -> (Acquirer, Terminal) {
        let acquirer = Acquirer::start().expect("starts");
        acquirer.add_card(PAN, PIN, balance);
        let mut terminal = Terminal::new(&acquirer, "SV000001");
        assert_eq!(terminal.sign_on().text(39), Some("00"));
        (acquirer, terminal)
    }

    #[test]
    fn sign_on_issues_fresh_working_keys_wrapped_under_the_master_key() {
        let acquirer = Acquirer::start().expect("starts");
        let mut terminal = Terminal::new(&acquirer, "SV000001");
        let answer = terminal.sign_on();
        assert_eq!(answer.mti, 810);
        assert_eq!(answer.tpdu, [0x60, 0x00, 0x00, 0x00, 0x01]);
        assert_eq!(answer.text(39), Some("00"));
        assert_eq!(answer.text(11), Some("000001"));
        assert_eq!(answer.text(41), Some("SV000001"));
        assert_eq!(answer.text(42), Some("898110048990001"));
        assert_eq!(answer.text(60), Some("00000007003"));
        assert_eq!(answer.text(12).map(str::len), Some(6));
        assert_eq!(answer.text(13).map(str::len), Some(4));
        assert_eq!(answer.get(MAC_FIELD), None, "a sign-on is not MACed");

        let keys = answer.get(62).expect("working keys");
        assert_eq!(keys.len(), 40);
        let (pik, mak) = (unwrap_key(&keys[..16]), unwrap_key(&keys[20..36]));
        assert_eq!(check_value(&pik), keys[16..20]);
        assert_eq!(check_value(&mak), keys[36..40]);
        assert_ne!(pik, mak);
        assert_eq!((pik, mak), terminal.keys.expect("unwrapped"));

        terminal.sign_on();
        let (pik2, mak2) = terminal.keys.expect("unwrapped");
        assert!(pik2 != pik && mak2 != mak, "each sign-on has its own keys");
        assert_eq!(acquirer.sign_ons(), 2);
    }

    #[test]
    fn a_purchase_debits_once_however_often_it_is_sent() {
        let (acquirer, mut terminal) = acquirer_with_card(10_000);
        let request = terminal.purchase_request(PAN, Some(PIN), 2_500);
        let first = terminal.call(request.clone());
        assert_eq!(first.text(39), Some("00"));
        assert_eq!(first.text(4), Some("000000002500"));
        assert_eq!(first.text(37).map(str::len), Some(12));
        assert_eq!(first.text(38).map(str::len), Some(6));
        assert_eq!(acquirer.balance(PAN), Some(7_500));

        let again = terminal.call(request);
        assert_eq!(again.get(37), first.get(37));
        assert_eq!(again.get(38), first.get(38));
        assert_eq!(again.text(39), Some("00"));
        assert_eq!(acquirer.balance(PAN), Some(7_500));
        assert_eq!(
            acquirer.purchases(),
            [PurchaseRecord {
                terminal: "SV000001".into(),
                batch: 7,
                stan: 2,
                pan_masked: "622202*********0128".into(),
                amount_fen: 2_500,
                state: PurchaseState::Approved,
            }]
        );

        // Without a PIN (052) there is no PIN to check.
        assert_eq!(terminal.purchase(PAN, None, 500).text(39), Some("00"));
        assert_eq!(acquirer.balance(PAN), Some(7_000));
    }

    #[test]
    fn three_wrong_pins_in_a_row_lock_the_card() {
        let (acquirer, mut terminal) = acquirer_with_card(10_000);
        // A block made under another key is a wrong PIN too (never a panic).
        let mut request = terminal.purchase_request(PAN, Some(PIN), 100);
        request.set(52, [0u8; 8]);
        assert_eq!(terminal.call(request).text(39), Some("55"));
        assert_eq!(terminal.purchase(PAN, Some(PIN), 100).text(39), Some("00"));
        assert_eq!(
            terminal.purchase(PAN, Some("000000"), 100).text(39),
            Some("55")
        );
        assert_eq!(
            terminal.purchase(PAN, Some("111111"), 100).text(39),
            Some("55")
        );
        assert_eq!(
            terminal.purchase(PAN, Some("222222"), 100).text(39),
            Some("75")
        );
        assert_eq!(terminal.purchase(PAN, Some(PIN), 100).text(39), Some("75"));
        assert_eq!(terminal.purchase(PAN, None, 100).text(39), Some("75"));
        assert_eq!(acquirer.balance(PAN), Some(9_900));
    }

    #[test]
    fn declines_say_why_and_debit_nothing() {
        let (acquirer, mut terminal) = acquirer_with_card(1_000);
        let blocked = "6217001234567893";
        let expired = "6228480000000000011";
        for pan in [blocked, expired] {
            acquirer.add_card(pan, PIN, 1_000);
        }
        acquirer.block(blocked);
        acquirer.expire(expired);
        let code = |t: &mut Terminal, pan: &str, amount: u64| {
            t.purchase(pan, Some(PIN), amount)
                .text(39)
                .map(str::to_string)
        };
        assert_eq!(
            code(&mut terminal, "6222020000000000000", 100).as_deref(),
            Some("14")
        );
        assert_eq!(code(&mut terminal, blocked, 100).as_deref(), Some("62"));
        assert_eq!(code(&mut terminal, expired, 100).as_deref(), Some("54"));
        assert_eq!(code(&mut terminal, PAN, 1_001).as_deref(), Some("51"));
        assert_eq!(code(&mut terminal, PAN, 0).as_deref(), Some("13"));
        acquirer.set_today(2031, 1);
        assert_eq!(code(&mut terminal, PAN, 100).as_deref(), Some("54"));
        acquirer.set_today(2030, 12);
        let approved = terminal.purchase(PAN, Some(PIN), 100);
        assert_eq!(approved.text(39), Some("00"));
        assert_eq!(acquirer.balance(PAN), Some(900));
        assert_eq!(acquirer.balance(blocked), Some(1_000));
        let declined: Vec<_> = acquirer.purchases().into_iter().map(|p| p.state).collect();
        assert_eq!(
            declined[..2],
            [
                PurchaseState::Declined {
                    response_code: "14".into()
                },
                PurchaseState::Declined {
                    response_code: "62".into()
                }
            ]
        );
    }

    #[test]
    fn a_wrong_mac_is_refused_and_changes_nothing() {
        let (acquirer, mut terminal) = acquirer_with_card(1_000);
        let mut request = terminal.purchase_request(PAN, Some(PIN), 100);
        request.set(MAC_FIELD, [0u8; 8]);
        let answer = terminal.send(&request).expect("an answer");
        assert_eq!(answer.text(39), Some("A0"));
        let (_, mak) = terminal.keys.expect("signed on");
        let mac = retail_mac_full(&mak, [0; 8], &answer.mac_input().expect("encodes"));
        assert_eq!(answer.get(MAC_FIELD), Some(mac.as_slice()));
        // No MAC at all is no better.
        let request = terminal.purchase_request(PAN, Some(PIN), 100);
        assert_eq!(
            terminal.send(&request).expect("an answer").text(39),
            Some("A0")
        );
        assert_eq!(acquirer.balance(PAN), Some(1_000));
        assert!(acquirer.purchases().is_empty());
    }

    #[test]
    fn only_a_signed_on_terminal_in_its_open_batch_is_served() {
        let (acquirer, mut terminal) = acquirer_with_card(1_000);
        let mut stranger = Terminal::new(&acquirer, "SV000002");
        stranger.keys = terminal.keys;
        let mut request = stranger.purchase_request(PAN, Some(PIN), 100);
        request.set(MAC_FIELD, [0u8; 8]);
        let answer = stranger.send(&request).expect("an answer");
        assert_eq!(answer.text(39), Some("77"));
        assert_eq!(answer.get(MAC_FIELD), None, "no keys to MAC with");

        terminal.batch = 8;
        assert_eq!(terminal.purchase(PAN, Some(PIN), 100).text(39), Some("77"));
        assert_eq!(terminal.settle(0, 0).text(39), Some("77"));
        assert_eq!(acquirer.balance(PAN), Some(1_000));
        assert_eq!(terminal.sign_on().text(39), Some("00"));
        assert_eq!(terminal.purchase(PAN, Some(PIN), 100).text(39), Some("00"));
    }

    #[test]
    fn a_reversal_credits_an_approved_purchase_back_once() {
        let (acquirer, mut terminal) = acquirer_with_card(1_000);
        let purchase = terminal.purchase(PAN, Some(PIN), 300);
        let stan = u32::try_from(purchase.number(11).expect("STAN")).expect("6 digits");
        assert_eq!(acquirer.balance(PAN), Some(700));
        for _ in 0..2 {
            let answer = terminal.reversal(stan, PAN, 300);
            assert_eq!(answer.text(39), Some("00"));
            assert_eq!(answer.get(37), purchase.get(37));
            assert_eq!(acquirer.balance(PAN), Some(1_000));
        }
        // A purchase the acquirer never saw: nothing to do, and still acknowledged.
        assert_eq!(terminal.reversal(999, PAN, 300).text(39), Some("00"));
        assert_eq!(acquirer.reversals_received(), 3);
        assert_eq!(acquirer.purchases()[0].state, PurchaseState::Reversed);
        assert_eq!(acquirer.balance(PAN), Some(1_000));
    }

    #[test]
    fn settlement_compares_the_batch_totals() {
        let (_acquirer, mut terminal) = acquirer_with_card(10_000);
        terminal.purchase(PAN, Some(PIN), 1_000);
        let reversed = terminal.purchase(PAN, Some(PIN), 2_000);
        terminal.purchase(PAN, Some(PIN), 400);
        terminal.purchase(PAN, Some("999999"), 50);
        let stan = u32::try_from(reversed.number(11).expect("STAN")).expect("6 digits");
        terminal.reversal(stan, PAN, 2_000);

        let balanced = terminal.settle(1_400, 2);
        assert_eq!(balanced.text(39), Some("00"));
        assert_eq!(balanced.text(48), Some("0000000014000021"));
        let unbalanced = terminal.settle(3_400, 3);
        assert_eq!(unbalanced.text(48), Some("0000000014000022"));
    }

    #[test]
    fn malformed_requests_get_no_answer_and_the_acquirer_goes_on() {
        let (acquirer, mut terminal) = acquirer_with_card(1_000);
        let good = terminal
            .purchase_request(PAN, Some(PIN), 100)
            .frame()
            .expect("encodes");
        let mut bad = Vec::new();
        // Bit 1: a secondary bitmap the dialect does not have.
        let mut b = good.clone();
        b[9] |= 0x80;
        bad.push(b);
        // A PAN digit that is not BCD.
        let mut b = good.clone();
        b[18] = 0xAB;
        bad.push(b);
        // A length header past the cap, and one shorter than the message.
        let mut b = good.clone();
        b[..2].copy_from_slice(&2049u16.to_be_bytes());
        bad.push(b);
        let mut b = good.clone();
        let short = u16::from_be_bytes([b[0], b[1]]) - 1;
        b[..2].copy_from_slice(&short.to_be_bytes());
        bad.push(b);
        // Not even a header.
        bad.push(vec![0x00]);
        for bytes in bad {
            assert_eq!(exchange_raw(terminal.address, &bytes), None);
        }
        assert_eq!(acquirer.balance(PAN), Some(1_000));
        assert_eq!(terminal.purchase(PAN, Some(PIN), 100).text(39), Some("00"));
    }

    #[test]
    fn a_fault_comes_after_the_acquirer_has_acted_and_only_once() {
        let (acquirer, mut terminal) = acquirer_with_card(10_000);
        for fault in [Fault::DropReply, Fault::Garbage, Fault::Truncate] {
            acquirer.inject(MessageType::Purchase, fault);
            let mut request = terminal.purchase_request(PAN, None, 100);
            let (_, mak) = terminal.keys.expect("signed on");
            let mac = retail_mac_full(&mak, [0; 8], &request.mac_input().expect("encodes"));
            request.set(MAC_FIELD, mac);
            let got = exchange_raw(terminal.address, &request.frame().expect("encodes"));
            assert!(
                got.is_none_or(|b| Message::decode(&b).is_err()),
                "{fault:?} answered"
            );
        }
        assert_eq!(acquirer.balance(PAN), Some(9_700));

        acquirer.inject(MessageType::Purchase, Fault::BadMac);
        let mut request = terminal.purchase_request(PAN, None, 100);
        let (_, mak) = terminal.keys.expect("signed on");
        let mac = retail_mac_full(&mak, [0; 8], &request.mac_input().expect("encodes"));
        request.set(MAC_FIELD, mac);
        let answer = terminal.send(&request).expect("an answer");
        let good = retail_mac_full(&mak, [0; 8], &answer.mac_input().expect("encodes"));
        assert_ne!(answer.get(MAC_FIELD), Some(good.as_slice()));

        acquirer.inject(
            MessageType::Purchase,
            Fault::Delay(Duration::from_millis(300)),
        );
        let started = Instant::now();
        assert_eq!(terminal.purchase(PAN, None, 100).text(39), Some("00"));
        assert!(started.elapsed() >= Duration::from_millis(300));

        acquirer.inject(MessageType::SignOn, Fault::BadMac);
        let keys = terminal.sign_on();
        let keys = keys.get(62).expect("keys");
        assert_ne!(check_value(&unwrap_key(&keys[..16])), keys[16..20]);
        assert_eq!(acquirer.balance(PAN), Some(9_500));
    }

    #[test]
    fn refused_connections_come_back() {
        let (acquirer, mut terminal) = acquirer_with_card(1_000);
        acquirer.refuse_connections(true);
        assert!(TcpStream::connect(acquirer.address()).is_err());
        acquirer.refuse_connections(false);
        assert_eq!(terminal.purchase(PAN, Some(PIN), 100).text(39), Some("00"));
    }

    #[test]
    fn local_time_is_the_civil_date() {
        let at = |days: u64, secs: u64| LocalTime::from_unix(days * 86_400 + secs);
        assert_eq!(
            at(19_782, 3_723),
            LocalTime {
                year: 2024,
                month: 2,
                day: 29,
                hour: 1,
                minute: 2,
                second: 3
            }
        );
        assert_eq!(at(11_017, 0).date(), "0301");
        assert_eq!(at(20_818, 86_399).time(), "235959");
        assert_eq!(at(0, 0).year, 1970);
    }
}
