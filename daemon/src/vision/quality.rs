//! How usable a detected face is as a gallery sample: its size, sharpness, detection
//! confidence and head pose, folded into one figure in 0..1.
//!
//! A tiny, blurred or turned-away face (a camera crop at dusk) makes a poor sample: its
//! embedding sits between people and lets strangers match. Registration refuses samples whose
//! [`Quality::score`] is below MIN_FACE_QUALITY and says which part was too weak.
//!
//! Each part is mapped to 0..1 by a ramp between a "useless" and a "good" value; the score
//! is the weakest part (a sharp but 20-pixel face is no better than its size).

use image::RgbImage;
use serde::Serialize;

use super::Face;

/// Face side (the box's shorter side, original pixels) that scores 0 and 1. The aligned crop
/// is 112 pixels wide: a 64-pixel face already fills it with a blur of upscaling.
pub const FACE_PX_RAMP: (f32, f32) = (16.0, 64.0);
/// Sharpness (variance of the Laplacian of the aligned 112x112 crop's grey levels) that
/// scores 0 and 1. An upscaled small face or a motion-blurred one has few strong edges:
/// measured on obama.jpg (241 px face, 1,950), Gaussian blur of sigma 2 gives 180, sigma 4
/// gives 35; in-the-wild celebrity photos have a median near 470.
pub const SHARPNESS_RAMP: (f32, f32) = (10.0, 120.0);
/// Detection confidence (DeepStack's scale) that scores 0 and 1.
pub const DETECTION_RAMP: (f32, f32) = (0.5, 0.8);
/// Absolute yaw (degrees) that scores 1 and 0: a half profile still embeds well, a profile
/// does not.
pub const YAW_RAMP: (f32, f32) = (45.0, 85.0);

/// The quality figures of one face.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Quality {
    /// The weakest of the parts below, 0..1.
    pub score: f32,
    /// Shorter side of the face box, in pixels of the photo.
    pub face_px: u32,
    /// Variance of the Laplacian of the aligned crop's grey levels (higher is sharper).
    pub sharpness: f32,
    /// Detection confidence on DeepStack's scale.
    pub det_score: f32,
    /// Head turn left/right, degrees, estimated from where the nose sits between the eyes.
    pub yaw: f32,
    /// Head tilt up/down, degrees, estimated from where the nose sits between eyes and mouth.
    pub pitch: f32,
}

/// Which part limited a [`Quality::score`], for a skip reason a person can act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Weakest {
    /// The face is too small.
    Size,
    /// The face is blurred.
    Sharpness,
    /// The detector was unsure it is a face.
    Detection,
    /// The head is turned away.
    Pose,
}

impl Weakest {
    /// A few words for a person.
    pub fn describe(self) -> &'static str {
        match self {
            Weakest::Size => "face too small",
            Weakest::Sharpness => "face too blurred",
            Weakest::Detection => "face unclear to the detector",
            Weakest::Pose => "head turned away",
        }
    }
}

impl Quality {
    /// Measures `face` (landmarks in photo pixels) and its aligned `crop`; `det_score` is the
    /// detection confidence on DeepStack's scale.
    pub fn measure(face: &Face, crop: &RgbImage, det_score: f32) -> Quality {
        let face_px = face.bbox.width().min(face.bbox.height()).max(0.0).round() as u32;
        let sharpness = laplacian_variance(crop);
        let (yaw, pitch) = head_pose(&face.landmarks);
        let mut q = Quality {
            score: 0.0,
            face_px,
            sharpness,
            det_score,
            yaw,
            pitch,
        };
        q.score = q.parts().iter().map(|(_, s)| *s).fold(1.0, f32::min);
        q
    }

    /// Each part's score, 0..1.
    pub fn parts(&self) -> [(Weakest, f32); 4] {
        [
            (Weakest::Size, ramp(self.face_px as f32, FACE_PX_RAMP)),
            (Weakest::Sharpness, ramp(self.sharpness, SHARPNESS_RAMP)),
            (Weakest::Detection, ramp(self.det_score, DETECTION_RAMP)),
            (Weakest::Pose, 1.0 - ramp(self.yaw.abs(), YAW_RAMP)),
        ]
    }

    /// The part with the lowest score.
    pub fn weakest(&self) -> Weakest {
        self.parts()
            .into_iter()
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .map_or(Weakest::Size, |(w, _)| w)
    }
}

/// 0 at or below `lo`, 1 at or above `hi`, linear between; NaN gives 0.
fn ramp(v: f32, (lo, hi): (f32, f32)) -> f32 {
    let t = (v - lo) / (hi - lo);
    if t.is_nan() {
        0.0
    } else {
        t.clamp(0.0, 1.0)
    }
}

/// Variance of the 4-neighbour Laplacian over the crop's inner pixels (grey = mean of RGB).
pub fn laplacian_variance(crop: &RgbImage) -> f32 {
    let (w, h) = crop.dimensions();
    if w < 3 || h < 3 {
        return 0.0;
    }
    let grey: Vec<f32> = crop
        .pixels()
        .map(|p| (f32::from(p[0]) + f32::from(p[1]) + f32::from(p[2])) / 3.0)
        .collect();
    let (w, h) = (w as usize, h as usize);
    let (mut sum, mut sum_sq, mut n) = (0.0f64, 0.0f64, 0.0f64);
    for y in 1..h - 1 {
        for x in 1..w - 1 {
            let c = grey[y * w + x];
            let lap = grey[(y - 1) * w + x]
                + grey[(y + 1) * w + x]
                + grey[y * w + x - 1]
                + grey[y * w + x + 1]
                - 4.0 * c;
            let lap = f64::from(lap);
            sum += lap;
            sum_sq += lap * lap;
            n += 1.0;
        }
    }
    let mean = sum / n;
    (sum_sq / n - mean * mean).max(0.0) as f32
}

