//! The kiosk's window: the controller's view drawn full screen, what is pressed sent back, and
//! in demo mode the simulators' side panel. It repaints only when the view changes or the
//! screen is touched, so an idle kiosk draws nothing.

use eframe::egui::{self, Ui};
use selfvend_host::kiosk::{Kiosk, Screen};

use crate::demo::{self, Demo};
use crate::lang::Lang;
use crate::screens::{Action, Keypad, screen_ui};

pub struct KioskApp {
    pub kiosk: Kiosk,
    pub lang: Lang,
    keypad: Keypad,
    /// The screen the keypad's digits were typed on: another screen starts it afresh.
    keypad_for: Option<std::mem::Discriminant<Screen>>,
    pub demo: Option<Demo>,
}

impl KioskApp {
    pub fn new(kiosk: Kiosk, demo: Option<Demo>) -> KioskApp {
        KioskApp {
            kiosk,
            lang: Lang::default(),
            keypad: Keypad::default(),
            keypad_for: None,
            demo,
        }
    }

    /// Draws the kiosk into `ui` and sends on what was pressed.
    pub fn kiosk_ui(&mut self, ui: &mut Ui) {
        let view = self.kiosk.view();
        let shown = std::mem::discriminant(&view.screen);
        if self.keypad_for != Some(shown) {
            self.keypad = Keypad::default();
            self.keypad_for = Some(shown);
        }
        let (lang, keypad) = (self.lang, &mut self.keypad);
        let mut screen = |ui: &mut Ui| {
            egui::CentralPanel::default()
                .show(ui, |ui| screen_ui(ui, lang, &view, keypad))
                .inner
        };
        let pressed = match &mut self.demo {
            Some(demo) => demo::beside_ui(ui, demo, screen),
            None => screen(ui),
        };
        match pressed {
            Some(Action::SwitchLanguage) => self.lang = self.lang.other(),
            Some(Action::Send(command)) => self.kiosk.send(command),
            None => {}
        }
    }
}

impl eframe::App for KioskApp {
    fn ui(&mut self, ui: &mut Ui, _frame: &mut eframe::Frame) {
        self.kiosk_ui(ui);
    }
}
