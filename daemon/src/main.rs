//! deepstackd: wiring only. Configuration -> logger -> gallery -> models -> inference pool ->
//! HTTP server.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use deepstackd::config::{self, Command, Config};
use deepstackd::gallery::Gallery;
use deepstackd::http::{self, Access, AppState, UploadLimits};
use deepstackd::inference::InferencePool;
use deepstackd::vision::{ModelFiles, Pipeline};

/// Exit code for a configuration the daemon refuses (bad value, bad flag).
const EXIT_CONFIG: u8 = 2;

fn main() -> ExitCode {
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
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    match run(*config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("{e}");
            ExitCode::FAILURE
        }
    }
}

fn run(config: Config) -> Result<(), String> {
    for warning in &config.warnings {
        log::warn!("{warning}");
    }
    log::info!("deepstackd {}: {config:?}", env!("CARGO_PKG_VERSION"));
    if !config.vision_face {
        log::warn!("face endpoints are off: set VISION-FACE=True to enable them");
    }
    let gallery = Gallery::open(&config.data_dir).map_err(|e| {
        format!(
            "cannot open the gallery in {}: {e}",
            config.data_dir.display()
        )
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

    let pool = InferencePool::start(
        Arc::new(pipeline),
        config.threadcount,
        config.max_queue,
        config.timeout,
    )
    .map_err(|e| format!("cannot start the inference threads: {e}"))?;
    let state = AppState {
        access: Access {
            api_key: config.api_key.clone(),
            admin_key: config.admin_key.clone(),
            faces_enabled: config.vision_face,
        },
        pool,
        gallery: Arc::new(gallery),
        limits: UploadLimits {
            max_pixels: config.max_pixels,
            max_upload_bytes: config.max_upload_bytes,
            max_userid_bytes: config.max_userid_bytes,
            max_files: config.max_files,
            max_field_bytes: config.max_field_bytes,
            min_face_quality: config.min_face_quality,
        },
        started,
    };
    if let Some(interval) = deepstackd::service::watchdog_interval() {
        // Keep-alives at half the interval systemd asked for. They come from a plain thread,
        // so they prove the process is scheduled, not yet that inference works (open work).
        std::thread::Builder::new()
            .name("watchdog".into())
            .spawn(move || loop {
                deepstackd::service::notify("WATCHDOG=1");
                std::thread::sleep(interval / 2);
            })
            .map_err(|e| format!("cannot start the watchdog thread: {e}"))?;
    }
    log::info!("listening on {}:{}", config.bind, config.port);
    actix_web::rt::System::new()
        .block_on(http::serve((config.bind, config.port), state))
        .map_err(|e| format!("HTTP server on {}:{}: {e}", config.bind, config.port))
}
