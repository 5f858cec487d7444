//! The journal on disk: durable settings read back, the hash chain that names an edited,
//! inserted or deleted row (edited with the sqlite3 shell, as someone at the kiosk would), a
//! failed commit that stops the journal, serials from the database, counters that never go down.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use selfvend_host::journal::{Journal, JournalError, Problem, SCHEMA_VERSION};
use selfvend_tests::selfvend_bin;
use serde_json::json;

fn scratch() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal.sqlite");
    (dir, path)
}

/// A journal with five entries: a session, two banknotes, a sale intent with its serial.
fn five_entries(path: &Path) -> Journal {
    let mut j = Journal::open(path).unwrap();
    j.append("session-started", json!({"card": "3701000000000001"}))
        .unwrap();
    j.append("banknote-escrowed", json!({"fen": 5000})).unwrap();
    j.append("banknote-stacked", json!({"fen": 5000})).unwrap();
    j.commit(|b| {
        let id = b.append("sale-intent", &json!({"fen": 5000}))?;
        let serial = b.allocate_serial(id)?;
        b.append("serial-allocated", &json!({"serial": serial}))?;
        b.count("lifetime.cash_fen", 5000)
    })
    .unwrap();
    j
}

fn sqlite3(path: &Path, sql: &str) -> Output {
    Command::new("sqlite3")
        .arg(path)
        .arg(sql)
        .output()
        .expect("the sqlite3 shell (Debian package sqlite3)")
}

fn verify_cli(path: &Path) -> Output {
    Command::new(selfvend_bin())
        .args(["journal", "verify", "--journal"])
        .arg(path)
        .output()
        .unwrap()
}

#[test]
fn an_intact_journal_verifies_and_keeps_its_chain_across_restarts() {
    let (_dir, path) = scratch();
    drop(five_entries(&path));
    let mut j = Journal::open(&path).unwrap();
    j.append("session-ended", json!({})).unwrap();
    let report = j.verify().unwrap();
    assert_eq!((report.rows, report.problems), (6, vec![]));

    let entries = j.entries(1, 100).unwrap();
    assert_eq!(
        entries.iter().map(|e| e.kind.as_str()).collect::<Vec<_>>(),
        [
            "session-started",
            "banknote-escrowed",
            "banknote-stacked",
            "sale-intent",
            "serial-allocated",
            "session-ended"
        ]
    );
    assert_eq!(entries[4].body, json!({"serial": 1}));
    assert_eq!(entries[1].prev_hash, entries[0].hash);
    assert_eq!(j.counter("lifetime.cash_fen").unwrap(), 5000);

    let out = verify_cli(&path);
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("journal {}: 6 rows, the chain is intact\n", path.display())
    );
}

#[test]
fn a_row_edited_with_the_sqlite3_shell_is_named() {
    let (_dir, path) = scratch();
    drop(five_entries(&path));
    let out = sqlite3(
        &path,
        "UPDATE audit SET body = '{\"fen\":10000}' WHERE id = 2;",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let report = Journal::open(&path).unwrap().verify().unwrap();
    assert_eq!(
        report.problems,
        vec![Problem {
            row: 2,
            what: "was edited: its contents (banknote-escrowed) do not match its hash".into()
        }]
    );
    let out = verify_cli(&path);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!(
            "row 2: was edited: its contents (banknote-escrowed) do not match its hash\n\
             journal {}: 5 rows, 1 problem(s): it was changed outside the kiosk\n",
            path.display()
        )
    );
}

#[test]
fn deleted_and_inserted_rows_are_named() {
    let (_dir, path) = scratch();
    drop(five_entries(&path));
    assert!(
        sqlite3(&path, "DELETE FROM audit WHERE id = 3;")
            .status
            .success()
    );
    let report = Journal::open(&path).unwrap().verify().unwrap();
    assert_eq!(
        report.problems,
        vec![
            Problem {
                row: 4,
                what: "rows 3 to 3 before it are missing (deleted)".into()
            },
            Problem {
                row: 6,
                what: "the journal wrote 5 rows but holds 4: rows from 6 on are missing (deleted)"
                    .into()
            },
        ]
    );

    let (_dir, path) = scratch();
    drop(five_entries(&path));
    // A forged row slipped in where row 3 was, with a hash of its own making.
    assert!(
        sqlite3(
            &path,
            "UPDATE audit SET kind = 'banknote-returned', hash = 'ff' WHERE id = 3;"
        )
        .status
        .success()
    );
    let report = Journal::open(&path).unwrap().verify().unwrap();
    let rows: Vec<i64> = report.problems.iter().map(|p| p.row).collect();
    assert_eq!(rows, [3, 4], "{:?}", report.problems);

    let (_dir, path) = scratch();
    drop(five_entries(&path));
    // Deleting the newest rows leaves a shorter chain that is intact in itself.
    assert!(
        sqlite3(&path, "DELETE FROM audit WHERE id >= 4;")
            .status
            .success()
    );
    let report = Journal::open(&path).unwrap().verify().unwrap();
    assert_eq!(
        report.problems,
        vec![Problem {
            row: 4,
            what: "the journal wrote 5 rows but holds 3: rows from 4 on are missing (deleted)"
                .into()
        }]
    );
}

