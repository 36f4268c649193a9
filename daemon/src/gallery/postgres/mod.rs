//! The PostgreSQL store (`GALLERY_URL`): one gallery shared by several daemons.
//!
//! Writes go to PostgreSQL in one transaction each, which also appends to the change log
//! (`follow`) and NOTIFYs the other nodes; the writer then applies the log to its own index
//! before answering, so the next query on this node sees the change, and the other nodes see
//! it as soon as the notification arrives. Recognition reads only the in-memory index: with
//! the database unreachable it goes on answering from the last index, while every write is
//! refused with [`GalleryError::Unavailable`] and the follower reconnects with backoff.
//!
//! Modules: `settings` (GALLERY_URL, the password file), `schema` (tables, migrations),
//! `follow` (the change log and the follower thread), `backup` (the SQLite backup file,
//! both ways).

mod backup;
mod follow;
mod recent;
mod schema;
mod settings;
mod tls;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLockReadGuard};

use postgres::{Client, Transaction};

pub use settings::GalleryUrl;

use super::index::Index;
use super::sqlite::schema::{decode_embedding, encode_embedding};
use super::{
    check_embedding, now_ms, GalleryError, NewSample, ReembedProgress, RegisterOutcome,
    RenameOutcome, SampleInfo, StoreHealth, StoredCrop, UserSummary,
};
use crate::vision::quality::Quality;
use follow::Shared;

/// How long one statement may run (or wait for the write lock) before it fails: a write
/// behind a stuck session answers an error instead of hanging its request.
const STATEMENT_TIMEOUT: &str = "15s";

/// One change to append to the log with a write.
enum Change<'a> {
    Add {
        userid: &'a str,
        sample_id: i64,
        negative: bool,
        embedding: &'a [f32],
    },
    DeleteUser {
        userid: &'a str,
    },
    DeleteSample {
        sample_id: i64,
        embedding: Vec<f32>,
    },
    Rename {
        from: &'a str,
        to: &'a str,
    },
    Reload,
}

/// This node's view of a shared PostgreSQL gallery. `Send + Sync`.
pub struct PostgresGallery {
    url: GalleryUrl,
    /// Temporary files of backups and restores.
    data_dir: PathBuf,
    /// The connection writes and gallery-API reads use; `None` after it failed, reconnected
    /// at the next use.
    writer: Mutex<Option<Client>>,
    /// The index and the last change applied, shared with the follower thread.
    shared: Arc<Shared>,
    reembed: Mutex<ReembedProgress>,
}

impl PostgresGallery {
    /// Connects to the gallery at `url` (a `GALLERY_URL`), migrates it, loads the index and
    /// starts following the change log. PGPASSFILE is read when the URL carries no password.
    pub fn connect(url: &str, data_dir: &Path) -> Result<PostgresGallery, GalleryError> {
        let passfile = std::env::var_os("PGPASSFILE").map(PathBuf::from);
        let url = GalleryUrl::parse(url, passfile.as_deref()).map_err(GalleryError::Config)?;
        PostgresGallery::connect_parsed(url, data_dir)
    }

    /// [`PostgresGallery::connect`] with a checked URL.
    pub fn connect_parsed(
        url: GalleryUrl,
        data_dir: &Path,
    ) -> Result<PostgresGallery, GalleryError> {
        std::fs::create_dir_all(data_dir)?;
        let mut client = open_writer(&url)?;
        let found = schema::migrate(&mut client)?;
        if found == 0 {
            log::info!("gallery: created the shared gallery in {}", url.shown());
        }
        let shared = Arc::new(Shared::load(&mut client)?);
        let reembed = reembed_after_open(&mut client)?;
        {
            let index = shared.index();
            log::info!(
                "gallery: {} users, {} samples in {}",
                index.user_count(),
                index.sample_count(),
                url.shown()
            );
        }
        follow::spawn_follower(Arc::downgrade(&shared), url.clone())?;
        Ok(PostgresGallery {
            url,
            data_dir: data_dir.to_owned(),
            writer: Mutex::new(Some(client)),
            shared,
            reembed: Mutex::new(reembed),
        })
    }

