//! The request body as DeepStack read it: form fields from multipart/form-data or
//! application/x-www-form-urlencoded, files from multipart only.
//!
//! Parsing never fails: whatever cannot be read (another content type, a broken multipart
//! stream) just yields fewer fields and files, and each route then answers with the error the
//! contract gives for what is missing ("No valid image file found", "Incorrect api key", ...).
//!
//! Limits ([`FormLimits`]), each turned into the route's answer rather than a parse error, so
//! the contract's order of checks holds (the API key first):
//! - upload bytes: file bytes past `max_upload_bytes` (summed over the request) are dropped,
//!   and the parts they belong to are marked `over_limit` (`invalid image` with a reason).
//!   Reading goes on, discarding, for up to [`DRAIN_BYTES`] more, so that text fields sent
//!   after a too-big file (an `api_key` after the image) are still seen; past that nothing
//!   more is read, whatever the multipart parser is buffering (a part header without an end),
//!   and the connection is closed after the answer.
//! - file parts: parts past `max_files` are not kept, only counted.
//! - text fields: a value over `max_field_bytes` is not kept, only marked too long; at most
//!   [`MAX_TEXT_FIELDS`] fields are kept.
//! - text that is not UTF-8 is marked as such, never silently replaced.
//!
//! Two limits refuse the request instead ([`BodyLimits`], the extractor's error): before a
//! byte of the body is read, the bytes it may keep (its Content-Length, at most the upload
//! limit) are drawn from the process's memory budget (`budget`), waiting at most
//! [`ADMISSION_WAIT`]; and the whole body must arrive within BODY_TIMEOUT. Either answer is
//! DeepStack's busy error with a `reason`. A refused body is read and dropped (within the
//! deadline and the wire cap) so that the client gets to read the answer; the connection is
//! closed after it.

use std::cell::Cell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use actix_multipart::Multipart;
use actix_web::dev::Payload;
use actix_web::error::PayloadError;
use actix_web::http::header::{HeaderMap, CONTENT_LENGTH, CONTENT_TYPE, TRANSFER_ENCODING};
use actix_web::web::{Bytes, BytesMut};
use actix_web::{FromRequest, HttpRequest};
use futures_util::future::LocalBoxFuture;
use futures_util::{Stream, StreamExt};

use super::error::ApiError;
use crate::budget::{MemoryBudget, Reservation};
use crate::config::{DEFAULT_MAX_FIELD_BYTES, DEFAULT_MAX_FILES, DEFAULT_MAX_UPLOAD_BYTES};

/// How much of a too-big request is still read, discarding files, to find its text fields.
pub const DRAIN_BYTES: u64 = 64 << 20;

/// Text fields kept per request; later ones are ignored (DeepStack's routes read four).
pub const MAX_TEXT_FIELDS: usize = 256;

/// Limits for reading bodies; registered as app data.
#[derive(Debug, Clone, Copy)]
pub struct FormLimits {
    /// Largest sum of part bytes (multipart) or body bytes (urlencoded) kept.
    pub max_upload_bytes: u64,
    /// Most file parts kept.
    pub max_files: usize,
    /// Largest text field kept.
    pub max_field_bytes: usize,
}

impl Default for FormLimits {
    fn default() -> Self {
        FormLimits {
            max_upload_bytes: DEFAULT_MAX_UPLOAD_BYTES,
            max_files: DEFAULT_MAX_FILES,
            max_field_bytes: DEFAULT_MAX_FIELD_BYTES,
        }
    }
}

/// How long a request may wait for its share of the memory budget before it is refused:
/// long enough for a burst of refused or finished uploads to give theirs back.
pub const ADMISSION_WAIT: Duration = Duration::from_secs(1);

/// The memory budget bodies draw from and the deadline for a body to arrive; registered as
/// app data.
#[derive(Debug, Clone)]
pub struct BodyLimits {
    /// MEMORY_BUDGET_BYTES.
    pub budget: Arc<MemoryBudget>,
    /// BODY_TIMEOUT.
    pub timeout: Duration,
}

