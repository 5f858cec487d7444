//! A deliberately hostile card codec: its `identify` misbehaves as the card's ATR tells it to, for sandbox tests.

use std::hint::black_box;
use std::net::{TcpStream, ToSocketAddrs};

use exports::selfvend::card::codec::{
    CardAuthority, CardChannel, CardData, CardError, CodecInfo, CreditGrant, Guest, Identification,
    VerifyOutcome,
};
use selfvend::card::authority::AuthorityError;
use selfvend::card::types::WriteAuth;

wit_bindgen::generate!({ path: "../../../wit/card", world: "card-codec" });

/// How much text the `stderr-flood` mode writes.
const FLOOD_BYTES: usize = 10 * 1024 * 1024;
/// How long the `huge-list` mode's card type is.
const HUGE_STRING_BYTES: usize = 8 * 1024 * 1024;

struct HostileCard;

impl Guest for HostileCard {
    fn about() -> CodecInfo {
        CodecInfo {
            vendor: "selfvend tests".into(),
            name: "hostile-card".into(),
            version: "0.1.0".into(),
        }
    }

    fn identify(card: &CardChannel) -> Result<Option<Identification>, CardError> {
        let atr = card.atr();
        match String::from_utf8_lossy(&atr).as_ref() {
            "loop" => spin_forever(),
            "grow-memory" => grow_memory_forever(),
            "recurse" => {
                black_box(recurse(0));
                Ok(None)
            }
            "panic" => panic!("hostile-card panicked on purpose"),
            "huge-list" => Ok(Some(Identification {
                card_type: "x".repeat(HUGE_STRING_BYTES),
                write_auth: WriteAuth::None,
            })),
            "open-file" => Err(CardError::Malformed(format!("file: {}", try_files()))),
            "read-env" => {
                let vars = std::env::vars().count();
                let args = std::env::args().count();
                Err(CardError::Malformed(format!(
                    "env: {vars} vars, {args} args"
                )))
            }
            "open-socket" => Err(CardError::Malformed(format!("socket: {}", try_sockets()))),
            "stderr-flood" => {
                flood_stderr();
                Ok(None)
            }
            "apdu-flood" => Err(CardError::Malformed(flood_card(card))),
            // Asks for a minute, then runs on: cut short, its time is up when it wakes.
            "sleep" => {
                std::thread::sleep(std::time::Duration::from_secs(60));
                spin_forever()
            }
            _ => Ok(None),
        }
    }

    fn read(_card: &CardChannel) -> Result<CardData, CardError> {
        Err(refusal())
    }

    /// With the token `psc-twice`, asks for the card's PSC twice and reports both answers.
    fn write_credit(
        _card: &CardChannel,
        grant: CreditGrant,
        authority: &CardAuthority,
    ) -> Result<(), CardError> {
        if grant.token != b"psc-twice" {
            return Err(refusal());
        }
        let describe = |r: Result<Vec<u8>, AuthorityError>| match r {
            Ok(psc) => format!("got {} bytes", psc.len()),
            Err(AuthorityError::NotAllowed(why)) => format!("not allowed: {why}"),
            Err(e) => format!("{e:?}"),
        };
        let first = describe(authority.card_password());
        let second = describe(authority.card_password());
        Err(CardError::AuthorityFailed(format!(
            "first: {first}; second: {second}"
        )))
    }

    fn verify(_card: &CardChannel, _grant: CreditGrant) -> Result<VerifyOutcome, CardError> {
        Err(refusal())
    }
}

fn refusal() -> CardError {
    CardError::Malformed("hostile-card does not read cards".into())
}

/// Sends APDUs until the host refuses one; says how many were answered and why it stopped.
fn flood_card(card: &CardChannel) -> String {
    let mut answered = 0u64;
    loop {
        match card.transmit(&[0x00, 0xB0, 0x00, 0x00, 0x01]) {
            Ok(_) => answered += 1,
            Err(e) => return format!("{answered} APDUs answered, then {e:?}"),
        }
    }
}

/// Burns fuel until the host stops it.
fn spin_forever() -> ! {
    let mut counter: u64 = 0;
    loop {
        counter = black_box(counter.wrapping_add(1));
    }
}

/// Allocates 1 MiB blocks, touching every page of each, until the host stops it.
fn grow_memory_forever() -> ! {
    const BLOCK: usize = 1024 * 1024;
    const PAGE: usize = 4096;
    let mut hoard: Vec<Vec<u8>> = Vec::new();
    loop {
        let mut block = vec![0u8; BLOCK];
        for byte in block.iter_mut().step_by(PAGE) {
            *byte = 0xA5;
        }
        hoard.push(black_box(block));
        black_box(&hoard);
    }
}

/// Recurses until the stack overflows; the addition after the call keeps it from being a tail call.
fn recurse(depth: u64) -> u64 {
    let frame = black_box([depth.to_le_bytes(); 8]);
    if black_box(depth) == u64::MAX {
        return 0;
    }
    recurse(black_box(depth + 1)) + u64::from(frame[7][0])
}

/// Tries to read and write host files, and says what happened.
fn try_files() -> String {
    let read = match std::fs::read("/etc/passwd") {
        Ok(bytes) => format!("read /etc/passwd: OK {} bytes", bytes.len()),
        Err(err) => format!("read /etc/passwd: {err}"),
    };
    let write = match std::fs::write("/tmp/hostile", b"x") {
        Ok(()) => "write /tmp/hostile: OK".to_owned(),
        Err(err) => format!("write /tmp/hostile: {err}"),
    };
    format!("{read}; {write}")
}

/// Tries to open a TCP connection and resolve a name, and says what happened.
fn try_sockets() -> String {
    let connect = match TcpStream::connect("127.0.0.1:22") {
        Ok(_) => "connect 127.0.0.1:22: connected".to_owned(),
        Err(err) => format!("connect 127.0.0.1:22: {err}"),
    };
    let resolve = match "localhost:80".to_socket_addrs() {
        Ok(addrs) => format!("resolve localhost:80: OK {} addresses", addrs.count()),
        Err(err) => format!("resolve localhost:80: {err}"),
    };
    format!("{connect}; {resolve}")
}

/// Writes `FLOOD_BYTES` of text to stderr.
fn flood_stderr() {
    let mut written = 0;
    let mut line_number: u64 = 0;
    while written < FLOOD_BYTES {
        let line = format!("flood line {line_number}\n");
        eprint!("{line}");
        written += line.len();
        line_number += 1;
    }
}

/// The export glue `export!` generates declares `unsafe` FFI functions; allow that here only.
#[allow(unsafe_code)]
mod glue {
    use super::HostileCard;

    crate::export!(HostileCard with_types_in crate);
}
