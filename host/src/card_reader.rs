//! Meter-card readers through PC/SC (pcscd). Waits for cards with `SCardGetStatusChange`, never by
//! polling, and binds a codec's `card-channel` to exactly the card that was connected.

use std::ffi::{CStr, CString};
use std::time::{Duration, Instant};

use pcsc::{Context, Disposition, Protocols, ReaderState, Scope, ShareMode, State};

use crate::card::{CardChannel, ChannelError, ReaderKind};

/// Why a reader could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ReaderError {
    #[error("PC/SC is not available ({0}): is pcscd running?")]
    NoService(String),
    #[error("no reader named `{wanted}`; readers: {}", list(.present))]
    NoSuchReader {
        wanted: String,
        present: Vec<String>,
    },
    #[error("no card reader is connected")]
    NoReaders,
    #[error("no card in reader `{0}`")]
    NoCard(String),
    #[error("reader `{reader}`: {operation}: {cause}")]
    Pcsc {
        reader: String,
        operation: &'static str,
        cause: pcsc::Error,
    },
}

fn list(names: &[String]) -> String {
    if names.is_empty() {
        "none".into()
    } else {
        names.join(", ")
    }
}

/// Something that happened at the readers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReaderEvent {
    ReaderAdded(String),
    ReaderRemoved(String),
    CardInserted { reader: String, atr: Vec<u8> },
    CardRemoved(String),
}

/// The PC/SC readers of this kiosk.
pub struct Readers {
    ctx: Context,
}

/// Ends a [`Readers::wait`] blocked in another thread early (it returns as if it timed out).
#[derive(Clone)]
pub struct Waker(Context);

impl Waker {
    pub fn wake(&self) {
        // Nothing is waiting: nothing to end.
        let _ = self.0.cancel();
    }
}

impl Readers {
    /// Connects to pcscd.
    pub fn establish() -> Result<Readers, ReaderError> {
        Context::establish(Scope::User)
            .map(|ctx| Readers { ctx })
            .map_err(|e| ReaderError::NoService(e.to_string()))
    }

    /// A waker for this context's waits.
    pub fn waker(&self) -> Waker {
        Waker(self.ctx.clone())
    }

    /// The readers pcscd knows now.
    pub fn names(&self) -> Result<Vec<String>, ReaderError> {
        match self.ctx.list_readers_owned() {
            Ok(names) => Ok(names
                .into_iter()
                .map(|n| n.to_string_lossy().into_owned())
                .collect()),
            Err(pcsc::Error::NoReadersAvailable) => Ok(Vec::new()),
            Err(e) => Err(ReaderError::NoService(e.to_string())),
        }
    }

    /// `wanted`, checked against the readers present; or the first reader when `None`.
    pub fn pick(&self, wanted: Option<&str>) -> Result<String, ReaderError> {
        let present = self.names()?;
        match wanted {
            Some(w) if present.iter().any(|p| p == w) => Ok(w.to_string()),
            Some(w) => Err(ReaderError::NoSuchReader {
                wanted: w.to_string(),
                present,
            }),
            None => present.into_iter().next().ok_or(ReaderError::NoReaders),
        }
    }

    /// Blocks until `reader` holds a card (its ATR) or has none (`None`), as `present` asks,
    /// or `timeout` passes (`Ok(false)`).
    pub fn wait(
        &self,
        reader: &str,
        present: bool,
        timeout: Option<Duration>,
    ) -> Result<bool, ReaderError> {
        let name = c_name(reader)?;
        let mut states = [ReaderState::new(name, State::UNAWARE)];
        let fail = |operation, cause| ReaderError::Pcsc {
            reader: reader.to_string(),
            operation,
            cause,
        };
        loop {
            match self.ctx.get_status_change(timeout, &mut states) {
                Ok(()) => {}
                Err(pcsc::Error::Timeout | pcsc::Error::Cancelled) => return Ok(false),
                Err(e) => return Err(fail("waiting for a card", e)),
            }
            let state = states[0].event_state();
            if state.intersects(State::UNKNOWN | State::IGNORE) {
                return Err(fail("waiting for a card", pcsc::Error::UnknownReader));
            }
            if state.contains(State::PRESENT) == present && !state.contains(State::MUTE) {
                return Ok(true);
            }
            states[0].sync_current_state();
        }
    }

