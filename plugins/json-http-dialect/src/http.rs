//! HTTP/1.1 client framing over the host's connection: one `POST` out, then exactly one response
//! read back, its body delimited by `Content-Length`, by chunked coding, or by the close. Bytes
//! after that response are never read.

use httparse::{Header, Status};

use crate::exports::selfvend::backend::dialect::BackendError;
use crate::selfvend::backend::connection::{Connection, NetError};
use crate::{malformed, unreachable};

/// The most bytes a response head (status line and headers) may take.
const HEAD_CAP: usize = 16 * 1024;
/// The most body bytes a response may carry, after chunk decoding.
const BODY_CAP: usize = 1024 * 1024;
/// The most headers a response head may carry.
const MAX_HEADERS: usize = 64;
/// The longest chunk-size line, or line after chunk data, this client reads.
const LINE_CAP: usize = 4 * 1024;
/// How many bytes to ask the host for at a time.
const READ_SIZE: u32 = 16 * 1024;

/// Posts `json` to `/api/v1/<call>` and returns the body of the backend's 200 response.
pub fn post(call: &'static str, json: &[u8]) -> Result<Vec<u8>, BackendError> {
    let conn = Connection::open()
        .map_err(|e| unreachable(format!("could not open a connection: {}", net(e))))?;
    conn.send(&request(call, json))
        .map_err(|e| unreachable(format!("could not send the request: {}", net(e))))?;
    let mut reader = Reader {
        conn,
        call,
        buf: Vec::new(),
        pos: 0,
    };
    let head = reader.head()?;
    match head.status {
        200 => reader.body(head.framing?),
        503 => Err(unreachable("backend answered 503: nothing was done")),
        other => Err(malformed(
            call,
            format!("HTTP status {other}, expected 200"),
        )),
    }
}

/// The request bytes exactly as the spec shows them.
fn request(call: &str, json: &[u8]) -> Vec<u8> {
    let mut bytes = format!(
        "POST /api/v1/{call} HTTP/1.1\r\n\
         Host: backend\r\n\
         Content-Type: application/json; charset=utf-8\r\n\
         Content-Length: {}\r\n\
         Connection: close\r\n\
         \r\n",
        json.len()
    )
    .into_bytes();
    bytes.extend_from_slice(json);
    bytes
}

/// The host's transport error, in words.
fn net(e: NetError) -> String {
    match e {
        NetError::Timeout => "timed out".into(),
        NetError::Closed => "the connection was closed".into(),
        NetError::ConnectFailed(why) => format!("connect failed: {why}"),
        NetError::TooLarge => "over the host's byte cap".into(),
        NetError::Io(why) => why,
    }
}

/// How a response body is delimited.
enum Framing {
    Length(usize),
    Chunked,
    UntilClose,
}

/// A final response's status, and how its body is delimited (an error only matters for a 200).
struct Head {
    status: u16,
    framing: Result<Framing, BackendError>,
}

/// The response side of the connection: bytes received and how far they have been consumed.
struct Reader {
    conn: Connection,
    call: &'static str,
    buf: Vec<u8>,
    pos: usize,
}

impl Reader {
    /// The bytes received and not yet consumed.
    fn pending(&self) -> &[u8] {
        self.buf.get(self.pos..).unwrap_or_default()
    }

    /// Asks the host for more bytes; false when the backend closed the connection.
    fn fill(&mut self) -> Result<bool, BackendError> {
        // Drop consumed bytes so a long chunked body does not keep its framing in memory.
        let consumed = self.pos.min(self.buf.len());
        self.buf.drain(..consumed);
        self.pos = 0;
        let bytes = self
            .conn
            .receive(READ_SIZE)
            .map_err(|e| unreachable(format!("receiving the reply failed: {}", net(e))))?;
        self.buf.extend_from_slice(&bytes);
        Ok(!bytes.is_empty())
    }

    /// Reads the head of the final response, skipping interim 1xx responses.
    fn head(&mut self) -> Result<Head, BackendError> {
        loop {
            let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let mut response = httparse::Response::new(&mut headers);
            let pending = self.pending();
            let window = pending.get(..HEAD_CAP).unwrap_or(pending);
            match response.parse(window) {
                Ok(Status::Complete(len)) => {
                    let status = response.code.unwrap_or_default();
                    let framing =
                        framing(response.headers).map_err(|what| malformed(self.call, what));
                    self.pos += len;
                    // 101 would switch protocols, so only it of the 1xx codes is not interim.
                    if (100..200).contains(&status) && status != 101 {
                        continue;
                    }
                    return Ok(Head { status, framing });
                }
                Ok(Status::Partial) if window.len() >= HEAD_CAP => {
                    return Err(malformed(self.call, "the response head is over 16 KiB"));
                }
                Ok(Status::Partial) => {
                    if !self.fill()? {
                        return Err(closed("the response head"));
                    }
                }
                Err(httparse::Error::TooManyHeaders) => {
                    return Err(malformed(
                        self.call,
                        format!("the response head has over {MAX_HEADERS} headers"),
                    ));
                }
                Err(e) => {
                    return Err(malformed(
                        self.call,
                        format!("the response head is not HTTP/1.1 ({e})"),
                    ));
                }
            }
        }
    }

    /// Reads the body after the head, as `framing` delimits it.
    fn body(&mut self, framing: Framing) -> Result<Vec<u8>, BackendError> {
        match framing {
            Framing::Length(len) => self.take(len, "the body"),
            Framing::Chunked => self.chunked(),
            Framing::UntilClose => self.until_close(),
        }
    }

