//! The kit's scripted backend: a TCP listener on loopback that answers each connection as told
//! (the recorded reply, nothing, garbage, half, late) and keeps what the dialect sent; or a
//! proxy to a real backend that records both directions.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How the peer answers one connection.
#[derive(Debug, Clone)]
pub enum Answer {
    /// These bytes, then close.
    Reply(Vec<u8>),
    /// Nothing: read the request, then close.
    Silence,
    /// These bytes after a delay longer than the kiosk waits.
    Late(Vec<u8>, Duration),
    /// Forward to a real backend and record both directions.
    Proxy(String),
}

/// One connection as the peer saw it.
#[derive(Debug, Clone, Default)]
pub struct Seen {
    pub sent: Vec<u8>,
    pub reply: Vec<u8>,
}

/// A listener answering connections in order from its script (then with silence).
pub struct Peer {
    pub addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    seen: Arc<Mutex<Vec<Seen>>>,
    stop: Arc<Mutex<bool>>,
    thread: Option<JoinHandle<()>>,
}

/// How long the peer waits for more request bytes before it takes the request as complete.
const QUIET: Duration = Duration::from_millis(150);

impl Peer {
    /// Starts a peer; `expect[i]` is how many bytes connection i's request has, when known.
    pub fn start(script: Vec<(Answer, Option<usize>)>) -> std::io::Result<Peer> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(Mutex::new(false));
        let accepted = Arc::new(AtomicUsize::new(0));
        let (seen2, stop2, accepted2) = (seen.clone(), stop.clone(), accepted.clone());
        let thread = std::thread::Builder::new()
            .name("kit-peer".into())
            .spawn(move || serve(listener, script, accepted2, seen2, stop2))?;
        Ok(Peer {
            addr,
            accepted,
            seen,
            stop,
            thread: Some(thread),
        })
    }

    /// Connections so far, each once the peer is done with it (the dialect closed it, or a
    /// few seconds passed).
    pub fn seen(&self) -> Vec<Seen> {
        let started = Instant::now();
        loop {
            let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner()).clone();
            if seen.len() >= self.accepted.load(Ordering::SeqCst)
                || started.elapsed() > Duration::from_secs(5)
            {
                return seen;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        *self.stop.lock().unwrap_or_else(|p| p.into_inner()) = true;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(
    listener: TcpListener,
    script: Vec<(Answer, Option<usize>)>,
    accepted: Arc<AtomicUsize>,
    seen: Arc<Mutex<Vec<Seen>>>,
    stop: Arc<Mutex<bool>>,
) {
    let mut script = script.into_iter();
    loop {
        if *stop.lock().unwrap_or_else(|p| p.into_inner()) {
            return;
        }
        let stream = match listener.accept() {
            Ok((stream, _)) => stream,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(5));
                continue;
            }
            Err(_) => return,
        };
        accepted.fetch_add(1, Ordering::SeqCst);
        let (answer, expect) = script.next().unwrap_or((Answer::Silence, None));
        let record = answer_one(stream, answer, expect);
        seen.lock().unwrap_or_else(|p| p.into_inner()).push(record);
    }
}

fn answer_one(mut stream: TcpStream, answer: Answer, expect: Option<usize>) -> Seen {
    let _ = stream.set_nonblocking(false);
    if let Answer::Proxy(upstream) = answer {
        return proxy(stream, &upstream);
    }
    let sent = read_request(&mut stream, expect);
    let reply = match answer {
        Answer::Reply(bytes) => bytes,
        Answer::Late(bytes, after) => {
            std::thread::sleep(after);
            bytes
        }
        Answer::Silence | Answer::Proxy(_) => Vec::new(),
    };
    let _ = stream.write_all(&reply);
    let _ = stream.shutdown(Shutdown::Write);
    // Let the dialect read to the end before the socket goes.
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    let mut sink = [0u8; 512];
    while matches!(stream.read(&mut sink), Ok(n) if n > 0) {}
    Seen { sent, reply }
}

/// The request: `expect` bytes when known, else what arrives until the line goes quiet.
fn read_request(stream: &mut TcpStream, expect: Option<usize>) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let started = Instant::now();
    let _ = stream.set_read_timeout(Some(QUIET));
    loop {
        if expect.is_some_and(|n| got.len() >= n) || started.elapsed() > Duration::from_secs(5) {
            return got;
        }
        match stream.read(&mut buf) {
            Ok(0) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(_) if expect.is_none() || !got.is_empty() => return got,
            Err(_) => {}
        }
    }
}

/// Forwards one connection to `upstream`, recording each direction, until both sides close.
fn proxy(client: TcpStream, upstream: &str) -> Seen {
    let Ok(server) = TcpStream::connect(upstream) else {
        return Seen::default();
    };
    // A peer that neither answers nor closes must not hold the recording for ever.
    for s in [&client, &server] {
        let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
    }
    let copy = |mut from: TcpStream, mut to: TcpStream| {
        std::thread::spawn(move || {
            let mut all = Vec::new();
            let mut buf = [0u8; 4096];
            while let Ok(n) = from.read(&mut buf) {
                if n == 0 || to.write_all(&buf[..n]).is_err() {
                    break;
                }
                all.extend_from_slice(&buf[..n]);
            }
            let _ = to.shutdown(Shutdown::Write);
            all
        })
    };
    let (Ok(c2), Ok(s2)) = (client.try_clone(), server.try_clone()) else {
        return Seen::default();
    };
    let up = copy(client, server);
    let down = copy(s2, c2);
    Seen {
        sent: up.join().unwrap_or_default(),
        reply: down.join().unwrap_or_default(),
    }
}

/// A loopback address nothing listens on: connections to it are refused.
pub fn closed_port() -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    listener.local_addr()
}
