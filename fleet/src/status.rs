//! A kiosk's status on the console, from its last heartbeat: online; down after three missed
//! heartbeats; out of service; stuck on one customer screen too long (worst with money in).

use std::time::Duration;

/// The status of one kiosk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Online,
    Down,
    OutOfService,
    Stuck { money_in: bool },
}

/// When a kiosk is down or stuck.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// The kiosks' heartbeat interval: three missed is down.
    pub heartbeat: Duration,
    /// One customer screen shown longer than this is stuck.
    pub stuck_after: Duration,
}

/// Screens a kiosk may show for as long as it likes.
const RESTING: &[&str] = &[
    "attract",
    "starting",
    "out-of-service",
    "operator",
    "operator-pin",
];

impl Status {
    /// From the heartbeat's age (`None`: never), its screen and how long it has shown, and the
    /// money in the session under way.
    pub fn of(
        limits: Limits,
        heartbeat_age: Option<Duration>,
        screen: &str,
        screen_secs: u64,
        money_in_fen: u64,
    ) -> Status {
        match heartbeat_age {
            Some(age) if age <= limits.heartbeat * 3 => {}
            _ => return Status::Down,
        }
        if screen == "out-of-service" {
            return Status::OutOfService;
        }
        if !RESTING.contains(&screen) && screen_secs > limits.stuck_after.as_secs() {
            return Status::Stuck {
                money_in: money_in_fen > 0,
            };
        }
        Status::Online
    }

    /// How it sorts on the fleet page: the worst first.
    pub fn severity(self) -> u8 {
        match self {
            Status::Stuck { money_in: true } => 0,
            Status::Down => 1,
            Status::OutOfService => 2,
            Status::Stuck { money_in: false } => 3,
            Status::Online => 4,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn three_missed_heartbeats_are_down_and_a_long_customer_screen_is_stuck() {
        let limits = Limits {
            heartbeat: Duration::from_secs(5),
            stuck_after: Duration::from_secs(300),
        };
        let s = |age: Option<u64>, screen: &str, secs: u64, money: u64| {
            Status::of(limits, age.map(Duration::from_secs), screen, secs, money)
        };
        assert_eq!(s(Some(2), "attract", 9999, 0), Status::Online);
        assert_eq!(s(Some(15), "attract", 0, 0), Status::Online);
        assert_eq!(s(Some(16), "attract", 0, 0), Status::Down);
        assert_eq!(s(None, "attract", 0, 0), Status::Down);
        assert_eq!(s(Some(1), "out-of-service", 0, 0), Status::OutOfService);
        assert_eq!(
            s(Some(1), "paying", 301, 5000),
            Status::Stuck { money_in: true }
        );
        assert_eq!(
            s(Some(1), "account", 301, 0),
            Status::Stuck { money_in: false }
        );
        assert_eq!(s(Some(1), "paying", 299, 5000), Status::Online);
    }
}
