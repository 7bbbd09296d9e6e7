//! The marker-driven parser shared by every family except the
//! message-header ones (harmony, Functionary v3.2).
//!
//! Three modes. *Content*: text is content until a reasoning opener (only at
//! the start), a tool-call trigger (when tools were offered) or a marker to
//! drop. *Reasoning*: text is reasoning (trimmed) until the closer.
//! *Block*: a tool-call block is collected whole, until its closer or the
//! end of the output, then parsed by [`calls`]; a block that does not
//! parse is content, markers included, so no text is ever lost.
//!
//! "At the start" means nothing but whitespace has been content since the
//! output began, reasoning closed or a tool-call block ended; leading
//! whitespace there is dropped. Every decision depends only on complete
//! markers (see [`scan`]), so any split of the text parses the same.

use super::calls::{self, Schemas};
use super::scan::{scan, Scan, Trimmed};
use super::{Delta, Forced, ParseOptions};
use crate::format::{BlockEnd, ChatFormat, Trigger, END_TOKENS, TRAILING_EOS};

#[derive(Debug)]
enum Mode {
    Content,
    Reasoning,
    /// Inside a tool-call block; `searched` bytes of the buffer hold no closer.
    Block {
        trigger: Trigger,
        searched: usize,
    },
    /// The rest of the output is a forced call.
    Forced,
}

/// What a marker met in content does.
#[derive(Debug, Clone, Copy)]
enum Act {
    Drop,
    Close,
    Trigger(Trigger),
}

#[derive(Debug)]
pub(crate) struct Engine {
    format: ChatFormat,
    tools: bool,
    forced: Option<Forced>,
    schemas: Schemas,
    buf: String,
    mode: Mode,
    at_start: bool,
    reasoning: Trimmed,
    next_index: u32,
}

impl Engine {
    pub(crate) fn new(format: ChatFormat, options: ParseOptions) -> Self {
        let reasoning_open = options.reasoning_open && format.reasoning.markers().is_some();
        Self {
            format,
            tools: options.tools || options.forced.is_some(),
            forced: options.forced,
            schemas: options.tool_schemas,
            buf: String::new(),
            mode: if reasoning_open {
                Mode::Reasoning
            } else {
                Mode::Content
            },
            at_start: true,
            reasoning: Trimmed::default(),
            next_index: 0,
        }
    }

    pub(crate) fn push(&mut self, text: &str, out: &mut Vec<Delta>) {
        self.buf.push_str(text);
        self.run(false, out);
    }

    pub(crate) fn finish(&mut self, out: &mut Vec<Delta>) {
        self.run(true, out);
        self.reasoning.end();
        self.buf.clear();
    }

    /// Consumes as much of the buffer as can be decided.
    fn run(&mut self, eof: bool, out: &mut Vec<Delta>) {
        loop {
            let progressed = match self.mode {
                Mode::Content => self.content(eof, out),
                Mode::Reasoning => self.reasoning(eof, out),
                Mode::Block { trigger, searched } => self.block(trigger, searched, eof, out),
                Mode::Forced => self.forced(eof, out),
            };
            if !progressed {
                return;
            }
        }
    }

    /// Markers that act in content, with what they do.
    fn content_markers(&self) -> (Vec<&'static str>, Vec<Act>) {
        let mut markers = Vec::new();
        let mut acts = Vec::new();
        if let Some((_, close)) = self.format.reasoning.markers() {
            markers.push(close);
            acts.push(Act::Close);
        }
        if self.tools {
            for t in self.format.tools.triggers().iter().filter(|t| !t.anchored) {
                markers.push(t.marker);
                acts.push(Act::Trigger(*t));
            }
            for m in self.format.tools.stray_closers() {
                markers.push(m);
                acts.push(Act::Drop);
            }
        }
        let drops = END_TOKENS
            .iter()
            .chain(self.format.tools.stray())
            .chain(self.format.reasoning.stray());
        for m in drops {
            markers.push(m);
            acts.push(Act::Drop);
        }
        (markers, acts)
    }

    /// Whether `buf` starts with `marker`: `Some(true)`; could still:
    /// `None` (wait); cannot: `Some(false)`.
    fn starts(&self, marker: &str, eof: bool) -> Option<bool> {
        if self.buf.starts_with(marker) {
            Some(true)
        } else if !eof && marker.starts_with(self.buf.as_str()) {
            None
        } else {
            Some(false)
        }
    }

    /// Returns whether anything was consumed or the mode changed.
    fn content(&mut self, eof: bool, out: &mut Vec<Delta>) -> bool {
        if self.at_start {
            let trimmed = self.buf.len() - self.buf.trim_start().len();
            self.buf.drain(..trimmed);
            if self.buf.is_empty() {
                return false;
            }
            if let Some((open, _)) = self.format.reasoning.markers() {
                match self.starts(open, eof) {
                    None => return false,
                    Some(true) => {
                        self.buf.drain(..open.len());
                        self.mode = Mode::Reasoning;
                        return true;
                    }
                    Some(false) => {}
                }
            }
            if self.forced.is_some() {
                self.mode = Mode::Forced;
                return true;
            }
            if self.tools {
                for t in self.format.tools.triggers().iter().filter(|t| t.anchored) {
                    match self.starts(t.marker, eof) {
                        None => return false,
                        Some(true) => {
                            self.buf.drain(..t.marker.len());
                            self.mode = Mode::Block {
                                trigger: *t,
                                searched: 0,
                            };
                            return true;
                        }
                        Some(false) => {}
                    }
                }
            }
        }
        let (markers, acts) = self.content_markers();
        match scan(&self.buf, &markers, eof) {
            Scan::Plain { safe } => {
                let text: String = self.buf.drain(..safe).collect();
                self.emit_content(&text, out);
                false
            }
            Scan::Found { at, index } => {
                let text: String = self.buf.drain(..at).collect();
                self.emit_content(&text, out);
                self.buf.drain(..markers[index].len());
                match acts[index] {
                    Act::Drop => {}
                    Act::Close => self.at_start = true,
                    Act::Trigger(trigger) => {
                        self.mode = Mode::Block {
                            trigger,
                            searched: 0,
                        }
                    }
                }
                true
            }
        }
    }

