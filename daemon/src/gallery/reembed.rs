//! Re-embedding: new embeddings for every sample from its stored face crop, after a model
//! change, without anybody registering again.
//!
//! The gallery's side of it: new embeddings are written batch by batch into the
//! `reembed_staging` table (committed, so a crash loses at most one batch); recognition goes
//! on with the old embeddings meanwhile. At the end ONE transaction copies every staged
//! embedding into `samples` and empties the staging table, and the rebuilt index replaces
//! the old one under its lock: a query sees either all old or all new embeddings. A restart
//! in the middle leaves the staged rows; the next run keeps those made by the same model
//! and does only the rest, and rows of another model are discarded.
//!
//! Who computes the embeddings (the inference pool) is the HTTP layer's business
//! (`http::reembed`); the progress shown by `GET /v1/status` lives here with the staged rows.

use rusqlite::{params, Connection, TransactionBehavior};
use serde::Serialize;

use super::{check_embedding, load_index, now_ms, schema, Gallery, GalleryError};

/// Where a re-embedding stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ReembedState {
    /// None has run since the start.
    Idle,
    /// One is running.
    Running,
    /// The last one finished and its embeddings are in use.
    Done,
    /// The last one stopped on an error; its staged rows are kept for the next run.
    Failed,
    /// The daemon stopped during one: staged rows were found at start-up. The next run
    /// resumes them.
    Interrupted,
}

/// Progress of the current or last re-embedding, as `GET /v1/status` shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReembedProgress {
    /// Where it stands.
    pub state: ReembedState,
    /// Samples handled (staged or failed).
    pub done: usize,
    /// Samples to handle.
    pub total: usize,
    /// Samples whose crop could not be embedded; they keep their old embedding.
    pub failed: usize,
    /// The model the new embeddings come from.
    pub model: Option<String>,
    /// Unix milliseconds.
    pub started_at: Option<i64>,
    /// Unix milliseconds.
    pub finished_at: Option<i64>,
    /// Why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl ReembedProgress {
    fn idle() -> ReembedProgress {
        ReembedProgress {
            state: ReembedState::Idle,
            done: 0,
            total: 0,
            failed: 0,
            model: None,
            started_at: None,
            finished_at: None,
            error: None,
        }
    }
}

/// The progress to show after opening `conn`: interrupted if staged rows wait.
pub(super) fn progress_after_open(conn: &Connection) -> Result<ReembedProgress, GalleryError> {
    let staged: i64 = conn.query_row("SELECT count(*) FROM reembed_staging", [], |r| r.get(0))?;
    if staged == 0 {
        return Ok(ReembedProgress::idle());
    }
    let total: i64 = conn.query_row("SELECT count(*) FROM samples", [], |r| r.get(0))?;
    Ok(ReembedProgress {
        state: ReembedState::Interrupted,
        done: staged as usize,
        total: total as usize,
        ..ReembedProgress::idle()
    })
}

/// Why a re-embedding stopped when a restore replaced the gallery under it.
pub const RESTORED_MEANWHILE: &str =
    "the gallery was restored meanwhile: start the re-embedding again";

/// One stored sample to re-embed.
#[derive(Debug, Clone)]
pub struct StoredCrop {
    /// Sample id.
    pub id: i64,
    /// Its JPEG face crop.
    pub crop: Vec<u8>,
}

impl Gallery {
    /// The current or last re-embedding's progress.
    pub fn reembed_progress(&self) -> ReembedProgress {
        self.reembed_state().clone()
    }

    /// Starts a re-embedding with `model`, or [`GalleryError::ReembedRunning`]. Staged rows
    /// of another model are dropped; those of `model` count as done (a resumed run).
    ///
    /// Lock order, everywhere: the connection, then the progress.
    pub fn reembed_start(&self, model: &str) -> Result<ReembedProgress, GalleryError> {
        let conn = self.conn();
        let mut progress = self.reembed_state();
        if progress.state == ReembedState::Running {
            return Err(GalleryError::ReembedRunning);
        }
        let (staged, total) = {
            conn.execute("DELETE FROM reembed_staging WHERE model != ?1", [model])?;
            let staged: i64 =
                conn.query_row("SELECT count(*) FROM reembed_staging", [], |r| r.get(0))?;
            let total: i64 = conn.query_row("SELECT count(*) FROM samples", [], |r| r.get(0))?;
            (staged as usize, total as usize)
        };
        *progress = ReembedProgress {
            state: ReembedState::Running,
            done: staged,
            total,
            failed: 0,
            model: Some(model.to_owned()),
            started_at: Some(now_ms()),
            finished_at: None,
            error: None,
        };
        Ok(progress.clone())
    }

