//! Stage 2: find faces with YuNet (boxes, 5 landmarks, a score), in original pixels.
//!
//! The photo is scaled (never up) so that its long side fits the speed mode's size, placed at
//! the top-left of the smallest of a few fixed input shapes that holds it (padding right and
//! bottom), and run through YuNet built for that shape at start-up: its backbone, our chain
//! of kernels, reads those rows as they are made ([`Letterbox`]); a tract plan runs the rest,
//! YuNet's depthwise, pointwise and max pool layers again with our own kernels (`conv_ops`),
//! the others with tract's. Decoding and NMS follow OpenCV's `FaceDetectorYN` (see
//! shared/models.md).

use std::ops::Range;
use std::sync::Arc;

use image::RgbImage;
use tract_onnx::prelude::tract_data::internal::ensure;
use tract_onnx::prelude::*;

use super::conv_chain::RowSource;
use super::conv_kernels;
use super::conv_ops::InputChain;
use super::onnx_rewrite::{self, Kernels};

/// The detector's speed mode: the long side of its input, DeepStack's `MODE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    /// Small faces far from the camera; slowest.
    High,
    /// The default.
    Medium,
    /// Fastest; faces must be large.
    Low,
}

impl Mode {
    /// Every mode, in order of decreasing input size.
    pub const ALL: [Mode; 3] = [Mode::High, Mode::Medium, Mode::Low];

    /// Long side of the detector input, in pixels (a multiple of 32).
    ///
    /// Chosen with `deepstack-bench`'s small-face table (faces tiled over a 1920x1080
    /// frame, found/placed): YuNet needs a face of about 13 px at its input. High (1280)
    /// finds 93/96 faces of 20 px and all of 24 px (1920 would find 16 px faces too, at
    /// 2.7x the time); Medium (640) finds faces from ~48 px, DeepStack-like, at a quarter of
    /// High's cost; Low (416) needs ~75 px faces and is the Raspberry Pi's door-camera
    /// budget. DeepStack's own sizes were 416/320/256.
    pub fn input_size(self) -> u32 {
        match self {
            Mode::High => 1280,
            Mode::Medium => 640,
            Mode::Low => 416,
        }
    }

    /// Parse DeepStack's `MODE` value (`High`, `Medium`, `Low`; case-insensitive).
    pub fn parse(s: &str) -> Option<Mode> {
        match s.to_ascii_lowercase().as_str() {
            "high" => Some(Mode::High),
            "medium" => Some(Mode::Medium),
            "low" => Some(Mode::Low),
            _ => None,
        }
    }

    /// The name DeepStack uses.
    pub fn name(self) -> &'static str {
        match self {
            Mode::High => "High",
            Mode::Medium => "Medium",
            Mode::Low => "Low",
        }
    }
}

/// A face box in original-image pixels (floats; the HTTP layer rounds and clips).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BBox {
    /// Left.
    pub x_min: f32,
    /// Top.
    pub y_min: f32,
    /// Right.
    pub x_max: f32,
    /// Bottom.
    pub y_max: f32,
}

impl BBox {
    /// Width.
    pub fn width(&self) -> f32 {
        self.x_max - self.x_min
    }
    /// Height.
    pub fn height(&self) -> f32 {
        self.y_max - self.y_min
    }
    /// Area, zero for an empty box.
    pub fn area(&self) -> f32 {
        self.width().max(0.0) * self.height().max(0.0)
    }
    /// Intersection over union.
    pub fn iou(&self, other: &BBox) -> f32 {
        let inter = BBox {
            x_min: self.x_min.max(other.x_min),
            y_min: self.y_min.max(other.y_min),
            x_max: self.x_max.min(other.x_max),
            y_max: self.y_max.min(other.y_max),
        };
        let i = if inter.width() > 0.0 && inter.height() > 0.0 {
            inter.area()
        } else {
            0.0
        };
        let u = self.area() + other.area() - i;
        if u > 0.0 {
            i / u
        } else {
            0.0
        }
    }
}

/// One detected face.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Face {
    /// The box, original pixels.
    pub bbox: BBox,
    /// Right eye (image-left), left eye, nose tip, right and left mouth corners; original pixels.
    pub landmarks: [[f32; 2]; 5],
    /// YuNet's raw score in 0..1 (`calibration::detection_confidence` maps it to DeepStack's scale).
    pub score: f32,
}

