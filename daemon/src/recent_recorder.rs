//! Keeping recent faces off the request path: recognize hands each face it saw to
//! [`RecentRecorder::record`], which only queues it; one background thread encodes the crops
//! and stores what has queued up in one transaction per batch (at most one a second, or
//! sooner when [`BATCH_FACES`] are waiting: one fsync for many faces, which an SD card
//! likes), applying the bounds as it goes and hourly when idle.
//!
//! Unknown faces are grouped as they are stored (`gallery::strangers`); the thread holds the
//! groups, which the store brings up to date at every batch.
//!
//! Best effort by design: a full queue drops faces (counted, logged), a store that cannot be
//! reached (PostgreSQL down) loses that batch with a warning, a crash loses the last second.
//! Nothing of it touches the gallery's registered samples.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use image::RgbImage;

use crate::gallery::strangers::StrangerGroups;
use crate::gallery::{Gallery, RecentBounds, SeenFace, Sighting};
use crate::vision::calibration::detection_confidence;
use crate::vision::quality::Quality;
use crate::vision::Face;

/// Faces waiting to be stored; past it new ones are dropped. A queued face holds its raw
/// crop (112 x 112 x 3 bytes) and embedding: about 38 KB, so at most ~10 MB in all.
const QUEUE_FACES: usize = 256;
/// A batch is stored when this many faces wait, or [`BATCH_AFTER`] after its first.
const BATCH_FACES: usize = 64;
const BATCH_AFTER: Duration = Duration::from_secs(1);
/// The bounds are applied with every batch, and after this long without a face.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// A face as recognize hands it over: the crop not yet encoded, the quality not yet measured.
pub struct NewRecentFace {
    pub sighting: Sighting,
    pub embedding: Vec<f32>,
    pub crop: RgbImage,
    /// The detected face (box, landmarks, score) the quality is measured from.
    pub face: Face,
}

/// The queue to the recorder thread; dropping it stores what is queued and ends the thread.
pub struct RecentRecorder {
    queue: Option<SyncSender<NewRecentFace>>,
    dropped: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl RecentRecorder {
    /// Starts the thread that stores into `gallery` (held weakly: the gallery closes when
    /// everything else let go of it) with `model` named as the embeddings' model.
    pub fn start(
        gallery: Weak<Gallery>,
        bounds: RecentBounds,
        model: String,
    ) -> std::io::Result<RecentRecorder> {
        let (queue, faces) = sync_channel(QUEUE_FACES);
        let thread = std::thread::Builder::new()
            .name("recent-faces".into())
            .spawn(move || store_batches(faces, &gallery, &bounds, &model))?;
        Ok(RecentRecorder {
            queue: Some(queue),
            dropped: Arc::new(AtomicU64::new(0)),
            thread: Some(thread),
        })
    }

    /// Queues faces to keep; never blocks. A full queue drops them (counted in
    /// [`RecentRecorder::dropped`], and logged at the first and every 1,000th).
    pub fn record(&self, faces: impl IntoIterator<Item = NewRecentFace>) {
        let Some(queue) = &self.queue else { return };
        for face in faces {
            if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) = queue.try_send(face)
            {
                let n = self.dropped.fetch_add(1, Ordering::Relaxed);
                if n.is_multiple_of(1_000) {
                    log::warn!(
                        "recent faces: the store falls behind, {} faces not kept so far",
                        n + 1
                    );
                }
            }
        }
    }

    /// Faces not kept because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

impl Drop for RecentRecorder {
    fn drop(&mut self) {
        drop(self.queue.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The recorder thread: until the queue closes, gathers batches and stores them.
fn store_batches(
    faces: Receiver<NewRecentFace>,
    gallery: &Weak<Gallery>,
    bounds: &RecentBounds,
    model: &str,
) {
    let mut groups = StrangerGroups::default();
    loop {
        let first = match faces.recv_timeout(PRUNE_EVERY) {
            Ok(face) => face,
            Err(RecvTimeoutError::Timeout) => {
                store(gallery, &[], bounds, &mut groups);
                continue;
            }
            Err(RecvTimeoutError::Disconnected) => return,
        };
        let deadline = Instant::now() + BATCH_AFTER;
        let mut batch = vec![first];
        let mut closed = false;
        while batch.len() < BATCH_FACES {
            match faces.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(face) => batch.push(face),
                Err(RecvTimeoutError::Timeout) => break,
                Err(RecvTimeoutError::Disconnected) => {
                    closed = true;
                    break;
                }
            }
        }
        let seen: Vec<SeenFace> = batch
            .into_iter()
            .filter_map(|s| seen_face(s, model))
            .collect();
        store(gallery, &seen, bounds, &mut groups);
        if closed {
            return;
        }
    }
}

fn seen_face(face: NewRecentFace, model: &str) -> Option<SeenFace> {
    let mut sighting = face.sighting;
    sighting.quality = Some(Quality::measure(
        &face.face,
        &face.crop,
        detection_confidence(face.face.score),
    ));
    match crate::vision::crop_jpeg(&face.crop) {
        Ok(crop) => Some(SeenFace {
            sighting,
            embedding: face.embedding,
            model: model.to_owned(),
            crop,
        }),
        Err(e) => {
            log::warn!("recent faces: cannot encode a crop: {e}");
            None
        }
    }
}

/// Stores `faces` (none: only applies the bounds); failures are logged, not retried.
fn store(
    gallery: &Weak<Gallery>,
    faces: &[SeenFace],
    bounds: &RecentBounds,
    groups: &mut StrangerGroups,
) {
    let Some(gallery) = gallery.upgrade() else {
        return;
    };
    match gallery.record_recent(faces, bounds, groups) {
        Ok(pruned) if pruned > 0 => log::debug!("recent faces: {pruned} past the bounds removed"),
        Ok(_) => {}
        Err(e) => log::warn!("recent faces: {} not kept: {e}", faces.len()),
    }
}
