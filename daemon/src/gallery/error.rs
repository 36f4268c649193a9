//! The one error type of the gallery.

/// Everything that can go wrong in the gallery; the HTTP layer maps each variant to a response.
#[derive(Debug, thiserror::Error)]
pub enum GalleryError {
    /// SQLite refused or failed (disk full, I/O error, locked for too long, ...).
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// PostgreSQL refused a statement (the shared gallery, `GALLERY_URL`).
    #[error("postgresql: {}", with_causes(.0))]
    Postgres(#[from] postgres::Error),
    /// The shared gallery cannot be reached (refused, cut off, shutting down): nothing was
    /// changed.
    #[error("the shared gallery cannot be reached: {0}")]
    Unavailable(String),
    /// `GALLERY_URL` or its password file is not usable.
    #[error("GALLERY_URL: {0}")]
    Config(String),
    /// Filesystem trouble around the database (creating the data dir, temp files).
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// A restore was given something that is not a usable gallery backup; nothing was changed.
    #[error("invalid backup: {0}")]
    InvalidBackup(String),
    /// The userid is empty.
    #[error("userid must not be empty")]
    EmptyUserid,
    /// A registration came without any sample.
    #[error("no samples to register")]
    NoSamples,
    /// An embedding has the wrong length or is not a finite unit vector.
    #[error("bad embedding: {0}")]
    BadEmbedding(String),
    /// The live database was written by a newer deepstackd (its schema version is unknown to us).
    #[error("gallery schema version {found} is newer than the supported {supported}")]
    TooNew {
        /// `PRAGMA user_version` found in the file.
        found: u32,
        /// The newest version this build knows.
        supported: u32,
    },
    /// No user of that name.
    #[error("no such user")]
    UnknownUser,
    /// A rename onto an existing user without asking to merge.
    #[error("the target userid already exists")]
    UserExists,
    /// A recent face being named was deleted meanwhile; nothing was registered.
    #[error("recent face {0} is gone")]
    RecentFaceGone(i64),
    /// A re-embedding is already running.
    #[error("a re-embedding is already running")]
    ReembedRunning,
    /// The re-embedding was stopped (by a restore) while this step waited.
    #[error("the re-embedding was stopped")]
    ReembedStopped,
    /// The live database does not look like a gallery or holds data we cannot read.
    #[error("gallery database is not usable: {0}")]
    Corrupt(String),
}

/// `e` and what caused it ("error performing TLS handshake: invalid peer certificate:
/// UnknownIssuer", "db error: ERROR: ..."): the client library's own text names only the kind.
pub fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}
