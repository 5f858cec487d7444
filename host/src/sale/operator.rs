//! Operator items: what the kiosk could not finish on its own, and how an operator settles each
//! one (refund, re-sell, dismiss, or ending a reversal the acquirer never acknowledged). Every
//! settlement is one commit, compare-and-set on the item and on the sale, payment or debit it
//! is about, so the kiosk's screen, its housekeeping and an operator's CLI can never both act.

use serde_json::json;

use super::{Resolution, SaleEngine, SaleError, SaleOutcome, yuan};
use crate::backend::{BackendError, SaleRequest};
use crate::journal::{JournalError, ManualItem, NewItem};
use crate::money::Fen;
use crate::plugin::DialectError;

impl SaleEngine {
    /// The settlements item `item` takes now, for an operator's screen to offer.
    pub fn resolutions(&self, item: &ManualItem) -> Result<Vec<Resolution>, SaleError> {
        use Resolution::{Dismiss, Refund, Resell};
        if let Some(serial) = item.bill_serial {
            return self.bill_resolutions(serial);
        }
        Ok(
            match (item.caught_fen, item.payment_id, item.debit_id, item.serial) {
                // A note of unknown value is counted with the cash box, never paid out by itself.
                (Some(0), ..) => vec![Dismiss],
                (Some(_), ..) => vec![Refund, Dismiss],
                (None, Some(_), ..) => vec![Refund],
                // A reversal: the acquirer says whether the debit stands (refunded here) or not.
                (None, None, Some(debit), _) => {
                    let open = self
                        .journal
                        .debits(&["intent", "reversing"])?
                        .iter()
                        .any(|d| d.id == debit);
                    if open {
                        vec![Refund, Dismiss]
                    } else {
                        vec![Dismiss]
                    }
                }
                (None, None, None, None) => vec![Dismiss],
                (None, None, None, Some(serial)) => {
                    match self.journal.sale(serial)?.map(|s| s.state).as_deref() {
                        Some("refused" | "never-reached") => vec![Refund],
                        Some("manual") => vec![Resell, Refund],
                        Some("granted" | "written") => vec![Dismiss],
                        _ => Vec::new(),
                    }
                }
            },
        )
    }

    /// An operator settles item `id`. A refund is paid only with proof the sale never took
    /// place at the backend (it refused, or it was never reached); a re-sell sends the sale
    /// once more under its own serial.
    pub fn resolve_manual(
        &mut self,
        id: i64,
        resolution: Resolution,
        operator_note: &str,
    ) -> Result<String, SaleError> {
        let item = self
            .journal
            .manual_item(id)?
            .filter(|i| i.state == "open")
            .ok_or(SaleError::NoSuchItem(id))?;
        let settled = if let Some(bill) = item.bill_serial {
            self.resolve_bill(&item, bill, resolution, operator_note)
        } else if let Some(caught) = item.caught_fen {
            self.resolve_caught(&item, caught, resolution, operator_note)
        } else if let Some(payment) = item.payment_id {
            self.refund_payment(&item, payment, resolution, operator_note)
        } else if let Some(debit) = item.debit_id {
            self.end_reversal(&item, debit, resolution, operator_note)
        } else if let Some(serial) = item.serial {
            self.resolve_sale(&item, serial, resolution, operator_note)
        } else {
            // An item with nothing behind it (a reversal alert from before items named their
            // debit): the operator closes it once the acquirer confirmed.
            if resolution != Resolution::Dismiss {
                return Err(SaleError::ReversalItem(id));
            }
            self.close_item(&item, "manual-dismissed", "dismissed", operator_note)
        };
        settled.map_err(|e| match e {
            SaleError::Journal(JournalError::Conflict { what, .. }) => {
                SaleError::Conflict { item: id, what }
            }
            e => e,
        })
    }

