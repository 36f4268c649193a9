//! Recent faces: every face recognize saw, named or not, with its aligned crop, embedding,
//! the answer given and when, in the gallery's own database (table `recent_faces`, in both
//! stores). Kept within [`RecentBounds`]: older than the retention or beyond the newest
//! `max_faces` is deleted whenever a batch is stored, and hourly by the recorder.
//!
//! Unknown faces are grouped as they are stored (`gallery::strangers`): `group` is the id of
//! the first face of the group, the same stranger as far as the embeddings tell.
//!
//! The statements are shared by both stores: SQLite reads `$1`... as parameters numbered in
//! the order they first appear, which is how they are written here.

use std::time::Duration;

use serde::Serialize;

use crate::gallery::sqlite::schema::decode_embedding;
use crate::gallery::{GalleryError, NewSample};
use crate::vision::calibration::detection_confidence;
use crate::vision::quality::Quality;

/// What recognize saw of one face and answered for it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Sighting {
    /// Unix milliseconds.
    pub seen_at: i64,
    /// The `camera` form field of the request, if it had one.
    pub camera: Option<String>,
    /// The user recognize answered; `None`: unknown.
    pub userid: Option<String>,
    /// The confidence it answered with (0 for unknown).
    pub confidence: f32,
    /// Detector confidence of the face.
    pub det_score: f32,
    /// The face's quality figures as registration measures them (`vision::quality`): the
    /// score puts a group's best crop in front and gates naming a stranger. `None` for faces
    /// kept before they were measured.
    pub quality: Option<Quality>,
    /// Where it was in the photo.
    pub bbox: FaceBox,
}

/// A face to keep: the sighting and the face itself.
#[derive(Debug, Clone)]
pub struct SeenFace {
    pub sighting: Sighting,
    /// L2-normalised embedding.
    pub embedding: Vec<f32>,
    /// Which model made the embedding.
    pub model: String,
    /// JPEG of the aligned 112x112 face.
    pub crop: Vec<u8>,
}

/// A face box in pixels of the photo, DeepStack's key order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct FaceBox {
    pub y_min: u32,
    pub x_min: u32,
    pub y_max: u32,
    pub x_max: u32,
}

/// A kept face as the gallery API lists it (crop and embedding fetched apart).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RecentFace {
    /// Never reused.
    pub id: i64,
    /// The stranger group of an unknown face (`None` for a named one).
    pub group: Option<i64>,
    #[serde(flatten)]
    pub sighting: Sighting,
}

/// How much is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecentBounds {
    /// Faces older than this are deleted.
    pub keep_for: Duration,
    /// At most this many faces, the newest.
    pub max_faces: usize,
}

impl RecentBounds {
    /// The oldest `seen_at` kept at `now_ms`.
    pub fn cutoff_ms(&self, now_ms: i64) -> i64 {
        now_ms.saturating_sub(self.keep_for.as_millis().min(i64::MAX as u128) as i64)
    }

    /// `max_faces` as the OFFSET of the newest face past the bound.
    pub fn max_faces_i64(&self) -> i64 {
        self.max_faces.min(i64::MAX as usize) as i64
    }
}

pub(crate) const INSERT: &str = "INSERT INTO recent_faces(seen_at, camera, userid, confidence,
    det_score, x_min, y_min, x_max, y_max, embedding, model, crop, group_id, quality, face_px, sharpness, yaw, pitch)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)
    RETURNING id";

/// A face that starts a group is its first face.
pub(crate) const START_GROUP: &str = "UPDATE recent_faces SET group_id = id WHERE id = $1";

/// The groups that still have a face (the index on group_id answers it).
pub(crate) const KEPT_GROUPS: &str =
    "SELECT DISTINCT group_id FROM recent_faces WHERE group_id IS NOT NULL";

/// Grouped faces stored after `$1`, in order: how a recorder learns the groups at start,
/// and those another node (PostgreSQL) added since.
pub(crate) const GROUPED_SINCE: &str = "SELECT id, group_id, embedding FROM recent_faces
    WHERE id > $1 AND group_id IS NOT NULL ORDER BY id";

