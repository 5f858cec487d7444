//! The kiosk's own can-buy check, for a backend whose dialect offers none (it answers
//! `not-supported`): the requirement says the kiosk then decides by a policy of its own, the
//! backend's `[backend.can_buy]` rules.

use super::{CashSession, SaleEngine, SaleError};
use crate::backend::{AccountStatus, BuyCheck, Refusal, RefusalCode};
use crate::journal::CardSpan;
use crate::money::Fen;
use crate::sale::receipt::yuan;

impl SaleEngine {
    /// Whether the customer of session `s` may buy `amount`: the account is active, the card
    /// holds no credit its meter has not taken, the arrears are within the policy's, and the
    /// card stays within its daily and monthly limits at this kiosk (counted from the journal,
    /// this purchase included). The largest purchase still allowed narrows the limits.
    pub(super) fn kiosk_can_buy(
        &self,
        s: &CashSession,
        amount: Fen,
    ) -> Result<BuyCheck, SaleError> {
        let policy = s.backend.can_buy;
        let refuse = |code, message: String| {
            Ok(BuyCheck {
                refusal: Some(Refusal { code, message }),
                min: Fen(0),
                max: Fen(0),
            })
        };
        match s.account.status {
            AccountStatus::Active => {}
            AccountStatus::Closed => {
                return refuse(RefusalCode::AccountClosed, "该户已销户，不能购电".into());
            }
            AccountStatus::Suspended => {
                return refuse(
                    RefusalCode::AccountClosed,
                    "该户已暂停供电，不能购电：请到营业厅办理".into(),
                );
            }
        }
        if s.data.pending.is_some() {
            return refuse(
                RefusalCode::CreditNotTaken,
                "卡内尚有未输入电表的电量，请先插入电表".into(),
            );
        }
        if s.account.arrears > policy.max_arrears {
            return refuse(
                RefusalCode::Arrears,
                format!("欠费 {} 元，请先缴清欠费再购电", yuan(s.account.arrears)),
            );
        }
        let card = &s.data.card_serial;
        let mut room: Option<Fen> = None;
        for (span, limit, when) in [
            (CardSpan::Day, policy.card_daily_max, "今日"),
            (CardSpan::Month, policy.card_monthly_max, "本月"),
        ] {
            let Some(limit) = limit else { continue };
            let bought = Fen(self.journal.card_bought(card, span)?);
            if Fen(bought.0 + amount.0) > limit {
                return refuse(
                    RefusalCode::OverLimit,
                    format!(
                        "本卡{when}已在本机购电 {} 元，限购 {} 元",
                        yuan(bought),
                        yuan(limit)
                    ),
                );
            }
            let left = Fen(limit.0 - bought.0);
            room = Some(room.map_or(left, |r| r.min(left)));
        }
        Ok(BuyCheck {
            refusal: None,
            min: Fen(0),
            max: room.unwrap_or(Fen(0)),
        })
    }
}
