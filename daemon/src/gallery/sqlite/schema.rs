//! The on-disk format: tables, versioned migrations (`PRAGMA user_version`), connection
//! settings and the embedding encoding.

use std::time::Duration;

use rusqlite::{Connection, TransactionBehavior};

use crate::gallery::{GalleryError, EMBEDDING_DIM};

/// Value of `meta.format`: tells our files apart from any other SQLite database.
pub const FORMAT_MARKER: &str = "deepstack-rs-gallery";

/// Bytes of one stored embedding (little-endian f32).
pub const EMBEDDING_BYTES: usize = EMBEDDING_DIM * 4;

/// `MIGRATIONS[i]` takes a database from `user_version` i to i + 1. Append only: a shipped
/// migration never changes, because galleries and backups in the field were made with it.
const MIGRATIONS: &[&str] = &[
    // 1: the first schema. AUTOINCREMENT so ids are never reused: a UI that caches a crop by
    // sample id must not show another person's face after a delete. The CHECK on the
    // embedding length makes SQLite itself refuse vectors the index could not hold.
    r"
    CREATE TABLE meta (
        key   TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    CREATE TABLE users (
        id         INTEGER PRIMARY KEY AUTOINCREMENT,
        userid     TEXT NOT NULL UNIQUE CHECK (length(userid) > 0),
        created_at INTEGER NOT NULL
    );
    CREATE TABLE samples (
        id        INTEGER PRIMARY KEY AUTOINCREMENT,
        user_id   INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        embedding BLOB NOT NULL CHECK (length(embedding) = 512),
        model     TEXT NOT NULL,
        crop      BLOB NOT NULL,
        source    TEXT NOT NULL,
        det_score REAL NOT NULL,
        added_at  INTEGER NOT NULL
    );
    CREATE INDEX samples_by_user ON samples(user_id);
    INSERT INTO meta(key, value) VALUES ('format', 'deepstack-rs-gallery');
    ",
    // 2: a quality figure per sample (NULL for samples registered before it existed), and
    // the staging table of a re-embedding: new embeddings wait there, keyed by sample, until
    // one transaction swaps them all in; a restart finds them and resumes or discards them.
    r"
    ALTER TABLE samples ADD COLUMN quality REAL;
    ALTER TABLE samples ADD COLUMN face_px INTEGER;
    ALTER TABLE samples ADD COLUMN sharpness REAL;
    ALTER TABLE samples ADD COLUMN yaw REAL;
    ALTER TABLE samples ADD COLUMN pitch REAL;
    CREATE TABLE reembed_staging (
        sample_id INTEGER PRIMARY KEY REFERENCES samples(id) ON DELETE CASCADE,
        embedding BLOB NOT NULL CHECK (length(embedding) = 512),
        model     TEXT NOT NULL
    );
    ",
    // 3: what start-up reads (user, sample id, embedding) as a covering index: ~530 bytes a
    // sample, where a table row also carries its JPEG crop. Loading 100,000 samples then reads
    // ~60 MB instead of the whole file (800 MB with real crops): seconds on an SD card.
    r"
    CREATE INDEX samples_embeddings ON samples(user_id, embedding);
    ",
    // 4: recent faces (gallery::recent): what recognize saw, bounded by time and count.
    // Not tied to users: the answer given stays what it was after a rename or delete.
    r"
    CREATE TABLE recent_faces (
        id         INTEGER PRIMARY KEY AUTOINCREMENT,
        seen_at    INTEGER NOT NULL,
        camera     TEXT,
        userid     TEXT,
        confidence REAL NOT NULL,
        det_score  REAL NOT NULL,
        x_min      INTEGER NOT NULL,
        y_min      INTEGER NOT NULL,
        x_max      INTEGER NOT NULL,
        y_max      INTEGER NOT NULL,
        embedding  BLOB NOT NULL CHECK (length(embedding) = 512),
        model      TEXT NOT NULL,
        crop       BLOB NOT NULL
    );
    CREATE INDEX recent_faces_by_time ON recent_faces(seen_at);
    ",
    // 5: strangers grouped (gallery::strangers): an unknown face's group, the id of the
    // group's first face (NULL for named faces), and each face's quality figures as samples
    // keep them (the group's best goes in front; naming a group gates on them). Indexed: the
    // recorder reads which groups are left at every batch and the group list reads counts,
    // times and best faces, without walking the rows' crops.
    r"
    ALTER TABLE recent_faces ADD COLUMN group_id INTEGER;
    ALTER TABLE recent_faces ADD COLUMN quality REAL NOT NULL DEFAULT 0;
    ALTER TABLE recent_faces ADD COLUMN face_px INTEGER;
    ALTER TABLE recent_faces ADD COLUMN sharpness REAL;
    ALTER TABLE recent_faces ADD COLUMN yaw REAL;
    ALTER TABLE recent_faces ADD COLUMN pitch REAL;
    CREATE INDEX recent_faces_by_group ON recent_faces(group_id, quality, seen_at);
    ",
    // 6: negative samples ("not this person", gallery::index): faces someone said were not
    // the user they were given to. They stay out of the user's template and veto the user
    // for faces that resemble them more. Start-up's covering index gains the flag.
    r"
    ALTER TABLE samples ADD COLUMN negative INTEGER NOT NULL DEFAULT 0 CHECK (negative IN (0, 1));
    DROP INDEX samples_embeddings;
    CREATE INDEX samples_loaded ON samples(user_id, negative, embedding);
    ",
];

/// The schema version this build writes and the newest it can read.
pub const CURRENT_VERSION: u32 = MIGRATIONS.len() as u32;

/// How long a statement waits for another process (the CLI, a second daemon) to release a lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Settings for the live database, chosen for SD cards and sudden power loss.
///
/// WAL: readers (backups) never block the writer, and a commit is one sequential append.
/// `synchronous=FULL`: in WAL mode NORMAL may lose the last commits on power loss; a
/// registration that answered "face added" must survive, so every commit is fsynced.
pub fn configure_live(conn: &Connection) -> Result<(), GalleryError> {
    let mode: String =
        conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        // Some filesystems (network mounts) cannot share memory maps; SQLite then keeps its
        // rollback journal, which is slower but just as safe.
        log::warn!("gallery: WAL journal not available, SQLite uses journal_mode={mode}");
    }
    conn.pragma_update(None, "synchronous", "FULL")?;
    Ok(())
}

