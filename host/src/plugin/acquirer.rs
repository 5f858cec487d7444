//! One acquirer-dialect instance: sign-on, purchase, reversal and settlement, with the same
//! unknown-outcome rule as a backend session: once request bytes went out, a failure to get a
//! complete answer means the acquirer may have acted.

use wasmtime::Store;

use super::payment_v1::{self, GuestAcquirerError};
use super::{PluginError, PluginState, Sandbox};
use crate::payment::{
    self as host, AcquirerError, PurchaseOutcome, PurchaseRequest, ReversalRequest, Settlement,
    SettlementRequest, Terminal, WorkingKeys,
};

/// Why an acquirer dialect call failed: the acquirer's answer, or the plugin's failure.
#[derive(Debug, thiserror::Error)]
pub enum AcquirerCallError {
    #[error(transparent)]
    Acquirer(#[from] AcquirerError),
    #[error(transparent)]
    Plugin(#[from] PluginError),
}

pub struct AcquirerSession {
    sandbox: Sandbox,
    bindings: payment_v1::AcquirerDialect,
    /// The dialect's refusal of the last call when the acquirer's own answer never came, which
    /// the session did not take.
    overruled: Option<String>,
}

impl AcquirerSession {
    pub(super) fn new(sandbox: Sandbox, bindings: payment_v1::AcquirerDialect) -> Self {
        AcquirerSession {
            sandbox,
            bindings,
            overruled: None,
        }
    }

    /// What the plugin logged in this session.
    pub fn log(&self) -> String {
        self.sandbox.log()
    }

    /// The refusal the dialect reported for the last call where the acquirer's answer never
    /// came, which the session took as an unknown outcome instead: a dialect's bug the
    /// conformance kit names.
    pub fn overruled(&self) -> Option<&str> {
        self.overruled.as_deref()
    }

    fn call<R>(
        &mut self,
        call: &'static str,
        f: impl FnOnce(
            &payment_v1::AcquirerDialect,
            &mut Store<PluginState>,
        ) -> wasmtime::Result<Result<R, GuestAcquirerError>>,
    ) -> Result<R, AcquirerCallError> {
        let Self {
            sandbox,
            bindings,
            overruled,
        } = self;
        *overruled = None;
        let result = sandbox.enter(call, |store| f(bindings, store));
        let wire = sandbox.store.data().wire.clone();
        let sent = wire.bytes_sent > 0;
        match result {
            // Not one byte came back: an approval, a decline, an acknowledged reversal or a
            // settlement cannot be the acquirer's.
            Ok(Ok(_)) if sent && wire.bytes_received == 0 => {
                let why = wire.no_answer().unwrap_or_else(|| "no reply".into());
                *overruled = Some("an answer".into());
                Err(AcquirerError::OutcomeUnknown(format!(
                    "{call}: request sent, then {why}; the dialect's answer is not taken"
                ))
                .into())
            }
            Ok(Ok(r)) => Ok(r),
            // Nothing went out: the dialect's own account stands (once checked).
            Ok(Err(e)) if !sent => {
                let e = payment_v1::acquirer_error(e).map_err(|r| sandbox.bad_result(call, r))?;
                Err(e.into())
            }
            // Once bytes went out only a complete, verified refusal says nothing was done; any
            // other failure, or an error the host cannot read, may hide a debit.
            Ok(Err(e)) => Err(match (payment_v1::acquirer_error(e), &wire.error_after_send) {
                (Ok(AcquirerError::Refused(r)), None) if wire.bytes_received > 0 => {
                    AcquirerError::Refused(r)
                }
                // Not one byte came back: the refusal cannot be the acquirer's.
                (Ok(AcquirerError::Refused(r)), None) => {
                    *overruled = Some(format!("a refusal (\"{r}\")"));
                    AcquirerError::OutcomeUnknown(format!(
                        "{call}: request sent, then no reply; the dialect's refusal is not taken"
                    ))
                }
                (Ok(AcquirerError::OutcomeUnknown(why)), None) => {
                    AcquirerError::OutcomeUnknown(why)
                }
                (said, Some(net)) => {
                    if let Ok(AcquirerError::Refused(r)) = said {
                        *overruled = Some(format!("a refusal (\"{r}\")"));
                    }
                    AcquirerError::OutcomeUnknown(format!("{call}: request sent, then {net}"))
                }
                (Ok(e), None) => {
                    AcquirerError::OutcomeUnknown(format!("{call}: request sent, then {e}"))
                }
                (Err(reason), None) => AcquirerError::OutcomeUnknown(format!(
                    "{call}: request sent, then the dialect returned an unreadable error: {reason}"
                )),
            }
            .into()),
            Err(plugin) if sent => Err(AcquirerError::OutcomeUnknown(format!(
                "{call}: request sent, then the dialect failed: {plugin}"
            ))
            .into()),
            Err(plugin) => Err(plugin.into()),
        }
    }

    fn convert<T, U>(
        &mut self,
        call: &'static str,
        r: Result<T, String>,
        f: impl FnOnce(T) -> U,
    ) -> Result<U, AcquirerCallError> {
        r.map(f)
            .map_err(|reason| self.sandbox.bad_result(call, reason).into())
    }

    pub fn about(&mut self) -> Result<crate::backend::DialectInfo, PluginError> {
        let Self {
            sandbox, bindings, ..
        } = self;
        let info = sandbox.enter("about", |s| {
            bindings.selfvend_payment_dialect().call_about(s)
        })?;
        payment_v1::dialect_info(info).map_err(|r| sandbox.bad_result("about", r))
    }

    pub fn sign_on(
        &mut self,
        terminal: &Terminal,
        stan: u32,
        batch: u32,
    ) -> Result<WorkingKeys, AcquirerCallError> {
        let request = payment_v1::sign_on(terminal, stan, batch);
        let r = self.call("sign-on", |b, s| {
            b.selfvend_payment_dialect().call_sign_on(s, &request)
        })?;
        self.convert("sign-on", payment_v1::working_keys(r), |k| k)
    }

    pub fn purchase(
        &mut self,
        request: &PurchaseRequest,
    ) -> Result<PurchaseOutcome, AcquirerCallError> {
        let guest = payment_v1::purchase(request);
        let r = self.call("purchase", |b, s| {
            b.selfvend_payment_dialect().call_purchase(s, &guest)
        })?;
        // A purchase answer the host cannot accept may still have debited the card.
        match payment_v1::purchase_outcome(r, request.amount) {
            // A decline after the answer was cut: the card may have been debited.
            Ok(PurchaseOutcome::Declined(_))
                if self.sandbox.store.data().wire.no_answer().is_some() =>
            {
                self.overruled = Some("a decline".into());
                Err(AcquirerError::OutcomeUnknown(
                    "purchase: request sent, then the answer was cut; the dialect's decline is \
                     not taken"
                        .into(),
                )
                .into())
            }
            Ok(outcome) => Ok(outcome),
            Err(reason) => Err(AcquirerError::OutcomeUnknown(format!(
                "purchase: the dialect's answer is unusable: {reason}"
            ))
            .into()),
        }
    }

    pub fn reversal(&mut self, request: &ReversalRequest) -> Result<(), AcquirerCallError> {
        let guest = payment_v1::reversal(request);
        self.call("reversal", |b, s| {
            b.selfvend_payment_dialect().call_reversal(s, &guest)
        })
    }

    pub fn settle(&mut self, request: &SettlementRequest) -> Result<Settlement, AcquirerCallError> {
        let guest = payment_v1::settlement_request(request);
        let r = self.call("settle", |b, s| {
            b.selfvend_payment_dialect().call_settle(s, &guest)
        })?;
        Ok(payment_v1::settlement(r))
    }
}

impl From<AcquirerCallError> for host::AcquirerError {
    /// The plugin's own failure, seen as the acquirer call's. A plugin failure after bytes went
    /// out is already an unknown outcome (`call`); one left here happened before anything was
    /// sent, or in a call that moves no money (about, sign-on's keys).
    fn from(e: AcquirerCallError) -> Self {
        match e {
            AcquirerCallError::Acquirer(e) => e,
            AcquirerCallError::Plugin(p) => host::AcquirerError::Unreachable(p.to_string()),
        }
    }
}
