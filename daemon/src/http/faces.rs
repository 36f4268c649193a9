//! The face routes: access checks and form validation in the contract's order, then the job
//! on the inference pool, then DeepStack's JSON.

use actix_web::{web, HttpResponse};
use serde::Serialize;

use super::error::ApiError;
use super::form::{FieldProblem, FilePart, Form};
use super::jobs::{self, PixelBox, Skipped};
use super::logging::FaceCount;
use super::AppState;
use crate::gallery::{now_ms, FaceBox, RegisterOutcome, Sighting};
use crate::recent_recorder::NewRecentFace;
use crate::stage_times::StageTimes;
use crate::vision::calibration::{DEFAULT_DETECTION_CONFIDENCE, DEFAULT_RECOGNITION_CONFIDENCE};

/// `{"success": true, ..., "duration": 0}` around a route's own fields.
#[derive(Serialize)]
pub(super) struct Success<T: Serialize> {
    success: bool,
    #[serde(flatten)]
    body: T,
    duration: u8,
}

/// A 200 JSON answer, tagged with the number of faces for the request log.
pub(super) fn success<T: Serialize>(body: T, faces: usize) -> HttpResponse {
    let mut res = HttpResponse::Ok().json(Success {
        success: true,
        body,
        duration: 0,
    });
    res.extensions_mut().insert(FaceCount(faces));
    res
}

/// No fields besides `success` and `duration`.
#[derive(Serialize)]
pub(super) struct Nothing {}

#[derive(Serialize)]
struct Predictions<P> {
    predictions: Vec<P>,
}

#[derive(Serialize)]
struct Detection {
    confidence: f32,
    #[serde(flatten)]
    bbox: PixelBox,
}

#[derive(Serialize)]
struct Recognition {
    confidence: f32,
    userid: String,
    #[serde(flatten)]
    bbox: PixelBox,
}

#[derive(Serialize)]
struct Registration {
    message: &'static str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    skipped: Vec<Skipped>,
}

#[derive(Serialize)]
struct Similarity {
    similarity: f32,
}

#[derive(Serialize)]
struct Faces {
    faces: Vec<String>,
}

/// What recognize answers for a face nobody matched.
const UNKNOWN: &str = "unknown";

/// Longest `camera` name kept with a recent face, in characters.
const MAX_CAMERA_CHARS: usize = 64;

/// `min_confidence`: missing or empty means `default`; then DeepStack's two checks.
fn min_confidence(form: &Form, default: f32) -> Result<f32, ApiError> {
    let text = match form.field_checked("min_confidence") {
        None => return Ok(default),
        Some(Ok("")) => return Ok(default),
        Some(Ok(text)) => text,
        // Too long or not UTF-8: certainly not a number.
        Some(Err(_)) => return Err(ApiError::InvalidMinConfidence),
    };
    match text.parse::<f32>() {
        Ok(v) if v.is_nan() => Err(ApiError::InvalidMinConfidence),
        Ok(v) if v > 1.0 => Err(ApiError::MinConfidenceTooHigh),
        Ok(v) => Ok(v),
        Err(_) => Err(ApiError::InvalidMinConfidence),
    }
}

/// The non-empty `userid` field as it came (what delete looks up: any stored name, also one
/// a restored backup brought in that registration would now refuse).
fn userid(form: &Form) -> Result<String, ApiError> {
    match form.field_checked("userid") {
        None | Some(Ok("")) => Err(ApiError::NoUserid),
        Some(Ok(u)) => Ok(u.to_owned()),
        Some(Err(FieldProblem::NotUtf8)) => Err(invalid_userid(NOT_UTF8.to_owned())),
        Some(Err(FieldProblem::TooLong { limit })) => Err(invalid_userid(format!(
            "longer than {limit} bytes (MAX_FIELD_BYTES)"
        ))),
    }
}

/// Why a userid is refused: not UTF-8 (the contract says any UTF-8; other bytes would be
/// stored mangled).
const NOT_UTF8: &str = "not valid UTF-8";
/// Why a userid is refused: NUL and other control characters (SQLite's length() stops at a
/// NUL; line breaks and escapes in names break logs and UIs).
const CONTROL_CHARACTERS: &str = "contains control characters";

fn invalid_userid(reason: String) -> ApiError {
    ApiError::InvalidUserid { reason }
}

/// The userid of a registration: [`userid`], at most `max_bytes` long, no control characters.
pub(super) fn new_userid(form: &Form, max_bytes: usize) -> Result<String, ApiError> {
    check_new_userid(userid(form)?, max_bytes)
}

/// A userid to store (registration, rename): at most `max_bytes` long, no control characters.
pub(super) fn check_new_userid(userid: String, max_bytes: usize) -> Result<String, ApiError> {
    if userid.is_empty() {
        return Err(ApiError::NoUserid);
    }
    if userid.len() > max_bytes {
        return Err(invalid_userid(format!(
            "{} bytes, over the limit of {max_bytes} (MAX_USERID_BYTES)",
            userid.len()
        )));
    }
    if userid.chars().any(char::is_control) {
        return Err(invalid_userid(CONTROL_CHARACTERS.to_owned()));
    }
    Ok(userid)
}

