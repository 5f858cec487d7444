//! The receipt printer's driver: ESC/POS over a serial port, Chinese text in GB18030.
//!
//! The handful of commands a receipt needs are encoded here rather than through the `escpos`
//! crate: that crate has no Chinese-mode command (FS &), hides its serial port behind a fixed
//! five-second read timeout, and reports status as a map of flags and errors as strings,
//! while all we need is a dozen fixed byte sequences and `encoding_rs`.
//!
//! Status is asked with the real-time queries DLE EOT 1 to 4, which a printer answers at once
//! even while printing or offline: before printing, after every few lines, and after the cut.

use std::io::{self, Read, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use encoding_rs::GB18030;
use serialport::{ClearBuffer, SerialPort};

use crate::receipt_printer::{
    Align, Fault, Line, Paper, PrintError, PrintStop, Printed, PrinterError, PrinterStatus,
    Progress, Receipt, ReceiptPrinter, Size,
};

/// ESC @: back to power-on settings, dropping anything half-formatted from before.
const INIT: [u8; 2] = [0x1B, 0x40];
/// FS &: two-byte (Chinese) character mode, so GB18030 text prints as Hanzi.
const CHINESE_MODE: [u8; 2] = [0x1C, 0x26];
/// GS V 65 0: feed the paper up to the cutter, so the cut falls below the last line, and cut
/// it through, so a kiosk's presenter can hand the receipt out.
const FEED_AND_CUT: [u8; 4] = [0x1D, 0x56, 0x41, 0x00];
const LF: u8 = 0x0A;

/// The DLE EOT n queries asked together (a printer takes up to four at once), with the name
/// an error uses for each.
const STATUS_QUERIES: [(u8, &str); 4] = [
    (1, "printer status"),
    (2, "offline cause"),
    (3, "error cause"),
    (4, "paper sensor"),
];

/// An ESC/POS receipt printer on a serial port.
pub struct EscPosPrinter {
    port: Box<dyn SerialPort>,
    name: String,
    status_timeout: Duration,
    write_timeout: Duration,
    chunk_lines: usize,
}

impl EscPosPrinter {
    /// Opens the printer's serial port (8N1, no flow control). Nothing is sent yet.
    pub fn open(port: &Path, baud: u32) -> Result<Self, PrinterError> {
        let name = port.display().to_string();
        let opened = serialport::new(name.clone(), baud)
            .timeout(Duration::from_secs(1))
            .open()
            .map_err(|e| PrinterError::Port {
                printer: name.clone(),
                doing: "opening the port",
                source: e.into(),
            })?;
        Ok(EscPosPrinter {
            port: opened,
            name,
            status_timeout: Duration::from_secs(1),
            write_timeout: Duration::from_secs(5),
            chunk_lines: 4,
        })
    }

    /// How long the printer may take to answer a status query (default 1 s).
    pub fn status_timeout(mut self, timeout: Duration) -> Self {
        self.status_timeout = timeout;
        self
    }

    /// How long the printer may refuse data, e.g. with its buffer full (default 5 s).
    pub fn write_timeout(mut self, timeout: Duration) -> Self {
        self.write_timeout = timeout;
        self
    }

    /// How many lines are sent between status checks (default 4, at least 1). Fewer catch a
    /// stop sooner; more cost fewer round trips.
    pub fn chunk_lines(mut self, lines: usize) -> Self {
        self.chunk_lines = lines.max(1);
        self
    }

    fn port_error(&self, doing: &'static str, source: io::Error) -> PrinterError {
        PrinterError::Port {
            printer: self.name.clone(),
            doing,
            source,
        }
    }

    fn send(&mut self, bytes: &[u8]) -> Result<(), PrinterError> {
        self.port
            .set_timeout(self.write_timeout)
            .map_err(|e| self.port_error("setting the write timeout", e.into()))?;
        match self.port.write_all(bytes) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::TimedOut => Err(PrinterError::Stalled {
                printer: self.name.clone(),
                waited: self.write_timeout,
            }),
            Err(e) => Err(self.port_error("sending to the printer", e)),
        }
    }

    /// Reads exactly `buf.len()` bytes before `deadline`, checking each as it arrives.
    fn read_status_bytes(&mut self, buf: &mut [u8], deadline: Instant) -> Result<(), PrinterError> {
        let mut got = 0;
        while got < buf.len() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(PrinterError::Silent {
                    printer: self.name.clone(),
                    waited: self.status_timeout,
                });
            }
            self.port
                .set_timeout(left)
                .map_err(|e| self.port_error("setting the read timeout", e.into()))?;
            match self.port.read(&mut buf[got..]) {
                Ok(n) => {
                    for (i, &answer) in buf[got..got + n].iter().enumerate() {
                        if !is_status_byte(answer) {
                            return Err(PrinterError::Garbage {
                                printer: self.name.clone(),
                                asked: STATUS_QUERIES[got + i].1,
                                answer,
                            });
                        }
                    }
                    got += n;
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
                    ) => {}
                Err(e) => return Err(self.port_error("reading the printer's answer", e)),
            }
        }
        Ok(())
    }

    /// Sends the receipt's lines in chunks with a status check after each, the cut going
    /// with the last chunk. Returns the status after the cut.
    fn send_receipt(
        &mut self,
        lines: &[Line],
        confirmed: &mut usize,
    ) -> Result<PrinterStatus, PrintStop> {
        let mut bytes = Vec::with_capacity(256);
        bytes.extend_from_slice(&INIT);
        bytes.extend_from_slice(&CHINESE_MODE);
        let chunks: Vec<&[Line]> = if lines.is_empty() {
            vec![&[]]
        } else {
            lines.chunks(self.chunk_lines).collect()
        };
        let last = chunks.len() - 1;
        let mut status = None;
        for (i, chunk) in chunks.into_iter().enumerate() {
            for line in chunk {
                encode_line(line, &mut bytes);
            }
            if i == last {
                bytes.extend_from_slice(&FEED_AND_CUT);
            }
            self.send(&bytes)?;
            bytes.clear();
            let now = self.status()?;
            if !now.is_ready() {
                return Err(PrintStop::NotReady {
                    printer: self.name.clone(),
                    status: now,
                });
            }
            *confirmed += chunk.len();
            status = Some(now);
        }
        Ok(status.expect("there is always at least one chunk"))
    }
}

