//! Optional OpenTelemetry trace export over OTLP (HTTP/protobuf).
//!
//! Off unless a collector is named: `--otlp-endpoint` (`LLM_NODE_OTLP_ENDPOINT`),
//! or the standard `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` /
//! `OTEL_EXPORTER_OTLP_ENDPOINT` ([`resolve`]). Off, [`layer`] returns `None`:
//! no exporter, no thread, no extra span, and the logs are what they were.
//!
//! On, [`layer`] gives the `tracing-opentelemetry` layer that [`crate::logging`]
//! installs beside the log outputs, with its own filter (`llm_node` spans at
//! `info`), so the log level does not decide what is exported. Spans go to an
//! `opentelemetry_sdk` batch processor: a bounded queue (`OTEL_BSP_MAX_QUEUE_SIZE`,
//! default 2048; spans beyond it are dropped, never waited for) drained by the
//! SDK's own thread every `OTEL_BSP_SCHEDULE_DELAY` ms (default 5000), which
//! posts protobuf to `{endpoint}/v1/traces` with a blocking reqwest client
//! ([`Blocking`]). A request never waits on the collector. A failing export is
//! logged once, at `warn`, and again only after an export worked
//! ([`Reporting`]). [`shutdown`] flushes what is queued; `run` calls it after
//! the drain.
//!
//! What is exported (docs/operations.md, "Tracing"):
//! - `request` ([`join`], [`finish`]): one server span per HTTP request, the
//!   child of the caller's `traceparent` when it sent one (so it joins the
//!   caller's trace), with `http.request.method`, `http.route`, `url.path`,
//!   `http.response.status_code`, `client.address`, `llm_node.request_id`,
//!   and when a model served it `gen_ai.request.model`,
//!   `gen_ai.usage.input_tokens`, `gen_ai.usage.output_tokens`,
//!   `llm_node.ttft_ms`.
//! - its children, where the code has those points ([`enabled`] gates them):
//!   `model_acquire` (admission and a cold load), then per generation
//!   `queue_wait` (until a worker slot takes it) and `generation` (to its
//!   end, with its token counts).
//!
//! Workers export nothing: they carry the request's id (its trace id when the
//! request came with a `traceparent`) in their log lines (protocol field `trace`).
//!
//! The service name is `OTEL_SERVICE_NAME` when set, else `llm-node`;
//! `OTEL_RESOURCE_ATTRIBUTES` is honoured by the SDK.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use opentelemetry::trace::{
    SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState, TracerProvider,
};
use opentelemetry::KeyValue;
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData, SpanExporter};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

use crate::request_id::Usage;

/// The OTLP flag.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct OtelArgs {
    /// Export trace spans to this OTLP/HTTP collector (base URL such as
    /// `http://127.0.0.1:4318`; `/v1/traces` is appended). Unset, the
    /// standard `OTEL_EXPORTER_OTLP_ENDPOINT` is used when set; with neither,
    /// nothing is exported.
    #[arg(long, env = "LLM_NODE_OTLP_ENDPOINT", value_name = "URL")]
    pub otlp_endpoint: Option<String>,
}

/// Why the exporter could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum OtelError {
    #[error("--otlp-endpoint {0:?}: not an http(s) URL")]
    BadEndpoint(String),
    #[error("OTLP exporter: {0}")]
    Exporter(String),
}

/// Where spans go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// The full URL of the traces endpoint (from `--otlp-endpoint`).
    Url(String),
    /// The `OTEL_EXPORTER_OTLP_*` variables decide (read by the exporter).
    FromEnv,
}

