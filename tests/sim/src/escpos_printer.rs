//! A simulated ESC/POS receipt printer on the far end of a pty: it decodes what it receives
//! (text in GB18030 once FS & has selected Chinese mode) into printed lines with their style,
//! and cuts; it answers the real-time status queries DLE EOT 1–4; and it can be told to run
//! out of paper after some lines, to report paper near its end, to open its cover, to hang, or
//! to answer garbage.
//!
//! Written from the ESC/POS command reference alone, sharing nothing with the host's driver.
//! Unlike a real printer, which holds data while offline and prints it once it is back,
//! this one drops what it cannot print, so what a test sees is only what reached paper.

use std::fmt;
use std::io::{self, Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use encoding_rs::GB18030;
use serialport::{SerialPort, TTYPort};

const ESC: u8 = 0x1B;
const FS: u8 = 0x1C;
const GS: u8 = 0x1D;
const DLE: u8 = 0x10;
const EOT: u8 = 0x04;
const LF: u8 = 0x0A;
const CR: u8 = 0x0D;

/// What came out of the printer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Printout {
    Line(PrintedLine),
    Cut,
    /// A command or control code this printer does not know (up to the byte that made it
    /// unknown; what follows is read as text).
    Unknown(Vec<u8>),
}

/// One line on paper, with the style in force at its first character.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrintedLine {
    pub text: String,
    pub bold: bool,
    /// Character magnification across, 1–8.
    pub width: u8,
    /// Character magnification down, 1–8.
    pub height: u8,
    pub align: Alignment,
}

impl PrintedLine {
    /// A plain line: normal size, left-aligned, not bold.
    pub fn plain(text: &str) -> Self {
        PrintedLine {
            text: text.into(),
            bold: false,
            width: 1,
            height: 1,
            align: Alignment::Left,
        }
    }

    pub fn is_double(&self) -> bool {
        self.width == 2 && self.height == 2
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alignment {
    Left,
    Centre,
    Right,
}

/// As `selfvend-printer` shows it: `[centred, bold, double] 购电凭证`.
impl fmt::Display for PrintedLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut tags = Vec::new();
        match self.align {
            Alignment::Left => {}
            Alignment::Centre => tags.push("centred".to_string()),
            Alignment::Right => tags.push("right".to_string()),
        }
        if self.bold {
            tags.push("bold".into());
        }
        if self.is_double() {
            tags.push("double".into());
        } else if (self.width, self.height) != (1, 1) {
            tags.push(format!("{}x{}", self.width, self.height));
        }
        if tags.is_empty() {
            f.write_str(&self.text)
        } else {
            write!(f, "[{}] {}", tags.join(", "), self.text)
        }
    }
}

impl fmt::Display for Printout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Printout::Line(line) => line.fmt(f),
            Printout::Cut => f.write_str("--- cut ---"),
            Printout::Unknown(bytes) => write!(f, "(unknown command {bytes:02X?})"),
        }
    }
}

/// How the printer answers status queries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answering {
    /// Truthfully, at once.
    Normally,
    /// Not at all, and nothing is printed either: a hung printer.
    Silent,
    /// With bytes that are no status (`FF 00` for each query): line noise, a wrong baud rate.
    Garbage,
}

struct State {
    /// Lines of paper left; `None` for a fresh roll that outlasts any test.
    paper_left: Option<usize>,
    near_end: bool,
    cover_open: bool,
    answering: Answering,
    printed: Vec<Printout>,
    listeners: Vec<Sender<Printout>>,
}

impl State {
    fn paper_out(&self) -> bool {
        self.paper_left == Some(0)
    }

    fn can_print(&self) -> bool {
        !self.paper_out() && !self.cover_open && self.answering != Answering::Silent
    }

    fn emit(&mut self, printout: Printout) {
        self.listeners
            .retain(|listener| listener.send(printout.clone()).is_ok());
        self.printed.push(printout);
    }

    /// The answer to DLE EOT n, with the fixed bits 0xx1xx10 (Epson's ESC/POS reference).
    fn status_byte(&self, n: u8) -> Option<u8> {
        let out = self.paper_out();
        let offline = out || self.cover_open;
        let bit = |on: bool, b: u8| if on { 1 << b } else { 0 };
        match n {
            1 => Some(0x12 | bit(offline, 3)),
            2 => Some(0x12 | bit(self.cover_open, 2) | bit(out, 5)),
            3 => Some(0x12),
            // The near-end sensor sits before the end sensor: an empty roll trips both.
            4 => {
                Some(0x12 | if self.near_end || out { 0x0C } else { 0 } | bit(out, 5) | bit(out, 6))
            }
            _ => None,
        }
    }
}

