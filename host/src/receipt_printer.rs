//! The receipt printer as the sale engine sees it, whatever the wire: a `Receipt` of styled
//! lines ending in a cut, the printer's status, and what became of a print.
//!
//! A receipt that is not wholly on paper is never silently lost: `print` then returns a
//! `PrintError` saying how far it got, and the caller, which still holds the `Receipt`,
//! reprints it whole once the printer is ready again.

use std::fmt;
use std::time::Duration;

/// A receipt: lines printed top to bottom, then the paper is cut.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Receipt {
    lines: Vec<Line>,
}

impl Receipt {
    pub fn new() -> Self {
        Receipt::default()
    }

    /// Adds `line` at the bottom.
    pub fn push(&mut self, line: Line) {
        self.lines.push(line);
    }

    /// Adds `line` at the bottom, for building a receipt in one expression.
    pub fn with(mut self, line: Line) -> Self {
        self.push(line);
        self
    }

    pub fn lines(&self) -> &[Line] {
        &self.lines
    }
}

/// One printed line and its style. Normal, left-aligned text unless styled otherwise.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Line {
    pub text: String,
    pub bold: bool,
    pub size: Size,
    pub align: Align,
}

impl Line {
    pub fn new(text: impl Into<String>) -> Self {
        Line {
            text: text.into(),
            bold: false,
            size: Size::Normal,
            align: Align::Left,
        }
    }

    /// An empty line, to space a receipt out.
    pub fn blank() -> Self {
        Line::new("")
    }

    pub fn bold(mut self) -> Self {
        self.bold = true;
        self
    }

    /// Double width and double height, for titles and the amount paid.
    pub fn double(mut self) -> Self {
        self.size = Size::Double;
        self
    }

    pub fn centred(mut self) -> Self {
        self.align = Align::Centre;
        self
    }
}

/// Character size of a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Size {
    Normal,
    /// Twice as wide and twice as tall.
    Double,
}

/// Where a line sits across the paper.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Align {
    Left,
    Centre,
}

/// What the printer says about itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PrinterStatus {
    /// The printer says it is offline (it is for any of the reasons below, and may be for
    /// others, such as paper being fed with its button).
    pub offline: bool,
    pub cover_open: bool,
    pub paper: Paper,
    pub fault: Option<Fault>,
}

impl PrinterStatus {
    /// Whether a receipt can be printed now. Paper near its end still prints.
    pub fn is_ready(&self) -> bool {
        !self.offline && !self.cover_open && self.paper != Paper::Out && self.fault.is_none()
    }
}

/// Shown to operators: "ready", "ready, paper near end", "cover open", "paper out", …
impl fmt::Display for PrinterStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut words: Vec<String> = Vec::new();
        if self.cover_open {
            words.push("cover open".into());
        }
        if self.paper == Paper::Out {
            words.push("paper out".into());
        }
        if let Some(fault) = self.fault {
            words.push(fault.to_string());
        }
        if words.is_empty() {
            words.push(if self.offline { "offline" } else { "ready" }.into());
        }
        if self.paper == Paper::NearEnd {
            words.push("paper near end".into());
        }
        f.write_str(&words.join(", "))
    }
}

/// The paper roll, as the printer's sensors see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Paper {
    Adequate,
    /// Little paper is left: printing goes on, but an operator should load a new roll.
    NearEnd,
    Out,
}

/// An error the printer reports about its mechanism.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Fault {
    #[error("cutter error")]
    Cutter,
    /// Cleared by an operator (for example a paper jam).
    #[error("mechanical error")]
    Mechanical,
    /// Clears by itself, typically a print head too hot.
    #[error("print head overheated")]
    Overheated,
    /// Needs the printer serviced or power-cycled.
    #[error("unrecoverable error")]
    Unrecoverable,
    /// The printer says it has an error but not which.
    #[error("printer error")]
    Unspecified,
}

/// The printer could not be talked to. `printer` names it (its port).
#[derive(Debug, thiserror::Error)]
pub enum PrinterError {
    #[error("printer {printer}: {doing}: {source}")]
    Port {
        printer: String,
        doing: &'static str,
        source: std::io::Error,
    },
    #[error(
        "printer {printer}: no answer to a status query within {} ms (is it on and connected?)",
        waited.as_millis()
    )]
    Silent { printer: String, waited: Duration },
    #[error("printer {printer}: took no data for {} ms", waited.as_millis())]
    Stalled { printer: String, waited: Duration },
    #[error(
        "printer {printer}: answered the {asked} query with {answer:#04x}, which is not a status \
         byte (wrong baud rate, or not an ESC/POS printer?)"
    )]
    Garbage {
        printer: String,
        asked: &'static str,
        answer: u8,
    },
}

/// A printed receipt, with the printer's status before and after (paper may be near its end).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Printed {
    pub lines: usize,
    pub before: PrinterStatus,
    pub after: PrinterStatus,
}

/// A receipt that is not (wholly) on paper and must be printed again, whole.
#[derive(Debug, thiserror::Error)]
#[error("{stop}; {progress}")]
pub struct PrintError {
    pub stop: PrintStop,
    pub progress: Progress,
}

/// Why printing did not start or did not finish.
#[derive(Debug, thiserror::Error)]
pub enum PrintStop {
    #[error("printer {printer}: {status}")]
    NotReady {
        printer: String,
        status: PrinterStatus,
    },
    #[error(transparent)]
    Device(#[from] PrinterError),
}

/// How far a receipt got before printing stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// Nothing was sent to the printer.
    NothingSent,
    /// Part of the receipt was sent. The first `confirmed_lines` were taken while the printer
    /// still said it was ready; later lines may or may not be on paper, and the cut is not.
    Unfinished {
        confirmed_lines: usize,
        total_lines: usize,
    },
}

impl fmt::Display for Progress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Progress::NothingSent => f.write_str("receipt not printed (nothing was sent)"),
            Progress::Unfinished {
                confirmed_lines,
                total_lines,
            } => write!(
                f,
                "receipt unfinished ({confirmed_lines} of {total_lines} lines confirmed before \
                 the stop, no cut); reprint it"
            ),
        }
    }
}

/// A receipt printer.
pub trait ReceiptPrinter {
    /// Asks the printer how it is.
    fn status(&mut self) -> Result<PrinterStatus, PrinterError>;

    /// Prints `receipt` and cuts it off, refusing to start when the printer is not ready and
    /// stopping when it stops being ready.
    fn print(&mut self, receipt: &Receipt) -> Result<Printed, PrintError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(paper: Paper) -> PrinterStatus {
        PrinterStatus {
            offline: false,
            cover_open: false,
            paper,
            fault: None,
        }
    }

    #[test]
    fn status_reads_as_an_operator_would_say_it() {
        assert_eq!(status(Paper::Adequate).to_string(), "ready");
        assert_eq!(status(Paper::NearEnd).to_string(), "ready, paper near end");
        let open = PrinterStatus {
            offline: true,
            cover_open: true,
            ..status(Paper::NearEnd)
        };
        assert_eq!(open.to_string(), "cover open, paper near end");
        let out = PrinterStatus {
            offline: true,
            ..status(Paper::Out)
        };
        assert_eq!(out.to_string(), "paper out");
        let offline = PrinterStatus {
            offline: true,
            ..status(Paper::Adequate)
        };
        assert_eq!(offline.to_string(), "offline");
        assert!(status(Paper::NearEnd).is_ready());
        assert!(!out.is_ready() && !open.is_ready() && !offline.is_ready());
    }
}
