//! A vendor's virtual card (`--card-sim SIM.wasm`, world `selfvend:card-sim/virtual-card`):
//! run in a sandbox of its own (no capabilities, a fuel budget per call), one fresh instance
//! per scenario, behind the kit's `VirtualCard` and `Issuer`.

use std::sync::{Arc, Mutex};

use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Config, Engine, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::card::{AuthPurpose, AuthRequest, AuthorityError, ReaderKind};

use super::card_bench::{FreshCard, Issuer, VirtualCard, lock};
use super::memory_card::Answer;

mod world {
    wasmtime::component::bindgen!({
        path: "../wit/card-sim",
        world: "virtual-card",
    });
}

use world::VirtualCard as SimWorld;
use world::exports::selfvend::card_sim::{card, issuer};

/// Instructions a simulator may spend on one call: far more than a card model needs, and a
/// bound on one that loops.
const FUEL_PER_CALL: u64 = 500_000_000;

struct SimState {
    wasi: WasiCtx,
    table: ResourceTable,
}

impl WasiView for SimState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// A compiled simulator, ready to make fresh cards.
pub struct CardSim {
    engine: Engine,
    component: Component,
    linker: Linker<SimState>,
}

impl CardSim {
    pub fn load(bytes: &[u8]) -> Result<CardSim, String> {
        let mut config = Config::new();
        config.wasm_component_model(true);
        config.consume_fuel(true);
        let engine = Engine::new(&config).map_err(|e| format!("{e:#}"))?;
        let component =
            Component::new(&engine, bytes).map_err(|e| format!("does not compile: {e:#}"))?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(|e| format!("{e:#}"))?;
        // Instantiated once here, so a simulator that does not fit the world is refused now.
        Instance::start(&engine, &component, &linker)?;
        Ok(CardSim {
            engine,
            component,
            linker,
        })
    }

    /// A card as the simulator makes it, and its issuer (the same instance).
    pub fn fresh(&self) -> Result<FreshCard, String> {
        let instance = Arc::new(Mutex::new(Instance::start(
            &self.engine,
            &self.component,
            &self.linker,
        )?));
        let mut card = SimCard {
            instance: instance.clone(),
            atr: Vec::new(),
            kind: ReaderKind::Contact,
        };
        card.power_on();
        card.kind = lock(&instance)
            .call(|b, s| b.selfvend_card_sim_card().call_kind(s))
            .map(|k| match k {
                card::ReaderKind::Contact => ReaderKind::Contact,
                card::ReaderKind::MemoryCard => ReaderKind::MemoryCard,
                card::ReaderKind::Contactless => ReaderKind::Contactless,
            })?;
        Ok((Box::new(card), Box::new(SimIssuer(instance))))
    }
}

struct Instance {
    store: Store<SimState>,
    bindings: SimWorld,
}

impl Instance {
    fn start(
        engine: &Engine,
        component: &Component,
        linker: &Linker<SimState>,
    ) -> Result<Instance, String> {
        let state = SimState {
            wasi: WasiCtx::builder()
                .allow_tcp(false)
                .allow_udp(false)
                .allow_ip_name_lookup(false)
                .build(),
            table: ResourceTable::new(),
        };
        let mut store = Store::new(engine, state);
        store
            .set_fuel(FUEL_PER_CALL)
            .map_err(|e| format!("{e:#}"))?;
        let bindings = SimWorld::instantiate(&mut store, component, linker)
            .map_err(|e| format!("is not a selfvend:card-sim virtual card: {e:#}"))?;
        Ok(Instance { store, bindings })
    }

    fn call<R>(
        &mut self,
        f: impl FnOnce(&SimWorld, &mut Store<SimState>) -> wasmtime::Result<R>,
    ) -> Result<R, String> {
        self.store
            .set_fuel(FUEL_PER_CALL)
            .map_err(|e| format!("{e:#}"))?;
        f(&self.bindings, &mut self.store).map_err(|e| format!("the card simulator failed: {e:#}"))
    }
}

struct SimCard {
    instance: Arc<Mutex<Instance>>,
    atr: Vec<u8>,
    kind: ReaderKind,
}

impl VirtualCard for SimCard {
    fn atr(&self) -> Vec<u8> {
        self.atr.clone()
    }

    fn reader_kind(&self) -> ReaderKind {
        self.kind
    }

    fn power_on(&mut self) {
        self.atr = lock(&self.instance)
            .call(|b, s| b.selfvend_card_sim_card().call_atr(s))
            .unwrap_or_default();
    }

    fn command(&mut self, apdu: &[u8]) -> Result<Answer, String> {
        lock(&self.instance)
            .call(|b, s| b.selfvend_card_sim_card().call_transmit(s, apdu))
            .map(Answer::Response)
    }
}

struct SimIssuer(Arc<Mutex<Instance>>);

impl Issuer for SimIssuer {
    fn card_password(&mut self) -> Result<Vec<u8>, AuthorityError> {
        lock(&self.0)
            .call(|b, s| b.selfvend_card_sim_issuer().call_card_password(s))
            .map_err(AuthorityError::Unavailable)?
            .map_err(AuthorityError::Refused)
    }

    fn authenticate(&mut self, request: AuthRequest) -> Result<Vec<u8>, AuthorityError> {
        let purpose = match request.purpose {
            AuthPurpose::ExternalAuthenticate => issuer::AuthPurpose::ExternalAuthenticate,
            AuthPurpose::CommandMac => issuer::AuthPurpose::CommandMac,
            AuthPurpose::VerifyCardMac => issuer::AuthPurpose::VerifyCardMac,
        };
        lock(&self.0)
            .call(|b, s| {
                b.selfvend_card_sim_issuer().call_authenticate(
                    s,
                    purpose,
                    &request.challenge,
                    &request.data,
                )
            })
            .map_err(AuthorityError::Unavailable)?
            .map_err(AuthorityError::Refused)
    }
}
