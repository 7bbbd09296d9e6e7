//! A provider's streamed answer read into [`Piece`]s: relayed as it came
//! (OpenAI) or translated event by event (the others). Each read waits at
//! most the idle timeout; a stream never ends without `Done` or `Failed`.

use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use serde_json::Value;

use super::meter::Meter;
use super::translate::{ChatStream, SseEvent};
use super::{sse, translate_error, CloudError, Piece, PieceStream};

/// The next piece of an upstream body, within `idle`; `None` at its end.
async fn next_bytes(
    body: &mut (impl Stream<Item = reqwest::Result<Bytes>> + Unpin),
    idle: Duration,
    provider: &'static str,
) -> Option<Result<Bytes, CloudError>> {
    match tokio::time::timeout(idle, body.next()).await {
        Err(_) => Some(Err(CloudError::Timeout {
            provider,
            secs: idle.as_secs(),
        })),
        Ok(None) => None,
        Ok(Some(Ok(bytes))) => Some(Ok(bytes)),
        Ok(Some(Err(e))) => {
            tracing::warn!(provider, "cloud stream cut: {}", crate::net::describe(&e));
            Some(Err(cut(provider)))
        }
    }
}

fn cut(provider: &'static str) -> CloudError {
    CloudError::BadAnswer {
        provider,
        message: "the stream was cut before its end".into(),
    }
}

/// An OpenAI stream relayed byte for byte. It is also parsed on the side, to
/// know whether `[DONE]` came (else the stream was cut: an error event and
/// `[DONE]` are added) and to count the usage it reports.
pub(super) fn relay(
    response: reqwest::Response,
    idle: Duration,
    provider: &'static str,
    meter: Meter,
) -> PieceStream {
    struct State<B> {
        body: B,
        parser: sse::Parser,
        saw_done: bool,
        over: bool,
        meter: Meter,
    }
    let state = State {
        body: Box::pin(response.bytes_stream()),
        parser: sse::Parser::default(),
        saw_done: false,
        over: false,
        meter,
    };
    Box::pin(futures_util::stream::unfold(
        state,
        move |mut s| async move {
            if s.over {
                return None;
            }
            let piece = match next_bytes(&mut s.body, idle, provider).await {
                Some(Ok(bytes)) => {
                    for event in s.parser.push(&bytes) {
                        if event.data == "[DONE]" {
                            s.saw_done = true;
                        } else if let Ok(v) = serde_json::from_str::<Value>(&event.data) {
                            s.meter.usage(&v);
                        }
                    }
                    Piece::Raw(bytes)
                }
                Some(Err(e)) => {
                    s.over = true;
                    Piece::Failed(e)
                }
                None if s.saw_done => {
                    s.meter.end("ok");
                    return None;
                }
                None => {
                    s.over = true;
                    Piece::Failed(cut(provider))
                }
            };
            Some((piece, s))
        },
    ))
}

/// A provider's SSE stream translated into OpenAI chunks, then `[DONE]`.
pub(super) fn translate_stream(
    response: reqwest::Response,
    translator: Box<dyn ChatStream>,
    idle: Duration,
    provider: &'static str,
) -> PieceStream {
    struct State<B> {
        body: B,
        parser: sse::Parser,
        translator: Box<dyn ChatStream>,
        /// Pieces translated and not yet handed out.
        ready: std::collections::VecDeque<Piece>,
        over: bool,
    }
    let state = State {
        body: Box::pin(response.bytes_stream()),
        parser: sse::Parser::default(),
        translator,
        ready: Default::default(),
        over: false,
    };
    Box::pin(futures_util::stream::unfold(
        state,
        move |mut s| async move {
            loop {
                if let Some(piece) = s.ready.pop_front() {
                    return Some((piece, s));
                }
                if s.over {
                    return None;
                }
                let chunks = match next_bytes(&mut s.body, idle, provider).await {
                    Some(Ok(bytes)) => s
                        .parser
                        .push(&bytes)
                        .iter()
                        .try_fold(Vec::new(), |mut out, e| {
                            let event = SseEvent {
                                event: e.event.as_deref(),
                                data: &e.data,
                            };
                            out.extend(s.translator.feed(event)?);
                            Ok(out)
                        })
                        .map_err(|e| translate_error(provider, e)),
                    Some(Err(e)) => Err(e),
                    None => {
                        s.over = true;
                        let end = s.translator.finish();
                        end.map_err(|e| translate_error(provider, e))
                    }
                };
                match chunks {
                    Ok(chunks) => {
                        s.ready.extend(chunks.into_iter().map(Piece::Chunk));
                        if s.over {
                            s.ready.push_back(Piece::Done);
                        }
                    }
                    Err(e) => {
                        s.over = true;
                        s.ready.push_back(Piece::Failed(e));
                    }
                }
            }
        },
    ))
}