/// Where to export, from the flag and the environment (`env`); `None`: nowhere.
///
/// # Errors
/// [`OtelError::BadEndpoint`] when the flag is not an http(s) URL.
pub fn resolve(
    args: &OtelArgs,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Option<Endpoint>, OtelError> {
    let set = |name: &str| env(name).is_some_and(|v| !v.trim().is_empty());
    if env("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true")) {
        return Ok(None);
    }
    match args.otlp_endpoint.as_deref().map(str::trim) {
        Some(flag) if !flag.is_empty() => {
            let url = url::Url::parse(flag)
                .ok()
                .filter(|u| matches!(u.scheme(), "http" | "https") && u.has_host())
                .ok_or_else(|| OtelError::BadEndpoint(flag.to_string()))?;
            let base = url.as_str().trim_end_matches('/');
            Ok(Some(Endpoint::Url(if base.ends_with("/v1/traces") {
                base.to_string()
            } else {
                format!("{base}/v1/traces")
            })))
        }
        _ if set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") || set("OTEL_EXPORTER_OTLP_ENDPOINT") => {
            Ok(Some(Endpoint::FromEnv))
        }
        _ => Ok(None),
    }
}

static ENABLED: AtomicBool = AtomicBool::new(false);
static PROVIDER: OnceLock<SdkTracerProvider> = OnceLock::new();

/// Whether spans are exported; sites of child spans skip them when not.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// The export layer when an endpoint is configured (see the module doc);
/// `None` otherwise. Call once, outside any async runtime.
///
/// # Errors
/// [`OtelError`] for a bad endpoint or an exporter that cannot be built.
pub fn layer<S>(args: &OtelArgs) -> Result<Option<Box<dyn Layer<S> + Send + Sync>>, OtelError>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a> + Send + Sync,
{
    let Some(endpoint) = resolve(args, |name| std::env::var(name).ok())? else {
        return Ok(None);
    };
    let mut builder = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
        .with_http_client(Blocking::default());
    if let Endpoint::Url(url) = &endpoint {
        builder = builder.with_endpoint(url.clone());
    }
    let exporter = builder
        .build()
        .map_err(|e| OtelError::Exporter(e.to_string()))?;
    let service = std::env::var("OTEL_SERVICE_NAME")
        .ok()
        .filter(|s| !s.trim().is_empty())
        .unwrap_or_else(|| "llm-node".to_string());
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(service.clone())
        .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
        .build();
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(Reporting::new(exporter))
        .with_resource(resource)
        .build();
    let tracer = provider.tracer("llm-node");
    let _ = PROVIDER.set(provider);
    ENABLED.store(true, Ordering::Relaxed);
    let only_ours = Targets::new().with_target("llm_node", tracing::Level::INFO);
    Ok(Some(
        tracing_opentelemetry::layer()
            .with_tracer(tracer)
            .with_filter(only_ours)
            .boxed(),
    ))
}

/// Exports what is queued and stops the exporter (during shutdown, after the
/// drain). Bounded by the SDK's shutdown timeout; does nothing when off.
pub fn shutdown() {
    if let Some(provider) = PROVIDER.get() {
        ENABLED.store(false, Ordering::Relaxed);
        if let Err(e) = provider.shutdown() {
            tracing::warn!("OTLP shutdown: {e}");
        }
    }
}

/// A caller's W3C trace context, as read from its `traceparent`.
#[derive(Debug, Clone, Copy)]
pub struct Parent<'a> {
    pub trace_id: &'a str,
    pub span_id: &'a str,
    pub flags: &'a str,
}

/// Makes `span` (a request's) the child of `parent` when there is one, and
/// starts it; its trace id and span id (hex), or `None` when nothing exports.
pub fn join(span: &tracing::Span, parent: Option<Parent<'_>>) -> Option<(String, String)> {
    if !enabled() {
        return None;
    }
    if let Some(p) = parent {
        let context = SpanContext::new(
            TraceId::from_hex(p.trace_id).ok()?,
            SpanId::from_hex(p.span_id).ok()?,
            TraceFlags::new(u8::from_str_radix(p.flags, 16).unwrap_or(1)),
            true,
            TraceState::default(),
        );
        let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(context));
    }
    let context = span.context();
    let own = context.span().span_context().clone();
    own.is_valid()
        .then(|| (own.trace_id().to_string(), own.span_id().to_string()))
}

/// What a request span says besides its id (see the module doc).
#[derive(Debug, Clone, Copy)]
pub struct RequestAttributes<'a> {
    pub method: &'a str,
    /// The matched route pattern (`/v1/chat/completions`, `/api/show`).
    pub route: Option<&'a str>,
    pub path: &'a str,
    pub client: &'a str,
    pub request_id: &'a str,
}

