//! Both vendors' meter cards end to end through the real pcscd: a virtual card in a vpcd slot,
//! the host's PC/SC reader, the vendor codec in its sandbox, the PSC or MACs from the reference
//! backend through the card's dialect, and the vendor's meter taking the credit.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use selfvend_host::authority::BackendAuthority;
use selfvend_host::backend::{CardRef, Endpoint, PaymentKind, Purchase, SaleRequest};
use selfvend_host::card::{
    AuthRequest, AuthorityError, CardAuthority, CardChannel, CardData, CardError, CardRole,
    ChannelError, CreditGrant, PendingCredit, ReaderKind, VerifyOutcome, WriteAuth,
};
use selfvend_host::card_reader::Readers;
use selfvend_host::codecs::{self, IdentifyError};
use selfvend_host::money::{Fen, Wh};
use selfvend_host::plugin::{CardCodecSession, CodecError, Plugin, SharedAuthority, SharedCard};
use selfvend_sim::cpu_card::CpuCard;
use selfvend_sim::encryption_machine::EncryptionMachine;
use selfvend_sim::meter::{Meter, MeterInsert};
use selfvend_sim::reference_backend::{Listen, ReferenceBackend};
use selfvend_sim::sle4442::{self, Sle4442};
use selfvend_sim::vpcd::{Inserted, Response, SlotFaults, VirtualCard, lock, status};
use selfvend_tests::{ReaderSlot, SignedPlugins};

const WAIT: Option<Duration> = Some(Duration::from_secs(10));
const MEMORY_SERIAL: &str = "3701000000000001";
const CPU_SERIAL: &str = "4401000000000001";

/// A reader slot, the reference backend, and every plugin a card write needs.
struct Rig {
    slot: ReaderSlot,
    readers: Readers,
    backend: ReferenceBackend,
    codecs: Vec<Plugin>,
    fixed_text: Plugin,
    json_http: Plugin,
    machine: EncryptionMachine,
    _books: tempfile::TempDir,
    _plugins: SignedPlugins,
}

impl Rig {
    fn new() -> Rig {
        let slot = ReaderSlot::take();
        let books = tempfile::tempdir().unwrap();
        let backend =
            ReferenceBackend::start(&books.path().join("books.sqlite"), Listen::default()).unwrap();
        let plugins = SignedPlugins::new();
        let runtime = plugins.runtime();
        let load = |name: &str, file: &str| runtime.load(name, &plugins.signed(file)).unwrap();
        Rig {
            slot,
            readers: Readers::establish().unwrap(),
            codecs: vec![
                load("hengtai-sle4442", "hengtai_sle4442_codec"),
                load("lanling-cpu", "lanling_cpu_codec"),
            ],
            fixed_text: load("fixed-text", "fixed_text_dialect"),
            json_http: load("json-http", "json_http_dialect"),
            backend,
            machine: EncryptionMachine::default(),
            _books: books,
            _plugins: plugins,
        }
    }

    fn memory_card(&self) -> Arc<Mutex<Sle4442>> {
        Arc::new(Mutex::new(sle4442::ht01::issue(
            &self.machine,
            MEMORY_SERIAL,
            "3701",
            "C370100001",
            "M3701000001",
        )))
    }

    fn cpu_card(&self) -> Arc<Mutex<CpuCard>> {
        Arc::new(Mutex::new(CpuCard::issue(
            &self.machine,
            CPU_SERIAL,
            "4401",
            "C440100001",
            "M4401000001",
        )))
    }

    /// Inserts `card` and waits until pcscd sees it (after it has seen the last card go).
    fn insert<C: VirtualCard>(&self, card: &Arc<Mutex<C>>) -> Inserted {
        self.wait_gone();
        let inserted = Inserted::insert(card.clone(), self.slot.address).unwrap();
        assert!(self.readers.wait(&self.slot.reader, true, WAIT).unwrap());
        inserted
    }

    /// Waits until pcscd sees the slot empty (after a pull or a tear).
    fn wait_gone(&self) {
        assert!(self.readers.wait(&self.slot.reader, false, WAIT).unwrap());
    }

    fn connect(&self) -> SharedCard {
        Arc::new(Mutex::new(self.readers.connect(&self.slot.reader).unwrap()))
    }

    fn codec(&self, name: &str) -> &Plugin {
        self.codecs.iter().find(|c| c.name == name).unwrap()
    }