/// Settings every connection gets, also those opened on backup files.
pub fn configure_common(conn: &Connection) -> Result<(), GalleryError> {
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.pragma_update(None, "foreign_keys", true)?;
    // Restored files come from outside: never let their schema run functions with side effects.
    conn.pragma_update(None, "trusted_schema", false)?;
    Ok(())
}

/// Reads `PRAGMA user_version`.
pub fn user_version(conn: &Connection) -> Result<u32, rusqlite::Error> {
    conn.pragma_query_value(None, "user_version", |row| row.get(0))
}

/// Brings the database up to [`CURRENT_VERSION`]; returns the version it started from.
///
/// All steps run in one IMMEDIATE transaction: a crash leaves the old version intact, and
/// two processes opening the same directory cannot migrate twice.
pub fn migrate(conn: &mut Connection) -> Result<u32, GalleryError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let found = user_version(&tx)?;
    if found > CURRENT_VERSION {
        return Err(GalleryError::TooNew {
            found,
            supported: CURRENT_VERSION,
        });
    }
    if found == 0 {
        // Version 0 is "empty"; a file that already has tables is someone else's database
        // (a misconfigured DATA_DIR): refuse rather than add our tables to it.
        let tables: i64 =
            tx.query_row("SELECT count(*) FROM sqlite_master", [], |row| row.get(0))?;
        if tables > 0 {
            return Err(GalleryError::Corrupt(
                "the database holds tables but no gallery schema".into(),
            ));
        }
    }
    for (from, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        tx.execute_batch(sql)?;
        log::info!("gallery: migrated schema {from} -> {}", from + 1);
    }
    if found < CURRENT_VERSION {
        // PRAGMA does not take parameters; the value is our own integer.
        tx.execute_batch(&format!("PRAGMA user_version = {CURRENT_VERSION}"))?;
    }
    tx.commit()?;
    Ok(found)
}

/// Whether `meta.format` holds our marker (false also when there is no meta table).
pub fn has_format_marker(conn: &Connection) -> Result<bool, rusqlite::Error> {
    let has_meta: bool = conn.query_row(
        "SELECT count(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = 'meta'",
        [],
        |row| row.get(0),
    )?;
    if !has_meta {
        return Ok(false);
    }
    conn.query_row(
        "SELECT count(*) > 0 FROM meta WHERE key = 'format' AND value = ?1",
        [FORMAT_MARKER],
        |row| row.get(0),
    )
}

/// Encodes an embedding as the stored BLOB (little-endian f32, so files move between machines).
pub fn encode_embedding(embedding: &[f32]) -> Vec<u8> {
    embedding.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Decodes a stored BLOB; `None` when its length is not that of one embedding.
pub fn decode_embedding(blob: &[u8]) -> Option<Vec<f32>> {
    if blob.len() != EMBEDDING_BYTES {
        return None;
    }
    Some(
        blob.chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedding_roundtrip_and_length_check() {
        let v: Vec<f32> = (0..EMBEDDING_DIM).map(|i| i as f32 * 0.5 - 3.0).collect();
        let blob = encode_embedding(&v);
        assert_eq!(blob.len(), EMBEDDING_BYTES);
        assert_eq!(decode_embedding(&blob), Some(v));
        assert_eq!(decode_embedding(&blob[1..]), None);
    }

    #[test]
    fn the_check_constraint_matches_the_embedding_size() {
        // The literal 512 in the DDL must follow EMBEDDING_DIM.
        assert!(MIGRATIONS[0].contains(&format!("length(embedding) = {EMBEDDING_BYTES}")));
        assert!(MIGRATIONS[0].contains(&format!("'{FORMAT_MARKER}'")));
    }
}
