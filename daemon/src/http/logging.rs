//! One log line per request: method, path, status, faces, milliseconds. Never a key: keys
//! travel in the body or a header, and only the path (no query string) is logged. Never a
//! userid: routes with parameters are logged by their pattern
//! (`/v1/gallery/users/{userid}/samples`), not with the name in them.

use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;

/// How many faces a response reports; handlers attach it to the response's extensions.
#[derive(Debug, Clone, Copy)]
pub struct FaceCount(pub usize);

/// The logging middleware (`middleware::from_fn(log_request)`).
pub async fn log_request(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let start = Instant::now();
    let method = req.method().clone();
    let raw_path = req.path().to_owned();
    let res = next.call(req).await?;
    let path = res.request().match_pattern().unwrap_or(raw_path);
    let faces = res
        .response()
        .extensions()
        .get::<FaceCount>()
        .map_or_else(|| "-".to_owned(), |f| f.0.to_string());
    log::info!(
        "{method} {path} {} faces={faces} {}ms",
        res.status().as_u16(),
        start.elapsed().as_millis()
    );
    Ok(res)
}
