//! A server-sent events parser for providers' streams (the WHATWG
//! `text/event-stream` rules that matter here), pure and fed in arbitrary
//! byte pieces.
//!
//! Written here rather than taken from a crate: it is ~60 lines, has no I/O,
//! and the property that matters (an event split anywhere, even inside a
//! UTF-8 character or between `\r` and `\n`, parses as if whole) is tested
//! below at every byte boundary. Rules kept: lines end in `\n`, `\r\n` or
//! `\r`; `:` starts a comment; `data` lines join with `\n`; one space after
//! the colon is dropped; a blank line dispatches an event if it has data.
//! `id` and `retry` are ignored (we never reconnect).

/// One parsed event, owned (see [`super::translate::SseEvent`] for the borrowed view).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Event {
    pub event: Option<String>,
    pub data: String,
}

/// Incremental parser: [`Parser::push`] bytes, get the events they complete.
#[derive(Debug, Default)]
pub struct Parser {
    /// Bytes of the line not yet ended.
    line: Vec<u8>,
    /// The last byte pushed was `\r`: a `\n` right after it ends nothing.
    after_cr: bool,
    event: Option<String>,
    data: Option<String>,
}

impl Parser {
    /// The events completed by `bytes`.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<Event> {
        let mut out = Vec::new();
        for &b in bytes {
            let after_cr = std::mem::replace(&mut self.after_cr, b == b'\r');
            match b {
                b'\n' if after_cr => {}
                b'\n' | b'\r' => {
                    let line = std::mem::take(&mut self.line);
                    self.line(&String::from_utf8_lossy(&line), &mut out);
                }
                _ => self.line.push(b),
            }
        }
        out
    }

    fn line(&mut self, line: &str, out: &mut Vec<Event>) {
        if line.is_empty() {
            let event = self.event.take();
            if let Some(data) = self.data.take() {
                out.push(Event { event, data });
            }
            return;
        }
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line, ""),
        };
        match field {
            "" => {} // a comment
            "event" => self.event = Some(value.to_owned()),
            "data" => match &mut self.data {
                Some(data) => {
                    data.push('\n');
                    data.push_str(value);
                }
                None => self.data = Some(value.to_owned()),
            },
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(event: Option<&str>, data: &str) -> Event {
        Event {
            event: event.map(str::to_owned),
            data: data.to_owned(),
        }
    }

    const STREAM: &str = "event: message_start\r\ndata: {\"a\":\"é✓\"}\r\n\r\n: ping\n\n\
        data: one\ndata:two\n\nevent: x\rdata: y\r\r\nid: 3\nretry: 5\ndata: [DONE]\n\n";

    #[test]
    fn events_parse_with_every_line_ending_and_comment() {
        let got = Parser::default().push(STREAM.as_bytes());
        assert_eq!(
            got,
            [
                ev(Some("message_start"), "{\"a\":\"é✓\"}"),
                ev(None, "one\ntwo"),
                ev(Some("x"), "y"),
                ev(None, "[DONE]"),
            ]
        );
    }

    #[test]
    fn a_stream_split_at_any_byte_parses_as_whole() {
        let whole = Parser::default().push(STREAM.as_bytes());
        let bytes = STREAM.as_bytes();
        for at in 0..=bytes.len() {
            let mut p = Parser::default();
            let mut got = p.push(&bytes[..at]);
            got.extend(p.push(&bytes[at..]));
            assert_eq!(got, whole, "split at {at}");
        }
        let mut p = Parser::default();
        let got: Vec<Event> = bytes.iter().flat_map(|b| p.push(&[*b])).collect();
        assert_eq!(got, whole, "byte by byte");
    }

    #[test]
    fn an_unterminated_event_is_not_dispatched() {
        assert!(Parser::default().push(b"data: half").is_empty());
        assert!(Parser::default().push(b"event: only\n\n").is_empty());
    }
}
