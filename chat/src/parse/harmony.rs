//! Parsers for output made of addressed messages: gpt-oss harmony and
//! Functionary v3.2. Each message has a header (who it is for, which
//! channel) and a body; the header decides the body's field.
//!
//! Harmony (`<|start|>assistant` ends the prompt, so output begins inside a
//! header): `HEADER<|message|>BODY<|end|>` repeated, `<|call|>` ending a tool
//! call and `<|return|>` the answer. The header holds `<|channel|>NAME` and
//! maybe `to=RECIPIENT` and `<|constrain|>json`, in either order; the last
//! channel named wins. `analysis` is reasoning, `final` and `commentary` are
//! content, a recipient `functions.NAME` makes the body that call's
//! arguments whatever the channel, and another recipient (a built-in tool
//! such as `python` or `container.exec`, which we never offer) is dropped.
//!
//! Functionary v3.2 (`>>>` ends the prompt): `RECIPIENT\nBODY`, messages
//! separated by `>>>`; recipient `all` is content, any other a call.

use super::calls::object_text;
use super::scan::{scan, Scan, Trimmed};
use super::Delta;
use crate::format::END_TOKENS;

/// Where a message body goes.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Body {
    Content,
    Reasoning,
    /// A built-in tool's message: dropped.
    Ignore,
    /// A call's arguments, collected until the body ends; `searched` bytes
    /// of the buffer hold no end marker.
    Call {
        name: String,
        searched: usize,
    },
}

#[derive(Debug)]
enum State {
    /// Collecting a header (its text so far is in the buffer).
    Header,
    Body(Body),
}

/// The family-specific spelling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    Harmony,
    FunctionaryV32,
}

impl Dialect {
    fn header_end(self) -> &'static str {
        match self {
            Dialect::Harmony => "<|message|>",
            Dialect::FunctionaryV32 => "\n",
        }
    }

    /// What a header of output may start with (to tell plain text, which
    /// has none, from a header still arriving).
    fn header_starts(self) -> &'static [&'static str] {
        match self {
            Dialect::Harmony => &[
                "<|channel|>",
                "<|start|>",
                "<|constrain|>",
                " to=",
                "to=",
                "assistant",
            ],
            // Any first line is a recipient.
            Dialect::FunctionaryV32 => &[""],
        }
    }

    /// Markers met in a body, and whether each opens a new header.
    fn body_markers(self) -> (Vec<&'static str>, usize) {
        match self {
            Dialect::Harmony => {
                let mut m = vec!["<|start|>", "<|channel|>"];
                m.extend(["<|end|>", "<|message|>", "<|constrain|>"]);
                m.extend(END_TOKENS);
                (m, 2)
            }
            Dialect::FunctionaryV32 => {
                let mut m = vec![">>>"];
                m.extend(END_TOKENS);
                (m, 1)
            }
        }
    }

    fn classify(self, header: &str, tools: bool) -> Body {
        match self {
            Dialect::Harmony => harmony_header(header, tools),
            Dialect::FunctionaryV32 => match header.trim() {
                "all" | "" => Body::Content,
                name if tools => Body::Call {
                    name: name.to_owned(),
                    searched: 0,
                },
                _ => Body::Content,
            },
        }
    }
}

fn harmony_header(header: &str, tools: bool) -> Body {
    let word = |s: &str| -> String {
        s.chars()
            .take_while(|c| !c.is_whitespace() && *c != '<')
            .collect()
    };
    let channel = header
        .rsplit_once("<|channel|>")
        .map(|(_, c)| word(c))
        .unwrap_or_default();
    let recipient = header.find("to=").map(|i| word(&header[i + 3..]));
    match recipient.as_deref() {
        Some(r) if r.starts_with("functions.") => {
            if tools {
                Body::Call {
                    name: r["functions.".len()..].to_owned(),
                    searched: 0,
                }
            } else {
                Body::Content
            }
        }
        Some("assistant" | "user" | "all") | None => {
            if channel == "analysis" {
                Body::Reasoning
            } else {
                Body::Content
            }
        }
        Some(_) => Body::Ignore,
    }
}

#[derive(Debug)]
pub(crate) struct Messages {
    dialect: Dialect,
    tools: bool,
    buf: String,
    state: State,
    /// No header has completed yet (plain text is possible).
    first: bool,
    reasoning: Trimmed,
    next_index: u32,
}

impl Messages {
    pub(crate) fn new(dialect: Dialect, tools: bool) -> Self {
        Self {
            dialect,
            tools,
            buf: String::new(),
            state: State::Header,
            first: true,
            reasoning: Trimmed::default(),
            next_index: 0,
        }
    }

