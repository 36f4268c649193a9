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
    /// An upload that is not a decodable image; `reason` only for our size and pixel limits.
    #[error("invalid image")]
    InvalidImage {
        /// Which limit was hit, if one was.
        reason: Option<String>,
    },
    /// Registration found no usable face in any file.
    #[error("no face detected")]
    NoFaceDetected,
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
            ApiError::Timeout | ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::NoFaceFound | ApiError::InvalidBackupFile => StatusCode::OK,
            ApiError::NoImage
            | ApiError::InvalidMinConfidence
            | ApiError::MinConfidenceTooHigh
            | ApiError::NoUserid
            | ApiError::InvalidImage { .. }
            | ApiError::NoFaceDetected
            | ApiError::OnlyOneImage
            | ApiError::TooManyImages
            | ApiError::NoBackupFile => StatusCode::BAD_REQUEST,
        }
    }

    fn error_response(&self) -> HttpResponse {
        if let ApiError::Internal(detail) = self {
            log::error!("internal error: {detail}");
        }
        let reason = match self {
            ApiError::InvalidImage { reason } => reason.as_deref(),
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
            other => ApiError::internal(other),
        }
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
