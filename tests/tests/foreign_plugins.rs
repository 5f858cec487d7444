//! Plugins from other toolchains: the plain test codec written in Python (componentize-py) and
//! in JavaScript (ComponentizeJS). Such components import much of WASI 0.2 (files, sockets,
//! environment, clocks, random); they must load and run, and find those capabilities empty.

use selfvend_host::card::{CardError, CreditGrant, VerifyOutcome, WriteAuth};
use selfvend_host::money::{Fen, Wh};
use selfvend_host::plugin::{CodecError, SharedCard};
use selfvend_tests::{RecordCard, SignedPlugins};

#[test]
fn a_python_codec_loads_runs_and_finds_the_sandbox_empty() {
    let plugins = SignedPlugins::new();
    let runtime = plugins.runtime();
    let plugin = runtime
        .load("plain-card-py", &plugins.signed("plain_card_py"))
        .unwrap();
    for wasi in [
        "wasi:filesystem/preopens@0.2",
        "wasi:sockets/tcp-create-socket@0.2",
        "wasi:cli/environment@0.2",
    ] {
        assert!(
            plugin
                .inspection
                .imports
                .iter()
                .any(|i| i.starts_with(wasi)),
            "{wasi} is not imported: {:?}",
            plugin.inspection.imports
        );
    }

    let card = RecordCard::shared(b"plain", "CARD-1|4101|C-77|M-88|3");
    let shared: SharedCard = card.clone();
    let mut session = plugin.card_session().unwrap();
    assert_eq!(session.about().unwrap().name, "plain-card-py");
    let id = session.identify(&shared).unwrap().expect("its own card");
    assert_eq!(
        (id.card_type.as_str(), id.write_auth),
        ("plain-test-card", WriteAuth::None)
    );

    let data = session.read(&shared).unwrap();
    assert_eq!(
        (
            data.card_serial.as_str(),
            data.meter_number.as_str(),
            data.purchase_count
        ),
        ("CARD-1", "M-88", 3)
    );
    // What the Python code saw of the sandbox when it looked.
    assert_eq!(
        session.log(),
        "[info] file: refused (FileNotFoundError); environment: 0 variables; arguments: 0\n"
    );

    let grant = |count| CreditGrant {
        card_serial: "CARD-1".into(),
        purchase_count: count,
        amount: Fen(5000),
        energy: Wh(89_285),
        token: vec![],
    };
    match session.write_credit(&shared, &grant(9), &test_authority()) {
        Err(CodecError::Card(CardError::GrantRejected(why))) => {
            assert_eq!(why, "grant carries purchase count 9, card is at 3")
        }
        other => panic!("expected a rejected grant, got {other:?}"),
    }
    session
        .write_credit(&shared, &grant(4), &test_authority())
        .unwrap();
    assert_eq!(
        session.verify(&shared, &grant(4)).unwrap(),
        VerifyOutcome::Written
    );
    assert_eq!(card.lock().unwrap().record, "CARD-1|4101|C-77|M-88|4");
}

#[test]
fn a_javascript_codec_loads_and_runs() {
    let plugins = SignedPlugins::new();
    let runtime = plugins.runtime();
    let plugin = runtime
        .load("plain-card-js", &plugins.signed("plain_card_js"))
        .unwrap();
    assert!(
        plugin
            .inspection
            .imports
            .iter()
            .any(|i| i.starts_with("wasi:filesystem/preopens@0.2")),
        "{:?}",
        plugin.inspection.imports
    );
    let card = RecordCard::shared(b"plain", "CARD-2|4401|C-1|M-2|0");
    let shared: SharedCard = card.clone();
    let mut session = plugin.card_session().unwrap();
    assert_eq!(session.about().unwrap().name, "plain-card-js");
    assert!(session.identify(&shared).unwrap().is_some());
    let data = session.read(&shared).unwrap();
    assert_eq!(
        (data.card_serial.as_str(), data.purchase_count),
        ("CARD-2", 0)
    );
    assert_eq!(
        session.log(),
        "[info] javascript codec: environment has 0 variables\n"
    );
    let grant = CreditGrant {
        card_serial: "CARD-2".into(),
        purchase_count: 1,
        amount: Fen(1000),
        energy: Wh(17_857),
        token: vec![],
    };
    session
        .write_credit(&shared, &grant, &test_authority())
        .unwrap();
    assert_eq!(
        session.verify(&shared, &grant).unwrap(),
        VerifyOutcome::Written
    );
    assert_eq!(card.lock().unwrap().record, "CARD-2|4401|C-1|M-2|1");
}

fn test_authority() -> selfvend_host::plugin::SharedAuthority {
    struct Nothing;
    impl selfvend_host::card::CardAuthority for Nothing {
        fn card_password(&mut self) -> Result<Vec<u8>, selfvend_host::card::AuthorityError> {
            Err(selfvend_host::card::AuthorityError::NotAllowed(
                "no PSC here".into(),
            ))
        }
        fn authenticate(
            &mut self,
            _: selfvend_host::card::AuthRequest,
        ) -> Result<Vec<u8>, selfvend_host::card::AuthorityError> {
            Err(selfvend_host::card::AuthorityError::NotAllowed(
                "no MAC here".into(),
            ))
        }
    }
    std::sync::Arc::new(std::sync::Mutex::new(Nothing))
}