    fn endpoint(&self, utility: &str) -> (&Plugin, Endpoint) {
        let (plugin, address) = match utility {
            "3701" => (&self.fixed_text, self.backend.fixed_text_address()),
            _ => (&self.json_http, self.backend.json_http_address()),
        };
        (
            plugin,
            Endpoint {
                address: address.to_string(),
                connect_timeout: Duration::from_millis(500),
                io_timeout: Duration::from_secs(2),
                max_request_bytes: 16 * 1024,
                max_reply_bytes: 16 * 1024,
            },
        )
    }

    /// The card's own backend as the authority for one write.
    fn authority(&self, card: &CardData) -> SharedAuthority {
        let (plugin, endpoint) = self.endpoint(&card.utility_code);
        let session = plugin.backend_session(endpoint).unwrap();
        Arc::new(Mutex::new(BackendAuthority::new(session, card_ref(card))))
    }

    /// Sells `fen` to the card at its backend and returns the grant to write.
    fn sell(&self, card: &CardData, kiosk_serial: u64, fen: u64) -> CreditGrant {
        let (plugin, endpoint) = self.endpoint(&card.utility_code);
        let grant = plugin
            .backend_session(endpoint)
            .unwrap()
            .sale(&SaleRequest {
                terminal_id: "K-CARDS".into(),
                kiosk_serial,
                card: card_ref(card),
                purchase: Purchase::Money(Fen(fen)),
                payment: PaymentKind::Cash,
                paid: Fen(fen),
            })
            .unwrap();
        CreditGrant {
            card_serial: card.card_serial.clone(),
            purchase_count: grant.purchase_count,
            amount: grant.amount,
            energy: grant.energy,
            token: grant.token,
        }
    }

    /// Reads a fresh card of this kind and sells to it once; the card leaves the reader, and
    /// the grant can be written to fresh copies of it.
    fn first_sale<C: VirtualCard>(
        &self,
        template: &Arc<Mutex<C>>,
        kiosk_serial: u64,
        fen: u64,
    ) -> (CardData, CreditGrant) {
        let inserted = self.insert(template);
        let card = self.connect();
        let data = self.session(&card).1.read(&card).unwrap();
        let grant = self.sell(&data, kiosk_serial, fen);
        drop(card);
        inserted.pull_out();
        self.wait_gone();
        (data, grant)
    }

    /// Identifies the card in the slot with every codec and returns the claiming session.
    fn session(&self, card: &SharedCard) -> (String, CardCodecSession) {
        let found = codecs::identify(&self.codecs, card).unwrap();
        (found.codec.name.clone(), found.session)
    }
}

fn card_ref(card: &CardData) -> CardRef {
    CardRef {
        card_serial: card.card_serial.clone(),
        utility_code: card.utility_code.clone(),
        customer_number: card.customer_number.clone(),
        meter_number: card.meter_number.clone(),
        purchase_count: card.purchase_count,
        pending: card.pending.as_ref().map_or(Fen(0), |p| p.amount),
        pending_energy: card.pending.as_ref().map_or(Wh(0), |p| p.energy),
        return_data: card.return_data.as_ref().map(|r| r.raw.clone()),
    }
}

fn card_error<T: std::fmt::Debug>(r: Result<T, CodecError>) -> CardError {
    match r {
        Err(CodecError::Card(e)) => e,
        other => panic!("expected a card error, got {other:?}"),
    }
}