impl Face {
    /// The same face in an image `factor` times as large.
    pub fn scaled(&self, factor: f32) -> Face {
        Face {
            bbox: BBox {
                x_min: self.bbox.x_min * factor,
                y_min: self.bbox.y_min * factor,
                x_max: self.bbox.x_max * factor,
                y_max: self.bbox.y_max * factor,
            },
            landmarks: self.landmarks.map(|[x, y]| [x * factor, y * factor]),
            score: self.score,
        }
    }
}

/// Overlap above which the weaker of two boxes is dropped (OpenCV's value).
const NMS_IOU: f32 = 0.3;
/// YuNet's strides, one output head each.
const STRIDES: [usize; 3] = [8, 16, 32];

type Plan = Arc<TypedRunnableModel>;

/// One fixed input shape: YuNet's backbone, which reads the letterboxed photo row by row,
/// and an optimized plan of the rest.
struct Shape {
    width: u32,
    height: u32,
    backbone: InputChain,
    plan: Plan,
}

/// YuNet with one plan per input shape of one speed mode.
pub struct Detector {
    mode: Mode,
    shapes: Vec<Shape>,
}

fn round_up_32(v: u32) -> u32 {
    v.div_ceil(32) * 32
}

/// The input shapes (width, height) built for a mode's long side `l`: square, 5:4, 4:3 and
/// 16:9 in both orientations, and the same at half size for small photos. Smallest area
/// first, so the first that holds a photo is the cheapest. (5:4: without it, a 4:5 portrait,
/// 910x1137, took the square shape, 25% more pixels.)
fn shapes_for(l: u32) -> Vec<(u32, u32)> {
    let mut v = Vec::new();
    for side in [l, round_up_32(l / 2)] {
        for short in [
            side,
            round_up_32(side * 4 / 5),
            round_up_32(side * 3 / 4),
            round_up_32(side * 9 / 16),
        ] {
            v.push((side, short));
            if short != side {
                v.push((short, side));
            }
        }
    }
    v.sort_by_key(|&(w, h)| (w * h, w));
    v.dedup();
    v
}

impl Detector {
    /// Load YuNet from ONNX bytes and build the plans for `mode`.
    pub fn load(onnx: &[u8], mode: Mode) -> TractResult<Detector> {
        let model = onnx_rewrite::load(onnx, Kernels::Ours)?;
        let shapes = shapes_for(mode.input_size())
            .into_iter()
            .map(|(width, height)| {
                let mut rest = model
                    .clone()
                    .with_input_fact(0, f32::fact([1, 3, height as usize, width as usize]).into())?
                    .into_optimized()?;
                let backbone = InputChain::split_off(&mut rest)?;
                Ok(Shape {
                    width,
                    height,
                    backbone,
                    plan: rest.into_runnable()?,
                })
            })
            .collect::<TractResult<Vec<_>>>()?;
        Ok(Detector { mode, shapes })
    }

    /// The mode this detector was built for.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Faces with a YuNet score of at least `min_score`, best first, in original pixels.
    pub fn detect(&self, img: &RgbImage, min_score: f32) -> TractResult<Vec<Face>> {
        let (w, h) = img.dimensions();
        let long = w.max(h) as f32;
        let scale = (self.mode.input_size() as f32 / long).min(1.0);
        let sw = ((w as f32 * scale).round() as u32).max(1);
        let sh = ((h as f32 * scale).round() as u32).max(1);
        let shape = self
            .shapes
            .iter()
            .find(|s| s.width >= sw && s.height >= sh)
            .expect("the largest shape is square at the mode's size and holds any scaled photo");
        let letterbox = Letterbox::new(img, sw, sh, shape.width);
        let backbone = shape.backbone.run(&letterbox)?;
        let outputs = conv_kernels::run_plan(&shape.plan, backbone)?;
        // The scaled image is sw wide for w original pixels: undo exactly that ratio.
        let (fx, fy) = (w as f32 / sw as f32, h as f32 / sh as f32);
        let mut faces = decode_heads(&outputs, shape.width, shape.height, min_score)?;
        for f in &mut faces {
            f.bbox.x_min *= fx;
            f.bbox.x_max *= fx;
            f.bbox.y_min *= fy;
            f.bbox.y_max *= fy;
            for p in &mut f.landmarks {
                p[0] *= fx;
                p[1] *= fy;
            }
        }
        Ok(non_max_suppression(faces))
    }
}