#[test]
fn lifetime_counters_cannot_be_turned_back() {
    let (_dir, path) = scratch();
    drop(five_entries(&path));
    let out = sqlite3(
        &path,
        "UPDATE counters SET value = 0 WHERE name = 'lifetime.cash_fen';",
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("a lifetime counter may not decrease"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The kiosk itself cannot count down either; trying is a bug, and the journal stops.
    let mut j = Journal::open(&path).unwrap();
    let err = j.commit(|b| b.count("lifetime.cash_fen", -1)).unwrap_err();
    assert!(
        err.to_string()
            .contains("CHECK constraint failed: value >= 0"),
        "{err}"
    );
    assert!(matches!(
        j.append("session-started", json!({})),
        Err(JournalError::Stopped { .. })
    ));
    assert_eq!(
        Journal::open(&path)
            .unwrap()
            .counter("lifetime.cash_fen")
            .unwrap(),
        5000
    );
}

#[test]
fn serials_come_from_the_database_and_are_never_reused() {
    let (_dir, path) = scratch();
    let serial = |j: &mut Journal| {
        j.commit(|b| {
            let id = b.append("sale-intent", &json!({}))?;
            b.allocate_serial(id)
        })
        .unwrap()
    };
    let mut j = Journal::open(&path).unwrap();
    assert_eq!((serial(&mut j), serial(&mut j)), (1, 2));
    // A transaction that fails after allocating gives its serial back with everything else.
    let _ = j.commit(|b| {
        let id = b.append("sale-intent", &json!({}))?;
        b.allocate_serial(id)?;
        b.count("lifetime.cash_fen", -5)
    });
    drop(j);
    let mut j = Journal::open(&path).unwrap();
    assert_eq!(serial(&mut j), 3);
}

#[test]
fn a_failed_commit_stops_the_journal_and_nothing_half_written_remains() {
    let (_dir, path) = scratch();
    let mut j = five_entries(&path);
    // As if the disk filled up: no room for one more page (SQLite keeps the pages it has).
    j.limit_pages(1).unwrap();
    let big = "x".repeat(64 * 1024);
    let err = j
        .append("receipt-printed", json!({ "text": big }))
        .unwrap_err();
    let JournalError::CommitFailed { cause, .. } = &err else {
        panic!("expected a failed commit, got {err}");
    };
    assert!(cause.contains("full"), "{cause}");
    // Every later call is refused, small or not.
    match j.append("session-ended", json!({})) {
        Err(JournalError::Stopped { reason, .. }) => assert!(reason.contains("full")),
        other => panic!("expected a stopped journal, got {other:?}"),
    }
    drop(j);
    let j = Journal::open(&path).unwrap();
    let report = j.verify().unwrap();
    assert_eq!((report.rows, report.problems), (5, vec![]));
}

#[test]
fn a_journal_that_cannot_be_durable_or_is_too_new_is_refused() {
    match Journal::open(Path::new(":memory:")) {
        Err(e @ JournalError::NotDurable { .. }) => assert_eq!(
            e.to_string(),
            "journal :memory:: not durable (journal_mode=memory, synchronous=2); the kiosk \
             needs WAL with synchronous=FULL"
        ),
        Err(e) => panic!("expected a refusal for durability, got {e}"),
        Ok(_) => panic!("an in-memory journal was accepted"),
    }
    let (_dir, path) = scratch();
    drop(five_entries(&path));
    assert!(sqlite3(&path, "PRAGMA user_version = 99;").status.success());
    match Journal::open(&path) {
        Err(e @ JournalError::SchemaTooNew { .. }) => assert_eq!(
            e.to_string(),
            format!(
                "journal {}: schema version 99 is newer than this kiosk's ({SCHEMA_VERSION}); run \
                 the kiosk version that wrote it",
                path.display()
            )
        ),
        Err(e) => panic!("expected a refusal for the schema, got {e}"),
        Ok(_) => panic!("a journal from the future was opened"),
    }
}

#[test]
fn two_writers_on_one_journal_keep_one_chain() {
    let (_dir, path) = scratch();
    // The running kiosk and an operator's CLI, each with the journal open.
    let mut kiosk = five_entries(&path);
    let mut operator = Journal::open(&path).unwrap();
    operator
        .append("manual-raised", json!({"serial": 1}))
        .unwrap();
    kiosk.append("session-started", json!({})).unwrap();
    operator.append("clearing-started", json!({})).unwrap();
    let report = kiosk.verify().unwrap();
    assert_eq!((report.rows, report.problems), (8, vec![]));
}
