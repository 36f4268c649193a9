//! deepstackd: wiring only. Configuration -> logger -> gallery -> models -> inference pool ->
//! HTTP server.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use deepstackd::budget::MemoryBudget;
use deepstackd::config::{self, Command, Config};
use deepstackd::gallery::Gallery;
use deepstackd::http::{self, Access, AppState, Listen, UploadLimits};
use deepstackd::inference::InferencePool;
use deepstackd::memory;
use deepstackd::recent_recorder::RecentRecorder;
use deepstackd::service;
use deepstackd::vision::{ModelFiles, Pipeline};

/// Exit code for a configuration the daemon refuses (bad value, bad flag).
const EXIT_CONFIG: u8 = 2;

/// Shortest time one inference job may run before the watchdog calls its worker stuck.
const MIN_STALL: Duration = Duration::from_secs(120);

/// Longest wait for requests in flight at a stop; the unit's TimeoutStopSec= is above it.
const MAX_DRAIN: Duration = Duration::from_secs(60);

/// Longest wait, after the HTTP server stopped, for the last users of the gallery to let go.
const CLOSE_WAIT: Duration = Duration::from_secs(5);

fn main() -> ExitCode {
    memory::tune_allocator();
    let config = match config::from_process() {
        Ok(Command::Run(config)) => config,
        Ok(Command::Help) => {
            print!("{}", config::help());
            return ExitCode::SUCCESS;
        }
        Ok(Command::Version) => {
            println!("deepstackd {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("deepstackd: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    service::init_logger();
    match run(*config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// Gives the heap back once the inference threads have been idle a while (see `memory`).
fn spawn_idle_trimmer(pool: InferencePool) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("memory-trim".into())
        .spawn(move || {
            let mut trimmed = false;
            loop {
                std::thread::sleep(memory::IDLE_TRIM_AFTER / 4);
                match pool.idle_for() {
                    Some(idle) if idle >= memory::IDLE_TRIM_AFTER => {
                        if !trimmed {
                            memory::trim();
                            trimmed = true;
                        }
                    }
                    _ => trimmed = false,
                }
            }
        })
        .map(drop)
}

fn run(config: Config) -> Result<(), String> {
    for warning in &config.warnings {
        log::warn!("{warning}");
    }
    log::info!("deepstackd {}: {config:?}", env!("CARGO_PKG_VERSION"));
    if !config.vision_face {
        log::warn!("face endpoints are off: set VISION-FACE=True to enable them");
    }
    // Under systemd, deepstack.socket owns the port; otherwise the daemon binds it.
    let listen = match service::inherited_listener()? {
        Some(listener) => Listen::Socket(listener),
        None => Listen::Bind((config.bind, config.port).into()),
    };
    let gallery = Gallery::open_configured(config.gallery_url.as_deref(), &config.data_dir)
        .map_err(|e| match config.gallery_url {
            Some(_) => format!("cannot open the shared gallery (GALLERY_URL): {e}"),
            None => format!(
                "cannot open the gallery in {}: {e}",
                config.data_dir.display()
            ),
        })?;

    let started = Instant::now();
    let models = match &config.models_dir {
        Some(dir) => ModelFiles::with_override_dir(dir).map_err(|e| format!("MODELS_DIR: {e}"))?,
        None => ModelFiles::embedded(),
    };
    let pipeline =
        Pipeline::load(models, config.mode).map_err(|e| format!("cannot load the models: {e}"))?;
    log::info!(
        "models loaded in {} ms (mode {}, detector {} from {}, recognizer {} from {})",
        started.elapsed().as_millis(),
        config.mode.name(),
        pipeline.models().detector.sha256,
        pipeline.models().detector.origin,
        pipeline.models().recognizer.sha256,
        pipeline.models().recognizer.origin,
    );

    memory::release_after_load(&deepstackd::vision::models::embedded_bytes());

    let pool = InferencePool::start(
        Arc::new(pipeline),
        config.threadcount,
        config.max_queue,
        config.timeout,
    )
    .map_err(|e| format!("cannot start the inference threads: {e}"))?;
    spawn_idle_trimmer(pool.clone())
        .map_err(|e| format!("cannot start the memory trimmer thread: {e}"))?;
    let gallery = Arc::new(gallery);
    let recent = match config.recent_faces {
        Some(bounds) => {
            let model = pool.pipeline().models().recognizer.sha256.clone();
            let recorder = RecentRecorder::start(Arc::downgrade(&gallery), bounds, model)
                .map_err(|e| format!("cannot start the recent faces thread: {e}"))?;
            log::info!(
                "recent faces: kept {} h, at most {}",
                bounds.keep_for.as_secs() / 3600,
                bounds.max_faces
            );
            Some(Arc::new(recorder))
        }
        None => None,
    };
    let state = AppState {
        access: Access {
            api_key: config.api_key.clone(),
            admin_key: config.admin_key.clone(),
            faces_enabled: config.vision_face,
        },
        pool,
        gallery,
        recent,
        limits: UploadLimits {
            budget: MemoryBudget::new(config.memory_budget_bytes),
            body_timeout: config.body_timeout,
            max_pixels: config.max_pixels,
            max_upload_bytes: config.max_upload_bytes,
            max_userid_bytes: config.max_userid_bytes,
            max_files: config.max_files,
            max_field_bytes: config.max_field_bytes,
            min_face_quality: config.min_face_quality,
        },
        max_connections: config.max_connections,
        started,
    };
    // The watchdog is fed only while every inference worker runs and none is stuck: a job
    // may outlive its request's deadline, but not by this much.
    let stall_after = state.pool.timeout().saturating_mul(3).max(MIN_STALL);
    let (pool, weak_gallery) = (state.pool.clone(), Arc::downgrade(&state.gallery));
    let health = move || {
        pool.health(stall_after).map_err(|e| e.to_string())?;
        let gallery = weak_gallery.upgrade().ok_or("stopping")?;
        let (users, samples) = gallery.stats();
        let store = match gallery.health() {
            health if health.reachable => "",
            _ => "; shared gallery unreachable, writes refused",
        };
        Ok(format!("serving: {users} users, {samples} samples{store}"))
    };
    let gallery = Arc::clone(&state.gallery);
    let (inherited, listening_on) = (matches!(listen, Listen::Socket(_)), listen.to_string());
    let on_ready = |addr: std::net::SocketAddr| {
        if inherited {
            log::info!("listening on {addr} ({listening_on})");
            if addr.port() != config.port {
                log::warn!(
                    "PORT is {} but deepstack.socket listens on {addr}: `deepstack start` \
                     writes both; the socket's port is the one served",
                    config.port
                );
            }
        } else {
            log::info!("listening on {addr}");
        }
        // Models loaded, port bound: systemd may route traffic to us now.
        let status = format!("serving on port {}", addr.port());
        service::notify(&[("READY", "1"), ("STATUS", &status)]);
        if service::notifications_wanted() {
            if let Err(e) = service::spawn_keepalive(health) {
                log::error!("cannot start the watchdog thread: {e}");
            }
        }
    };
    let on_stop = || service::notify(&[("STOPPING", "1")]);
    // Requests in flight get their whole deadline to finish.
    let drain = state.pool.timeout().min(MAX_DRAIN);
    let served =
        actix_web::rt::System::new().block_on(http::serve(listen, state, drain, on_ready, on_stop));
    close_gallery(gallery);
    served.map_err(|e| format!("HTTP server on {listening_on}: {e}"))
}

/// Closes the database once the HTTP workers (whose threads end on their own after the
/// server's future) and any job still running have let go of it: SQLite then checkpoints and
/// removes the WAL, and the data dir holds one self-contained file. If something still holds
/// it after `CLOSE_WAIT`, the process exits anyway; the WAL is replayed at the next start.
fn close_gallery(mut gallery: Arc<Gallery>) {
    let deadline = Instant::now() + CLOSE_WAIT;
    loop {
        match Arc::try_unwrap(gallery) {
            Ok(gallery) => {
                drop(gallery);
                log::info!("gallery closed");
                return;
            }
            Err(shared) if Instant::now() < deadline => {
                gallery = shared;
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(_) => {
                log::warn!(
                    "gallery still in use {} s after the stop; exiting with its WAL file kept",
                    CLOSE_WAIT.as_secs()
                );
                return;
            }
        }
    }
}
