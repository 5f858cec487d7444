//! A vendor's transcript of a backend dialect (`--transcript FILE`, TOML): each call the kit
//! makes, with its arguments, and the bytes of each connection it opens as they were recorded
//! from the utility's backend (`docs/vendors/README.md`, "Transcripts").
//!
//! ```toml
//! [[call]]
//! call = "account-query"
//! card = { card_serial = "3701000000000001", utility_code = "3701", customer_number = "C1",
//!          meter_number = "M1", purchase_count = 0, pending = 0, pending_energy = 0 }
//! [[call.exchange]]
//! sent = "…"          # or sent_hex; left out, the request is not compared
//! reply = "…"         # or reply_hex
//! ```

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::backend::{BillPaymentRequest, PaymentKind};
use crate::backend::{CardRef, PeriodReport, Purchase, SaleRequest, WriteConfirmation};
use crate::money::Fen;
use crate::payment::ReversalReason;

/// The calls of one contract, as a transcript names them.
pub trait Call: Clone + std::fmt::Debug + Serialize + DeserializeOwned {
    fn name(&self) -> &'static str;
    /// Whether the peer may have changed something once the request reached it.
    fn changes_state(&self) -> bool;
    /// Every call of the contract with plain arguments, for the calls a transcript leaves out.
    fn every_call() -> Vec<Self>;
    /// Card data the call carries that must never be logged, each with what it is.
    fn secrets(&self) -> Vec<(&'static str, String)> {
        Vec::new()
    }
}

/// One call of the backend contract, with its arguments.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "call", rename_all = "kebab-case")]
pub enum BackendCall {
    Ping,
    AccountQuery {
        card: CardRef,
    },
    CanBuy {
        card: CardRef,
        purchase: Purchase,
    },
    Sale {
        sale: SaleRequest,
    },
    SaleStatus {
        terminal_id: String,
        kiosk_serial: u64,
    },
    ConfirmWrite {
        confirmation: WriteConfirmation,
    },
    CardPassword {
        card: CardRef,
    },
    Reconcile {
        report: PeriodReport,
    },
    Quote {
        card: CardRef,
        purchase: Purchase,
    },
    BillQuery {
        customer_number: String,
    },
    BillPay {
        payment: BillPaymentRequest,
    },
    BillPaymentStatus {
        terminal_id: String,
        kiosk_serial: u64,
    },
}

impl Call for BackendCall {
    fn name(&self) -> &'static str {
        match self {
            BackendCall::Ping => "ping",
            BackendCall::AccountQuery { .. } => "account-query",
            BackendCall::CanBuy { .. } => "can-buy",
            BackendCall::Sale { .. } => "sale",
            BackendCall::SaleStatus { .. } => "sale-status",
            BackendCall::ConfirmWrite { .. } => "confirm-write",
            BackendCall::CardPassword { .. } => "card-password",
            BackendCall::Reconcile { .. } => "reconcile",
            BackendCall::Quote { .. } => "quote",
            BackendCall::BillQuery { .. } => "bill-query",
            BackendCall::BillPay { .. } => "bill-pay",
            BackendCall::BillPaymentStatus { .. } => "bill-payment-status",
        }
    }

    fn changes_state(&self) -> bool {
        matches!(
            self,
            BackendCall::Sale { .. }
                | BackendCall::ConfirmWrite { .. }
                | BackendCall::Reconcile { .. }
                | BackendCall::BillPay { .. }
        )
    }

    fn every_call() -> Vec<BackendCall> {
        let card = CardRef {
            card_serial: "3701000000000001".into(),
            utility_code: "3701".into(),
            customer_number: "C0000001".into(),
            meter_number: "M0000001".into(),
            ..CardRef::default()
        };
        let terminal_id = "KIT-0001".to_string();
        vec![
            BackendCall::Ping,
            BackendCall::AccountQuery { card: card.clone() },
            BackendCall::CanBuy {
                card: card.clone(),
                purchase: Purchase::Money(Fen(5000)),
            },
            BackendCall::Sale {
                sale: SaleRequest {
                    terminal_id: terminal_id.clone(),
                    kiosk_serial: 1,
                    card: card.clone(),
                    purchase: Purchase::Money(Fen(5000)),
                    payment: PaymentKind::Cash,
                    paid: Fen(5000),
                },
            },
            BackendCall::SaleStatus {
                terminal_id: terminal_id.clone(),
                kiosk_serial: 1,
            },
            BackendCall::ConfirmWrite {
                confirmation: WriteConfirmation {
                    terminal_id: terminal_id.clone(),
                    kiosk_serial: 1,
                    card_serial: card.card_serial.clone(),
                    written: true,
                    return_data: None,
                },
            },
            BackendCall::CardPassword { card: card.clone() },
            BackendCall::Reconcile {
                report: PeriodReport {
                    terminal_id: terminal_id.clone(),
                    period_id: 1,
                    opened_at: "2026-01-01T08:00:00+08:00".into(),
                    closed_at: "2026-01-01T20:00:00+08:00".into(),
                    totals: Vec::new(),
                },
            },
            BackendCall::Quote {
                card: card.clone(),
                purchase: Purchase::Money(Fen(5000)),
            },
            BackendCall::BillQuery {
                customer_number: "3701200005".into(),
            },
            BackendCall::BillPay {
                payment: BillPaymentRequest {
                    terminal_id: terminal_id.clone(),
                    kiosk_serial: 2,
                    customer_number: "3701200005".into(),
                    amount: Fen(1000),
                    payment: PaymentKind::Cash,
                },
            },
            BackendCall::BillPaymentStatus {
                terminal_id,
                kiosk_serial: 2,
            },
        ]
    }
}

