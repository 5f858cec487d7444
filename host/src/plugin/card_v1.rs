//! Bindings for `selfvend:card@1.x`: the host side of the card-codec world, and conversions
//! between its generated types and the host's own (`crate::card`).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use wasmtime::component::Resource;

use super::PluginState;
use super::inspect::Version;
use crate::card as host;

/// The newest `selfvend:card` this host speaks.
pub const VERSION: Version = Version {
    major: 1,
    minor: 0,
    patch: 0,
};

wasmtime::component::bindgen!({
    path: "../wit/card",
    world: "card-codec",
    imports: { default: trappable },
    with: {
        "selfvend:card/channel.card-channel": ChannelBinding,
        "selfvend:card/authority.card-authority": AuthorityBinding,
    },
});

use exports::selfvend::card::codec as g;
use selfvend::card::{authority, channel, log, types};

/// A codec's error as the guest returned it, before the host checks it.
pub type GuestCardError = types::CardError;

/// The card a codec call may reach, as a table entry for the duration of one call.
pub struct ChannelBinding(pub Arc<Mutex<dyn host::CardChannel>>);

/// The utility's authority for one write, as a table entry for the duration of one call.
pub struct AuthorityBinding(pub Arc<Mutex<dyn host::CardAuthority>>);

impl types::Host for PluginState {}

impl channel::Host for PluginState {}

impl channel::HostCardChannel for PluginState {
    fn atr(&mut self, this: Resource<ChannelBinding>) -> wasmtime::Result<Vec<u8>> {
        let card = self.table.get(&this)?.0.clone();
        let atr = lock(&card).atr();
        Ok(atr)
    }

    fn reader_kind(
        &mut self,
        this: Resource<ChannelBinding>,
    ) -> wasmtime::Result<types::ReaderKind> {
        let card = self.table.get(&this)?.0.clone();
        let kind = lock(&card).reader_kind();
        Ok(match kind {
            host::ReaderKind::Contact => types::ReaderKind::Contact,
            host::ReaderKind::MemoryCard => types::ReaderKind::MemoryCard,
            host::ReaderKind::Contactless => types::ReaderKind::Contactless,
        })
    }

    fn transmit(
        &mut self,
        this: Resource<ChannelBinding>,
        command: Vec<u8>,
    ) -> wasmtime::Result<Result<Vec<u8>, types::ChannelError>> {
        let card = self.table.get(&this)?.0.clone();
        if command.len() > MAX_APDU {
            return Ok(Err(types::ChannelError::Refused(format!(
                "APDU of {} bytes is over the {MAX_APDU}-byte limit",
                command.len()
            ))));
        }
        if let Some(spent) = self.wait_spent() {
            return Ok(Err(types::ChannelError::Refused(spent)));
        }
        let budget = WaitBudget::of(self.call);
        self.apdus_this_call += 1;
        if self.apdus_this_call > budget.apdus {
            return Ok(Err(types::ChannelError::Refused(format!(
                "more than {} APDUs in {}",
                budget.apdus, self.call
            ))));
        }
        // Time at the card (a slow reader, a long command) is the card's, not the codec's.
        let result = self.waiting(|_| lock(&card).transmit(&command));
        Ok(result.map_err(|e| match e {
            host::ChannelError::CardRemoved => types::ChannelError::CardRemoved,
            host::ChannelError::ReaderFault(s) => types::ChannelError::ReaderFault(s),
            host::ChannelError::Refused(s) => types::ChannelError::Refused(s),
        }))
    }

    fn drop(&mut self, this: Resource<ChannelBinding>) -> wasmtime::Result<()> {
        self.table.delete(this)?;
        Ok(())
    }
}

impl authority::Host for PluginState {}

impl authority::HostCardAuthority for PluginState {
    fn card_password(
        &mut self,
        this: Resource<AuthorityBinding>,
    ) -> wasmtime::Result<Result<Vec<u8>, authority::AuthorityError>> {
        let authority = self.table.get(&this)?.0.clone();
        if self.psc_granted {
            return Ok(Err(authority::AuthorityError::NotAllowed(
                "the PSC was already given once in this session".into(),
            )));
        }
        if let Some(spent) = self.wait_spent() {
            return Ok(Err(authority::AuthorityError::NotAllowed(spent)));
        }
        self.psc_granted = true;
        let result = self.waiting(|_| lock(&authority).card_password());
        Ok(result.map_err(authority_error))
    }