impl ReceiptPrinter for EscPosPrinter {
    fn status(&mut self) -> Result<PrinterStatus, PrinterError> {
        // Whatever came before (a late answer, line noise) would be taken for this answer.
        self.port
            .clear(ClearBuffer::Input)
            .map_err(|e| self.port_error("clearing stale input", e.into()))?;
        let queries: Vec<u8> = STATUS_QUERIES
            .iter()
            .flat_map(|&(n, _)| [0x10, 0x04, n])
            .collect();
        let deadline = Instant::now() + self.status_timeout;
        self.send(&queries)?;
        let mut answers = [0u8; STATUS_QUERIES.len()];
        self.read_status_bytes(&mut answers, deadline)?;
        Ok(parse_status(answers))
    }

    fn print(&mut self, receipt: &Receipt) -> Result<Printed, PrintError> {
        let nothing_sent = |stop: PrintStop| PrintError {
            stop,
            progress: Progress::NothingSent,
        };
        let before = self.status().map_err(|e| nothing_sent(e.into()))?;
        if !before.is_ready() {
            return Err(nothing_sent(PrintStop::NotReady {
                printer: self.name.clone(),
                status: before,
            }));
        }
        let total_lines = receipt.lines().len();
        let mut confirmed_lines = 0;
        match self.send_receipt(receipt.lines(), &mut confirmed_lines) {
            Ok(after) => Ok(Printed {
                lines: total_lines,
                before,
                after,
            }),
            Err(stop) => Err(PrintError {
                stop,
                progress: Progress::Unfinished {
                    confirmed_lines,
                    total_lines,
                },
            }),
        }
    }
}