/// One connection of a call: what the dialect sent and what the backend answered.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Exchange {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sent: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sent_hex: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_hex: Option<String>,
}

impl Exchange {
    /// Bytes as text when they are UTF-8 (a transcript a person can read), else hex.
    pub fn recorded(sent: &[u8], reply: &[u8]) -> Exchange {
        let (sent, sent_hex) = text_or_hex(sent);
        let (reply, reply_hex) = text_or_hex(reply);
        Exchange {
            sent,
            sent_hex,
            reply,
            reply_hex,
        }
    }

    pub fn sent_bytes(&self) -> Result<Option<Vec<u8>>, String> {
        bytes(&self.sent, &self.sent_hex, "sent")
    }

    pub fn reply_bytes(&self) -> Result<Vec<u8>, String> {
        Ok(bytes(&self.reply, &self.reply_hex, "reply")?.unwrap_or_default())
    }
}

fn text_or_hex(bytes: &[u8]) -> (Option<String>, Option<String>) {
    match std::str::from_utf8(bytes) {
        Ok(text) if !text.contains('\0') => (Some(text.to_string()), None),
        _ => (None, Some(hex::encode_upper(bytes))),
    }
}

fn bytes(
    text: &Option<String>,
    hex_text: &Option<String>,
    key: &str,
) -> Result<Option<Vec<u8>>, String> {
    match (text, hex_text) {
        (Some(_), Some(_)) => Err(format!("both `{key}` and `{key}_hex`: give one")),
        (Some(t), None) => Ok(Some(t.as_bytes().to_vec())),
        (None, Some(h)) => {
            let digits: String = h.chars().filter(|c| !c.is_whitespace()).collect();
            hex::decode(&digits)
                .map(Some)
                .map_err(|e| format!("`{key}_hex`: not hex: {e}"))
        }
        (None, None) => Ok(None),
    }
}

/// One call of a transcript.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(bound = "C: Call")]
pub struct Entry<C> {
    #[serde(flatten)]
    pub call: C,
    #[serde(default, rename = "exchange")]
    pub exchanges: Vec<Exchange>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(bound = "C: Call", deny_unknown_fields)]
pub struct Transcript<C> {
    #[serde(default, rename = "call")]
    pub calls: Vec<Entry<C>>,
}

impl<C: Call> Transcript<C> {
    /// Parses a transcript; the error names the call (by its place in the file) and the key.
    pub fn parse(text: &str) -> Result<Transcript<C>, String> {
        let raw: toml::Value = toml::from_str(text).map_err(|e| e.message().to_string())?;
        let calls = raw
            .get("call")
            .and_then(|c| c.as_array())
            .cloned()
            .unwrap_or_default();
        if let Some(other) = raw.as_table().and_then(|t| t.keys().find(|k| *k != "call")) {
            return Err(format!(
                "unknown key `{other}`: a transcript holds [[call]] tables"
            ));
        }
        let mut out = Vec::new();
        for (i, value) in calls.into_iter().enumerate() {
            let name = value
                .get("call")
                .and_then(|c| c.as_str())
                .unwrap_or("?")
                .to_string();
            let entry: Entry<C> = value.try_into().map_err(|e: toml::de::Error| {
                format!("call {} ({name}): {}", i + 1, e.message())
            })?;
            for (j, x) in entry.exchanges.iter().enumerate() {
                x.sent_bytes()
                    .and(x.reply_bytes())
                    .map_err(|e| format!("call {} ({name}), exchange {}: {e}", i + 1, j + 1))?;
            }
            out.push(entry);
        }
        if out.is_empty() {
            return Err("no [[call]]: a transcript lists at least one call".into());
        }
        Ok(Transcript { calls: out })
    }

