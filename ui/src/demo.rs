//! Demo mode: a kiosk whose config names no hardware runs on the simulators, which speak the
//! real devices' protocols: virtual meter and bank cards behind the rig's pcscd (vpcd), the
//! ID-003 validator, the ESC/POS printer and the PIN pad on ptys, a reference backend for each
//! configured utility and the acquirer on loopback. A side panel plays the customer's hands.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use anyhow::{Context, bail};
use eframe::egui::{self, Button, Color32, RichText, ScrollArea, Ui};
use selfvend_host::config::{Baud, KioskConfig, ReaderDevice, SerialDevice};
use selfvend_sim::acquirer::Acquirer;
use selfvend_sim::cpu_card::CpuCard;
use selfvend_sim::encryption_machine::EncryptionMachine;
use selfvend_sim::escpos_printer::{Printout, SimulatedPrinter};
use selfvend_sim::id003_validator::{Action, SimulatedValidator};
use selfvend_sim::pin_pad::{PadAction, SimulatedPinPad};
use selfvend_sim::reference_backend::{Listen, ReferenceBackend};
use selfvend_sim::sle4442::{self, Sle4442};
use selfvend_sim::unionpay_card::UnionPayCard;
use selfvend_sim::vpcd::{Inserted, SlotFaults, lock};

/// The demo bank card's PIN (王芳's, on the simulated acquirer's books).
pub const DEMO_PIN: &str = "135790";
pub const DEMO_PAN: &str = "6222021234567890128";
/// The vpcd readers of the rig's pcscd (`./dev` starts it): meter cards, then bank cards.
pub const METER_READER: &str = "selfvend vpcd 00 00";
pub const BANK_READER: &str = "selfvend vpcd 00 01";

/// A meter card the demo can insert.
pub enum MeterCard {
    Memory(Arc<Mutex<Sle4442>>),
    Cpu(Arc<Mutex<CpuCard>>),
}

/// The simulators of a demo kiosk, and what the side panel has done with them.
pub struct Demo {
    pub backends: Vec<ReferenceBackend>,
    pub acquirer: Acquirer,
    pub validator: SimulatedValidator,
    pub printer: SimulatedPrinter,
    pub pad: SimulatedPinPad,
    pub cards: Vec<(String, MeterCard)>,
    pub bank_card: Arc<Mutex<UnionPayCard>>,
    meter_slot: SocketAddr,
    bank_slot: SocketAddr,
    meter_in: Option<(usize, Inserted)>,
    bank_in: Option<Inserted>,
    backends_down: bool,
    /// The journal and the backends' books, for this run only.
    pub dir: tempfile::TempDir,
}

