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
/// been inside its current turn)` when that exceeds the stall `limit` and no
/// turn completed since the previous answer (`before`, if there was one).
/// `None` (alive) when the engine is idle, within the limit, or its turns
/// advanced.
pub fn stuck_for(before: Option<Progress>, now: Progress, limit: Duration) -> Option<Duration> {
    let busy = Duration::from_millis(now.busy_ms);
    let advanced = before.is_some_and(|b| now.turns != b.turns);
    (busy > limit && !advanced).then_some(busy)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(turns: u64, busy_ms: u64) -> Option<Progress> {
        Some(Progress {
            turns,
            busy_ms,
            ..Progress::default()
        })
    }

    #[test]
    fn only_an_engine_inside_one_turn_past_the_limit_is_stuck() {
        let ms = |ms| Some(Duration::from_millis(ms));
        #[rustfmt::skip]
        let table = [
            // previous answer, this answer, verdict, case
            (None,          p(0, 0),        None,          "idle from the start"),
            (p(5, 0),       p(5, 0),        None,          "idle: no turns, no busy time"),
            (p(5, 100),     p(9, 200),      None,          "turns advancing"),
            (p(5, 30_000),  p(5, 59_999),   None,          "a long step under the limit"),
            (p(5, 30_000),  p(5, 60_000),   None,          "exactly at the limit"),
            (p(5, 30_000),  p(5, 60_001),   ms(60_001),    "one step past the limit"),
            (None,          p(7, 90_000),   ms(90_000),    "the first answer already past it"),
            // A turn completed since the last answer: a clock the worker
            // forgot to reset is not a stall.
            (p(5, 0),       p(6, 90_000),   None,          "a turn completed since"),
            (p(5, 1),       p(5, u64::MAX), ms(u64::MAX),  "no overflow at the extreme"),
        ];
        for (before, now, want, case) in table {
            let now = now.unwrap();
            assert_eq!(
                stuck_for(before, now, Duration::from_secs(60)),
                want,
                "{case}"
            );
        }
    }
}
