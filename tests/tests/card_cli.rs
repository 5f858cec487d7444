//! `selfvend card watch|read` as an operator runs them against a virtual card in the rig's
//! pcscd, and `selfvend-virtual-card` as the README starts it.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use selfvend_host::card_reader::Readers;
use selfvend_sim::encryption_machine::EncryptionMachine;
use selfvend_sim::sle4442;
use selfvend_sim::vpcd::Inserted;
use selfvend_tests::{ReaderSlot, SignedPlugins, selfvend_bin, selfvend_with, text};

const WAIT: Option<Duration> = Some(Duration::from_secs(10));

/// `card watch` reports on every reader, so these tests take turns.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn kiosk_config(rig: &SignedPlugins) -> PathBuf {
    let path = rig.dir.path().join("kiosk.toml");
    std::fs::write(
        &path,
        format!(
            r#"
[kiosk]
terminal_id = "CLI-0002"
region = "3701"
data_dir = "data"

[trust]
dir = "trust"

[[plugin]]
name = "hengtai-sle4442"
role = "card-codec"
file = "{}"

[[plugin]]
name = "lanling-cpu"
role = "card-codec"
file = "{}"
"#,
            rig.signed("hengtai_sle4442_codec").display(),
            rig.signed("lanling_cpu_codec").display(),
        ),
    )
    .unwrap();
    path
}

#[test]
fn an_operator_watches_and_reads_meter_cards() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let rig = SignedPlugins::new();
    let config = kiosk_config(&rig);
    let slot = ReaderSlot::take();
    let readers = Readers::establish().unwrap();
    assert!(readers.wait(&slot.reader, false, WAIT).unwrap());

    let out = selfvend_with(&config, &["card", "read", "--reader", &slot.reader]);
    assert!(!out.status.success());
    assert_eq!(
        text(&out.stderr),
        format!("selfvend: no card in reader `{}`\n", slot.reader)
    );
    let out = selfvend_with(&config, &["card", "read", "--reader", "nope"]);
    assert!(text(&out.stderr).starts_with("selfvend: no reader named `nope`; readers: "));

    let mut watch = Command::new(selfvend_bin())
        .arg("--config")
        .arg(&config)
        .args(["card", "watch", "--events", "2"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(watch.stdout.take().unwrap()).lines();
    // Wait until it is watching: it lists the readers first.
    let first = lines.next().unwrap().unwrap();
    assert!(first.starts_with("reader: selfvend vpcd 00 0"), "{first}");
    let second = lines.next().unwrap().unwrap();
    assert!(second.starts_with("reader: selfvend vpcd 00 0"), "{second}");

    let card = Arc::new(Mutex::new(sle4442::ht01::issue(
        &EncryptionMachine::default(),
        "3701000000000001",
        "3701",
        "C370100001",
        "M3701000001",
    )));
    let inserted = Inserted::insert(card, slot.address).unwrap();
    assert!(readers.wait(&slot.reader, true, WAIT).unwrap());

    let out = selfvend_with(&config, &["card", "read", "--reader", &slot.reader]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        format!(
            "reader:          {}\n\
             codec:           hengtai-sle4442 (hengtai-sle4442-ht01)\n\
             card serial:     3701000000000001\n\
             utility code:    3701\n\
             customer number: C370100001\n\
             meter number:    M3701000001\n\
             role:            User\n\
             purchase count:  0\n\
             pending credit:  none\n\
             meter returned:  nothing yet\n",
            slot.reader
        )
    );
    let out = selfvend_with(
        &config,
        &["card", "read", "--reader", &slot.reader, "--json"],
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["codec"], "hengtai-sle4442");
    assert_eq!(json["card-type"], "hengtai-sle4442-ht01");
    assert_eq!(json["card"]["card-serial"], "3701000000000001");
    assert_eq!(json["card"]["purchase-count"], 0);
    assert_eq!(json["card"]["pending"], serde_json::Value::Null);

    // The codec's own log reaches the kiosk's log at debug, attributed to it.
    let out = Command::new(selfvend_bin())
        .args(["--config", config.to_str().unwrap()])
        .args(["card", "read", "--reader", &slot.reader])
        .env("SELFVEND_LOG", "debug")
        .output()
        .unwrap();
    // Without the log's colours.
    let log: String = text(&out.stderr)
        .split('\x1b')
        .enumerate()
        .map(|(i, part)| match (i, part.find('m')) {
            (0, _) | (_, None) => part,
            (_, Some(end)) => &part[end + 1..],
        })
        .collect();
    assert!(
        log.contains("plugin=hengtai-sle4442")
            && log.contains("[debug] read card ************0001: purchase count 0"),
        "{log}"
    );

    // While another program holds the card, `card read` waits its turn instead of failing.
    let held = readers.connect(&slot.reader).unwrap();
    let reading = std::thread::spawn({
        let (config, reader) = (config.clone(), slot.reader.clone());
        move || selfvend_with(&config, &["card", "read", "--reader", &reader])
    });
    std::thread::sleep(Duration::from_millis(600));
    drop(held);
    let out = reading.join().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("card serial:     3701000000000001\n"));

    inserted.pull_out();
    assert!(readers.wait(&slot.reader, false, WAIT).unwrap());
    let events: Vec<String> = lines.map(Result::unwrap).collect();
    assert!(watch.wait().unwrap().success());
    assert_eq!(
        events,
        vec![
            format!(
                "card inserted in {}: ATR 3B04A2131091, hengtai-sle4442 card hengtai-sle4442-ht01",
                slot.reader
            ),
            format!("card removed from {}", slot.reader),
        ]
    );
}

#[test]
fn the_virtual_card_program_inserts_pulls_and_visits_its_meter() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let slot = ReaderSlot::take();
    let readers = Readers::establish().unwrap();
    assert!(readers.wait(&slot.reader, false, WAIT).unwrap());
    let bin = selfvend_bin().with_file_name("selfvend-virtual-card");
    let mut child = Command::new(bin)
        .args(["--kind", "lanling", "--vpcd", &slot.address.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    assert_eq!(
        lines.next().unwrap().unwrap(),
        format!(
            "card 4401000000000001 inserted at {}; commands: pull, insert, meter, quit",
            slot.address
        )
    );
    assert!(readers.wait(&slot.reader, true, WAIT).unwrap());
    writeln!(stdin, "meter").unwrap();
    assert_eq!(
        lines.next().unwrap().unwrap(),
        "meter: nothing new on the card"
    );
    assert_eq!(lines.next().unwrap().unwrap(), "card back in the reader");
    writeln!(stdin, "pull").unwrap();
    assert_eq!(lines.next().unwrap().unwrap(), "card pulled out");
    assert!(readers.wait(&slot.reader, false, WAIT).unwrap());
    writeln!(stdin, "quit").unwrap();
    assert!(child.wait().unwrap().success());
}