/// Appends one line: its style in full (so no line depends on the one before), its text,
/// and the line feed that prints it.
fn encode_line(line: &Line, out: &mut Vec<u8>) {
    let align = match line.align {
        Align::Left => 0,
        Align::Centre => 1,
    };
    let size = match line.size {
        Size::Normal => 0x00,
        Size::Double => 0x11,
    };
    out.extend_from_slice(&[0x1B, 0x61, align]);
    out.extend_from_slice(&[0x1B, 0x45, u8::from(line.bold)]);
    out.extend_from_slice(&[0x1D, 0x21, size]);
    // A control character would reach the printer as (part of) a command: print a space.
    let text: String = line
        .text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    // GB18030 maps every Unicode character, so nothing is lost in encoding.
    let (encoded, _, _) = GB18030.encode(&text);
    out.extend_from_slice(&encoded);
    out.push(LF);
}

/// Every DLE EOT answer has the fixed bits 0xx1xx10.
fn is_status_byte(b: u8) -> bool {
    b & 0b1001_0011 == 0b0001_0010
}

/// Reads the answers to DLE EOT 1, 2, 3 and 4 (bit meanings as in Epson's ESC/POS reference).
fn parse_status([printer, offline, error, paper]: [u8; 4]) -> PrinterStatus {
    let bit = |byte: u8, n: u8| byte & (1 << n) != 0;
    let fault = if bit(error, 5) {
        Some(Fault::Unrecoverable)
    } else if bit(error, 3) {
        Some(Fault::Cutter)
    } else if bit(error, 2) {
        Some(Fault::Mechanical)
    } else if bit(error, 6) {
        Some(Fault::Overheated)
    } else if bit(offline, 6) {
        Some(Fault::Unspecified)
    } else {
        None
    };
    let paper = if bit(offline, 5) || paper & 0x60 != 0 {
        Paper::Out
    } else if paper & 0x0C != 0 {
        Paper::NearEnd
    } else {
        Paper::Adequate
    };
    PrinterStatus {
        offline: bit(printer, 3),
        cover_open: bit(offline, 2),
        paper,
        fault,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_styled_chinese_line_is_style_then_gb18030_then_lf() {
        let mut out = Vec::new();
        encode_line(&Line::new("购电 50元").bold().double().centred(), &mut out);
        assert_eq!(
            out,
            [
                &[0x1B, 0x61, 1, 0x1B, 0x45, 1, 0x1D, 0x21, 0x11][..],
                &[0xB9, 0xBA, 0xB5, 0xE7, b' ', b'5', b'0', 0xD4, 0xAA, LF],
            ]
            .concat()
        );
    }

    #[test]
    fn control_characters_in_text_print_as_spaces() {
        let mut out = Vec::new();
        encode_line(&Line::new("a\x1B@\nb"), &mut out);
        assert_eq!(&out[9..], b"a @ b\n");
    }

    #[test]
    fn status_bytes_decode_to_what_the_printer_means() {
        assert_eq!(parse_status([0x12; 4]).to_string(), "ready");
        assert_eq!(
            parse_status([0x12, 0x12, 0x12, 0x1E]).to_string(),
            "ready, paper near end"
        );
        let out = parse_status([0x1A, 0x32, 0x12, 0x7E]);
        assert_eq!(out.paper, Paper::Out);
        assert!(out.offline && !out.is_ready());
        let cover = parse_status([0x1A, 0x16, 0x12, 0x12]);
        assert_eq!(cover.to_string(), "cover open");
        let cutter = parse_status([0x1A, 0x52, 0x1A, 0x12]);
        assert_eq!(cutter.fault, Some(Fault::Cutter));
        assert!(is_status_byte(0x12) && !is_status_byte(0x00) && !is_status_byte(0xFF));
    }
}
