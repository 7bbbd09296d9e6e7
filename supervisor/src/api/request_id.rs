//! Gives every HTTP request an id and a trace, so one request is one trace,
//! and writes its access log line.
//!
//! The id is the client's `x-request-id` header when it sends a sane one (1 to
//! 128 visible ASCII characters), else the trace id of its W3C `traceparent`,
//! else a fresh one (32 hex digits, a valid trace id); the response echoes it in
//! `x-request-id`. The trace id is the `traceparent`'s when the client sent a
//! valid one, else (OTLP export on) the exported span's, else the id when it is
//! 32 hex digits, else a fresh one; the response carries
//! `traceparent: 00-{trace id}-{span id}-{flags}`, this node's span as the
//! client's child (the exported span's id, or a new one). With OTLP export on,
//! the `request` span is exported as the caller's child with the HTTP and
//! usage attributes of [`crate::otel`]. The handler runs inside a `request` span
//! carrying `id` and `trace_id` and inside [`crate::request_id::scope`], from which
//! `WorkerClient` copies the id into the `trace` field of `Generate` and
//! `Embed`, so the worker's log lines name the request too. (A streamed body
//! is polled after the handler returns, outside the span; the command that
//! carries the id is sent before.)
//!
//! Once the response body is sent (or dropped: the client left), one event
//! with target `access` is logged at `info`: method, path, status, model,
//! prompt and completion tokens, time to first token, duration, client
//! address, request and trace id. In `--log-format json` it is one JSON object.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use actix_web::body::{BodySize, BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::web::Bytes;
use tracing::Instrument;

use crate::request_id::UsageSlot;

/// The header read and echoed.
pub const HEADER: &str = "x-request-id";
/// W3C Trace Context's header.
pub const TRACEPARENT: &str = "traceparent";

/// A parsed `traceparent` (version `00`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceParent {
    /// 32 lowercase hex digits, not all zero.
    pub trace_id: String,
    /// 16 lowercase hex digits, not all zero.
    pub parent_id: String,
    /// Two hex digits (`01`: sampled).
    pub flags: String,
}

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len
        && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        && s.bytes().any(|b| b != b'0')
}

/// `value` as a W3C `traceparent`, or `None` when it is not a valid one.
/// Versions above `00` are read as `00` (the spec's forward compatibility); `ff` is invalid.
pub fn parse_traceparent(value: &str) -> Option<TraceParent> {
    let mut parts = value.trim().split('-');
    let (version, trace_id, parent_id, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let version_ok = version.len() == 2
        && version
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        && version != "ff";
    let flags_ok = flags.len() == 2
        && flags
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase());
    // Version 00 has exactly four fields.
    let fields_ok = version != "00" || parts.next().is_none();
    (version_ok && flags_ok && fields_ok && is_hex(trace_id, 32) && is_hex(parent_id, 16)).then(
        || TraceParent {
            trace_id: trace_id.to_string(),
            parent_id: parent_id.to_string(),
            flags: flags.to_string(),
        },
    )
}

/// A new span id: 16 hex digits, not all zero.
fn span_id() -> String {
    loop {
        let id = format!("{:016x}", rand::random::<u64>());
        if is_hex(&id, 16) {
            return id;
        }
    }
}

/// The client's id when it is usable as one.
fn given(req: &ServiceRequest) -> Option<String> {
    let value = req.headers().get(HEADER)?.to_str().ok()?.trim();
    let sane =
        !value.is_empty() && value.len() <= 128 && value.bytes().all(|b| b.is_ascii_graphic());
    sane.then(|| value.to_string())
}

/// The client's `traceparent`, when it sent a valid one.
fn traceparent(req: &ServiceRequest) -> Option<TraceParent> {
    req.headers()
        .get(TRACEPARENT)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_traceparent)
}

/// The request id, trace id and flags of a request (see the module doc).
/// `exported` is the trace id of the exported span ([`crate::otel::join`]):
/// without a `traceparent` it is the trace id, so logs and export agree.
fn ids(
    given: Option<String>,
    parent: Option<TraceParent>,
    exported: Option<String>,
) -> (String, String, String) {
    let id = given
        .or_else(|| parent.as_ref().map(|p| p.trace_id.clone()))
        .or_else(|| exported.clone())
        .unwrap_or_else(crate::request_id::generate);
    let (trace_id, flags) = match (parent, exported) {
        (Some(p), _) => (p.trace_id, p.flags),
        (None, Some(exported)) => (exported, "01".into()),
        (None, None) if is_hex(&id, 32) => (id.clone(), "01".into()),
        (None, None) => (crate::request_id::generate(), "01".into()),
    };
    (id, trace_id, flags)
}

/// The `request` span, joined to the caller's trace when spans are exported;
/// the request id, trace id and flags, and the span id for the response's
/// `traceparent`.
fn request_span(req: &ServiceRequest) -> (tracing::Span, (String, String, String), String) {
    use tracing::field::Empty;
    let span = tracing::info_span!(
        "request",
        id = Empty,
        trace_id = Empty,
        method = Empty,
        path = Empty,
        otel.name = Empty,
        otel.kind = Empty
    );
    let parent = traceparent(req);
    let route = req.match_pattern();
    if crate::otel::enabled() {
        let name = format!(
            "{} {}",
            req.method(),
            route.as_deref().unwrap_or(req.path())
        );
        span.record("otel.name", name).record("otel.kind", "server");
    }
    let joined = crate::otel::join(
        &span,
        parent.as_ref().map(|p| crate::otel::Parent {
            trace_id: &p.trace_id,
            span_id: &p.parent_id,
            flags: &p.flags,
        }),
    );
    let (exported, span_id) = joined.map_or((None, None), |(t, s)| (Some(t), Some(s)));
    let (id, trace_id, flags) = ids(given(req), parent, exported);
    span.record("id", id.as_str())
        .record("trace_id", trace_id.as_str())
        .record("method", req.method().as_str())
        .record("path", req.path());
    crate::otel::start(
        &span,
        crate::otel::RequestAttributes {
            method: req.method().as_str(),
            route: route.as_deref(),
            path: req.path(),
            client: &client(req),
            request_id: &id,
        },
    );
    (
        span,
        (id, trace_id, flags),
        span_id.unwrap_or_else(self::span_id),
    )
}

