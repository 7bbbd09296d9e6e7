//! Server-sent events for streaming completions.
//!
//! [`ChunkWriter`] renders each `data: ...\n\n` frame (pure functions, tested
//! byte for byte). [`body`] turns a [`GenerationStream`] into the response
//! body. The body owns the stream, so when actix drops the body because the
//! client went away, the stream's guard cancels the generation in the worker.
//!
//! A stream always ends with `data: [DONE]`; when the generation fails or the
//! worker dies midway, an OpenAI error object is sent just before it, so a
//! client never sees a silent cut.

use std::convert::Infallible;

use actix_web::HttpResponse;
use bytes::Bytes;
use futures_util::Stream;
use llm_node_protocol::Usage;
use serde::Serialize;

use super::error::ApiError;
use super::output::{self, Assembler, Part};
use super::response::{
    finish_reason, ChatChunk, ChunkChoice, Delta, Header, TextChoice, TextCompletion, UsageBody,
};
use crate::worker::{GenerationEvent, GenerationStream};
use llm_node_protocol::TokenLogprob;

/// The last frame of every stream.
pub const DONE: &[u8] = b"data: [DONE]\n\n";

/// Which endpoint's chunk shape to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkKind {
    /// `chat.completion.chunk` with `delta`s.
    Chat,
    /// `text_completion` with `text`.
    Text,
}

/// Renders the frames of one streamed response.
#[derive(Debug, Clone)]
pub struct ChunkWriter {
    pub kind: ChunkKind,
    pub id: String,
    pub created: u64,
    pub model: String,
    pub include_usage: bool,
}

/// One `data:` frame.
pub fn frame(value: &impl Serialize) -> Vec<u8> {
    let json = serde_json::to_string(value).expect("response types serialize");
    format!("data: {json}\n\n").into_bytes()
}

impl ChunkWriter {
    fn header(&self) -> Header {
        Header {
            id: self.id.clone(),
            object: match self.kind {
                ChunkKind::Chat => "chat.completion.chunk",
                ChunkKind::Text => "text_completion",
            },
            created: self.created,
            model: self.model.clone(),
        }
    }

    fn chunk(&self, delta: Delta, text: String, finish: Option<&'static str>) -> Vec<u8> {
        self.chunk_with(delta, text, finish, None)
    }

    fn chunk_with(
        &self,
        delta: Delta,
        text: String,
        finish: Option<&'static str>,
        logprobs: Option<serde_json::Value>,
    ) -> Vec<u8> {
        match self.kind {
            ChunkKind::Chat => frame(&ChatChunk {
                header: self.header(),
                choices: vec![ChunkChoice {
                    index: 0,
                    delta,
                    logprobs,
                    finish_reason: finish,
                }],
                usage: None,
            }),
            ChunkKind::Text => frame(&TextCompletion {
                header: self.header(),
                choices: vec![TextChoice {
                    index: 0,
                    text,
                    logprobs,
                    finish_reason: finish,
                }],
                usage: None,
            }),
        }
    }

    /// A frame carrying one parsed part, with the logprobs of the tokens
    /// that produced it (already in the endpoint's shape).
    pub fn part(&self, part: &Part, logprobs: Option<serde_json::Value>) -> Vec<u8> {
        let mut delta = Delta::default();
        let mut text = String::new();
        match part {
            Part::Content(t) => {
                delta.content = Some(t.clone());
                text = t.clone();
            }
            Part::Reasoning(t) => delta.reasoning_content = Some(t.clone()),
            Part::ToolCall { .. } => {
                delta.tool_calls = Some(output::delta_json(part)["tool_calls"].take());
            }
        }
        self.chunk_with(delta, text, None, logprobs)
    }

    /// The opening frame: the assistant role for chat, nothing for text.
    pub fn opening(&self) -> Vec<u8> {
        match self.kind {
            ChunkKind::Chat => self.chunk(
                Delta {
                    role: Some("assistant"),
                    content: Some(String::new()),
                    ..Delta::default()
                },
                String::new(),
                None,
            ),
            ChunkKind::Text => Vec::new(),
        }
    }

    /// A frame carrying generated text.
    pub fn content(&self, text: &str) -> Vec<u8> {
        let delta = Delta {
            content: Some(text.to_string()),
            ..Delta::default()
        };
        self.chunk(delta, text.to_string(), None)
    }