/// Older than the retention.
pub(crate) const PRUNE_OLD: &str = "DELETE FROM recent_faces WHERE seen_at < $1";

/// Beyond the newest `$1`.
pub(crate) const PRUNE_COUNT: &str = "DELETE FROM recent_faces WHERE id <=
    (SELECT id FROM recent_faces ORDER BY id DESC LIMIT 1 OFFSET $1)";

/// Newest first, below an id, of one group if `$2` is not NULL.
pub(crate) const LIST: &str = "SELECT id, seen_at, camera, userid, confidence, det_score,
    x_min, y_min, x_max, y_max, group_id, quality, face_px, sharpness, yaw, pitch
    FROM recent_faces
    WHERE id < $1 AND (CAST($2 AS BIGINT) IS NULL OR group_id = $2) ORDER BY id DESC LIMIT $3";

/// All kept, or of one group.
pub(crate) const COUNT: &str = "SELECT count(*) FROM recent_faces
    WHERE CAST($1 AS BIGINT) IS NULL OR group_id = $1";
pub(crate) const CROP: &str = "SELECT crop FROM recent_faces WHERE id = $1";
pub(crate) const DELETE_ONE: &str = "DELETE FROM recent_faces WHERE id = $1";
pub(crate) const DELETE_ALL: &str = "DELETE FROM recent_faces";
pub(crate) const DELETE_GROUP: &str = "DELETE FROM recent_faces WHERE group_id = $1";

/// Stranger groups, the most recently seen first, below a last-seen time: each with its
/// face count, first and last sighting and its best face (highest quality, then newest).
/// The index on (group_id, quality, seen_at) answers it without reading the rows' crops.
pub(crate) const GROUPS: &str = "SELECT g.group_id, count(*), min(g.seen_at), max(g.seen_at),
    (SELECT b.id FROM recent_faces b WHERE b.group_id = g.group_id
        ORDER BY b.quality DESC, b.id DESC LIMIT 1)
    FROM recent_faces g WHERE g.group_id IS NOT NULL
    GROUP BY g.group_id HAVING max(g.seen_at) < $1
    ORDER BY max(g.seen_at) DESC, g.group_id DESC LIMIT $2";

pub(crate) const COUNT_GROUPS: &str =
    "SELECT count(DISTINCT group_id) FROM recent_faces WHERE group_id IS NOT NULL";

/// A stranger group as the gallery API lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StrangerGroup {
    /// The id of its first face.
    pub group: i64,
    /// How many of its faces are kept.
    pub faces: i64,
    /// Unix milliseconds of its first and last kept sighting.
    pub first_seen: i64,
    pub last_seen: i64,
    /// Its best face (highest quality), whose crop goes in front.
    pub cover: i64,
}

/// A row of [`GROUPED_SINCE`] as [`crate::gallery::strangers::StrangerGroups::catch_up`]
/// takes it.
pub(crate) fn grouped(
    id: i64,
    group: i64,
    embedding: &[u8],
) -> Result<(i64, i64, Vec<f32>), GalleryError> {
    Ok((id, group, embedding_of(id, embedding)?))
}

/// The embedding of recent face `id` from its stored bytes.
fn embedding_of(id: i64, bytes: &[u8]) -> Result<Vec<f32>, GalleryError> {
    decode_embedding(bytes).ok_or_else(|| {
        GalleryError::Corrupt(format!(
            "recent face {id}: an embedding of {} bytes",
            bytes.len()
        ))
    })
}

/// The quality columns of a row, as both stores read them (`face_px` NULL: never measured).
pub(crate) struct QualityColumns {
    pub score: f64,
    pub face_px: Option<i64>,
    pub sharpness: Option<f64>,
    pub yaw: Option<f64>,
    pub pitch: Option<f64>,
}

