//! Backups through SQLite's online backup API, and restores that validate a candidate file
//! completely before touching the live gallery.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rusqlite::backup::{Backup, StepResult};
use rusqlite::{ffi, Connection, ErrorCode, OpenFlags, TransactionBehavior};

use super::schema::{self, CURRENT_VERSION, EMBEDDING_BYTES};
use super::{load_index, SqliteGallery};
use crate::gallery::index::Index;
use crate::gallery::recent;
use crate::gallery::{check_embedding, GalleryError};

/// Temp files in the data dir start with this; anything older than [`STALE_AFTER`] was left
/// by a killed process and is removed at the next open.
const TEMP_PREFIX: &str = ".faces-tmp-";
const STALE_AFTER: Duration = Duration::from_secs(3600);

/// The first 16 bytes of every SQLite 3 database file.
const SQLITE_MAGIC: &[u8] = b"SQLite format 3\0";

/// Columns copied by a restore; validation prepares the same SELECTs, so a file that passed
/// cannot fail the copy for a missing column.
pub(crate) const USERS_COLUMNS: &str = "id, userid, created_at";
pub(crate) const SAMPLES_COLUMNS: &str =
    "id, user_id, embedding, model, crop, source, det_score, added_at, \
     quality, face_px, sharpness, yaw, pitch, negative";

/// Retries of a backup step that found a lock (about 10 s in total).
const BUSY_RETRIES: u32 = 500;
const BUSY_PAUSE: Duration = Duration::from_millis(20);

impl SqliteGallery {
    /// Writes a consistent snapshot of the gallery to `dest` as a standalone SQLite file.
    ///
    /// Uses its own read-only connection and copies everything in one backup step, i.e. inside
    /// one read transaction: in WAL mode that is a snapshot, and registrations keep committing
    /// meanwhile instead of waiting for the copy.
    pub fn backup_to(&self, dest: &Path) -> Result<(), GalleryError> {
        let src = Connection::open_with_flags(
            &self.db_path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        schema::configure_common(&src)?;
        let mut dst = Connection::open(dest)?;
        schema::configure_common(&dst)?;
        {
            let backup = Backup::new(&src, &mut dst)?;
            let mut retries = 0;
            loop {
                match backup.step(-1)? {
                    StepResult::Done => break,
                    StepResult::More => {}
                    // Busy or Locked: another connection holds a lock for a moment.
                    _ if retries < BUSY_RETRIES => {
                        retries += 1;
                        std::thread::sleep(BUSY_PAUSE);
                    }
                    _ => {
                        return Err(rusqlite::Error::SqliteFailure(
                            ffi::Error::new(ffi::SQLITE_BUSY),
                            Some("gallery backup: database stayed locked".into()),
                        )
                        .into());
                    }
                }
            }
        }
        // A backup holds the registered people, not who walked past the cameras: recent
        // faces stay out, their pages overwritten with zeros.
        // (A read-only gallery of an older schema may not have the table.)
        let has_recent: bool = dst.query_row(
            "SELECT count(*) > 0 FROM sqlite_master WHERE name = 'recent_faces'",
            [],
            |row| row.get(0),
        )?;
        if has_recent {
            dst.pragma_update(None, "secure_delete", true)?;
            dst.execute_batch(recent::DELETE_ALL)?;
        }
        // The copied header still says WAL; switch the copy to a rollback journal so the
        // backup is one self-contained file that opens anywhere without -wal/-shm companions.
        let _mode: String =
            dst.pragma_update_and_check(None, "journal_mode", "DELETE", |row| row.get(0))?;
        dst.close().map_err(|(_, e)| e)?;
        Ok(())
    }

    /// [`Gallery::backup_to`] a temp file in the data dir and returns its bytes.
    pub fn backup_bytes(&self) -> Result<Vec<u8>, GalleryError> {
        let tmp = TempFile::new(&self.data_dir, "backup");
        self.backup_to(&tmp.path)?;
        Ok(std::fs::read(&tmp.path)?)
    }

    /// Replaces the whole gallery with the backup in `bytes`, or returns
    /// [`GalleryError::InvalidBackup`] (or another error) and leaves the gallery untouched.
    ///
    /// How the swap is done: the candidate is written to a temp file and validated there,
    /// then ATTACHed to the live connection and copied with INSERT ... SELECT into the live
    /// tables inside ONE transaction (delete all, insert all, rebuild the index from what the
    /// transaction sees, commit). Validation runs before the connection lock is taken, so
    /// recognition and registration go on during the slow integrity check. Why not:
    /// - renaming the file over faces.sqlite3: needs the live connection closed and the
    ///   -wal/-shm removed in the right order; a crash or slip in that sequence can pair a WAL
    ///   with the wrong main file (SQLite would replay it as corruption), and connections
    ///   still open elsewhere (a running backup, the CLI) keep reading the unlinked old inode;
    /// - the backup API into the live db refuses a WAL destination whose page size differs
    ///   from the source's, and replaces meta and schema wholesale.
    ///
    /// A transaction is atomic on disk (WAL), so a crash or any failure (disk full, a
    /// constraint the validation missed) rolls back to the old gallery; the live file keeps
    /// its own schema and settings, and AUTOINCREMENT counters never go back, so sample ids
    /// are not reused after a restore.
    pub fn restore_from_bytes(&self, bytes: &[u8]) -> Result<(), GalleryError> {
        let tmp = stage_candidate(&self.data_dir, bytes)?;
        let tmp_path = tmp.path.to_str().ok_or_else(|| {
            GalleryError::Io(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "data dir path is not UTF-8",
            ))
        })?;

        let mut conn = self.conn();
        conn.execute("ATTACH DATABASE ?1 AS restored", [tmp_path])?;
        let copied = copy_restored_into_main(&mut conn);
        if let Err(e) = conn.execute_batch("DETACH DATABASE restored") {
            log::warn!("gallery: detaching the restored file failed: {e}");
        }
        let index = copied?;
        log::info!(
            "gallery: restored {} users, {} samples",
            index.user_count(),
            index.sample_count()
        );
        // Still under the connection lock, so no registration can interleave.
        *self.index_mut() = index;
        self.reembed_stop_for_restore();
        Ok(())
    }
}

