//! Liveness: is a worker that answered a ping still making progress?
//!
//! The worker's command reader answers every ping itself with its engine's
//! [`Progress`] (turns completed, time inside the current turn), so the
//! answer's arrival only proves the *process* is alive. Whether the *engine*
//! is alive is judged here, from progress: turns advancing, or an idle engine,
//! is alive; an engine inside one turn for longer than the stall limit is
//! stuck (a driver that never returns, a kernel spinning forever) and its
//! worker is killed. A long step is not a stall: a 2,048-token prompt batch of
//! a big model on a slow CPU takes a minute or two, and the limit is set well
//! above that (`--liveness-stall-ms`).
//!
//! No answer at all within the ping timeout is the other failure (the whole
//! process is hung or stopped); the actor measures that with its own timer.

use std::time::Duration;

use llm_node_protocol::Progress;

/// Whether an engine that answered with `now` is stuck: `Some(how long it has
/// been inside its current turn)` when that exceeds `limit` and no turn
/// completed since the previous answer (`before`, if there was one). `None`
/// (alive) when `limit` is `None` (never judge a long step), the engine is
/// idle, or its turns advanced.
pub fn stuck_for(
    before: Option<Progress>,
    now: Progress,
    limit: Option<Duration>,
) -> Option<Duration> {
    let limit = limit?;
    let busy = Duration::from_millis(now.busy_ms);
    let advanced = before.is_some_and(|b| now.turns != b.turns);
    (busy > limit && !advanced).then_some(busy)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(turns: u64, busy_ms: u64) -> Progress {
        Progress { turns, busy_ms }
    }

    #[test]
    fn only_an_engine_inside_one_turn_past_the_limit_is_stuck() {
        let limit = Some(Duration::from_secs(60));
        let s = |ms| Some(Duration::from_millis(ms));
        for (before, now, limit, want, case) in [
            (None, p(0, 0), limit, None, "idle from the start"),
            (
                Some(p(5, 0)),
                p(5, 0),
                limit,
                None,
                "idle: no turns, no busy time",
            ),
            (Some(p(5, 100)), p(9, 200), limit, None, "turns advancing"),
            (
                Some(p(5, 30_000)),
                p(5, 59_999),
                limit,
                None,
                "a long step under the limit",
            ),
            (
                Some(p(5, 30_000)),
                p(5, 60_000),
                limit,
                None,
                "exactly at the limit",
            ),
            (
                Some(p(5, 30_000)),
                p(5, 60_001),
                limit,
                s(60_001),
                "one step past the limit",
            ),
            (
                None,
                p(7, 90_000),
                limit,
                s(90_000),
                "first answer already past it",
            ),
            (
                Some(p(5, 0)),
                p(6, 90_000),
                limit,
                None,
                "a turn completed since: a clock the worker forgot to reset is not a stall",
            ),
            (
                Some(p(5, 1)),
                p(5, u64::MAX),
                None,
                None,
                "limit off: never stuck",
            ),
        ] {
            assert_eq!(stuck_for(before, now, limit), want, "{case}");
        }
    }
}