    pub fn to_toml(&self) -> Result<String, String> {
        toml::to_string(self).map_err(|e| format!("writing the transcript as TOML: {e}"))
    }
}

/// Who the kiosk is to the acquirer, in a transcript.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TerminalArgs {
    pub terminal_id: String,
    pub merchant_id: String,
}

impl TerminalArgs {
    pub fn terminal(&self) -> crate::payment::Terminal {
        crate::payment::Terminal {
            terminal_id: self.terminal_id.clone(),
            merchant_id: self.merchant_id.clone(),
        }
    }
}

/// A bank card as the kiosk read it, in a transcript (test cards only).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BankCardArgs {
    pub pan: String,
    /// YYMM.
    pub expiry: String,
    pub service_code: String,
    /// Track 2 equivalent data, hex.
    pub track2_hex: String,
    /// The application selected, hex.
    pub aid_hex: String,
}

impl BankCardArgs {
    pub fn card(&self) -> Result<crate::bank_card::BankCard, String> {
        Ok(crate::bank_card::BankCard {
            aid: hex::decode(&self.aid_hex).map_err(|e| format!("aid_hex: {e}"))?,
            pan: self.pan.clone(),
            expiry: self.expiry.clone(),
            service_code: self.service_code.clone(),
            track2: hex::decode(&self.track2_hex).map_err(|e| format!("track2_hex: {e}"))?,
        })
    }
}

/// One call of the acquirer contract, with its arguments.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "call", rename_all = "kebab-case")]
pub enum AcquirerCall {
    SignOn {
        terminal: TerminalArgs,
        stan: u32,
        batch: u32,
    },
    Purchase {
        terminal: TerminalArgs,
        stan: u32,
        batch: u32,
        amount: Fen,
        card: BankCardArgs,
        /// The PIN pad's encrypted PIN block, hex (8 bytes).
        #[serde(default)]
        pin_block_hex: Option<String>,
    },
    Reversal {
        terminal: TerminalArgs,
        stan: u32,
        batch: u32,
        amount: Fen,
        card: BankCardArgs,
        reason: ReversalReason,
    },
    Settle {
        terminal: TerminalArgs,
        stan: u32,
        batch: u32,
        count: u32,
        amount: Fen,
    },
}

impl Call for AcquirerCall {
    fn name(&self) -> &'static str {
        match self {
            AcquirerCall::SignOn { .. } => "sign-on",
            AcquirerCall::Purchase { .. } => "purchase",
            AcquirerCall::Reversal { .. } => "reversal",
            AcquirerCall::Settle { .. } => "settle",
        }
    }

    fn changes_state(&self) -> bool {
        !matches!(self, AcquirerCall::SignOn { .. })
    }

    fn every_call() -> Vec<AcquirerCall> {
        let terminal = || TerminalArgs {
            terminal_id: "KIT00001".into(),
            merchant_id: "KIT000000000001".into(),
        };
        let card = || BankCardArgs {
            pan: "6222020000000000008".into(),
            expiry: "3012".into(),
            service_code: "220".into(),
            track2_hex: "6222020000000000008D30122200000000000F".into(),
            aid_hex: "A000000333010101".into(),
        };
        vec![
            AcquirerCall::SignOn {
                terminal: terminal(),
                stan: 1,
                batch: 1,
            },
            AcquirerCall::Purchase {
                terminal: terminal(),
                stan: 2,
                batch: 1,
                amount: Fen(5000),
                card: card(),
                pin_block_hex: Some("0123456789ABCDEF".into()),
            },
            AcquirerCall::Reversal {
                terminal: terminal(),
                stan: 3,
                batch: 1,
                amount: Fen(5000),
                card: card(),
                reason: ReversalReason::NoAnswer,
            },
            AcquirerCall::Settle {
                terminal: terminal(),
                stan: 4,
                batch: 1,
                count: 1,
                amount: Fen(5000),
            },
        ]
    }

    fn secrets(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if let AcquirerCall::Purchase { card, .. } | AcquirerCall::Reversal { card, .. } = self {
            out.push(("the PAN", card.pan.clone()));
            // Track 2 as hex either case, and as its digits with the separator ('=' or 'D').
            out.push(("Track 2", card.track2_hex.to_uppercase()));
            out.push(("Track 2", card.track2_hex.to_lowercase()));
            let digits = card
                .track2_hex
                .to_uppercase()
                .trim_end_matches('F')
                .to_string();
            out.push(("Track 2", digits.replace('D', "=")));
        }
        if let AcquirerCall::Purchase {
            pin_block_hex: Some(block),
            ..
        } = self
        {
            out.push(("the PIN block", block.to_uppercase()));
            out.push(("the PIN block", block.to_lowercase()));
        }
        out
    }
}
