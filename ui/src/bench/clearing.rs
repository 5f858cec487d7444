//! `selfvend bench clearing`: the clearing report of a period holding `sales` sales, on a
//! journal in a scratch directory, and the whole end of clearing (report, close, next period).
//!
//! The journal is filled in one transaction through the journal's own batch API: cash and
//! bank-card sales of two utilities in every state a sale can be in, one banknote per cash sale.

use std::time::Instant;

use anyhow::Context;
use selfvend_host::clearing;
use selfvend_host::config::{KioskConfig, PinHash};
use selfvend_host::journal::{Journal, NewSale};
use selfvend_host::money::Fen;
use serde_json::json;

use super::ms;

const PIN: &str = "123456";

pub fn run(sales: usize) -> anyhow::Result<()> {
    let dir = tempfile::tempdir().context("making a scratch directory")?;
    let pin_hash = clearing::hash_pin(PIN, PinHash::MIN_ITERATIONS)?;
    let config = KioskConfig::parse(
        &dir.path().join("kiosk.toml"),
        &format!(
            "[kiosk]\nterminal_id = \"BENCH-01\"\nregion = \"3701\"\ndata_dir = \".\"\n\
             [trust]\ndir = \"trust\"\n[operator]\npin_hash = \"{pin_hash}\"\n"
        ),
    )?;
    let mut journal = Journal::open(&dir.path().join("journal.sqlite"))?;

    let started = Instant::now();
    fill(&mut journal, sales)?;
    println!(
        "journal of {sales} sales built in {:.0} ms",
        ms(started.elapsed())
    );

    let started = Instant::now();
    let report = clearing::report(&journal, &config, None)?;
    println!("clearing report: {:.0} ms", ms(started.elapsed()));
    let sold: u64 = report.businesses.iter().map(|b| b.sold.count).sum();
    println!(
        "  ({sold} sold, {} banknotes, {} yuan expected in the box)",
        report.cash.banknotes, report.cash.expected
    );

    clearing::start(&mut journal, &config, PIN)?;
    let started = Instant::now();
    let ended = clearing::end(&mut journal, &config, PIN, Some(report.cash.expected), &[])?;
    println!(
        "clearing end (report, close period {}, open period {}): {:.0} ms",
        ended.report.period_id,
        ended.next_period,
        ms(started.elapsed())
    );
    Ok(())
}

/// Records `sales` sales and their banknotes in the current period, in one commit.
fn fill(journal: &mut Journal, sales: usize) -> anyhow::Result<()> {
    const STATES: [&str; 10] = [
        "written", "written", "written", "written", "written", "written", "granted", "pending",
        "refused", "manual",
    ];
    const NOTES: [u64; 4] = [1000, 2000, 5000, 10000];
    journal.commit(|b| {
        let audit = b.append("bench-fill", &json!({"sales": sales}))?;
        for i in 0..sales {
            let serial = b.allocate_serial(audit)?;
            let cash = i % 10 != 9;
            let paid = NOTES[i % NOTES.len()];
            b.record_sale(
                &NewSale {
                    serial,
                    payment: if cash { "cash" } else { "bank-card" },
                    card_serial: "3701000000000001",
                    utility: if i % 2 == 0 { "3701" } else { "4401" },
                    paid_fen: paid,
                    request_json: "{}",
                },
                audit,
            )?;
            b.sale_state(serial, &["intent"], STATES[i % STATES.len()], None, audit)?;
            if cash {
                b.record_banknote(Fen(paid).0, audit)?;
            }
        }
        Ok(())
    })?;
    Ok(())
}