    pub(crate) fn push(&mut self, text: &str, out: &mut Vec<Delta>) {
        self.buf.push_str(text);
        while self.step(false, out) {}
    }

    pub(crate) fn finish(&mut self, out: &mut Vec<Delta>) {
        while self.step(true, out) {}
        self.reasoning.end();
        self.buf.clear();
    }

    fn step(&mut self, eof: bool, out: &mut Vec<Delta>) -> bool {
        match &self.state {
            State::Header => self.header(eof, out),
            State::Body(Body::Call { name, searched }) => {
                let (name, searched) = (name.clone(), *searched);
                self.call(name, searched, eof, out)
            }
            State::Body(body) => {
                let body = body.clone();
                self.body(body, eof, out)
            }
        }
    }

    fn header(&mut self, eof: bool, out: &mut Vec<Delta>) -> bool {
        if self.buf.is_empty() {
            return false;
        }
        if self.first {
            let b = self.buf.as_str();
            let possible = self
                .dialect
                .header_starts()
                .iter()
                .any(|s| b.starts_with(s) || s.starts_with(b));
            if !possible {
                self.state = State::Body(Body::Content);
                return true;
            }
        }
        let end = self.dialect.header_end();
        if let Some(i) = self.buf.find(end) {
            let header: String = self.buf.drain(..i + end.len()).collect();
            self.first = false;
            self.state = State::Body(self.dialect.classify(&header[..i], self.tools));
            return true;
        }
        if eof {
            // A header that never ended: plain text if it has no markers
            // (Functionary's answer without a recipient line), else dropped.
            let text = std::mem::take(&mut self.buf);
            if !text.contains("<|") {
                push_content(&text, out);
            }
        }
        false
    }

    fn body(&mut self, body: Body, eof: bool, out: &mut Vec<Delta>) -> bool {
        let (markers, opens) = self.dialect.body_markers();
        match scan(&self.buf, &markers, eof) {
            Scan::Plain { safe } => {
                let text: String = self.buf.drain(..safe).collect();
                self.emit(&body, &text, out);
                false
            }
            Scan::Found { at, index } => {
                let text: String = self.buf.drain(..at).collect();
                self.emit(&body, &text, out);
                self.end_body(markers[index], index < opens);
                true
            }
        }
    }

    /// The body ended at `marker`; `opens` when the marker starts a header.
    fn end_body(&mut self, marker: &str, opens: bool) {
        self.reasoning.end();
        if opens {
            // `<|channel|>` is part of the header it opens.
            if marker != "<|channel|>" {
                self.buf.drain(..marker.len());
            }
            self.state = State::Header;
        } else {
            self.buf.drain(..marker.len());
            self.state = State::Body(Body::Content);
        }
    }

    fn call(&mut self, name: String, searched: usize, eof: bool, out: &mut Vec<Delta>) -> bool {
        let (markers, opens) = self.dialect.body_markers();
        let mut from = searched;
        while !self.buf.is_char_boundary(from) {
            from -= 1;
        }
        match scan(&self.buf[from..], &markers, eof) {
            Scan::Found { at, index } => {
                let body: String = self.buf.drain(..from + at).collect();
                self.emit_call(name, &body, out);
                self.end_body(markers[index], index < opens);
                true
            }
            Scan::Plain { .. } if eof => {
                let body = std::mem::take(&mut self.buf);
                self.emit_call(name, &body, out);
                self.state = State::Body(Body::Content);
                true
            }
            Scan::Plain { safe } => {
                self.state = State::Body(Body::Call {
                    name,
                    searched: from + safe,
                });
                false
            }
        }
    }

    fn emit_call(&mut self, name: String, body: &str, out: &mut Vec<Delta>) {
        match object_text(body) {
            Some(arguments) => {
                out.push(Delta::ToolCall {
                    index: self.next_index,
                    name: Some(name),
                    arguments,
                });
                self.next_index += 1;
            }
            None => {
                // Not a call after all: keep the text.
                let text = match self.dialect {
                    Dialect::Harmony => body.to_owned(),
                    Dialect::FunctionaryV32 => format!("{name}\n{body}"),
                };
                push_content(&text, out);
            }
        }
    }

    fn emit(&mut self, body: &Body, text: &str, out: &mut Vec<Delta>) {
        match body {
            Body::Content => push_content(text, out),
            Body::Reasoning => {
                let t = self.reasoning.push(text);
                if !t.is_empty() {
                    out.push(Delta::Reasoning(t));
                }
            }
            Body::Ignore | Body::Call { .. } => {}
        }
    }
}

fn push_content(text: &str, out: &mut Vec<Delta>) {
    if !text.is_empty() {
        out.push(Delta::Content(text.to_owned()));
    }
}