/// (yaw, pitch) in degrees from the five landmarks, in the frame of the eye line (so a
/// tilted head does not read as turned). Rough: a frontal face is near (0, 0), a profile
/// near +-90 yaw.
pub fn head_pose(lm: &[[f32; 2]; 5]) -> (f32, f32) {
    let [right_eye, left_eye, nose, right_mouth, left_mouth] = *lm;
    let eyes = [
        (right_eye[0] + left_eye[0]) / 2.0,
        (right_eye[1] + left_eye[1]) / 2.0,
    ];
    let mouth = [
        (right_mouth[0] + left_mouth[0]) / 2.0,
        (right_mouth[1] + left_mouth[1]) / 2.0,
    ];
    let (dx, dy) = (left_eye[0] - right_eye[0], left_eye[1] - right_eye[1]);
    let eye_dist = (dx * dx + dy * dy).sqrt();
    // Also catches NaN landmarks.
    if eye_dist.is_nan() || eye_dist <= 0.0 {
        return (0.0, 0.0);
    }
    // Unit vectors along the eye line and across it (downwards in the photo).
    let (ux, uy) = (dx / eye_dist, dy / eye_dist);
    let (vx, vy) = (-uy, ux);
    let along = |p: [f32; 2]| (p[0] - eyes[0]) * ux + (p[1] - eyes[1]) * uy;
    let across = |p: [f32; 2]| (p[0] - eyes[0]) * vx + (p[1] - eyes[1]) * vy;
    // Yaw: the nose's offset from the eyes' midpoint, against half the eye distance.
    let yaw = (along(nose) / (eye_dist / 2.0)).clamp(-1.0, 1.0).asin();
    // Pitch: where the nose sits between the eye line (0) and the mouth line (1); about
    // 0.5 on a frontal face (the ArcFace template's ratio).
    let mouth_depth = across(mouth);
    let pitch = if mouth_depth > 0.0 {
        ((across(nose) / mouth_depth - TEMPLATE_NOSE_DEPTH) * 2.0)
            .clamp(-1.0, 1.0)
            .asin()
    } else {
        0.0
    };
    (yaw.to_degrees(), pitch.to_degrees())
}

/// Nose depth between the eye line and the mouth line in the ArcFace template: (71.74 -
/// 51.6) / (92.28 - 51.6).
const TEMPLATE_NOSE_DEPTH: f32 = 0.495;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vision::align::TEMPLATE;
    use crate::vision::BBox;

    fn face(landmarks: [[f32; 2]; 5], side: f32) -> Face {
        Face {
            bbox: BBox {
                x_min: 0.0,
                y_min: 0.0,
                x_max: side,
                y_max: side * 1.2,
            },
            landmarks,
            score: 0.9,
        }
    }

    #[test]
    fn the_template_is_frontal() {
        let (yaw, pitch) = head_pose(&TEMPLATE);
        assert!(yaw.abs() < 5.0 && pitch.abs() < 5.0, "{yaw} {pitch}");
        // The same face tilted by 30 degrees is still frontal.
        let (s, c) = 30f32.to_radians().sin_cos();
        let rotated = TEMPLATE.map(|[x, y]| [x * c - y * s, x * s + y * c]);
        let (yaw, pitch) = head_pose(&rotated);
        assert!(yaw.abs() < 5.0 && pitch.abs() < 5.0, "{yaw} {pitch}");
    }

    #[test]
    fn a_nose_beside_an_eye_is_a_profile() {
        let mut lm = TEMPLATE;
        lm[2][0] = lm[1][0] + 5.0;
        let (yaw, _) = head_pose(&lm);
        assert!(yaw > 80.0, "{yaw}");
        let q = Quality::measure(&face(lm, 100.0), &RgbImage::new(112, 112), 0.9);
        assert_eq!(q.parts()[3].1, 0.0);
    }

    #[test]
    fn flat_crops_are_blurred_and_small_faces_small() {
        let flat = RgbImage::from_pixel(112, 112, image::Rgb([128, 128, 128]));
        assert_eq!(laplacian_variance(&flat), 0.0);
        let checker = RgbImage::from_fn(112, 112, |x, y| {
            image::Rgb(if (x + y) % 2 == 0 { [0; 3] } else { [255; 3] })
        });
        assert!(laplacian_variance(&checker) > 10_000.0);

        let q = Quality::measure(&face(TEMPLATE, 200.0), &flat, 0.95);
        assert_eq!((q.score, q.weakest()), (0.0, Weakest::Sharpness));
        let q = Quality::measure(&face(TEMPLATE, 10.0), &checker, 0.95);
        assert_eq!((q.score, q.weakest()), (0.0, Weakest::Size));
        let q = Quality::measure(&face(TEMPLATE, 200.0), &checker, 0.95);
        assert_eq!(q.score, 1.0);
        assert_eq!(q.face_px, 200);
    }
}