    /// Closes `item` with an audit row of `kind` and nothing else moved.
    fn close_item(
        &mut self,
        item: &ManualItem,
        kind: &str,
        done: &str,
        operator_note: &str,
    ) -> Result<String, SaleError> {
        self.journal.commit(|b| {
            let audit = b.append(kind, &json!({"item": item.id, "note": operator_note}))?;
            b.resolve_manual_item(item.id, &format!("{done}: {operator_note}"), audit)
        })?;
        Ok(format!("item {}: closed", item.id))
    }

    /// Money taken with no sale ever sent: a refund is all there is to do.
    fn refund_payment(
        &mut self,
        item: &ManualItem,
        payment: i64,
        resolution: Resolution,
        operator_note: &str,
    ) -> Result<String, SaleError> {
        if resolution != Resolution::Refund {
            return Err(SaleError::NotASale {
                item: item.id,
                what: "a payment with no sale".into(),
            });
        }
        let paid = self.journal.commit(|b| {
            let paid: i64 = b.sql().query_row(
                "SELECT paid_fen FROM payments WHERE id = ?1",
                [payment],
                |r| r.get(0),
            )?;
            let audit = b.append(
                "refund-paid",
                &json!({"payment": payment, "fen": paid, "item": item.id, "note": operator_note}),
            )?;
            b.close_payment(payment, "abandoned", "refunded", None, audit)?;
            b.count("lifetime.refunded_fen", paid)?;
            b.resolve_manual_item(item.id, &format!("refunded: {operator_note}"), audit)?;
            Ok(paid as u64)
        })?;
        Ok(format!(
            "item {}: {} yuan refunded for payment {payment}",
            item.id,
            yuan(Fen(paid))
        ))
    }