    /// Consumes exactly `len` bytes; `what` names them if the connection closes first.
    fn take(&mut self, len: usize, what: &str) -> Result<Vec<u8>, BackendError> {
        while self.pending().len() < len {
            if !self.fill()? {
                return Err(closed(what));
            }
        }
        let bytes = self.pending().get(..len).unwrap_or_default().to_vec();
        self.pos += len;
        Ok(bytes)
    }

    /// Consumes one line of chunked framing and returns it without its CRLF (or bare LF).
    fn line(&mut self, what: &str) -> Result<Vec<u8>, BackendError> {
        loop {
            let pending = self.pending();
            match pending.iter().position(|&b| b == b'\n') {
                Some(end) if end <= LINE_CAP => {
                    let line = pending.get(..end).unwrap_or_default();
                    let line = line.strip_suffix(b"\r").unwrap_or(line).to_vec();
                    self.pos += end + 1;
                    return Ok(line);
                }
                None if pending.len() <= LINE_CAP => {
                    if !self.fill()? {
                        return Err(closed(what));
                    }
                }
                _ => return Err(malformed(self.call, format!("{what} is over 4 KiB"))),
            }
        }
    }

    /// Decodes a chunked body: size lines (extensions ignored), data, CRLF, a 0 chunk, trailers.
    fn chunked(&mut self) -> Result<Vec<u8>, BackendError> {
        let mut body = Vec::new();
        loop {
            let line = self.line("a chunk-size line")?;
            let size = chunk_size(&line).map_err(|what| malformed(self.call, what))?;
            if size == 0 {
                break;
            }
            if body.len().saturating_add(size) > BODY_CAP {
                return Err(malformed(self.call, "the chunked body is over 1 MiB"));
            }
            body.extend_from_slice(&self.take(size, "a chunk")?);
            if !self.line("the line after a chunk")?.is_empty() {
                return Err(malformed(self.call, "chunk data is not followed by CRLF"));
            }
        }
        // The trailer section must be read to its end for the response to be complete, but its
        // fields mean nothing to this dialect.
        let mut trailer_bytes = 0usize;
        loop {
            let line = self.line("a trailer line")?;
            if line.is_empty() {
                return Ok(body);
            }
            trailer_bytes = trailer_bytes.saturating_add(line.len());
            if trailer_bytes > HEAD_CAP {
                return Err(malformed(self.call, "the trailer section is over 16 KiB"));
            }
        }
    }

    /// Reads the body up to the backend closing the connection.
    fn until_close(&mut self) -> Result<Vec<u8>, BackendError> {
        while self.fill()? {
            if self.pending().len() > BODY_CAP {
                return Err(malformed(self.call, "the body is over 1 MiB"));
            }
        }
        Ok(self.pending().to_vec())
    }
}

/// The connection closed in the middle of `what`: the response is incomplete.
fn closed(what: &str) -> BackendError {
    unreachable(format!(
        "the backend closed the connection in the middle of {what}"
    ))
}

/// How the body is delimited, from the head's `Transfer-Encoding` and `Content-Length`.
fn framing(headers: &[Header<'_>]) -> Result<Framing, String> {
    let mut codings = Vec::new();
    let mut length: Option<u64> = None;
    for header in headers {
        if header.name.eq_ignore_ascii_case("transfer-encoding") {
            let value = header_text(header)?;
            codings.extend(
                value
                    .split(',')
                    .map(str::trim)
                    .filter(|coding| !coding.is_empty())
                    .map(str::to_ascii_lowercase),
            );
        } else if header.name.eq_ignore_ascii_case("content-length") {
            // A repeated Content-Length is acceptable only when every value agrees.
            for item in header_text(header)?.split(',').map(str::trim) {
                let value = item
                    .bytes()
                    .all(|b| b.is_ascii_digit())
                    .then(|| item.parse::<u64>().ok())
                    .flatten()
                    .ok_or_else(|| format!("Content-Length {item:?} is not a number"))?;
                if length.is_some_and(|seen| seen != value) {
                    return Err("the Content-Length values disagree".into());
                }
                length = Some(value);
            }
        }
    }
    // Transfer-Encoding overrides Content-Length (RFC 9112, section 6.3).
    if !codings.is_empty() {
        return if codings == ["chunked"] {
            Ok(Framing::Chunked)
        } else {
            Err(format!(
                "Transfer-Encoding {:?} is not supported (only chunked is)",
                codings.join(", ")
            ))
        };
    }
    match length {
        None => Ok(Framing::UntilClose),
        Some(len) => usize::try_from(len)
            .ok()
            .filter(|&len| len <= BODY_CAP)
            .map(Framing::Length)
            .ok_or_else(|| format!("Content-Length {len} is over the 1 MiB cap")),
    }
}

/// A framing header's value as text.
fn header_text<'h>(header: &Header<'h>) -> Result<&'h str, String> {
    std::str::from_utf8(header.value).map_err(|_| format!("the {} header is not text", header.name))
}

/// The size in a chunk-size line, `<hex>[;extensions]`; the extensions are ignored.
fn chunk_size(line: &[u8]) -> Result<usize, String> {
    let mut digits = line.split(|&b| b == b';').next().unwrap_or_default();
    // Whitespace may precede the extensions.
    while let [rest @ .., b' ' | b'\t'] = digits {
        digits = rest;
    }
    let hex = std::str::from_utf8(digits)
        .ok()
        .filter(|hex| !hex.is_empty() && hex.bytes().all(|b| b.is_ascii_hexdigit()))
        .ok_or_else(|| {
            format!(
                "chunk size {:?} is not hex",
                String::from_utf8_lossy(line.get(..32).unwrap_or(line))
            )
        })?;
    u64::from_str_radix(hex, 16)
        .ok()
        .and_then(|size| usize::try_from(size).ok())
        .ok_or_else(|| format!("chunk size {hex} is too large"))
}
