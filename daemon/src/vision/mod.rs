//! The vision pipeline, one module per stage, in the order a photo goes through them:
//! [`decode`] -> [`detect`] -> [`align`] -> [`embed`] -> [`compare`].
//!
//! [`Pipeline`] holds the loaded models (one tract plan per detector input shape, SFace) and
//! is shared by every inference worker: tract plans are immutable and safe to run from
//! several threads at once.

pub mod align;
pub mod calibration;
pub mod compare;
pub mod conv_chain;
pub mod conv_kernels;
pub mod conv_ops;
pub mod decode;
pub mod detect;
pub mod embed;
pub mod linear_head;
pub mod models;
pub mod onnx_rewrite;
pub mod quality;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use image::RgbImage;

use crate::stage_times::{self, Stage};

pub use decode::{DecodeError, DecodeLimits, Photo};
pub use detect::{BBox, Face, Mode};
pub use embed::Embedding;
pub use models::ModelFiles;

/// A failure inside the pipeline.
#[derive(Debug, thiserror::Error)]
pub enum VisionError {
    /// The upload is not a usable image.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// A model could not be loaded or run (a bug or a bad model file, never the user's input).
    #[error("inference failed: {0}")]
    Inference(String),
}

impl From<tract_onnx::prelude::TractError> for VisionError {
    fn from(e: tract_onnx::prelude::TractError) -> Self {
        VisionError::Inference(format!("{e:#}"))
    }
}

/// JPEG quality of the stored face crops (samples, recent faces): faithful enough to
/// re-embed with a new model.
pub const CROP_JPEG_QUALITY: u8 = 90;

/// The aligned crop as the JPEG the gallery stores.
pub fn crop_jpeg(crop: &RgbImage) -> Result<Vec<u8>, image::ImageError> {
    let mut out = std::io::Cursor::new(Vec::new());
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, CROP_JPEG_QUALITY)
        .encode_image(crop)?;
    Ok(out.into_inner())
}

/// A face found in a photo, with its aligned crop and embedding.
#[derive(Debug, Clone)]
pub struct EmbeddedFace {
    /// Where the face is.
    pub face: Face,
    /// The 112x112 aligned crop the embedding came from.
    pub crop: RgbImage,
    /// The face's embedding.
    pub embedding: Embedding,
}

/// The loaded models for one speed mode.
pub struct Pipeline {
    detector: detect::Detector,
    embedder: embed::Embedder,
    models: ModelFiles,
    threads: Threads,
    one_face_pool: OnceLock<Arc<rayon::ThreadPool>>,
}

/// How many threads may run the pipeline at once and how many do: a request alone on the
/// machine embeds its faces on the idle ones too. The inference pool sets the first and
/// counts its busy workers in the second.
#[derive(Default)]
struct Threads {
    allowed: AtomicUsize,
    running: AtomicUsize,
}

impl Threads {
    /// Takes up to `wanted` idle threads; they count as running until the guard is dropped
    /// (a panic included).
    fn borrow(&self, wanted: usize) -> Borrowed<'_> {
        let allowed = self.allowed.load(Ordering::SeqCst);
        let mut running = self.running.load(Ordering::SeqCst);
        loop {
            let n = wanted.min(allowed.saturating_sub(running));
            if n == 0 {
                return Borrowed(0, self);
            }
            match self.running.compare_exchange(
                running,
                running + n,
                Ordering::SeqCst,
                Ordering::SeqCst,
            ) {
                Ok(_) => return Borrowed(n, self),
                Err(now) => running = now,
            }
        }
    }

    fn give_back(&self, n: usize) {
        self.running.fetch_sub(n, Ordering::SeqCst);
    }
}

/// Idle threads borrowed by a request (how many, from where) until dropped.
struct Borrowed<'a>(usize, &'a Threads);

impl Drop for Borrowed<'_> {
    fn drop(&mut self) {
        self.1.give_back(self.0);
    }
}

/// A thread counted as running the pipeline until dropped (see [`Pipeline::enter`]).
pub struct Running<'a>(&'a Threads);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.give_back(1);
    }
}

impl Pipeline {
    /// Load the models and build every plan for `mode` (the slow part of start-up).
    ///
    /// The plans hold everything the models need: the file bytes are let go afterwards
    /// (`ModelFile::bytes` is empty on a loaded pipeline; names and checksums stay).
    pub fn load(mut models: ModelFiles, mode: Mode) -> Result<Pipeline, VisionError> {
        let detector = detect::Detector::load(&models.detector.bytes, mode)?;
        let embedder = embed::Embedder::load(&models.recognizer.bytes)?;
        models.detector.bytes = Default::default();
        models.recognizer.bytes = Default::default();
        Ok(Pipeline {
            detector,
            embedder,
            models,
            threads: Threads::default(),
            one_face_pool: OnceLock::new(),
        })
    }

