//! Which loaded model to unload to make room for another.

use std::time::Instant;

/// A loaded (or loading) model as eviction sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    pub name: String,
    /// Loading, draining or starting models are never evicted.
    pub busy_state: bool,
    /// Requests in flight or queued.
    pub active_requests: usize,
    /// Pinned (preloaded) models stay.
    pub pinned: bool,
    pub last_used: Instant,
}

/// Unload decision: the least recently used model that is idle, ready and
/// not pinned; `None` when every model is busy (the new load then waits).
pub fn choose_victim(candidates: &[Candidate]) -> Option<&str> {
    candidates
        .iter()
        .filter(|c| !c.busy_state && c.active_requests == 0 && !c.pinned)
        .min_by_key(|c| c.last_used)
        .map(|c| c.name.as_str())
}

/// Idle models whose TTL has passed, given each model's TTL in seconds (0 = never).
pub fn expired(
    candidates: &[Candidate],
    ttl_secs: impl Fn(&str) -> u64,
    now: Instant,
) -> Vec<&str> {
    candidates
        .iter()
        .filter(|c| !c.busy_state && c.active_requests == 0 && !c.pinned)
        .filter(|c| {
            let ttl = ttl_secs(&c.name);
            ttl > 0 && now.saturating_duration_since(c.last_used).as_secs() >= ttl
        })
        .map(|c| c.name.as_str())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn c(name: &str, busy: bool, active: usize, pinned: bool, age: u64, now: Instant) -> Candidate {
        Candidate {
            name: name.into(),
            busy_state: busy,
            active_requests: active,
            pinned,
            last_used: now - Duration::from_secs(age),
        }
    }

    #[test]
    fn never_evicts_busy_loading_or_pinned_models() {
        let now = Instant::now() + Duration::from_secs(10_000);
        let table: Vec<(Vec<Candidate>, Option<&str>)> = vec![
            (
                vec![
                    c("a", false, 0, false, 10, now),
                    c("b", false, 0, false, 50, now),
                ],
                Some("b"),
            ),
            (
                vec![
                    c("a", false, 0, false, 10, now),
                    c("b", false, 1, false, 50, now),
                ],
                Some("a"),
            ),
            (
                vec![
                    c("a", true, 0, false, 10, now),
                    c("b", false, 2, false, 50, now),
                ],
                None,
            ),
            (vec![c("a", false, 0, true, 10, now)], None),
            (vec![], None),
        ];
        for (cands, want) in table {
            assert_eq!(choose_victim(&cands), want, "{cands:?}");
        }
    }

    #[test]
    fn ttl_expiry_skips_busy_models_and_zero_ttl() {
        let now = Instant::now() + Duration::from_secs(10_000);
        let cands = vec![
            c("old", false, 0, false, 400, now),
            c("busy", false, 1, false, 400, now),
            c("fresh", false, 0, false, 10, now),
            c("forever", false, 0, false, 9000, now),
        ];
        let ttl = |n: &str| if n == "forever" { 0 } else { 300 };
        assert_eq!(expired(&cands, ttl, now), vec!["old"]);
    }
}
