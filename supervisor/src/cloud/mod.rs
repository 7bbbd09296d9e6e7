//! Cloud models by prefix (`openai:`, `anthropic:`, `google:`), served through
//! the node's OpenAI API.
//!
//! # Layout
//! - [`Cloud`] (here): the dispatcher. It owns the keys, base URLs, the HTTP
//!   client (from [`crate::net::client_builder`], so `--loopback-only`
//!   holds), timeouts, SSE reading and metrics. It answers with an [`Answer`]
//!   or a [`CloudError`]; the API face turns both into HTTP.
//! - [`config`]: [`CloudArgs`] (flags and environment) and the per-provider
//!   [`config::Endpoint`]; keys are redacted from every `Debug`.
//! - [`translate`]: the contract a translated provider implements;
//!   [`anthropic`] (Messages API) and [`google`] (Gemini) implement it.
//! - [`sse`]: the server-sent events parser for providers' streams.
//! - [`error`]: [`CloudError`], with a stable label and status per kind.
//! - `stream`: reading a provider's stream (relayed or translated) into [`Piece`]s.
//! - `meter`: the metrics of one request, by provider.
//!
//! # Two paths
//! `openai:<m>` is passed through: the body goes upstream unchanged but for
//! `model` (rewritten to `<m>`), and the answer comes back unchanged, a
//! stream relayed byte for byte as it arrives. Other prefixes go through their
//! [`Provider`]: the request is translated, the answer (whole, or each SSE
//! event) translated back to OpenAI's shapes.
//!
//! # Streams
//! Once a stream has begun nothing is retried: a cut, an idle timeout or a
//! translator error ends it with [`Piece::Failed`] (the face writes an OpenAI
//! error event and `[DONE]`). Dropping the stream (the client left) drops the
//! upstream connection.

pub mod anthropic;
pub mod config;
pub mod error;
pub mod google;
mod meter;
pub mod sse;
mod stream;
pub mod translate;

use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use futures_util::Stream;
use serde_json::Value;

pub use config::CloudArgs;
use config::Endpoint;
pub use error::CloudError;
use meter::Meter;
use stream::{relay, translate_stream};
use translate::{Provider, TranslateError};

use crate::metrics::Metrics;

/// Longest provider error message passed on, in characters.
const MAX_MESSAGE_CHARS: usize = 300;

/// The translated providers, by prefix.
///
/// The one place translated providers are registered. A prefix without a
/// provider here is not a cloud prefix (its model is looked up locally: 404).
pub fn providers() -> Vec<Box<dyn Provider>> {
    vec![Box::new(anthropic::Anthropic), Box::new(google::Google)]
}

/// The OpenAI endpoint a request came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    Chat,
    Completions,
    Embeddings,
}

impl Api {
    /// The metrics label and the path after OpenAI's base URL.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Api::Chat => "chat",
            Api::Completions => "completions",
            Api::Embeddings => "embeddings",
        }
    }

    fn path(self) -> &'static str {
        match self {
            Api::Chat => "/chat/completions",
            Api::Completions => "/completions",
            Api::Embeddings => "/embeddings",
        }
    }

    fn public_path(self) -> &'static str {
        match self {
            Api::Chat => "/v1/chat/completions",
            Api::Completions => "/v1/completions",
            Api::Embeddings => "/v1/embeddings",
        }
    }
}

/// A cloud answer that has begun well (a 2xx from the provider).
pub enum Answer {
    /// A whole answer as the provider sent it (OpenAI passed through).
    Relayed {
        status: u16,
        content_type: Option<String>,
        body: Bytes,
    },
    /// A whole OpenAI object (translated).
    Whole(Value),
    /// A streamed answer (`text/event-stream`).
    Stream(PieceStream),
}

/// The pieces of a streamed answer.
pub type PieceStream = Pin<Box<dyn Stream<Item = Piece> + Send>>;

/// One piece of a streamed answer, for the face to write.
#[derive(Debug)]
pub enum Piece {
    /// Bytes already framed as SSE (passed through).
    Raw(Bytes),
    /// An OpenAI `chat.completion.chunk`, to frame as `data: {json}`.
    Chunk(Value),
    /// The end: `data: [DONE]`.
    Done,
    /// The stream failed: an error event, then `[DONE]`; nothing follows.
    Failed(CloudError),
}

/// The model a request names, resolved to a provider.
#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    provider: &'static str,
    /// The model after the prefix.
    model: String,
}

impl Route {
    /// The provider's name (`openai`, `anthropic`, `google`).
    pub fn provider(&self) -> &'static str {
        self.provider
    }
}

/// The cloud dispatcher (one per node, shared by the HTTP threads).
pub struct Cloud {
    args: CloudArgs,
    client: reqwest::Client,
    providers: Vec<Box<dyn Provider>>,
    metrics: Metrics,
}

