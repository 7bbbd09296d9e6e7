//! N-gram drafts for speculative decoding, without a draft model ("prompt
//! lookup"): the tokens that followed an earlier occurrence of the
//! sequence's last tokens are guessed to follow again. Answers that repeat
//! their input (code edits, JSON, quoting) are where this pays.
//!
//! # Contract
//! [`lookup`] returns at most `max` tokens, taken from `history` itself
//! right after the earlier occurrence of its *longest* suffix (at least `n`
//! and at most [`MAX_KEY`] tokens long) that occurs earlier at all; among
//! occurrences of that suffix, the latest (the one closest to what is being
//! written). Nothing when `n` or `max` is 0, or the last `n` tokens occur
//! nowhere earlier. A longer match places the draft where the text really
//! is being repeated: in a code edit the last three tokens (`return x`)
//! occur in every function, the last twenty in one place.
//!
//! [`Pace`] sizes the drafts of one sequence: a draft the sampler took whole
//! doubles the next one (up to the configured most), a rejected one halves
//! it, and a sequence whose drafts keep being rejected outright stops
//! drafting for a while (a draft costs a wider batch even when rejected).
//!
//! The engine puts the draft into the batch after the sequence's sampled
//! token and keeps the drafted tokens that the sequence's own sampler then
//! samples, in order, up to the first that differs (see the engine's
//! `after_decode`): which tokens come out never depends on the draft, only
//! how many come out of one step.

/// The longest suffix [`lookup`] tries to match: past this many tokens a
/// longer match says nothing more about where the text is being repeated.
pub const MAX_KEY: usize = 32;

/// A draft for the continuation of `history` (the sequence's tokens so far,
/// its last sampled token included): see the module's contract.
pub fn lookup<T: PartialEq>(history: &[T], n: usize, max: usize) -> &[T] {
    let len = history.len();
    if n == 0 || max == 0 || len <= n {
        return &[];
    }
    let cap = MAX_KEY.max(n);
    // (end of the occurrence, its length), latest first: a tie keeps the latest.
    let mut best: Option<(usize, usize)> = None;
    for end in (n..len).rev() {
        let matched = history[..end]
            .iter()
            .rev()
            .zip(history.iter().rev())
            .take(cap)
            .take_while(|(a, b)| a == b)
            .count();
        if matched >= n && best.is_none_or(|(_, m)| matched > m) {
            best = Some((end, matched));
            if matched == cap {
                break;
            }
        }
    }
    best.map_or(&[], |(end, _)| &history[end..len.min(end + max)])
}

/// The smallest draft [`Pace`] shrinks to.
pub const MIN_DRAFT: usize = 2;
/// The draft a sequence starts with (or the configured most, when smaller).
pub const FIRST_DRAFT: usize = 8;
/// Drafts rejected outright, one after the other, before a sequence pauses
/// drafting.
pub const MISSES_BEFORE_PAUSE: u32 = 3;

/// How long one sequence's drafts may be, from how its earlier ones fared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pace {
    /// The most tokens the next draft may have.
    pub len: usize,
    /// Drafts rejected from their first token on, in a row.
    pub misses: u32,
    /// Steps left without drafting.
    pub pause: u32,
}

impl Default for Pace {
    fn default() -> Self {
        Self {
            len: FIRST_DRAFT,
            misses: 0,
            pause: 0,
        }
    }
}

impl Pace {
    /// The most tokens this step's draft may have, within `most` (the
    /// configured most); 0 while paused (counting the pause down).
    pub fn allowed(&mut self, most: usize) -> usize {
        if self.pause > 0 {
            self.pause -= 1;
            return 0;
        }
        self.len.min(most)
    }

