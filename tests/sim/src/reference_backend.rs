//! The reference utility backend: a real server on loopback with its own SQLite books, speaking
//! the fixed-length text dialect on one port and JSON over HTTP/1.1 on another. Tests (and the
//! demo kiosk) can make it misbehave per request type: delay, drop the reply after committing,
//! reply twice, reply garbage, truncate or flood the reply, or refuse connections.

pub mod bills;
pub mod fixed_text;
pub mod json_http;
pub mod ledger;
pub mod tariff;

use std::collections::{HashMap, HashSet, VecDeque};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

pub use bills::{BillInfo, BillReceiptAnswer, BillsAnswer};
pub use ledger::{Call, Ledger, LedgerError, Outcome, Request};
pub use tariff::QuoteAnswer;

use crate::encryption_machine::EncryptionMachine;

/// How a front-end reads requests and writes replies in its wire format.
pub trait Wire: Send + Sync + 'static {
    /// Reads one request. On a request that does not parse, returns the reply to send instead.
    fn read_request(&self, stream: &mut TcpStream) -> Result<Request, Vec<u8>>;
    /// The reply to `request` carrying `outcome`.
    fn reply(&self, request: &Request, outcome: &Outcome) -> Vec<u8>;
    /// A reply claiming far more bytes than any kiosk accepts.
    fn flood_header(&self) -> Vec<u8>;
    fn name(&self) -> &'static str;
}

/// A way to misbehave on one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Commit, wait this long, then reply.
    Delay(Duration),
    /// Commit, then close without replying.
    DropReply,
    /// Commit, then send the reply twice.
    ReplyTwice,
    /// Commit, then send bytes that are not the protocol.
    Garbage,
    /// Commit, then send the first half of the reply and close.
    Truncate,
    /// Commit, then send a reply of more than a megabyte.
    Flood,
}

impl Fault {
    /// Parses `drop-reply`, `reply-twice`, `garbage`, `truncate`, `flood` or `delay-MS`.
    pub fn parse(s: &str) -> Option<Fault> {
        Some(match s {
            "drop-reply" => Fault::DropReply,
            "reply-twice" => Fault::ReplyTwice,
            "garbage" => Fault::Garbage,
            "truncate" => Fault::Truncate,
            "flood" => Fault::Flood,
            _ => Fault::Delay(Duration::from_millis(
                s.strip_prefix("delay-")?.parse().ok()?,
            )),
        })
    }
}

const GARBAGE: &[u8] = b"\x00\xff\xfe<<NOT A REPLY>>\r\n\x1b[2J\x07";

#[derive(Default)]
struct FaultPlan {
    /// One-shot faults, used in order by the next requests of each type.
    once: HashMap<Call, VecDeque<Fault>>,
    always: HashMap<Call, Fault>,
}

/// State shared by the listeners and the handle.
struct Shared {
    ledger: Mutex<Ledger>,
    faults: Mutex<FaultPlan>,
    /// Calls this backend does not offer: answered "not offered", nothing done.
    withheld: Mutex<HashSet<Call>>,
    listening: Mutex<Listening>,
    listening_changed: Condvar,
    stopping: AtomicBool,
}

/// Whether the listeners should refuse connections, and how many have closed their sockets.
#[derive(Default)]
struct Listening {
    refusing: bool,
    closed: usize,
}

/// A running reference backend. Dropping it stops the listeners.
pub struct ReferenceBackend {
    shared: Arc<Shared>,
    fixed_text: SocketAddr,
    json_http: SocketAddr,
    threads: Vec<JoinHandle<()>>,
}

/// Where to listen.
#[derive(Debug, Clone)]
pub struct Listen {
    pub fixed_text: SocketAddr,
    pub json_http: SocketAddr,
}

impl Default for Listen {
    /// Any free loopback ports.
    fn default() -> Self {
        let any: SocketAddr = ([127, 0, 0, 1], 0).into();
        Listen {
            fixed_text: any,
            json_http: any,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error("listening on {address}: {source}")]
    Listen {
        address: SocketAddr,
        source: std::io::Error,
    },
}

impl ReferenceBackend {
    /// Starts the backend with its books in `db` (created and seeded when new).
    pub fn start(db: &Path, listen: Listen) -> Result<ReferenceBackend, StartError> {
        let ledger = Ledger::open(db, EncryptionMachine::default())?;
        let shared = Arc::new(Shared {
            ledger: Mutex::new(ledger),
            faults: Mutex::default(),
            withheld: Mutex::default(),
            listening: Mutex::default(),
            listening_changed: Condvar::new(),
            stopping: AtomicBool::new(false),
        });
        let bind = |address: SocketAddr| {
            TcpListener::bind(address).map_err(|source| StartError::Listen { address, source })
        };
        let fixed = bind(listen.fixed_text)?;
        let json = bind(listen.json_http)?;
        let fixed_text = fixed.local_addr().map_err(|source| StartError::Listen {
            address: listen.fixed_text,
            source,
        })?;
        let json_http = json.local_addr().map_err(|source| StartError::Listen {
            address: listen.json_http,
            source,
        })?;
        let threads = vec![
            serve(shared.clone(), fixed, Arc::new(fixed_text::FixedText)),
            serve(shared.clone(), json, Arc::new(json_http::JsonHttp)),
        ];
        Ok(ReferenceBackend {
            shared,
            fixed_text,
            json_http,
            threads,
        })
    }