    /// The frame with `finish_reason` and an empty delta.
    pub fn finish(&self, reason: &'static str) -> Vec<u8> {
        self.chunk(Delta::default(), String::new(), Some(reason))
    }

    /// The usage frame (`choices: []`), when the client asked for it.
    pub fn usage(&self, usage: &Usage) -> Vec<u8> {
        if !self.include_usage {
            return Vec::new();
        }
        let usage = Some(UsageBody::from(usage));
        match self.kind {
            ChunkKind::Chat => frame(&ChatChunk {
                header: self.header(),
                choices: Vec::new(),
                usage,
            }),
            ChunkKind::Text => frame(&TextCompletion {
                header: self.header(),
                choices: Vec::new(),
                usage,
            }),
        }
    }

    /// An error frame followed by `[DONE]`.
    pub fn error(&self, error: &ApiError) -> Vec<u8> {
        let mut out = frame(&error.body());
        out.extend_from_slice(DONE);
        out
    }

    /// The frames for one generation event, and whether the stream is over.
    pub fn event(&self, event: Result<GenerationEvent, ApiError>) -> (Vec<u8>, bool) {
        self.event_with(event, false)
    }

    /// As [`Self::event`]; `called_tools` turns a `stop` into `tool_calls`.
    pub fn event_with(
        &self,
        event: Result<GenerationEvent, ApiError>,
        called_tools: bool,
    ) -> (Vec<u8>, bool) {
        match event {
            Ok(GenerationEvent::Started { .. }) => (Vec::new(), false),
            Ok(GenerationEvent::Piece { text, .. }) if text.is_empty() => (Vec::new(), false),
            Ok(GenerationEvent::Piece { text, .. }) => (self.content(&text), false),
            Ok(GenerationEvent::Finished { reason, usage }) => match finish_reason(reason) {
                Some(reason) => {
                    let reason = output::finish_reason(reason, called_tools);
                    let mut out = self.finish(reason);
                    out.extend(self.usage(&usage));
                    out.extend_from_slice(DONE);
                    (out, true)
                }
                None => (self.error(&ApiError::WorkerGone), true),
            },
            Err(e) => (self.error(&e), true),
        }
    }
}

/// The frame of one generated piece, rendered once per stream around a
/// placeholder: each token then costs one buffer and the JSON escaping of its
/// text, with exactly the bytes of [`ChunkWriter::content`].
struct ContentTemplate {
    prefix: Vec<u8>,
    suffix: Vec<u8>,
}

impl ContentTemplate {
    fn new(writer: &ChunkWriter) -> Self {
        // The text is the last string of the frame: search from the end.
        const QUOTED_MARK: &[u8] = b"\"\\u0000\"";
        let frame = writer.content("\u{0}");
        let at = frame
            .windows(QUOTED_MARK.len())
            .rposition(|w| w == QUOTED_MARK)
            .expect("the placeholder is in the frame");
        Self {
            prefix: frame[..at].to_vec(),
            suffix: frame[at + QUOTED_MARK.len()..].to_vec(),
        }
    }

    fn render(&self, text: &str) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.prefix.len() + text.len() + 8 + self.suffix.len());
        out.extend_from_slice(&self.prefix);
        serde_json::to_writer(&mut out, text).expect("strings serialize");
        out.extend_from_slice(&self.suffix);
        out
    }
}

/// State of a streaming body.
struct BodyState {
    writer: ChunkWriter,
    template: ContentTemplate,
    stream: GenerationStream,
    /// The event already read to decide between an error and a stream.
    first: Option<GenerationEvent>,
    assembler: Assembler,
    /// Logprobs of tokens whose text has not been written yet.
    logprobs: Vec<TokenLogprob>,
    want_logprobs: bool,
    /// Bytes of text written so far (legacy `text_offset`).
    text_len: usize,
    parts: Vec<Part>,
    opened: bool,
    done: bool,
}

impl BodyState {
    /// The next non-empty batch of frames, or `None` after `[DONE]`.
    async fn next_bytes(&mut self) -> Option<Bytes> {
        if self.done {
            return None;
        }
        let mut out = Vec::new();
        if !self.opened {
            self.opened = true;
            out = self.writer.opening();
        }
        loop {
            let event = match self.first.take() {
                Some(event) => Ok(event),
                None => match self.stream.next().await {
                    Some(event) => event.map_err(ApiError::from),
                    None => Err(ApiError::Internal),
                },
            };
            let (frames, done) = self.frames(event);
            if out.is_empty() {
                out = frames;
            } else {
                out.extend(frames);
            }
            self.done = done;
            if done || !out.is_empty() {
                return Some(Bytes::from(out));
            }
        }
    }

