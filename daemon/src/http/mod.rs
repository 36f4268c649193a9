//! The HTTP API: DeepStack's face routes plus backup, restore and status, our gallery API
//! and the web page, on actix-web.
//!
//! Modules: `form` (reading bodies), `auth` (keys and the face switch), `faces` (face
//! routes), `jobs` (their work on the inference pool), `admin` (backup, restore, status),
//! `gallery` (the gallery API), `reembed` (the background re-embedding), `page` (the web
//! page and the OpenAPI file), `error` (every error answer), `logging` (the per-request log
//! line).

mod admin;
mod auth;
mod error;
mod faces;
mod form;
mod gallery;
mod jobs;
mod logging;
mod page;
mod reembed;

use std::sync::Arc;
use std::time::Instant;

use actix_web::{middleware, web, App, HttpServer};

pub use auth::Access;
pub use error::ApiError;
pub use form::{read_body, BodyLimits, Form, FormLimits};
pub use jobs::{UploadLimits, AMBIGUOUS_AREA_RATIO};
pub use page::{OPENAPI_JSON, PAGE_HTML};

use crate::gallery::Gallery;
use crate::inference::InferencePool;
use crate::recent_recorder::RecentRecorder;

/// Deadline for a request's head (request line and headers) to arrive.
pub const REQUEST_HEAD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
/// How long an idle keep-alive connection stays open.
pub const KEEP_ALIVE: std::time::Duration = std::time::Duration::from_secs(5);

/// At a stop, how long the workers get to start on connections accepted just before it.
const ACCEPTED_GRACE: std::time::Duration = std::time::Duration::from_millis(200);

/// What every handler shares.
pub struct AppState {
    /// Keys and the face switch.
    pub access: Access,
    /// The inference workers (and, through them, the pipeline).
    pub pool: InferencePool,
    /// The gallery (the face routes use it through `FaceStore`; the gallery API needs the
    /// rest of it).
    pub gallery: Arc<Gallery>,
    /// Limits applied to uploads.
    pub limits: UploadLimits,
    /// Where recognize hands the faces it saw; `None` with RECENT_FACES_HOURS=0.
    pub recent: Option<Arc<RecentRecorder>>,
    /// Most open HTTP connections (MAX_CONNECTIONS).
    pub max_connections: usize,
    /// When the server started (status page).
    pub started: Instant,
}

/// Registers every route.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/v1/vision/face", web::post().to(faces::detect))
        .route("/v1/vision/face/", web::post().to(faces::detect))
        .route(
            "/v1/vision/face/recognize",
            web::post().to(faces::recognize),
        )
        .route("/v1/vision/face/register", web::post().to(faces::register))
        .route("/v1/vision/face/match", web::post().to(faces::match_faces))
        .route("/v1/vision/face/list", web::post().to(faces::list))
        .route("/v1/vision/face/delete", web::post().to(faces::delete))
        .route("/v1/backup", web::post().to(admin::backup))
        .service(
            web::resource("/v1/restore")
                .app_data(form::MaxUploadBytes(admin::MAX_RESTORE_BYTES))
                .route(web::post().to(admin::restore))
                .default_service(web::to(not_found)),
        )
        .route("/v1/status", web::get().to(admin::status))
        .route("/v1/gallery/users", web::get().to(gallery::users))
        .route(
            "/v1/gallery/users/{userid}/samples",
            web::get().to(gallery::samples),
        )
        .route(
            "/v1/gallery/users/{userid}/rename",
            web::post().to(gallery::rename),
        )
        .route(
            "/v1/gallery/users/{userid}",
            web::delete().to(gallery::delete_user),
        )
        .route(
            "/v1/gallery/samples/{id}/crop.jpg",
            web::get().to(gallery::crop),
        )
        .route(
            "/v1/gallery/samples/{id}",
            web::delete().to(gallery::delete_sample),
        )
        .route("/v1/gallery/recent", web::get().to(gallery::recent))
        .route(
            "/v1/gallery/recent",
            web::delete().to(gallery::delete_all_recent),
        )
        .route(
            "/v1/gallery/recent/{id}/crop.jpg",
            web::get().to(gallery::recent_crop),
        )
        .route(
            "/v1/gallery/recent/{id}",
            web::delete().to(gallery::delete_recent),
        )
        .route(
            "/v1/gallery/recent/{id}/name",
            web::post().to(gallery::name_recent_face),
        )
        .route(
            "/v1/gallery/recent/{id}/not",
            web::post().to(gallery::reject_recent_face),
        )
        .route("/v1/gallery/strangers", web::get().to(gallery::strangers))
        .route(
            "/v1/gallery/strangers/{group}/name",
            web::post().to(gallery::name_stranger),
        )
        .route(
            "/v1/gallery/strangers/{group}",
            web::delete().to(gallery::delete_stranger),
        )
        .route("/v1/gallery/reembed", web::post().to(reembed::start))
        .route("/openapi.json", web::get().to(page::openapi))
        .route("/", web::get().to(page::index))
        .route("/app.js", web::get().to(page::script))
        .route("/app.css", web::get().to(page::style))
        .route("/favicon.ico", web::get().to(page::favicon))
        .default_service(web::to(not_found));
}

