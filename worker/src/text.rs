//! Turning token bytes into the text a client sees: UTF-8 reassembly across
//! token boundaries and stop strings that are matched across them and never
//! emitted. Pure code, no llama.cpp, so it is tested exhaustively here.

/// Collects token bytes and releases only complete UTF-8 characters.
///
/// A token may end in the middle of a multi-byte character (byte-level BPE
/// splits emoji and CJK this way); those bytes wait for the next token.
#[derive(Debug, Default)]
pub struct Utf8Assembler {
    pending: Vec<u8>,
}

impl Utf8Assembler {
    /// Adds `bytes` and appends every complete character to `out`.
    /// Bytes that can never become valid UTF-8 are replaced with U+FFFD.
    pub fn push(&mut self, bytes: &[u8], out: &mut String) {
        self.pending.extend_from_slice(bytes);
        let mut start = 0;
        loop {
            match std::str::from_utf8(&self.pending[start..]) {
                Ok(s) => {
                    out.push_str(s);
                    self.pending.clear();
                    return;
                }
                Err(e) => {
                    let valid = start + e.valid_up_to();
                    // SAFETY-free: this prefix was just validated.
                    out.push_str(std::str::from_utf8(&self.pending[start..valid]).unwrap_or(""));
                    match e.error_len() {
                        // Incomplete character at the end: keep it for later.
                        None => {
                            self.pending.drain(..valid);
                            return;
                        }
                        Some(bad) => {
                            out.push(char::REPLACEMENT_CHARACTER);
                            start = valid + bad;
                        }
                    }
                }
            }
        }
    }

    /// Flushes bytes still waiting at the end of a generation (lossily).
    pub fn finish(&mut self, out: &mut String) {
        if !self.pending.is_empty() {
            out.push_str(&String::from_utf8_lossy(&self.pending));
            self.pending.clear();
        }
    }
}

/// What [`StopMatcher::push`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum StopScan {
    /// No stop string yet; this text can be emitted now.
    Emit(String),
    /// A stop string matched; this text precedes it and is the last to emit.
    Stopped(String),
}

/// Holds back text that could be the start of a stop string.
#[derive(Debug)]
pub struct StopMatcher {
    stops: Vec<String>,
    held: String,
}

impl StopMatcher {
    pub fn new(stops: Vec<String>) -> Self {
        let stops = stops.into_iter().filter(|s| !s.is_empty()).collect();
        Self {
            stops,
            held: String::new(),
        }
    }

    /// Feeds newly decoded text.
    pub fn push(&mut self, text: &str) -> StopScan {
        if self.stops.is_empty() {
            return StopScan::Emit(text.to_owned());
        }
        self.held.push_str(text);
        let first_match = self
            .stops
            .iter()
            .filter_map(|s| self.held.find(s.as_str()))
            .min();
        if let Some(at) = first_match {
            let before = self.held[..at].to_owned();
            self.held.clear();
            return StopScan::Stopped(before);
        }
        let keep = self.partial_suffix_len();
        let emit_to = self.held.len() - keep;
        let emitted = self.held[..emit_to].to_owned();
        self.held.drain(..emit_to);
        StopScan::Emit(emitted)
    }

    /// Releases the held-back text when the generation ends for another reason.
    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.held)
    }

    /// Length in bytes of the longest suffix of `held` that is a proper prefix
    /// of some stop string (always on a char boundary).
    fn partial_suffix_len(&self) -> usize {
        let mut best = 0;
        for (i, _) in self.held.char_indices() {
            let suffix = &self.held[i..];
            if self.stops.iter().any(|s| s.starts_with(suffix)) {
                best = suffix.len();
                break; // char_indices goes from longest to shortest suffix
            }
        }
        best
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf8_split_across_tokens_is_reassembled() {
        let bytes = "é日🙂".as_bytes();
        let mut a = Utf8Assembler::default();
        let mut out = String::new();
        for b in bytes {
            a.push(&[*b], &mut out);
        }
        assert_eq!(out, "é日🙂");
        let mut tail = String::new();
        a.finish(&mut tail);
        assert!(tail.is_empty());
    }

    #[test]
    fn invalid_bytes_become_replacement_chars_and_do_not_block() {
        let mut a = Utf8Assembler::default();
        let mut out = String::new();
        a.push(&[b'a', 0xff, b'b'], &mut out);
        assert_eq!(out, "a\u{fffd}b");
    }

    #[test]
    fn incomplete_tail_is_flushed_lossily() {
        let mut a = Utf8Assembler::default();
        let mut out = String::new();
        a.push(&[b'x', 0xe6, 0x97], &mut out);
        assert_eq!(out, "x");
        a.finish(&mut out);
        assert_eq!(out, "x\u{fffd}");
    }

    fn run(stops: &[&str], pieces: &[&str]) -> (String, bool) {
        let mut m = StopMatcher::new(stops.iter().map(|s| s.to_string()).collect());
        let mut out = String::new();
        for p in pieces {
            match m.push(p) {
                StopScan::Emit(t) => out.push_str(&t),
                StopScan::Stopped(t) => {
                    out.push_str(&t);
                    return (out, true);
                }
            }
        }
        out.push_str(&m.finish());
        (out, false)
    }

    #[test]
    fn stop_strings_match_across_token_boundaries_and_are_not_emitted() {
        let cases: &[(&[&str], &[&str], &str, bool)] = &[
            (&["END"], &["hello E", "N", "D more"], "hello ", true),
            (&["END"], &["hello E", "N", "d"], "hello ENd", false),
            (&["\n\n"], &["a\n", "\nb"], "a", true),
            (&["ab", "b"], &["xab"], "x", true),
            (&["日本"], &["今日", "本"], "今", true),
            (&[], &["a", "b"], "ab", false),
            (&[""], &["a"], "a", false),
        ];
        for (stops, pieces, want, stopped) in cases {
            assert_eq!(
                run(stops, pieces),
                (want.to_string(), *stopped),
                "{stops:?} {pieces:?}"
            );
        }
    }

    #[test]
    fn text_is_released_as_soon_as_it_cannot_start_a_stop() {
        let mut m = StopMatcher::new(vec!["STOP".into()]);
        assert_eq!(m.push("abcS"), StopScan::Emit("abc".into()));
        assert_eq!(m.push("x"), StopScan::Emit("Sx".into()));
    }
}