    /// The frames of one generation event, and whether the stream is over.
    fn frames(&mut self, event: Result<GenerationEvent, ApiError>) -> (Vec<u8>, bool) {
        match event {
            Ok(GenerationEvent::Started { reasoning_open, .. }) => {
                self.assembler.started(reasoning_open);
                (Vec::new(), false)
            }
            Ok(GenerationEvent::Piece { text, logprobs, .. }) => {
                self.logprobs.extend(logprobs);
                self.assembler.push(text, &mut self.parts);
                (self.write_parts(), false)
            }
            Ok(GenerationEvent::Finished { reason, usage }) => {
                self.assembler.finish(&mut self.parts);
                let mut out = self.write_parts();
                let called = self.assembler.called_tools();
                let event = Ok(GenerationEvent::Finished { reason, usage });
                let (end, done) = self.writer.event_with(event, called);
                out.extend(end);
                (out, done)
            }
            Err(e) => self.writer.event(Err(e)),
        }
    }

    /// Frames for the parts produced so far; the pending logprobs ride on
    /// the first of them.
    fn write_parts(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        let parts = std::mem::take(&mut self.parts);
        for part in &parts {
            let logprobs = self.take_logprobs();
            if let Part::Content(t) = part {
                self.text_len += t.len();
            }
            let frame = match (part, logprobs) {
                // The hot path: one frame per token, no intermediate values.
                (Part::Content(t), None) => self.template.render(t),
                (part, logprobs) => self.writer.part(part, logprobs),
            };
            if out.is_empty() {
                out = frame;
            } else {
                out.extend(frame);
            }
        }
        // Keep the vector's allocation for the next piece.
        self.parts = parts;
        self.parts.clear();
        out
    }

    fn take_logprobs(&mut self) -> Option<serde_json::Value> {
        if !self.want_logprobs || self.logprobs.is_empty() {
            return None;
        }
        let tokens = std::mem::take(&mut self.logprobs);
        Some(match self.writer.kind {
            ChunkKind::Chat => output::chat_logprobs(&tokens),
            ChunkKind::Text => output::text_logprobs(&tokens, self.text_len),
        })
    }
}

/// The body of a streamed completion, starting with `first` (already read).
pub fn body(
    writer: ChunkWriter,
    first: GenerationEvent,
    stream: GenerationStream,
    assembler: Assembler,
    want_logprobs: bool,
) -> impl Stream<Item = Result<Bytes, Infallible>> {
    let state = BodyState {
        template: ContentTemplate::new(&writer),
        writer,
        stream,
        first: Some(first),
        assembler,
        logprobs: Vec::new(),
        want_logprobs,
        text_len: 0,
        parts: Vec::new(),
        opened: false,
        done: false,
    };
    futures_util::stream::unfold(state, |mut state| async move {
        let bytes = state.next_bytes().await?;
        Some((Ok(bytes), state))
    })
}

/// A `200 text/event-stream` response around [`body`].
pub fn response(
    writer: ChunkWriter,
    first: GenerationEvent,
    stream: GenerationStream,
    assembler: Assembler,
    want_logprobs: bool,
) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(("Cache-Control", "no-cache"))
        .insert_header(("X-Accel-Buffering", "no"))
        .streaming(body(writer, first, stream, assembler, want_logprobs))
}

#[cfg(test)]
mod tests {
    use llm_node_protocol::FinishReason;

    use super::*;

    fn writer(kind: ChunkKind, include_usage: bool) -> ChunkWriter {
        ChunkWriter {
            kind,
            id: "chatcmpl-1".into(),
            created: 7,
            model: "m".into(),
            include_usage,
        }
    }

