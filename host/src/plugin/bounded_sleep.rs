//! A plugin's sleeps end at its call's deadline. `wasi:clocks/monotonic-clock`'s
//! `subscribe-duration` and `subscribe-instant` are shadowed so that the pollable they make is
//! ready no later than the time the call has left. Waiting on a pollable is a host call, where
//! the epoch cannot interrupt the plugin: without this, a plugin that slept would hold the
//! kiosk's worker for as long as it asked (forever, for a duration too long to represent). Once
//! the shortened sleep returns, the plugin's time is up and the epoch stops it as a timeout.

use std::time::Duration;

use wasmtime::StoreContextMut;
use wasmtime::component::{Linker, Resource};
use wasmtime_wasi::clocks::WasiClocksView;
use wasmtime_wasi::p2::DynPollable;
use wasmtime_wasi::p2::bindings::clocks::monotonic_clock::Host as MonotonicClock;

use super::PluginState;

/// The interface as wasmtime-wasi 48 names it; guests importing any 0.2 resolve to it. A
/// wasmtime-wasi that names another version leaves sleeps unbounded, which the hostile-plugin
/// test of a sleep catches.
const MONOTONIC_CLOCK: &str = "wasi:clocks/monotonic-clock@0.2.12";

/// WASI preview 2, with sleeps bounded by the call's deadline.
pub(super) fn wasi_linker(engine: &wasmtime::Engine) -> wasmtime::Result<Linker<PluginState>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
    linker.allow_shadowing(true);
    let mut clock = linker.instance(MONOTONIC_CLOCK)?;
    clock.func_wrap(
        "subscribe-duration",
        |mut store: StoreContextMut<'_, PluginState>, (nanos,): (u64,)| {
            Ok((sleep(store.data_mut(), Duration::from_nanos(nanos))?,))
        },
    )?;
    clock.func_wrap(
        "subscribe-instant",
        |mut store: StoreContextMut<'_, PluginState>, (when,): (u64,)| {
            let state = store.data_mut();
            let now = state.clocks().now()?;
            Ok((sleep(
                state,
                Duration::from_nanos(when.saturating_sub(now)),
            )?,))
        },
    )?;
    linker.allow_shadowing(false);
    Ok(linker)
}

/// A pollable ready after `wanted`, or when the call's time runs out if that is sooner.
fn sleep(state: &mut PluginState, wanted: Duration) -> wasmtime::Result<Resource<DynPollable>> {
    let nanos = wanted.min(state.time_left()).as_nanos();
    state
        .clocks()
        .subscribe_duration(u64::try_from(nanos).unwrap_or(u64::MAX))
}
