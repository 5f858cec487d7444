//! `[backend.can_buy]`: the kiosk's own can-buy rules for a backend whose dialect offers no
//! can-buy call (it answers `not-supported`). Every key is optional; without the table the kiosk
//! refuses an account that is not active, a card with credit its meter has not taken, and any
//! arrears, and sets no per-card limits. Each value is bounded, and a bad one is refused with
//! its line.

use serde::Deserialize;
use toml::Spanned;

use super::Bounded;
use crate::money::Fen;

/// The kiosk's can-buy rules for one backend, checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CanBuyPolicy {
    /// Arrears above this refuse the purchase (0: any arrears do).
    pub max_arrears: Fen,
    /// What one card may buy at this kiosk in a day and in a calendar month (local time),
    /// this purchase included, counted from the journal.
    pub card_daily_max: Option<Fen>,
    pub card_monthly_max: Option<Fen>,
}

impl Default for CanBuyPolicy {
    fn default() -> Self {
        CanBuyPolicy {
            max_arrears: Fen(0),
            card_daily_max: None,
            card_monthly_max: None,
        }
    }
}

/// `[backend.can_buy]` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CanBuyFile {
    max_arrears_fen: Option<Bounded<0, 100_000_000>>,
    card_daily_max_fen: Option<Spanned<Bounded<100, 100_000_000>>>,
    card_monthly_max_fen: Option<Bounded<100, 1_000_000_000>>,
}

impl CanBuyFile {
    /// The rules, or the span of the bad value and why.
    pub(super) fn check(self) -> Result<CanBuyPolicy, (std::ops::Range<usize>, String)> {
        let daily = self.card_daily_max_fen.as_ref().map(|d| Fen(d.get_ref().0));
        let monthly = self.card_monthly_max_fen.map(|m| Fen(m.0));
        if let (Some(d), Some(m), Some(span)) = (daily, monthly, &self.card_daily_max_fen)
            && d > m
        {
            return Err((
                span.span(),
                format!(
                    "can_buy: card_daily_max_fen {} is above card_monthly_max_fen {}",
                    d.0, m.0
                ),
            ));
        }
        Ok(CanBuyPolicy {
            max_arrears: self
                .max_arrears_fen
                .map_or(CanBuyPolicy::default().max_arrears, |b| Fen(b.0)),
            card_daily_max: daily,
            card_monthly_max: monthly,
        })
    }
}
