//! `selfvend-validator`: a simulated ID-003 bill validator on a pty, driven from stdin.

use std::io::{BufRead, Write};
use std::process::ExitCode;

use selfvend_sim::id003_validator::{Action, SimulatedValidator};

const HELP: &str = "\
commands:
  insert <yuan>                    a genuine banknote (1, 5, 10, 20, 50, 100; others are rejected)
  counterfeit [reason]             a forged banknote, rejected with reason code (hex, default 77)
  jam                              a banknote jams in the acceptor head
  jam-stacker <yuan>               a banknote jams on its way to the cash box
  remove-box | replace-box         the operator pulls the cash box out / puts it back
  box-full                         the cash box fills up
  clear                            the operator clears a jam or empties a full cash box
  power-cycle                      the power goes and comes back
  power-cycle-with-bill [acceptor|stacker] [yuan]
                                   a banknote (default CNY 10) is in the acceptor head / on
                                   its way to the cash box when the power goes
  lose-ack                         the validator misses the host's next ACK to VEND VALID
  garbage | bad-crc                the next answer is noise / has a wrong CRC
  silence [frames]                 the validator hears nothing for a while (default 10 frames)
  status                           what the validator credited, stacked, returned, rejected
  help | quit";

fn main() -> ExitCode {
    let validator = match SimulatedValidator::start_logging(|line| println!("validator: {line}")) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("selfvend-validator: cannot create a pty: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!("validator on {}", validator.path());
    println!("(ID-003, 9600 8E1; type `help` for commands)");
    let _ = std::io::stdout().flush();
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            [] => {}
            ["quit" | "exit"] => break,
            ["help"] => println!("{HELP}"),
            ["status"] => {
                let t = validator.tally();
                println!(
                    "credited {:?}, cash box {:?}, returned {:?}, rejected {:02X?}, ACKs missed {}",
                    t.credited, t.cash_box, t.returned, t.rejected, t.acks_ignored
                );
            }
            words => match parse(words) {
                Ok(action) => validator.act(action),
                Err(e) => println!("{e}; type `help` for commands"),
            },
        }
        let _ = std::io::stdout().flush();
    }
    ExitCode::SUCCESS
}

fn parse(words: &[&str]) -> Result<Action, String> {
    let yuan = |w: &str| {
        w.parse::<u32>()
            .map_err(|_| format!("`{w}` is not a number of yuan"))
    };
    let hex = |w: &str| u8::from_str_radix(w, 16).map_err(|_| format!("`{w}` is not a hex byte"));
    Ok(match words {
        ["insert", y] => Action::Insert(yuan(y)?),
        ["counterfeit"] => Action::Counterfeit(0x77),
        ["counterfeit", code] => Action::Counterfeit(hex(code)?),
        ["jam"] => Action::JamInAcceptor,
        ["jam-stacker", y] => Action::JamInStacker(yuan(y)?),
        ["remove-box"] => Action::RemoveBox,
        ["replace-box"] => Action::ReplaceBox,
        ["box-full"] => Action::BoxFull,
        ["clear"] => Action::Clear,
        ["power-cycle"] => Action::PowerCycle,
        ["power-cycle-with-bill"] => Action::PowerCycleWithBillInAcceptor(10),
        ["power-cycle-with-bill", place, rest @ ..] => {
            let y = match rest {
                [] => 10,
                [y] => yuan(y)?,
                _ => return Err("too many words".into()),
            };
            match *place {
                "acceptor" => Action::PowerCycleWithBillInAcceptor(y),
                "stacker" => Action::PowerCycleWithBillInStacker(y),
                other => return Err(format!("`{other}` is neither `acceptor` nor `stacker`")),
            }
        }
        ["lose-ack"] => Action::LoseNextAck,
        ["garbage"] => Action::Garbage,
        ["bad-crc"] => Action::BadCrc,
        ["silence"] => Action::Silence(10),
        ["silence", n] => Action::Silence(
            n.parse()
                .map_err(|_| format!("`{n}` is not a number of frames"))?,
        ),
        _ => return Err(format!("unknown command `{}`", words.join(" "))),
    })
}
