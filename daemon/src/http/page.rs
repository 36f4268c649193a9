//! The web page at `/` (gallery management and a "try it" box) and the OpenAPI description
//! of the gallery API at `/openapi.json`, all embedded in the binary: plain HTML, CSS and
//! JavaScript from `http/web/`, no build step, no framework.
//!
//! The page holds no key: it asks for the API key when a route answers 401 and keeps it in
//! `sessionStorage` (gone with the tab). A Content-Security-Policy allows only the page's own
//! scripts and styles, so a userid can never run as code.

use actix_web::http::header;
use actix_web::HttpResponse;

/// The page.
pub const PAGE_HTML: &str = include_str!("web/index.html");
/// Its script.
pub const PAGE_JS: &str = include_str!("web/app.js");
/// Its style sheet.
pub const PAGE_CSS: &str = include_str!("web/app.css");
/// OpenAPI 3 description of the gallery API (and where DeepStack's routes are documented).
pub const OPENAPI_JSON: &str = include_str!("web/openapi.json");

/// Only our own files; crops are shown from `blob:` URLs made from authenticated fetches.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
                   img-src 'self' blob:; connect-src 'self'; base-uri 'none'; \
                   form-action 'none'; frame-ancestors 'none'";

fn asset(content_type: &'static str, body: &'static str) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(content_type)
        .insert_header((header::CONTENT_SECURITY_POLICY, CSP))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .body(body)
}

/// GET /
pub async fn index() -> HttpResponse {
    asset("text/html; charset=utf-8", PAGE_HTML)
}

/// GET /app.js
pub async fn script() -> HttpResponse {
    asset("text/javascript; charset=utf-8", PAGE_JS)
}

/// GET /app.css
pub async fn style() -> HttpResponse {
    asset("text/css; charset=utf-8", PAGE_CSS)
}

/// GET /favicon.ico: none, said without an error (browsers ask for it on every page).
pub async fn favicon() -> HttpResponse {
    HttpResponse::NoContent().finish()
}

/// GET /openapi.json
pub async fn openapi() -> HttpResponse {
    asset("application/json", OPENAPI_JSON)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_openapi_file_is_json_and_names_every_gallery_route() {
        let doc: serde_json::Value = serde_json::from_str(OPENAPI_JSON).unwrap();
        let paths = doc["paths"].as_object().unwrap();
        for path in [
            "/v1/gallery/users",
            "/v1/gallery/users/{userid}/samples",
            "/v1/gallery/users/{userid}/rename",
            "/v1/gallery/users/{userid}",
            "/v1/gallery/samples/{id}/crop.jpg",
            "/v1/gallery/samples/{id}",
            "/v1/gallery/reembed",
            "/v1/status",
        ] {
            assert!(paths.contains_key(path), "{path} missing from openapi.json");
        }
    }

    #[test]
    fn the_page_loads_only_its_own_files() {
        assert!(PAGE_HTML.contains(r#"src="app.js""#));
        assert!(PAGE_HTML.contains(r#"href="app.css""#));
        assert!(
            !PAGE_HTML.contains("<script>"),
            "inline scripts break the CSP"
        );
    }
}
