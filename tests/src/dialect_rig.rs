//! Both backend-dialect plugins loaded beside the reference backend on loopback, for tests that
//! call a dialect directly (no kiosk), and the helpers they share.

use std::time::Duration;

use selfvend_host::backend::{
    BackendError, CardRef, Endpoint, PaymentKind, Purchase, RefusalCode, SaleRequest,
};
use selfvend_host::money::Fen;
use selfvend_host::plugin::{BackendSession, DialectError, Plugin};
use selfvend_sim::reference_backend::{Listen, ReferenceBackend};

use crate::SignedPlugins;

pub const TERMINAL: &str = "K-0001";
pub const MEMORY_CARD: &str = "3701000000000001";
pub const CPU_CARD: &str = "4401000000000001";

#[derive(Clone, Copy, Debug)]
pub enum Dialect {
    FixedText,
    JsonHttp,
}

pub const DIALECTS: [Dialect; 2] = [Dialect::FixedText, Dialect::JsonHttp];

/// The reference backend with its books in a scratch directory, and both dialects loaded.
pub struct Rig {
    pub backend: ReferenceBackend,
    pub fixed_text: Plugin,
    pub json_http: Plugin,
    _books: tempfile::TempDir,
    pub plugins: SignedPlugins,
}

impl Default for Rig {
    fn default() -> Self {
        Self::new()
    }
}

impl Rig {
    pub fn new() -> Rig {
        let books = tempfile::tempdir().unwrap();
        let backend =
            ReferenceBackend::start(&books.path().join("books.sqlite"), Listen::default()).unwrap();
        let plugins = SignedPlugins::new();
        let runtime = plugins.runtime();
        let fixed_text = runtime
            .load("fixed-text", &plugins.signed("fixed_text_dialect"))
            .unwrap();
        let json_http = runtime
            .load("json-http", &plugins.signed("json_http_dialect"))
            .unwrap();
        Rig {
            backend,
            fixed_text,
            json_http,
            _books: books,
            plugins,
        }
    }

    pub fn session(&self, dialect: Dialect) -> BackendSession {
        self.session_with(dialect, |_| {})
    }

    pub fn session_with(
        &self,
        dialect: Dialect,
        tune: impl FnOnce(&mut Endpoint),
    ) -> BackendSession {
        let (plugin, address) = match dialect {
            Dialect::FixedText => (&self.fixed_text, self.backend.fixed_text_address()),
            Dialect::JsonHttp => (&self.json_http, self.backend.json_http_address()),
        };
        let mut endpoint = Endpoint {
            address: address.to_string(),
            connect_timeout: Duration::from_millis(500),
            io_timeout: Duration::from_millis(2000),
            max_request_bytes: 16 * 1024,
            max_reply_bytes: 16 * 1024,
        };
        tune(&mut endpoint);
        plugin.backend_session(endpoint).unwrap()
    }
}

pub fn card(serial: &str, purchase_count: u32) -> CardRef {
    CardRef {
        card_serial: serial.into(),
        utility_code: serial[..4].into(),
        purchase_count,
        ..CardRef::default()
    }
}

pub fn sale(serial: u64, card: CardRef, fen: u64) -> SaleRequest {
    SaleRequest {
        terminal_id: TERMINAL.into(),
        kiosk_serial: serial,
        card,
        purchase: Purchase::Money(Fen(fen)),
        payment: PaymentKind::Cash,
        paid: Fen(fen),
    }
}

pub fn refused(result: Result<impl std::fmt::Debug, DialectError>) -> (RefusalCode, String) {
    match result {
        Err(DialectError::Backend(BackendError::Refused(r))) => (r.code, r.message),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

pub fn unknown(result: Result<impl std::fmt::Debug, DialectError>) -> String {
    match result {
        Err(DialectError::Backend(BackendError::OutcomeUnknown(why))) => why,
        other => panic!("expected an unknown outcome, got {other:?}"),
    }
}