    pub(super) fn index(&self) -> RwLockReadGuard<'_, Index> {
        self.shared.index()
    }

    pub(super) fn health(&self) -> StoreHealth {
        self.shared.health()
    }

    /// Runs `f` on the writer connection, connecting first if needed. A connection fault
    /// drops the connection and answers [`GalleryError::Unavailable`].
    fn with_client<T>(
        &self,
        f: impl FnOnce(&mut Client) -> Result<T, GalleryError>,
    ) -> Result<T, GalleryError> {
        let mut slot = self.writer();
        let client = match &mut *slot {
            Some(client) if !client.is_closed() => client,
            _ => {
                *slot = None;
                match open_writer(&self.url) {
                    Ok(client) => slot.insert(client),
                    Err(e) => {
                        self.shared.set_unreachable(e.to_string());
                        return Err(e);
                    }
                }
            }
        };
        let result = f(client);
        if let Err(e) = &result {
            if client.is_closed() || is_connection_fault(e) {
                *slot = None;
                self.shared.set_unreachable(e.to_string());
                return Err(GalleryError::Unavailable(e.to_string()));
            }
        }
        result
    }

    /// One write: `f` runs inside a transaction holding the write lock and returns its
    /// outcome and the changes it made; they are appended to the log, the nodes notified,
    /// the transaction committed, and this node's index caught up before returning.
    fn write<'c, T>(
        &self,
        f: impl FnOnce(&mut Transaction<'_>) -> Result<(T, Vec<Change<'c>>), GalleryError>,
    ) -> Result<T, GalleryError> {
        self.with_client(|client| {
            let mut tx = client.transaction()?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&schema::WRITE_LOCK])?;
            let (outcome, changes) = f(&mut tx)?;
            if !changes.is_empty() {
                append_changes(&mut tx, &changes)?;
            }
            tx.commit()?;
            // Committed: the write stands whatever happens next. Should the catch-up fail,
            // the follower applies it when the connection is back.
            if let Err(e) = self.shared.catch_up(client) {
                log::warn!("gallery: committed, but this node's index is not caught up yet: {e}");
            }
            Ok(outcome)
        })
    }

    fn writer(&self) -> MutexGuard<'_, Option<Client>> {
        self.writer.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn reembed_state(&self) -> MutexGuard<'_, ReembedProgress> {
        self.reembed.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// See [`super::Gallery::register`] (the userid and samples are checked there).
    pub fn register(
        &self,
        userid: &str,
        samples: Vec<NewSample>,
        consumed: &[i64],
    ) -> Result<RegisterOutcome, GalleryError> {
        for sample in &samples {
            check_embedding(&sample.embedding)?;
        }
        self.write(|tx| {
            let now = now_ms();
            let existing = tx.query_opt("SELECT id FROM users WHERE userid = $1", &[&userid])?;
            let (user_id, outcome): (i64, _) = match existing {
                Some(row) => (row.get(0), RegisterOutcome::Updated),
                // "Not ..." needs the user it is about.
                None if samples.iter().all(|s| s.negative) => {
                    return Err(GalleryError::UnknownUser)
                }
                None => (
                    tx.query_one(
                        "INSERT INTO users(userid, created_at) VALUES ($1, $2) RETURNING id",
                        &[&userid, &now],
                    )?
                    .get(0),
                    RegisterOutcome::Added,
                ),
            };
            let insert = tx.prepare(
                "INSERT INTO samples(user_id, embedding, model, crop, source, det_score,
                                     added_at, quality, face_px, sharpness, yaw, pitch, negative)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) RETURNING id",
            )?;
            let mut changes = Vec::with_capacity(samples.len());
            for sample in &samples {
                let q = sample.quality;
                let id: i64 = tx
                    .query_one(
                        &insert,
                        &[
                            &user_id,
                            &encode_embedding(&sample.embedding),
                            &sample.model,
                            &sample.crop,
                            &sample.source,
                            &f64::from(sample.det_score),
                            &now,
                            &q.map(|q| f64::from(q.score)),
                            &q.map(|q| q.face_px as i32),
                            &q.map(|q| f64::from(q.sharpness)),
                            &q.map(|q| f64::from(q.yaw)),
                            &q.map(|q| f64::from(q.pitch)),
                            &sample.negative,
                        ],
                    )?
                    .get(0);
                changes.push(Change::Add {
                    userid,
                    sample_id: id,
                    negative: sample.negative,
                    embedding: &sample.embedding,
                });
            }
            for &id in consumed {
                if tx.execute(crate::gallery::recent::DELETE_ONE, &[&id])? != 1 {
                    return Err(GalleryError::RecentFaceGone(id));
                }
            }
            Ok((outcome, changes))
        })
    }

    /// Removes a user and its samples; false if it did not exist.
    pub fn delete_user(&self, userid: &str) -> Result<bool, GalleryError> {
        self.write(|tx| {
            let deleted = tx.execute("DELETE FROM users WHERE userid = $1", &[&userid])? > 0;
            let changes = if deleted {
                vec![Change::DeleteUser { userid }]
            } else {
                Vec::new()
            };
            Ok((deleted, changes))
        })
    }

    /// Removes one sample; false if there is no such sample.
    pub fn delete_sample(&self, sample_id: i64) -> Result<bool, GalleryError> {
        self.write(|tx| {
            let Some(row) = tx.query_opt(
                "DELETE FROM samples WHERE id = $1 RETURNING embedding",
                &[&sample_id],
            )?
            else {
                return Ok((false, Vec::new()));
            };
            let embedding = decode_embedding(row.get(0)).ok_or_else(|| {
                GalleryError::Corrupt(format!("sample {sample_id} has a malformed embedding"))
            })?;
            Ok((
                true,
                vec![Change::DeleteSample {
                    sample_id,
                    embedding,
                }],
            ))
        })
    }

    /// Renames `from` to `to`, merging into an existing `to` only when `merge` is set.
    pub fn rename_user(
        &self,
        from: &str,
        to: &str,
        merge: bool,
    ) -> Result<RenameOutcome, GalleryError> {
        self.write(|tx| {
            let id_of = |tx: &mut Transaction<'_>, userid: &str| {
                tx.query_opt("SELECT id FROM users WHERE userid = $1", &[&userid])
                    .map(|row| row.map(|row| row.get::<_, i64>(0)))
            };
            let source = id_of(tx, from)?.ok_or(GalleryError::UnknownUser)?;
            if from == to {
                return Ok((RenameOutcome::Unchanged, Vec::new()));
            }
            let outcome = match id_of(tx, to)? {
                Some(_) if !merge => return Err(GalleryError::UserExists),
                Some(target) => {
                    tx.execute(
                        "UPDATE samples SET user_id = $1 WHERE user_id = $2",
                        &[&target, &source],
                    )?;
                    tx.execute("DELETE FROM users WHERE id = $1", &[&source])?;
                    RenameOutcome::Merged
                }
                None => {
                    tx.execute(
                        "UPDATE users SET userid = $1 WHERE id = $2",
                        &[&to, &source],
                    )?;
                    RenameOutcome::Renamed
                }
            };
            Ok((outcome, vec![Change::Rename { from, to }]))
        })
    }

    /// Every user with its sample count, sorted by userid bytewise.
    pub fn user_summaries(&self) -> Result<Vec<UserSummary>, GalleryError> {
        self.with_client(|client| {
            let rows = client.query(
                "SELECT u.userid, count(s.id), u.created_at, max(s.added_at), max(s.id),
                        (SELECT count(*) FROM samples n WHERE n.user_id = u.id AND n.negative)
                 FROM users u LEFT JOIN samples s ON s.user_id = u.id AND NOT s.negative
                 GROUP BY u.id ORDER BY u.userid COLLATE \"C\"",
                &[],
            )?;
            Ok(rows
                .iter()
                .map(|row| UserSummary {
                    userid: row.get(0),
                    samples: row.get::<_, i64>(1) as usize,
                    created_at: row.get(2),
                    last_added_at: row.get(3),
                    newest_sample: row.get(4),
                    negatives: row.get::<_, i64>(5) as usize,
                })
                .collect())
        })
    }

    /// Whether `userid` is registered.
    pub fn has_user(&self, userid: &str) -> Result<bool, GalleryError> {
        self.with_client(|client| {
            Ok(client
                .query_opt("SELECT 1 FROM users WHERE userid = $1", &[&userid])?
                .is_some())
        })
    }

    /// The stored samples of `userid`, oldest first.
    pub fn user_samples(&self, userid: &str) -> Result<Vec<SampleInfo>, GalleryError> {
        self.with_client(|client| {
            let rows = client.query(
                "SELECT s.id, s.model, s.source, s.det_score, s.added_at,
                        s.quality, s.face_px, s.sharpness, s.yaw, s.pitch, s.negative
                 FROM samples s JOIN users u ON u.id = s.user_id
                 WHERE u.userid = $1 ORDER BY s.id",
                &[&userid],
            )?;
            Ok(rows
                .iter()
                .map(|row| {
                    let det_score = row.get::<_, f64>(3) as f32;
                    let quality = row.get::<_, Option<f64>>(5).map(|score| Quality {
                        score: score as f32,
                        face_px: row.get::<_, Option<i32>>(6).unwrap_or(0).max(0) as u32,
                        sharpness: row.get::<_, Option<f64>>(7).unwrap_or(0.0) as f32,
                        det_score,
                        yaw: row.get::<_, Option<f64>>(8).unwrap_or(0.0) as f32,
                        pitch: row.get::<_, Option<f64>>(9).unwrap_or(0.0) as f32,
                    });
                    SampleInfo {
                        id: row.get(0),
                        model: row.get(1),
                        source: row.get(2),
                        det_score,
                        added_at: row.get(4),
                        quality,
                        negative: row.get(10),
                    }
                })
                .collect())
        })
    }

    /// The JPEG crop of a sample.
    pub fn sample_crop(&self, sample_id: i64) -> Result<Option<Vec<u8>>, GalleryError> {
        self.with_client(|client| {
            Ok(client
                .query_opt("SELECT crop FROM samples WHERE id = $1", &[&sample_id])?
                .map(|row| row.get(0)))
        })
    }

    /// This node's re-embedding progress.
    pub fn reembed_progress(&self) -> ReembedProgress {
        self.reembed_state().clone()
    }

    /// Starts a re-embedding on this node (staged rows of `model` count as done).
    pub fn reembed_start(&self, model: &str) -> Result<ReembedProgress, GalleryError> {
        let mut progress = self.reembed_state();
        if progress.is_running() {
            return Err(GalleryError::ReembedRunning);
        }
        let (staged, total) = self.with_client(|client| {
            client.execute("DELETE FROM reembed_staging WHERE model != $1", &[&model])?;
            staged_and_total(client)
        })?;
        progress.begin(model, staged, total);
        Ok(progress.clone())
    }

    /// Up to `limit` samples above `after` without a staged embedding, by id.
    pub fn reembed_next(&self, after: i64, limit: usize) -> Result<Vec<StoredCrop>, GalleryError> {
        self.with_client(|client| {
            let rows = client.query(
                "SELECT id, crop FROM samples s
                 WHERE id > $1
                   AND NOT EXISTS (SELECT 1 FROM reembed_staging r WHERE r.sample_id = s.id)
                 ORDER BY id LIMIT $2",
                &[&after, &(limit as i64)],
            )?;
            Ok(rows
                .iter()
                .map(|row| StoredCrop {
                    id: row.get(0),
                    crop: row.get(1),
                })
                .collect())
        })
    }

    /// Stages one batch of new embeddings in one transaction.
    pub fn reembed_stage(
        &self,
        model: &str,
        embeddings: &[(i64, Vec<f32>)],
        failed: usize,
    ) -> Result<(), GalleryError> {
        if !self.reembed_state().is_running() {
            return Err(GalleryError::ReembedStopped);
        }
        for (_, embedding) in embeddings {
            check_embedding(embedding)?;
        }
        self.with_client(|client| {
            let mut tx = client.transaction()?;
            let insert = tx.prepare(
                "INSERT INTO reembed_staging(sample_id, embedding, model)
                 SELECT $1, $2, $3 WHERE EXISTS (SELECT 1 FROM samples WHERE id = $1)
                 ON CONFLICT (sample_id)
                 DO UPDATE SET embedding = excluded.embedding, model = excluded.model",
            )?;
            for (id, embedding) in embeddings {
                tx.execute(&insert, &[id, &encode_embedding(embedding), &model])?;
            }
            tx.commit()?;
            Ok(())
        })?;
        self.reembed_state().staged(embeddings.len(), failed);
        Ok(())
    }

    /// Swaps every staged embedding in, in one transaction; every node reloads.
    pub fn reembed_finish(&self) -> Result<usize, GalleryError> {
        if !self.reembed_state().is_running() {
            return Err(GalleryError::ReembedStopped);
        }
        let swapped = self.write(|tx| {
            let swapped = tx.execute(
                "UPDATE samples s SET embedding = r.embedding, model = r.model
                 FROM reembed_staging r WHERE r.sample_id = s.id",
                &[],
            )?;
            tx.execute("DELETE FROM reembed_staging", &[])?;
            Ok((swapped as usize, vec![Change::Reload]))
        })?;
        self.reembed_state().finished(swapped);
        Ok(swapped)
    }

    /// Marks this node's running re-embedding as failed.
    pub fn reembed_failed(&self, error: String) {
        self.reembed_state().fail(error);
    }
}

