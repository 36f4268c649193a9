//! The face gallery: who is registered, durable in a store, searchable in memory.
//!
//! Two stores sit behind [`Gallery`], so that the HTTP layer and the [`index`] never know
//! which one they talk to:
//! - [`sqlite`], the embedded default: `<data_dir>/faces.sqlite3`, one board, one gallery;
//! - [`postgres`] (`GALLERY_URL=postgresql://...`): several daemons share one gallery. Every
//!   write appends to a change log in the same transaction, and each node follows the log
//!   into its own in-memory index (LISTEN/NOTIFY wakes it; a node cut off catches up from the
//!   last change it applied).
//!
//! Either way the store is the source of truth: a change is committed there before the index
//! shows it, and recognition only ever reads the index, so it goes on while the store is
//! unreachable. A backup is the same file (an SQLite gallery) from either store, and restores
//! into either.

mod error;
pub mod index;
pub mod postgres;
pub mod recent;
mod reembed;
pub mod sqlite;
pub mod strangers;

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

pub use error::GalleryError;
pub use postgres::PostgresGallery;
pub use recent::{
    FaceBox, RecentBounds, RecentFace, RecentFaces, RecentSample, SeenFace, Sighting, StrangerGroup,
};
pub use reembed::{ReembedProgress, ReembedState, StoredCrop, RESTORED_MEANWHILE};
pub use sqlite::{SqliteGallery, DB_FILE_NAME};

use crate::vision::calibration::Enrolment;
use crate::vision::quality::Quality;

/// Length of one face embedding (SFace).
pub const EMBEDDING_DIM: usize = 128;

/// How far a registered embedding's L2 norm may be from 1; cosine = dot product relies on it.
const UNIT_NORM_TOLERANCE: f32 = 1e-3;

/// One face to store with a registration.
#[derive(Debug, Clone)]
pub struct NewSample {
    /// L2-normalised embedding, [`EMBEDDING_DIM`] floats.
    pub embedding: Vec<f32>,
    /// Which model made the embedding (name or sha256), to re-embed after a model change.
    pub model: String,
    /// JPEG of the aligned 112x112 face.
    pub crop: Vec<u8>,
    /// Form field name the photo came in.
    pub source: String,
    /// Detector confidence of the face.
    pub det_score: f32,
    /// The face's quality figures, when they were measured.
    pub quality: Option<Quality>,
    /// A negative sample: a face that is *not* this user ("not ..." on a recent face).
    pub negative: bool,
}

/// What a successful registration did to the user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegisterOutcome {
    /// The userid was new ("face added").
    Added,
    /// The userid existed; samples were appended ("face updated").
    Updated,
}

/// A stored sample without its embedding and crop.
#[derive(Debug, Clone, PartialEq)]
pub struct SampleInfo {
    /// Database id, the key for [`Gallery::sample_crop`].
    pub id: i64,
    /// Model that made the embedding.
    pub model: String,
    /// Form field name the photo came in.
    pub source: String,
    /// Detector confidence of the face.
    pub det_score: f32,
    /// When it was registered, unix milliseconds.
    pub added_at: i64,
    /// Quality figures; `None` for samples stored before they were measured.
    pub quality: Option<Quality>,
    /// A negative sample ("not this user"): it vetoes the user instead of matching.
    pub negative: bool,
}

/// What the face routes need from a gallery.
pub trait FaceStore: Send + Sync {
    /// Appends samples to `userid`, creating it if needed; all or nothing.
    fn register(
        &self,
        userid: &str,
        samples: Vec<NewSample>,
    ) -> Result<RegisterOutcome, GalleryError>;
    /// Removes a user and its samples; false if it did not exist.
    fn delete_user(&self, userid: &str) -> Result<bool, GalleryError>;
    /// All userids, sorted bytewise.
    fn list_users(&self) -> Vec<String>;
    /// For one unit-length query embedding, the users whose template cosine (with the mean of
    /// their samples) is at least `min_cosine`, at most `top` of them, highest first.
    fn best_matches(&self, query: &[f32], min_cosine: f32, top: usize) -> Vec<(String, f32)>;
    /// (users, samples).
    fn stats(&self) -> (usize, usize);
    /// How many users have how many samples: what recognition confidences are calibrated
    /// against.
    fn enrolment(&self) -> Enrolment;
    /// A consistent snapshot of the whole gallery as one backup file (an SQLite file, whichever
    /// the store).
    fn backup_bytes(&self) -> Result<Vec<u8>, GalleryError>;
    /// Replaces the gallery with a backup, or leaves it untouched if the backup is not valid.
    fn restore_from_bytes(&self, bytes: &[u8]) -> Result<(), GalleryError>;
}

