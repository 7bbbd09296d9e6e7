//! N-gram drafts for speculative decoding, without a draft model ("prompt
//! lookup"): the tokens that followed the most recent earlier occurrence of
//! the sequence's last `n` tokens are guessed to follow again. Answers that
//! repeat their input (code edits, JSON, quoting) are where this pays.
//!
//! # Contract
//! [`lookup`] returns at most `max` tokens, taken from `history` itself
//! right after an earlier occurrence of its last `n` tokens (the latest one,
//! the one closest to what is being written); nothing when `n` or `max` is
//! 0, or there is no such occurrence. The engine puts the draft into the
//! batch after the sequence's sampled token and keeps the drafted tokens
//! that the sequence's own sampler then samples, in order, up to the first
//! that differs (see the engine's `after_decode`): which tokens come out
//! never depends on the draft, only how many come out of one step.

/// A draft for the continuation of `history` (the sequence's tokens so far,
/// its last sampled token included).
pub fn lookup<T: PartialEq>(history: &[T], n: usize, max: usize) -> &[T] {
    if n == 0 || max == 0 || history.len() <= n {
        return &[];
    }
    let key = &history[history.len() - n..];
    // Latest first: start positions of earlier occurrences, before the key itself.
    (0..history.len() - n)
        .rev()
        .find(|&i| &history[i..i + n] == key)
        .map_or(&[], |i| {
            let from = i + n;
            &history[from..history.len().min(from + max)]
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (why, history, n, max, the draft wanted)
    type Case = (&'static str, &'static [i32], usize, usize, &'static [i32]);

    #[test]
    fn drafts_follow_the_latest_earlier_occurrence_of_the_last_n_tokens() {
        let table: [Case; 8] = [
            (
                "a repeat: what followed it",
                &[1, 2, 3, 4, 5, 1, 2],
                2,
                8,
                &[3, 4, 5, 1, 2],
            ),
            ("capped at max", &[1, 2, 3, 4, 5, 1, 2], 2, 2, &[3, 4]),
            (
                "the latest occurrence wins",
                &[1, 2, 7, 1, 2, 8, 1, 2],
                2,
                1,
                &[8],
            ),
            ("no earlier occurrence", &[1, 2, 3, 4], 2, 8, &[]),
            ("n = 0 is off", &[1, 1, 1], 0, 8, &[]),
            ("max = 0 is off", &[1, 1, 1], 1, 0, &[]),
            ("history no longer than n", &[1, 2], 2, 8, &[]),
            ("overlapping occurrences", &[5, 5, 5], 2, 8, &[5]),
        ];
        for (why, history, n, max, want) in table {
            assert_eq!(lookup(history, n, max), want, "{why}");
        }
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
}
