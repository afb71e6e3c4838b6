//! Per-agent request rate (pure): a token bucket per authenticated agent, refilled at
//! `rate` per second up to `burst`. The clock is an argument.
//!
//! Only authenticated agents get a bucket, so the map is bounded by the fleet's size; an
//! unauthenticated caller is refused before it costs anything but a token hash.

use std::collections::HashMap;
use std::sync::Mutex;

/// The buckets of every agent.
#[derive(Debug)]
pub struct RateLimiter {
    per_ms: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, (f64, i64)>>,
}

impl RateLimiter {
    pub fn new(per_second: u32, burst: u32) -> RateLimiter {
        RateLimiter {
            per_ms: f64::from(per_second) / 1000.0,
            burst: f64::from(burst.max(1)),
            buckets: Mutex::default(),
        }
    }

    /// Takes one request from `agent`'s bucket at `now_ms`; false when it is empty.
    pub fn allow(&self, agent: &str, now_ms: i64) -> bool {
        let mut buckets = self.buckets.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let (tokens, at) = buckets.entry(agent.to_string()).or_insert((self.burst, now_ms));
        let elapsed = (now_ms - *at).max(0) as f64;
        *tokens = (*tokens + elapsed * self.per_ms).min(self.burst);
        *at = now_ms;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_rate_per_agent() {
        let r = RateLimiter::new(2, 3);
        assert!((0..3).all(|_| r.allow("a", 0)));
        assert!(!r.allow("a", 0), "burst spent");
        assert!(r.allow("b", 0), "agents have their own buckets");
        assert!(!r.allow("a", 400), "0.8 of a token after 400 ms");
        assert!(r.allow("a", 500), "one token after 500 ms at 2/s");
        assert!(!r.allow("a", 500));
        // A long pause refills only up to the burst.
        assert!((0..3).all(|_| r.allow("a", 100_000)));
        assert!(!r.allow("a", 100_000));
    }
}
