//! Marker search that gives the same answer however the text was split.
//!
//! The contract every parser here builds on: a decision at a position is
//! taken only once the text there can no longer change it. A marker is acted
//! on when it is complete; text that could still be the start of a marker
//! (a proper prefix of one, at the end of what has arrived) is held back
//! until more text or the end of the output decides. Nothing else is held,
//! so ordinary content streams promptly.

/// What [`scan`] found in a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scan {
    /// Marker `index` of the list starts at byte `at`; everything before it
    /// is plain text.
    Found { at: usize, index: usize },
    /// No marker: the first `safe` bytes are plain text; the rest (maybe
    /// nothing) could still start a marker.
    Plain { safe: usize },
}

/// Finds the first marker of `markers` in `buf`. With `eof` the text is
/// complete and nothing is held back. When two markers match at one place
/// the longer wins, and a longer one that could still complete is waited for.
pub(crate) fn scan(buf: &str, markers: &[&str], eof: bool) -> Scan {
    let bytes = buf.as_bytes();
    for at in 0..bytes.len() {
        if !buf.is_char_boundary(at) {
            continue;
        }
        let rest = &buf[at..];
        let mut best: Option<usize> = None;
        let mut partial = false;
        for (index, m) in markers.iter().enumerate() {
            if m.is_empty() || m.as_bytes()[0] != bytes[at] {
                continue;
            }
            if rest.starts_with(m) {
                if best.is_none_or(|b| markers[b].len() < m.len()) {
                    best = Some(index);
                }
            } else if !eof && m.starts_with(rest) {
                partial = true;
            }
        }
        if partial {
            // A marker (maybe longer than one complete here) could still
            // match at this place: wait for more text.
            return Scan::Plain { safe: at };
        }
        if let Some(index) = best {
            return Scan::Found { at, index };
        }
    }
    Scan::Plain { safe: buf.len() }
}

/// Emits one field's text with its surrounding whitespace trimmed, as
/// streamed: leading whitespace is dropped, trailing whitespace waits until
/// more text follows it (and is dropped if the block ends first).
#[derive(Debug, Default)]
pub(crate) struct Trimmed {
    started: bool,
    pending: String,
}

impl Trimmed {
    /// Adds text; returns what may be emitted now (maybe empty).
    pub(crate) fn push(&mut self, text: &str) -> String {
        let text = if self.started {
            text
        } else {
            text.trim_start()
        };
        if text.is_empty() {
            return String::new();
        }
        self.started = true;
        let body = text.trim_end();
        if body.is_empty() {
            self.pending.push_str(text);
            return String::new();
        }
        let mut out = std::mem::take(&mut self.pending);
        out.push_str(body);
        self.pending.push_str(&text[body.len()..]);
        out
    }

    /// The block ended: its trailing whitespace is dropped.
    pub(crate) fn end(&mut self) {
        self.started = false;
        self.pending.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn complete_marker_is_found_and_partial_one_is_held() {
        let m = ["<think>", "</think>"];
        assert_eq!(
            scan("ab<think>c", &m, false),
            Scan::Found { at: 2, index: 0 }
        );
        assert_eq!(scan("ab</thi", &m, false), Scan::Plain { safe: 2 });
        assert_eq!(scan("ab</thi", &m, true), Scan::Plain { safe: 7 });
        assert_eq!(scan("ab<x", &m, false), Scan::Plain { safe: 4 });
    }

    #[test]
    fn longer_marker_sharing_a_prefix_wins() {
        let m = ["<a>", "<a>b"];
        assert_eq!(scan("x<a>", &m, false), Scan::Plain { safe: 1 });
        assert_eq!(scan("x<a>", &m, true), Scan::Found { at: 1, index: 0 });
        assert_eq!(scan("x<a>b", &m, false), Scan::Found { at: 1, index: 1 });
    }

    #[test]
    fn trimmed_holds_trailing_whitespace_until_text_follows() {
        let mut t = Trimmed::default();
        assert_eq!(t.push("  a "), "a");
        assert_eq!(t.push(" "), "");
        assert_eq!(t.push("b\n"), "  b");
        t.end();
        assert_eq!(t.push("\nc"), "c");
    }
}