#[test]
fn both_cards_are_read_written_and_taken_by_their_meters() {
    let rig = Rig::new();
    let memory = rig.memory_card();
    let cpu = rig.cpu_card();
    let mut memory_meter = Meter::new("M3701000001", rig.machine.clone());
    let mut cpu_meter = Meter::new("M4401000001", rig.machine.clone());

    for (kind, serial, codec_name, card_type) in [
        (
            "memory",
            MEMORY_SERIAL,
            "hengtai-sle4442",
            "hengtai-sle4442-ht01",
        ),
        ("cpu", CPU_SERIAL, "lanling-cpu", "lanling-cpu-esam1"),
    ] {
        let inserted = match kind {
            "memory" => rig.insert(&memory),
            _ => rig.insert(&cpu),
        };
        let card = rig.connect();
        let found = codecs::identify(&rig.codecs, &card).unwrap();
        assert_eq!(found.codec.name, codec_name);
        assert_eq!(found.identification.card_type, card_type);
        let expected_auth = match kind {
            "memory" => WriteAuth::Psc,
            _ => WriteAuth::EncryptionMachine,
        };
        assert_eq!(found.identification.write_auth, expected_auth);
        let mut session = found.session;

        let data = session.read(&card).unwrap();
        assert_eq!(data.card_serial, serial);
        assert_eq!(data.role, CardRole::User);
        assert_eq!(data.purchase_count, 0);
        assert_eq!(
            (data.pending.clone(), data.return_data.clone()),
            (None, None)
        );

        let grant = rig.sell(&data, if kind == "memory" { 1 } else { 2 }, 5000);
        session
            .write_credit(&card, &grant, &rig.authority(&data))
            .unwrap();
        assert_eq!(
            session.verify(&card, &grant).unwrap(),
            VerifyOutcome::Written
        );
        let after = session.read(&card).unwrap();
        assert_eq!(after.purchase_count, 1, "{kind}");
        assert_eq!(
            after.pending,
            Some(PendingCredit {
                purchase_count: 1,
                amount: Fen(5000),
                energy: Wh(89_285),
            })
        );
        drop(session);
        drop(card);
        inserted.pull_out();
        rig.wait_gone();

        // The customer carries the card to the meter, and back to the kiosk.
        let taken = match kind {
            "memory" => memory_meter.insert_hengtai(&mut lock(&memory)),
            _ => cpu_meter.insert_lanling(&mut lock(&cpu)),
        };
        assert_eq!(
            taken,
            MeterInsert::Credited {
                purchase_count: 1,
                energy_wh: 89_285
            }
        );
        let _inserted = match kind {
            "memory" => rig.insert(&memory),
            _ => rig.insert(&cpu),
        };
        let card = rig.connect();
        let back = rig.session(&card).1.read(&card).unwrap();
        assert_eq!(back.pending, None, "{kind}: the meter took the credit");
        let returned = back.return_data.expect("the meter wrote its return data");
        assert_eq!(returned.meter_purchase_count, 1);
        assert_eq!(returned.remaining_energy, Some(Wh(89_285)));
        assert_eq!(returned.remaining, None);
        assert_eq!(returned.raw.len(), 12);
        assert_eq!(returned.raw[0], b'R');
    }
}

/// Writes `grant` on a fresh memory card torn after `k` bytes, then re-inserts the card and
/// finishes the job the way the sale engine will: verify, and re-write if not written.
#[test]
fn a_memory_card_write_torn_at_every_byte_ends_with_exactly_one_credit() {
    let rig = Rig::new();
    let (data, grant) = rig.first_sale(&rig.memory_card(), 10, 2000);

    // The slot body is 30 bytes and its CRC 2: a tear after any of the first 31 bytes loses
    // the write; after the 32nd there is nothing left to tear.
    for k in 0..=32u32 {
        let memory = rig.memory_card();
        lock(&memory).tear_after_bytes = Some(k);
        let inserted = rig.insert(&memory);
        let card = rig.connect();
        let (_, mut session) = rig.session(&card);
        let first = session.write_credit(&card, &grant, &rig.authority(&data));
        drop(session);
        drop(card);
        if k < 32 {
            assert_eq!(
                card_error(first),
                CardError::CardRemoved,
                "tear after byte {k}"
            );
            drop(inserted);
            rig.wait_gone();
            let _again = rig.insert(&memory);
            let card = rig.connect();
            let (_, mut session) = rig.session(&card);
            assert_eq!(
                session.verify(&card, &grant).unwrap(),
                VerifyOutcome::NotWritten,
                "tear after byte {k}"
            );
            session
                .write_credit(&card, &grant, &rig.authority(&data))
                .unwrap();
            assert_eq!(
                session.verify(&card, &grant).unwrap(),
                VerifyOutcome::Written
            );
        } else {
            first.unwrap();
        }
        assert_eq!(
            lock(&memory).error_counter,
            0x07,
            "the PSC was right each time"
        );

        let mut meter = Meter::new("M3701000001", rig.machine.clone());
        let c = &mut lock(&memory);
        assert_eq!(
            meter.insert_hengtai(c),
            MeterInsert::Credited {
                purchase_count: 1,
                energy_wh: grant.energy.0
            },
            "tear after byte {k}"
        );
        assert_eq!(meter.insert_hengtai(c), MeterInsert::NothingNew);
        assert_eq!(meter.remaining_wh, grant.energy.0);
    }
}