    fn text(bytes: Vec<u8>) -> String {
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn chat_frames_are_exact() {
        let w = writer(ChunkKind::Chat, true);
        let head = r#""id":"chatcmpl-1","object":"chat.completion.chunk","created":7,"model":"m""#;
        assert_eq!(
            text(w.opening()),
            format!("data: {{{head},\"choices\":[{{\"index\":0,\"delta\":{{\"role\":\"assistant\",\"content\":\"\"}},\"logprobs\":null,\"finish_reason\":null}}]}}\n\n")
        );
        assert_eq!(
            text(w.content("Hi")),
            format!("data: {{{head},\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"Hi\"}},\"logprobs\":null,\"finish_reason\":null}}]}}\n\n")
        );
        assert_eq!(
            text(w.finish("stop")),
            format!("data: {{{head},\"choices\":[{{\"index\":0,\"delta\":{{}},\"logprobs\":null,\"finish_reason\":\"stop\"}}]}}\n\n")
        );
        let usage = Usage {
            prompt_tokens: 2,
            completion_tokens: 1,
            cached_tokens: 0,
        };
        assert_eq!(
            text(w.usage(&usage)),
            format!("data: {{{head},\"choices\":[],\"usage\":{{\"prompt_tokens\":2,\"completion_tokens\":1,\"total_tokens\":3,\"prompt_tokens_details\":{{\"cached_tokens\":0}}}}}}\n\n")
        );
    }

    #[test]
    fn the_token_template_renders_exactly_what_content_does() {
        for kind in [ChunkKind::Chat, ChunkKind::Text] {
            // A model name containing the placeholder must not confuse it.
            let w = ChunkWriter {
                model: "m\u{0}\"x".into(),
                ..writer(kind, false)
            };
            let template = ContentTemplate::new(&w);
            for piece in [
                "Hi",
                " ",
                "\"quoted\"",
                "a\nb\\c",
                "\u{0}",
                "日本語 🦀",
                "</script>",
            ] {
                assert_eq!(
                    template.render(piece),
                    w.content(piece),
                    "{kind:?} {piece:?}"
                );
            }
        }
    }

    #[test]
    fn text_frames_carry_text() {
        let w = ChunkWriter {
            id: "cmpl-1".into(),
            ..writer(ChunkKind::Text, false)
        };
        assert!(w.opening().is_empty());
        assert_eq!(
            text(w.content("Hi")),
            "data: {\"id\":\"cmpl-1\",\"object\":\"text_completion\",\"created\":7,\"model\":\"m\",\"choices\":[{\"index\":0,\"text\":\"Hi\",\"logprobs\":null,\"finish_reason\":null}]}\n\n"
        );
        assert!(w.usage(&Usage::default()).is_empty(), "not asked for");
    }

    #[test]
    fn finish_ends_with_usage_then_done() {
        let w = writer(ChunkKind::Chat, true);
        let (out, done) = w.event(Ok(GenerationEvent::Finished {
            reason: FinishReason::Length,
            usage: Usage::default(),
        }));
        let out = text(out);
        assert!(done);
        let frames: Vec<_> = out.split_terminator("\n\n").collect();
        assert_eq!(frames.len(), 3);
        assert!(frames[0].contains(r#""finish_reason":"length""#));
        assert!(frames[1].contains(r#""choices":[],"usage""#));
        assert_eq!(frames[2], "data: [DONE]");
    }

    #[test]
    fn failures_end_with_an_error_event_then_done() {
        let w = writer(ChunkKind::Chat, false);
        let (out, done) = w.event(Err(ApiError::WorkerGone));
        assert!(done);
        assert_eq!(
            text(out),
            "data: {\"error\":{\"message\":\"The model worker is unavailable; retry later\",\"type\":\"server_error\",\"param\":null,\"code\":\"worker_unavailable\"}}\n\ndata: [DONE]\n\n"
        );
        let (out, done) = w.event(Ok(GenerationEvent::Finished {
            reason: FinishReason::Cancelled,
            usage: Usage::default(),
        }));
        assert!(done && text(out).starts_with("data: {\"error\""));
    }

    #[test]
    fn started_and_empty_pieces_write_nothing() {
        let w = writer(ChunkKind::Chat, false);
        assert_eq!(
            w.event(Ok(GenerationEvent::Started {
                prompt_tokens: 1,
                reasoning_open: false
            })),
            (vec![], false)
        );
        let empty = GenerationEvent::Piece {
            text: String::new(),
            tokens: 1,
            logprobs: Vec::new(),
        };
        assert_eq!(w.event(Ok(empty)), (vec![], false));
    }
}
