//! What the face routes run on the inference pool: decode, detect, embed, compare, store.
//!
//! Plain blocking functions of the pipeline and the gallery; the handlers validate the form
//! first, then hand one of these to the pool and turn its result into JSON.

use std::sync::Arc;

use image::RgbImage;
use serde::Serialize;

use super::error::ApiError;
use super::form::FilePart;
use crate::budget::{MemoryBudget, Reservation};
use crate::gallery::{FaceStore, Gallery, NewSample, RecentFaces, RecentSample, RegisterOutcome};
use crate::vision::calibration::{
    detection_confidence, detection_score_for, recognition_confidence, recognition_cosine_for,
    Enrolment, DEFAULT_DETECTION_CONFIDENCE, MATCH_MIN_SCORE,
};
use crate::vision::compare::assign_users;
use crate::vision::quality::Quality;
use crate::vision::{BBox, DecodeLimits, EmbeddedFace, Face, Photo, Pipeline};

/// A second face at least this fraction of the largest face's area makes a registration photo
/// ambiguous: with two similar faces (a couple, a poster behind the person) we cannot tell
/// whose name the userid is, and a wrong sample would make strangers match. Below it, the
/// smaller faces are taken for bystanders.
pub const AMBIGUOUS_AREA_RATIO: f32 = 0.8;

/// Skip reason: no face in a registration photo.
pub const SKIP_NO_FACE: &str = "no face detected";
/// Skip reason: two faces of similar size in a registration photo.
pub const SKIP_AMBIGUOUS: &str = "several faces of similar size";

/// Limits applied to one request (see SECURITY.md for the whole list).
#[derive(Debug, Clone)]
pub struct UploadLimits {
    /// What bodies and decoding draw from (MEMORY_BUDGET_BYTES).
    pub budget: Arc<MemoryBudget>,
    /// Deadline for a body to arrive (BODY_TIMEOUT).
    pub body_timeout: std::time::Duration,
    /// Largest image, in pixels.
    pub max_pixels: u64,
    /// Largest upload, in bytes (only named in the error's reason).
    pub max_upload_bytes: u64,
    /// Longest userid a registration accepts, in bytes.
    pub max_userid_bytes: usize,
    /// Most file parts in one request.
    pub max_files: usize,
    /// Largest text field, in bytes.
    pub max_field_bytes: usize,
    /// Lowest [`Quality::score`] a registration sample may have (MIN_FACE_QUALITY).
    pub min_face_quality: f32,
}

/// A face box in whole pixels of the original image, clipped to it; DeepStack's key order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PixelBox {
    /// Top.
    pub y_min: u32,
    /// Left.
    pub x_min: u32,
    /// Bottom.
    pub y_max: u32,
    /// Right.
    pub x_max: u32,
}

impl PixelBox {
    /// Rounds `b` to whole pixels and clips it to a `width` x `height` image (edges, so
    /// `x_max` may equal `width`).
    pub fn new(b: &BBox, width: u32, height: u32) -> PixelBox {
        let clip = |v: f32, max: u32| (v.round().max(0.0) as u32).min(max);
        PixelBox {
            y_min: clip(b.y_min, height),
            x_min: clip(b.x_min, width),
            y_max: clip(b.y_max, height),
            x_max: clip(b.x_max, width),
        }
    }

    /// No pixel inside: a box that was wholly outside the image.
    pub fn is_empty(&self) -> bool {
        self.x_max <= self.x_min || self.y_max <= self.y_min
    }
}

/// A detected face, on DeepStack's confidence scale.
#[derive(Debug, Clone)]
pub struct DetectedFace {
    /// Detection confidence, 0..1.
    pub confidence: f32,
    /// Where.
    pub bbox: PixelBox,
}

/// A face and who it is.
#[derive(Debug, Clone)]
pub struct RecognizedFace {
    /// The user, or `None` for unknown.
    pub userid: Option<String>,
    /// Recognition confidence (0 when unknown).
    pub confidence: f32,
    /// Where.
    pub bbox: PixelBox,
    /// The face itself (crop, embedding, detector score), for recent faces.
    pub seen: EmbeddedFace,
}