impl Cloud {
    /// A dispatcher with the registered [`providers`].
    ///
    /// # Errors
    /// When the HTTP client cannot be built (no TLS backend).
    pub fn new(args: CloudArgs, metrics: Metrics) -> Result<Self, reqwest::Error> {
        Self::with_providers(args, metrics, providers())
    }

    /// A dispatcher with these translated providers (tests bring their own).
    ///
    /// # Errors
    /// When the HTTP client cannot be built (no TLS backend).
    pub fn with_providers(
        args: CloudArgs,
        metrics: Metrics,
        providers: Vec<Box<dyn Provider>>,
    ) -> Result<Self, reqwest::Error> {
        // No overall timeout: a long stream is fine as long as it keeps coming.
        let client = crate::net::client_builder()
            .connect_timeout(args.timeout())
            .build()?;
        Ok(Self {
            args,
            client,
            providers,
            metrics,
        })
    }

    /// The cloud models to list in `/v1/models`.
    pub fn listed(&self) -> &[String] {
        &self.args.cloud_models
    }

    /// Where `model` goes, when it names a cloud prefix this node serves.
    pub fn route(&self, model: &str) -> Option<Route> {
        let (prefix, rest) = model.split_once(':')?;
        let provider = match prefix {
            "openai" => "openai",
            // A provider without an endpoint in `CloudArgs` cannot be called.
            _ => self
                .provider(prefix)
                .filter(|p| self.args.endpoint(p.name()).is_some())?
                .name(),
        };
        Some(Route {
            provider,
            model: rest.to_owned(),
        })
    }

    fn provider(&self, name: &str) -> Option<&dyn Provider> {
        self.providers
            .iter()
            .find(|p| p.name() == name)
            .map(|p| p.as_ref())
    }

    fn timeout(&self) -> Duration {
        self.args.timeout()
    }

    /// Serves one request (`body` as the client sent it) for `route`.
    ///
    /// # Errors
    /// Every [`CloudError`] that happens before an answer begins.
    pub async fn serve(&self, api: Api, route: Route, body: Value) -> Result<Answer, CloudError> {
        let meter = Meter::new(&self.metrics, route.provider, api);
        let result = match route.provider {
            "openai" => self.pass_through(api, &route.model, body, &meter).await,
            name => match (api, self.provider(name)) {
                (Api::Chat, Some(p)) => self.translated(p, &route.model, body).await,
                (Api::Embeddings, Some(p)) => match p.embeddings_request(&body, &route.model) {
                    Some(call) => self.embedded(p, &route.model, call, body).await,
                    None => Err(CloudError::Unsupported {
                        provider: route.provider,
                        endpoint: api.public_path(),
                    }),
                },
                _ => Err(CloudError::Unsupported {
                    provider: route.provider,
                    endpoint: api.public_path(),
                }),
            },
        };
        match result {
            Ok(Answer::Stream(pieces)) => Ok(Answer::Stream(meter.watch(pieces))),
            Ok(answer) => {
                if let Answer::Whole(v) = &answer {
                    meter.usage(v);
                }
                meter.end("ok");
                Ok(answer)
            }
            Err(e) => {
                tracing::warn!(provider = route.provider, error = %e, "cloud request failed");
                meter.end(e.label());
                Err(e)
            }
        }
    }

    /// `openai:`: the body upstream with `model` rewritten, the answer back unchanged.
    async fn pass_through(
        &self,
        api: Api,
        model: &str,
        mut body: Value,
        meter: &Meter,
    ) -> Result<Answer, CloudError> {
        let endpoint = self.endpoint("openai");
        body["model"] = Value::String(model.to_owned());
        let stream = body["stream"] == Value::Bool(true);
        let url = format!("{}{}", endpoint.base_url, api.path());
        let response = self.post(&endpoint, &url, &body, |status, text| {
            openai_message(text).unwrap_or_else(|| format!("HTTP {status}: {text}"))
        });
        let response = response.await?;
        if stream {
            return Ok(Answer::Stream(relay(
                response,
                self.timeout(),
                endpoint.provider,
                meter.clone(),
            )));
        }
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = self.read_body(response, endpoint.provider).await?;
        if let Ok(v) = serde_json::from_slice::<Value>(&body) {
            meter.usage(&v);
        }
        Ok(Answer::Relayed {
            status,
            content_type,
            body,
        })
    }

