//! Writing a sale onto the customer's card: the write, the read-back verify, the confirmation
//! to the backend, and a grant sold earlier but never written, written when its card comes back.
//! A write that fails is journaled and written again when the card returns; one the card
//! refuses as often as the policy allows is left to an operator.

use std::sync::{Arc, Mutex};

use serde_json::json;

use super::{CashSession, SaleEngine, SaleError, card_ref};
use crate::authority::BackendAuthority;
use crate::backend::{BackendGrant, WriteConfirmation};
use crate::card::{CardError, CreditGrant, VerifyOutcome};
use crate::config::BackendEntry;
use crate::journal::NewItem;
use crate::plugin::CodecError;

impl SaleEngine {
    /// Writes a grant sold earlier but never written onto this card, before anything else;
    /// one the card has refused as often as the policy allows is left to an operator.
    pub(super) fn rewrite_outstanding(
        &mut self,
        s: &mut CashSession,
    ) -> Result<Option<u64>, SaleError> {
        let max = self.policy.rewrite_max_attempts;
        let outstanding = self
            .journal
            .sales(&["granted"], Some(&s.data.card_serial))?;
        let Some(sale) = outstanding
            .into_iter()
            .find(|sale| sale.rewrite_attempts < max)
        else {
            return Ok(None);
        };
        let grant: BackendGrant = sale
            .grant_json
            .as_deref()
            .ok_or_else(|| {
                SaleError::Corrupt(format!("sale {} is granted with no grant", sale.serial))
            })
            .and_then(|g| {
                serde_json::from_str(g).map_err(|e| {
                    SaleError::Corrupt(format!("the grant of sale {}: {e}", sale.serial))
                })
            })?;
        self.journal.append(
            "rewrite-started",
            json!({"serial": sale.serial, "card": s.data.card_serial}),
        )?;
        if self.write_card(s, sale.serial, &grant)? {
            s.data = self
                .wait(|| s.codec.read(&s.card))
                .map_err(|cause| SaleError::Card {
                    codec: s.codec_name.clone(),
                    cause,
                })?;
            return Ok(Some(sale.serial));
        }
        Ok(None)
    }

    /// Writes the grant, reads it back and confirms it to the backend.
    pub(super) fn write_card(
        &mut self,
        s: &mut CashSession,
        serial: u64,
        grant: &BackendGrant,
    ) -> Result<bool, SaleError> {
        let credit = CreditGrant {
            card_serial: s.data.card_serial.clone(),
            purchase_count: grant.purchase_count,
            amount: grant.amount,
            energy: grant.energy,
            token: grant.token.clone(),
        };
        self.journal
            .append("card-write-intent", json!({"serial": serial}))?;
        fail::fail_point!("sale.after-card-write-intent");
        let authority = Arc::new(Mutex::new(BackendAuthority::new(
            self.backend_session(&s.backend, s.dialect)?,
            card_ref(&s.data),
        )));
        let authority: crate::plugin::SharedAuthority = authority;
        let written = self.wait(|| {
            s.codec
                .write_credit(&s.card, &credit, &authority)
                .and_then(|()| s.codec.verify(&s.card, &credit))
        });
        fail::fail_point!("sale.after-card-written");
        // What the card holds: known once verified, or when it refused the grant outright.
        let written = match written {
            Ok(VerifyOutcome::Written) => Some(true),
            Ok(VerifyOutcome::NotWritten) => Some(false),
            Err(e) => {
                self.write_failed(s, serial, &e)?;
                matches!(e, CodecError::Card(CardError::GrantRejected(_))).then_some(false)
            }
        };
        // Unknown (the card left mid-write, say): the backend is told nothing until the card
        // is read again, never "not written" while the card may hold the credit.
        let Some(written) = written else {
            return Ok(false);
        };
        if written {
            self.journal.commit(|b| {
                let id = b.append("card-written", &json!({"serial": serial}))?;
                b.sale_state(serial, &["granted"], "written", None, id)?;
                b.count("lifetime.credited_fen", grant.amount.0 as i64)
            })?;
        }
        let confirmation = WriteConfirmation {
            terminal_id: self.terminal_id.clone(),
            kiosk_serial: serial,
            card_serial: s.data.card_serial.clone(),
            written,
            return_data: s.data.return_data.as_ref().map(|r| r.raw.clone()),
        };
        let (backend, dialect) = (s.backend.clone(), s.dialect);
        self.confirm(&backend, dialect, &confirmation)?;
        Ok(written)
    }

    /// Journals a write that failed. A card that refuses the grant itself is counted: at the
    /// policy's limit an operator is told (the card needs the utility's counter) and the kiosk
    /// stops re-writing it.
    pub(super) fn write_failed(
        &mut self,
        s: &CashSession,
        serial: u64,
        e: &CodecError,
    ) -> Result<(), SaleError> {
        let refused = matches!(e, CodecError::Card(CardError::GrantRejected(_)));
        let (max, why, card) = (
            self.policy.rewrite_max_attempts,
            e.to_string(),
            s.data.card_serial.clone(),
        );
        self.journal.commit(|b| {
            b.append(
                "card-write-failed",
                &json!({"serial": serial, "codec": s.codec_name, "why": why}),
            )?;
            if !refused {
                return Ok(());
            }
            let tries = b.count_rewrite_attempt(serial)?;
            if tries == max {
                let id = b.append(
                    "rewrite-exhausted",
                    &json!({"serial": serial, "attempts": tries}),
                )?;
                b.open_manual_item(
                    &NewItem::sale(
                        serial,
                        Some(&card),
                        &format!(
                            "电卡 {tries} 次拒绝写入交易 {serial:08} 的购电（{why}）：已售电，\
                             请到营业厅补写卡"
                        ),
                    ),
                    id,
                )?;
            }
            Ok(())
        })?;
        Ok(())
    }

    /// Sends a write confirmation; one the backend did not acknowledge is sent again by
    /// [`SaleEngine::recover`]. The customer's credit does not depend on it. Returns whether
    /// the backend acknowledged it (for the sale's state now).
    pub(super) fn confirm(
        &mut self,
        backend: &BackendEntry,
        dialect: usize,
        confirmation: &WriteConfirmation,
    ) -> Result<bool, SaleError> {
        let serial = confirmation.kiosk_serial;
        self.journal.append(
            "write-confirm-intent",
            json!({"serial": serial, "written": confirmation.written}),
        )?;
        fail::fail_point!("sale.after-confirm-intent");
        let sent = self
            .backend_session(backend, dialect)
            .map_err(|e| e.to_string())
            .and_then(|mut b| {
                self.wait(|| b.confirm_write(confirmation))
                    .map_err(|e| e.to_string())
            });
        match sent {
            Ok(()) => {
                // Acknowledged for the fact it told: written, or granted and not written.
                let told = if confirmation.written {
                    "written"
                } else {
                    "granted"
                };
                Ok(self.journal.commit(|b| {
                    b.append(
                        "write-confirmed",
                        &json!({"serial": serial, "written": confirmation.written}),
                    )?;
                    b.sale_confirmed(serial, told)
                })?)
            }
            Err(why) => {
                self.journal.note(
                    "write-confirm-failed",
                    json!({"serial": serial, "why": why}),
                );
                Ok(false)
            }
        }
    }
}