/// A writer connection: every statement bounded by [`STATEMENT_TIMEOUT`].
fn open_writer(url: &GalleryUrl) -> Result<Client, GalleryError> {
    let mut client = follow::connect(url)?;
    client.batch_execute(&format!("SET statement_timeout = '{STATEMENT_TIMEOUT}'"))?;
    Ok(client)
}

/// Appends `changes` under the write lock (held by the caller's transaction), numbered after
/// the newest, and announces the newest number; NOTIFY is delivered at commit.
fn append_changes(tx: &mut Transaction<'_>, changes: &[Change<'_>]) -> Result<(), GalleryError> {
    let newest: i64 = tx
        .query_one("SELECT coalesce(max(seq), 0)::bigint FROM changes", &[])?
        .get(0);
    let insert = tx.prepare(
        "INSERT INTO changes(seq, at, kind, userid, other, sample_id, embedding, negative)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )?;
    let now = now_ms();
    let mut seq = newest;
    for change in changes {
        seq += 1;
        let none: Option<&str> = None;
        let negative = matches!(change, Change::Add { negative: true, .. });
        let (kind, userid, other, sample_id, embedding) = match change {
            Change::Add {
                userid,
                sample_id,
                embedding,
                ..
            } => (
                "add",
                Some(*userid),
                none,
                Some(*sample_id),
                Some(encode_embedding(embedding)),
            ),
            Change::DeleteUser { userid } => ("delete_user", Some(*userid), none, None, None),
            Change::DeleteSample {
                sample_id,
                embedding,
            } => (
                "delete_sample",
                none,
                none,
                Some(*sample_id),
                Some(encode_embedding(embedding)),
            ),
            Change::Rename { from, to } => ("rename", Some(*from), Some(*to), None, None),
            Change::Reload => ("reload", none, none, None, None),
        };
        tx.execute(
            &insert,
            &[
                &seq, &now, &kind, &userid, &other, &sample_id, &embedding, &negative,
            ],
        )?;
    }
    tx.execute(
        "SELECT pg_notify($1, $2)",
        &[&schema::CHANNEL, &seq.to_string()],
    )?;
    Ok(())
}

fn staged_and_total(client: &mut Client) -> Result<(usize, usize), GalleryError> {
    let row = client.query_one(
        "SELECT (SELECT count(*) FROM reembed_staging), (SELECT count(*) FROM samples)",
        &[],
    )?;
    Ok((row.get::<_, i64>(0) as usize, row.get::<_, i64>(1) as usize))
}

fn reembed_after_open(client: &mut Client) -> Result<ReembedProgress, GalleryError> {
    let (staged, total) = staged_and_total(client)?;
    Ok(ReembedProgress::interrupted(staged, total))
}

/// Whether `e` means the server cannot be talked to (as opposed to refusing a statement).
fn is_connection_fault(e: &GalleryError) -> bool {
    match e {
        GalleryError::Unavailable(_) => true,
        GalleryError::Postgres(e) => match e.code() {
            // No SQLSTATE: the socket, the protocol or a timeout on our side.
            None => true,
            // 08: connection exception; 57P0x: the server is shutting down or starting.
            Some(code) => {
                let code = code.code();
                code.starts_with("08") || code.starts_with("57P")
            }
        },
        _ => false,
    }
}
