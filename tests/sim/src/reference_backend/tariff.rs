//! Stepped tariffs (阶梯电价): the price of the next kWh depends on the energy the account has
//! bought this year. A purchase that crosses a step is priced part at each step.

/// What is left of one step for this account this year.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    /// Energy left at this price; `None`: no bound.
    pub room_wh: Option<u64>,
    pub price_fen_per_kwh: u32,
}

/// The part of a purchase sold at one step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepPart {
    pub energy_wh: u64,
    pub price_fen_per_kwh: u32,
    pub amount_fen: u64,
}

/// Energy and its price, step by step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Priced {
    pub electricity_fen: u64,
    pub energy_wh: u64,
    pub parts: Vec<StepPart>,
}

/// A quote as the backend answers it: what the customer pays and how it splits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuoteAnswer {
    pub amount_fen: u64,
    pub arrears_fen: u64,
    pub electricity: Priced,
}

/// The steps still open to an account that has bought `used_wh` this year, from the tariff's
/// `(up_to_kwh, price)` bounds in order (the last unbounded).
pub fn steps_from(bounds: &[(Option<i64>, u32)], used_wh: u64) -> Vec<Step> {
    bounds
        .iter()
        .filter_map(|&(up_to_kwh, price)| match up_to_kwh {
            None => Some(Step {
                room_wh: None,
                price_fen_per_kwh: price,
            }),
            Some(kwh) => {
                let room = (kwh.max(0) as u64)
                    .saturating_mul(1000)
                    .checked_sub(used_wh)?;
                (room > 0).then_some(Step {
                    room_wh: Some(room),
                    price_fen_per_kwh: price,
                })
            }
        })
        .collect()
}

/// The energy `fen` buys: each step's energy is charged rounded up to the fen, and what is
/// left of the money buys at the next step.
pub fn energy_for(steps: &[Step], fen: u64) -> Priced {
    let mut left = fen;
    let mut parts = Vec::new();
    for step in steps {
        if left == 0 {
            break;
        }
        let price = u64::from(step.price_fen_per_kwh.max(1));
        let whole_step = step
            .room_wh
            .map(|room| room.saturating_mul(price).div_ceil(1000));
        let (energy_wh, amount_fen) = match (step.room_wh, whole_step) {
            (Some(room), Some(cost)) if cost < left => (room, cost),
            _ => (left.saturating_mul(1000) / price, left),
        };
        parts.push(StepPart {
            energy_wh,
            price_fen_per_kwh: step.price_fen_per_kwh,
            amount_fen,
        });
        left -= amount_fen;
    }
    total(parts)
}

/// The money `wh` costs: each step's part rounded up to the fen.
pub fn money_for(steps: &[Step], wh: u64) -> Priced {
    let mut left = wh;
    let mut parts = Vec::new();
    for step in steps {
        if left == 0 {
            break;
        }
        let energy_wh = step.room_wh.map_or(left, |room| room.min(left));
        parts.push(StepPart {
            energy_wh,
            price_fen_per_kwh: step.price_fen_per_kwh,
            amount_fen: energy_wh
                .saturating_mul(u64::from(step.price_fen_per_kwh))
                .div_ceil(1000),
        });
        left -= energy_wh;
    }
    total(parts)
}

fn total(parts: Vec<StepPart>) -> Priced {
    Priced {
        electricity_fen: parts.iter().map(|p| p.amount_fen).sum(),
        energy_wh: parts.iter().map(|p| p.energy_wh).sum(),
        parts,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RESIDENTIAL: [(Option<i64>, u32); 3] = [(Some(2520), 56), (Some(4800), 61), (None, 86)];

    #[test]
    fn money_crossing_a_step_is_priced_part_at_each() {
        // 10 kWh left at 0.56, then 0.61: 100 yuan = 5.60 + 94.40 at 0.61 (154.754 kWh).
        let steps = steps_from(&RESIDENTIAL, 2_510_000);
        let p = energy_for(&steps, 10_000);
        assert_eq!(
            p.parts[0],
            StepPart {
                energy_wh: 10_000,
                price_fen_per_kwh: 56,
                amount_fen: 560
            }
        );
        assert_eq!(
            p.parts[1],
            StepPart {
                energy_wh: 154_754,
                price_fen_per_kwh: 61,
                amount_fen: 9_440
            }
        );
        assert_eq!((p.electricity_fen, p.energy_wh), (10_000, 164_754));
    }

    #[test]
    fn energy_crossing_a_step_is_charged_at_each() {
        let steps = steps_from(&RESIDENTIAL, 2_510_000);
        let p = money_for(&steps, 20_000);
        assert_eq!(p.electricity_fen, 560 + 610);
        assert_eq!(p.energy_wh, 20_000);
    }

    #[test]
    fn a_used_up_step_is_gone() {
        let steps = steps_from(&RESIDENTIAL, 5_000_000);
        assert_eq!(
            steps,
            vec![Step {
                room_wh: None,
                price_fen_per_kwh: 86
            }]
        );
    }
}
