//! CRC-16/CCITT-FALSE: the checksum of the credit slots and the meter's return record.

/// CRC-16/CCITT-FALSE (poly 1021, init FFFF, no reflection, no xor-out) of `data`.
pub fn crc16(data: &[u8]) -> u16 {
    let mut crc = 0xFFFF_u16;
    for &byte in data {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}
