//! The vision pipeline, one module per stage, in the order a photo goes through them:
//! [`decode`] -> [`detect`] -> [`align`] -> [`embed`] -> [`compare`].
//!
//! [`Pipeline`] holds the loaded models (one tract plan per detector input shape, SFace) and
//! is shared by every inference worker: tract plans are immutable and safe to run from
//! several threads at once.

pub mod align;
pub mod calibration;
pub mod compare;
pub mod decode;
pub mod detect;
pub mod embed;
pub mod linear_head;
pub mod models;
pub mod onnx_rewrite;
pub mod quality;

use image::RgbImage;

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
        })
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
        let keep_long_side = 2 * self.mode().input_size();
        Ok(decode::decode_photo(bytes, limits, keep_long_side)?)
    }

    /// Faces with a YuNet score of at least `min_score`, best first, in the uploaded photo's
    /// pixels (stage 2).
    pub fn detect(&self, photo: &Photo, min_score: f32) -> Result<Vec<Face>, VisionError> {
        let scale = photo.scale();
        let faces = self.detector.detect(photo.pixels(), min_score)?;
        Ok(if scale == 1.0 {
            faces
        } else {
            faces.iter().map(|f| f.scaled(scale)).collect()
        })
    }

    /// Align and embed the given faces of `photo`, (stages 3 and 4).
    pub fn embed(&self, photo: &Photo, faces: &[Face]) -> Result<Vec<EmbeddedFace>, VisionError> {
        let to_pixels = 1.0 / photo.scale();
        let crops: Vec<RgbImage> = faces
            .iter()
            .map(|f| align::align(photo.pixels(), &f.scaled(to_pixels)))
            .collect();
        let embeddings = self.embedder.embed(&crops)?;
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

    /// Embed already aligned 112x112 crops (re-embedding stored samples, the OpenCV check).
    pub fn embed_crops(&self, crops: &[RgbImage]) -> Result<Vec<Embedding>, VisionError> {
        Ok(self.embedder.embed(crops)?)
    }
}
