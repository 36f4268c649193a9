//! Re-embedding in the SQLite store: new embeddings are written batch by batch into the
//! `reembed_staging` table (committed, so a crash loses at most one batch); recognition goes
//! on with the old embeddings meanwhile. At the end ONE transaction copies every staged
//! embedding into `samples` and empties the staging table, and the rebuilt index replaces
//! the old one under its lock: a query sees either all old or all new embeddings. A restart
//! in the middle leaves the staged rows; the next run keeps those made by the same model
//! and does only the rest, and rows of another model are discarded.

use rusqlite::{params, Connection, TransactionBehavior};

use super::{load_index, schema, SqliteGallery};
use crate::gallery::{check_embedding, GalleryError, ReembedProgress, StoredCrop};

/// The progress to show after opening `conn`: interrupted if staged rows wait.
pub(super) fn progress_after_open(conn: &Connection) -> Result<ReembedProgress, GalleryError> {
    let staged: i64 = conn.query_row("SELECT count(*) FROM reembed_staging", [], |r| r.get(0))?;
    let total: i64 = conn.query_row("SELECT count(*) FROM samples", [], |r| r.get(0))?;
    Ok(ReembedProgress::interrupted(
        staged as usize,
        total as usize,
    ))
}

impl SqliteGallery {
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
        if progress.is_running() {
            return Err(GalleryError::ReembedRunning);
        }
        conn.execute("DELETE FROM reembed_staging WHERE model != ?1", [model])?;
        let staged: i64 =
            conn.query_row("SELECT count(*) FROM reembed_staging", [], |r| r.get(0))?;
        let total: i64 = conn.query_row("SELECT count(*) FROM samples", [], |r| r.get(0))?;
        progress.begin(model, staged as usize, total as usize);
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
            if !self.reembed_state().is_running() {
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
        progress.staged(embeddings.len(), failed);
        Ok(())
    }

    /// Swaps every staged embedding in, in one transaction, and replaces the index.
    pub fn reembed_finish(&self) -> Result<usize, GalleryError> {
        let swapped = {
            let mut conn = self.conn();
            if !self.reembed_state().is_running() {
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
        self.reembed_state().finished(swapped);
        Ok(swapped)
    }

    /// Marks the running re-embedding as failed; its staged rows stay for the next run.
    /// Does nothing when it is no longer running (a restore already stopped it).
    pub fn reembed_failed(&self, error: String) {
        self.reembed_state().fail(error);
    }

    /// Called by a restore, under the connection lock, after it emptied the staging table:
    /// a running re-embedding read crops of samples that are gone, so it stops.
    pub(super) fn reembed_stop_for_restore(&self) {
        self.reembed_state().stop_for_restore();
    }
}
