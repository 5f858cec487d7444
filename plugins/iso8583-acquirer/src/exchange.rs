//! One exchange over the host's connection: send one request, read exactly one answer back.
//!
//! What a transport failure means depends on whether the request may have reached the acquirer:
//! before any of it is sent the call is `unreachable`; after, a missing or broken answer is
//! `outcome-unknown`, since the acquirer may have acted (the host holds the same rule). An
//! answer over the host's byte cap came whole enough to be wrong, so it is `malformed-reply`.

use crate::message::{self, Mti, Result};
use crate::selfvend::backend::connection::{Connection, NetError};
use crate::selfvend::payment::types::AcquirerError;

/// Sends `frame`, the request `request`, on a new connection and returns the answer's frame,
/// length header included. Anything after the answer is never read.
pub fn exchange(request: Mti, frame: &[u8]) -> Result<Vec<u8>> {
    let conn = Connection::open().map_err(|e| {
        AcquirerError::Unreachable(format!("{request} request: cannot connect: {}", why(e)))
    })?;
    conn.send(frame).map_err(|e| match e {
        // The host refuses an oversized request before writing any of it.
        NetError::TooLarge => AcquirerError::Unreachable(format!(
            "{request} request: its {} bytes are over the host's byte cap; nothing was sent",
            frame.len()
        )),
        e => AcquirerError::OutcomeUnknown(format!(
            "{request} request: sending failed, perhaps part-way: {}",
            why(e)
        )),
    })?;
    let answer = request.answer();
    let mut answer_frame = read_exact(&conn, 2, answer, "length header")?;
    let len = message::announced_len(answer, &answer_frame)?;
    answer_frame.extend(read_exact(&conn, len, answer, "message")?);
    Ok(answer_frame)
}

/// Reads exactly `want` bytes of the answer's `what`, asking for no more than are missing.
fn read_exact(conn: &Connection, want: usize, answer: Mti, what: &str) -> Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(want);
    while buf.len() < want {
        let missing = want - buf.len();
        let mut chunk = conn
            .receive(u32::try_from(missing).unwrap_or(u32::MAX))
            .map_err(|e| match e {
                NetError::TooLarge => AcquirerError::MalformedReply(format!(
                    "{answer} answer: its {what} is over the host's byte cap"
                )),
                e => AcquirerError::OutcomeUnknown(format!(
                    "{answer} answer: receiving failed after {} of the {want} bytes of its {what}: {}",
                    buf.len(),
                    why(e)
                )),
            })?;
        if chunk.is_empty() {
            return Err(AcquirerError::OutcomeUnknown(format!(
                "{answer} answer: the acquirer closed the connection after {} of the {want} bytes of its {what}",
                buf.len()
            )));
        }
        chunk.truncate(missing);
        buf.extend_from_slice(&chunk);
    }
    Ok(buf)
}

fn why(e: NetError) -> String {
    match e {
        NetError::Timeout => "timed out".into(),
        NetError::Closed => "the connection closed".into(),
        NetError::ConnectFailed(s) => format!("connect failed: {s}"),
        NetError::TooLarge => "over the byte cap".into(),
        NetError::Io(s) => s,
    }
}
