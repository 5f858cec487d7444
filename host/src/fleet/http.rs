//! A small blocking HTTP/1.1 client for the fleet link: one request per connection, with one
//! deadline for the whole exchange and a cap on the reply, so a slow or hostile server (one
//! that trickles its reply a byte at a time) holds the link thread up only until the deadline
//! and never fills its memory. Plain `http://` only: a fleet server
//! behind TLS is reached through a local terminating proxy (the kiosk carries no TLS stack).

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use super::FleetError;

/// A reply, at most (but a plugin download's, [`selfvend_fleet_wire::MAX_PLUGIN_BYTES`]).
pub const MAX_REPLY_BYTES: usize = 1024 * 1024;

/// A reply: its status, headers and body.
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    /// The value of header `name`, if the reply has it.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// `server` split into the host:port to connect to and the Host header's value.
fn authority(server: &str) -> Result<&str, FleetError> {
    let rest = server.strip_prefix("http://").ok_or_else(|| {
        FleetError::Server(format!(
            "{server}: only http:// fleet addresses are supported (put a TLS proxy beside the kiosk)"
        ))
    })?;
    Ok(rest.trim_end_matches('/'))
}

/// POSTs `body` (JSON) to `path` on `server` with `headers`.
pub(super) fn post(
    server: &str,
    path: &str,
    headers: &[(&str, String)],
    body: &[u8],
    timeout: Duration,
    max_reply: usize,
) -> Result<Reply, FleetError> {
    request_capped("POST", server, path, headers, body, timeout, max_reply)
}

/// One request (`Content-Type` JSON unless `headers` say otherwise) and its reply.
pub fn request(
    method: &str,
    server: &str,
    path: &str,
    headers: &[(&str, String)],
    body: &[u8],
    timeout: Duration,
) -> Result<Reply, FleetError> {
    request_capped(
        method,
        server,
        path,
        headers,
        body,
        timeout,
        MAX_REPLY_BYTES,
    )
}

/// [`request`], its reply at most `max_reply` bytes.
pub fn request_capped(
    method: &str,
    server: &str,
    path: &str,
    headers: &[(&str, String)],
    body: &[u8],
    timeout: Duration,
    max_reply: usize,
) -> Result<Reply, FleetError> {
    let deadline = Instant::now() + timeout;
    let host = authority(server)?;
    let unreachable = |e: std::io::Error| FleetError::Unreachable(format!("{server}: {e}"));
    let addr = host
        .to_socket_addrs()
        .map_err(unreachable)?
        .next()
        .ok_or_else(|| FleetError::Unreachable(format!("{server}: no address")))?;
    let mut stream = TcpStream::connect_timeout(&addr, timeout).map_err(unreachable)?;
    stream
        .set_read_timeout(Some(timeout))
        .map_err(unreachable)?;
    stream
        .set_write_timeout(Some(timeout))
        .map_err(unreachable)?;
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    if !headers
        .iter()
        .any(|(name, _)| name.eq_ignore_ascii_case("content-type"))
    {
        request.push_str("Content-Type: application/json\r\n");
    }
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    let lost = |e: std::io::Error| FleetError::NoReply(format!("{server}{path}: {e}"));
    for part in [request.as_bytes(), body] {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(FleetError::NoReply(format!(
                "{server}{path}: the request not sent within {} s",
                timeout.as_secs_f32()
            )));
        }
        stream.set_write_timeout(Some(left)).map_err(lost)?;
        stream.write_all(part).map_err(lost)?;
    }
    let mut raw = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    let late = || {
        FleetError::NoReply(format!(
            "{server}{path}: no whole reply within {} s",
            timeout.as_secs_f32()
        ))
    };
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(late());
        }
        stream.set_read_timeout(Some(left)).map_err(lost)?;
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => raw.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Err(late());
            }
            Err(e) => return Err(lost(e)),
        }
        if raw.len() > max_reply.saturating_add(16 * 1024) {
            return Err(FleetError::Server(format!(
                "{server}{path}: the reply is longer than {max_reply} bytes"
            )));
        }
    }
    parse(&raw).map_err(|why| FleetError::Server(format!("{server}{path}: {why}")))
}

fn parse(raw: &[u8]) -> Result<Reply, String> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut response = httparse::Response::new(&mut headers);
    let start = match response.parse(raw) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Err("the reply ends inside its headers".into()),
        Err(e) => return Err(format!("the reply is not HTTP: {e}")),
    };
    let status = response.code.ok_or("the reply has no status")?;
    let mut body = raw[start..].to_vec();
    let length = response
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
        .map(|h| {
            std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse::<usize>().ok())
                .ok_or("Content-Length is not a number")
        })
        .transpose()?;
    if let Some(length) = length {
        if body.len() < length {
            return Err(format!(
                "the reply's body is {} bytes, its Content-Length {length}",
                body.len()
            ));
        }
        body.truncate(length);
    }
    let headers = response
        .headers
        .iter()
        .map(|h| {
            (
                h.name.to_string(),
                String::from_utf8_lossy(h.value).into_owned(),
            )
        })
        .collect();
    Ok(Reply {
        status,
        headers,
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reply_is_its_status_and_its_content_length_of_body() {
        let r = parse(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}garbage").unwrap();
        assert_eq!((r.status, r.body.as_slice()), (200, &b"{}"[..]));
        assert_eq!(
            parse(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n{}").err(),
            Some("the reply's body is 2 bytes, its Content-Length 9".to_string())
        );
        assert!(parse(b"SSH-2.0-OpenSSH\r\n").is_err());
        assert!(authority("https://fleet").is_err());
    }

    #[test]
    fn a_server_trickling_its_reply_is_cut_off_at_the_deadline() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let server = format!("http://{}", listener.local_addr().unwrap());
        std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let _ = conn.read(&mut [0u8; 4096]);
            // Each byte well within a read timeout, the whole far beyond the deadline.
            for b in b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n"
                .iter()
                .cycle()
            {
                if conn.write_all(&[*b]).is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        let Err(FleetError::NoReply(why)) = post(
            &server,
            "/api/x",
            &[],
            b"{}",
            Duration::from_millis(600),
            MAX_REPLY_BYTES,
        ) else {
            panic!("a trickled reply was taken");
        };
        assert!(why.ends_with("no whole reply within 0.6 s"), "{why}");
    }
}