/// Writes a backup's `bytes` to a temp file in `dir` and validates it there (migrating it to
/// the current schema); the file is removed when the returned value is dropped.
pub(crate) fn stage_candidate(dir: &Path, bytes: &[u8]) -> Result<TempFile, GalleryError> {
    if bytes.len() < 100 || !bytes.starts_with(SQLITE_MAGIC) {
        return Err(GalleryError::InvalidBackup("not an SQLite database".into()));
    }
    let tmp = TempFile::new(dir, "restore");
    std::fs::write(&tmp.path, bytes)?;
    validate_candidate(&tmp.path)?;
    Ok(tmp)
}

/// Replaces the live rows with those of the attached `restored` db; returns the new index.
fn copy_restored_into_main(conn: &mut Connection) -> Result<Index, GalleryError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    tx.execute_batch(&format!(
        "DELETE FROM main.reembed_staging;
         DELETE FROM main.samples;
         DELETE FROM main.users;
         INSERT INTO main.users({USERS_COLUMNS}) SELECT {USERS_COLUMNS} FROM restored.users;
         INSERT INTO main.samples({SAMPLES_COLUMNS})
             SELECT {SAMPLES_COLUMNS} FROM restored.samples;"
    ))
    .map_err(|e| match e.sqlite_error_code() {
        // Duplicate userids, bad embedding lengths...: the file's fault, not the server's.
        Some(ErrorCode::ConstraintViolation) => GalleryError::InvalidBackup(e.to_string()),
        _ => e.into(),
    })?;
    let index = load_index(&tx)?;
    tx.commit()?;
    Ok(index)
}

/// Checks a candidate backup file, migrating it (it is our private copy) if it is older.
/// Any failure, SQLite's included ("file is not a database", "malformed"), means the file
/// is not a usable backup.
fn validate_candidate(path: &Path) -> Result<(), GalleryError> {
    check_candidate(path).map_err(|e| match e {
        GalleryError::InvalidBackup(reason) => GalleryError::InvalidBackup(reason),
        GalleryError::Sqlite(e) => GalleryError::InvalidBackup(e.to_string()),
        other => GalleryError::InvalidBackup(other.to_string()),
    })
}