    fn authenticate(
        &mut self,
        this: Resource<AuthorityBinding>,
        request: authority::AuthRequest,
    ) -> wasmtime::Result<Result<Vec<u8>, authority::AuthorityError>> {
        let authority = self.table.get(&this)?.0.clone();
        let request = host::AuthRequest {
            purpose: match request.purpose {
                authority::AuthPurpose::ExternalAuthenticate => {
                    host::AuthPurpose::ExternalAuthenticate
                }
                authority::AuthPurpose::CommandMac => host::AuthPurpose::CommandMac,
                authority::AuthPurpose::VerifyCardMac => host::AuthPurpose::VerifyCardMac,
            },
            challenge: request.challenge,
            data: request.data,
        };
        if let Some(spent) = self.wait_spent() {
            return Ok(Err(authority::AuthorityError::NotAllowed(spent)));
        }
        self.authentications_this_call += 1;
        if self.authentications_this_call > MAX_AUTHENTICATIONS_PER_CALL {
            return Ok(Err(authority::AuthorityError::NotAllowed(format!(
                "more than {MAX_AUTHENTICATIONS_PER_CALL} authentications in {}",
                self.call
            ))));
        }
        // The backend's round trip to its encryption machine is the network's time.
        let result = self.waiting(|_| lock(&authority).authenticate(request));
        Ok(result.map_err(authority_error))
    }

    fn drop(&mut self, this: Resource<AuthorityBinding>) -> wasmtime::Result<()> {
        self.table.delete(this)?;
        Ok(())
    }
}

impl log::Host for PluginState {
    fn log(&mut self, level: log::Level, message: String) -> wasmtime::Result<()> {
        let level = match level {
            log::Level::Debug => "debug",
            log::Level::Info => "info",
            log::Level::Warn => "warn",
            log::Level::Error => "error",
        };
        self.log.line(level, &message);
        Ok(())
    }
}

/// The longest APDU a codec may send (extended length).
const MAX_APDU: usize = 4096 + 7;
/// A bound on encryption-machine requests per call (a CPU card's write needs a few), so a codec
/// cannot keep the backend busy without end.
const MAX_AUTHENTICATIONS_PER_CALL: u32 = 32;
/// Time at the card and the authority all of one card session's calls may spend: above the
/// budgets of identify, read, a re-write (write, verify, read) and the sale's write and verify.
const MAX_WAIT_PER_SESSION: Duration = Duration::from_secs(180);

/// What one codec call may spend at the card and the utility's authority. That time is off the
/// codec's clock, so it is bounded here instead: tightly for `identify`, which every codec runs
/// on every card, more for reading, most for writing a credit. The bounds are checked before
/// each APDU or request; the one in flight is bounded by the reader's and the backend's own
/// timeouts.
struct WaitBudget {
    apdus: u32,
    wait: Duration,
}

impl WaitBudget {
    fn of(call: &str) -> WaitBudget {
        match call {
            "identify" => WaitBudget {
                apdus: 64,
                wait: Duration::from_secs(5),
            },
            "write-credit" => WaitBudget {
                apdus: 4096,
                wait: Duration::from_secs(30),
            },
            _ => WaitBudget {
                apdus: 1024,
                wait: Duration::from_secs(15),
            },
        }
    }
}

impl PluginState {
    /// Why no more waiting on the card or the authority is allowed, if the call's or the
    /// session's budget is spent.
    fn wait_spent(&self) -> Option<String> {
        let budget = WaitBudget::of(self.call);
        if self.host_wait > budget.wait {
            return Some(format!(
                "the card and the authority have taken over {} s in {}",
                budget.wait.as_secs(),
                self.call
            ));
        }
        (self.session_wait > MAX_WAIT_PER_SESSION).then(|| {
            format!(
                "the card and the authority have taken over {} s in this card session",
                MAX_WAIT_PER_SESSION.as_secs()
            )
        })
    }
}

fn lock<T: ?Sized>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn authority_error(e: host::AuthorityError) -> authority::AuthorityError {
    match e {
        host::AuthorityError::Refused(s) => authority::AuthorityError::Refused(s),
        host::AuthorityError::Unavailable(s) => authority::AuthorityError::Unavailable(s),
        host::AuthorityError::NotAllowed(s) => authority::AuthorityError::NotAllowed(s),
    }
}

/// Limits on what a codec may return, so a result cannot flood the host.
const MAX_TEXT: usize = 128;
const MAX_MESSAGE: usize = 512;
const MAX_BYTES: usize = 4096;
const MAX_FLAGS: usize = 32;

fn text(field: &str, s: String) -> Result<String, String> {
    bounded_text(field, s, MAX_TEXT)
}

/// An error message from a codec: longer than a field, still bounded.
fn message(field: &str, s: String) -> Result<String, String> {
    bounded_text(field, s, MAX_MESSAGE)
}

fn bounded_text(field: &str, s: String, limit: usize) -> Result<String, String> {
    if s.len() > limit {
        Err(format!("{field} is {} bytes long (limit {limit})", s.len()))
    } else if s.chars().any(char::is_control) {
        Err(format!("{field} contains control characters"))
    } else {
        Ok(s)
    }
}