    /// A reversal the acquirer never acknowledged: the operator has asked the acquirer what
    /// became of the debit, and the kiosk stops sending it. `Dismiss`: no debit stands (it is
    /// left out of settlement). `Refund`: the debit stands, so the operator pays the customer
    /// back and settlement counts it.
    fn end_reversal(
        &mut self,
        item: &ManualItem,
        debit: i64,
        resolution: Resolution,
        operator_note: &str,
    ) -> Result<String, SaleError> {
        let (kind, state, done) = match resolution {
            Resolution::Dismiss => ("reversal-ended", "reversal-ended", "no debit stands"),
            Resolution::Refund => ("reversal-kept", "kept", "the debit stands, refunded"),
            Resolution::Resell => return Err(SaleError::ReversalItem(item.id)),
        };
        let fen = self.journal.commit(|b| {
            let (now, fen): (String, i64) = b.sql().query_row(
                "SELECT state, amount_fen FROM debits WHERE id = ?1",
                [debit],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?;
            // Taken by the acquirer meanwhile: nothing stands, nothing to pay back.
            if now == "reversed" && resolution == Resolution::Refund {
                return Ok(Err(SaleError::ReversalItem(item.id)));
            }
            let audit = b.append(
                kind,
                &json!({"debit": debit, "item": item.id, "fen": fen, "was": now,
                        "note": operator_note}),
            )?;
            if now != "reversed" {
                b.debit_state(debit, &["intent", "reversing"], state, None, None, audit)?;
            }
            // The debit stands: money in (never counted, as it was never approved) and back out.
            if resolution == Resolution::Refund {
                b.count("lifetime.bank_debited_fen", fen)?;
                b.count("lifetime.refunded_fen", fen)?;
            }
            b.resolve_manual_item(item.id, &format!("{done}: {operator_note}"), audit)?;
            Ok(Ok(fen as u64))
        })??;
        Ok(match resolution {
            Resolution::Refund => format!(
                "item {}: debit {debit} stands at the acquirer; {} yuan refunded",
                item.id,
                yuan(Fen(fen))
            ),
            _ => format!(
                "item {}: reversal of debit {debit} ended; it is no longer sent",
                item.id
            ),
        })
    }

    /// An item about sale `serial`.
    fn resolve_sale(
        &mut self,
        item: &ManualItem,
        serial: u64,
        resolution: Resolution,
        operator_note: &str,
    ) -> Result<String, SaleError> {
        let sale = self
            .journal
            .sale(serial)?
            .ok_or(SaleError::NoSuchItem(item.id))?;
        match resolution {
            Resolution::Refund => {
                if !matches!(sale.state.as_str(), "refused" | "never-reached" | "manual") {
                    return Err(SaleError::RefundRefused {
                        serial,
                        state: sale.state,
                    });
                }
                let refunded = self.journal.commit(|b| {
                    let audit = b.append(
                        "refund-paid",
                        &json!({"serial": serial, "fen": sale.paid_fen,
                                "item": item.id, "note": operator_note}),
                    )?;
                    b.sale_state(
                        serial,
                        &["refused", "never-reached", "manual"],
                        "refunded",
                        None,
                        audit,
                    )?;
                    b.count("lifetime.refunded_fen", sale.paid_fen as i64)?;
                    b.resolve_manual_item(item.id, &format!("refunded: {operator_note}"), audit)
                });
                if let Err(JournalError::Conflict { .. }) = refunded {
                    // The sale moved on (a re-sell took it, or a refund was paid) meanwhile.
                    let state = self
                        .journal
                        .sale(serial)?
                        .map_or_else(String::new, |s| s.state);
                    return Err(SaleError::RefundRefused { serial, state });
                }
                refunded?;
                Ok(format!(
                    "item {}: {} yuan refunded for sale {serial}",
                    item.id,
                    yuan(Fen(sale.paid_fen))
                ))
            }
            Resolution::Resell if sale.state == "manual" => {
                self.resell_by_hand(item, serial, &sale.request_json, operator_note)
            }
            Resolution::Resell => Err(SaleError::ResellRefused {
                serial,
                state: sale.state,
            }),
            // Nothing is owed for a sale the backend made: the customer's card carries it (or
            // the utility's counter writes it, once the kiosk gave up re-writing).
            Resolution::Dismiss if matches!(sale.state.as_str(), "granted" | "written") => {
                self.close_item(item, "manual-dismissed", "dismissed", operator_note)
            }
            Resolution::Dismiss => Err(SaleError::DismissRefused(item.id)),
        }
    }

    /// Sends a sale handed to an operator once more, claimed (`manual` → `pending`) first so
    /// no refund can be paid while it is out.
    fn resell_by_hand(
        &mut self,
        item: &ManualItem,
        serial: u64,
        request_json: &str,
        operator_note: &str,
    ) -> Result<String, SaleError> {
        let request: SaleRequest = serde_json::from_str(request_json)
            .map_err(|e| SaleError::Corrupt(format!("the request of sale {serial}: {e}")))?;
        let sale = self
            .journal
            .sale(serial)?
            .ok_or(SaleError::NoSuchItem(item.id))?;
        let (backend, dialect) = self
            .route(&sale.utility)
            .ok_or_else(|| SaleError::NotServed {
                utility: sale.utility.clone(),
                card_serial: sale.card_serial.clone(),
            })?;
        self.journal.commit(|b| {
            let id = b.append(
                "manual-resell-attempt",
                &json!({"serial": serial, "item": item.id, "note": operator_note}),
            )?;
            b.sale_state(serial, &["manual"], "pending", None, id)
        })?;
        let answer = self.send(&backend, dialect, &request);
        match answer {
            Ok(grant) => {
                self.record_answer(serial, &["pending"], &Ok(grant.clone()), "人工补售电")?;
                self.journal.commit(|b| {
                    let audit = b.append(
                        "manual-resell",
                        &json!({"serial": serial, "item": item.id, "note": operator_note}),
                    )?;
                    b.resolve_manual_item(item.id, &format!("re-sold: {operator_note}"), audit)
                })?;
                Ok(format!(
                    "item {}: sale {serial} re-sold ({}); it is written when card {} is next \
                     inserted",
                    item.id, grant.backend_sale_id, sale.card_serial
                ))
            }
            Err(SaleOutcome::Refused(r)) => {
                // The refusal opens its refund item; this one is done with.
                self.record_answer(
                    serial,
                    &["pending"],
                    &Err(SaleOutcome::Refused(r.clone())),
                    "人工补售电",
                )?;
                self.journal.commit(|b| {
                    let audit = b.append(
                        "manual-resell-refused",
                        &json!({"serial": serial, "item": item.id, "reason": r.message}),
                    )?;
                    b.resolve_manual_item(
                        item.id,
                        &format!("re-sell refused, refund owed: {operator_note}"),
                        audit,
                    )
                })?;
                Err(SaleError::Refused(r))
            }
            Err(SaleOutcome::NeverReached(why)) => {
                // Back to the operator, as it was.
                self.journal.commit(|b| {
                    let id =
                        b.append("sale-never-reached", &json!({"serial": serial, "why": why}))?;
                    b.sale_state(serial, &["pending"], "manual", None, id)
                })?;
                Err(SaleError::Backend {
                    backend: backend.name.clone(),
                    cause: DialectError::Backend(BackendError::Unreachable(why)),
                })
            }
            Err(SaleOutcome::Unknown(why)) => {
                // Asked about by recovery; the item stays open until then.
                self.record_answer(
                    serial,
                    &["pending"],
                    &Err(SaleOutcome::Unknown(why.clone())),
                    "人工补售电",
                )?;
                Err(SaleError::Backend {
                    backend: backend.name.clone(),
                    cause: DialectError::Backend(BackendError::OutcomeUnknown(why)),
                })
            }
        }
    }

    /// Settles a banknote the acceptor did not credit: paid back (the operator found it in
    /// the kiosk) or dismissed (it was not there); it was never sold, so never re-sold. One of
    /// unknown value is counted with the cash box and dismissed.
    fn resolve_caught(
        &mut self,
        item: &ManualItem,
        fen: u64,
        resolution: Resolution,
        operator_note: &str,
    ) -> Result<String, SaleError> {
        let (kind, done) = match resolution {
            Resolution::Refund if fen == 0 => return Err(SaleError::UnknownNote(item.id)),
            Resolution::Refund => ("refund-paid", "refunded"),
            Resolution::Dismiss => ("manual-dismissed", "dismissed"),
            Resolution::Resell => {
                return Err(SaleError::NotASale {
                    item: item.id,
                    what: "a banknote the acceptor did not credit".into(),
                });
            }
        };
        self.journal.commit(|b| {
            let audit = b.append(
                kind,
                &json!({"item": item.id, "caught_fen": fen, "note": operator_note}),
            )?;
            if resolution == Resolution::Refund {
                b.count("lifetime.caught_refunded_fen", fen as i64)?;
            }
            b.resolve_manual_item(item.id, &format!("{done}: {operator_note}"), audit)
        })?;
        Ok(match resolution {
            Resolution::Refund => format!(
                "item {}: {} yuan refunded for a banknote the acceptor did not credit",
                item.id,
                yuan(Fen(fen))
            ),
            _ => format!("item {}: closed, nothing paid back", item.id),
        })
    }

    /// An operator raises an item about sale `serial` (a customer's complaint, say).
    pub fn raise_manual(&mut self, serial: u64, reason: &str) -> Result<i64, SaleError> {
        // Sales and bill payments share one sequence of serials.
        let bill = self
            .journal
            .bill_payment(serial)?
            .map(|p| p.customer_number);
        let card = self.journal.sale(serial)?.map(|s| s.card_serial);
        Ok(self.journal.commit(|b| {
            let id = b.append(
                "manual-raised",
                &json!({"serial": serial, "reason": reason}),
            )?;
            let item = match &bill {
                Some(account) => NewItem::bill(serial, account, reason),
                None => NewItem::sale(serial, card.as_deref(), reason),
            };
            b.open_manual_item(&item, id)
        })?)
    }
}