/// A route-level override of [`FormLimits::max_upload_bytes`] (restore reads large files).
#[derive(Debug, Clone, Copy)]
pub struct MaxUploadBytes(pub u64);

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

/// Why a text field's value was not kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldProblem {
    /// Longer than `max_field_bytes`.
    TooLong {
        /// The limit.
        limit: usize,
    },
    /// Not valid UTF-8.
    NotUtf8,
}

/// Text fields and file parts of a request, in the order they came.
#[derive(Debug, Default)]
pub struct Form {
    fields: Vec<(String, Result<String, FieldProblem>)>,
    files: Vec<FilePart>,
    /// File parts past `max_files`, counted but not kept.
    extra_files: u64,
    max_files: usize,
    /// The memory budget's bytes for what the form holds, given back when it is dropped.
    held: Option<Reservation>,
}

impl Form {
    /// The first value of a text field (DeepStack's server read the first); `None` also when
    /// that value was too long or not UTF-8 (see [`Form::field_checked`]).
    pub fn field(&self, name: &str) -> Option<&str> {
        self.field_checked(name).and_then(Result::ok)
    }

    /// The first value of a text field, or why it was not kept.
    pub fn field_checked(&self, name: &str) -> Option<Result<&str, FieldProblem>> {
        self.fields
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_deref().map_err(|p| *p))
    }

    /// Every file part kept, in order.
    pub fn files(&self) -> &[FilePart] {
        &self.files
    }

    /// The first file part named `name`.
    pub fn file(&self, name: &str) -> Option<&FilePart> {
        self.files.iter().find(|f| f.name == name)
    }

    /// `invalid image` (reason MAX_FILES) when the request had more file parts than allowed.
    pub fn check_file_count(&self) -> Result<(), ApiError> {
        if self.extra_files == 0 {
            return Ok(());
        }
        Err(ApiError::InvalidImage {
            reason: Some(format!(
                "{} files in one request, over the limit of {} (MAX_FILES)",
                self.files.len() as u64 + self.extra_files,
                self.max_files
            )),
        })
    }

    /// A form of text fields only (tests).
    #[cfg(test)]
    pub fn from_fields(fields: Vec<(String, String)>) -> Form {
        Form {
            fields: fields.into_iter().map(|(n, v)| (n, Ok(v))).collect(),
            ..Form::default()
        }
    }
}

impl FromRequest for Form {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Form, ApiError>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let mut limits = req.app_data::<FormLimits>().copied().unwrap_or_default();
        if let Some(MaxUploadBytes(n)) = req.app_data::<MaxUploadBytes>() {
            limits.max_upload_bytes = *n;
        }
        let payload = payload.take();
        let headers = req.headers().clone();
        let body = req.app_data::<BodyLimits>().cloned();
        Box::pin(async move {
            let Some(body) = body else {
                return Ok(read_body(&headers, payload, limits).await);
            };
            // The form keeps at most the upload limit, and never more than the body's length:
            // its Content-Length, none without one (HTTP/1.1: no body), the limit when chunked.
            let declared = match headers.get(CONTENT_LENGTH) {
                Some(v) => v.to_str().ok().and_then(|v| v.trim().parse::<u64>().ok()),
                None if headers.contains_key(TRANSFER_ENCODING) => None,
                None => Some(0),
            };
            let wanted =
                declared.map_or(limits.max_upload_bytes, |n| n.min(limits.max_upload_bytes));
            let Some(held) = body.budget.reserve_within(wanted, ADMISSION_WAIT).await else {
                // Read and drop what the client sends (within the deadline and the wire
                // cap), so that it gets to read the answer instead of a reset.
                let drain = discard(payload, wire_cap(&limits));
                let _ = actix_web::rt::time::timeout(body.timeout, drain).await;
                return Err(ApiError::OverBudget {
                    wanted,
                    budget: body.budget.limit(),
                });
            };
            let read = read_body(&headers, payload, limits);
            let mut form = actix_web::rt::time::timeout(body.timeout, read)
                .await
                .map_err(|_| ApiError::BodyTimeout {
                    after: body.timeout,
                })?;
            form.held = Some(held);
            Ok(form)
        })
    }
}