/// One user with its sample count and dates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UserSummary {
    /// The userid.
    pub userid: String,
    /// Number of stored samples (0 after its last sample was removed), negative ones not
    /// counted.
    pub samples: usize,
    /// Number of negative samples ("not this user").
    pub negatives: usize,
    /// When the user was created, unix milliseconds.
    pub created_at: i64,
    /// When its newest sample was added, unix milliseconds; `None` without samples.
    pub last_added_at: Option<i64>,
    /// Id of its newest sample (a thumbnail), `None` without samples.
    pub newest_sample: Option<i64>,
}

/// What a rename did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RenameOutcome {
    /// The user now has the new name.
    Renamed,
    /// The user's samples moved to the existing user of the new name, and it is gone.
    Merged,
    /// Old and new name are the same: nothing to do.
    Unchanged,
}

/// The gallery of this daemon, in whichever store it lives. `Send + Sync`: share it between
/// workers with `Arc`.
// One per process, behind an `Arc`: the variants' sizes do not matter.
#[allow(clippy::large_enum_variant)]
pub enum Gallery {
    /// `<data_dir>/faces.sqlite3`.
    Sqlite(SqliteGallery),
    /// A PostgreSQL database shared with other daemons.
    Postgres(PostgresGallery),
}

/// Calls the same method on whichever store this is.
macro_rules! on_store {
    ($self:expr, $store:ident => $call:expr) => {
        match $self {
            Gallery::Sqlite($store) => $call,
            Gallery::Postgres($store) => $call,
        }
    };
}

/// Whether the store can be reached, for `/v1/status`, STATUS= and the page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StoreHealth {
    /// `sqlite` or `postgresql`.
    pub store: &'static str,
    /// False while the store cannot be reached: recognition answers from the last index,
    /// writes are refused.
    pub reachable: bool,
    /// Why it cannot be reached (no password or key in it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// PostgreSQL: the last change of the shared log this node's index holds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub applied_change: Option<i64>,
}

impl Gallery {
    /// Opens (creating if needed) the SQLite gallery in `data_dir`; see [`SqliteGallery::open`].
    pub fn open(data_dir: &Path) -> Result<Gallery, GalleryError> {
        SqliteGallery::open(data_dir).map(Gallery::Sqlite)
    }

    /// Opens the gallery the settings ask for: PostgreSQL at `url` when it is set (with
    /// `data_dir` for temporary files), else SQLite in `data_dir`.
    pub fn open_configured(url: Option<&str>, data_dir: &Path) -> Result<Gallery, GalleryError> {
        match url {
            Some(url) => PostgresGallery::connect(url, data_dir).map(Gallery::Postgres),
            None => Gallery::open(data_dir),
        }
    }

    /// The SQLite file, for the SQLite store.
    pub fn db_path(&self) -> Option<&Path> {
        match self {
            Gallery::Sqlite(g) => Some(g.db_path()),
            Gallery::Postgres(_) => None,
        }
    }

    /// Whether the store can be reached now.
    pub fn health(&self) -> StoreHealth {
        match self {
            Gallery::Sqlite(_) => StoreHealth {
                store: "sqlite",
                reachable: true,
                error: None,
                applied_change: None,
            },
            Gallery::Postgres(g) => g.health(),
        }
    }

    /// Appends `samples` to `userid` (created if new) in one transaction; all or none are
    /// stored. The index is updated before returning: the next query sees the new samples.
    pub fn register(
        &self,
        userid: &str,
        samples: Vec<NewSample>,
    ) -> Result<RegisterOutcome, GalleryError> {
        if userid.is_empty() {
            return Err(GalleryError::EmptyUserid);
        }
        if samples.is_empty() {
            return Err(GalleryError::NoSamples);
        }
        on_store!(self, g => g.register(userid, samples, &[]))
    }

    /// Names recent faces: `samples` (made from some of them) go to `userid` as
    /// [`Gallery::register`] stores them, and the recent faces `consumed` are deleted, in one
    /// transaction; if one of those is gone meanwhile, nothing is changed
    /// ([`GalleryError::RecentFaceGone`]).
    pub fn register_recent(
        &self,
        userid: &str,
        samples: Vec<NewSample>,
        consumed: &[i64],
    ) -> Result<RegisterOutcome, GalleryError> {
        if userid.is_empty() {
            return Err(GalleryError::EmptyUserid);
        }
        if samples.is_empty() {
            return Err(GalleryError::NoSamples);
        }
        on_store!(self, g => g.register(userid, samples, consumed))
    }

