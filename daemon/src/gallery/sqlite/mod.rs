//! The SQLite store, the embedded default: `<data_dir>/faces.sqlite3` is the source of truth.
//! Every change is committed there first and only then mirrored into the in-memory index, so
//! a crash or SIGKILL at any point leaves either the old or the new state on disk, never a
//! mix, and the index is rebuilt from disk at the next start.
//!
//! Modules: `schema` (tables, migrations, connection settings), `backup` (backup and
//! validated restore), `manage` (listing, renaming, removing single samples), `reembed`
//! (staging new embeddings).

mod backup;
mod manage;
mod recent;
mod reembed;
pub(crate) mod schema;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use rusqlite::{params, Connection, OpenFlags, OptionalExtension, TransactionBehavior};

use super::index::Index;
use super::ReembedProgress;
use super::{check_embedding, now_ms, GalleryError, NewSample, RegisterOutcome, SampleInfo};
use crate::vision::quality::Quality;
pub(crate) use backup::{
    open_read_only, stage_candidate, TempFile, SAMPLES_COLUMNS, USERS_COLUMNS,
};

/// File name of the gallery database inside the data directory.
pub const DB_FILE_NAME: &str = "faces.sqlite3";

/// The gallery of one data directory. `Send + Sync`: share it between workers with `Arc`.
pub struct SqliteGallery {
    data_dir: PathBuf,
    db_path: PathBuf,
    /// The one writing connection. A mutex also serialises register/delete/restore, so the
    /// index is always updated in commit order.
    conn: Mutex<Connection>,
    /// Readers (recognition) wait only for the brief index update.
    index: RwLock<Index>,
    /// The re-embedding's progress (one at a time).
    reembed: Mutex<ReembedProgress>,
}

impl SqliteGallery {
    /// Opens (creating if needed) the gallery in `data_dir`, migrates it and loads the index.
    ///
    /// On a read-only data directory (an SD card the kernel remounted read-only, a directory
    /// the service user cannot write) an existing, current gallery is opened read-only
    /// instead: recognition goes on, and every write fails with a read-only error.
    pub fn open(data_dir: &Path) -> Result<SqliteGallery, GalleryError> {
        let db_path = data_dir.join(DB_FILE_NAME);
        match SqliteGallery::open_writable(data_dir, &db_path) {
            Err(e) if is_read_only(&e) && db_path.is_file() => {
                log::warn!(
                    "gallery: {} cannot be written ({e}); opening it read-only: recognition \
                     works, registrations, deletions and restores will fail",
                    data_dir.display()
                );
                SqliteGallery::open_read_only(data_dir, &db_path)
            }
            other => other,
        }
    }

    fn open_writable(data_dir: &Path, db_path: &Path) -> Result<SqliteGallery, GalleryError> {
        create_private(data_dir, db_path)?;
        backup::remove_stale_temp_files(data_dir);
        let mut conn = Connection::open(db_path)?;
        // On a read-only mount SQLite quietly falls back to a read-only handle (it does when the
        // WAL and shared-memory files were left behind): that is the read-only case, not this.
        if conn.is_readonly(rusqlite::MAIN_DB)? {
            return Err(GalleryError::Io(std::io::Error::new(
                std::io::ErrorKind::ReadOnlyFilesystem,
                format!("SQLite can open {} for reading only", db_path.display()),
            )));
        }
        schema::configure_common(&conn)?;
        // Migrate before switching to WAL: a file we refuse (newer, foreign) stays untouched.
        schema::migrate(&mut conn)?;
        schema::configure_live(&conn)?;
        SqliteGallery::with_connection(data_dir, db_path, conn)
    }

    /// After a clean stop the database is one file: it is opened `immutable=1`, since on
    /// read-only media SQLite cannot create the WAL's shared-memory file, and nobody can change
    /// the file under us anyway. After a crash the last commits may still be in the WAL file
    /// (which `immutable` would ignore): SQLite reads it, read-only, with the files left behind.
    fn open_read_only(data_dir: &Path, db_path: &Path) -> Result<SqliteGallery, GalleryError> {
        let wal = data_dir.join(format!("{DB_FILE_NAME}-wal"));
        let has_wal = std::fs::metadata(&wal).is_ok_and(|m| m.len() > 0);
        let uri = format!(
            "file:{}{}",
            uri_path(db_path)?,
            if has_wal { "" } else { "?immutable=1" }
        );
        let conn = Connection::open_with_flags(
            &uri,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_URI,
        )?;
        schema::configure_common(&conn)?;
        let version = schema::user_version(&conn)?;
        if version != schema::CURRENT_VERSION {
            return Err(GalleryError::Corrupt(format!(
                "read-only gallery has schema {version}, this build needs {} (it cannot migrate a read-only file)",
                schema::CURRENT_VERSION
            )));
        }
        SqliteGallery::with_connection(data_dir, db_path, conn)
    }