/// A registration photo that gave no sample, and why.
#[derive(Debug, Clone, Serialize)]
pub struct Skipped {
    /// The file's form field name.
    pub file: String,
    /// Why it was skipped.
    pub reason: String,
    /// The face's quality figures, when a face was found.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quality: Option<Quality>,
}

/// What a registration did.
#[derive(Debug)]
pub struct Registered {
    /// Added or updated.
    pub outcome: RegisterOutcome,
    /// Samples stored.
    pub samples: usize,
    /// Photos that gave no sample.
    pub skipped: Vec<Skipped>,
}

/// `invalid image` with a reason for a part whose bytes went over MAX_UPLOAD_BYTES.
pub fn check_upload(file: &FilePart, limits: &UploadLimits) -> Result<(), ApiError> {
    if file.over_limit {
        return Err(ApiError::InvalidImage {
            reason: Some(format!(
                "upload over the limit of {} bytes (MAX_UPLOAD_BYTES)",
                limits.max_upload_bytes
            )),
        });
    }
    Ok(())
}

/// The photo of `file`, and its share of the memory budget (held while the photo is).
fn decode(
    p: &Pipeline,
    file: &FilePart,
    limits: &UploadLimits,
) -> Result<(Photo, Reservation), ApiError> {
    check_upload(file, limits)?;
    let decode_limits = DecodeLimits {
        max_pixels: limits.max_pixels,
    };
    // What the decode refuses from the header (over MAX_PIXELS, not an image) needs nothing.
    let peak = p.decode_peak_bytes(&file.bytes, decode_limits).unwrap_or(0);
    let held = limits
        .budget
        .try_reserve(peak)
        .ok_or(ApiError::OverBudget {
            wanted: peak,
            budget: limits.budget.limit(),
        })?;
    Ok((p.decode(&file.bytes, decode_limits)?, held))
}

/// Lowest detection confidence ever reported, whatever `min_confidence` asks. Below it YuNet
/// scores every anchor of its grid (thousands of boxes on a 720p photo, 0.7 s of NMS), none
/// of them a face: the best detection on the calibration's people-free photos scored 0.44.
pub const DETECTION_CONFIDENCE_FLOOR: f32 = 0.1;

/// The YuNet score for a confidence on DeepStack's scale.
fn min_score(confidence: f32) -> f32 {
    detection_score_for(confidence.max(DETECTION_CONFIDENCE_FLOOR))
}

/// Faces at or above `min_confidence` (DeepStack's scale), most confident first.
pub fn detect(
    p: &Pipeline,
    file: &FilePart,
    limits: &UploadLimits,
    min_confidence: f32,
) -> Result<Vec<DetectedFace>, ApiError> {
    let (img, _held) = decode(p, file, limits)?;
    let (w, h) = img.dimensions();
    let mut faces: Vec<DetectedFace> = p
        .detect(&img, min_score(min_confidence))?
        .iter()
        .map(|f| DetectedFace {
            confidence: detection_confidence(f.score),
            bbox: PixelBox::new(&f.bbox, w, h),
        })
        .filter(|f| !f.bbox.is_empty())
        .collect();
    faces.sort_by(|a, b| b.confidence.total_cmp(&a.confidence));
    Ok(faces)
}