    /// The recent faces `which` names, as registration samples, oldest first.
    pub fn recent_samples(&self, which: RecentFaces) -> Result<Vec<RecentSample>, GalleryError> {
        on_store!(self, g => g.recent_samples(which))
    }

    /// Removes `userid` and its samples; `Ok(false)` if it was not registered.
    pub fn delete_user(&self, userid: &str) -> Result<bool, GalleryError> {
        on_store!(self, g => g.delete_user(userid))
    }

    /// All userids, sorted bytewise (what SQLite's BINARY collation and DeepStack return).
    pub fn list_users(&self) -> Vec<String> {
        on_store!(self, g => g.index().userids())
    }

    /// For one unit-length embedding, the users whose template cosine is at least
    /// `min_cosine`, at most `top` of them, highest first (see `index`).
    pub fn best_matches(&self, query: &[f32], min_cosine: f32, top: usize) -> Vec<(String, f32)> {
        on_store!(self, g => g.index().best_users(query, min_cosine, top))
    }

    /// (number of users, number of samples).
    pub fn stats(&self) -> (usize, usize) {
        on_store!(self, g => {
            let index = g.index();
            (index.user_count(), index.sample_count())
        })
    }

    /// See `Index::enrolment`.
    pub fn enrolment(&self) -> Enrolment {
        on_store!(self, g => g.index().enrolment())
    }

    /// The stored samples of `userid`, oldest first (empty if unknown).
    pub fn user_samples(&self, userid: &str) -> Result<Vec<SampleInfo>, GalleryError> {
        on_store!(self, g => g.user_samples(userid))
    }

    /// The JPEG face crop of a sample, `None` if there is no such sample.
    pub fn sample_crop(&self, sample_id: i64) -> Result<Option<Vec<u8>>, GalleryError> {
        on_store!(self, g => g.sample_crop(sample_id))
    }

    /// Every user with its sample count, sorted by userid (bytewise).
    pub fn user_summaries(&self) -> Result<Vec<UserSummary>, GalleryError> {
        on_store!(self, g => g.user_summaries())
    }

    /// Whether `userid` is registered.
    pub fn has_user(&self, userid: &str) -> Result<bool, GalleryError> {
        on_store!(self, g => g.has_user(userid))
    }

    /// Removes one sample; `Ok(false)` if there is no such sample. The user stays.
    pub fn delete_sample(&self, sample_id: i64) -> Result<bool, GalleryError> {
        on_store!(self, g => g.delete_sample(sample_id))
    }

    /// Renames `from` to `to`; onto an existing `to` only with `merge` (its samples move).
    pub fn rename_user(
        &self,
        from: &str,
        to: &str,
        merge: bool,
    ) -> Result<RenameOutcome, GalleryError> {
        if to.is_empty() {
            return Err(GalleryError::EmptyUserid);
        }
        on_store!(self, g => g.rename_user(from, to, merge))
    }

    /// A consistent snapshot of the gallery as a standalone SQLite gallery file.
    pub fn backup_bytes(&self) -> Result<Vec<u8>, GalleryError> {
        on_store!(self, g => g.backup_bytes())
    }

    /// Replaces the whole gallery with the backup in `bytes` (from either store), or returns
    /// [`GalleryError::InvalidBackup`] and leaves the gallery untouched.
    pub fn restore_from_bytes(&self, bytes: &[u8]) -> Result<(), GalleryError> {
        on_store!(self, g => g.restore_from_bytes(bytes))
    }

    /// The current or last re-embedding's progress (this node's).
    pub fn reembed_progress(&self) -> ReembedProgress {
        on_store!(self, g => g.reembed_progress())
    }

    /// Starts a re-embedding with `model`, or [`GalleryError::ReembedRunning`].
    pub fn reembed_start(&self, model: &str) -> Result<ReembedProgress, GalleryError> {
        on_store!(self, g => g.reembed_start(model))
    }

    /// Up to `limit` samples with an id above `after` that have no staged embedding yet.
    pub fn reembed_next(&self, after: i64, limit: usize) -> Result<Vec<StoredCrop>, GalleryError> {
        on_store!(self, g => g.reembed_next(after, limit))
    }

    /// Stages one batch of new embeddings; `failed` more crops gave none.
    pub fn reembed_stage(
        &self,
        model: &str,
        embeddings: &[(i64, Vec<f32>)],
        failed: usize,
    ) -> Result<(), GalleryError> {
        on_store!(self, g => g.reembed_stage(model, embeddings, failed))
    }

