//! `selfvend bank …` against the acquirer simulator and the PIN pad on a pty: an operator signs
//! the kiosk on, sees the debits, settles the batch and forwards reversals.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use selfvend_host::backend::Purchase;
use selfvend_host::money::Fen;
use selfvend_host::pin_pad::{PinEntry, PinPad};
use selfvend_host::sale::{BankLink, CardPayment};
use selfvend_sim::pin_pad::PadAction;
use selfvend_tests::bank_rig::{BankSims, PIN, read_bank_card};
use selfvend_tests::kiosk_rig::{Kiosk, MemoryCard, TestCard, zhang_san};
use selfvend_tests::{selfvend_with, text};

#[test]
fn an_operator_signs_on_lists_debits_and_settles_the_batch() {
    let mut k = Kiosk::new();
    let sims = BankSims::start(&k.plugins);
    let config = sims.kiosk_config(&k);
    let cli = |args: &[&str]| {
        let out = selfvend_with(&config, args);
        assert!(
            out.status.success(),
            "{args:?}: {}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
        text(&out.stdout)
    };
    assert_eq!(
        cli(&["bank", "sign-on"]),
        "signed on to unionpay-acquirer: batch 000001\n"
    );
    assert_eq!(cli(&["bank", "debits"]), "no undecided debits\n");

    // A customer pays 10 yuan by bank card at the kiosk (this process holds the PIN pad).
    {
        let pad = Arc::new(Mutex::new(
            PinPad::open(Path::new(sims.pad_sim.path()), Duration::from_millis(500)).unwrap(),
        ));
        let runtime = k.plugins.runtime();
        let link = BankLink::new(
            sims.entry.clone(),
            runtime.load("iso8583", &sims.plugin_file).unwrap(),
            pad.clone(),
        );
        let bank_card = read_bank_card(&k);
        let card = MemoryCard(zhang_san(&k));
        let _inserted = card.insert(&k);
        let mut s = k.engine.start(k.connect()).unwrap();
        k.engine.quote(&mut s, Purchase::Money(Fen(1000))).unwrap();
        sims.pad_sim.act(&PadAction::pin(PIN));
        let entry = pad
            .lock()
            .unwrap()
            .get_pin(&bank_card.pan, 4, 12, Duration::from_secs(30), &mut |_| {})
            .unwrap();
        let PinEntry::Entered(pin) = entry else {
            panic!("{entry:?}");
        };
        let paid = k
            .engine
            .pay_by_card(&mut s, &link, &bank_card, Some(&pin))
            .unwrap();
        assert_eq!(paid, CardPayment::Approved { serial: 1 });
        k.engine.complete(&mut s, &mut k.printer).unwrap();
    }

    let all = cli(&["bank", "debits", "--all"]);
    assert!(
        all.starts_with(
            "#1    batch 000001 trace 000002      10.00 yuan  622202*********0128  approved  sale 1"
        ),
        "{all}"
    );
    assert_eq!(
        cli(&["bank", "settle"]),
        "batch 000001 settled, balanced: 1 purchases, 10.00 yuan; signed on to batch 000002\n"
    );
    assert_eq!(cli(&["bank", "reversals"]), "no reversals to send\n");

    // A kiosk with no acquirer says so.
    let out = selfvend_with(&k.config.path, &["bank", "sign-on"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("has no [acquirer]: this kiosk takes cash only"),
        "{}",
        text(&out.stderr)
    );
}