    fn with_connection(
        data_dir: &Path,
        db_path: &Path,
        conn: Connection,
    ) -> Result<SqliteGallery, GalleryError> {
        if !schema::has_format_marker(&conn)? {
            return Err(GalleryError::Corrupt(format!(
                "{} has no '{}' marker",
                db_path.display(),
                schema::FORMAT_MARKER
            )));
        }
        let index = load_index(&conn)?;
        let reembed = reembed::progress_after_open(&conn)?;
        log::info!(
            "gallery: {} users, {} samples in {}",
            index.user_count(),
            index.sample_count(),
            db_path.display()
        );
        Ok(SqliteGallery {
            data_dir: data_dir.to_owned(),
            db_path: db_path.to_owned(),
            conn: Mutex::new(conn),
            index: RwLock::new(index),
            reembed: Mutex::new(reembed),
        })
    }

    /// Path of the live database file.
    pub fn db_path(&self) -> &Path {
        &self.db_path
    }

    /// Appends `samples` to `userid` (created if new) and deletes the recent faces `consumed`
    /// (those the samples came from, when a stranger is named), in one transaction: all or
    /// none.
    ///
    /// The index is updated before returning, so the very next query sees the new samples.
    pub fn register(
        &self,
        userid: &str,
        samples: Vec<NewSample>,
        consumed: &[i64],
    ) -> Result<RegisterOutcome, GalleryError> {
        // An empty userid or no samples: refused by `Gallery::register` for both stores.
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let now = now_ms();
        let existing: Option<i64> = tx
            .query_row("SELECT id FROM users WHERE userid = ?1", [userid], |row| {
                row.get(0)
            })
            .optional()?;
        let (user_id, outcome) = match existing {
            Some(id) => (id, RegisterOutcome::Updated),
            // "Not ..." needs the user it is about.
            None if samples.iter().all(|s| s.negative) => return Err(GalleryError::UnknownUser),
            None => {
                tx.execute(
                    "INSERT INTO users(userid, created_at) VALUES (?1, ?2)",
                    params![userid, now],
                )?;
                (tx.last_insert_rowid(), RegisterOutcome::Added)
            }
        };
        let mut embeddings = Vec::with_capacity(samples.len());
        {
            let mut insert = tx.prepare(
                "INSERT INTO samples(user_id, embedding, model, crop, source, det_score, added_at,
                                     quality, face_px, sharpness, yaw, pitch, negative)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
            )?;
            for sample in samples {
                // Checked inside the transaction on purpose: whichever sample fails, ours or
                // SQLite's check, the `?` drops `tx` and rolls back the ones before it.
                check_embedding(&sample.embedding)?;
                let id = insert.insert(params![
                    user_id,
                    schema::encode_embedding(&sample.embedding),
                    sample.model,
                    sample.crop,
                    sample.source,
                    f64::from(sample.det_score),
                    now,
                    sample.quality.map(|q| f64::from(q.score)),
                    sample.quality.map(|q| q.face_px),
                    sample.quality.map(|q| f64::from(q.sharpness)),
                    sample.quality.map(|q| f64::from(q.yaw)),
                    sample.quality.map(|q| f64::from(q.pitch)),
                    sample.negative,
                ])?;
                embeddings.push((id, sample.negative, sample.embedding));
            }
        }
        recent::consume(&tx, consumed)?;
        tx.commit()?;