    /// Connects to the card in `reader`.
    pub fn connect(&self, reader: &str) -> Result<PcscCard, ReaderError> {
        let name = c_name(reader)?;
        // Another program (the kiosk, `card watch`) may hold the card for a moment; a card is
        // only ever held for one short exchange, so wait for it rather than fail.
        let deadline = Instant::now() + CARD_IN_USE_WAIT;
        let card = loop {
            match self
                .ctx
                .connect(&name, ShareMode::Exclusive, Protocols::ANY)
            {
                Err(pcsc::Error::SharingViolation) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(pcsc::Error::NoSmartcard | pcsc::Error::RemovedCard) => {
                    return Err(ReaderError::NoCard(reader.to_string()));
                }
                Err(cause) => {
                    return Err(ReaderError::Pcsc {
                        reader: reader.to_string(),
                        operation: "connecting to the card",
                        cause,
                    });
                }
                Ok(card) => break card,
            }
        };
        let atr = card
            .status2_owned()
            .map(|status| status.atr().to_vec())
            .map_err(|cause| ReaderError::Pcsc {
                reader: reader.to_string(),
                operation: "reading the ATR",
                cause,
            })?;
        Ok(PcscCard {
            ctx: self.ctx.clone(),
            kind: reader_kind(&atr),
            reader: reader.to_string(),
            atr,
            card: Some(card),
        })
    }

    /// Reports reader and card events to `on_event` until it returns `false` or `timeout`
    /// passes with nothing happening. Readers plugged in later are picked up.
    pub fn watch(
        &self,
        timeout: Option<Duration>,
        mut on_event: impl FnMut(ReaderEvent) -> bool,
    ) -> Result<(), ReaderError> {
        let mut states = vec![ReaderState::new(pcsc::PNP_NOTIFICATION(), State::UNAWARE)];
        let mut first = true;
        loop {
            // Track exactly the readers present now (plus the plug-and-play pseudo reader).
            let names = self.names()?;
            let gone: Vec<String> = states
                .iter()
                .map(|s| lossy(s.name()))
                .filter(|n| !is_pnp_name(n) && !names.contains(n))
                .collect();
            states.retain(|s| is_pnp(s.name()) || names.contains(&lossy(s.name())));
            for name in gone {
                if !on_event(ReaderEvent::ReaderRemoved(name)) {
                    return Ok(());
                }
            }
            for name in &names {
                if !states
                    .iter()
                    .any(|s| s.name().to_bytes() == name.as_bytes())
                {
                    if !first && !on_event(ReaderEvent::ReaderAdded(name.clone())) {
                        return Ok(());
                    }
                    states.push(ReaderState::new(c_name(name)?, State::UNAWARE));
                }
            }
            match self.ctx.get_status_change(timeout, &mut states) {
                Ok(()) => {}
                Err(pcsc::Error::Timeout) => return Ok(()),
                Err(e) => return Err(ReaderError::NoService(e.to_string())),
            }
            for s in states.iter_mut().filter(|s| !is_pnp(s.name())) {
                let before = s.current_state();
                let now = s.event_state();
                let was = before.contains(State::PRESENT);
                let is = now.contains(State::PRESENT) && !now.contains(State::MUTE);
                let reader = lossy(s.name());
                let event = match (was, is) {
                    (false, true) => Some(ReaderEvent::CardInserted {
                        reader,
                        atr: s.atr().to_vec(),
                    }),
                    (true, false) => Some(ReaderEvent::CardRemoved(reader)),
                    _ => None,
                };
                s.sync_current_state();
                if let Some(event) = event
                    && !on_event(event)
                {
                    return Ok(());
                }
            }
            for s in states.iter_mut().filter(|s| is_pnp(s.name())) {
                s.sync_current_state();
            }
            first = false;
        }
    }
}

fn is_pnp(name: &CStr) -> bool {
    name == pcsc::PNP_NOTIFICATION()
}

