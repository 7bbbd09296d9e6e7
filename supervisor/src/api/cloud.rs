//! Cloud models on the OpenAI endpoints: a body whose `model` has a cloud
//! prefix goes to [`crate::cloud::Cloud`], and its [`Answer`] becomes the HTTP
//! answer here (errors through the one renderer, [`ApiError::Cloud`]).

use std::convert::Infallible;

use actix_web::http::StatusCode;
use actix_web::HttpResponse;
use bytes::Bytes;
use futures_util::StreamExt;
use serde_json::{json, Value};

use super::error::ApiError;
use super::sse::{frame, DONE};
use super::state::AppState;
use crate::cloud::{Answer, Api, Piece, Route};

/// The cloud route of `body`'s model, with the body; the body back when the
/// model is not a cloud one (or the node serves no cloud).
///
/// # Errors
/// The body itself, for the local path.
pub fn route(state: &AppState, body: Value) -> Result<(Route, Value), Value> {
    let route = match (&state.cloud, body["model"].as_str()) {
        (Some(cloud), Some(model)) => cloud.route(model),
        _ => None,
    };
    match route {
        Some(route) => Ok((route, body)),
        None => Err(body),
    }
}

/// Serves a routed request.
///
/// # Errors
/// [`ApiError::ShuttingDown`] while draining; [`ApiError::Cloud`] for every
/// failure before the answer begins.
pub async fn answer(
    state: &AppState,
    api: Api,
    route: Route,
    body: Value,
) -> Result<HttpResponse, ApiError> {
    if state.is_draining() {
        return Err(ApiError::ShuttingDown);
    }
    let cloud = state.cloud.as_ref().ok_or(ApiError::Internal)?;
    match cloud.serve(api, route, body).await? {
        Answer::Relayed {
            status,
            content_type,
            body,
        } => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
            let mut response = HttpResponse::build(status);
            if let Some(content_type) = content_type {
                response.content_type(content_type);
            }
            Ok(response.body(body))
        }
        Answer::Whole(value) => Ok(HttpResponse::Ok().json(value)),
        Answer::Stream(pieces) => Ok(HttpResponse::Ok()
            .content_type("text/event-stream")
            .insert_header(("Cache-Control", "no-cache"))
            .insert_header(("X-Accel-Buffering", "no"))
            .streaming(pieces.map(|piece| Ok::<_, Infallible>(bytes_of(piece))))),
    }
}

/// The bytes of one streamed piece: SSE frames as the node writes its own.
fn bytes_of(piece: Piece) -> Bytes {
    match piece {
        Piece::Raw(bytes) => bytes,
        Piece::Chunk(value) => Bytes::from(frame(&value)),
        Piece::Done => Bytes::from_static(DONE),
        Piece::Failed(e) => {
            let error = ApiError::Cloud(e);
            tracing::warn!(label = error.label(), "cloud stream failed: {error}");
            let mut out = frame(&error.body());
            out.extend_from_slice(DONE);
            Bytes::from(out)
        }
    }
}

/// The `/v1/models` entries of the configured cloud models.
pub fn listed(state: &AppState) -> Vec<Value> {
    let Some(cloud) = &state.cloud else {
        return Vec::new();
    };
    cloud
        .listed()
        .iter()
        .map(|id| {
            let owner = id.split_once(':').map_or("cloud", |(p, _)| p);
            json!({"id": id, "object": "model", "created": state.created, "owned_by": owner})
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cloud::CloudError;

    #[test]
    fn pieces_are_framed_as_the_node_frames_its_own_streams() {
        let chunk = json!({"object": "chat.completion.chunk", "choices": []});
        assert_eq!(
            bytes_of(Piece::Chunk(chunk.clone())),
            format!("data: {chunk}\n\n").as_bytes()
        );
        assert_eq!(bytes_of(Piece::Done), DONE);
        assert_eq!(
            bytes_of(Piece::Raw(Bytes::from_static(b"x"))),
            "x".as_bytes()
        );
        let failed = bytes_of(Piece::Failed(CloudError::Timeout {
            provider: "google",
            secs: 5,
        }));
        let text = std::str::from_utf8(&failed).unwrap();
        let (error, done) = text.split_once("\n\n").unwrap();
        let error: Value = serde_json::from_str(error.strip_prefix("data: ").unwrap()).unwrap();
        assert_eq!(error["error"]["code"], "timeout");
        assert_eq!(error["error"]["type"], "server_error");
        assert_eq!(done, "data: [DONE]\n\n");
    }
}
