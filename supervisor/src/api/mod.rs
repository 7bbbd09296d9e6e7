//! Every HTTP face of the node: the route table, each handler, and the one
//! place errors become HTTP bodies. Nothing below `api/` knows about HTTP
//! answers; subsystems return their own errors and [`error`] renders them.
//!
//! - [`routes`]: the whole route table ([`configure`]).
//! - [`handlers`]: the OpenAI endpoints (chat, completions, embeddings, models).
//! - [`cloud`]: cloud models by prefix on those endpoints (`openai:`, …).
//! - [`admin`]: `/admin`, `/metrics`, readiness and startup.
//! - [`log_level`]: `/admin/log-level`, the log filter at run time.
//! - [`ollama`]: the store's Ollama routes (`/api/pull`, `/api/tags`, `/api/delete`).
//! - [`ollama_chat`]: Ollama's `/api/chat` and `/api/generate` ([`ollama_job`] reads
//!   their bodies, [`ndjson`] writes their answers).
//! - [`ollama_models`]: `/api/show`, `/api/ps`, `/api/copy`, `/api/version`, `GET /`.
//! - [`ollama_embed`]: `/api/embed`, `/api/embeddings`.
//! - [`tokens`]: `/tokenize`, `/detokenize`; [`infill`]: `/infill`; [`token_vectors`]:
//!   `/embeddings`, per-token vectors (llama-server's shapes).
//! - [`embed_input`]: the forms of an embeddings `input` (text, token ids).
//! - [`rerank`]: `/v1/rerank`, `/rerank`, `/v1/reranking`, `/reranking` (llama-server's routes).
//! - [`ollama_info`]: `details`, `model_info`, capabilities, … from a GGUF header (pure).
//! - [`router`]: llm-router's `/pull` and `/api/logs`.
//! - [`access`]: who may call which route (API keys, admin key, loopback, router), one middleware.
//! - [`cors`]: CORS for browsers (`--cors-origin`).
//! - [`request_id`]: the request id middleware (`x-request-id`, `traceparent`, span, scope, access log).
//! - [`shape`]: errors on Ollama's routes in Ollama's shape (middleware).
//! - `test_app` (test builds): the app the unit tests drive, middlewares included.
//! - [`rejections`]: every error answer counted by label and status (middleware).
//! - [`types`]: request bodies and their validation into protocol types.
//! - [`body_timeout`]: a request body that stops arriving is cut off (408).
//! - [`disconnect`]: noticing a client that left while its handler waits.
//! - [`chat`]: tools, `tool_choice`, `response_format`: constraints and parser options.
//! - [`output`]: generated text → OpenAI message, deltas, tool calls, logprobs.
//! - [`response`]: response bodies.
//! - [`aliases`]: each model's aliases listed in `/v1/models` and `/api/tags`.
//! - [`sse`]: streaming responses.
//! - [`state`]: [`AppState`] and [`authorize`](state::authorize) (the access middleware's mark).
//! - [`error`]: every error answer, rendered in one place, with a stable label each.

pub mod access;
pub mod admin;
pub mod aliases;
pub mod body_timeout;
pub mod chat;
pub mod cloud;
pub mod cors;
pub mod disconnect;
pub mod embed_input;
pub mod error;
pub mod handlers;
pub mod infill;
pub mod log_level;
pub mod model_defaults;
pub mod ndjson;
pub mod ollama;
pub mod ollama_chat;
pub mod ollama_embed;
pub mod ollama_info;
pub mod ollama_job;
pub mod ollama_models;
#[cfg(test)]
mod ollama_tests;
pub mod output;
pub mod rejections;
pub mod request_id;
pub mod rerank;
pub mod response;
pub mod router;
pub mod routes;
pub mod shape;
pub mod sse;
pub mod state;
#[cfg(test)]
pub mod test_app;
pub mod token_vectors;
pub mod tokens;
pub mod types;

pub use error::ApiError;
pub use routes::configure;
pub use state::AppState;