fn is_pnp_name(name: &str) -> bool {
    name.as_bytes() == pcsc::PNP_NOTIFICATION().to_bytes()
}

fn lossy(name: &CStr) -> String {
    name.to_string_lossy().into_owned()
}

fn c_name(reader: &str) -> Result<CString, ReaderError> {
    CString::new(reader).map_err(|_| ReaderError::NoSuchReader {
        wanted: reader.escape_debug().to_string(),
        present: Vec::new(),
    })
}

/// ACS-style readers report a synchronous memory card as `3B 04` and the chip's 4-byte ATR;
/// such a card only understands the reader's class FF pseudo-APDUs.
pub fn reader_kind(atr: &[u8]) -> ReaderKind {
    match atr {
        [0x3B, 0x04, _, _, _, _] => ReaderKind::MemoryCard,
        _ => ReaderKind::Contact,
    }
}

/// The card connected in one reader; dropping it releases the card.
pub struct PcscCard {
    ctx: Context,
    card: Option<pcsc::Card>,
    reader: String,
    atr: Vec<u8>,
    kind: ReaderKind,
}

impl PcscCard {
    pub fn reader(&self) -> &str {
        &self.reader
    }

    /// Whether the card has left the reader, giving pcscd a moment to notice.
    fn card_left(&self) -> bool {
        let Ok(name) = CString::new(self.reader.as_str()) else {
            return true;
        };
        let mut states = [ReaderState::new(name, State::UNAWARE)];
        for timeout in [Duration::ZERO, CARD_LEFT_GRACE] {
            match self.ctx.get_status_change(Some(timeout), &mut states) {
                Ok(()) if !states[0].event_state().contains(State::PRESENT) => return true,
                Ok(()) | Err(pcsc::Error::Timeout) => states[0].sync_current_state(),
                Err(_) => return true,
            }
        }
        false
    }
}

/// How long connecting waits for another program to let go of the card.
const CARD_IN_USE_WAIT: Duration = Duration::from_secs(3);

/// How long an empty answer waits for pcscd to report the card gone (it polls every ~0.4 s).
const CARD_LEFT_GRACE: Duration = Duration::from_millis(1500);

impl Drop for PcscCard {
    fn drop(&mut self) {
        if let Some(card) = self.card.take() {
            // Reset so the next session starts from a fresh card state (PSC, authentication).
            let _ = card.disconnect(Disposition::ResetCard);
        }
    }
}

impl std::fmt::Debug for PcscCard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PcscCard")
            .field("reader", &self.reader)
            .field("atr", &self.atr)
            .finish_non_exhaustive()
    }
}

impl CardChannel for PcscCard {
    fn atr(&self) -> Vec<u8> {
        self.atr.clone()
    }

    fn reader_kind(&self) -> ReaderKind {
        self.kind
    }

    fn transmit(&mut self, command: &[u8]) -> Result<Vec<u8>, ChannelError> {
        let card = self.card.as_ref().ok_or(ChannelError::CardRemoved)?;
        let mut buffer = [0u8; pcsc::MAX_BUFFER_SIZE_EXTENDED];
        match card.transmit(command, &mut buffer) {
            // Some readers (vpcd among them) answer a card pulled mid-command with nothing at
            // all; ask the reader whether the card is still there before blaming the card.
            Ok(response) if response.len() < 2 && self.card_left() => {
                self.card = None;
                Err(ChannelError::CardRemoved)
            }
            Ok(response) => Ok(response.to_vec()),
            Err(
                pcsc::Error::RemovedCard
                | pcsc::Error::ResetCard
                | pcsc::Error::NoSmartcard
                | pcsc::Error::UnpoweredCard,
            ) => {
                self.card = None;
                Err(ChannelError::CardRemoved)
            }
            Err(e @ (pcsc::Error::ReaderUnavailable | pcsc::Error::UnknownReader)) => Err(
                ChannelError::ReaderFault(format!("reader `{}` is gone: {e}", self.reader)),
            ),
            Err(e) => Err(ChannelError::ReaderFault(format!(
                "reader `{}`: {e}",
                self.reader
            ))),
        }
    }
}