/// Reads a request body given its headers (the content type decides how), applying `limits`.
/// Public for the fuzzer: it is the whole of the form handling, without a server.
pub async fn read_body<S>(headers: &HeaderMap, payload: S, limits: FormLimits) -> Form
where
    S: Stream<Item = Result<Bytes, PayloadError>> + Unpin + 'static,
{
    let content_type = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    match content_type.as_str() {
        "multipart/form-data" => {
            let wire = Rc::new(Cell::new(0));
            let capped = capped(payload, wire_cap(&limits), Rc::clone(&wire));
            read_multipart(Multipart::new(headers, capped), limits, &wire).await
        }
        "application/x-www-form-urlencoded" => read_urlencoded(payload, limits).await,
        _ => Form::default(),
    }
}

/// Reads and drops up to `cap` bytes of `payload`.
async fn discard<S>(mut payload: S, cap: u64)
where
    S: Stream<Item = Result<Bytes, PayloadError>> + Unpin,
{
    let mut read: u64 = 0;
    while let Some(Ok(chunk)) = payload.next().await {
        read += chunk.len() as u64;
        if read > cap {
            break;
        }
    }
}

/// Most bytes read from the wire for one request.
fn wire_cap(limits: &FormLimits) -> u64 {
    limits.max_upload_bytes.saturating_add(DRAIN_BYTES)
}

/// The payload, ending in an error once more than `cap` bytes came: the multipart parser
/// buffers what it has not parsed yet (an endless part header), and this bounds it.
fn capped<S>(
    payload: S,
    cap: u64,
    wire: Rc<Cell<u64>>,
) -> impl Stream<Item = Result<Bytes, PayloadError>> + 'static
where
    S: Stream<Item = Result<Bytes, PayloadError>> + 'static,
{
    payload.map(move |chunk| {
        let chunk = chunk?;
        wire.set(wire.get() + chunk.len() as u64);
        if wire.get() > cap {
            Err(PayloadError::Overflow)
        } else {
            Ok(chunk)
        }
    })
}

/// Reads a whole multipart body into a [`Form`], applying `limits`; `wire` counts the bytes
/// read from the network (shared with [`capped`]).
async fn read_multipart(mut multipart: Multipart, limits: FormLimits, wire: &Cell<u64>) -> Form {
    let mut form = Form {
        max_files: limits.max_files,
        ..Form::default()
    };
    let cap = wire_cap(&limits);
    // Bytes held in `form` (dropped parts released).
    let mut kept: u64 = 0;
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
        let counted_only = if is_file {
            form.files.len() >= limits.max_files
        } else {
            form.fields.len() >= MAX_TEXT_FIELDS
        };
        if is_file && counted_only {
            form.extra_files += 1;
        }
        let mut data = BytesMut::new();
        let mut dropped = is_file && files_over;
        let mut too_long = false;
        while let Some(chunk) = part.next().await {
            let Ok(chunk) = chunk else {
                if wire.get() > cap {
                    log::warn!("request body over {cap} bytes: reading stopped");
                    if is_file && !counted_only {
                        form.files.push(over_limit_part(name));
                    }
                }
                break 'parts;
            };
            if dropped || too_long || counted_only {
                continue;
            }
            if !is_file && data.len() + chunk.len() > limits.max_field_bytes {
                too_long = true;
                kept -= data.len() as u64;
                data = BytesMut::new();
                continue;
            }
            if kept + chunk.len() as u64 > limits.max_upload_bytes {
                dropped = true;
                files_over |= is_file;
                kept -= data.len() as u64;
                data = BytesMut::new();
                continue;
            }
            kept += chunk.len() as u64;
            data.extend_from_slice(&chunk);
        }
        if counted_only {
            continue;
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
        } else if too_long {
            let limit = limits.max_field_bytes;
            form.fields
                .push((name, Err(FieldProblem::TooLong { limit })));
        } else if !dropped {
            form.fields.push((name, text(data.to_vec())));
        }
    }
    form
}