/// A printer listening on a fresh pty. Stops when dropped.
pub struct SimulatedPrinter {
    path: String,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    /// Held open so the pty stays up while the host closes and reopens its end.
    _slave: TTYPort,
}

impl SimulatedPrinter {
    /// Creates a pty pair and starts listening on its master; the host opens `path()`.
    pub fn start() -> io::Result<Self> {
        let (mut master, slave) = TTYPort::pair().map_err(io::Error::from)?;
        let path = slave
            .name()
            .ok_or_else(|| io::Error::other("the pty has no name"))?;
        master
            .set_timeout(Duration::from_millis(20))
            .map_err(io::Error::from)?;
        let state = Arc::new(Mutex::new(State {
            paper_left: None,
            near_end: false,
            cover_open: false,
            answering: Answering::Normally,
            printed: Vec::new(),
            listeners: Vec::new(),
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = std::thread::Builder::new()
            .name("escpos-printer".into())
            .spawn({
                let state = state.clone();
                let stop = stop.clone();
                move || serve(master, &state, &stop)
            })?;
        Ok(SimulatedPrinter {
            path,
            state,
            stop,
            thread: Some(thread),
            _slave: slave,
        })
    }

    /// The serial port the host opens, `/dev/pts/N`.
    pub fn path(&self) -> &str {
        &self.path
    }

    fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// Everything printed so far.
    pub fn printed(&self) -> Vec<Printout> {
        self.state().printed.clone()
    }

    /// Everything printed so far, forgetting it.
    pub fn take_printed(&self) -> Vec<Printout> {
        std::mem::take(&mut self.state().printed)
    }

    /// Each printout from now on, as it comes out.
    pub fn subscribe(&self) -> Receiver<Printout> {
        let (tx, rx) = channel();
        self.state().listeners.push(tx);
        rx
    }

    /// The roll runs out after `lines` more lines.
    pub fn paper_out_after(&self, lines: usize) {
        self.state().paper_left = Some(lines);
    }

    /// A fresh roll: paper neither out nor near its end.
    pub fn paper_in(&self) {
        let mut state = self.state();
        state.paper_left = None;
        state.near_end = false;
    }

    /// The near-end sensor trips (printing goes on).
    pub fn near_end(&self) {
        self.state().near_end = true;
    }

    pub fn set_cover_open(&self, open: bool) {
        self.state().cover_open = open;
    }

    pub fn answer(&self, answering: Answering) {
        self.state().answering = answering;
    }
}

impl Drop for SimulatedPrinter {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn serve(mut master: TTYPort, state: &Mutex<State>, stop: &AtomicBool) {
    let mut decoder = Decoder::default();
    let mut buf = [0u8; 512];
    while !stop.load(Ordering::Relaxed) {
        let n = match master.read(&mut buf) {
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
                ) =>
            {
                continue;
            }
            Err(_) => return,
        };
        let mut answer = Vec::new();
        let mut state = lock(state);
        for &byte in &buf[..n] {
            let Some(event) = decoder.push(byte) else {
                continue;
            };
            match event {
                Event::Status(query) => match state.answering {
                    Answering::Normally => answer.extend(state.status_byte(query)),
                    Answering::Silent => {}
                    Answering::Garbage => answer.extend_from_slice(&[0xFF, 0x00]),
                },
                Event::Printout(printout) if state.can_print() => {
                    if let Printout::Line(_) = printout {
                        state.paper_left = state.paper_left.map(|left| left - 1);
                    }
                    state.emit(printout);
                }
                Event::Printout(_) => {}
            }
        }
        drop(state);
        if !answer.is_empty() && master.write_all(&answer).is_err() {
            return;
        }
    }
}

/// What a run of bytes amounts to.
enum Event {
    Printout(Printout),
    /// DLE EOT n.
    Status(u8),
}

/// The print modes commands set and a line in the making.
struct Decoder {
    /// Bytes of a command whose parameters have not all arrived.
    command: Vec<u8>,
    chinese: bool,
    bold: bool,
    width: u8,
    height: u8,
    align: Alignment,
    text: Vec<u8>,
    /// The style of the line in the making, taken at its first character.
    line_style: Option<(bool, u8, u8, Alignment)>,
}

impl Default for Decoder {
    fn default() -> Self {
        Decoder {
            command: Vec::new(),
            chinese: false,
            bold: false,
            width: 1,
            height: 1,
            align: Alignment::Left,
            text: Vec::new(),
            line_style: None,
        }
    }
}

impl Decoder {
    fn style(&self) -> (bool, u8, u8, Alignment) {
        (self.bold, self.width, self.height, self.align)
    }

    fn push(&mut self, byte: u8) -> Option<Event> {
        if self.command.is_empty() {
            match byte {
                LF => return Some(Event::Printout(Printout::Line(self.finish_line()))),
                CR => return None,
                ESC | FS | GS | DLE => {
                    self.command.push(byte);
                    return None;
                }
                // GB18030 bytes are never below 0x20, so these are stray control codes.
                0x00..0x20 | 0x7F => return Some(Event::Printout(Printout::Unknown(vec![byte]))),
                _ => {
                    self.line_style.get_or_insert(self.style());
                    self.text.push(byte);
                    return None;
                }
            }
        }
        self.command.push(byte);
        let event = match self.command[..] {
            // Initialise: modes back to their defaults, a half-received line dropped.
            [ESC, b'@'] => {
                *self = Decoder::default();
                None
            }
            [FS, b'&'] => {
                self.chinese = true;
                None
            }
            [FS, b'.'] => {
                self.chinese = false;
                None
            }
            [ESC, b'E', n] => {
                self.bold = n & 1 == 1;
                None
            }
            [ESC, b'a', n] => {
                self.align = match n {
                    1 | b'1' => Alignment::Centre,
                    2 | b'2' => Alignment::Right,
                    _ => Alignment::Left,
                };
                None
            }
            [GS, b'!', n] => {
                self.width = (n >> 4) + 1;
                self.height = (n & 0x0F) + 1;
                None
            }
            [GS, b'V', 0 | 1 | b'0' | b'1'] | [GS, b'V', 65 | 66, _] => {
                Some(Event::Printout(Printout::Cut))
            }
            [DLE, EOT, n] => Some(Event::Status(n)),
            // Still waiting for parameters.
            [ESC]
            | [FS]
            | [GS]
            | [DLE]
            | [ESC, b'E' | b'a']
            | [GS, b'!' | b'V']
            | [GS, b'V', 65 | 66]
            | [DLE, EOT] => {
                return None;
            }
            _ => Some(Event::Printout(Printout::Unknown(self.command.clone()))),
        };
        self.command.clear();
        event
    }

    fn finish_line(&mut self) -> PrintedLine {
        let bytes = std::mem::take(&mut self.text);
        let text = if self.chinese {
            GB18030.decode_without_bom_handling(&bytes).0.into_owned()
        } else {
            // Outside Chinese mode a printer reads single bytes in its code page: anything
            // beyond ASCII would come out as something other than what was meant.
            bytes
                .iter()
                .map(|&b| if b.is_ascii() { b as char } else { '\u{FFFD}' })
                .collect()
        };
        let (bold, width, height, align) = self.line_style.take().unwrap_or(self.style());
        PrintedLine {
            text,
            bold,
            width,
            height,
            align,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(bytes: &[u8]) -> Vec<Printout> {
        let mut decoder = Decoder::default();
        bytes
            .iter()
            .filter_map(|&b| match decoder.push(b) {
                Some(Event::Printout(p)) => Some(p),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn decodes_styled_gb18030_lines_and_a_cut() {
        let mut bytes = vec![
            ESC, b'@', FS, b'&', ESC, b'a', 1, ESC, b'E', 1, GS, b'!', 0x11,
        ];
        bytes.extend_from_slice(&GB18030.encode("购电凭证").0);
        bytes.extend_from_slice(&[LF, ESC, b'a', 0, ESC, b'E', 0, GS, b'!', 0]);
        bytes.extend_from_slice(&GB18030.encode("户名：陈小明").0);
        bytes.extend_from_slice(&[LF, GS, b'V', 66, 3]);
        assert_eq!(
            decode(&bytes),
            vec![
                Printout::Line(PrintedLine {
                    bold: true,
                    width: 2,
                    height: 2,
                    align: Alignment::Centre,
                    ..PrintedLine::plain("购电凭证")
                }),
                Printout::Line(PrintedLine::plain("户名：陈小明")),
                Printout::Cut,
            ]
        );
    }

    #[test]
    fn chinese_text_outside_chinese_mode_comes_out_wrong() {
        let mut bytes = GB18030.encode("元").0.into_owned();
        bytes.push(LF);
        assert_eq!(
            decode(&bytes),
            vec![Printout::Line(PrintedLine::plain("\u{FFFD}\u{FFFD}"))]
        );
    }

    #[test]
    fn unknown_commands_are_reported() {
        assert_eq!(
            decode(&[ESC, b't']),
            vec![Printout::Unknown(vec![ESC, b't'])]
        );
    }
}
