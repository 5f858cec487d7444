//! Inserting a virtual card into a `vsmartcard-vpcd` reader slot of the real pcscd.
//!
//! vpcd listens on a TCP port per reader slot; a card connects to it. Each message is a 2-byte
//! big-endian length and a payload: one byte is a control message (00 power off, 01 power on,
//! 02 reset, 04 send the ATR — only 04 is answered), anything longer is a command APDU answered
//! by a response APDU. Opening the socket inserts the card; closing it pulls the card out.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

pub use crate::apdu::{Response, VirtualCard, answer, parse_apdu, status};

/// Misbehaviour of the slot, counted in command APDUs from when it is armed.
#[derive(Debug, Default, Clone, Copy)]
pub struct SlotFaults {
    /// Pull the card out when this many more commands have been answered (the next one is
    /// not executed).
    pub pull_before: Option<u32>,
    /// Execute this many more commands, then pull the card out without answering the last.
    pub pull_after: Option<u32>,
    /// Answer this many next commands with garbage instead of executing them.
    pub garbage: u32,
}

/// A card shared between its slot thread and the test that controls it.
pub type Shared<C> = Arc<Mutex<C>>;

pub fn lock<C: ?Sized>(card: &Mutex<C>) -> MutexGuard<'_, C> {
    card.lock().unwrap_or_else(|p| p.into_inner())
}

/// A card inserted into a vpcd slot; dropping it pulls the card out.
pub struct Inserted {
    stream: TcpStream,
    faults: Arc<Mutex<SlotFaults>>,
    thread: Option<JoinHandle<()>>,
}

/// The bytes a card answers with when told to answer garbage: not this card's protocol.
pub const GARBAGE: [u8; 6] = [0xDE, 0xAD, 0xBE, 0xEF, 0x12, 0x34];

impl Inserted {
    /// Connects `card` to the vpcd slot at `address` (the card is then "in the reader").
    pub fn insert<C: VirtualCard>(card: Shared<C>, address: SocketAddr) -> std::io::Result<Self> {
        let stream = TcpStream::connect_timeout(&address, Duration::from_secs(2))?;
        stream.set_nodelay(true)?;
        let faults = Arc::new(Mutex::new(SlotFaults::default()));
        let thread = {
            let stream = stream.try_clone()?;
            let faults = faults.clone();
            std::thread::Builder::new()
                .name("virtual-card".into())
                .spawn(move || serve(card, stream, &faults))?
        };
        Ok(Inserted {
            stream,
            faults,
            thread: Some(thread),
        })
    }

    /// Arms slot faults (replacing any armed before).
    pub fn arm(&self, faults: SlotFaults) {
        *lock(&self.faults) = faults;
    }

    /// Pulls the card out now.
    pub fn pull_out(mut self) {
        self.disconnect();
    }

    /// Whether the card is still in the reader (not pulled by a fault or a tear).
    pub fn is_inserted(&self) -> bool {
        self.thread.as_ref().is_some_and(|t| !t.is_finished())
    }

    fn disconnect(&mut self) {
        let _ = self.stream.shutdown(Shutdown::Both);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Inserted {
    fn drop(&mut self) {
        self.disconnect();
    }
}

/// Serves vpcd until it goes away or the card leaves; then makes sure the socket is closed
/// (the handle holds a clone of it).
fn serve<C: VirtualCard>(card: Shared<C>, mut stream: TcpStream, faults: &Mutex<SlotFaults>) {
    exchange(&card, &mut stream, faults);
    let _ = stream.shutdown(Shutdown::Both);
}

fn exchange<C: VirtualCard>(card: &Shared<C>, stream: &mut TcpStream, faults: &Mutex<SlotFaults>) {
    while let Some(message) = read_message(stream) {
        let reply = match message.as_slice() {
            [0x04] => Some(lock(card).atr()),
            [0x00] | [0x01] | [0x02] => {
                lock(card).reset();
                None
            }
            [_] => None,
            apdu => {
                let mut f = lock(faults);
                if f.pull_before == Some(0) {
                    return;
                }
                f.pull_before = f.pull_before.map(|n| n - 1);
                if f.garbage > 0 {
                    f.garbage -= 1;
                    Some(GARBAGE.to_vec())
                } else {
                    let last = f.pull_after == Some(1);
                    f.pull_after = f.pull_after.map(|n| n.saturating_sub(1));
                    drop(f);
                    match lock(card).command(apdu) {
                        Response::Answer(_) if last => return,
                        Response::Answer(r) => Some(r),
                        Response::Torn => return,
                    }
                }
            }
        };
        if let Some(reply) = reply
            && write_message(stream, &reply).is_err()
        {
            return;
        }
    }
}

fn read_message(stream: &mut TcpStream) -> Option<Vec<u8>> {
    // vpcd sends the length and the payload in two writes: without an immediate ACK from us,
    // Nagle on its side holds the payload back for our delayed ACK (40 ms per message).
    let _ = socket2::SockRef::from(&*stream).set_tcp_quickack(true);
    let mut len = [0u8; 2];
    stream.read_exact(&mut len).ok()?;
    let _ = socket2::SockRef::from(&*stream).set_tcp_quickack(true);
    let mut payload = vec![0; usize::from(u16::from_be_bytes(len))];
    stream.read_exact(&mut payload).ok()?;
    Some(payload)
}

fn write_message(stream: &mut TcpStream, payload: &[u8]) -> std::io::Result<()> {
    let len = u16::try_from(payload.len()).unwrap_or(u16::MAX);
    let mut frame = len.to_be_bytes().to_vec();
    frame.extend_from_slice(&payload[..usize::from(len)]);
    stream.write_all(&frame)
}