/// Scale `img` to `sw` x `sh` (bilinear, as OpenCV's INTER_LINEAR with half-pixel centres)
/// into the top-left of a zeroed `pw` x `ph` BGR planar tensor with raw 0..255 values: YuNet's
/// input. The detector itself does not make this tensor: its backbone takes the same rows
/// from a [`Letterbox`] as it needs them.
pub fn letterbox_bgr(img: &RgbImage, sw: u32, sh: u32, pw: u32, ph: u32) -> Tensor {
    assert!(sh <= ph, "letterbox: {sh} rows do not fit {ph}");
    let (pw, ph) = (pw as usize, ph as usize);
    // SAFETY: `write_row` writes every pixel of each row, padding included.
    let mut tensor = unsafe { Tensor::uninitialized::<f32>(&[1, 3, ph, pw]) }.expect("f32 tensor");
    let mut view = tensor
        .try_as_plain_ram_mut()
        .expect("a new tensor is plain");
    let data = view.as_slice_mut::<f32>().expect("f32 tensor");
    let letterbox = Letterbox::new(img, sw, sh, pw as u32);
    let mut cache = LetterboxCache::default();
    for r in 0..ph {
        letterbox.write_row(r, &mut cache, &mut data[r * pw..], ph * pw);
    }
    tensor
}

/// YuNet's input made row by row (see [`letterbox_bgr`]): `img` scaled to `sw` x `sh` at
/// the top-left of rows of `pw` pixels, zeros around it, as BGR planes.
///
/// Made where the backbone's first layer reads it (`Chain::run_rows`), a row of every
/// channel at a time, so that the 3.7 MB input of a 640x480 shape is never written whole and
/// read back: it was zeroed, filled, then copied into the backbone's first ring, 0.5 ms of a
/// 640x427 photo's detection (perf in BENCHMARKS.md).
pub struct Letterbox<'a> {
    img: &'a RgbImage,
    sw: usize,
    sh: usize,
    pw: usize,
    /// Vertical ratio, source rows per output row.
    ry: f32,
    /// Per output column: the two source samples' offsets in a row of RGB and the weight of
    /// the second; empty when the photo is not scaled.
    xs: Vec<(usize, usize, f32)>,
}

/// What a band of [`Letterbox`] rows keeps from row to row: a source row as floats, and two
/// source rows interpolated along x (kept for the next output row, which often needs one
/// again).
#[derive(Default)]
pub struct LetterboxCache {
    source: Vec<f32>,
    /// (source row, its R G B rows of `sw`).
    along_x: [(Option<usize>, Vec<f32>); 2],
}

