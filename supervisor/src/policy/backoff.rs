//! When to restart a crashed worker, and when to stop trying.

use std::time::{Duration, Instant};

/// Restart policy of one model.
#[derive(Debug, Clone, PartialEq)]
pub struct RestartPolicy {
    /// Delay before the first restart.
    pub base: Duration,
    /// Ceiling of the doubling delay.
    pub max: Duration,
    /// A crash loop is `max_crashes` crashes within `window`.
    pub max_crashes: usize,
    pub window: Duration,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        Self {
            base: Duration::from_millis(500),
            max: Duration::from_secs(60),
            max_crashes: 5,
            window: Duration::from_secs(600),
        }
    }
}

impl RestartPolicy {
    /// Delay before restart number `attempt` (1-based: the first restart after
    /// a crash is attempt 1): `base · 2^(attempt-1)`, capped at `max`, then
    /// scaled by `jitter` (a random draw in `[0, 1)`) into `[½·d, d)` so that
    /// models that crashed together do not restart in lockstep.
    pub fn delay(&self, attempt: u32, jitter: f64) -> Duration {
        let exp = attempt.saturating_sub(1).min(30);
        let raw = self.base.saturating_mul(1u32 << exp).min(self.max);
        raw.mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0))
    }

    /// Whether the crashes at `crashes` (any order) make a crash loop as of `now`.
    pub fn is_crash_loop(&self, crashes: &[Instant], now: Instant) -> bool {
        let recent = crashes
            .iter()
            .filter(|t| now.saturating_duration_since(**t) <= self.window)
            .count();
        recent >= self.max_crashes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delay_doubles_is_capped_and_jittered_downwards() {
        let p = RestartPolicy {
            base: Duration::from_secs(1),
            max: Duration::from_secs(10),
            ..RestartPolicy::default()
        };
        let table = [
            (1, 1.0, 1000),
            (2, 1.0, 2000),
            (3, 1.0, 4000),
            (4, 1.0, 8000),
            (5, 1.0, 10000),
            (40, 1.0, 10000),
            (1, 0.0, 500),
            (3, 0.5, 3000),
        ];
        for (attempt, jitter, ms) in table {
            assert_eq!(
                p.delay(attempt, jitter),
                Duration::from_millis(ms),
                "attempt {attempt} jitter {jitter}"
            );
        }
        assert_eq!(p.delay(0, 1.0), Duration::from_secs(1));
    }

    #[test]
    fn crash_loop_counts_only_crashes_inside_the_window() {
        let p = RestartPolicy {
            max_crashes: 3,
            window: Duration::from_secs(60),
            ..RestartPolicy::default()
        };
        let now = Instant::now() + Duration::from_secs(1000);
        let ago = |s| now - Duration::from_secs(s);
        assert!(!p.is_crash_loop(&[ago(1), ago(2)], now));
        assert!(p.is_crash_loop(&[ago(1), ago(2), ago(59)], now));
        assert!(!p.is_crash_loop(&[ago(1), ago(2), ago(61)], now));
        assert!(!p.is_crash_loop(&[], now));
    }
}