    /// Swaps every staged embedding in, in one transaction.
    pub fn reembed_finish(&self) -> Result<usize, GalleryError> {
        on_store!(self, g => g.reembed_finish())
    }

    /// Marks the running re-embedding as failed; its staged rows stay for the next run.
    pub fn reembed_failed(&self, error: String) {
        on_store!(self, g => g.reembed_failed(error))
    }

    /// Stores recent faces, the unknown ones in stranger `groups`, and applies `bounds`, in
    /// one transaction; how many the bounds removed (see [`recent`], [`strangers`]).
    pub fn record_recent(
        &self,
        faces: &[SeenFace],
        bounds: &RecentBounds,
        groups: &mut strangers::StrangerGroups,
    ) -> Result<usize, GalleryError> {
        on_store!(self, g => g.record_recent(faces, bounds, groups))
    }

    /// Up to `limit` recent faces with an id below `before` (of stranger group `group`, if
    /// given), newest first, and how many are kept in all (in that group).
    pub fn recent_faces(
        &self,
        before: i64,
        limit: usize,
        group: Option<i64>,
    ) -> Result<(Vec<RecentFace>, usize), GalleryError> {
        on_store!(self, g => g.recent_faces(before, limit, group))
    }

    /// Up to `limit` stranger groups last seen before `before` (unix ms), the most recently
    /// seen first, and how many there are.
    pub fn recent_groups(
        &self,
        before: i64,
        limit: usize,
    ) -> Result<(Vec<StrangerGroup>, usize), GalleryError> {
        on_store!(self, g => g.recent_groups(before, limit))
    }

    /// Deletes the faces of a stranger group; how many were deleted.
    pub fn delete_recent_group(&self, group: i64) -> Result<usize, GalleryError> {
        on_store!(self, g => g.delete_recent_group(group))
    }

    /// The JPEG crop of a recent face, `None` if there is no such face.
    pub fn recent_crop(&self, id: i64) -> Result<Option<Vec<u8>>, GalleryError> {
        on_store!(self, g => g.recent_crop(id))
    }

    /// Deletes one recent face (`Some(id)`) or all of them; how many were deleted.
    pub fn delete_recent(&self, id: Option<i64>) -> Result<usize, GalleryError> {
        on_store!(self, g => g.delete_recent(id))
    }
}

impl FaceStore for Gallery {
    fn register(
        &self,
        userid: &str,
        samples: Vec<NewSample>,
    ) -> Result<RegisterOutcome, GalleryError> {
        Gallery::register(self, userid, samples)
    }
    fn delete_user(&self, userid: &str) -> Result<bool, GalleryError> {
        Gallery::delete_user(self, userid)
    }
    fn list_users(&self) -> Vec<String> {
        Gallery::list_users(self)
    }
    fn best_matches(&self, query: &[f32], min_cosine: f32, top: usize) -> Vec<(String, f32)> {
        Gallery::best_matches(self, query, min_cosine, top)
    }
    fn stats(&self) -> (usize, usize) {
        Gallery::stats(self)
    }
    fn enrolment(&self) -> Enrolment {
        Gallery::enrolment(self)
    }
    fn backup_bytes(&self) -> Result<Vec<u8>, GalleryError> {
        Gallery::backup_bytes(self)
    }
    fn restore_from_bytes(&self, bytes: &[u8]) -> Result<(), GalleryError> {
        Gallery::restore_from_bytes(self, bytes)
    }
}

/// Rejects embeddings the index cannot hold or whose dot product would not be a cosine.
fn check_embedding(embedding: &[f32]) -> Result<(), GalleryError> {
    if embedding.len() != EMBEDDING_DIM {
        return Err(GalleryError::BadEmbedding(format!(
            "{} values, expected {EMBEDDING_DIM}",
            embedding.len()
        )));
    }
    if !embedding.iter().all(|x| x.is_finite()) {
        return Err(GalleryError::BadEmbedding("not finite".into()));
    }
    let norm = embedding.iter().map(|x| x * x).sum::<f32>().sqrt();
    if (norm - 1.0).abs() > UNIT_NORM_TOLERANCE {
        return Err(GalleryError::BadEmbedding(format!(
            "L2 norm {norm}, expected 1"
        )));
    }
    Ok(())
}

/// Unix time in milliseconds (0 if the clock is before 1970, as on a Pi without RTC at boot).
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
