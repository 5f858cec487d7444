//! The prepaid meter a card is carried to: it takes a pending credit when the credit's purchase
//! count is its own count plus one and the utility's token checks, then writes its return data
//! onto the card. One meter model per card vendor, as in the field.

use crate::cpu_card::CpuCard;
use crate::encryption_machine::EncryptionMachine;
use crate::sle4442::Sle4442;
use crate::sle4442::ht01::{self, Slot};

/// What inserting a card into the meter did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MeterInsert {
    /// The meter took this credit.
    Credited { purchase_count: u32, energy_wh: u64 },
    /// The card carries no credit the meter has not taken.
    NothingNew,
    /// The meter would not take the card's credit; why.
    Refused(String),
}

/// One prepaid energy meter.
#[derive(Debug, Clone)]
pub struct Meter {
    pub meter_number: String,
    /// The purchase count of the last credit taken.
    pub taken_count: u32,
    pub remaining_wh: u64,
    pub total_wh: u64,
    /// Bit 0 relay open, bit 1 cover opened, bit 2 battery low.
    pub status: u8,
    machine: EncryptionMachine,
}

impl Meter {
    pub fn new(meter_number: &str, machine: EncryptionMachine) -> Meter {
        Meter {
            meter_number: meter_number.into(),
            taken_count: 0,
            remaining_wh: 0,
            total_wh: 0,
            status: 0,
            machine,
        }
    }

    /// The household uses energy.
    pub fn consume(&mut self, wh: u64) {
        let used = wh.min(self.remaining_wh);
        self.remaining_wh -= used;
        self.total_wh += used;
        if self.remaining_wh == 0 {
            self.status |= 0x01;
        }
    }

    fn return_record(&self) -> [u8; 12] {
        let mut r = [0u8; 12];
        r[0] = b'R';
        r[1..3].copy_from_slice(&(self.taken_count.min(u32::from(u16::MAX)) as u16).to_be_bytes());
        r[3..7].copy_from_slice(&(self.remaining_wh.min(u64::from(u32::MAX)) as u32).to_be_bytes());
        r[7..11].copy_from_slice(&(self.total_wh.min(u64::from(u32::MAX)) as u32).to_be_bytes());
        r[11] = self.status;
        r
    }

    /// Decides on a pending credit; on success the meter has taken it.
    fn take(
        &mut self,
        card_serial: &str,
        count: u32,
        amount_fen: u64,
        energy_wh: u64,
        token: &[u8],
    ) -> MeterInsert {
        if count != self.taken_count + 1 {
            return MeterInsert::Refused(format!(
                "credit carries purchase count {count}; the meter is at {}",
                self.taken_count
            ));
        }
        if !self
            .machine
            .verify_credit_token(card_serial, count, amount_fen, energy_wh, token)
        {
            return MeterInsert::Refused("the credit token does not verify".into());
        }
        self.taken_count = count;
        self.remaining_wh += energy_wh;
        self.status &= !0x01;
        MeterInsert::Credited {
            purchase_count: count,
            energy_wh,
        }
    }

    /// Inserts a Hengtai SLE4442 card (layout HT01).
    pub fn insert_hengtai(&mut self, card: &mut Sle4442) -> MeterInsert {
        let m = &card.memory;
        if &m[0x04..0x08] != b"HT01" {
            return MeterInsert::Refused("not a Hengtai HT01 card".into());
        }
        if text(&m[0x2C..0x38]) != self.meter_number {
            return MeterInsert::Refused(format!("card is for meter {}", text(&m[0x2C..0x38])));
        }
        let serial = digits(&m[0x08..0x10]);
        let outcome = match ht01::current(card) {
            Some((at, slot)) if !slot.taken && slot.purchase_count > 0 => {
                let outcome = self.take(
                    &serial,
                    u32::from(slot.purchase_count),
                    u64::from(slot.amount_fen),
                    u64::from(slot.energy_wh),
                    &slot.token,
                );
                if matches!(outcome, MeterInsert::Credited { .. }) {
                    // Marked taken in the other slot, the same tear-safe way a kiosk writes.
                    let other = if at == ht01::SLOT_A {
                        ht01::SLOT_B
                    } else {
                        ht01::SLOT_A
                    };
                    let taken = Slot {
                        sequence: slot.sequence.wrapping_add(1),
                        taken: true,
                        ..slot
                    };
                    card.memory[other..other + 32].copy_from_slice(&taken.encode());
                }
                outcome
            }
            _ => MeterInsert::NothingNew,
        };
        let record = self.return_record();
        card.memory[ht01::RETURN..ht01::RETURN + 12].copy_from_slice(&record);
        let crc = ht01::crc16(&record);
        card.memory[ht01::RETURN + 12..ht01::RETURN + 14].copy_from_slice(&crc.to_be_bytes());
        outcome
    }

    /// Inserts a Lanling CPU card (layout LL-ESAM1); the meter's ESAM writes the card directly.
    pub fn insert_lanling(&mut self, card: &mut CpuCard) -> MeterInsert {
        if text(&card.parameters[23..35]) != self.meter_number {
            return MeterInsert::Refused(format!(
                "card is for meter {}",
                text(&card.parameters[23..35])
            ));
        }
        let w = card.wallet;
        let count = u32::from_be_bytes([w[0], w[1], w[2], w[3]]);
        let outcome = if w[12] == 0x00 && count > 0 {
            let outcome = self.take(
                &card.serial.clone(),
                count,
                u64::from(u32::from_be_bytes([w[4], w[5], w[6], w[7]])),
                u64::from(u32::from_be_bytes([w[8], w[9], w[10], w[11]])),
                &w[13..18],
            );
            if matches!(outcome, MeterInsert::Credited { .. }) {
                card.wallet[12] = 0x01;
            }
            outcome
        } else {
            MeterInsert::NothingNew
        };
        card.return_file = self.return_record();
        outcome
    }
}

fn text(raw: &[u8]) -> String {
    String::from_utf8_lossy(raw).trim_end().to_string()
}

fn digits(bcd: &[u8]) -> String {
    bcd.iter().map(|b| format!("{:02X}", b)).collect()
}