impl<'a> Letterbox<'a> {
    /// `img` scaled to `sw` x `sh` in rows of `pw` pixels.
    ///
    /// # Panics
    /// When `sw` is over `pw`.
    pub fn new(img: &'a RgbImage, sw: u32, sh: u32, pw: u32) -> Letterbox<'a> {
        assert!(sw <= pw, "letterbox: {sw} pixels do not fit rows of {pw}");
        let (w, h) = img.dimensions();
        let scaled = (sw, sh) != (w, h);
        let rx = w as f32 / sw as f32;
        let xs = if scaled {
            (0..sw)
                .map(|x| {
                    let (x0, x1, wx) = sample_axis(x, rx, w);
                    (3 * x0, 3 * x1, wx)
                })
                .collect()
        } else {
            Vec::new()
        };
        Letterbox {
            img,
            sw: sw as usize,
            sh: sh as usize,
            pw: pw as usize,
            ry: h as f32 / sh as f32,
            xs,
        }
    }

    /// Output row `y` (below `sh`) of each channel into `out` (B, G, R), `sw` pixels each:
    /// each source row the row needs is interpolated along x once, into the cache, and the
    /// row is the interpolation of two of those along y, a vectorised loop. The same
    /// operations in the same order as interpolating each pixel from its four neighbours
    /// (`tests::bilinear_reference`), so the same values.
    #[inline(always)]
    fn scaled_row(&self, y: usize, cache: &mut LetterboxCache, [b, g, r]: [&mut [f32]; 3]) {
        let (w, h) = self.img.dimensions();
        let (sw, stride) = (self.sw, 3 * w as usize);
        let raw = self.img.as_raw();
        let LetterboxCache { source, along_x } = cache;
        source.resize(stride, 0.0);
        for slot in along_x.iter_mut() {
            slot.1.resize(3 * sw, 0.0);
        }
        let (y0, y1, wy) = sample_axis(y as u32, self.ry, h);
        for (want, keep) in [(y0, y1), (y1, y0)] {
            if along_x.iter().any(|(row, _)| *row == Some(want)) {
                continue;
            }
            let slot = usize::from(along_x[0].0 == Some(keep) && keep != want);
            let (row, out) = &mut along_x[slot];
            for (f, &v) in source.iter_mut().zip(&raw[want * stride..][..stride]) {
                *f = v as f32;
            }
            let (out_r, rest) = out.split_at_mut(sw);
            let (out_g, out_b) = rest.split_at_mut(sw);
            for (&(o0, o1, wx), ((r, g), b)) in
                self.xs.iter().zip(out_r.iter_mut().zip(out_g).zip(out_b))
            {
                let (p0, p1) = (&source[o0..o0 + 3], &source[o1..o1 + 3]);
                *r = p0[0] + (p1[0] - p0[0]) * wx;
                *g = p0[1] + (p1[1] - p0[1]) * wx;
                *b = p0[2] + (p1[2] - p0[2]) * wx;
            }
            *row = Some(want);
        }
        let row_of = |i: usize| {
            let (_, rgb) = along_x
                .iter()
                .find(|(row, _)| *row == Some(i))
                .expect("interpolated");
            rgb
        };
        let (top, bottom) = (row_of(y0), row_of(y1));
        // RGB in, BGR planes out.
        for (c, out) in [r, g, b].into_iter().enumerate() {
            let (t, bt) = (&top[c * sw..][..sw], &bottom[c * sw..][..sw]);
            for ((o, &t), &bt) in out.iter_mut().zip(t).zip(bt) {
                *o = t + (bt - t) * wy;
            }
        }
    }
}

impl RowSource for Letterbox<'_> {
    type Cache = LetterboxCache;

    fn write_row(&self, y: usize, cache: &mut LetterboxCache, dst: &mut [f32], pitch: usize) {
        #[cfg(target_arch = "x86_64")]
        if conv_kernels::Isa::detect() != conv_kernels::Isa::Baseline {
            // SAFETY: both other instruction sets have AVX2.
            return unsafe { self.write_row_avx2(y, cache, dst, pitch) };
        }
        self.write_row_inline(y, cache, dst, pitch)
    }

    /// The zeros below the photo.
    fn uniform_rows(&self) -> Range<usize> {
        self.sh..usize::MAX
    }
}

impl Letterbox<'_> {
    /// [`RowSource::write_row`] compiled for AVX2: the same operations, vectorised (the
    /// conversion of an unscaled 640x427 photo's pixels, 0.30 -> 0.05 ms; the build's
    /// baseline, SSE2, has no way to spread RGB triplets into three planes).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    fn write_row_avx2(&self, y: usize, cache: &mut LetterboxCache, dst: &mut [f32], pitch: usize) {
        self.write_row_inline(y, cache, dst, pitch)
    }

    #[inline(always)]
    fn write_row_inline(
        &self,
        y: usize,
        cache: &mut LetterboxCache,
        dst: &mut [f32],
        pitch: usize,
    ) {
        let (sw, pw) = (self.sw, self.pw);
        let (b, rest) = dst.split_at_mut(pitch);
        let (g, r) = rest.split_at_mut(pitch);
        let mut planes = [&mut b[..pw], &mut g[..pw], &mut r[..pw]];
        if y >= self.sh {
            planes.iter_mut().for_each(|p| p.fill(0.0));
            return;
        }
        let [b, g, r] = planes.each_mut().map(|p| p.split_at_mut(sw));
        for pad in [&mut *b.1, &mut *g.1, &mut *r.1] {
            pad.fill(0.0);
        }
        let (b, g, r) = (b.0, g.0, r.0);
        if !self.xs.is_empty() {
            return self.scaled_row(y, cache, [b, g, r]);
        }
        // Not scaled: every sample falls on a pixel, and the interpolation gives it back.
        let row = &self.img.as_raw()[y * 3 * sw..][..3 * sw];
        for (px, ((b, g), r)) in row.chunks_exact(3).zip(b.iter_mut().zip(g).zip(r)) {
            (*r, *g, *b) = (px[0] as f32, px[1] as f32, px[2] as f32);
        }
    }
}

