//! Where a backend or acquirer is, and how long and how much the host lets a dialect talk to it.

use std::time::Duration;

/// A peer's address and the host's limits on one connection to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `host:port`, resolved by the host at connect time.
    pub address: String,
    pub connect_timeout: Duration,
    /// Deadline for each send and each receive.
    pub io_timeout: Duration,
    /// The most bytes one call may send.
    pub max_request_bytes: usize,
    /// The most bytes one call may receive.
    pub max_reply_bytes: usize,
}
