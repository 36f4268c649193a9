//! One log line per request: method, path, status, faces, milliseconds, and for the routes
//! that run the pipeline where its time went (`crate::stage_times`), in the text and as
//! key-values (journal fields under systemd: ROUTE, METHOD, PATH, HTTP_STATUS, FACES,
//! DURATION_MS, QUEUE_MS, DECODE_MS, DETECT_MS, EMBED_MS; see `service`). Never a key: keys
//! travel in the body or a header, and only the path (no query string) is logged. Never a
//! userid: routes with parameters are logged by their pattern
//! (`/v1/gallery/users/{userid}/samples`), not with the name in them.

use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;

use crate::stage_times::{millis, StageTimes};

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
    let pattern = res.request().match_pattern();
    let matched = pattern.is_some();
    let path = pattern.unwrap_or(raw_path);
    let route = if matched {
        route_name(&path)
    } else {
        "unmatched"
    };
    let faces = res.response().extensions().get::<FaceCount>().map(|f| f.0);
    let times = res.response().extensions().get::<StageTimes>().copied();
    let status = res.status().as_u16();
    let ms = start.elapsed().as_millis() as u64;
    let mut line = format!(
        "{method} {path} {status} faces={} {ms}ms",
        faces.map_or_else(|| "-".to_owned(), |n| n.to_string())
    );
    let (method, path) = (method.as_str(), path.as_str());
    match (faces, times) {
        (Some(faces), Some(t)) => {
            let [queue_ms, decode_ms, detect_ms, embed_ms] =
                [t.queue, t.decode, t.detect, t.embed].map(millis);
            line += &format!(
                " queue={queue_ms}ms decode={decode_ms}ms detect={detect_ms}ms embed={embed_ms}ms"
            );
            log::info!(
                route, method, path, http_status = status, faces, duration_ms = ms, queue_ms,
                decode_ms, detect_ms, embed_ms; "{line}"
            )
        }
        (Some(faces), None) => log::info!(
            route, method, path, http_status = status, faces, duration_ms = ms; "{line}"
        ),
        (None, _) => {
            log::info!(route, method, path, http_status = status, duration_ms = ms; "{line}")
        }
    }
    Ok(res)
}

/// A short name for a route pattern, for filtering the journal (`ROUTE=recognize`):
/// DeepStack's face routes by their last word (`/v1/vision/face` is `detect`), the others by
/// their pattern without `/v1/` or `/` (the page is `page`).
fn route_name(pattern: &str) -> &str {
    match pattern {
        "/v1/vision/face" | "/v1/vision/face/" => "detect",
        "/" => "page",
        p if p.starts_with("/v1/vision/face/") => &p["/v1/vision/face/".len()..],
        p if p.starts_with("/v1/") => &p["/v1/".len()..],
        p => p.strip_prefix('/').unwrap_or(p),
    }
}

#[cfg(test)]
mod tests {
    use super::route_name;

    #[test]
    fn route_names() {
        for (pattern, name) in [
            ("/v1/vision/face", "detect"),
            ("/v1/vision/face/recognize", "recognize"),
            ("/v1/vision/face/register", "register"),
            (
                "/v1/gallery/users/{userid}/samples",
                "gallery/users/{userid}/samples",
            ),
            ("/v1/status", "status"),
            ("/", "page"),
            ("/openapi.json", "openapi.json"),
        ] {
            assert_eq!(route_name(pattern), name, "{pattern}");
        }
    }
}
