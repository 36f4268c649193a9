//! Every error answer of the API, in one place: DeepStack's exact strings and statuses.
//!
//! Handlers return `Result<HttpResponse, ApiError>`; [`ApiError`]'s `ResponseError` impl is
//! the only code that decides an error's status and JSON body.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;

use crate::gallery::GalleryError;
use crate::inference::InferenceError;
use crate::vision::{DecodeError, VisionError};

/// An error answer. The `#[error]` text is the exact `"error"` string clients see.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// API key configured and `api_key` missing or different.
    #[error("Incorrect api key")]
    IncorrectApiKey,
    /// Admin key configured and `admin_key` missing or different.
    #[error("Incorrect admin key")]
    IncorrectAdminKey,
    /// `VISION-FACE` is not `True`.
    #[error("Face endpoints not activated")]
    FacesDisabled,
    /// The request's inference did not finish within TIMEOUT.
    #[error("failed to process request before timeout")]
    Timeout,
    /// Ours: MAX_QUEUE requests already wait for inference; refused at once, with DeepStack's
    /// timeout answer (what its clients already handle) and a `reason`.
    #[error("failed to process request before timeout")]
    Overloaded {
        /// The queue's size.
        queued: usize,
    },
    /// Ours: the request body's share of MEMORY_BUDGET_BYTES was not free within the
    /// admission wait (or is more than the whole budget); refused before reading it, with
    /// DeepStack's timeout answer and a `reason`.
    #[error("failed to process request before timeout")]
    OverBudget {
        /// Bytes the body asked for.
        wanted: u64,
        /// The budget's size.
        budget: u64,
    },
    /// Ours: the request body did not arrive within BODY_TIMEOUT.
    #[error("failed to process request before timeout")]
    BodyTimeout {
        /// BODY_TIMEOUT.
        after: std::time::Duration,
    },
    /// No usable file part (or a body that is not multipart).
    #[error("No valid image file found")]
    NoImage,
    /// `min_confidence` is not a number.
    #[error("Invalid value for min_confidence")]
    InvalidMinConfidence,
    /// `min_confidence` is above 1.
    #[error("min_confidence cannot be greater than 1")]
    MinConfidenceTooHigh,
    /// `userid` missing or empty.
    #[error("userid not specified")]
    NoUserid,
    /// Ours: a userid we refuse to store (too long, not UTF-8, control characters); `reason`
    /// says which rule.
    #[error("invalid userid")]
    InvalidUserid {
        /// Which rule.
        reason: String,
    },
    /// An upload that is not a decodable image; `reason` only for our size and pixel limits.
    #[error("invalid image")]
    InvalidImage {
        /// Which limit was hit, if one was.
        reason: Option<String>,
    },
    /// Registration found no usable face in any file; `reason` when faces were found but
    /// refused for their quality (MIN_FACE_QUALITY).
    #[error("no face detected")]
    NoFaceDetected {
        /// Which photos were refused, and why.
        reason: Option<String>,
    },
    /// Match got one file field.
    #[error("expected two image files, only one found")]
    OnlyOneImage,
    /// Match got more than two file fields.
    #[error("only two images allowed")]
    TooManyImages,
    /// Match found no face in one of its photos (HTTP 200, DeepStack's choice).
    #[error("no face found")]
    NoFaceFound,
    /// Restore without a `file` part.
    #[error("No valid backup file found")]
    NoBackupFile,
    /// Restore of something that is not a gallery backup (HTTP 200, DeepStack's choice).
    #[error("Invalid backup file")]
    InvalidBackupFile,
    /// Ours: the gallery cannot be written (disk full, read-only file system); recognition
    /// goes on. DeepStack's internal error, with a `reason` a person can act on.
    #[error("error occured on the server")]
    StorageUnavailable {
        /// What is wrong with the data directory.
        reason: &'static str,
        /// SQLite's or the OS's message, for the log.
        detail: String,
    },
    /// Ours: no such route (or not with this method).
    #[error("not found")]
    NotFound,
    /// Ours (gallery API): no user of that name.
    #[error("userid not found")]
    UnknownUserid,
    /// Ours (gallery API): no sample of that id.
    #[error("sample not found")]
    UnknownSample,
    /// Ours (gallery API): a rename onto an existing userid without `merge=true`.
    #[error("userid already exists")]
    UseridExists,
    /// Ours (gallery API): no recent face of that id.
    #[error("face not found")]
    UnknownRecentFace,
    /// Ours (gallery API): no stranger group of that id.
    #[error("group not found")]
    UnknownStranger,
    /// Ours (gallery API): a query parameter out of its range; `reason` says which.
    #[error("invalid parameter")]
    InvalidParameter { reason: String },
    /// Ours (gallery API): a second re-embedding while one runs.
    #[error("re-embedding already running")]
    ReembedRunning,
    /// Anything else; the detail is logged, never sent.
    #[error("error occured on the server")]
    Internal(String),
}

impl ApiError {
    /// An internal failure, with the detail for the log.
    pub fn internal(detail: impl std::fmt::Display) -> ApiError {
        ApiError::Internal(detail.to_string())
    }
}

