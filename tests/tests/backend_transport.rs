//! The host's backend transport under a dialect: real TCP on loopback, deadlines and byte caps
//! from the endpoint, and the unknown-outcome rule (sent but unanswered is never a failure).

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::time::Duration;

use selfvend_host::backend::{
    BackendError, CardRef, Endpoint, PaymentKind, Purchase, SaleRequest, SaleStatus,
};
use selfvend_host::money::Fen;
use selfvend_host::plugin::{DialectError, Plugin, PluginLimits, PluginRuntime};
use selfvend_tests::SignedPlugins;

/// How the scripted backend answers the one request it accepts.
enum Script {
    Reply(&'static str),
    /// Read the request, then close without a word (the backend may have committed).
    DropAfterRequest,
    /// Read the request, then say nothing until the client gives up.
    Silent,
    /// Answer with more bytes than the endpoint's cap.
    Flood,
}

/// A backend on loopback that serves one connection by `script`; returns its address.
fn backend(script: Script) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    let address = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        let (stream, _) = listener.accept().expect("accept");
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut request = String::new();
        reader.read_line(&mut request).unwrap();
        let mut stream = stream;
        match script {
            Script::Reply(line) => stream.write_all(format!("{line}\n").as_bytes()).unwrap(),
            Script::DropAfterRequest => drop(stream),
            Script::Silent => std::thread::sleep(Duration::from_secs(3)),
            Script::Flood => {
                let _ = stream.write_all(&vec![b'x'; 8192]);
            }
        }
    });
    address
}

fn endpoint(address: String) -> Endpoint {
    Endpoint {
        address,
        connect_timeout: Duration::from_millis(500),
        io_timeout: Duration::from_millis(300),
        max_request_bytes: 1024,
        max_reply_bytes: 1024,
    }
}

fn dialect(rig: &SignedPlugins) -> Plugin {
    built(rig, "line_backend")
}

fn built(rig: &SignedPlugins, wasm: &str) -> Plugin {
    let runtime =
        PluginRuntime::new(rig.trust(), &rig.cache_dir(), PluginLimits::default()).unwrap();
    runtime.load("line-backend", &rig.signed(wasm)).unwrap()
}

fn sale() -> SaleRequest {
    SaleRequest {
        terminal_id: "K1".into(),
        kiosk_serial: 42,
        card: CardRef {
            card_serial: "CARD-1".into(),
            ..CardRef::default()
        },
        purchase: Purchase::Money(Fen(5000)),
        payment: PaymentKind::Cash,
        paid: Fen(5000),
    }
}

#[test]
fn a_sale_round_trips_over_loopback() {
    let rig = SignedPlugins::new();
    let plugin = dialect(&rig);
    let mut session = plugin
        .backend_session(endpoint(backend(Script::Reply("GRANT S-9 4 5000"))))
        .unwrap();
    let grant = session.sale(&sale()).unwrap();
    assert_eq!(
        (
            grant.backend_sale_id.as_str(),
            grant.purchase_count,
            grant.amount
        ),
        ("S-9", 4, Fen(5000))
    );
}

