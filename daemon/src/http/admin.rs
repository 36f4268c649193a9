//! Backup, restore (admin key) and the status page.

use std::time::{SystemTime, UNIX_EPOCH};

use actix_web::http::header::{ContentDisposition, DispositionParam, DispositionType};
use actix_web::{web, HttpResponse};
use serde::Serialize;

use super::error::ApiError;
use super::faces::{success, Nothing};
use super::form::Form;
use super::AppState;
use crate::gallery::{ReembedProgress, StoreHealth};
use crate::vision::models::{shipped_sha256, ModelFile};

/// Largest backup file a restore reads. Larger than the photo limit: a gallery with its face
/// crops is about 6 KB a sample, so this holds some 150,000 samples.
pub const MAX_RESTORE_BYTES: u64 = 1 << 30;

/// POST /v1/backup: the gallery as a file download.
pub async fn backup(state: web::Data<AppState>, form: Form) -> Result<HttpResponse, ApiError> {
    state.access.admin_route(&form)?;
    let gallery = state.gallery.clone();
    // SQLite's online backup: a consistent snapshot while registrations go on.
    let bytes = web::block(move || gallery.backup_bytes())
        .await
        .map_err(ApiError::internal)??;
    let name = format!("Backup_{}.backup", utc_timestamp(SystemTime::now()));
    Ok(HttpResponse::Ok()
        .content_type("application/octet-stream")
        .insert_header(ContentDisposition {
            disposition: DispositionType::Attachment,
            parameters: vec![DispositionParam::Filename(name)],
        })
        .body(bytes))
}

/// POST /v1/restore: replaces the gallery with the backup in the `file` part, or changes
/// nothing.
pub async fn restore(state: web::Data<AppState>, form: Form) -> Result<HttpResponse, ApiError> {
    state.access.admin_route(&form)?;
    let file = form.file("file").cloned().ok_or(ApiError::NoBackupFile)?;
    if file.over_limit {
        log::warn!("restore refused: backup over {MAX_RESTORE_BYTES} bytes");
        return Err(ApiError::InvalidBackupFile);
    }
    let gallery = state.gallery.clone();
    web::block(move || gallery.restore_from_bytes(&file.bytes))
        .await
        .map_err(ApiError::internal)??;
    Ok(success(Nothing {}, 0))
}

#[derive(Serialize)]
struct Status {
    version: &'static str,
    mode: &'static str,
    faces_enabled: bool,
    models: Vec<ModelStatus>,
    users: usize,
    samples: usize,
    uptime_seconds: u64,
    threadcount: usize,
    /// The current or last re-embedding (`POST /v1/gallery/reembed`).
    reembed: ReembedProgress,
    /// Which store holds the gallery and whether it can be reached.
    gallery: StoreHealth,
    /// Whether recognize keeps the faces it sees, and how many a full queue dropped.
    recent_faces: RecentStatus,
}

#[derive(Serialize)]
struct RecentStatus {
    recording: bool,
    dropped: u64,
}

#[derive(Serialize)]
struct ModelStatus {
    role: &'static str,
    name: &'static str,
    sha256: String,
    origin: String,
    /// The file is the one this release ships (its sha256 is in models-int8/SHA256SUMS).
    shipped: bool,
}

impl ModelStatus {
    fn new(role: &'static str, file: &ModelFile) -> ModelStatus {
        ModelStatus {
            role,
            name: file.name,
            sha256: file.sha256.clone(),
            origin: file.origin.clone(),
            shipped: shipped_sha256(file.name) == Some(file.sha256.as_str()),
        }
    }
}

/// GET /v1/status: what runs, for the CLI and monitoring. Holds no key.
pub async fn status(state: web::Data<AppState>) -> HttpResponse {
    let pipeline = state.pool.pipeline();
    let models = pipeline.models();
    let (users, samples) = state.gallery.stats();
    success(
        Status {
            version: env!("CARGO_PKG_VERSION"),
            mode: pipeline.mode().name(),
            faces_enabled: state.access.faces_enabled,
            models: vec![
                ModelStatus::new("detector", &models.detector),
                ModelStatus::new("recognizer", &models.recognizer),
            ],
            users,
            samples,
            uptime_seconds: state.started.elapsed().as_secs(),
            threadcount: state.pool.threads(),
            reembed: state.gallery.reembed_progress(),
            gallery: state.gallery.health(),
            recent_faces: RecentStatus {
                recording: state.recent.is_some(),
                dropped: state.recent.as_ref().map_or(0, |r| r.dropped()),
            },
        },
        0,
    )
}

/// `YYYY-MM-DD_HH-MM-SS` in UTC, safe in a file name on every system.
fn utc_timestamp(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02}_{:02}-{:02}-{:02}",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (Howard Hinnant's
/// `civil_from_days`), so no date crate is needed for one file name.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn timestamps() {
        assert_eq!(utc_timestamp(UNIX_EPOCH), "1970-01-01_00-00-00");
        // 2024-02-29 12:34:56 UTC, a leap day.
        let t = UNIX_EPOCH + Duration::from_secs(1_709_210_096);
        assert_eq!(utc_timestamp(t), "2024-02-29_12-34-56");
    }
}