    pub fn fixed_text_address(&self) -> SocketAddr {
        self.fixed_text
    }

    pub fn json_http_address(&self) -> SocketAddr {
        self.json_http
    }

    /// The books, for tests to look at.
    pub fn ledger(&self) -> MutexGuard<'_, Ledger> {
        lock(&self.shared.ledger)
    }

    /// Misbehaves once on the next request of type `call` (faults queue in order).
    pub fn inject(&self, call: Call, fault: Fault) {
        lock(&self.shared.faults)
            .once
            .entry(call)
            .or_default()
            .push_back(fault);
    }

    /// Misbehaves on every request of type `call` until cleared.
    pub fn inject_always(&self, call: Call, fault: Fault) {
        lock(&self.shared.faults).always.insert(call, fault);
    }

    /// The backend stops offering `call` (as a backend without, say, a can-buy check): it
    /// answers "not offered" and does nothing, until called with `offered` true.
    pub fn offer(&self, call: Call, offered: bool) {
        let mut withheld = lock(&self.shared.withheld);
        if offered {
            withheld.remove(&call);
        } else {
            withheld.insert(call);
        }
    }

    /// Clears every injected fault.
    pub fn clear_faults(&self) {
        *lock(&self.shared.faults) = FaultPlan::default();
    }

    /// Refuses connections (the listening sockets are closed) until called with `false`.
    /// Returns once both listeners are closed, or listening again.
    pub fn refuse_connections(&self, refuse: bool) {
        lock(&self.shared.listening).refusing = refuse;
        self.shared.listening_changed.notify_all();
        if refuse {
            // Wake the accept loops so they close their sockets now.
            for address in [self.fixed_text, self.json_http] {
                let _ = TcpStream::connect_timeout(&address, Duration::from_millis(200));
            }
        }
        let want = if refuse { 2 } else { 0 };
        let mut listening = lock(&self.shared.listening);
        while listening.closed != want && !self.shared.stopping.load(Ordering::SeqCst) {
            listening = self
                .shared
                .listening_changed
                .wait(listening)
                .unwrap_or_else(|p| p.into_inner());
        }
    }
}

impl Drop for ReferenceBackend {
    fn drop(&mut self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        lock(&self.shared.listening).refusing = false;
        self.shared.listening_changed.notify_all();
        for address in [self.fixed_text, self.json_http] {
            let _ = TcpStream::connect_timeout(&address, Duration::from_millis(200));
        }
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicking connection thread must not take the whole simulator down with it.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Accepts connections until stopped, one thread per connection.
fn serve(shared: Arc<Shared>, listener: TcpListener, wire: Arc<dyn Wire>) -> JoinHandle<()> {
    std::thread::Builder::new()
        .name(format!("refbackend-{}", wire.name()))
        .spawn(move || {
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
                    listening.closed += 1;
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
                    lock(&shared.listening).closed -= 1;
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
                let wire = wire.clone();
                std::thread::spawn(move || handle(&shared, &*wire, stream));
            }
        })
        .expect("spawning a listener thread")
}

/// Serves one connection: one request, one reply (or the injected fault).
fn handle(shared: &Shared, wire: &dyn Wire, mut stream: TcpStream) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(5)));
    let _ = stream.set_nodelay(true);
    let request = match wire.read_request(&mut stream) {
        Ok(request) => request,
        Err(reply) => {
            let _ = stream.write_all(&reply);
            return;
        }
    };
    let fault = {
        let mut plan = lock(&shared.faults);
        let call = request.call();
        let once = plan.once.get_mut(&call).and_then(VecDeque::pop_front);
        once.or_else(|| plan.always.get(&call).copied())
    };
    let outcome = if lock(&shared.withheld).contains(&request.call()) {
        Err(ledger::Refusal {
            reason: ledger::Reason::NotSupported,
            message: "not offered by this backend".into(),
        })
    } else {
        lock(&shared.ledger).handle(&request)
    };
    let reply = wire.reply(&request, &outcome);
    let _ = match fault {
        None => stream.write_all(&reply),
        Some(Fault::Delay(d)) => {
            std::thread::sleep(d);
            stream.write_all(&reply)
        }
        Some(Fault::DropReply) => Ok(()),
        Some(Fault::ReplyTwice) => stream
            .write_all(&reply)
            .and_then(|()| stream.write_all(&reply)),
        Some(Fault::Garbage) => stream.write_all(GARBAGE),
        Some(Fault::Truncate) => stream.write_all(&reply[..reply.len() / 2]),
        Some(Fault::Flood) => {
            let chunk = vec![b'9'; 64 * 1024];
            let mut r = stream.write_all(&wire.flood_header());
            for _ in 0..20 {
                r = r.and_then(|()| stream.write_all(&chunk));
            }
            r
        }
    };
    let _ = stream.flush();
    // Let the client read to the end before the socket goes away.
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let mut sink = [0u8; 256];
    let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
    while matches!(stream.read(&mut sink), Ok(n) if n > 0) {}
}
