//! Capped exponential backoff with jitter, as a pure function.
//!
//! Retries are unlimited (nothing is ever dropped because a hub was down too long); only the delay
//! between them grows, up to a cap. Half of each delay is fixed and half is random ("equal
//! jitter"), so a fleet of agents that lost the hub at the same moment does not come back in step.
//! The random draw is an argument, which keeps this testable.

use std::time::Duration;

/// Backoff policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
}

impl Default for Backoff {
    /// 200 ms first retry; 30 s cap keeps a recovered hub from waiting long for its agents.
    fn default() -> Self {
        Backoff { initial: Duration::from_millis(200), max: Duration::from_secs(30) }
    }
}

impl Backoff {
    /// Delay before retry number `attempt` (0 for the first retry); `jitter` is uniform in [0, 1).
    pub fn delay(&self, attempt: u32, jitter: f64) -> Duration {
        let exp = 2u32.saturating_pow(attempt.min(31));
        let base = self.initial.saturating_mul(exp).min(self.max);
        let half = base / 2;
        half + half.mul_f64(jitter.clamp(0.0, 1.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_then_caps() {
        let b = Backoff { initial: Duration::from_millis(100), max: Duration::from_secs(10) };
        assert_eq!(b.delay(0, 0.0), Duration::from_millis(50));
        assert_eq!(b.delay(0, 1.0), Duration::from_millis(100));
        assert_eq!(b.delay(3, 1.0), Duration::from_millis(800));
        assert_eq!(b.delay(20, 1.0), Duration::from_secs(10));
        assert_eq!(b.delay(u32::MAX, 0.0), Duration::from_secs(5));
        assert!(b.delay(5, 0.5) >= Duration::from_millis(1600));
    }
}