fn text(bytes: Vec<u8>) -> Result<String, FieldProblem> {
    String::from_utf8(bytes).map_err(|_| FieldProblem::NotUtf8)
}

fn over_limit_part(name: String) -> FilePart {
    FilePart {
        name,
        bytes: Bytes::new(),
        over_limit: true,
    }
}

async fn read_urlencoded<S>(mut payload: S, limits: FormLimits) -> Form
where
    S: Stream<Item = Result<Bytes, PayloadError>> + Unpin,
{
    let mut body = BytesMut::new();
    let mut read: u64 = 0;
    let mut over = false;
    while let Some(chunk) = payload.next().await {
        let Ok(chunk) = chunk else {
            return Form::default();
        };
        read += chunk.len() as u64;
        // Past the limit the body is ignored, but read on (up to the drain) so the client
        // sees the answer instead of a connection reset in the middle of its upload.
        if read > wire_cap(&limits) {
            break;
        }
        if over || read > limits.max_upload_bytes {
            over = true;
            body = BytesMut::new();
            continue;
        }
        body.extend_from_slice(&chunk);
    }
    if over {
        log::warn!(
            "urlencoded body over {} bytes: ignored",
            limits.max_upload_bytes
        );
        return Form::default();
    }
    parse_urlencoded(&body, limits)
}

/// `a=1&b=x+y%21`: `+` is a space, `%XX` a byte; pairs without `=` have an empty value.
/// Values are checked like multipart text (size, UTF-8) instead of being mangled.
pub fn parse_urlencoded(body: &[u8], limits: FormLimits) -> Form {
    let mut form = Form {
        max_files: limits.max_files,
        ..Form::default()
    };
    for pair in body.split(|b| *b == b'&').filter(|p| !p.is_empty()) {
        if form.fields.len() >= MAX_TEXT_FIELDS {
            break;
        }
        let (name, value) = match pair.iter().position(|b| *b == b'=') {
            Some(i) => (&pair[..i], &pair[i + 1..]),
            None => (pair, &[][..]),
        };
        let name = String::from_utf8_lossy(&percent_decode(name)).into_owned();
        let value = percent_decode(value);
        let value = if value.len() > limits.max_field_bytes {
            Err(FieldProblem::TooLong {
                limit: limits.max_field_bytes,
            })
        } else {
            text(value)
        };
        form.fields.push((name, value));
    }
    form
}