fn check_candidate(path: &Path) -> Result<(), GalleryError> {
    let version = {
        let conn = open_read_only(path)?;
        let integrity: String = conn.query_row("PRAGMA integrity_check", [], |row| row.get(0))?;
        if integrity != "ok" {
            return Err(invalid(format!("integrity check failed: {integrity}")));
        }
        let version = schema::user_version(&conn)?;
        if version == 0 || !schema::has_format_marker(&conn)? {
            return Err(invalid("not a deepstack-rs gallery".into()));
        }
        if version > CURRENT_VERSION {
            return Err(invalid(format!(
                "made by a newer deepstackd (schema {version}, this one reads up to {CURRENT_VERSION})"
            )));
        }
        version
    };
    if version < CURRENT_VERSION {
        let mut conn = Connection::open(path)?;
        schema::configure_common(&conn)?;
        schema::migrate(&mut conn)?;
    }

    let conn = open_read_only(path)?;
    let tables: i64 = conn.query_row(
        "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name IN ('users', 'samples')",
        [],
        |row| row.get(0),
    )?;
    if tables != 2 {
        return Err(invalid("users or samples is not a table".into()));
    }
    // Preparing the copy's SELECTs proves every column exists.
    conn.prepare(&format!("SELECT {USERS_COLUMNS} FROM users"))?;
    conn.prepare(&format!("SELECT {SAMPLES_COLUMNS} FROM samples"))?;
    let checks = [
        (
            "SELECT count(*) FROM users WHERE typeof(userid) != 'text' OR userid = ''".to_owned(),
            "an empty or non-text userid",
        ),
        (
            format!(
                "SELECT count(*) FROM samples
                 WHERE typeof(embedding) != 'blob' OR length(embedding) != {EMBEDDING_BYTES}"
            ),
            "an embedding of the wrong size",
        ),
        (
            "SELECT count(*) FROM samples WHERE user_id NOT IN (SELECT id FROM users)".to_owned(),
            "a sample without a user",
        ),
    ];
    for (sql, problem) in checks {
        let bad: i64 = conn.query_row(&sql, [], |row| row.get(0))?;
        if bad > 0 {
            return Err(invalid(format!("{bad} rows with {problem}")));
        }
    }
    // Our files hold tables and indexes only; a trigger or view is someone else's doing.
    let extra: i64 = conn.query_row(
        "SELECT count(*) FROM sqlite_master WHERE type NOT IN ('table', 'index')",
        [],
        |row| row.get(0),
    )?;
    if extra > 0 {
        return Err(invalid(format!("{extra} triggers or views")));
    }
    // Every embedding must be a finite unit vector, as registration guarantees: a NaN would
    // make every recognition answer NaN confidences.
    let mut stmt = conn.prepare("SELECT id, embedding FROM samples")?;
    let mut rows = stmt.query([])?;
    while let Some(row) = rows.next()? {
        let id: i64 = row.get(0)?;
        let embedding = row
            .get_ref(1)?
            .as_blob()
            .ok()
            .and_then(schema::decode_embedding)
            .ok_or_else(|| invalid(format!("sample {id}: malformed embedding")))?;
        check_embedding(&embedding).map_err(|e| invalid(format!("sample {id}: {e}")))?;
    }
    Ok(())
}

pub(crate) fn open_read_only(path: &Path) -> Result<Connection, GalleryError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    schema::configure_common(&conn)?;
    Ok(conn)
}

fn invalid(reason: String) -> GalleryError {
    GalleryError::InvalidBackup(reason)
}

/// A uniquely named file in the data dir, removed (with its SQLite companions) on drop.
pub(crate) struct TempFile {
    pub(crate) path: PathBuf,
}

impl TempFile {
    pub(crate) fn new(dir: &Path, purpose: &str) -> TempFile {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("{TEMP_PREFIX}{purpose}-{}-{n}.sqlite3", std::process::id());
        TempFile {
            path: dir.join(name),
        }
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        for suffix in ["", "-journal", "-wal", "-shm"] {
            let mut path = self.path.clone().into_os_string();
            path.push(suffix);
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => log::warn!("gallery: cannot remove {path:?}: {e}"),
            }
        }
    }
}

/// Removes temp files a killed process left behind (only old ones: another process using
/// the same data dir may be in the middle of a backup right now).
pub(super) fn remove_stale_temp_files(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if !entry.file_name().to_string_lossy().starts_with(TEMP_PREFIX) {
            continue;
        }
        let stale = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > STALE_AFTER);
        if stale {
            match std::fs::remove_file(entry.path()) {
                Ok(()) => log::info!("gallery: removed stale {:?}", entry.path()),
                Err(e) => log::warn!("gallery: cannot remove {:?}: {e}", entry.path()),
            }
        }
    }
}