/// The CPU card's update is atomic: a card pulled before or after any APDU of the write either
/// carries the grant or not, and a re-write after verification leaves exactly one credit.
#[test]
fn a_cpu_card_write_torn_at_every_apdu_ends_with_exactly_one_credit() {
    let rig = Rig::new();
    let (data, grant) = rig.first_sale(&rig.cpu_card(), 20, 3000);

    let mut saw_written_without_answer = false;
    // SELECT, READ ×2, GET CHALLENGE, EXTERNAL AUTHENTICATE, GET CHALLENGE, UPDATE: seven.
    for k in 1..=7u32 {
        let cpu = rig.cpu_card();
        let inserted = rig.insert(&cpu);
        let card = rig.connect();
        let (_, mut session) = rig.session(&card);
        inserted.arm(SlotFaults {
            pull_after: Some(k),
            ..SlotFaults::default()
        });
        let first = session.write_credit(&card, &grant, &rig.authority(&data));
        assert_eq!(
            card_error(first),
            CardError::CardRemoved,
            "pulled after APDU {k}"
        );
        drop(session);
        drop(card);
        drop(inserted);
        rig.wait_gone();

        let _again = rig.insert(&cpu);
        let card = rig.connect();
        let (_, mut session) = rig.session(&card);
        match session.verify(&card, &grant).unwrap() {
            VerifyOutcome::Written => {
                assert_eq!(k, 7, "only the update itself writes");
                saw_written_without_answer = true;
            }
            VerifyOutcome::NotWritten => session
                .write_credit(&card, &grant, &rig.authority(&data))
                .unwrap(),
        }
        assert_eq!(
            session.verify(&card, &grant).unwrap(),
            VerifyOutcome::Written
        );
        assert_eq!(lock(&cpu).wallet_updates, 1, "pulled after APDU {k}");

        let mut meter = Meter::new("M4401000001", rig.machine.clone());
        let c = &mut lock(&cpu);
        assert!(matches!(
            meter.insert_lanling(c),
            MeterInsert::Credited {
                purchase_count: 1,
                ..
            }
        ));
        assert_eq!(meter.insert_lanling(c), MeterInsert::NothingNew);
    }
    assert!(saw_written_without_answer);
}

/// An authority that hands out a wrong PSC, counting how often it was asked.
struct WrongPsc(u32);

impl CardAuthority for WrongPsc {
    fn card_password(&mut self) -> Result<Vec<u8>, AuthorityError> {
        self.0 += 1;
        Ok(vec![0x00, 0x00, 0x00])
    }

    fn authenticate(&mut self, _: AuthRequest) -> Result<Vec<u8>, AuthorityError> {
        Err(AuthorityError::NotAllowed(
            "a memory card needs no MAC".into(),
        ))
    }
}

#[test]
fn a_wrong_psc_is_presented_once_per_session_and_a_locked_card_is_reported() {
    let rig = Rig::new();
    let memory = rig.memory_card();
    let _inserted = rig.insert(&memory);
    let card = rig.connect();
    let (_, mut session) = rig.session(&card);
    let data = session.read(&card).unwrap();
    let grant = rig.sell(&data, 30, 1000);
    let wrong = Arc::new(Mutex::new(WrongPsc(0)));
    let authority: SharedAuthority = wrong.clone();

    assert_eq!(
        card_error(session.write_credit(&card, &grant, &authority)),
        CardError::PscRefused(2)
    );
    // A second write in the same session gets no PSC from the host and presents none.
    assert!(matches!(
        card_error(session.write_credit(&card, &grant, &authority)),
        CardError::AuthorityFailed(_)
    ));
    assert_eq!(lock(&memory).psc_presentations, 1);
    assert_eq!(lock(&memory).error_counter, 0x03);

    let (_, mut second) = rig.session(&card);
    assert_eq!(
        card_error(second.write_credit(&card, &grant, &authority)),
        CardError::PscRefused(1)
    );
    let (_, mut third) = rig.session(&card);
    assert_eq!(
        card_error(third.write_credit(&card, &grant, &authority)),
        CardError::CardLocked
    );
    // Locked for ever: the codec sees the counter at zero and presents nothing more.
    let (_, mut fourth) = rig.session(&card);
    assert_eq!(
        card_error(fourth.write_credit(&card, &grant, &rig.authority(&data))),
        CardError::CardLocked
    );
    assert_eq!(lock(&memory).psc_presentations, 3);
    assert_eq!(wrong.lock().unwrap().0, 3);
    // Reads still work on a locked card.
    assert_eq!(fourth.read(&card).unwrap().card_serial, MEMORY_SERIAL);
}