    /// `anthropic:`, `google:`: translated both ways by `provider`.
    async fn translated(
        &self,
        provider: &dyn Provider,
        model: &str,
        body: Value,
    ) -> Result<Answer, CloudError> {
        let endpoint = self.endpoint(provider.name());
        let stream = body["stream"] == Value::Bool(true);
        let include_usage = body["stream_options"]["include_usage"] == Value::Bool(true);
        let asked = format!("{}:{model}", provider.name());
        let call = provider
            .chat_request(&body, model, stream)
            .map_err(|e| translate_error(provider.name(), e))?;
        let url = format!("{}{}", endpoint.base_url, call.path);
        let response = self
            .post(&endpoint, &url, &call.body, |status, text| {
                provider.error_message(status, text)
            })
            .await?;
        if stream {
            let translator = provider.chat_stream(&asked, include_usage);
            return Ok(Answer::Stream(translate_stream(
                response,
                translator,
                self.timeout(),
                endpoint.provider,
            )));
        }
        let bytes = self.read_body(response, endpoint.provider).await?;
        let upstream: Value =
            serde_json::from_slice(&bytes).map_err(|_| CloudError::BadAnswer {
                provider: endpoint.provider,
                message: "the answer is not JSON".into(),
            })?;
        let answer = provider
            .chat_response(upstream, &asked)
            .map_err(|e| translate_error(endpoint.provider, e))?;
        Ok(Answer::Whole(answer))
    }

    /// Embeddings of a translated provider: `call` (already translated from
    /// `body`) upstream, the answer back in OpenAI's shape.
    async fn embedded(
        &self,
        provider: &dyn Provider,
        model: &str,
        call: Result<translate::UpstreamRequest, translate::TranslateError>,
        body: Value,
    ) -> Result<Answer, CloudError> {
        let endpoint = self.endpoint(provider.name());
        let call = call.map_err(|e| translate_error(provider.name(), e))?;
        let url = format!("{}{}", endpoint.base_url, call.path);
        let response = self
            .post(&endpoint, &url, &call.body, |status, text| {
                provider.error_message(status, text)
            })
            .await?;
        let bytes = self.read_body(response, endpoint.provider).await?;
        let upstream: Value =
            serde_json::from_slice(&bytes).map_err(|_| CloudError::BadAnswer {
                provider: endpoint.provider,
                message: "the answer is not JSON".into(),
            })?;
        let asked = format!("{}:{model}", provider.name());
        let answer = provider
            .embeddings_response(upstream, &body, &asked)
            .map_err(|e| translate_error(endpoint.provider, e))?;
        Ok(Answer::Whole(answer))
    }

    fn endpoint(&self, provider: &str) -> Endpoint {
        self.args
            .endpoint(provider)
            .expect("routes name known providers only")
    }

    /// POSTs `body` with the provider's credentials; a non-2xx answer becomes
    /// [`CloudError::Upstream`] with the message `describe` reads from it.
    async fn post(
        &self,
        endpoint: &Endpoint,
        url: &str,
        body: &Value,
        describe: impl FnOnce(u16, &str) -> String,
    ) -> Result<reqwest::Response, CloudError> {
        let provider = endpoint.provider;
        let headers = endpoint.auth_headers().ok_or(CloudError::MissingKey {
            provider,
            var: endpoint.key_var,
        })?;
        let send = self.client.post(url).headers(headers).json(body).send();
        let response = tokio::time::timeout(self.timeout(), send)
            .await
            .map_err(|_| self.timed_out(provider))?
            .map_err(|e| {
                // `describe` names the URL and cause; never the headers.
                tracing::warn!(provider, "cloud call failed: {}", crate::net::describe(&e));
                CloudError::Unreachable { provider }
            })?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let text = self.read_body(response, provider).await.unwrap_or_default();
        let text = String::from_utf8_lossy(&text);
        let message = endpoint.scrub(&describe(status.as_u16(), text.trim()));
        Err(CloudError::Upstream {
            provider,
            status: status.as_u16(),
            message: message.chars().take(MAX_MESSAGE_CHARS).collect(),
            retry_after,
        })
    }

    async fn read_body(
        &self,
        response: reqwest::Response,
        provider: &'static str,
    ) -> Result<Bytes, CloudError> {
        tokio::time::timeout(self.timeout(), response.bytes())
            .await
            .map_err(|_| self.timed_out(provider))?
            .map_err(|_| CloudError::BadAnswer {
                provider,
                message: "the answer was cut".into(),
            })
    }

    fn timed_out(&self, provider: &'static str) -> CloudError {
        CloudError::Timeout {
            provider,
            secs: self.timeout().as_secs(),
        }
    }
}

/// OpenAI's `{"error": {"message"}}`, when the text has that shape.
fn openai_message(text: &str) -> Option<String> {
    let v: Value = serde_json::from_str(text).ok()?;
    v["error"]["message"].as_str().map(str::to_owned)
}

pub(crate) fn translate_error(provider: &'static str, e: TranslateError) -> CloudError {
    match e {
        TranslateError::BadRequest { message, param } => CloudError::BadRequest { message, param },
        TranslateError::Upstream(message) => CloudError::BadAnswer {
            provider,
            message: message.chars().take(MAX_MESSAGE_CHARS).collect(),
        },
    }
}

#[cfg(test)]
mod tests;
