//! Stage 3: cut each face out as the 112x112 crop SFace was trained on.
//!
//! A least-squares similarity transform (rotation, uniform scale, translation: what OpenCV's
//! `estimateAffinePartial2D` refines to, and Umeyama's method without reflection) maps the
//! five landmarks onto the ArcFace template; the crop is filled by bilinear sampling through
//! its inverse, like `cv2.warpAffine`. SFace is very sensitive to this step: a landmark off by
//! one pixel moves the embedding to a cosine of 0.93-0.99 of itself.

use image::{Rgb, RgbImage};

use super::detect::Face;

/// Side of the aligned crop, in pixels.
pub const CROP_SIZE: u32 = 112;

/// Where the five landmarks land in the 112x112 crop (InsightFace's ArcFace template).
pub const TEMPLATE: [[f32; 2]; 5] = [
    [38.2946, 51.6963],
    [73.5318, 51.5014],
    [56.0252, 71.7366],
    [41.5493, 92.3655],
    [70.7299, 92.2041],
];

/// A 2x3 affine matrix `[[a, -b, tx], [b, a, ty]]` mapping photo pixels to crop pixels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Similarity(pub [[f64; 3]; 2]);

impl Similarity {
    /// The least-squares similarity taking `src` onto `dst`.
    ///
    /// In complex numbers the model is `w = a z + t`; with both point sets centred, the
    /// minimiser is `a = sum(conj(z) w) / sum(|z|^2)` (Umeyama 1991, in 2-D).
    pub fn estimate(src: &[[f32; 2]; 5], dst: &[[f32; 2]; 5]) -> Similarity {
        let n = src.len() as f64;
        let mean = |pts: &[[f32; 2]; 5]| {
            let (sx, sy) = pts
                .iter()
                .fold((0.0, 0.0), |(x, y), p| (x + p[0] as f64, y + p[1] as f64));
            (sx / n, sy / n)
        };
        let (mx, my) = mean(src);
        let (mu, mv) = mean(dst);
        let (mut re, mut im, mut norm) = (0.0, 0.0, 0.0);
        for (p, q) in src.iter().zip(dst) {
            let (x, y) = (p[0] as f64 - mx, p[1] as f64 - my);
            let (u, v) = (q[0] as f64 - mu, q[1] as f64 - mv);
            re += x * u + y * v;
            im += x * v - y * u;
            norm += x * x + y * y;
        }
        let (a, b) = if norm > 0.0 {
            (re / norm, im / norm)
        } else {
            (1.0, 0.0)
        };
        let tx = mu - (a * mx - b * my);
        let ty = mv - (b * mx + a * my);
        Similarity([[a, -b, tx], [b, a, ty]])
    }

    /// Map a photo point to the crop.
    pub fn apply(&self, p: [f64; 2]) -> [f64; 2] {
        let m = &self.0;
        [
            m[0][0] * p[0] + m[0][1] * p[1] + m[0][2],
            m[1][0] * p[0] + m[1][1] * p[1] + m[1][2],
        ]
    }

    /// The inverse transform (crop -> photo).
    pub fn inverse(&self) -> Similarity {
        let [[a, _, tx], [b, _, ty]] = self.0;
        let d = a * a + b * b;
        let (ia, ib) = (a / d, -b / d);
        // inverse of [a -b; b a] is [a b; -b a] / d
        let itx = -(ia * tx - ib * ty);
        let ity = -(ib * tx + ia * ty);
        Similarity([[ia, -ib, itx], [ib, ia, ity]])
    }
}

/// The aligned 112x112 crop of `face`.
pub fn align(img: &RgbImage, face: &Face) -> RgbImage {
    warp(img, &Similarity::estimate(&face.landmarks, &TEMPLATE))
}

/// Fill a crop by sampling `img` bilinearly at the inverse of `m`; outside the photo is black.
pub fn warp(img: &RgbImage, m: &Similarity) -> RgbImage {
    let inv = m.inverse();
    let (w, h) = (img.width() as i64, img.height() as i64);
    let pixel = |x: i64, y: i64| -> [f32; 3] {
        if x < 0 || y < 0 || x >= w || y >= h {
            [0.0; 3]
        } else {
            let p = img.get_pixel(x as u32, y as u32).0;
            [p[0] as f32, p[1] as f32, p[2] as f32]
        }
    };
    RgbImage::from_fn(CROP_SIZE, CROP_SIZE, |x, y| {
        let [sx, sy] = inv.apply([x as f64, y as f64]);
        let (x0, y0) = (sx.floor() as i64, sy.floor() as i64);
        let (fx, fy) = ((sx - x0 as f64) as f32, (sy - y0 as f64) as f32);
        let (p00, p01) = (pixel(x0, y0), pixel(x0 + 1, y0));
        let (p10, p11) = (pixel(x0, y0 + 1), pixel(x0 + 1, y0 + 1));
        let mut out = [0u8; 3];
        for c in 0..3 {
            let top = p00[c] + (p01[c] - p00[c]) * fx;
            let bottom = p10[c] + (p11[c] - p10[c]) * fx;
            out[c] = (top + (bottom - top) * fy).round().clamp(0.0, 255.0) as u8;
        }
        Rgb(out)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn estimate_recovers_a_known_similarity() {
        let truth = Similarity([[0.8, -0.3, 12.0], [0.3, 0.8, -4.0]]);
        let src = [
            [100.0, 120.0],
            [160.0, 118.0],
            [130.0, 150.0],
            [108.0, 180.0],
            [152.0, 178.0],
        ];
        let dst = src.map(|p| {
            let q = truth.apply([p[0] as f64, p[1] as f64]);
            [q[0] as f32, q[1] as f32]
        });
        let m = Similarity::estimate(&src, &dst);
        for (r, t) in m.0.iter().flatten().zip(truth.0.iter().flatten()) {
            assert!((r - t).abs() < 1e-3, "{m:?} vs {truth:?}");
        }
        let back = m.inverse().apply(m.apply([33.0, 44.0]));
        assert!((back[0] - 33.0).abs() < 1e-9 && (back[1] - 44.0).abs() < 1e-9);
    }
}
