//! Money and energy as integers: fen (1/100 yuan) and watt-hours, never floats; and the
//! banknotes the kiosk takes.

use std::fmt;

/// An amount of money in fen (分), 1/100 of a yuan.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Default,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(transparent)]
pub struct Fen(pub u64);

/// An amount of energy in watt-hours.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Default,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(transparent)]
pub struct Wh(pub u64);

impl Fen {
    /// Adds, or `None` on overflow.
    pub fn checked_add(self, other: Fen) -> Option<Fen> {
        self.0.checked_add(other.0).map(Fen)
    }
}

impl fmt::Display for Fen {
    /// `12345` fen shows as `123.45`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:02}", self.0 / 100, self.0 % 100)
    }
}

impl fmt::Display for Wh {
    /// `12345` Wh shows as `12.345 kWh`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:03} kWh", self.0 / 1000, self.0 % 1000)
    }
}

/// A banknote the kiosk accepts: the renminbi notes of 1, 5, 10, 20, 50 and 100 yuan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Denomination {
    Cny1,
    Cny5,
    Cny10,
    Cny20,
    Cny50,
    Cny100,
}

impl Denomination {
    /// Every denomination, smallest first.
    pub const ALL: [Denomination; 6] = [
        Denomination::Cny1,
        Denomination::Cny5,
        Denomination::Cny10,
        Denomination::Cny20,
        Denomination::Cny50,
        Denomination::Cny100,
    ];

    /// What the banknote is worth.
    pub fn value(self) -> Fen {
        Fen(self.yuan() * 100)
    }

    /// The denomination of a note worth `yuan` yuan, if the kiosk takes such notes.
    pub fn from_yuan(yuan: u64) -> Option<Denomination> {
        Denomination::ALL.into_iter().find(|d| d.yuan() == yuan)
    }

    fn yuan(self) -> u64 {
        match self {
            Denomination::Cny1 => 1,
            Denomination::Cny5 => 5,
            Denomination::Cny10 => 10,
            Denomination::Cny20 => 20,
            Denomination::Cny50 => 50,
            Denomination::Cny100 => 100,
        }
    }
}

impl fmt::Display for Denomination {
    /// `CNY 10`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CNY {}", self.yuan())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_and_energy_display_without_floats() {
        assert_eq!(Fen(12345).to_string(), "123.45");
        assert_eq!(Fen(5).to_string(), "0.05");
        assert_eq!(Wh(1500).to_string(), "1.500 kWh");
        assert_eq!(Fen(u64::MAX).checked_add(Fen(1)), None);
    }
}