/// The client's address.
fn client(req: &ServiceRequest) -> String {
    req.peer_addr()
        .map(|a| a.ip().to_string())
        .unwrap_or_default()
}

/// The middleware (`App::wrap(from_fn(request_id::middleware))`).
///
/// # Errors
/// Whatever the wrapped service returns.
pub async fn middleware(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<AccessLogged>, actix_web::Error> {
    let started = Instant::now();
    let (span, (id, trace_id, flags), span_id) = request_span(&req);
    let mut entry = Entry {
        method: req.method().to_string(),
        path: req.path().to_string(),
        client: client(&req),
        id: id.clone(),
        trace_id: trace_id.clone(),
        status: 0,
        usage: UsageSlot::default(),
        started,
        span: span.clone(),
    };
    let usage = entry.usage.clone();
    let mut response = crate::request_id::scope(id.clone(), usage, next.call(req))
        .instrument(span)
        .await?;
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&id) {
        headers.insert(HeaderName::from_static(HEADER), value);
    }
    if let Ok(value) = HeaderValue::from_str(&format!("00-{trace_id}-{span_id}-{flags}")) {
        headers.insert(HeaderName::from_static(TRACEPARENT), value);
    }
    entry.status = response.status().as_u16();
    Ok(response.map_body(|_, body| AccessLogged {
        body: body.boxed(),
        entry: Some(entry),
    }))
}

/// What the access log line says about one request.
struct Entry {
    method: String,
    path: String,
    client: String,
    id: String,
    trace_id: String,
    status: u16,
    usage: UsageSlot,
    started: Instant,
    /// The `request` span, kept open until the body is done, so an exported
    /// span lasts as long as the response.
    span: tracing::Span,
}

impl Entry {
    fn log(self) {
        let usage = self.usage.lock().unwrap_or_else(|e| e.into_inner()).clone();
        crate::otel::finish(&self.span, self.status, &usage);
        let ms = |d: std::time::Duration| (d.as_secs_f64() * 1000.0 * 10.0).round() / 10.0;
        tracing::info!(
            target: "access",
            method = %self.method,
            path = %self.path,
            status = self.status,
            model = usage.model.as_deref().unwrap_or(""),
            prompt_tokens = usage.prompt_tokens,
            completion_tokens = usage.completion_tokens,
            ttft_ms = usage.ttft.map(ms),
            duration_ms = ms(self.started.elapsed()),
            client = %self.client,
            request_id = %self.id,
            trace_id = %self.trace_id,
            "request"
        );
    }
}

/// A response body that writes the access log line when it is done (sent
/// whole, or dropped because the client left).
pub struct AccessLogged {
    body: BoxBody,
    entry: Option<Entry>,
}

impl MessageBody for AccessLogged {
    type Error = Box<dyn std::error::Error>;

    fn size(&self) -> BodySize {
        self.body.size()
    }

    fn poll_next(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, Self::Error>>> {
        Pin::new(&mut self.body).poll_next(cx)
    }
}

impl Drop for AccessLogged {
    fn drop(&mut self) {
        if let Some(entry) = self.entry.take() {
            entry.log();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparents_are_read_as_the_w3c_spec_says() {
        let good = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let parsed = parse_traceparent(good).unwrap();
        assert_eq!(parsed.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(parsed.parent_id, "00f067aa0ba902b7");
        assert_eq!(parsed.flags, "01");
        let table = [
            (
                "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00-extra",
                true,
            ),
            (
                "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                false,
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",
                false,
            ),
            (
                "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
                false,
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
                false,
            ),
            (
                "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
                false,
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
                false,
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
                false,
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
                false,
            ),
            ("", false),
        ];
        for (value, valid) in table {
            assert_eq!(parse_traceparent(value).is_some(), valid, "{value}");
        }
    }

    #[test]
    fn the_trace_id_is_the_callers_then_the_exported_spans_then_the_id() {
        let parent = parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00");
        let caller = "4bf92f3577b34da6a3ce929d0e0e4736";
        let exported = "0af7651916cd43dd8448eb211c80319c";
        let given = || Some("req-1".to_string());
        let some = |s: &str| Some(s.to_string());
        let table = [
            (
                given(),
                parent.clone(),
                some(exported),
                ("req-1", caller, "00"),
            ),
            (None, parent.clone(), some(exported), (caller, caller, "00")),
            (given(), None, some(exported), ("req-1", exported, "01")),
            (None, None, some(exported), (exported, exported, "01")),
        ];
        for (given, parent, exported, (id, trace, flags)) in table {
            let got = ids(given, parent, exported);
            assert_eq!(
                (got.0.as_str(), got.1.as_str(), got.2.as_str()),
                (id, trace, flags)
            );
        }
        // Nothing exported: a fresh id is the trace id; a given one is not.
        let (id, trace, _) = ids(None, None, None);
        assert_eq!((id.len(), &id), (32, &trace));
        let (id, trace, _) = ids(given(), None, None);
        assert_ne!(id, trace);
        assert!(is_hex(&trace, 32));
    }

    #[test]
    fn span_ids_are_16_hex_digits() {
        let a = span_id();
        assert!(is_hex(&a, 16), "{a}");
        assert_ne!(a, span_id());
    }
}