    fn reasoning(&mut self, eof: bool, out: &mut Vec<Delta>) -> bool {
        let Some((_, close)) = self.format.reasoning.markers() else {
            self.mode = Mode::Content;
            return true;
        };
        let mut markers = vec![close];
        markers.extend(END_TOKENS);
        match scan(&self.buf, &markers, eof) {
            Scan::Plain { safe } => {
                let text: String = self.buf.drain(..safe).collect();
                self.emit_reasoning(&text, out);
                false
            }
            Scan::Found { at, index } => {
                let text: String = self.buf.drain(..at).collect();
                self.emit_reasoning(&text, out);
                self.buf.drain(..markers[index].len());
                if index == 0 {
                    self.reasoning.end();
                    self.mode = Mode::Content;
                    self.at_start = true;
                }
                true
            }
        }
    }

    fn block(
        &mut self,
        trigger: Trigger,
        searched: usize,
        eof: bool,
        out: &mut Vec<Delta>,
    ) -> bool {
        match trigger.end {
            BlockEnd::Marker(close) => {
                let mut from = searched.saturating_sub(close.len());
                while !self.buf.is_char_boundary(from) {
                    from -= 1;
                }
                if let Some(i) = self.buf[from..].find(close) {
                    let body: String = self.buf.drain(..from + i).collect();
                    self.buf.drain(..close.len());
                    self.complete(trigger, &body, close, out);
                    true
                } else if eof {
                    let body = std::mem::take(&mut self.buf);
                    self.complete(trigger, &body, "", out);
                    true
                } else {
                    self.mode = Mode::Block {
                        trigger,
                        searched: self.buf.len(),
                    };
                    false
                }
            }
            BlockEnd::Eof if eof => {
                let body = std::mem::take(&mut self.buf);
                let body = strip_end_tokens(&body);
                self.complete(trigger, body, "", out);
                true
            }
            BlockEnd::Eof => false,
        }
    }

    /// A block ended (at `close`, or at the end of the output when empty).
    fn complete(&mut self, trigger: Trigger, body: &str, close: &str, out: &mut Vec<Delta>) {
        self.mode = Mode::Content;
        match calls::parse_block(self.format.tools, trigger.marker, body, &self.schemas) {
            Some((calls, after)) => {
                for c in calls {
                    self.emit_call(c.name, c.arguments, out);
                }
                self.at_start = true;
                self.emit_content(&after, out);
            }
            None => {
                let text = format!("{}{body}{close}", trigger.marker);
                self.emit_content(&text, out);
            }
        }
    }

    fn forced(&mut self, eof: bool, out: &mut Vec<Delta>) -> bool {
        if !eof {
            return false;
        }
        let text = std::mem::take(&mut self.buf);
        self.mode = Mode::Content;
        match &self.forced {
            Some(Forced::Calls) => {
                if let Some(calls) = calls::forced_calls(&text) {
                    for c in calls {
                        self.emit_call(c.name, c.arguments, out);
                    }
                    return true;
                }
            }
            Some(Forced::Function(name)) => {
                if let Some(arguments) = calls::object_text(&text) {
                    let name = name.clone();
                    self.emit_call(name, arguments, out);
                    return true;
                }
            }
            None => {}
        }
        self.emit_content(&text, out);
        true
    }

    fn emit_content(&mut self, text: &str, out: &mut Vec<Delta>) {
        let text = if self.at_start {
            text.trim_start()
        } else {
            text
        };
        if !text.is_empty() {
            self.at_start = false;
            out.push(Delta::Content(text.to_owned()));
        }
    }

    fn emit_reasoning(&mut self, text: &str, out: &mut Vec<Delta>) {
        let text = self.reasoning.push(text);
        if !text.is_empty() {
            out.push(Delta::Reasoning(text));
        }
    }

    fn emit_call(&mut self, name: String, arguments: String, out: &mut Vec<Delta>) {
        out.push(Delta::ToolCall {
            index: self.next_index,
            name: Some(name),
            arguments,
        });
        self.next_index += 1;
    }
}

/// A block that runs to the end of the output without its end-of-generation
/// token(s) (which the worker usually does not render, but may).
fn strip_end_tokens(mut body: &str) -> &str {
    loop {
        let t = body.trim_end();
        match END_TOKENS
            .iter()
            .chain(TRAILING_EOS)
            .find_map(|m| t.strip_suffix(m))
        {
            Some(rest) => body = rest,
            None => return body,
        }
    }
}