/// Every face found at the default detection threshold, each given at most one user (and
/// each user at most one face) with a confidence of at least `threshold`.
pub fn recognize(
    p: &Pipeline,
    gallery: &dyn FaceStore,
    file: &FilePart,
    limits: &UploadLimits,
    threshold: f32,
) -> Result<Vec<RecognizedFace>, ApiError> {
    let (img, _held) = decode(p, file, limits)?;
    let faces = p.detect(&img, min_score(DEFAULT_DETECTION_CONFIDENCE))?;
    if faces.is_empty() {
        return Ok(Vec::new());
    }
    let embedded = p.embed(&img, &faces)?;
    // Confidences are measured against the gallery as it is now (see vision::calibration).
    let enrolment = gallery.enrolment();
    let min_cosine = recognition_cosine_for(threshold, &enrolment);
    // Each face needs at most as many users as there are faces: the others may take theirs.
    let candidates: Vec<Vec<(String, f32)>> = embedded
        .iter()
        .map(|e| {
            gallery
                .best_matches(&e.embedding.0, min_cosine, faces.len())
                .into_iter()
                .map(|(user, cosine)| (user, recognition_confidence(cosine, &enrolment)))
                .collect()
        })
        .collect();
    let (w, h) = img.dimensions();
    Ok(assign_users(&candidates, threshold)
        .into_iter()
        .zip(embedded)
        .map(|(assigned, seen)| {
            let bbox = PixelBox::new(&seen.face.bbox, w, h);
            let (userid, confidence) = match assigned {
                Some((user, confidence)) => (Some(user), confidence),
                None => (None, 0.0),
            };
            RecognizedFace {
                userid,
                confidence,
                bbox,
                seen,
            }
        })
        .collect())
}

/// The registration face of a photo: the largest, unless another is nearly as large.
enum Pick {
    NoFace,
    Ambiguous,
    One(Face),
}

fn pick_registration_face(faces: &[Face]) -> Pick {
    let mut by_area: Vec<&Face> = faces.iter().collect();
    by_area.sort_by(|a, b| b.bbox.area().total_cmp(&a.bbox.area()));
    match by_area.as_slice() {
        [] => Pick::NoFace,
        [first, second, ..] if second.bbox.area() >= AMBIGUOUS_AREA_RATIO * first.bbox.area() => {
            Pick::Ambiguous
        }
        [first, ..] => Pick::One(**first),
    }
}

/// The largest face of a photo (match).
fn largest_face(faces: &[Face]) -> Option<Face> {
    faces
        .iter()
        .max_by(|a, b| a.bbox.area().total_cmp(&b.bbox.area()))
        .copied()
}

fn encode_crop(crop: &RgbImage) -> Result<Vec<u8>, ApiError> {
    crate::vision::crop_jpeg(crop).map_err(ApiError::internal)
}

/// One sample per usable photo, all stored in one gallery transaction.
///
/// A file that is not an image fails the whole request (nothing stored), as in DeepStack;
/// a photo without a usable face is skipped; no usable face at all is `no face detected`.
pub fn register(
    p: &Pipeline,
    gallery: &dyn FaceStore,
    userid: &str,
    files: &[FilePart],
    limits: &UploadLimits,
) -> Result<Registered, ApiError> {
    let mut samples = Vec::new();
    let mut skipped = Vec::new();
    for file in files {
        let (img, _held) = decode(p, file, limits)?;
        let faces = p.detect(&img, min_score(DEFAULT_DETECTION_CONFIDENCE))?;
        let face = match pick_registration_face(&faces) {
            Pick::One(face) => face,
            Pick::NoFace => {
                skipped.push(skip(file, SKIP_NO_FACE));
                continue;
            }
            Pick::Ambiguous => {
                skipped.push(skip(file, SKIP_AMBIGUOUS));
                continue;
            }
        };
        let embedded = p.embed(&img, std::slice::from_ref(&face))?.remove(0);
        let det_score = detection_confidence(face.score);
        let quality = Quality::measure(&face, &embedded.crop, det_score);
        if quality.score < limits.min_face_quality {
            skipped.push(Skipped {
                file: file.name.clone(),
                reason: low_quality_reason(&quality, limits.min_face_quality),
                quality: Some(quality),
            });
            continue;
        }
        samples.push(NewSample {
            embedding: embedded.embedding.0,
            model: p.models().recognizer.sha256.clone(),
            crop: encode_crop(&embedded.crop)?,
            source: file.name.clone(),
            det_score,
            quality: Some(quality),
            negative: false,
        });
    }
    if samples.is_empty() {
        // Say why only when a face was refused for its quality: DeepStack's clients get
        // the very answer they know for photos without a face.
        let reason = skipped
            .iter()
            .filter(|s| s.quality.is_some())
            .map(|s| format!("{}: {}", s.file, s.reason))
            .collect::<Vec<_>>();
        return Err(ApiError::NoFaceDetected {
            reason: (!reason.is_empty()).then(|| reason.join("; ")),
        });
    }
    let count = samples.len();
    let outcome = gallery.register(userid, samples)?;
    Ok(Registered {
        outcome,
        samples: count,
        skipped,
    })
}

