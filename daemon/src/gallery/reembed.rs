//! Re-embedding's progress, shared by both stores: new embeddings for every sample from its
//! stored face crop, after a model change, without anybody registering again.
//!
//! Each store keeps the new embeddings in a staging table until one transaction swaps them
//! all in (`sqlite::reembed`, `postgres::reembed`); who computes them (the inference pool) is
//! the HTTP layer's business (`http::reembed`). The progress `GET /v1/status` shows is here.

use serde::Serialize;

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

impl ReembedProgress {
    /// After a start that found `staged` rows from a run the daemon did not finish.
    pub(super) fn interrupted(staged: usize, total: usize) -> ReembedProgress {
        if staged == 0 {
            return ReembedProgress::idle();
        }
        ReembedProgress {
            state: ReembedState::Interrupted,
            done: staged,
            total,
            ..ReembedProgress::idle()
        }
    }

    /// Whether a run is going on.
    pub(super) fn is_running(&self) -> bool {
        self.state == ReembedState::Running
    }

    /// A run with `model` begins; `staged` of `total` samples are already done.
    pub(super) fn begin(&mut self, model: &str, staged: usize, total: usize) {
        *self = ReembedProgress {
            state: ReembedState::Running,
            done: staged,
            total,
            failed: 0,
            model: Some(model.to_owned()),
            started_at: Some(super::now_ms()),
            finished_at: None,
            error: None,
        };
    }

    /// One batch was staged: `embedded` new embeddings, `failed` crops that gave none.
    pub(super) fn staged(&mut self, embedded: usize, failed: usize) {
        self.done += embedded + failed;
        self.failed += failed;
        self.total = self.total.max(self.done);
    }

    /// The staged embeddings are in use.
    pub(super) fn finished(&mut self, swapped: usize) {
        self.state = ReembedState::Done;
        self.finished_at = Some(super::now_ms());
        log::info!(
            "gallery: re-embedded {swapped} samples ({} failed and kept their embedding)",
            self.failed
        );
    }

    /// The run stopped on `error`; does nothing when it is not running.
    pub(super) fn fail(&mut self, error: String) {
        if !self.is_running() {
            return;
        }
        log::error!("gallery: re-embedding stopped: {error}");
        self.state = ReembedState::Failed;
        self.finished_at = Some(super::now_ms());
        self.error = Some(error);
    }

    /// A restore replaced the samples a running re-embedding reads: it stops.
    pub(super) fn stop_for_restore(&mut self) {
        if self.is_running() {
            log::warn!("gallery: restored during a re-embedding; it stopped, start it again");
            self.state = ReembedState::Failed;
            self.finished_at = Some(super::now_ms());
            self.error = Some(RESTORED_MEANWHILE.to_owned());
        }
    }
}