/// The JSON body of every error answer.
#[derive(Serialize)]
struct ErrorBody<'a> {
    success: bool,
    error: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
    duration: u8,
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::IncorrectApiKey | ApiError::IncorrectAdminKey => StatusCode::UNAUTHORIZED,
            ApiError::FacesDisabled => StatusCode::FORBIDDEN,
            ApiError::Timeout
            | ApiError::Overloaded { .. }
            | ApiError::OverBudget { .. }
            | ApiError::BodyTimeout { .. }
            | ApiError::StorageUnavailable { .. }
            | ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::NotFound
            | ApiError::UnknownUserid
            | ApiError::UnknownSample
            | ApiError::UnknownRecentFace
            | ApiError::UnknownStranger => StatusCode::NOT_FOUND,
            ApiError::UseridExists | ApiError::ReembedRunning => StatusCode::CONFLICT,
            ApiError::NoFaceFound | ApiError::InvalidBackupFile => StatusCode::OK,
            ApiError::NoImage
            | ApiError::InvalidMinConfidence
            | ApiError::MinConfidenceTooHigh
            | ApiError::NoUserid
            | ApiError::InvalidUserid { .. }
            | ApiError::InvalidImage { .. }
            | ApiError::NoFaceDetected { .. }
            | ApiError::OnlyOneImage
            | ApiError::TooManyImages
            | ApiError::NoBackupFile
            | ApiError::InvalidParameter { .. } => StatusCode::BAD_REQUEST,
        }
    }

    fn error_response(&self) -> HttpResponse {
        match self {
            ApiError::Internal(detail) => log::error!("internal error: {detail}"),
            ApiError::StorageUnavailable { reason, detail } => {
                log::error!("gallery write failed: {reason}: {detail}")
            }
            ApiError::Overloaded { queued } => {
                log::warn!("refused: {queued} requests already wait for inference (MAX_QUEUE)")
            }
            ApiError::OverBudget { wanted, budget } => log::warn!(
                "refused: a body of {wanted} bytes does not fit the memory budget of {budget} \
                 bytes (MEMORY_BUDGET_BYTES)"
            ),
            ApiError::BodyTimeout { after } => log::warn!(
                "cut: a request body did not arrive within {} s (BODY_TIMEOUT)",
                after.as_secs_f64()
            ),
            _ => {}
        }
        let overloaded;
        let reason = match self {
            ApiError::InvalidImage { reason } => reason.as_deref(),
            ApiError::InvalidUserid { reason } | ApiError::InvalidParameter { reason } => {
                Some(reason.as_str())
            }
            ApiError::NoFaceDetected { reason } => reason.as_deref(),
            ApiError::StorageUnavailable { reason, .. } => Some(*reason),
            ApiError::Overloaded { queued } => {
                overloaded = format!(
                    "server busy: {queued} requests already wait for inference (MAX_QUEUE)"
                );
                Some(overloaded.as_str())
            }
            ApiError::OverBudget { wanted, budget } => {
                overloaded = if wanted > budget {
                    format!(
                        "request of {wanted} bytes is larger than the memory budget of \
                         {budget} bytes (MEMORY_BUDGET_BYTES)"
                    )
                } else {
                    format!(
                        "server busy: the memory budget of {budget} bytes \
                         (MEMORY_BUDGET_BYTES) is in use by other requests"
                    )
                };
                Some(overloaded.as_str())
            }
            ApiError::BodyTimeout { after } => {
                overloaded = format!(
                    "request body not received within {} s (BODY_TIMEOUT)",
                    after.as_secs_f64()
                );
                Some(overloaded.as_str())
            }
            _ => None,
        };
        HttpResponse::build(self.status_code()).json(ErrorBody {
            success: false,
            error: self.to_string(),
            reason,
            duration: 0,
        })
    }
}

impl From<InferenceError> for ApiError {
    fn from(e: InferenceError) -> Self {
        match e {
            InferenceError::TimedOut => ApiError::Timeout,
            InferenceError::Busy { queued } => ApiError::Overloaded { queued },
            other => ApiError::internal(other),
        }
    }
}

impl From<VisionError> for ApiError {
    fn from(e: VisionError) -> Self {
        match e {
            VisionError::Decode(e) => e.into(),
            VisionError::Inference(detail) => ApiError::Internal(detail),
        }
    }
}

impl From<DecodeError> for ApiError {
    fn from(e: DecodeError) -> Self {
        let reason = match e {
            DecodeError::TooManyPixels { .. } => Some(format!("{e} (MAX_PIXELS)")),
            _ => None,
        };
        ApiError::InvalidImage { reason }
    }
}

impl From<GalleryError> for ApiError {
    fn from(e: GalleryError) -> Self {
        match e {
            GalleryError::InvalidBackup(why) => {
                log::warn!("restore refused: {why}");
                ApiError::InvalidBackupFile
            }
            GalleryError::EmptyUserid => ApiError::NoUserid,
            GalleryError::UnknownUser => ApiError::UnknownUserid,
            GalleryError::UserExists => ApiError::UseridExists,
            GalleryError::RecentFaceGone(_) => ApiError::UnknownRecentFace,
            GalleryError::ReembedRunning => ApiError::ReembedRunning,
            other => match storage_problem(&other) {
                Some(reason) => ApiError::StorageUnavailable {
                    reason,
                    detail: other.to_string(),
                },
                None => ApiError::internal(other),
            },
        }
    }
}