/// Source pixels and weight for destination index `i` at ratio `r` (source/destination).
fn sample_axis(i: u32, r: f32, len: u32) -> (usize, usize, f32) {
    let s = ((i as f32 + 0.5) * r - 0.5).max(0.0);
    let i0 = (s.floor() as u32).min(len - 1);
    let i1 = (i0 + 1).min(len - 1);
    (i0 as usize, i1 as usize, s - i0 as f32)
}

/// Turn the twelve output heads into faces in letterboxed-input pixels. Each head is its
/// activation's planes, `[1, C, rows, cols]` (`onnx_rewrite::planar_outputs`): a pixel's
/// box offsets, say, are 4 values a plane apart.
fn decode_heads(
    outputs: &[TValue],
    width: u32,
    height: u32,
    min_score: f32,
) -> TractResult<Vec<Face>> {
    let mut faces = Vec::new();
    // Output order, as the model declares it: cls x3, obj x3, bbox x3, kps x3.
    for (k, &stride) in STRIDES.iter().enumerate() {
        let cls = outputs[k].to_plain_array_view::<f32>()?;
        let obj = outputs[3 + k].to_plain_array_view::<f32>()?;
        let bbox = outputs[6 + k].to_plain_array_view::<f32>()?;
        let kps = outputs[9 + k].to_plain_array_view::<f32>()?;
        let (cls, obj) = (cls.as_slice().unwrap_or(&[]), obj.as_slice().unwrap_or(&[]));
        let (bbox, kps) = (
            bbox.as_slice().unwrap_or(&[]),
            kps.as_slice().unwrap_or(&[]),
        );
        let cols = (width as usize) / stride;
        let rows = (height as usize) / stride;
        ensure!(
            cls.len() == rows * cols
                && bbox.len() == 4 * rows * cols
                && kps.len() == 10 * rows * cols,
            "YuNet head {stride} has an unexpected size"
        );
        let s = stride as f32;
        let plane = rows * cols;
        for i in 0..plane {
            let score = (cls[i].clamp(0.0, 1.0) * obj[i].clamp(0.0, 1.0)).sqrt();
            if score < min_score {
                continue;
            }
            let (r, c) = ((i / cols) as f32, (i % cols) as f32);
            let b = |j: usize| bbox[j * plane + i];
            let (cx, cy) = ((c + b(0)) * s, (r + b(1)) * s);
            let (bw, bh) = (b(2).exp() * s, b(3).exp() * s);
            let k = |j: usize| kps[j * plane + i];
            let mut landmarks = [[0f32; 2]; 5];
            for (j, p) in landmarks.iter_mut().enumerate() {
                *p = [(k(2 * j) + c) * s, (k(2 * j + 1) + r) * s];
            }
            faces.push(Face {
                bbox: BBox {
                    x_min: cx - bw / 2.0,
                    y_min: cy - bh / 2.0,
                    x_max: cx + bw / 2.0,
                    y_max: cy + bh / 2.0,
                },
                landmarks,
                score,
            });
        }
    }
    Ok(faces)
}