/// Sets the attributes known when the request arrives.
pub fn start(span: &tracing::Span, a: RequestAttributes<'_>) {
    if !enabled() {
        return;
    }
    span.set_attribute("http.request.method", a.method.to_string());
    span.set_attribute("url.path", a.path.to_string());
    if let Some(route) = a.route {
        span.set_attribute("http.route", route.to_string());
    }
    if !a.client.is_empty() {
        span.set_attribute("client.address", a.client.to_string());
    }
    span.set_attribute("llm_node.request_id", a.request_id.to_string());
}

/// Sets the attributes known when the response is done: status and usage.
pub fn finish(span: &tracing::Span, status: u16, usage: &Usage) {
    if !enabled() {
        return;
    }
    span.set_attribute("http.response.status_code", i64::from(status));
    if status >= 500 {
        span.set_status(opentelemetry::trace::Status::error(format!(
            "HTTP {status}"
        )));
    }
    if let Some(model) = &usage.model {
        span.set_attribute("gen_ai.request.model", model.clone());
        let count = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        span.set_attribute("gen_ai.usage.input_tokens", count(usage.prompt_tokens));
        span.set_attribute("gen_ai.usage.output_tokens", count(usage.completion_tokens));
    }
    if let Some(ttft) = usage.ttft {
        span.set_attribute("llm_node.ttft_ms", ttft.as_secs_f64() * 1000.0);
    }
}

/// An exporter that logs a failing export once, not once per batch: the first
/// failure at `warn`, then nothing until an export works again (`info`).
#[derive(Debug)]
struct Reporting<E> {
    inner: E,
    failing: AtomicBool,
}

impl<E> Reporting<E> {
    fn new(inner: E) -> Self {
        Reporting {
            inner,
            failing: AtomicBool::new(false),
        }
    }

    /// Logs `result` if it changes the state (working or failing).
    fn report(&self, result: &OTelSdkResult, spans: usize) {
        match result {
            Err(e) if !self.failing.swap(true, Ordering::Relaxed) => tracing::warn!(
                spans,
                "OTLP export failed (further failures are not logged until one works): {e}"
            ),
            Ok(()) if self.failing.swap(false, Ordering::Relaxed) => {
                tracing::info!("OTLP export works again")
            }
            _ => {}
        }
    }
}

impl<E: SpanExporter> SpanExporter for Reporting<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let spans = batch.len();
        let result = self.inner.export(batch).await;
        self.report(&result, spans);
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &opentelemetry_sdk::Resource) {
        self.inner.set_resource(resource);
    }
}

/// The exporter's HTTP client: reqwest's blocking client (the SDK's batch
/// thread runs no async runtime), built on first use so that it follows
/// `--loopback-only` ([`crate::net`]), which is set after logging starts.
/// Timeout: `OTEL_EXPORTER_OTLP_TIMEOUT` ms, default 10 s.
#[derive(Debug, Default)]
struct Blocking {
    client: OnceLock<Result<reqwest::blocking::Client, String>>,
}

impl Blocking {
    fn client(&self) -> Result<&reqwest::blocking::Client, String> {
        self.client
            .get_or_init(|| {
                let timeout = std::env::var("OTEL_EXPORTER_OTLP_TIMEOUT")
                    .ok()
                    .and_then(|ms| ms.trim().parse().ok())
                    .map_or(Duration::from_secs(10), Duration::from_millis);
                let mut builder = reqwest::blocking::Client::builder().timeout(timeout);
                if crate::net::loopback_only() {
                    builder = builder
                        .no_proxy()
                        .dns_resolver(Arc::new(crate::net::LoopbackOnly));
                }
                builder.build().map_err(|e| crate::net::describe(&e))
            })
            .as_ref()
            .map_err(Clone::clone)
    }
}