    /// Lets up to `threads` threads run the pipeline at once (THREADCOUNT; 0 until set, which
    /// keeps every request on its own thread).
    ///
    /// The work a request shares with idle threads runs on rayon's global pool, started here
    /// with `threads - 1` threads that stay parked between requests: starting a thread per
    /// detection cost a lone detection 0.7 ms (6.6 against 5.8-6.0 ms at 640x480 on two
    /// cores, `deepstack-bench profile`). The borrowing keeps the pool to the cores the idle
    /// inference threads leave. A share that panics is re-raised on the request's thread,
    /// whose job then fails like any other. The first call sizes the pool for the process
    /// (later pipelines, in tests, share it).
    ///
    /// A second pool, of `threads` threads (the first call's), runs a lone request's one
    /// face (see [`Pipeline::embed`]): that run takes every core, the request's own
    /// included, and a global pool of that size let a spare thread wake beside the shares
    /// above (the 4-face photo took 50-59 ms against 46-50 in five rounds on two cores).
    pub fn allow_threads(&self, threads: usize) {
        self.threads.allowed.store(threads, Ordering::SeqCst);
        if threads > 1 {
            // Err: already started (another pipeline in this process); it serves as it is.
            let _ = rayon::ThreadPoolBuilder::new()
                .num_threads(threads - 1)
                .thread_name(|i| format!("helper-{i}"))
                .build_global();
            if self.one_face_pool.get().is_some() {
                return;
            }
            let one_face = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .thread_name(|i| format!("one-face-{i}"))
                .build();
            match one_face {
                Ok(pool) => {
                    let _ = self.one_face_pool.set(Arc::new(pool));
                }
                Err(e) => log::warn!("no thread pool for a lone face: {e}"),
            }
        }
    }