/// "This is `userid`": the recent faces `which` names become samples of `userid` (new or
/// existing), gated on MIN_FACE_QUALITY as registration is, and leave the recent faces (all of
/// them: the weak ones too, listed in `skipped`), in one transaction. A face embedded by
/// another model than the loaded one is skipped: its embedding would not compare. A group seen
/// hundreds of times gives at most MAX_FILES samples, as one registration could: its best
/// faces. Returns the registration and how many recent faces were named.
pub fn name_recent(
    gallery: &Gallery,
    which: RecentFaces,
    userid: &str,
    limits: &UploadLimits,
    model: &str,
) -> Result<(Registered, usize), ApiError> {
    let min_face_quality = limits.min_face_quality;
    let faces = gallery.recent_samples(which)?;
    if faces.is_empty() {
        return Err(match which {
            RecentFaces::Group(_) => ApiError::UnknownStranger,
            RecentFaces::Face(_) => ApiError::UnknownRecentFace,
        });
    }
    let consumed: Vec<i64> = faces.iter().map(|f| f.id).collect();
    let (mut samples, mut skipped) = (Vec::new(), Vec::new());
    for RecentSample { sample, .. } in faces {
        let refused = match sample.quality {
            _ if sample.model != model => Some(SKIP_OTHER_MODEL.to_owned()),
            Some(q) if q.score < min_face_quality => Some(low_quality_reason(&q, min_face_quality)),
            None => Some(SKIP_NOT_MEASURED.to_owned()),
            Some(_) => None,
        };
        match refused {
            Some(reason) => skipped.push(Skipped {
                file: sample.source.clone(),
                reason,
                quality: sample.quality,
            }),
            None => samples.push(sample),
        }
    }
    // What is listed of the skipped faces: as many as one registration could have sent.
    let skipped_total = skipped.len();
    skipped.truncate(limits.max_files);
    if samples.is_empty() {
        let mut reason: Vec<String> = skipped
            .iter()
            .take(SKIPPED_IN_REASON)
            .map(|s| format!("{}: {}", s.file, s.reason))
            .collect();
        if skipped_total > reason.len() {
            reason.push(format!("and {} more", skipped_total - reason.len()));
        }
        return Err(ApiError::NoFaceDetected {
            reason: Some(reason.join("; ")),
        });
    }
    // The best first (stable: among equals, the oldest).
    samples.sort_by(|a, b| quality_score(b).total_cmp(&quality_score(a)));
    samples.truncate(limits.max_files);
    let count = samples.len();
    let outcome = gallery.register_recent(userid, samples, &consumed)?;
    Ok((
        Registered {
            outcome,
            samples: count,
            skipped,
        },
        consumed.len(),
    ))
}

/// "Not ...": recent face `id` becomes a negative sample of `userid` (by default the user
/// recognize gave it to) and leaves the recent faces, in one transaction. From then on a face
/// that resembles it more than that user's own samples is not given to that user (see
/// `gallery::index`). Returns the user.
pub fn reject_recent(
    gallery: &Gallery,
    id: i64,
    userid: Option<String>,
    model: &str,
) -> Result<String, ApiError> {
    let Some(face) = gallery.recent_samples(RecentFaces::Face(id))?.pop() else {
        return Err(ApiError::UnknownRecentFace);
    };
    let userid = userid
        .or(face.answer)
        .ok_or_else(|| ApiError::InvalidParameter {
            reason: "the face was given to nobody: say whom it is not (userid)".into(),
        })?;
    if face.sample.model != model {
        // Its embedding could not be compared with the faces the loaded model embeds.
        return Err(ApiError::InvalidParameter {
            reason: SKIP_OTHER_MODEL.into(),
        });
    }
    let negative = NewSample {
        negative: true,
        ..face.sample
    };
    gallery.register_recent(&userid, vec![negative], &[id])?;
    Ok(userid)
}

