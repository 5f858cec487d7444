//! A virtual UnionPay debit card (PBOC 3.0 / EMV contact, as far as a kiosk reads it): the
//! debit application A000000333010101 answers SELECT with its FCI, GET PROCESSING OPTIONS with
//! format 1 (AIP and an AFL naming SFI 1 record 1), and READ RECORD with a 70 template holding
//! the Track 2 equivalent data (57), the PAN (5A), the expiry (5F24) and the cardholder name
//! (5F20). Anything else gets the status a card would give.

use crate::vpcd::{Response, VirtualCard};

pub const DEBIT_AID: [u8; 8] = [0xA0, 0x00, 0x00, 0x03, 0x33, 0x01, 0x01, 0x01];

/// A contact card's ATR: T=0 (as most bank cards are), TB1 and TC1 zero, five historical bytes.
pub const ATR: [u8; 9] = [0x3B, 0x65, 0x00, 0x00, 0x9C, 0x11, 0x01, 0x01, 0x03];

pub struct UnionPayCard {
    pub pan: String,
    /// YYMM.
    pub expiry: String,
    pub service_code: String,
    pub name: String,
    /// Answer as a T=0 card does: 61xx, then the data on GET RESPONSE.
    pub t0: bool,
    /// Store the Track 2 data with this byte changed (a misprogrammed or damaged card).
    pub corrupt_track2_at: Option<usize>,
    selected: bool,
    pending: Vec<u8>,
}

impl UnionPayCard {
    /// 王芳's debit card, valid to December 2030.
    pub fn wang_fang() -> UnionPayCard {
        UnionPayCard::new("6222021234567890128", "3012", "201", "WANG/FANG")
    }

    pub fn new(pan: &str, expiry: &str, service_code: &str, name: &str) -> UnionPayCard {
        UnionPayCard {
            pan: pan.into(),
            expiry: expiry.into(),
            service_code: service_code.into(),
            name: name.into(),
            t0: false,
            corrupt_track2_at: None,
            selected: false,
            pending: Vec::new(),
        }
    }

    /// Track 2 equivalent data: PAN, D, YYMM, service code, discretionary data, F-padded.
    pub fn track2(&self) -> Vec<u8> {
        let mut nibbles = format!(
            "{}D{}{}0000012345",
            self.pan, self.expiry, self.service_code
        );
        if nibbles.len() % 2 == 1 {
            nibbles.push('F');
        }
        let mut t2 = hex::decode(nibbles).expect("digits and D are hex");
        if let Some(at) = self.corrupt_track2_at {
            t2[at] ^= 0x5A;
        }
        t2
    }

    fn record(&self) -> Vec<u8> {
        let mut pan = self.pan.clone();
        if pan.len() % 2 == 1 {
            pan.push('F');
        }
        let mut body = tlv(&[0x57], &self.track2());
        body.extend(tlv(&[0x5A], &hex::decode(pan).expect("digits")));
        body.extend(tlv(
            &[0x5F, 0x24],
            &hex::decode(format!("{}31", self.expiry)).expect("digits"),
        ));
        body.extend(tlv(&[0x5F, 0x20], self.name.as_bytes()));
        tlv(&[0x70], &body)
    }

    fn fci(&self) -> Vec<u8> {
        let mut a5 = tlv(&[0x50], b"UnionPay Debit");
        a5.extend(tlv(&[0x87], &[0x01]));
        let mut body = tlv(&[0x84], &DEBIT_AID);
        body.extend(tlv(&[0xA5], &a5));
        tlv(&[0x6F], &body)
    }

    fn answer(&mut self, data: Vec<u8>) -> Response {
        if self.t0 && !data.is_empty() {
            let sw2 = data.len().min(255) as u8;
            self.pending = data;
            return Response::Answer(vec![0x61, sw2]);
        }
        let mut out = data;
        out.extend_from_slice(&[0x90, 0x00]);
        Response::Answer(out)
    }
}

fn tlv(tag: &[u8], value: &[u8]) -> Vec<u8> {
    let mut out = tag.to_vec();
    if value.len() > 0x7F {
        out.push(0x81);
    }
    out.push(value.len() as u8);
    out.extend_from_slice(value);
    out
}

fn status(sw: u16) -> Response {
    Response::Answer(sw.to_be_bytes().to_vec())
}

impl VirtualCard for UnionPayCard {
    fn atr(&self) -> Vec<u8> {
        ATR.to_vec()
    }

    fn reset(&mut self) {
        self.selected = false;
        self.pending.clear();
    }

    fn command(&mut self, apdu: &[u8]) -> Response {
        if apdu.len() < 4 {
            return status(0x6700);
        }
        match (apdu[0], apdu[1], apdu[2], apdu[3]) {
            (0x00, 0xC0, 0x00, 0x00) if !self.pending.is_empty() => {
                let mut out = std::mem::take(&mut self.pending);
                out.extend_from_slice(&[0x90, 0x00]);
                Response::Answer(out)
            }
            (0x00, 0xA4, 0x04, 0x00) => {
                let aid = apdu.get(5..5 + usize::from(*apdu.get(4).unwrap_or(&0)));
                if aid == Some(&DEBIT_AID[..]) {
                    self.selected = true;
                    let fci = self.fci();
                    self.answer(fci)
                } else {
                    self.selected = false;
                    status(0x6A82)
                }
            }
            (0x80, 0xA8, 0x00, 0x00) if self.selected => {
                // Format 1: AIP 5C00 (SDA, DDA, cardholder verification, risk management),
                // AFL: SFI 1, records 1 to 1, none for offline authentication.
                self.answer(tlv(&[0x80], &[0x5C, 0x00, 0x08, 0x01, 0x01, 0x00]))
            }
            (0x00, 0xB2, 0x01, 0x0C) if self.selected => {
                let record = self.record();
                self.answer(record)
            }
            (0x00, 0xB2, ..) => status(0x6A83),
            (0x80, 0xA8, ..) => status(0x6985),
            (0x00, ..) | (0x80, ..) => status(0x6D00),
            _ => status(0x6E00),
        }
    }
}