    /// Counts the calling thread as busy with the pipeline until the guard is dropped.
    pub fn enter(&self) -> Running<'_> {
        self.threads.running.fetch_add(1, Ordering::SeqCst);
        Running(&self.threads)
    }

    /// The model files in use (names, checksums, origin).
    pub fn models(&self) -> &ModelFiles {
        &self.models
    }

    /// The speed mode the detector was built for.
    pub fn mode(&self) -> Mode {
        self.detector.mode()
    }

    /// Decode an upload (stage 1). A large JPEG is decoded at a reduced scale that keeps at
    /// least twice the detector's input size on its longer side: a face the detector can find
    /// keeps about as many pixels as the 112x112 crop needs.
    pub fn decode(&self, bytes: &[u8], limits: DecodeLimits) -> Result<Photo, VisionError> {
        let _timer = stage_times::start(Stage::Decode);
        Ok(decode::decode_photo(bytes, limits, self.keep_long_side())?)
    }

    /// The longer side a reduced-scale decode keeps: twice the detector's input.
    fn keep_long_side(&self) -> u32 {
        2 * self.mode().input_size()
    }

    /// The most memory [`Pipeline::decode`] of `bytes` holds at once (see
    /// [`decode::decode_peak_bytes`]); `None` for what the decode refuses from the header.
    pub fn decode_peak_bytes(&self, bytes: &[u8], limits: DecodeLimits) -> Option<u64> {
        decode::decode_peak_bytes(bytes, limits, self.keep_long_side())
    }

    /// Faces with a YuNet score of at least `min_score`, best first, in the uploaded photo's
    /// pixels (stage 2). The detector's large layers are shared with the idle threads (see
    /// [`Pipeline::allow_threads`]), so that a lone request uses every core.
    pub fn detect(&self, photo: &Photo, min_score: f32) -> Result<Vec<Face>, VisionError> {
        let _timer = stage_times::start(Stage::Detect);
        let scale = photo.scale();
        let borrowed = self.threads.borrow(usize::MAX);
        let faces = conv_chain::with_helpers(borrowed.0, || {
            self.detector.detect(photo.pixels(), min_score)
        })?;
        drop(borrowed);
        Ok(if scale == 1.0 {
            faces
        } else {
            faces.iter().map(|f| f.scaled(scale)).collect()
        })
    }

    /// Align and embed the given faces of `photo`, (stages 3 and 4). With several faces and
    /// idle threads (see [`Pipeline::allow_threads`]), the faces are shared among them; a
    /// lone request's one face has its matrix products shared.
    pub fn embed(&self, photo: &Photo, faces: &[Face]) -> Result<Vec<EmbeddedFace>, VisionError> {
        let _timer = stage_times::start(Stage::Embed);
        let to_pixels = 1.0 / photo.scale();
        let crops: Vec<RgbImage> = faces
            .iter()
            .map(|f| align::align(photo.pixels(), &f.scaled(to_pixels)))
            .collect();
        let embeddings = self.embed_on_idle_threads(&crops)?;
        Ok(faces
            .iter()
            .zip(crops)
            .zip(embeddings)
            .map(|((face, crop), embedding)| EmbeddedFace {
                face: *face,
                crop,
                embedding,
            })
            .collect())
    }

    /// Embed already aligned 112x112 crops (re-embedding stored samples, the OpenCV check),
    /// on the calling thread only.
    pub fn embed_crops(&self, crops: &[RgbImage]) -> Result<Vec<Embedding>, VisionError> {
        Ok(self.embedder.embed(crops)?)
    }

    /// Embeds `crops` in order, in contiguous shares: the calling thread takes the first, the
    /// others go to rayon's pool, one for each idle inference thread borrowed.
    ///
    /// One crop cannot be shared that way. When every other inference thread is idle, its
    /// run goes whole into the one-face pool, with tract's matrix products, packing and
    /// element-wise ops split among the pool's threads (tract-linalg's `multithread-mm`):
    /// SFace 15.5-16.2 -> 9.9-10.6 ms a face on two cores (`deepstack-bench profile --model
    /// sface`). That splitting cannot be held to a number of threads (any idle pool thread
    /// may take a part), hence only for a request that is alone.
    fn embed_on_idle_threads(&self, crops: &[RgbImage]) -> Result<Vec<Embedding>, VisionError> {
        if let ([_], Some(pool)) = (crops, self.one_face_pool.get()) {
            let borrowed = self.threads.borrow(usize::MAX);
            if borrowed.0 > 0 && borrowed.0 + 1 >= self.threads.allowed.load(Ordering::SeqCst) {
                return on_every_thread(pool, || self.embed_crops(crops));
            }
            return self.embed_crops(crops);
        }
        let borrowed = self.threads.borrow(crops.len().saturating_sub(1));
        let helpers = borrowed.0;
        if helpers == 0 {
            return self.embed_crops(crops);
        }
        let (parts, rest) = (helpers + 1, crops.len() % (helpers + 1));
        let mut shares = Vec::with_capacity(parts);
        let mut start = 0;
        for i in 0..parts {
            let len = crops.len() / parts + usize::from(i < rest);
            shares.push(&crops[start..start + len]);
            start += len;
        }
        let mut results: Vec<Option<tract_onnx::prelude::TractResult<Vec<Embedding>>>> =
            shares.iter().map(|_| None).collect();
        let (first, others) = results.split_first_mut().expect("at least two shares");
        rayon::in_place_scope(|scope| {
            for (part, slot) in shares[1..].iter().zip(others) {
                scope.spawn(move |_| *slot = Some(self.embedder.embed(part)));
            }
            *first = Some(self.embedder.embed(shares[0]));
        });
        let mut embeddings = Vec::with_capacity(crops.len());
        for result in results {
            embeddings.extend(result.expect("every share ran")?);
        }
        Ok(embeddings)
    }
}

/// Runs `f` on one of `pool`'s threads with tract's matrix products, packing and
/// element-wise ops split among all of them (tract-linalg's `multithread-mm`).
pub fn on_every_thread<R: Send>(pool: &Arc<rayon::ThreadPool>, f: impl FnOnce() -> R + Send) -> R {
    use tract_linalg::multithread::{multithread_tract_scope, Executor};
    let executor = Executor::MultiThread(Arc::clone(pool));
    pool.install(|| multithread_tract_scope(executor, f))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_threads_are_lent_up_to_the_allowed_count_and_come_back() {
        let threads = Threads::default();
        threads.allowed.store(3, Ordering::SeqCst);
        threads.running.store(1, Ordering::SeqCst);
        {
            let first = threads.borrow(5);
            assert_eq!(first.0, 2);
            assert_eq!(threads.borrow(1).0, 0, "none left while the first are out");
        }
        assert_eq!(threads.running.load(Ordering::SeqCst), 1);
        assert_eq!(threads.borrow(1).0, 1);
        assert_eq!(threads.running.load(Ordering::SeqCst), 1);
    }
}