/// Any other path or method: a JSON 404 like every other answer.
async fn not_found() -> Result<actix_web::HttpResponse, ApiError> {
    Err(ApiError::NotFound)
}

/// Where the server takes its connections from.
pub enum Listen {
    /// A socket bound by the server itself (`deepstackd --port`, outside systemd).
    Bind(std::net::SocketAddr),
    /// A listening socket bound by someone else: systemd's deepstack.socket, which keeps
    /// queueing connections while the service restarts.
    Socket(std::net::TcpListener),
}

impl std::fmt::Display for Listen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Listen::Bind(addr) => write!(f, "{addr}"),
            Listen::Socket(_) => f.write_str("the socket from deepstack.socket"),
        }
    }
}

/// Serves the API on `listen` until SIGINT or SIGTERM.
///
/// `on_ready` runs with the address served once the socket is bound (or taken over), before
/// the first request is accepted; `on_stop` runs as soon as a stop signal arrives, before
/// actix stops accepting connections and lets the requests in flight finish (within
/// `drain`).
pub async fn serve(
    listen: Listen,
    state: AppState,
    drain: std::time::Duration,
    on_ready: impl FnOnce(std::net::SocketAddr),
    on_stop: impl FnOnce() + 'static,
) -> std::io::Result<()> {
    use actix_web::rt::signal::unix::{signal, SignalKind};
    let limits = FormLimits {
        max_upload_bytes: state.limits.max_upload_bytes,
        max_files: state.limits.max_files,
        max_field_bytes: state.limits.max_field_bytes,
    };
    let body = BodyLimits {
        budget: state.limits.budget.clone(),
        timeout: state.limits.body_timeout,
    };
    // actix counts connections per worker: MAX_CONNECTIONS shared among them.
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
    let per_worker = state.max_connections.div_ceil(workers).max(1);
    let state = web::Data::new(state);
    let server = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .app_data(limits)
            .app_data(body.clone())
            .wrap(middleware::from_fn(logging::log_request))
            .configure(routes)
    })
    .workers(workers)
    .max_connections(per_worker)
    // The request head must arrive within this (actix answers 408 past it); an idle
    // keep-alive connection is closed after KEEP_ALIVE.
    .client_request_timeout(REQUEST_HEAD_TIMEOUT)
    .keep_alive(KEEP_ALIVE)
    .disable_signals()
    .shutdown_timeout(drain.as_secs().max(1));
    let server = match listen {
        Listen::Bind(addr) => server.bind(addr)?,
        Listen::Socket(listener) => server.listen(listener)?,
    };
    let addr = server.addrs()[0];
    let server = server.run();
    let (mut terminate, mut interrupt) = (
        signal(SignalKind::terminate())?,
        signal(SignalKind::interrupt())?,
    );
    let handle = server.handle();
    actix_web::rt::spawn(async move {
        tokio::select! {
            _ = terminate.recv() => log::info!("SIGTERM: finishing the requests in flight"),
            _ = interrupt.recv() => log::info!("SIGINT: finishing the requests in flight"),
        }
        on_stop();
        // Stop taking connections first, and let the workers read the ones already taken
        // before the graceful stop begins: a worker told to stop does not serve connections
        // still in its queue (actix-net #354), and a client would see its connection closed.
        // New connections wait in the socket's queue (systemd's, across a restart).
        handle.pause().await;
        actix_web::rt::time::sleep(ACCEPTED_GRACE).await;
        handle.stop(true).await;
    });
    on_ready(addr);
    server.await
}