fn percent_decode(s: &[u8]) -> Vec<u8> {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        match s[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < s.len() => match (hex(s[i + 1]), hex(s[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> FormLimits {
        FormLimits {
            max_upload_bytes: 1000,
            max_files: 2,
            max_field_bytes: 8,
        }
    }

    #[test]
    fn urlencoded_is_decoded_and_checked() {
        let form = parse_urlencoded(b"a=1&b=x+y%21&c&d=%zz&e=%ff&f=123456789&a=2&g=%4", limits());
        assert_eq!(form.field("a"), Some("1"));
        assert_eq!(form.field("b"), Some("x y!"));
        assert_eq!(form.field("c"), Some(""));
        assert_eq!(form.field("d"), Some("%zz"));
        assert_eq!(form.field_checked("e"), Some(Err(FieldProblem::NotUtf8)));
        assert_eq!(form.field("e"), None);
        assert_eq!(
            form.field_checked("f"),
            Some(Err(FieldProblem::TooLong { limit: 8 }))
        );
        assert_eq!(form.field("g"), Some("%4"));
        assert_eq!(form.field("missing"), None);
        assert!(form.files().is_empty() && form.check_file_count().is_ok());
    }

    /// Runs `read_body` on `body` delivered in chunks of `chunk` bytes (what the fuzzer does).
    fn read(content_type: &str, body: &[u8], chunk: usize, limits: FormLimits) -> Form {
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, content_type.parse().unwrap());
        let chunks: Vec<Result<Bytes, PayloadError>> = body
            .chunks(chunk)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        let payload = futures_util::stream::iter(chunks);
        actix_web::rt::System::new().block_on(read_body(&headers, payload, limits))
    }

    fn part(name: &str, filename: Option<&str>, value: &[u8]) -> Vec<u8> {
        let disposition = match filename {
            Some(f) => format!("form-data; name=\"{name}\"; filename=\"{f}\""),
            None => format!("form-data; name=\"{name}\""),
        };
        let mut p = format!("--B\r\nContent-Disposition: {disposition}\r\n\r\n").into_bytes();
        p.extend_from_slice(value);
        p.extend_from_slice(b"\r\n");
        p
    }

    #[test]
    fn multipart_limits_hold_whatever_the_chunking() {
        let body = [
            part("image", Some("a.jpg"), b"first"),
            part("userid", None, b"Zo\xc3\xab"),
            part("api_key", None, b"\xff\xfe"),
            part("comment", None, &[b'c'; 9]),
            part("image", Some("b.jpg"), b"second"),
            part("image", Some("c.jpg"), b"third"),
            part("image", Some("d.jpg"), b"fourth"),
            part("min_confidence", None, b"0.5"),
            b"--B--\r\n".to_vec(),
        ]
        .concat();
        for chunk in [1, 2, 7, 64, body.len()] {
            let form = read("multipart/form-data; boundary=B", &body, chunk, limits());
            let names: Vec<&[u8]> = form.files().iter().map(|f| &f.bytes[..]).collect();
            assert_eq!(names, [&b"first"[..], b"second"], "chunk {chunk}");
            assert_eq!(form.field("userid"), Some("Zoë"));
            assert_eq!(
                form.field_checked("api_key"),
                Some(Err(FieldProblem::NotUtf8))
            );
            assert_eq!(
                form.field_checked("comment"),
                Some(Err(FieldProblem::TooLong { limit: 8 }))
            );
            assert_eq!(form.field("min_confidence"), Some("0.5"));
            match form.check_file_count() {
                Err(ApiError::InvalidImage { reason: Some(r) }) => {
                    assert!(r.starts_with("4 files") && r.contains("MAX_FILES"), "{r}")
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn an_endless_part_header_stops_at_the_wire_cap() {
        let limits = FormLimits {
            max_upload_bytes: 10,
            ..limits()
        };
        // The cap is max_upload_bytes + DRAIN_BYTES; the parser never sees the rest.
        let mut body = b"--B\r\nX-Junk: ".to_vec();
        body.resize(DRAIN_BYTES as usize + 1024, b'A');
        let form = read("multipart/form-data; boundary=B", &body, 1 << 16, limits);
        assert!(form.files().is_empty() && form.field("X-Junk").is_none());
    }

    #[test]
    fn over_the_upload_limit_a_file_is_marked_and_later_text_still_read() {
        let body = [
            part("image", Some("a.jpg"), &[1; 600]),
            part("image", Some("b.jpg"), &[2; 600]),
            part("api_key", None, b"k"),
            b"--B--\r\n".to_vec(),
        ]
        .concat();
        let form = read("multipart/form-data; boundary=B", &body, 100, limits());
        let marks: Vec<bool> = form.files().iter().map(|f| f.over_limit).collect();
        assert_eq!(marks, [false, true]);
        assert!(form.files()[1].bytes.is_empty());
        assert_eq!(form.field("api_key"), Some("k"));
    }

    #[test]
    fn urlencoded_keeps_a_bounded_number_of_fields() {
        let body = "x=1&".repeat(MAX_TEXT_FIELDS * 4);
        let form = parse_urlencoded(body.as_bytes(), limits());
        assert_eq!(form.fields.len(), MAX_TEXT_FIELDS);
    }
}
