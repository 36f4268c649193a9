//! Access checks in the contract's order: the API key first (401), then `VISION-FACE` (403).
//!
//! The gallery API and the web page also take the keys from the `X-Api-Key` and
//! `X-Admin-Key` headers (a GET has no form, and a header keeps the key out of URLs and logs).

use actix_web::HttpRequest;
use sha2::{Digest, Sha256};

use super::error::ApiError;
use super::form::Form;

/// Keys and the face switch, as configured.
#[derive(Clone, Default)]
pub struct Access {
    /// Required `api_key` on the face routes; `None` when unset or empty.
    pub api_key: Option<String>,
    /// Required `admin_key` on backup and restore; `None` when unset or empty.
    pub admin_key: Option<String>,
    /// `VISION-FACE=True`.
    pub faces_enabled: bool,
}

impl Access {
    /// The checks of every `/v1/vision/face*` route: API key, then the face switch.
    pub fn face_route(&self, form: &Form) -> Result<(), ApiError> {
        if !key_matches(self.api_key.as_deref(), form.field("api_key")) {
            return Err(ApiError::IncorrectApiKey);
        }
        if !self.faces_enabled {
            return Err(ApiError::FacesDisabled);
        }
        Ok(())
    }

    /// The check of backup and restore.
    pub fn admin_route(&self, form: &Form) -> Result<(), ApiError> {
        if key_matches(self.admin_key.as_deref(), form.field("admin_key")) {
            Ok(())
        } else {
            Err(ApiError::IncorrectAdminKey)
        }
    }

    /// The checks of the gallery API: the API key from the `X-Api-Key` header or the
    /// `api_key` field, then the face switch.
    pub fn gallery_route(&self, req: &HttpRequest, form: &Form) -> Result<(), ApiError> {
        let given = header(req, API_KEY_HEADER).or_else(|| form.field("api_key"));
        if !key_matches(self.api_key.as_deref(), given) {
            return Err(ApiError::IncorrectApiKey);
        }
        if !self.faces_enabled {
            return Err(ApiError::FacesDisabled);
        }
        Ok(())
    }

    /// The check of the gallery's admin routes (re-embedding): the admin key from the
    /// `X-Admin-Key` header or the `admin_key` field.
    pub fn gallery_admin_route(&self, req: &HttpRequest, form: &Form) -> Result<(), ApiError> {
        let given = header(req, ADMIN_KEY_HEADER).or_else(|| form.field("admin_key"));
        if key_matches(self.admin_key.as_deref(), given) {
            Ok(())
        } else {
            Err(ApiError::IncorrectAdminKey)
        }
    }
}

/// Header carrying the API key on the gallery API.
pub const API_KEY_HEADER: &str = "x-api-key";
/// Header carrying the admin key on the gallery API.
pub const ADMIN_KEY_HEADER: &str = "x-admin-key";

fn header<'a>(req: &'a HttpRequest, name: &str) -> Option<&'a str> {
    req.headers().get(name).and_then(|v| v.to_str().ok())
}

/// No key configured: anything (also nothing) passes. Otherwise the given key must be equal,
/// compared in constant time: both sides are hashed first, so neither the position of the
/// first differing byte nor the key's length shows in the timing.
fn key_matches(expected: Option<&str>, given: Option<&str>) -> bool {
    let Some(expected) = expected else {
        return true;
    };
    let Some(given) = given else {
        return false;
    };
    let (a, b) = (Sha256::digest(expected), Sha256::digest(given));
    a.iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys() {
        assert!(key_matches(None, None));
        assert!(key_matches(None, Some("")));
        assert!(key_matches(None, Some("anything")));
        assert!(key_matches(Some("k"), Some("k")));
        assert!(!key_matches(Some("k"), None));
        assert!(!key_matches(Some("k"), Some("")));
        assert!(!key_matches(Some("k"), Some("K")));
        assert!(!key_matches(Some("k"), Some("kk")));
    }
}