#[test]
fn a_refusal_stays_a_refusal() {
    let rig = SignedPlugins::new();
    let plugin = dialect(&rig);
    let mut session = plugin
        .backend_session(endpoint(backend(Script::Reply("REFUSE 账户已销户"))))
        .unwrap();
    match session.sale(&sale()) {
        Err(DialectError::Backend(BackendError::Refused(r))) => assert_eq!(r.message, "账户已销户"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_reply_lost_after_the_request_is_an_unknown_outcome() {
    let rig = SignedPlugins::new();
    let plugin = dialect(&rig);
    // The dialect calls this "unreachable"; the host knows the request went out.
    let mut session = plugin
        .backend_session(endpoint(backend(Script::DropAfterRequest)))
        .unwrap();
    match session.sale(&sale()) {
        Err(DialectError::Backend(BackendError::OutcomeUnknown(why))) => {
            assert!(why.starts_with("sale: request sent, then "), "{why}")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_silent_backend_is_an_unknown_outcome_at_the_deadline() {
    let rig = SignedPlugins::new();
    let plugin = dialect(&rig);
    let mut session = plugin
        .backend_session(endpoint(backend(Script::Silent)))
        .unwrap();
    assert_eq!(
        session.sale(&sale()).unwrap_err().to_string(),
        "outcome unknown: sale: request sent, then timed out"
    );
}

#[test]
fn a_refusal_the_dialect_makes_up_when_no_answer_came_is_not_taken() {
    let rig = SignedPlugins::new();
    // The dialect turns its timeout into "the backend said no": a refund of money the backend
    // may have taken, if the kiosk believed it.
    let plugin = built(&rig, "line_backend_timeout_refusal");
    let mut session = plugin
        .backend_session(endpoint(backend(Script::Silent)))
        .unwrap();
    assert_eq!(
        session.sale(&sale()).unwrap_err().to_string(),
        "outcome unknown: sale: request sent, then timed out; the dialect's refusal is not taken"
    );
    assert_eq!(
        session.overruled(),
        Some("a refusal (\"backend said no (timed out)\")")
    );
}

#[test]
fn a_success_the_dialect_makes_up_when_no_reply_came_is_not_taken() {
    let rig = SignedPlugins::new();
    // The same rule keeps a made-up grant, approval or reversal from being taken.
    let plugin = built(&rig, "line_backend_timeout_refusal");
    let mut session = plugin
        .backend_session(endpoint(backend(Script::DropAfterRequest)))
        .unwrap();
    assert_eq!(
        session.ping().unwrap_err().to_string(),
        "outcome unknown: ping: request sent, then no reply; the dialect's answer is not taken"
    );
    assert_eq!(session.overruled(), Some("an answer"));
}

#[test]
fn a_status_answer_stays_an_answer() {
    let rig = SignedPlugins::new();
    let plugin = dialect(&rig);
    let mut session = plugin
        .backend_session(endpoint(backend(Script::Reply("NONE"))))
        .unwrap();
    assert_eq!(session.sale_status("K1", 42).unwrap(), SaleStatus::NotFound);
    let mut session = plugin
        .backend_session(endpoint(backend(Script::Reply("REFUSE 欠费未缴"))))
        .unwrap();
    match session.sale_status("K1", 42) {
        Ok(SaleStatus::Refused(r)) => assert_eq!(r.message, "欠费未缴"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_not_found_the_dialect_makes_up_when_no_answer_came_is_not_taken() {
    let rig = SignedPlugins::new();
    // "No such sale" would make the kiosk give the money back, or sell again.
    let plugin = built(&rig, "line_backend_timeout_refusal");
    let mut session = plugin
        .backend_session(endpoint(backend(Script::Silent)))
        .unwrap();
    assert_eq!(
        session.sale_status("K1", 42).unwrap_err().to_string(),
        "outcome unknown: sale-status: request sent, then timed out; the dialect's answer is not \
         taken"
    );
    assert_eq!(session.overruled(), Some("an answer"));
}

#[test]
fn an_oversized_reply_is_cut_at_the_cap() {
    let rig = SignedPlugins::new();
    let plugin = dialect(&rig);
    let mut session = plugin
        .backend_session(endpoint(backend(Script::Flood)))
        .unwrap();
    assert_eq!(
        session.sale(&sale()).unwrap_err().to_string(),
        "outcome unknown: sale: request sent, then over the byte cap"
    );
}

#[test]
fn a_refused_connection_is_unreachable_and_nothing_was_sent() {
    let rig = SignedPlugins::new();
    let plugin = dialect(&rig);
    let closed = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let mut session = plugin.backend_session(endpoint(closed)).unwrap();
    match session.ping() {
        Err(DialectError::Backend(BackendError::Unreachable(why))) => {
            assert!(why.starts_with("connect failed: 127.0.0.1:"), "{why}")
        }
        other => panic!("{other:?}"),
    }
}
