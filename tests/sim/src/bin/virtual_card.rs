//! `selfvend-virtual-card`: a virtual meter card in a vpcd reader slot, controlled from stdin.

use std::io::BufRead;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use clap::{Parser, ValueEnum};
use selfvend_sim::cpu_card::CpuCard;
use selfvend_sim::encryption_machine::EncryptionMachine;
use selfvend_sim::meter::{Meter, MeterInsert};
use selfvend_sim::sle4442::{self, Sle4442};
use selfvend_sim::vpcd::{Inserted, lock};

#[derive(Clone, Copy, ValueEnum)]
enum Kind {
    /// Hengtai SLE4442 memory card (layout HT01).
    Hengtai,
    /// Lanling CPU card (layout LL-ESAM1).
    Lanling,
}

/// Inserts a virtual meter card into a vpcd reader slot of pcscd. Then reads commands from
/// stdin: `pull` (take the card out), `insert` (put it back), `meter` (carry it to its meter
/// and back), `quit`. The defaults match the reference backend's seeded accounts.
#[derive(Parser)]
struct Args {
    #[arg(long, value_enum, default_value = "hengtai")]
    kind: Kind,
    /// The vpcd slot's address (Debian's vsmartcard-vpcd listens on 35963 and 35964).
    #[arg(long, default_value = "127.0.0.1:35963")]
    vpcd: SocketAddr,
    #[arg(long)]
    serial: Option<String>,
    #[arg(long)]
    utility: Option<String>,
    #[arg(long)]
    customer: Option<String>,
    #[arg(long)]
    meter: Option<String>,
}

enum Card {
    Memory(Arc<Mutex<Sle4442>>),
    Cpu(Arc<Mutex<CpuCard>>),
}

fn main() -> ExitCode {
    let args = Args::parse();
    let machine = EncryptionMachine::default();
    let (serial, utility, customer, meter) = match args.kind {
        Kind::Hengtai => ("3701000000000001", "3701", "C370100001", "M3701000001"),
        Kind::Lanling => ("4401000000000001", "4401", "C440100001", "M4401000001"),
    };
    let serial = args.serial.as_deref().unwrap_or(serial);
    let utility = args.utility.as_deref().unwrap_or(utility);
    let customer = args.customer.as_deref().unwrap_or(customer);
    let meter_number = args.meter.as_deref().unwrap_or(meter);
    if serial.len() != 16 || !serial.bytes().all(|b| b.is_ascii_digit()) {
        eprintln!("selfvend-virtual-card: --serial must be 16 digits, not {serial:?}");
        return ExitCode::FAILURE;
    }
    if utility.len() != 4 || !utility.bytes().all(|b| b.is_ascii_digit()) {
        eprintln!("selfvend-virtual-card: --utility must be 4 digits, not {utility:?}");
        return ExitCode::FAILURE;
    }
    if customer.len() > 12
        || meter_number.len() > 12
        || !customer.is_ascii()
        || !meter_number.is_ascii()
    {
        eprintln!("selfvend-virtual-card: --customer and --meter are at most 12 ASCII characters");
        return ExitCode::FAILURE;
    }
    let card = match args.kind {
        Kind::Hengtai => Card::Memory(Arc::new(Mutex::new(sle4442::ht01::issue(
            &machine,
            serial,
            utility,
            customer,
            meter_number,
        )))),
        Kind::Lanling => Card::Cpu(Arc::new(Mutex::new(CpuCard::issue(
            &machine,
            serial,
            utility,
            customer,
            meter_number,
        )))),
    };
    let mut meter = Meter::new(meter_number, machine);
    let insert = |card: &Card| match card {
        Card::Memory(c) => Inserted::insert(c.clone(), args.vpcd),
        Card::Cpu(c) => Inserted::insert(c.clone(), args.vpcd),
    };
    let mut inserted = match insert(&card) {
        Ok(i) => Some(i),
        Err(e) => {
            eprintln!(
                "selfvend-virtual-card: cannot reach vpcd at {}: {e} (is pcscd running with vsmartcard-vpcd?)",
                args.vpcd
            );
            return ExitCode::FAILURE;
        }
    };
    println!(
        "card {serial} inserted at {}; commands: pull, insert, meter, quit",
        args.vpcd
    );
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        match line.trim() {
            "pull" => {
                inserted = None;
                println!("card pulled out");
            }
            "insert" => match insert(&card) {
                Ok(i) => {
                    inserted = Some(i);
                    println!("card inserted");
                }
                Err(e) => println!("cannot insert: {e}"),
            },
            "meter" => {
                inserted = None;
                let outcome = match &card {
                    Card::Memory(c) => meter.insert_hengtai(&mut lock(c)),
                    Card::Cpu(c) => meter.insert_lanling(&mut lock(c)),
                };
                match outcome {
                    MeterInsert::Credited {
                        purchase_count,
                        energy_wh,
                    } => println!(
                        "meter took purchase {purchase_count}: {energy_wh} Wh, {} Wh left",
                        meter.remaining_wh
                    ),
                    MeterInsert::NothingNew => println!("meter: nothing new on the card"),
                    MeterInsert::Refused(why) => println!("meter refused the card: {why}"),
                }
                match insert(&card) {
                    Ok(i) => {
                        inserted = Some(i);
                        println!("card back in the reader");
                    }
                    Err(e) => println!("cannot insert: {e}"),
                }
            }
            "quit" | "exit" => break,
            "" => {}
            other => println!("unknown command {other:?}; commands: pull, insert, meter, quit"),
        }
        if inserted.as_ref().is_some_and(|i| !i.is_inserted()) {
            inserted = None;
            println!("the card left the reader (torn or pulled by pcscd)");
        }
    }
    drop(inserted);
    ExitCode::SUCCESS
}