        // Still under the connection lock: a concurrent delete cannot slip in between.
        let mut index = self.index_mut();
        index.add_user(userid);
        for (id, negative, embedding) in &embeddings {
            index.add(userid, *id, *negative, embedding);
        }
        Ok(outcome)
    }

    /// Removes `userid` and (by cascade) its samples; `Ok(false)` if it was not registered.
    pub fn delete_user(&self, userid: &str) -> Result<bool, GalleryError> {
        let conn = self.conn();
        let deleted = conn.execute("DELETE FROM users WHERE userid = ?1", [userid])? > 0;
        if deleted {
            self.index_mut().remove_user(userid);
        }
        Ok(deleted)
    }

    /// The stored samples of `userid`, oldest first (empty if unknown).
    pub fn user_samples(&self, userid: &str) -> Result<Vec<SampleInfo>, GalleryError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT s.id, s.model, s.source, s.det_score, s.added_at,
                    s.quality, s.face_px, s.sharpness, s.yaw, s.pitch, s.negative
             FROM samples s JOIN users u ON u.id = s.user_id
             WHERE u.userid = ?1 ORDER BY s.id",
        )?;
        let rows = stmt.query_map([userid], |row| {
            let det_score = row.get::<_, f64>(3)? as f32;
            let score: Option<f64> = row.get(5)?;
            let quality = match score {
                None => None,
                Some(score) => Some(Quality {
                    score: score as f32,
                    face_px: row.get::<_, Option<u32>>(6)?.unwrap_or(0),
                    sharpness: row.get::<_, Option<f64>>(7)?.unwrap_or(0.0) as f32,
                    det_score,
                    yaw: row.get::<_, Option<f64>>(8)?.unwrap_or(0.0) as f32,
                    pitch: row.get::<_, Option<f64>>(9)?.unwrap_or(0.0) as f32,
                }),
            };
            Ok(SampleInfo {
                id: row.get(0)?,
                model: row.get(1)?,
                source: row.get(2)?,
                det_score,
                added_at: row.get(4)?,
                quality,
                negative: row.get(10)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The JPEG face crop of a sample, `None` if there is no such sample.
    pub fn sample_crop(&self, sample_id: i64) -> Result<Option<Vec<u8>>, GalleryError> {
        let conn = self.conn();
        Ok(conn
            .query_row(
                "SELECT crop FROM samples WHERE id = ?1",
                [sample_id],
                |row| row.get(0),
            )
            .optional()?)
    }

    // Poisoning only means another thread panicked while holding the lock. The database is
    // protected by its transactions (rolled back on unwind) and the index is only mutated
    // after a commit, so the state behind the lock is still sound: keep serving.
    fn conn(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn index(&self) -> RwLockReadGuard<'_, Index> {
        self.index.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn index_mut(&self) -> RwLockWriteGuard<'_, Index> {
        self.index.write().unwrap_or_else(PoisonError::into_inner)
    }

    fn reembed_state(&self) -> MutexGuard<'_, ReembedProgress> {
        self.reembed.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// What start-up reads of every sample.
const LOAD_SAMPLES: &str = "SELECT id, user_id, negative, embedding FROM samples";

/// Builds the index from the database `conn` sees (also inside an open transaction).
fn load_index(conn: &Connection) -> Result<Index, GalleryError> {
    let mut index = Index::new();
    let mut names: HashMap<i64, String> = HashMap::new();
    let mut users = conn.prepare("SELECT id, userid FROM users ORDER BY id")?;
    let mut rows = users.query([])?;
    while let Some(row) = rows.next()? {
        let userid: String = row.get(1)?;
        index.add_user(&userid);
        names.insert(row.get(0)?, userid);
    }
    // Served by the covering index samples_loaded (schema migration 6), in user order.
    let mut samples = conn.prepare(LOAD_SAMPLES)?;
    let mut rows = samples.query([])?;
    while let Some(row) = rows.next()? {
        let sample_id: i64 = row.get(0)?;
        let userid = names.get(&row.get::<_, i64>(1)?).ok_or_else(|| {
            GalleryError::Corrupt(format!("sample {sample_id} belongs to no user"))
        })?;
        let negative: bool = row.get(2)?;
        let embedding = row
            .get_ref(3)?
            .as_blob()
            .ok()
            .and_then(schema::decode_embedding)
            .ok_or_else(|| {
                GalleryError::Corrupt(format!("sample {sample_id} has a malformed embedding"))
            })?;
        index.add(userid, sample_id, negative, &embedding);
    }
    Ok(index)
}

/// Face crops and embeddings are biometric data: a data directory we create is 0700 and a
/// database file we create is 0600 (SQLite gives its -wal and -shm files the same mode),
/// whatever the umask. Existing ones keep the mode their owner chose.
fn create_private(data_dir: &Path, db_path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(data_dir)?;
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(db_path)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

/// Whether opening failed because the data directory or file cannot be written.
pub(crate) fn is_read_only(e: &GalleryError) -> bool {
    use rusqlite::ErrorCode;
    use std::io::ErrorKind;
    match e {
        GalleryError::Sqlite(e) => matches!(
            e.sqlite_error_code(),
            Some(ErrorCode::ReadOnly | ErrorCode::CannotOpen)
        ),
        GalleryError::Io(e) => matches!(
            e.kind(),
            ErrorKind::ReadOnlyFilesystem | ErrorKind::PermissionDenied
        ),
        _ => false,
    }
}

/// A path as the path part of an SQLite `file:` URI.
fn uri_path(path: &Path) -> Result<String, GalleryError> {
    let text = path.to_str().ok_or_else(|| {
        GalleryError::Io(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "data dir path is not UTF-8",
        ))
    })?;
    Ok(text
        .replace('%', "%25")
        .replace('?', "%3f")
        .replace('#', "%23"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_up_reads_the_covering_index_not_the_table() {
        let dir = tempfile::tempdir().unwrap();
        let gallery = SqliteGallery::open(dir.path()).unwrap();
        let conn = gallery.conn();
        let plan: String = conn
            .query_row(&format!("EXPLAIN QUERY PLAN {LOAD_SAMPLES}"), [], |r| {
                r.get(3)
            })
            .unwrap();
        assert!(plan.contains("COVERING INDEX samples_loaded"), "{plan}");
    }
}