/// Skipped faces named in the reason of a refused naming.
const SKIPPED_IN_REASON: usize = 5;

fn quality_score(sample: &NewSample) -> f32 {
    sample.quality.map_or(0.0, |q| q.score)
}

/// Skip reasons of naming recent faces.
const SKIP_OTHER_MODEL: &str = "embedded by another model than the loaded one";
const SKIP_NOT_MEASURED: &str = "face quality never measured";

fn skip(file: &FilePart, reason: &'static str) -> Skipped {
    Skipped {
        file: file.name.clone(),
        reason: reason.to_owned(),
        quality: None,
    }
}

/// Skip reason: quality under the minimum, naming the weakest part, e.g. "face quality 0.12
/// below MIN_FACE_QUALITY 0.30: face too blurred".
pub fn low_quality_reason(q: &Quality, min: f32) -> String {
    format!(
        "{SKIP_LOW_QUALITY} {:.2} below MIN_FACE_QUALITY {min:.2}: {}",
        q.score,
        q.weakest().describe()
    )
}

/// Start of the skip reason of a face under MIN_FACE_QUALITY.
pub const SKIP_LOW_QUALITY: &str = "face quality";

/// Calibrated similarity of the largest faces of two photos, each found at MATCH_MIN_SCORE
/// (every clear face, grayscale ones included).
pub fn match_faces(
    p: &Pipeline,
    a: &FilePart,
    b: &FilePart,
    limits: &UploadLimits,
) -> Result<f32, ApiError> {
    let images = [decode(p, a, limits)?, decode(p, b, limits)?];
    let mut embeddings = Vec::with_capacity(2);
    for (img, _held) in &images {
        let faces = p.detect(img, MATCH_MIN_SCORE)?;
        let face = largest_face(&faces).ok_or(ApiError::NoFaceFound)?;
        embeddings.push(p.embed(img, &[face])?.remove(0).embedding);
    }
    // One photo against one: the gallery of a single sample.
    Ok(recognition_confidence(
        embeddings[0].cosine(&embeddings[1]),
        &Enrolment::ONE_SAMPLE,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn face(x: f32, side: f32) -> Face {
        Face {
            bbox: BBox {
                x_min: x,
                y_min: 0.0,
                x_max: x + side,
                y_max: side,
            },
            landmarks: [[0.0; 2]; 5],
            score: 0.9,
        }
    }

    #[test]
    fn boxes_are_rounded_and_clipped() {
        let b = BBox {
            x_min: -3.4,
            y_min: 10.5,
            x_max: 120.7,
            y_max: 49.2,
        };
        assert_eq!(
            PixelBox::new(&b, 100, 50),
            PixelBox {
                y_min: 11,
                x_min: 0,
                y_max: 49,
                x_max: 100
            }
        );
    }

    #[test]
    fn registration_takes_the_largest_face_unless_ambiguous() {
        assert!(matches!(pick_registration_face(&[]), Pick::NoFace));
        match pick_registration_face(&[face(0.0, 50.0), face(100.0, 100.0)]) {
            Pick::One(f) => assert_eq!(f.bbox.x_min, 100.0),
            _ => panic!("expected the larger face"),
        }
        // 95 x 95 is 0.9025 of 100 x 100: ambiguous.
        assert!(matches!(
            pick_registration_face(&[face(0.0, 95.0), face(100.0, 100.0)]),
            Pick::Ambiguous
        ));
    }
}
