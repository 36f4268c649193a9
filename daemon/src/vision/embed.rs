//! Stage 4: aligned 112x112 crops -> L2-normalised 128-d SFace embeddings.
//!
//! Every face runs through one plan built for exactly one 112x112 face. Measured in tract
//! 0.23 on x86 (deepstack-bench): a symbolic batch dimension costs 1.8x per face, and a
//! fixed batch of 4 costs 52 ms a face against 44 ms one by one, so batching does not pay
//! here (it does in onnxruntime). SFace normalises its input itself ((x - 127.5) / 128), so
//! it takes raw RGB values.

use std::sync::Arc;

use image::RgbImage;
use tract_onnx::prelude::tract_data::internal::ensure;
use tract_onnx::prelude::*;

use super::align::CROP_SIZE;
use super::conv_kernels;
use super::linear_head::Int8Linear;
use super::onnx_rewrite::{self, Kernels};

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
    /// A plan for exactly one face, fully fixed so tract optimises it best.
    plan: Arc<TypedRunnableModel>,
    /// The final int8 layer, when the file has one we run ourselves (the shipped SFace).
    head: Option<Int8Linear>,
}

impl Embedder {
    /// Load SFace from ONNX bytes.
    pub fn load(onnx: &[u8]) -> TractResult<Embedder> {
        let side = CROP_SIZE as usize;
        let (model, head) = onnx_rewrite::load_with_int8_head(onnx, Kernels::Ours)?;
        let plan = model
            .with_input_fact(0, f32::fact([1, 3, side, side]).into())?
            .into_optimized()?
            .into_runnable()?;
        Ok(Embedder { plan, head })
    }

    /// Embed aligned crops, one embedding per crop, in order.
    pub fn embed(&self, crops: &[RgbImage]) -> TractResult<Vec<Embedding>> {
        crops.iter().map(|crop| self.embed_one(crop)).collect()
    }

    fn embed_one(&self, crop: &RgbImage) -> TractResult<Embedding> {
        ensure!(
            crop.dimensions() == (CROP_SIZE, CROP_SIZE),
            "an aligned crop must be {CROP_SIZE}x{CROP_SIZE}"
        );
        let side = CROP_SIZE as usize;
        let plane = side * side;
        let mut data = vec![0f32; 3 * plane];
        for (i, px) in crop.pixels().enumerate() {
            for c in 0..3 {
                data[c * plane + i] = px.0[c] as f32;
            }
        }
        let input = Tensor::from_shape(&[1, 3, side, side], &data)?;
        let out = conv_kernels::run_plan(&self.plan, input)?;
        let view = out[0].to_plain_array_view::<f32>()?;
        let mut values: Vec<f32> = view.iter().copied().collect();
        if let Some(head) = &self.head {
            ensure!(
                values.len() == head.inputs(),
                "SFace's body returned {} values, its last layer takes {}",
                values.len(),
                head.inputs()
            );
            values = head.apply(&values);
        }
        ensure!(
            values.len() == EMBEDDING_DIM,
            "SFace returned {} values for one face",
            values.len()
        );
        Ok(normalise(&values))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vision::ModelFiles;

    /// The split-off int8 head computes what tract computes with the whole graph.
    #[test]
    fn the_int8_head_matches_tract_running_the_whole_model() {
        let onnx = ModelFiles::embedded().recognizer.bytes;
        let ours = Embedder::load(&onnx).unwrap();
        assert!(
            ours.head.is_some(),
            "the shipped SFace ends in an int8 Gemm"
        );
        let side = CROP_SIZE as usize;
        let whole = Embedder {
            plan: onnx_rewrite::load(&onnx, Kernels::TractOnly)
                .unwrap()
                .with_input_fact(0, f32::fact([1, 3, side, side]).into())
                .unwrap()
                .into_optimized()
                .unwrap()
                .into_runnable()
                .unwrap(),
            head: None,
        };
        let crop = RgbImage::from_fn(CROP_SIZE, CROP_SIZE, |x, y| {
            image::Rgb([(x * 2) as u8, (y * 2) as u8, ((x * y) % 251) as u8])
        });
        let (a, b) = (
            ours.embed(std::slice::from_ref(&crop)).unwrap(),
            whole.embed(&[crop]).unwrap(),
        );
        let cosine = a[0].cosine(&b[0]);
        assert!(cosine > 0.99999, "cosine {cosine}");
    }
}
