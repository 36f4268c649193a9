//! POST /v1/gallery/reembed (admin key): new embeddings for every sample from its stored
//! crop with the model loaded now, in the background.
//!
//! The job runs as a task of the HTTP server: it reads crops in batches, embeds each batch
//! as one job on the inference pool (so recognitions queue between batches and keep being
//! answered) and hands the results to the gallery, which stages them in SQLite and swaps them
//! all in at the end (`gallery::reembed`). Progress is in `GET /v1/status` under `reembed`.

use std::time::Duration;

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Serialize;

use super::error::ApiError;
use super::faces::success;
use super::form::Form;
use super::AppState;
use crate::gallery::{ReembedProgress, StoredCrop};
use crate::inference::InferenceError;
use crate::vision::align::CROP_SIZE;
use crate::vision::Pipeline;

/// Crops embedded per inference job: about half a second of work on a Pi 4, so a
/// recognition waits at most that long for a free thread.
const BATCH: usize = 8;
/// Pause before trying a batch again when the inference queue is full or the job timed out.
const RETRY_PAUSE: Duration = Duration::from_millis(250);

#[derive(Serialize)]
struct Started {
    reembed: ReembedProgress,
}

/// Starts the re-embedding; 409 while one runs.
pub async fn start(
    state: web::Data<AppState>,
    req: HttpRequest,
    form: Form,
) -> Result<HttpResponse, ApiError> {
    state.access.gallery_admin_route(&req, &form)?;
    let model = state.pool.pipeline().models().recognizer.sha256.clone();
    let gallery = state.gallery.clone();
    let job_model = model.clone();
    let progress = web::block(move || gallery.reembed_start(&job_model))
        .await
        .map_err(ApiError::internal)??;
    log::info!(
        "gallery: re-embedding {} samples with {model} ({} already staged)",
        progress.total,
        progress.done
    );
    let job_state = state.clone();
    actix_web::rt::spawn(async move {
        if let Err(e) = run(&job_state, &model).await {
            job_state.gallery.reembed_failed(e);
        }
    });
    let mut res = success(Started { reembed: progress }, 0);
    *res.status_mut() = actix_web::http::StatusCode::ACCEPTED;
    Ok(res)
}

async fn run(state: &AppState, model: &str) -> Result<(), String> {
    let mut after = 0;
    loop {
        let gallery = state.gallery.clone();
        let batch = web::block(move || gallery.reembed_next(after, BATCH))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        let Some(last) = batch.last() else {
            break;
        };
        after = last.id;
        let (embedded, failed) = embed_on_pool(state, batch).await?;
        let gallery = state.gallery.clone();
        let model = model.to_owned();
        web::block(move || gallery.reembed_stage(&model, &embedded, failed))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
    }
    let gallery = state.gallery.clone();
    web::block(move || gallery.reembed_finish())
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    Ok(())
}

/// Embeds one batch on the pool, waiting while the pool is busy with requests.
async fn embed_on_pool(
    state: &AppState,
    batch: Vec<StoredCrop>,
) -> Result<(Vec<(i64, Vec<f32>)>, usize), String> {
    loop {
        let job = batch.clone();
        match state.pool.run(move |p| embed_batch(p, &job)).await {
            Ok(result) => return Ok(result),
            // Requests come first: let them through, then try again.
            Err(InferenceError::Busy { .. } | InferenceError::TimedOut) => {
                actix_web::rt::time::sleep(RETRY_PAUSE).await
            }
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// (sample id, new embedding) for every crop that decodes to 112x112, and how many did not.
fn embed_batch(p: &Pipeline, batch: &[StoredCrop]) -> (Vec<(i64, Vec<f32>)>, usize) {
    let mut embedded = Vec::with_capacity(batch.len());
    let mut failed = 0;
    for sample in batch {
        let crop = image::load_from_memory_with_format(&sample.crop, image::ImageFormat::Jpeg)
            .map(|img| img.to_rgb8())
            .ok()
            .filter(|img| img.dimensions() == (CROP_SIZE, CROP_SIZE));
        let embedding = crop.and_then(|crop| p.embed_crops(&[crop]).ok());
        match embedding.and_then(|mut e| e.pop()) {
            Some(e) => embedded.push((sample.id, e.0)),
            None => {
                log::warn!(
                    "gallery: sample {} has an unusable crop; it keeps its embedding",
                    sample.id
                );
                failed += 1;
            }
        }
    }
    (embedded, failed)
}
