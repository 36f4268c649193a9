//! The request body as DeepStack read it: form fields from multipart/form-data or
//! application/x-www-form-urlencoded, files from multipart only.
//!
//! Parsing never fails: whatever cannot be read (another content type, a broken multipart
//! stream) just yields fewer fields and files, and each route then answers with the error the
//! contract gives for what is missing ("No valid image file found", "Incorrect api key", ...).
//!
//! The upload limit: file bytes past [`FormLimits::max_upload_bytes`] (summed over the
//! request) are dropped, and the parts they belong to are marked `over_limit`, so the route
//! answers `invalid image` with a reason, in the contract's order of checks. Reading goes on,
//! discarding, for up to [`DRAIN_BYTES`] more, so that text fields sent after a too-big file
//! (an `api_key` after the image) are still seen; past that the connection is cut.

use actix_multipart::Multipart;
use actix_web::dev::Payload;
use actix_web::web::{Bytes, BytesMut};
use actix_web::{FromRequest, HttpMessage, HttpRequest};
use futures_util::future::LocalBoxFuture;
use futures_util::StreamExt;

use super::error::ApiError;

/// How much of a too-big request is still read, discarding files, to find its text fields.
pub const DRAIN_BYTES: u64 = 64 << 20;

/// Limits for reading bodies; registered as app data.
#[derive(Debug, Clone, Copy)]
pub struct FormLimits {
    /// Largest sum of part bytes (multipart) or body bytes (urlencoded) kept.
    pub max_upload_bytes: u64,
}

/// One file part of a multipart body.
#[derive(Debug, Clone)]
pub struct FilePart {
    /// The form field name (`image`, `image1`, ...).
    pub name: String,
    /// Its bytes; empty when `over_limit`.
    pub bytes: Bytes,
    /// The part pushed the request over the upload limit; its bytes were dropped.
    pub over_limit: bool,
}

/// Text fields and file parts of a request, in the order they came.
#[derive(Debug, Default)]
pub struct Form {
    fields: Vec<(String, String)>,
    files: Vec<FilePart>,
}

impl Form {
    /// The first value of a text field (DeepStack's server read the first).
    pub fn field(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every file part, in order.
    pub fn files(&self) -> &[FilePart] {
        &self.files
    }

    /// The first file part named `name`.
    pub fn file(&self, name: &str) -> Option<&FilePart> {
        self.files.iter().find(|f| f.name == name)
    }

    /// A form of text fields only (tests).
    #[cfg(test)]
    pub fn from_fields(fields: Vec<(String, String)>) -> Form {
        Form {
            fields,
            ..Form::default()
        }
    }
}

impl FromRequest for Form {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Form, ApiError>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let limit = req
            .app_data::<FormLimits>()
            .map_or(crate::config::DEFAULT_MAX_UPLOAD_BYTES, |l| {
                l.max_upload_bytes
            });
        let content_type = req.content_type().to_ascii_lowercase();
        let payload = payload.take();
        let headers = req.headers().clone();
        Box::pin(async move {
            let mut form = Form::default();
            match content_type.as_str() {
                "multipart/form-data" => {
                    read_multipart(&mut form, Multipart::new(&headers, payload), limit).await
                }
                "application/x-www-form-urlencoded" => {
                    read_urlencoded(&mut form, payload, limit).await
                }
                _ => {}
            }
            Ok(form)
        })
    }
}

async fn read_multipart(form: &mut Form, mut multipart: Multipart, limit: u64) {
    // Bytes held in `form` (dropped parts released), and bytes read from the wire.
    let mut kept: u64 = 0;
    let mut read: u64 = 0;
    // Once a file went over the limit, later files are dropped too; text fields still fit.
    let mut files_over = false;
    'parts: while let Some(part) = multipart.next().await {
        let Ok(mut part) = part else {
            break; // malformed: keep what was read so far
        };
        let name = part.name().unwrap_or_default().to_owned();
        // Go's multipart reader, which DeepStack used: a part with a filename is a file.
        let is_file = part
            .content_disposition()
            .and_then(|cd| cd.get_filename())
            .is_some_and(|f| !f.is_empty());
        let mut data = BytesMut::new();
        let mut dropped = is_file && files_over;
        while let Some(chunk) = part.next().await {
            let Ok(chunk) = chunk else {
                break 'parts;
            };
            read += chunk.len() as u64;
            if read > limit.saturating_add(DRAIN_BYTES) {
                log::warn!("request body over {read} bytes: reading stopped");
                if is_file {
                    form.files.push(over_limit_part(name));
                }
                break 'parts;
            }
            if dropped {
                continue;
            }
            if kept + chunk.len() as u64 > limit {
                dropped = true;
                files_over |= is_file;
                kept -= data.len() as u64;
                data = BytesMut::new();
                continue;
            }
            kept += chunk.len() as u64;
            data.extend_from_slice(&chunk);
        }
        if is_file {
            form.files.push(if dropped {
                over_limit_part(name)
            } else {
                FilePart {
                    name,
                    bytes: data.freeze(),
                    over_limit: false,
                }
            });
        } else if !dropped {
            form.fields
                .push((name, String::from_utf8_lossy(&data).into_owned()));
        }
    }
}

fn over_limit_part(name: String) -> FilePart {
    FilePart {
        name,
        bytes: Bytes::new(),
        over_limit: true,
    }
}

async fn read_urlencoded(form: &mut Form, mut payload: Payload, limit: u64) {
    let mut body = BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let Ok(chunk) = chunk else {
            return;
        };
        if (body.len() + chunk.len()) as u64 > limit {
            log::warn!("urlencoded body over {limit} bytes: ignored");
            return;
        }
        body.extend_from_slice(&chunk);
    }
    // A malformed body yields no fields, like a missing one.
    form.fields = serde_urlencoded::from_bytes(&body).unwrap_or_default();
}