#[test]
fn garbage_answers_and_a_card_pulled_mid_read_give_typed_errors() {
    let rig = Rig::new();
    let memory = rig.memory_card();
    let inserted = rig.insert(&memory);
    let card = rig.connect();
    let (_, mut session) = rig.session(&card);
    inserted.arm(SlotFaults {
        garbage: 1,
        ..SlotFaults::default()
    });
    match card_error(session.read(&card)) {
        CardError::UnexpectedStatus(f) => {
            assert_eq!((f.header, f.status), (vec![0xFF, 0xA4, 0x00, 0x00], 0x1234))
        }
        other => panic!("expected the garbage status, got {other:?}"),
    }
    inserted.arm(SlotFaults {
        pull_before: Some(1),
        ..SlotFaults::default()
    });
    assert_eq!(card_error(session.read(&card)), CardError::CardRemoved);
    drop(session);
    drop(card);
    drop(inserted);
    rig.wait_gone();

    let cpu = rig.cpu_card();
    let inserted = rig.insert(&cpu);
    let card = rig.connect();
    let (_, mut session) = rig.session(&card);
    inserted.arm(SlotFaults {
        garbage: 2,
        ..SlotFaults::default()
    });
    assert!(matches!(
        card_error(session.read(&card)),
        CardError::UnexpectedStatus(_) | CardError::Malformed(_)
    ));
    inserted.arm(SlotFaults {
        pull_before: Some(2),
        ..SlotFaults::default()
    });
    assert_eq!(card_error(session.read(&card)), CardError::CardRemoved);
}

/// A card no vendor of this kiosk made.
struct StrangeCard;

impl VirtualCard for StrangeCard {
    fn atr(&self) -> Vec<u8> {
        vec![0x3B, 0x02, 0x14, 0x50]
    }
    fn reset(&mut self) {}
    fn command(&mut self, _: &[u8]) -> Response {
        status(0x6D00)
    }
}

/// Counts the APDUs a codec sends, around the real card.
struct Counting {
    inner: SharedCard,
    apdus: usize,
}

impl CardChannel for Counting {
    fn atr(&self) -> Vec<u8> {
        self.inner.lock().unwrap().atr()
    }
    fn reader_kind(&self) -> ReaderKind {
        self.inner.lock().unwrap().reader_kind()
    }
    fn transmit(&mut self, command: &[u8]) -> Result<Vec<u8>, ChannelError> {
        self.apdus += 1;
        self.inner.lock().unwrap().transmit(command)
    }
}

#[test]
fn a_card_is_only_ever_handed_to_its_own_vendors_codec() {
    let rig = Rig::new();
    let strange = Arc::new(Mutex::new(StrangeCard));
    let inserted = rig.insert(&strange);
    let card = rig.connect();
    match codecs::identify(&rig.codecs, &card) {
        Err(IdentifyError::Unknown { atr }) => assert_eq!(atr, "3B021450"),
        Err(e) => panic!("expected an unknown card, got {e}"),
        Ok(found) => panic!("{} claimed a strange card", found.codec.name),
    }
    drop(card);
    drop(inserted);
    rig.wait_gone();

    let memory = rig.memory_card();
    let _inserted = rig.insert(&memory);
    let counting = Arc::new(Mutex::new(Counting {
        inner: rig.connect(),
        apdus: 0,
    }));
    let card: SharedCard = counting.clone();
    let mut lanling = rig.codec("lanling-cpu").card_session().unwrap();
    assert_eq!(lanling.identify(&card).unwrap(), None);
    assert_eq!(
        counting.lock().unwrap().apdus,
        0,
        "the CPU codec decides by ATR alone"
    );
    assert_eq!(rig.session(&card).0, "hengtai-sle4442");

    // Forced onto the memory card anyway, the CPU codec gets nowhere and writes nothing.
    let before = lock(&memory).memory;
    assert!(lanling.read(&card).is_err());
    assert_eq!(lock(&memory).memory, before);
}

#[test]
fn outside_pcsc_clients_see_the_virtual_reader_and_card() {
    let rig = Rig::new();
    let memory = rig.memory_card();
    let _inserted = rig.insert(&memory);

    let scan = std::process::Command::new("pcsc_scan")
        .arg("-r")
        .output()
        .expect("pcsc_scan (pcsc-tools)");
    assert!(
        String::from_utf8_lossy(&scan.stdout).contains(&rig.slot.reader),
        "{}",
        String::from_utf8_lossy(&scan.stdout)
    );

    let mut scriptor = std::process::Command::new("scriptor")
        .args(["-r", &rig.slot.reader])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("scriptor (pcsc-tools)");
    use std::io::Write;
    scriptor
        .stdin
        .take()
        .unwrap()
        .write_all(b"FF A4 00 00 01 06\nFF B0 00 04 04\n")
        .unwrap();
    let out = scriptor.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("< 48 54 30 31 90 00"), "{text}");
}
