//! Stage 4: aligned 112x112 crops -> L2-normalised 128-d SFace embeddings.
//!
//! Faces of one photo run in batches of [`BATCH`] through a plan built for exactly that
//! batch, the rest one by one through a single-face plan. Both shapes are fixed: in tract a
//! symbolic batch dimension measured 1.8x slower per face (109 against 60 ms), while a fixed
//! batch of 4 costs the same per face as one (58 against 60 ms). SFace normalises its input
//! itself ((x - 127.5) / 128), so it takes raw RGB values.

use std::io::Cursor;
use std::sync::Arc;

use image::RgbImage;
use tract_onnx::prelude::tract_data::internal::ensure;
use tract_onnx::prelude::*;

use super::align::CROP_SIZE;

/// Faces per run of the batch plan.
pub const BATCH: usize = 4;

/// Length of an embedding.
pub const EMBEDDING_DIM: usize = 128;

/// An L2-normalised SFace embedding.
#[derive(Debug, Clone, PartialEq)]
pub struct Embedding(pub Vec<f32>);

impl Embedding {
    /// Cosine similarity (a dot product: both are unit vectors).
    pub fn cosine(&self, other: &Embedding) -> f32 {
        self.0.iter().zip(&other.0).map(|(a, b)| a * b).sum()
    }
}

/// SFace, loaded and optimized once.
pub struct Embedder {
    /// A plan for exactly one face (the common case), fully fixed so tract optimises it best.
    single: Arc<TypedRunnableModel>,
    /// A plan for exactly [`BATCH`] faces.
    batch: Arc<TypedRunnableModel>,
}

impl Embedder {
    /// Load SFace from ONNX bytes.
    pub fn load(onnx: &[u8]) -> TractResult<Embedder> {
        let model = tract_onnx::onnx().model_for_read(&mut Cursor::new(onnx))?;
        let side = CROP_SIZE as usize;
        let single = model
            .clone()
            .with_input_fact(0, f32::fact([1, 3, side, side]).into())?
            .into_optimized()?
            .into_runnable()?;
        let batch = model
            .with_input_fact(0, f32::fact([BATCH, 3, side, side]).into())?
            .into_optimized()?
            .into_runnable()?;
        Ok(Embedder { single, batch })
    }

    /// Embed aligned crops, one embedding per crop, in order.
    pub fn embed(&self, crops: &[RgbImage]) -> TractResult<Vec<Embedding>> {
        let mut out = Vec::with_capacity(crops.len());
        let full = crops.len() / BATCH * BATCH;
        for chunk in crops[..full].chunks(BATCH) {
            out.extend(self.run(&self.batch, chunk)?);
        }
        for crop in &crops[full..] {
            out.extend(self.run(&self.single, std::slice::from_ref(crop))?);
        }
        Ok(out)
    }

    /// Run `plan` on exactly as many crops as it was built for.
    fn run(
        &self,
        plan: &Arc<TypedRunnableModel>,
        crops: &[RgbImage],
    ) -> TractResult<Vec<Embedding>> {
        let side = CROP_SIZE as usize;
        let plane = side * side;
        let mut data = vec![0f32; crops.len() * 3 * plane];
        for (crop, chunk) in crops.iter().zip(data.chunks_mut(3 * plane)) {
            ensure!(
                crop.dimensions() == (CROP_SIZE, CROP_SIZE),
                "an aligned crop must be {CROP_SIZE}x{CROP_SIZE}"
            );
            for (i, px) in crop.pixels().enumerate() {
                for c in 0..3 {
                    chunk[c * plane + i] = px.0[c] as f32;
                }
            }
        }
        let input = Tensor::from_shape(&[crops.len(), 3, side, side], &data)?;
        let out = plan.run(tvec!(input.into()))?;
        let view = out[0].to_plain_array_view::<f32>()?;
        let flat: Vec<f32> = view.iter().copied().collect();
        ensure!(
            flat.len() == crops.len() * EMBEDDING_DIM,
            "SFace returned {} values for {} faces",
            flat.len(),
            crops.len()
        );
        Ok(flat.chunks(EMBEDDING_DIM).map(normalise).collect())
    }
}

fn normalise(v: &[f32]) -> Embedding {
    let norm = v
        .iter()
        .map(|x| x * x)
        .sum::<f32>()
        .sqrt()
        .max(f32::MIN_POSITIVE);
    Embedding(v.iter().map(|x| x / norm).collect())
}
