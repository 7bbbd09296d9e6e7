//! The app the API's unit tests drive (test builds only).

use crate::models::Models;

/// The node's route table over `models`, with the middlewares its handlers
/// rely on (errors in each API's shape, request ids), wrapped as `lib.rs`
/// wraps them. Must run inside an actix `System`.
pub async fn app(
    models: Models,
) -> impl actix_web::dev::Service<
    actix_http::Request,
    Response = actix_web::dev::ServiceResponse<impl actix_web::body::MessageBody>,
    Error = actix_web::Error,
> {
    use actix_web::middleware::from_fn;
    actix_web::test::init_service(
        actix_web::App::new()
            .app_data(super::AppState::new(models).into_data())
            .wrap(from_fn(super::shape::middleware))
            .wrap(from_fn(super::request_id::middleware))
            .configure(super::configure),
    )
    .await
}