    /// Learns from a verified draft of `drafted` tokens of which the first
    /// `accepted` were kept: all kept doubles the length (up to `most`);
    /// some rejected halves it (not below [`MIN_DRAFT`]); the
    /// [`MISSES_BEFORE_PAUSE`]th draft in a row rejected outright pauses
    /// drafting for 8 steps, each further one in a row doubles the pause
    /// (up to 256).
    pub fn record(&mut self, drafted: usize, accepted: usize, most: usize) {
        if drafted == 0 {
            return;
        }
        if accepted >= drafted {
            self.len = (self.len * 2).min(most.max(MIN_DRAFT));
            self.misses = 0;
            return;
        }
        self.len = (self.len / 2).max(MIN_DRAFT);
        if accepted > 0 {
            self.misses = 0;
            return;
        }
        self.misses += 1;
        if self.misses >= MISSES_BEFORE_PAUSE {
            self.pause = 8 << (self.misses - MISSES_BEFORE_PAUSE).min(5);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (why, history, n, max, the draft wanted)
    type Case = (&'static str, &'static [i32], usize, usize, &'static [i32]);

    #[test]
    fn drafts_follow_the_longest_earlier_match_of_the_last_tokens() {
        let table: [Case; 10] = [
            (
                "a repeat: what followed it",
                &[1, 2, 3, 4, 5, 1, 2],
                2,
                8,
                &[3, 4, 5, 1, 2],
            ),
            ("capped at max", &[1, 2, 3, 4, 5, 1, 2], 2, 2, &[3, 4]),
            (
                "equal matches: the latest occurrence wins",
                &[1, 2, 7, 1, 2, 8, 1, 2],
                2,
                1,
                &[8],
            ),
            (
                "a longer match wins over a later one",
                &[9, 1, 2, 7, 5, 1, 2, 8, 9, 1, 2],
                2,
                1,
                &[7],
            ),
            (
                "matches shorter than n do not count",
                &[5, 2, 7, 1, 2, 8, 5, 1, 2],
                2,
                1,
                &[8],
            ),
            ("no earlier occurrence", &[1, 2, 3, 4], 2, 8, &[]),
            ("shorter than n only: none", &[3, 1, 2, 3], 2, 8, &[]),
            ("n = 0 is off", &[1, 1, 1], 0, 8, &[]),
            ("max = 0 is off", &[1, 1, 1], 1, 0, &[]),
            ("history no longer than n", &[1, 2], 2, 8, &[]),
        ];
        for (why, history, n, max, want) in table {
            assert_eq!(lookup(history, n, max), want, "{why}");
        }
        assert_eq!(lookup(&[5, 5, 5], 2, 8), &[5], "overlapping occurrences");
    }

    #[test]
    fn an_edit_drafts_from_the_place_it_is_copying_not_from_a_shared_line() {
        // Two "functions" share their last line (7, 8); the answer so far
        // copies the first one, so its draft must come from the first.
        let prompt = [1, 2, 3, 7, 8, 0, 4, 5, 6, 7, 8, 0];
        let mut history = prompt.to_vec();
        history.extend([1, 2, 3, 7, 8]);
        assert_eq!(lookup(&history, 2, 3), &[0, 4, 5]);
    }

    #[test]
    fn matches_longer_than_max_key_count_as_max_key() {
        // Two occurrences of a 40-token run: both match at least MAX_KEY
        // tokens, so the latest wins (the one at 50).
        let run: Vec<i32> = (100..140).collect();
        let mut history = vec![0];
        history.extend(&run);
        history.push(1);
        history.extend((2..10).map(|x| x * 1000));
        history.extend(&run);
        history.push(2);
        history.extend(&run);
        assert_eq!(lookup(&history, 3, 1), &[2]);
    }

    #[test]
    fn a_draft_never_exceeds_max_nor_leaves_the_history() {
        let history: Vec<i32> = (0..40).map(|i| i % 5).collect();
        for n in 1..6 {
            for max in 0..12 {
                let d = lookup(&history, n, max);
                assert!(d.len() <= max, "n {n} max {max}");
                // A slice of the history: its bytes lie inside it.
                let range = history.as_ptr_range();
                assert!(d.is_empty() || range.contains(&d.as_ptr()));
            }
        }
    }

    /// (why, pace before, drafted, accepted, most, pace after)
    type PaceCase = (&'static str, (usize, u32), usize, usize, usize, Pace);

    fn pace(len: usize, misses: u32, pause: u32) -> Pace {
        Pace { len, misses, pause }
    }

    #[test]
    fn drafts_grow_while_taken_whole_and_shrink_when_rejected() {
        let table: [PaceCase; 9] = [
            ("all kept: doubles", (8, 0), 8, 8, 32, pace(16, 0, 0)),
            (
                "all kept: capped at most",
                (16, 0),
                16,
                16,
                24,
                pace(24, 0, 0),
            ),
            (
                "a shorter draft all kept: doubles too",
                (8, 0),
                3,
                3,
                32,
                pace(16, 0, 0),
            ),
            ("part kept: halves", (16, 0), 16, 5, 32, pace(8, 0, 0)),
            (
                "part kept: never below MIN_DRAFT",
                (2, 0),
                2,
                1,
                32,
                pace(2, 0, 0),
            ),
            (
                "part kept resets the misses",
                (8, 2),
                8,
                1,
                32,
                pace(4, 0, 0),
            ),
            ("none kept: a miss", (8, 0), 8, 0, 32, pace(4, 1, 0)),
            (
                "third miss in a row: pause 8",
                (4, 2),
                4,
                0,
                32,
                pace(2, 3, 8),
            ),
            ("no draft: nothing learnt", (8, 2), 0, 0, 32, pace(8, 2, 0)),
        ];
        for (why, (len, misses), drafted, accepted, most, want) in table {
            let mut p = pace(len, misses, 0);
            p.record(drafted, accepted, most);
            assert_eq!(p, want, "{why}");
        }
    }

    #[test]
    fn a_sequence_whose_drafts_keep_failing_drafts_less_and_less_often() {
        let mut p = Pace::default();
        let mut drafted_steps = Vec::new();
        for step in 0..600 {
            let len = p.allowed(32);
            if len > 0 {
                drafted_steps.push(step);
                p.record(len, 0, 32);
            }
        }
        // 3 misses, then pauses of 8, 16, 32, 64, 128, 256, 256, ...
        assert_eq!(drafted_steps[..6], [0, 1, 2, 11, 28, 61]);
        assert!(drafted_steps.len() < 12, "{drafted_steps:?}");
        // One draft taken whole ends the run of misses: no pause after.
        p.pause = 0;
        p.record(2, 2, 32);
        p.record(4, 0, 32);
        assert_eq!(p.pause, 0);
    }

    #[test]
    fn allowed_is_the_pace_within_the_configured_most() {
        let mut p = pace(16, 0, 0);
        assert_eq!(p.allowed(32), 16);
        assert_eq!(p.allowed(4), 4);
        let mut paused = pace(16, 3, 2);
        assert_eq!((paused.allowed(32), paused.allowed(32)), (0, 0));
        assert_eq!(paused.allowed(32), 16);
    }
}