#[async_trait::async_trait]
impl opentelemetry_http::HttpClient for Blocking {
    async fn send_bytes(
        &self,
        request: http::Request<bytes::Bytes>,
    ) -> Result<http::Response<bytes::Bytes>, opentelemetry_http::HttpError> {
        let client = self.client()?;
        let (parts, body) = request.into_parts();
        let mut out = client
            .request(parts.method, parts.uri.to_string())
            .body(body.to_vec());
        for (name, value) in &parts.headers {
            out = out.header(name, value);
        }
        let response = out.send().map_err(|e| crate::net::describe(&e))?;
        let mut answer = http::Response::builder().status(response.status());
        for (name, value) in response.headers() {
            answer = answer.header(name, value);
        }
        let body = response.bytes().map_err(|e| crate::net::describe(&e))?;
        Ok(answer.body(body)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn the_flag_wins_then_the_standard_variables_and_nothing_exports_without_either() {
        let flag = |s: &str| OtelArgs {
            otlp_endpoint: Some(s.to_string()),
        };
        let url = |s: &str| Ok(Some(Endpoint::Url(s.to_string())));
        let from_env = [("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318")];
        let traces_env = [("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://c:4318/x")];
        let disabled = [
            ("OTEL_SDK_DISABLED", "true"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
        ];
        type Row<'a> = (
            OtelArgs,
            &'a [(&'a str, &'a str)],
            Result<Option<Endpoint>, ()>,
        );
        let table: Vec<Row> = vec![
            (OtelArgs::default(), &[], Ok(None)),
            (
                OtelArgs::default(),
                &[("OTEL_EXPORTER_OTLP_ENDPOINT", " ")],
                Ok(None),
            ),
            (OtelArgs::default(), &from_env, Ok(Some(Endpoint::FromEnv))),
            (
                OtelArgs::default(),
                &traces_env,
                Ok(Some(Endpoint::FromEnv)),
            ),
            (OtelArgs::default(), &disabled, Ok(None)),
            (
                flag("http://127.0.0.1:4318"),
                &[],
                url("http://127.0.0.1:4318/v1/traces"),
            ),
            (
                flag("http://127.0.0.1:4318/"),
                &from_env,
                url("http://127.0.0.1:4318/v1/traces"),
            ),
            (
                flag("https://otel.example/base"),
                &[],
                url("https://otel.example/base/v1/traces"),
            ),
            (
                flag("http://h:1/v1/traces"),
                &[],
                url("http://h:1/v1/traces"),
            ),
            (flag(""), &[], Ok(None)),
            (flag("127.0.0.1:4318"), &[], Err(())),
            (flag("grpc://h:4317"), &[], Err(())),
            (flag("file:///tmp/x"), &[], Err(())),
        ];
        for (args, vars, want) in table {
            let got = resolve(&args, env(vars)).map_err(|_| ());
            assert_eq!(got, want, "{args:?} {vars:?}");
        }
    }

    #[test]
    fn without_an_endpoint_no_layer_is_built_and_spans_are_left_alone() {
        std::env::remove_var("OTEL_EXPORTER_OTLP_ENDPOINT");
        std::env::remove_var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT");
        let layer = layer::<tracing_subscriber::Registry>(&OtelArgs::default()).unwrap();
        assert!(layer.is_none());
        assert!(!enabled());
        let span = tracing::info_span!("request");
        assert_eq!(join(&span, None), None);
    }

    #[derive(Debug)]
    struct Flaky(std::sync::Mutex<Vec<bool>>);

    impl SpanExporter for Flaky {
        async fn export(&self, _: Vec<SpanData>) -> OTelSdkResult {
            let ok = self.0.lock().unwrap().remove(0);
            ok.then_some(())
                .ok_or(opentelemetry_sdk::error::OTelSdkError::InternalFailure(
                    "refused".into(),
                ))
        }
    }

    #[test]
    fn a_failing_exporter_is_reported_on_each_change_not_on_each_batch() {
        let exporter = Reporting::new(Flaky(std::sync::Mutex::new(vec![
            true, false, false, false, true, false,
        ])));
        let mut failing = Vec::new();
        for _ in 0..6 {
            let _ = futures_util::FutureExt::now_or_never(exporter.export(Vec::new()));
            failing.push(exporter.failing.load(Ordering::Relaxed));
        }
        assert_eq!(failing, [false, true, true, true, false, true]);
    }
}
