//! A virtual card as the simulators play it: the command APDU in, the response out. No I/O,
//! so a card built on it also compiles to a WebAssembly virtual card for the vendor kit
//! (`tests/guests/lanling-card-sim`).

/// What a card does with one command APDU.
pub enum Response {
    /// The response APDU, status word included.
    Answer(Vec<u8>),
    /// The card lost power in the middle of the command (a torn write): no answer, and the
    /// card leaves the reader.
    Torn,
}

/// A card that can be inserted into a vpcd slot.
pub trait VirtualCard: Send + 'static {
    fn atr(&self) -> Vec<u8>;
    /// Power off, power on or reset: the card forgets its security state.
    fn reset(&mut self);
    fn command(&mut self, apdu: &[u8]) -> Response;
}

/// Splits a command APDU into header, data and Le (short APDUs, cases 1–4).
pub fn parse_apdu(apdu: &[u8]) -> Option<([u8; 4], &[u8], Option<usize>)> {
    let header: [u8; 4] = apdu.get(..4)?.try_into().ok()?;
    match &apdu[4..] {
        [] => Some((header, &[], None)),
        [le] => Some((
            header,
            &[],
            Some(if *le == 0 { 256 } else { usize::from(*le) }),
        )),
        [lc, rest @ ..] => {
            let lc = usize::from(*lc);
            match rest.len().checked_sub(lc)? {
                0 => Some((header, rest, None)),
                1 => {
                    let le = rest[lc];
                    Some((
                        header,
                        &rest[..lc],
                        Some(if le == 0 { 256 } else { usize::from(le) }),
                    ))
                }
                _ => None,
            }
        }
    }
}

/// A response APDU: data then the status word.
pub fn answer(data: &[u8], sw: u16) -> Response {
    let mut r = data.to_vec();
    r.extend_from_slice(&sw.to_be_bytes());
    Response::Answer(r)
}

pub fn status(sw: u16) -> Response {
    answer(&[], sw)
}
