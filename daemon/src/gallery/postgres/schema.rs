//! The PostgreSQL tables, versioned like SQLite's: `deepstack_meta.schema_version` says which
//! of [`MIGRATIONS`] ran, and the first node to start on a newer build migrates, under an
//! advisory lock so that two nodes starting at once do not both try.

use postgres::Client;

use crate::gallery::GalleryError;

/// Value of `deepstack_meta.format`, as in the SQLite files.
const FORMAT_MARKER: &str = "deepstack-rs-gallery";

/// Advisory lock keys (one 64-bit namespace per database): migrations, and every write.
/// Writes are serialised so that change numbers are handed out in commit order: a node that
/// read up to change N can never later find an N - 1 committed behind it.
pub const MIGRATION_LOCK: i64 = 0x6473_7266_6d69_6701;
pub const WRITE_LOCK: i64 = 0x6473_7266_6d69_6702;

/// The channel NOTIFY wakes the nodes on; the payload is the newest change number.
pub const CHANNEL: &str = "deepstack_gallery";

/// `MIGRATIONS[i]` takes the database from version i to i + 1. Append only.
const MIGRATIONS: &[&str] = &[
    // 1: the gallery, as in SQLite (bytea for the embedding and crop, ids that are never
    // reused), the staging table of a re-embedding, and the change log every node follows.
    // A change carries what an index needs to apply it (a sample's embedding), so a node
    // catching up reads the log alone; `reload` (a restore, a re-embedding) makes every node
    // read the gallery again.
    r"
    CREATE TABLE users (
        id         BIGSERIAL PRIMARY KEY,
        userid     TEXT NOT NULL UNIQUE CHECK (length(userid) > 0),
        created_at BIGINT NOT NULL
    );
    CREATE TABLE samples (
        id        BIGSERIAL PRIMARY KEY,
        user_id   BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        embedding BYTEA NOT NULL CHECK (length(embedding) = 512),
        model     TEXT NOT NULL,
        crop      BYTEA NOT NULL,
        source    TEXT NOT NULL,
        det_score DOUBLE PRECISION NOT NULL,
        added_at  BIGINT NOT NULL,
        quality   DOUBLE PRECISION,
        face_px   INTEGER,
        sharpness DOUBLE PRECISION,
        yaw       DOUBLE PRECISION,
        pitch     DOUBLE PRECISION
    );
    CREATE INDEX samples_by_user ON samples(user_id);
    CREATE TABLE reembed_staging (
        sample_id BIGINT PRIMARY KEY REFERENCES samples(id) ON DELETE CASCADE,
        embedding BYTEA NOT NULL CHECK (length(embedding) = 512),
        model     TEXT NOT NULL
    );
    CREATE TABLE changes (
        seq       BIGINT PRIMARY KEY,
        at        BIGINT NOT NULL,
        kind      TEXT NOT NULL
                  CHECK (kind IN ('add', 'delete_user', 'delete_sample', 'rename', 'reload')),
        userid    TEXT,
        other     TEXT,
        sample_id BIGINT,
        embedding BYTEA
    );
    ",
    // 2: recent faces (gallery::recent), as in SQLite's version 4; every node adds its own.
    r"
    CREATE TABLE recent_faces (
        id         BIGSERIAL PRIMARY KEY,
        seen_at    BIGINT NOT NULL,
        camera     TEXT,
        userid     TEXT,
        confidence DOUBLE PRECISION NOT NULL,
        det_score  DOUBLE PRECISION NOT NULL,
        x_min      BIGINT NOT NULL,
        y_min      BIGINT NOT NULL,
        x_max      BIGINT NOT NULL,
        y_max      BIGINT NOT NULL,
        embedding  BYTEA NOT NULL CHECK (length(embedding) = 512),
        model      TEXT NOT NULL,
        crop       BYTEA NOT NULL
    );
    CREATE INDEX recent_faces_by_time ON recent_faces(seen_at);
    ",
    // 3: strangers grouped, as in SQLite's version 5.
    r"
    ALTER TABLE recent_faces ADD COLUMN group_id BIGINT;
    ALTER TABLE recent_faces ADD COLUMN quality DOUBLE PRECISION NOT NULL DEFAULT 0;
    ALTER TABLE recent_faces ADD COLUMN face_px INTEGER;
    ALTER TABLE recent_faces ADD COLUMN sharpness DOUBLE PRECISION;
    ALTER TABLE recent_faces ADD COLUMN yaw DOUBLE PRECISION;
    ALTER TABLE recent_faces ADD COLUMN pitch DOUBLE PRECISION;
    CREATE INDEX recent_faces_by_group ON recent_faces(group_id, quality, seen_at);
    ",
    // 4: negative samples, as in SQLite's version 6; an `add` change says which kind it adds.
    r"
    ALTER TABLE samples ADD COLUMN negative BOOLEAN NOT NULL DEFAULT false;
    ALTER TABLE changes ADD COLUMN negative BOOLEAN NOT NULL DEFAULT false;
    ",
];

/// The schema version this build writes and the newest it reads.
pub const CURRENT_VERSION: i64 = MIGRATIONS.len() as i64;

/// Brings the database to [`CURRENT_VERSION`] in one transaction; returns the version found.
pub fn migrate(client: &mut Client) -> Result<i64, GalleryError> {
    let mut tx = client.transaction()?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])?;
    let has_meta: bool = tx
        .query_one("SELECT to_regclass('deepstack_meta') IS NOT NULL", &[])?
        .get(0);
    let found: i64 = if has_meta {
        let format: Option<String> = tx
            .query_opt("SELECT value FROM deepstack_meta WHERE key = 'format'", &[])?
            .map(|row| row.get(0));
        if format.as_deref() != Some(FORMAT_MARKER) {
            return Err(GalleryError::Corrupt(
                "deepstack_meta holds no gallery format marker".into(),
            ));
        }
        tx.query_one(
            "SELECT value::bigint FROM deepstack_meta WHERE key = 'schema_version'",
            &[],
        )?
        .get(0)
    } else {
        // An empty database becomes a gallery; one that already has tables of these names
        // is someone else's (a wrong GALLERY_URL): refuse rather than mix ours in.
        let taken: bool = tx
            .query_one(
                "SELECT to_regclass('users') IS NOT NULL OR to_regclass('samples') IS NOT NULL
                     OR to_regclass('changes') IS NOT NULL",
                &[],
            )?
            .get(0);
        if taken {
            return Err(GalleryError::Corrupt(
                "the database holds tables named users, samples or changes but no gallery schema"
                    .into(),
            ));
        }
        tx.batch_execute(
            "CREATE TABLE deepstack_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
        )?;
        tx.execute(
            "INSERT INTO deepstack_meta(key, value) VALUES ('format', $1), ('schema_version', '0')",
            &[&FORMAT_MARKER],
        )?;
        0
    };
    if found > CURRENT_VERSION {
        return Err(GalleryError::TooNew {
            found: found as u32,
            supported: CURRENT_VERSION as u32,
        });
    }
    for (from, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        tx.batch_execute(sql)?;
        log::info!(
            "gallery: migrated the PostgreSQL schema {from} -> {}",
            from + 1
        );
    }
    tx.execute(
        "UPDATE deepstack_meta SET value = $1 WHERE key = 'schema_version'",
        &[&CURRENT_VERSION.to_string()],
    )?;
    tx.commit()?;
    Ok(found)
}
