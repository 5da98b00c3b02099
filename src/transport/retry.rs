//! Backoff between connection attempts: exponential, capped, with "equal jitter" (a random
//! delay in the upper half of the ceiling), so that many devices that lost the same server
//! do not come back in lockstep, while each device's delays still grow.

use std::time::Duration;

use super::RetryPolicy;

impl RetryPolicy {
    /// Tries in all (at least 1).
    pub fn total_attempts(&self) -> u32 {
        self.attempts.max(1)
    }

    /// The delay ceiling before retry number `retry` (1 = the first retry):
    /// `base · 2^(retry−1)`, capped at `max`.
    pub fn ceiling(&self, retry: u32) -> Duration {
        let factor = 1u32 << retry.saturating_sub(1).min(31);
        self.base.saturating_mul(factor).min(self.max)
    }

    /// The delay before retry number `retry` for a random `unit` in `[0, 1)`: uniformly in
    /// `[ceiling/2, ceiling]`.
    pub fn delay(&self, retry: u32, unit: f64) -> Duration {
        let ceiling = self.ceiling(retry);
        let unit = if unit.is_finite() {
            unit.clamp(0.0, 1.0)
        } else {
            0.0
        };
        ceiling / 2 + (ceiling / 2).mul_f64(unit)
    }
}

/// A random number in `[0, 1)` from the OS generator (0.5 if it is unavailable: jitter is
/// a courtesy to the server, not a security property).
pub(crate) fn random_unit() -> f64 {
    match getrandom::u64() {
        Ok(v) => (v >> 11) as f64 / (1u64 << 53) as f64,
        Err(_) => 0.5,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            attempts: 10,
            base: Duration::from_millis(100),
            max: Duration::from_secs(1),
        }
    }

    #[test]
    fn ceiling_doubles_then_caps() {
        let p = policy();
        let ms: Vec<u128> = (1..=6).map(|n| p.ceiling(n).as_millis()).collect();
        assert_eq!(ms, [100, 200, 400, 800, 1000, 1000]);
        assert_eq!(p.ceiling(0), Duration::from_millis(100));
        assert_eq!(p.ceiling(u32::MAX), Duration::from_secs(1));
    }

    #[test]
    fn jitter_stays_within_the_upper_half() {
        let p = policy();
        for n in 1..8 {
            let c = p.ceiling(n);
            assert_eq!(p.delay(n, 0.0), c / 2);
            assert_eq!(p.delay(n, 1.0), c);
            for _ in 0..200 {
                let d = p.delay(n, random_unit());
                assert!(
                    d >= c / 2 && d <= c,
                    "retry {n}: {d:?} outside [{:?}, {c:?}]",
                    c / 2
                );
            }
        }
        // Out-of-range randomness cannot escape the bounds.
        assert_eq!(p.delay(1, f64::NAN), Duration::from_millis(50));
        assert_eq!(p.delay(1, 7.0), Duration::from_millis(100));
        assert_eq!(p.delay(1, -1.0), Duration::from_millis(50));
    }

    #[test]
    fn delays_never_shrink_before_the_cap() {
        // The smallest delay of retry n+1 is the largest of retry n.
        let p = policy();
        for n in 1..4 {
            assert!(p.delay(n + 1, 0.0) >= p.delay(n, 1.0));
        }
    }

    #[test]
    fn random_unit_is_in_range() {
        for _ in 0..1000 {
            let u = random_unit();
            assert!((0.0..1.0).contains(&u));
        }
    }

    #[test]
    fn zero_attempts_means_one_try() {
        let p = RetryPolicy {
            attempts: 0,
            ..policy()
        };
        assert_eq!(p.total_attempts(), 1);
        assert_eq!(RetryPolicy::none().total_attempts(), 1);
    }
}