/// What a person can do something about when a gallery write fails: a full or read-only
/// data directory (an SD card the kernel remounted read-only after errors), or a shared
/// gallery that cannot be reached.
fn storage_problem(e: &GalleryError) -> Option<&'static str> {
    use rusqlite::ErrorCode;
    use std::io::ErrorKind;
    const FULL: &str = "the data directory is full: the gallery cannot be changed";
    const READ_ONLY: &str = "the data directory is read-only: the gallery cannot be changed";
    const IO: &str = "the data directory cannot be written: the gallery cannot be changed";
    const SHARED: &str = "the shared gallery (PostgreSQL) cannot be reached: the gallery \
                          cannot be changed; recognition answers from the last copy";
    match e {
        GalleryError::Unavailable(_) => Some(SHARED),
        GalleryError::Sqlite(e) => match e.sqlite_error_code()? {
            ErrorCode::DiskFull => Some(FULL),
            ErrorCode::ReadOnly => Some(READ_ONLY),
            ErrorCode::SystemIoFailure | ErrorCode::CannotOpen => Some(IO),
            _ => None,
        },
        GalleryError::Io(e) => match e.kind() {
            ErrorKind::StorageFull | ErrorKind::QuotaExceeded => Some(FULL),
            ErrorKind::ReadOnlyFilesystem | ErrorKind::PermissionDenied => Some(READ_ONLY),
            _ => None,
        },
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use actix_web::body::MessageBody;

    use super::*;

    fn answer(e: ApiError) -> (u16, String) {
        let res = e.error_response();
        let status = res.status().as_u16();
        let body = res.into_body().try_into_bytes().unwrap();
        (status, String::from_utf8(body.to_vec()).unwrap())
    }

    #[test]
    fn deepstacks_exact_bodies() {
        assert_eq!(
            answer(ApiError::IncorrectApiKey),
            (
                401,
                r#"{"success":false,"error":"Incorrect api key","duration":0}"#.into()
            )
        );
        assert_eq!(
            answer(ApiError::internal("disk on fire")),
            (
                500,
                r#"{"success":false,"error":"error occured on the server","duration":0}"#.into()
            )
        );
        assert_eq!(answer(ApiError::Timeout).0, 500);
        assert_eq!(
            answer(ApiError::Overloaded { queued: 3 }),
            (
                500,
                r#"{"success":false,"error":"failed to process request before timeout","reason":"server busy: 3 requests already wait for inference (MAX_QUEUE)","duration":0}"#.into()
            )
        );
        assert_eq!(
            answer(ApiError::NotFound),
            (
                404,
                r#"{"success":false,"error":"not found","duration":0}"#.into()
            )
        );
        let (status, body) = answer(ApiError::InvalidUserid {
            reason: "too long".into(),
        });
        assert_eq!(status, 400);
        assert_eq!(
            body,
            r#"{"success":false,"error":"invalid userid","reason":"too long","duration":0}"#
        );
        assert_eq!(answer(ApiError::FacesDisabled).0, 403);
        assert_eq!(answer(ApiError::NoFaceFound).0, 200);
        assert_eq!(answer(ApiError::InvalidBackupFile).0, 200);
        let (status, body) = answer(ApiError::InvalidImage {
            reason: Some("too big".into()),
        });
        assert_eq!(status, 400);
        assert_eq!(
            body,
            r#"{"success":false,"error":"invalid image","reason":"too big","duration":0}"#
        );
    }

    #[test]
    fn a_full_or_read_only_disk_is_named() {
        let sqlite = |code| {
            GalleryError::Sqlite(rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(code),
                None,
            ))
        };
        for (e, says) in [
            (sqlite(rusqlite::ffi::SQLITE_FULL), "full"),
            (sqlite(rusqlite::ffi::SQLITE_READONLY), "read-only"),
            (sqlite(rusqlite::ffi::SQLITE_IOERR), "cannot be written"),
        ] {
            let (status, body) = answer(e.into());
            assert_eq!(status, 500);
            assert!(
                body.contains("error occured on the server") && body.contains(says),
                "{body}"
            );
        }
        let (status, body) = answer(sqlite(rusqlite::ffi::SQLITE_CORRUPT).into());
        assert_eq!(status, 500);
        assert!(!body.contains("reason"), "{body}");
    }

    #[test]
    fn only_the_pixel_limit_gives_a_reason() {
        let e: ApiError = DecodeError::Empty.into();
        assert!(matches!(e, ApiError::InvalidImage { reason: None }));
        let e: ApiError = DecodeError::TooManyPixels {
            width: 10,
            height: 10,
            limit: 5,
        }
        .into();
        assert!(
            matches!(e, ApiError::InvalidImage { reason: Some(r) } if r.contains("MAX_PIXELS"))
        );
    }
}