/// `res` with the stages' times of the job behind it, for the request log.
fn with_times(mut res: HttpResponse, times: StageTimes) -> HttpResponse {
    res.extensions_mut().insert(times);
    res
}

/// The file named `image`, which detection and recognition read.
fn image(form: &Form) -> Result<FilePart, ApiError> {
    form.file("image").cloned().ok_or(ApiError::NoImage)
}

/// POST /v1/vision/face and /v1/vision/face/: face detection.
pub async fn detect(state: web::Data<AppState>, form: Form) -> Result<HttpResponse, ApiError> {
    state.access.face_route(&form)?;
    let file = image(&form)?;
    let min_confidence = min_confidence(&form, DEFAULT_DETECTION_CONFIDENCE)?;
    form.check_file_count()?;
    let limits = state.limits.clone();
    let (faces, times) = state
        .pool
        .run_timed(move |p| jobs::detect(p, &file, &limits, min_confidence))
        .await?;
    let faces = faces?;
    let predictions: Vec<Detection> = faces
        .into_iter()
        .map(|f| Detection {
            confidence: f.confidence,
            bbox: f.bbox,
        })
        .collect();
    let n = predictions.len();
    Ok(with_times(success(Predictions { predictions }, n), times))
}

/// POST /v1/vision/face/recognize.
pub async fn recognize(state: web::Data<AppState>, form: Form) -> Result<HttpResponse, ApiError> {
    state.access.face_route(&form)?;
    let file = image(&form)?;
    let threshold = min_confidence(&form, DEFAULT_RECOGNITION_CONFIDENCE)?;
    form.check_file_count()?;
    let (limits, gallery) = (state.limits.clone(), state.gallery.clone());
    let (faces, times) = state
        .pool
        .run_timed(move |p| jobs::recognize(p, &*gallery, &file, &limits, threshold))
        .await?;
    let faces = faces?;
    let predictions: Vec<Recognition> = faces
        .iter()
        .map(|f| Recognition {
            confidence: f.confidence,
            userid: f.userid.clone().unwrap_or_else(|| UNKNOWN.to_owned()),
            bbox: f.bbox,
        })
        .collect();
    if let Some(recent) = &state.recent {
        let (camera, seen_at) = (camera(&form), now_ms());
        recent.record(faces.into_iter().map(|f| NewRecentFace {
            sighting: Sighting {
                seen_at,
                camera: camera.clone(),
                userid: f.userid,
                confidence: f.confidence,
                det_score: f.seen.face.score,
                quality: None, // measured by the recorder, off the request path
                bbox: FaceBox {
                    y_min: f.bbox.y_min,
                    x_min: f.bbox.x_min,
                    y_max: f.bbox.y_max,
                    x_max: f.bbox.x_max,
                },
            },
            embedding: f.seen.embedding.0,
            crop: f.seen.crop,
            face: f.seen.face,
        }));
    }
    let n = predictions.len();
    Ok(with_times(success(Predictions { predictions }, n), times))
}

/// The optional `camera` field of recognize (ours; DeepStack clients do not send it): kept
/// with the recent faces, control characters dropped, at most [`MAX_CAMERA_CHARS`]
/// characters. Anything unusable is no camera rather than a refused request.
fn camera(form: &Form) -> Option<String> {
    let name: String = form
        .field("camera")?
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_CAMERA_CHARS)
        .collect();
    let name = name.trim();
    (!name.is_empty()).then(|| name.to_owned())
}

/// POST /v1/vision/face/register: every file part adds a sample.
pub async fn register(state: web::Data<AppState>, form: Form) -> Result<HttpResponse, ApiError> {
    state.access.face_route(&form)?;
    if form.files().is_empty() {
        return Err(ApiError::NoImage);
    }
    let userid = new_userid(&form, state.limits.max_userid_bytes)?;
    form.check_file_count()?;
    // Refuse a too-big part before decoding the others: all or nothing anyway.
    for file in form.files() {
        jobs::check_upload(file, &state.limits)?;
    }
    let files = form.files().to_vec();
    let (limits, gallery) = (state.limits.clone(), state.gallery.clone());
    let (done, times) = state
        .pool
        .run_timed(move |p| jobs::register(p, &*gallery, &userid, &files, &limits))
        .await?;
    let done = done?;
    let message = match done.outcome {
        RegisterOutcome::Added => "face added",
        RegisterOutcome::Updated => "face updated",
    };
    let body = Registration {
        message,
        skipped: done.skipped,
    };
    Ok(with_times(success(body, done.samples), times))
}

