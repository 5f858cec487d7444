//! A plugin's log: its stderr and stdout and its `log` calls, in one bounded buffer.
//!
//! Writes past the bound are counted and dropped, never refused: a chatty plugin must not
//! fail (Rust's `eprintln!` panics when stderr refuses a write), and must not grow the host.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// A bounded, shareable log buffer for one plugin instance. What it keeps also goes to the
/// kiosk's own log at debug level, attributed to the plugin.
#[derive(Debug, Clone)]
pub struct PluginLog {
    plugin: Arc<str>,
    inner: Arc<Mutex<Buffer>>,
}

#[derive(Debug)]
struct Buffer {
    bytes: Vec<u8>,
    capacity: usize,
    dropped: u64,
}

impl PluginLog {
    pub fn new(plugin: &str, capacity: usize) -> Self {
        PluginLog {
            plugin: plugin.into(),
            inner: Arc::new(Mutex::new(Buffer {
                bytes: Vec::new(),
                capacity,
                dropped: 0,
            })),
        }
    }

    /// Appends what fits; counts the rest as dropped.
    pub fn append(&self, data: &[u8]) {
        let mut buf = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let room = buf.capacity.saturating_sub(buf.bytes.len());
        let take = room.min(data.len());
        buf.bytes.extend_from_slice(&data[..take]);
        buf.dropped += (data.len() - take) as u64;
        drop(buf);
        if take > 0 {
            // Quoted, so a plugin cannot forge lines of the kiosk's log; long digit runs masked,
            // so a card number a plugin logs by mistake goes no further than its own buffer.
            let text = mask_digits(String::from_utf8_lossy(&data[..take]).trim_end());
            tracing::debug!(plugin = %self.plugin, text = ?text, "plugin log");
        }
    }

    /// Appends one line from the plugin's `log` import.
    pub fn line(&self, level: &str, message: &str) {
        self.append(format!("[{level}] {message}\n").as_bytes());
    }

    /// The log as text, with a note when bytes were dropped.
    pub fn text(&self) -> String {
        let buf = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let mut text = String::from_utf8_lossy(&buf.bytes).into_owned();
        if buf.dropped > 0 {
            text.push_str(&format!(
                "\n[log full: {} more bytes dropped]\n",
                buf.dropped
            ));
        }
        text
    }

    /// The last `n` characters of the log, for error messages.
    pub fn tail(&self, n: usize) -> String {
        let text = self.text();
        let trimmed = text.trim_end();
        let start = trimmed
            .char_indices()
            .rev()
            .nth(n.saturating_sub(1))
            .map_or(0, |(i, _)| i);
        trimmed[start..].to_string()
    }

    /// Bytes kept so far.
    pub fn len(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .bytes
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// `text` with each run of 10 or more digits masked but its last 4 (a PAN, an account).
pub fn mask_digits(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut run = String::new();
    let flush = |run: &mut String, out: &mut String| {
        if run.len() >= 10 {
            out.push_str(&"*".repeat(run.len() - 4));
            out.push_str(&run[run.len() - 4..]);
        } else {
            out.push_str(run);
        }
        run.clear();
    };
    for c in text.chars() {
        if c.is_ascii_digit() {
            run.push(c);
        } else {
            flush(&mut run, &mut out);
            out.push(c);
        }
    }
    flush(&mut run, &mut out);
    out
}

impl IsTerminal for PluginLog {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for PluginLog {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[async_trait::async_trait]
impl Pollable for PluginLog {
    async fn ready(&mut self) {}
}

impl OutputStream for PluginLog {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.append(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(64 * 1024)
    }
}

impl tokio::io::AsyncWrite for PluginLog {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.append(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_keeps_what_fits_and_counts_the_rest() {
        let log = PluginLog::new("test", 10);
        log.append(b"0123456789abc");
        assert_eq!(log.len(), 10);
        assert_eq!(log.text(), "0123456789\n[log full: 3 more bytes dropped]\n");
    }

    #[test]
    fn long_digit_runs_are_masked_but_their_last_four() {
        assert_eq!(
            mask_digits("card 6222021234567890128, count 12"),
            "card ***************0128, count 12"
        );
    }
}