/// Greedy NMS: best score first, drop any box overlapping a kept one by more than `NMS_IOU`.
fn non_max_suppression(mut faces: Vec<Face>) -> Vec<Face> {
    faces.sort_by(|a, b| b.score.total_cmp(&a.score));
    let mut kept: Vec<Face> = Vec::with_capacity(faces.len().min(64));
    for f in faces {
        if kept.iter().all(|k| k.bbox.iou(&f.bbox) <= NMS_IOU) {
            kept.push(f);
        }
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_cover_every_aspect_and_are_multiples_of_32() {
        for mode in Mode::ALL {
            let l = mode.input_size();
            let shapes = shapes_for(l);
            assert!(shapes.contains(&(l, l)));
            assert!(shapes.iter().all(|&(w, h)| w % 32 == 0 && h % 32 == 0));
            assert!(shapes
                .windows(2)
                .all(|p| p[0].0 * p[0].1 <= p[1].0 * p[1].1));
        }
    }

    #[test]
    fn letterbox_places_bgr_planes_top_left_and_pads_with_zeros() {
        let img = RgbImage::from_fn(5, 3, |x, y| image::Rgb([x as u8, y as u8, 7]));
        for (sw, sh) in [(5, 3), (3, 2)] {
            let t = letterbox_bgr(&img, sw, sh, 8, 4);
            let v = t.to_plain_array_view::<f32>().unwrap();
            assert_eq!(v.shape(), &[1, 3, 4, 8]);
            for y in 0..4 {
                for x in 0..8 {
                    let inside = x < sw as usize && y < sh as usize;
                    assert_eq!(v[[0, 0, y, x]], if inside { 7.0 } else { 0.0 });
                    if !inside {
                        assert_eq!((v[[0, 1, y, x]], v[[0, 2, y, x]]), (0.0, 0.0));
                    }
                }
            }
            if (sw, sh) == (5, 3) {
                // Unscaled: the pixels themselves (R is the last plane, G the middle one).
                assert_eq!((v[[0, 2, 1, 4]], v[[0, 1, 2, 3]]), (4.0, 2.0));
            }
        }
    }

    /// Bilinear scaling pixel by pixel from the four neighbours: OpenCV's INTER_LINEAR with
    /// half-pixel centres, BGR planes of `sw` x `sh`.
    fn bilinear_reference(img: &RgbImage, sw: u32, sh: u32) -> Vec<f32> {
        let (w, h) = img.dimensions();
        let (rx, ry) = (w as f32 / sw as f32, h as f32 / sh as f32);
        let mut planes = vec![0f32; 3 * (sw * sh) as usize];
        for y in 0..sh {
            let (y0, y1, wy) = sample_axis(y, ry, h);
            for x in 0..sw {
                let (x0, x1, wx) = sample_axis(x, rx, w);
                let px =
                    |xx: usize, yy: usize, c: usize| img.get_pixel(xx as u32, yy as u32)[c] as f32;
                for c in 0..3 {
                    let top = px(x0, y0, c) + (px(x1, y0, c) - px(x0, y0, c)) * wx;
                    let bottom = px(x0, y1, c) + (px(x1, y1, c) - px(x0, y1, c)) * wx;
                    planes[(2 - c) * (sw * sh) as usize + (y * sw + x) as usize] =
                        top + (bottom - top) * wy;
                }
            }
        }
        planes
    }

    #[test]
    fn scaled_letterbox_equals_bilinear_pixel_by_pixel() {
        let img = RgbImage::from_fn(37, 23, |x, y| {
            image::Rgb([(x * 7 + y * 3) as u8, (x * y) as u8, (255 - x * 5) as u8])
        });
        // Down by less than 2, by more than 2, unevenly, and up.
        for (sw, sh) in [(25, 16), (11, 7), (30, 9), (50, 31)] {
            let (pw, ph) = (sw + 3, sh + 2);
            let t = letterbox_bgr(&img, sw, sh, pw, ph);
            let v = t.to_plain_array_view::<f32>().unwrap();
            let expected = bilinear_reference(&img, sw, sh);
            for c in 0..3 {
                for y in 0..sh as usize {
                    for x in 0..sw as usize {
                        let want = expected[c * (sw * sh) as usize + y * sw as usize + x];
                        assert_eq!(v[[0, c, y, x]], want, "{sw}x{sh} plane {c} at ({x}, {y})");
                    }
                }
            }
        }
    }

    #[test]
    fn nms_keeps_the_best_of_overlapping_boxes() {
        let face = |x: f32, score| Face {
            bbox: BBox {
                x_min: x,
                y_min: 0.0,
                x_max: x + 10.0,
                y_max: 10.0,
            },
            landmarks: [[0.0; 2]; 5],
            score,
        };
        let kept = non_max_suppression(vec![face(0.0, 0.7), face(1.0, 0.9), face(50.0, 0.8)]);
        let scores: Vec<f32> = kept.iter().map(|f| f.score).collect();
        assert_eq!(scores, vec![0.9, 0.8]);
    }
}
