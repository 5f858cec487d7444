//! What the kiosk tells its fleet every few seconds, from what it shows and the devices as the
//! last housekeeping found them (the journal's part is added by `fleet::journal_facts`).

use std::time::Duration;

use selfvend_fleet_wire::{DeviceReport, Heartbeat};

use super::view::{Device, DeviceLine, DeviceState, Screen, View};
use crate::fleet::one_line;
use crate::receipt_printer::Paper;

/// The heartbeat of a kiosk showing `view` for `shown`, its devices as `devices` say.
pub fn heartbeat(view: &View, shown: Duration, devices: &[DeviceLine]) -> Heartbeat {
    let (screen, money_in) = match &view.screen {
        Screen::Starting => ("starting", 0),
        Screen::Attract => ("attract", 0),
        Screen::OutOfService { .. } => ("out-of-service", 0),
        Screen::Reading => ("reading", 0),
        Screen::Account(_) => ("account", 0),
        Screen::Method { .. } => ("payment-choice", 0),
        Screen::Paying { paid, .. } => ("paying", paid.0),
        Screen::BankCard { .. } => ("bank-card", 0),
        Screen::Pin { .. } => ("pin", 0),
        Screen::Debiting { due } => ("debiting", due.0),
        Screen::TakeBankCard => ("take-bank-card", 0),
        Screen::TakeCard => ("take-card", 0),
        Screen::Processing(_) => ("processing", 0),
        Screen::AccountEntry { .. } => ("account-entry", 0),
        Screen::Bills(_) => ("bills", 0),
        Screen::BillResult(_) => ("bill-result", 0),
        Screen::Result(_) => ("result", 0),
        Screen::OperatorPin { .. } => ("operator-pin", 0),
        Screen::Operator(_) => ("operator", 0),
    };
    let mut reports: Vec<DeviceReport> = devices.iter().map(report).collect();
    if let Screen::OutOfService { why } = &view.screen {
        reports.push(DeviceReport {
            device: "kiosk".into(),
            name: String::new(),
            state: "out-of-service".into(),
            detail: one_line(why),
        });
    }
    Heartbeat {
        screen: screen.into(),
        screen_secs: shown.as_secs(),
        money_in_fen: money_in,
        devices: reports,
        cash_box: Default::default(),
        open_items: 0,
        items: Vec::new(),
        period: Default::default(),
        software_version: env!("CARGO_PKG_VERSION").into(),
        plugins: Vec::new(),
        journal_head: 0,
        rollouts: Vec::new(),
        commands_done: Vec::new(),
        config: None,
    }
}

fn report(line: &DeviceLine) -> DeviceReport {
    let (device, name) = match &line.device {
        Device::CardReader => ("card-reader", String::new()),
        Device::BankCardReader => ("bank-card-reader", String::new()),
        Device::BanknoteValidator => ("validator", String::new()),
        Device::ReceiptPrinter => ("printer", String::new()),
        Device::PinPad => ("pin-pad", String::new()),
        Device::Acquirer(name) => ("acquirer", name.clone()),
        Device::Backend(name) => ("backend", name.clone()),
    };
    let (state, detail) = match &line.state {
        DeviceState::Present(reader) => ("ok", reader.clone()),
        DeviceState::Missing(reader) => ("absent", reader.clone()),
        DeviceState::Inhibited | DeviceState::Answers => ("ok", String::new()),
        DeviceState::LastFailure(why) => ("fault", why.clone()),
        DeviceState::Printer(status) => (
            match status.paper {
                Paper::Out => "paper-out",
                _ if !status.is_ready() => "fault",
                Paper::NearEnd => "paper-near-end",
                Paper::Adequate => "ok",
            },
            printer_text(status),
        ),
        DeviceState::Keys { pin, mac } => {
            (if *pin && *mac { "ok" } else { "no-keys" }, String::new())
        }
        DeviceState::SignedOn(batch) => ("ok", format!("batch {batch:06}")),
        DeviceState::NotSignedOn => ("not-signed-on", String::new()),
        DeviceState::Failed(why) => ("fault", why.clone()),
    };
    DeviceReport {
        device: device.into(),
        name: one_line(&name),
        state: state.into(),
        detail: one_line(&detail),
    }
}

/// A printer's state in a few words.
fn printer_text(status: &crate::receipt_printer::PrinterStatus) -> String {
    let mut words = vec![
        match status.paper {
            Paper::Adequate => "paper ok",
            Paper::NearEnd => "paper near its end",
            Paper::Out => "paper out",
        }
        .to_string(),
    ];
    if status.offline {
        words.push("offline".into());
    }
    if status.cover_open {
        words.push("cover open".into());
    }
    if let Some(fault) = &status.fault {
        words.push(fault.to_string());
    }
    words.join(", ")
}