    /// Up to `limit` samples with an id above `after` that have no staged embedding yet,
    /// by id.
    pub fn reembed_next(&self, after: i64, limit: usize) -> Result<Vec<StoredCrop>, GalleryError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT id, crop FROM samples
             WHERE id > ?1 AND id NOT IN (SELECT sample_id FROM reembed_staging)
             ORDER BY id LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![after, limit as i64], |row| {
            Ok(StoredCrop {
                id: row.get(0)?,
                crop: row.get(1)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Stores one batch of new embeddings (sample id, embedding) in the staging table, in
    /// one transaction; samples deleted meanwhile are skipped. `failed` more samples could
    /// not be embedded. Refused with [`GalleryError::ReembedStopped`] when the run was
    /// stopped meanwhile (a restore replaced the samples the batch was read from).
    pub fn reembed_stage(
        &self,
        model: &str,
        embeddings: &[(i64, Vec<f32>)],
        failed: usize,
    ) -> Result<(), GalleryError> {
        let mut conn = self.conn();
        {
            if self.reembed_state().state != ReembedState::Running {
                return Err(GalleryError::ReembedStopped);
            }
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            {
                let mut insert = tx.prepare(
                    "INSERT OR REPLACE INTO reembed_staging(sample_id, embedding, model)
                     SELECT ?1, ?2, ?3 WHERE EXISTS (SELECT 1 FROM samples WHERE id = ?1)",
                )?;
                for (id, embedding) in embeddings {
                    check_embedding(embedding)?;
                    insert.execute(params![id, schema::encode_embedding(embedding), model])?;
                }
            }
            tx.commit()?;
        }
        let mut progress = self.reembed_state();
        drop(conn);
        progress.done += embeddings.len() + failed;
        progress.failed += failed;
        progress.total = progress.total.max(progress.done);
        Ok(())
    }

    /// Swaps every staged embedding in, in one transaction, and replaces the index.
    pub fn reembed_finish(&self) -> Result<usize, GalleryError> {
        let swapped = {
            let mut conn = self.conn();
            if self.reembed_state().state != ReembedState::Running {
                return Err(GalleryError::ReembedStopped);
            }
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let swapped = tx.execute(
                "UPDATE samples SET
                     embedding = (SELECT embedding FROM reembed_staging WHERE sample_id = samples.id),
                     model = (SELECT model FROM reembed_staging WHERE sample_id = samples.id)
                 WHERE id IN (SELECT sample_id FROM reembed_staging)",
                [],
            )?;
            tx.execute("DELETE FROM reembed_staging", [])?;
            let index = load_index(&tx)?;
            tx.commit()?;
            // Still under the connection lock: no registration interleaves.
            *self.index_mut() = index;
            swapped
        };
        let mut progress = self.reembed_state();
        progress.state = ReembedState::Done;
        progress.finished_at = Some(now_ms());
        log::info!(
            "gallery: re-embedded {swapped} samples ({} failed and kept their embedding)",
            progress.failed
        );
        Ok(swapped)
    }

    /// Marks the running re-embedding as failed; its staged rows stay for the next run.
    /// Does nothing when it is no longer running (a restore already stopped it).
    pub fn reembed_failed(&self, error: String) {
        let mut progress = self.reembed_state();
        if progress.state != ReembedState::Running {
            return;
        }
        log::error!("gallery: re-embedding stopped: {error}");
        progress.state = ReembedState::Failed;
        progress.finished_at = Some(now_ms());
        progress.error = Some(error);
    }

    /// Called by a restore, under the connection lock, after it emptied the staging table:
    /// a running re-embedding read crops of samples that are gone, so it stops.
    pub(super) fn reembed_stop_for_restore(&self) {
        let mut progress = self.reembed_state();
        if progress.state == ReembedState::Running {
            log::warn!("gallery: restored during a re-embedding; it stopped, start it again");
            progress.state = ReembedState::Failed;
            progress.finished_at = Some(now_ms());
            progress.error = Some(RESTORED_MEANWHILE.to_owned());
        }
    }
}