impl Demo {
    /// Starts the simulators and points `config` at them: its backends and acquirer, its
    /// devices, and a data directory of its own. `vpcd_port` is the rig's first vpcd slot.
    pub fn start(config: &mut KioskConfig, vpcd_port: u16) -> anyhow::Result<Demo> {
        let dir = tempfile::tempdir().context("creating the demo's data directory")?;
        let mut backends = Vec::new();
        for entry in &mut config.backends {
            let books = dir.path().join(format!("{}.sqlite", entry.name));
            let backend = ReferenceBackend::start(&books, Listen::default())
                .with_context(|| format!("starting the reference backend for {}", entry.name))?;
            entry.endpoint.address = match entry.dialect.as_str() {
                "fixed-text" => backend.fixed_text_address(),
                "json-http" => backend.json_http_address(),
                other => bail!(
                    "backend `{}` speaks `{other}`: demo mode simulates backends that speak \
                     fixed-text or json-http",
                    entry.name
                ),
            }
            .to_string();
            backends.push(backend);
        }
        let acquirer = Acquirer::start().context("starting the acquirer simulator")?;
        acquirer.add_card(DEMO_PAN, DEMO_PIN, 100_000);
        if let Some(entry) = &mut config.acquirer {
            entry.endpoint.address = acquirer.address().to_string();
        }
        let validator = SimulatedValidator::start().context("starting the validator simulator")?;
        let printer = SimulatedPrinter::start().context("starting the printer simulator")?;
        let pad = SimulatedPinPad::start().context("starting the PIN pad simulator")?;
        let serial = |path: &str| SerialDevice {
            port: path.into(),
            baud: Baud(9600),
        };
        config.devices.card_reader = Some(ReaderDevice {
            reader: METER_READER.into(),
        });
        config.devices.bank_card_reader = Some(ReaderDevice {
            reader: BANK_READER.into(),
        });
        config.devices.cash_acceptor = Some(serial(validator.path()));
        config.devices.printer = Some(serial(printer.path()));
        config.devices.pinpad = Some(serial(pad.path()));
        // Compiled plugins stay cached across runs where the config keeps them.
        config.kiosk.plugin_cache = Some(config.plugin_cache_dir());
        let paired_in = std::mem::replace(&mut config.kiosk.data_dir, dir.path().join("data"));
        // A demo kiosk paired with a fleet (`./dev run` pairs it) reports to it from here too.
        if let Err(e) = selfvend_host::fleet::carry_pairing(&paired_in, &config.kiosk.data_dir) {
            tracing::error!("the demo kiosk will not report to the fleet: {e}");
        }
        let machine = EncryptionMachine::default();
        let memory = |serial: &str, customer: &str, meter: &str| {
            MeterCard::Memory(Arc::new(Mutex::new(sle4442::ht01::issue(
                &machine, serial, "3701", customer, meter,
            ))))
        };
        let cpu = |serial: &str, customer: &str, meter: &str| {
            MeterCard::Cpu(Arc::new(Mutex::new(CpuCard::issue(
                &machine, serial, "4401", customer, meter,
            ))))
        };
        let cards = vec![
            (
                "张三 · Hengtai SLE4442".to_string(),
                memory("3701000000000001", "C370100001", "M3701000001"),
            ),
            (
                "李四 · arrears".to_string(),
                memory("3701000000000002", "C370100002", "M3701000002"),
            ),
            (
                "王五 · account closed".to_string(),
                memory("3701000000000003", "C370100003", "M3701000003"),
            ),
            (
                "陈小明 · Lanling CPU".to_string(),
                cpu("4401000000000001", "C440100001", "M4401000001"),
            ),
            (
                "周强 · suspended".to_string(),
                cpu("4401000000000003", "C440100003", "M4401000003"),
            ),
        ];
        Ok(Demo {
            backends,
            acquirer,
            validator,
            printer,
            pad,
            cards,
            bank_card: Arc::new(Mutex::new(UnionPayCard::wang_fang())),
            meter_slot: ([127, 0, 0, 1], vpcd_port).into(),
            bank_slot: ([127, 0, 0, 1], vpcd_port + 1).into(),
            meter_in: None,
            bank_in: None,
            backends_down: false,
            dir,
        })
    }

    /// Puts meter card `i` (of [`cards`](Self::cards)) into the reader, taking out any other.
    pub fn insert_meter_card(&mut self, i: usize) -> std::io::Result<()> {
        self.pull_meter_card();
        let inserted = match &self.cards[i].1 {
            MeterCard::Memory(card) => Inserted::insert(card.clone(), self.meter_slot)?,
            MeterCard::Cpu(card) => Inserted::insert(card.clone(), self.meter_slot)?,
        };
        self.meter_in = Some((i, inserted));
        Ok(())
    }

    pub fn pull_meter_card(&mut self) {
        if let Some((_, inserted)) = self.meter_in.take() {
            inserted.pull_out();
        }
    }

    /// The meter card in the reader is pulled out in the middle of the next card write.
    pub fn tear_next_write(&mut self) {
        let Some((i, inserted)) = &self.meter_in else {
            return;
        };
        match &self.cards[*i].1 {
            MeterCard::Memory(card) => lock(card).tear_after_bytes = Some(12),
            // Reading the card is done by now: these are the write's APDUs.
            MeterCard::Cpu(_) => inserted.arm(SlotFaults {
                pull_after: Some(3),
                ..SlotFaults::default()
            }),
        }
    }

    pub fn insert_bank_card(&mut self) -> std::io::Result<()> {
        self.pull_bank_card();
        self.bank_in = Some(Inserted::insert(self.bank_card.clone(), self.bank_slot)?);
        Ok(())
    }

    pub fn pull_bank_card(&mut self) {
        if let Some(inserted) = self.bank_in.take() {
            inserted.pull_out();
        }
    }

    /// Every backend stops (or starts again) taking connections.
    pub fn set_backends_down(&mut self, down: bool) {
        self.backends_down = down;
        for backend in &self.backends {
            backend.refuse_connections(down);
        }
    }

    /// The last receipt the printer cut (or the one being printed), a line per text line.
    pub fn last_receipt(&self) -> Vec<String> {
        let printed = self.printer.printed();
        let mut receipts = printed.split(|p| matches!(p, Printout::Cut));
        let mut last = receipts.next_back().unwrap_or_default();
        if last.is_empty() {
            last = receipts.next_back().unwrap_or_default();
        }
        last.iter()
            .map(|p| match p {
                Printout::Line(l) => l.text.clone(),
                Printout::Cut => String::new(),
                Printout::Unknown(b) => format!("? {b:02X?}"),
            })
            .collect()
    }