fn bytes(field: &str, b: Vec<u8>) -> Result<Vec<u8>, String> {
    if b.len() > MAX_BYTES {
        Err(format!(
            "{field} is {} bytes long (limit {MAX_BYTES})",
            b.len()
        ))
    } else {
        Ok(b)
    }
}

pub(super) fn codec_info(info: g::CodecInfo) -> Result<host::CodecInfo, String> {
    Ok(host::CodecInfo {
        vendor: text("vendor", info.vendor)?,
        name: text("name", info.name)?,
        version: text("version", info.version)?,
    })
}

pub(super) fn identification(id: g::Identification) -> Result<host::Identification, String> {
    Ok(host::Identification {
        card_type: text("card-type", id.card_type)?,
        write_auth: match id.write_auth {
            types::WriteAuth::None => host::WriteAuth::None,
            types::WriteAuth::Psc => host::WriteAuth::Psc,
            types::WriteAuth::EncryptionMachine => host::WriteAuth::EncryptionMachine,
        },
    })
}

pub(super) fn card_data(d: g::CardData) -> Result<host::CardData, String> {
    if d.card_serial.is_empty() {
        return Err("card-serial is empty".into());
    }
    let pending = d.pending.map(|p| host::PendingCredit {
        purchase_count: p.purchase_count,
        amount: crate::money::Fen(p.amount_fen),
        energy: crate::money::Wh(p.energy_wh),
    });
    let return_data = match d.return_data {
        None => None,
        Some(r) => {
            if r.status_flags.len() > MAX_FLAGS {
                return Err(format!(
                    "return-data has {} status flags (limit {MAX_FLAGS})",
                    r.status_flags.len()
                ));
            }
            Some(host::ReturnData {
                meter_purchase_count: r.meter_purchase_count,
                remaining: r.remaining_fen.map(crate::money::Fen),
                remaining_energy: r.remaining_wh.map(crate::money::Wh),
                total_energy: r.total_energy_wh.map(crate::money::Wh),
                status_flags: r
                    .status_flags
                    .into_iter()
                    .map(|f| text("status flag", f))
                    .collect::<Result<_, _>>()?,
                raw: bytes("return-data raw", r.raw)?,
            })
        }
    };
    Ok(host::CardData {
        card_serial: text("card-serial", d.card_serial)?,
        utility_code: text("utility-code", d.utility_code)?,
        customer_number: text("customer-number", d.customer_number)?,
        meter_number: text("meter-number", d.meter_number)?,
        role: match d.role {
            types::CardRole::User => host::CardRole::User,
            types::CardRole::OpenAccount => host::CardRole::OpenAccount,
            types::CardRole::Replacement => host::CardRole::Replacement,
            types::CardRole::Check => host::CardRole::Check,
            types::CardRole::Tool => host::CardRole::Tool,
        },
        purchase_count: d.purchase_count,
        pending,
        return_data,
    })
}

pub(super) fn grant(g: &host::CreditGrant) -> types::CreditGrant {
    types::CreditGrant {
        card_serial: g.card_serial.clone(),
        purchase_count: g.purchase_count,
        amount_fen: g.amount.0,
        energy_wh: g.energy.0,
        token: g.token.clone(),
    }
}

pub(super) fn verify_outcome(v: g::VerifyOutcome) -> host::VerifyOutcome {
    match v {
        types::VerifyOutcome::Written => host::VerifyOutcome::Written,
        types::VerifyOutcome::NotWritten => host::VerifyOutcome::NotWritten,
    }
}

pub(super) fn card_error(e: GuestCardError) -> Result<host::CardError, String> {
    Ok(match e {
        types::CardError::CardRemoved => host::CardError::CardRemoved,
        types::CardError::ReaderFault(s) => {
            host::CardError::ReaderFault(message("reader-fault", s)?)
        }
        types::CardError::WrongCard(s) => host::CardError::WrongCard(message("wrong-card", s)?),
        types::CardError::PscRefused(n) => host::CardError::PscRefused(n),
        types::CardError::CardLocked => host::CardError::CardLocked,
        types::CardError::AuthorityFailed(s) => {
            host::CardError::AuthorityFailed(message("authority-failed", s)?)
        }
        types::CardError::AuthRefused(s) => {
            host::CardError::AuthRefused(message("auth-refused", s)?)
        }
        types::CardError::UnexpectedStatus(f) => {
            host::CardError::UnexpectedStatus(host::ApduFailure {
                step: message("step", f.step)?,
                header: bytes("header", f.header)?,
                status: f.status,
            })
        }
        types::CardError::Malformed(s) => host::CardError::Malformed(message("malformed", s)?),
        types::CardError::GrantRejected(s) => {
            host::CardError::GrantRejected(message("grant-rejected", s)?)
        }
    })
}
