//! One exchange over the host's connection: send a frame, read exactly one frame back.

use crate::exports::selfvend::backend::dialect::BackendError;
use crate::selfvend::backend::connection::{Connection, NetError};
use crate::wire::{MAX_BODY, Result};

/// Sends `frame` on a new connection and returns the reply's body. Anything after the reply
/// frame is never read. Every transport failure is `unreachable`: the host knows whether the
/// request went out and turns a failure after sending into an unknown outcome.
pub fn exchange(tx: &str, frame: &[u8]) -> Result<Vec<u8>> {
    let conn = Connection::open().map_err(|e| net_failure(tx, "cannot connect", e))?;
    conn.send(frame)
        .map_err(|e| net_failure(tx, "sending failed", e))?;
    let header = read_exact(&conn, 4, tx, "length header")?;
    let len = body_len(&header).ok_or_else(|| {
        BackendError::MalformedReply(format!(
            "{tx} reply: length header {:?} is not 0001 to {MAX_BODY}",
            String::from_utf8_lossy(&header)
        ))
    })?;
    read_exact(&conn, len, tx, "body")
}

/// The body length a four-digit header announces, if it is one.
fn body_len(header: &[u8]) -> Option<usize> {
    if !header.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let len: usize = std::str::from_utf8(header).ok()?.parse().ok()?;
    (1..=MAX_BODY).contains(&len).then_some(len)
}

/// Reads exactly `want` bytes, asking for no more than are still missing.
fn read_exact(conn: &Connection, want: usize, tx: &str, what: &str) -> Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(want);
    while buf.len() < want {
        let missing = want - buf.len();
        let mut chunk = conn
            .receive(u32::try_from(missing).unwrap_or(u32::MAX))
            .map_err(|e| net_failure(tx, "receiving the reply failed", e))?;
        if chunk.is_empty() {
            return Err(BackendError::Unreachable(format!(
                "{tx}: the backend closed the connection after {} of the {want} bytes of the reply {what}",
                buf.len()
            )));
        }
        chunk.truncate(missing);
        buf.extend_from_slice(&chunk);
    }
    Ok(buf)
}

fn net_failure(tx: &str, doing: &str, e: NetError) -> BackendError {
    let why = match e {
        NetError::Timeout => "timed out".into(),
        NetError::Closed => "the connection closed".into(),
        NetError::ConnectFailed(s) => format!("connect failed: {s}"),
        NetError::TooLarge => "over the byte cap".into(),
        NetError::Io(s) => s,
    };
    BackendError::Unreachable(format!("{tx}: {doing}: {why}"))
}