    /// The customer's hands: cards, banknotes, the PIN pad; and the faults to try. Small print:
    /// this is the tester's panel, not the customer's screen.
    pub fn panel_ui(&mut self, ui: &mut Ui) {
        use egui::{FontId, TextStyle};
        let style = ui.style_mut();
        for (text, size) in [
            (TextStyle::Heading, 22.0),
            (TextStyle::Body, 15.0),
            (TextStyle::Button, 15.0),
            (TextStyle::Monospace, 13.0),
        ] {
            let font = if text == TextStyle::Monospace {
                FontId::monospace(size)
            } else {
                FontId::proportional(size)
            };
            style.text_styles.insert(text, font);
        }
        style.spacing.button_padding = egui::vec2(8.0, 4.0);
        style.spacing.item_spacing = egui::vec2(6.0, 6.0);
        ScrollArea::vertical()
            .id_salt("demo")
            .show(ui, |ui| self.controls_ui(ui));
    }

    fn controls_ui(&mut self, ui: &mut Ui) {
        ui.heading("Demo");
        ui.label(RichText::new("simulated devices").color(Color32::GRAY));
        ui.separator();
        ui.label(RichText::new("Meter card").strong());
        let inserted = self.meter_in.as_ref().map(|(i, _)| *i);
        for i in 0..self.cards.len() {
            let label = format!("Insert {}", self.cards[i].0);
            if ui
                .add_enabled(inserted != Some(i), Button::new(label))
                .clicked()
                && let Err(e) = self.insert_meter_card(i)
            {
                tracing::error!("inserting a demo card: {e}");
            }
        }
        ui.horizontal_wrapped(|ui| {
            if ui
                .add_enabled(inserted.is_some(), Button::new("Pull the meter card"))
                .clicked()
            {
                self.pull_meter_card();
            }
            if ui
                .add_enabled(inserted.is_some(), Button::new("Pull it mid-write"))
                .clicked()
            {
                self.tear_next_write();
            }
        });
        ui.separator();
        ui.label(RichText::new("Banknotes").strong());
        ui.horizontal_wrapped(|ui| {
            for yuan in [1, 5, 10, 20, 50, 100] {
                if ui.button(format!("¥{yuan}")).clicked() {
                    self.validator.act(Action::Insert(yuan));
                }
            }
        });
        if ui.button("Jam a ¥50 in the stacker").clicked() {
            self.validator.act(Action::JamInStacker(50));
        }
        ui.separator();
        ui.label(RichText::new("Bank card · 王芳").strong());
        ui.horizontal(|ui| {
            if ui
                .add_enabled(self.bank_in.is_none(), Button::new("Insert bank card"))
                .clicked()
                && let Err(e) = self.insert_bank_card()
            {
                tracing::error!("inserting the demo bank card: {e}");
            }
            if ui
                .add_enabled(self.bank_in.is_some(), Button::new("Pull bank card"))
                .clicked()
            {
                self.pull_bank_card();
            }
        });
        ui.horizontal_wrapped(|ui| {
            if ui.button(format!("PIN {DEMO_PIN} + Enter")).clicked() {
                self.pad.act(&PadAction::pin(DEMO_PIN));
            }
            if ui.button("Wrong PIN + Enter").clicked() {
                self.pad.act(&PadAction::pin("000000"));
            }
            if ui.button("Cancel on pad").clicked() {
                self.pad.act(&[PadAction::Cancel]);
            }
        });
        ui.separator();
        let mut down = self.backends_down;
        if ui.checkbox(&mut down, "Backends down").changed() {
            self.set_backends_down(down);
        }
        ui.separator();
        ui.label(RichText::new("Last receipt").strong());
        for line in self.last_receipt() {
            ui.monospace(line);
        }
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        self.pull_meter_card();
        self.pull_bank_card();
    }
}

/// Side panel width: the rest of a 1280-wide window is the kiosk's.
pub const PANEL_WIDTH: f32 = 320.0;

/// Splits `ui` into the kiosk's screen on the left, drawn by `kiosk`, and the demo's panel on
/// the right.
pub fn beside_ui<R>(ui: &mut Ui, demo: &mut Demo, kiosk: impl FnOnce(&mut Ui) -> R) -> R {
    let all = ui.max_rect();
    let split = all.max.x - PANEL_WIDTH;
    let panel = egui::Rect::from_min_max(egui::pos2(split, all.min.y), all.max);
    let screen = egui::Rect::from_min_max(all.min, egui::pos2(split, all.max.y));
    ui.scope_builder(egui::UiBuilder::new().max_rect(panel), |ui| {
        egui::Frame::side_top_panel(ui.style()).show(ui, |ui| {
            ui.set_min_size(ui.available_size());
            demo.panel_ui(ui)
        })
    });
    ui.scope_builder(egui::UiBuilder::new().max_rect(screen), kiosk)
        .inner
}
