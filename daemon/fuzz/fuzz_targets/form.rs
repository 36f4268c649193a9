//! The form handling of every route: any Content-Type and body, delivered in any chunking,
//! through the same `read_body` the server's extractor calls.
//!
//! Input layout: byte 0 picks the Content-Type (a fixed multipart one, urlencoded, or the
//! bytes up to the first newline); byte 1 picks the chunk size; the rest is the body.
//! Invariants: no panic; the limits hold (kept file bytes, file count, field size).
#![no_main]

use actix_web::error::PayloadError;
use actix_web::http::header::{HeaderMap, HeaderValue, CONTENT_TYPE};
use actix_web::web::Bytes;
use deepstackd::http::{read_body, FormLimits};
use libfuzzer_sys::fuzz_target;

const LIMITS: FormLimits = FormLimits {
    max_upload_bytes: 4096,
    max_files: 3,
    max_field_bytes: 64,
};

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let (selector, chunk, rest) = (data[0], usize::from(data[1]).max(1), &data[2..]);
    let (content_type, body): (Vec<u8>, &[u8]) = match selector % 4 {
        0 | 1 => (b"multipart/form-data; boundary=X".to_vec(), rest),
        2 => (b"application/x-www-form-urlencoded".to_vec(), rest),
        _ => match rest.iter().position(|b| *b == b'\n') {
            Some(i) => (rest[..i].to_vec(), &rest[i + 1..]),
            None => (rest.to_vec(), &[][..]),
        },
    };
    let mut headers = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_bytes(&content_type) {
        headers.insert(CONTENT_TYPE, v);
    }
    let chunks: Vec<Result<Bytes, PayloadError>> = body
        .chunks(chunk)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    let payload = futures::stream::iter(chunks);
    let form = futures::executor::block_on(read_body(&headers, payload, LIMITS));

    assert!(form.files().len() <= LIMITS.max_files);
    let kept: usize = form.files().iter().map(|f| f.bytes.len()).sum();
    assert!(kept as u64 <= LIMITS.max_upload_bytes);
    for f in form.files() {
        assert!(!f.over_limit || f.bytes.is_empty());
    }
    for name in ["image", "userid", "api_key", "min_confidence"] {
        if let Some(v) = form.field(name) {
            assert!(v.len() <= LIMITS.max_field_bytes);
        }
        let _ = form.file(name);
    }
    let _ = form.check_file_count();
});