impl QualityColumns {
    /// The columns of `quality` (`None`: NULLs) in [`INSERT`]'s order.
    pub fn of(quality: Option<&Quality>) -> QualityColumns {
        QualityColumns {
            score: quality.map_or(0.0, |q| f64::from(q.score)),
            face_px: quality.map(|q| i64::from(q.face_px)),
            sharpness: quality.map(|q| f64::from(q.sharpness)),
            yaw: quality.map(|q| f64::from(q.yaw)),
            pitch: quality.map(|q| f64::from(q.pitch)),
        }
    }

    /// The figures of a face whose detector score was `det_score` (the detector's own scale).
    pub fn figures(&self, det_score: f32) -> Option<Quality> {
        let face_px = self.face_px?;
        Some(Quality {
            score: self.score as f32,
            face_px: face_px.clamp(0, i64::from(u32::MAX)) as u32,
            sharpness: self.sharpness.unwrap_or(0.0) as f32,
            det_score: detection_confidence(det_score),
            yaw: self.yaw.unwrap_or(0.0) as f32,
            pitch: self.pitch.unwrap_or(0.0) as f32,
        })
    }
}

/// Recent faces as samples, for naming them: by group, or one face.
pub(crate) const AS_SAMPLES_OF_GROUP: &str = "SELECT id, embedding, model, crop, det_score,
    quality, face_px, sharpness, yaw, pitch, userid FROM recent_faces WHERE group_id = $1
    ORDER BY id";
pub(crate) const AS_SAMPLE: &str = "SELECT id, embedding, model, crop, det_score,
    quality, face_px, sharpness, yaw, pitch, userid FROM recent_faces WHERE id = $1";

/// Which recent faces to name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecentFaces {
    /// Every face of a stranger group.
    Group(i64),
    /// One face.
    Face(i64),
}

/// A recent face as a registration sample would be: its id and the sample.
#[derive(Debug, Clone)]
pub struct RecentSample {
    pub id: i64,
    /// The user recognize gave the face to, `None` for an unknown face.
    pub answer: Option<String>,
    pub sample: NewSample,
}

/// A row of [`AS_SAMPLE`] / [`AS_SAMPLES_OF_GROUP`].
pub(crate) fn as_sample(
    id: i64,
    embedding: &[u8],
    model: String,
    crop: Vec<u8>,
    det_score: f64,
    quality: QualityColumns,
    answer: Option<String>,
) -> Result<RecentSample, GalleryError> {
    let quality = quality.figures(det_score as f32);
    Ok(RecentSample {
        id,
        answer,
        sample: NewSample {
            embedding: embedding_of(id, embedding)?,
            model,
            crop,
            source: format!("recent face {id}"),
            det_score: detection_confidence(det_score as f32),
            quality,
            negative: false,
        },
    })
}

/// A listed row from its columns in [`LIST`]'s order (both stores read them as these types).
#[allow(clippy::too_many_arguments)]
pub(crate) fn listed(
    id: i64,
    seen_at: i64,
    camera: Option<String>,
    userid: Option<String>,
    confidence: f64,
    det_score: f64,
    corners: [i64; 4],
    group: Option<i64>,
    quality: QualityColumns,
) -> RecentFace {
    let px = |v: i64| v.clamp(0, i64::from(u32::MAX)) as u32;
    RecentFace {
        id,
        group,
        sighting: Sighting {
            seen_at,
            camera,
            userid,
            confidence: confidence as f32,
            det_score: det_score as f32,
            quality: quality.figures(det_score as f32),
            bbox: FaceBox {
                x_min: px(corners[0]),
                y_min: px(corners[1]),
                x_max: px(corners[2]),
                y_max: px(corners[3]),
            },
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cutoff_is_now_minus_the_retention_and_never_overflows() {
        let bounds = RecentBounds {
            keep_for: Duration::from_secs(3600),
            max_faces: 10,
        };
        assert_eq!(bounds.cutoff_ms(10_000_000), 10_000_000 - 3_600_000);
        let forever = RecentBounds {
            keep_for: Duration::MAX,
            max_faces: usize::MAX,
        };
        assert_eq!(forever.cutoff_ms(5), 5 - i64::MAX); // nothing is ever old
        assert_eq!(forever.max_faces_i64(), i64::MAX);
    }
}