/// POST /v1/vision/face/match: the similarity of the largest faces of two photos.
pub async fn match_faces(state: web::Data<AppState>, form: Form) -> Result<HttpResponse, ApiError> {
    state.access.face_route(&form)?;
    // DeepStack counted file field NAMES and read the first file of each.
    let mut names: Vec<&str> = Vec::new();
    for file in form.files() {
        if !names.contains(&file.name.as_str()) {
            names.push(&file.name);
        }
    }
    let (a, b) = match names.as_slice() {
        [] => return Err(ApiError::NoImage),
        [_] => return Err(ApiError::OnlyOneImage),
        [a, b] => (form.file(a).cloned(), form.file(b).cloned()),
        _ => return Err(ApiError::TooManyImages),
    };
    let (a, b) = a.zip(b).ok_or(ApiError::NoImage)?;
    form.check_file_count()?;
    let limits = state.limits.clone();
    let (similarity, times) = state
        .pool
        .run_timed(move |p| jobs::match_faces(p, &a, &b, &limits))
        .await?;
    Ok(with_times(
        success(
            Similarity {
                similarity: similarity?,
            },
            2,
        ),
        times,
    ))
}

/// POST /v1/vision/face/list: every userid, sorted bytewise.
pub async fn list(state: web::Data<AppState>, form: Form) -> Result<HttpResponse, ApiError> {
    state.access.face_route(&form)?;
    // An in-memory read of the index: fine on the async worker.
    let faces = state.gallery.list_users();
    Ok(success(Faces { faces }, 0))
}

/// POST /v1/vision/face/delete: success also for an unknown userid.
pub async fn delete(state: web::Data<AppState>, form: Form) -> Result<HttpResponse, ApiError> {
    state.access.face_route(&form)?;
    let userid = userid(&form)?;
    let gallery = state.gallery.clone();
    // A committed SQLite write (fsync): blocking I/O, kept off the async worker.
    web::block(move || gallery.delete_user(&userid))
        .await
        .map_err(ApiError::internal)??;
    Ok(success(Nothing {}, 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form_with(min: &str) -> Form {
        Form::from_fields(vec![("min_confidence".into(), min.into())])
    }

    #[test]
    fn min_confidence_is_validated_like_deepstack() {
        assert_eq!(min_confidence(&Form::default(), 0.55).unwrap(), 0.55);
        assert_eq!(min_confidence(&form_with(""), 0.67).unwrap(), 0.67);
        assert_eq!(min_confidence(&form_with("0.45"), 0.67).unwrap(), 0.45);
        assert_eq!(min_confidence(&form_with("1"), 0.67).unwrap(), 1.0);
        assert_eq!(min_confidence(&form_with("-0.5"), 0.67).unwrap(), -0.5);
        for bad in ["abc", "0.5x", " 0.5", "NaN"] {
            assert!(
                matches!(
                    min_confidence(&form_with(bad), 0.67),
                    Err(ApiError::InvalidMinConfidence)
                ),
                "{bad}"
            );
        }
        for high in ["1.01", "2", "inf"] {
            assert!(matches!(
                min_confidence(&form_with(high), 0.67),
                Err(ApiError::MinConfidenceTooHigh)
            ));
        }
    }

    #[test]
    fn userids_are_checked_for_registration() {
        let form = |u: &str| Form::from_fields(vec![("userid".into(), u.into())]);
        assert_eq!(new_userid(&form("Zoë"), 256).unwrap(), "Zoë");
        assert_eq!(
            new_userid(&form("'; DROP TABLE users; --"), 256).unwrap(),
            "'; DROP TABLE users; --"
        );
        assert!(matches!(
            new_userid(&form(""), 256),
            Err(ApiError::NoUserid)
        ));
        assert!(matches!(
            new_userid(&Form::default(), 256),
            Err(ApiError::NoUserid)
        ));
        for bad in ["a\0b", "\0", "line\nbreak", "esc\u{1b}[31m", "del\u{7f}"] {
            match new_userid(&form(bad), 256) {
                Err(ApiError::InvalidUserid { reason }) => assert_eq!(reason, CONTROL_CHARACTERS),
                other => panic!("{bad:?}: {other:?}"),
            }
        }
        // 256 bytes pass, 257 do not; bytes, not characters.
        assert!(new_userid(&form(&"x".repeat(256)), 256).is_ok());
        assert!(new_userid(&form(&"é".repeat(129)), 256).is_err());
        match new_userid(&form(&"x".repeat(257)), 256) {
            Err(ApiError::InvalidUserid { reason }) => {
                assert!(reason.contains("257") && reason.contains("MAX_USERID_BYTES"))
            }
            other => panic!("{other:?}"),
        }
        // Delete looks up whatever is stored.
        assert!(userid(&form(&"x".repeat(1000))).is_ok());
    }

    #[test]
    fn success_bodies_keep_deepstacks_shape() {
        let body = serde_json::to_string(&Success {
            success: true,
            body: Predictions {
                predictions: vec![Recognition {
                    confidence: 0.5,
                    userid: "a".into(),
                    bbox: PixelBox {
                        y_min: 1,
                        x_min: 2,
                        y_max: 3,
                        x_max: 4,
                    },
                }],
            },
            duration: 0,
        })
        .unwrap();
        assert_eq!(
            body,
            r#"{"success":true,"predictions":[{"confidence":0.5,"userid":"a","y_min":1,"x_min":2,"y_max":3,"x_max":4}],"duration":0}"#
        );
        let body = serde_json::to_string(&Success {
            success: true,
            body: Nothing {},
            duration: 0,
        })
        .unwrap();
        assert_eq!(body, r#"{"success":true,"duration":0}"#);
    }
}
