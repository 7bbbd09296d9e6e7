//! The OpenAI-compatible HTTP API.
//!
//! - [`types`]: request bodies and their validation into protocol types.
//! - [`response`]: response bodies.
//! - [`sse`]: streaming responses.
//! - [`handlers`]: the endpoints.
//! - [`error`]: every error answer, rendered in one place.

pub mod admin;
pub mod error;
pub mod handlers;
pub mod response;
pub mod sse;
pub mod types;

pub use error::ApiError;
