//! Where a request's time went inside the daemon: waiting in the queue for an inference
//! thread, then decoding, detecting and embedding (alignment included), each the wall time
//! of that stage on the inference thread. The face routes write them in their log line
//! (`queue=0.04ms decode=1.65ms detect=6.20ms embed=0.00ms`; journal fields QUEUE_MS,
//! DECODE_MS, DETECT_MS, EMBED_MS), so that what the line's total has besides them is the
//! HTTP layer's: the upload and its form, the hand-offs between threads, matching and the
//! answer.

use std::cell::Cell;
use std::time::{Duration, Instant};

/// A job's time per stage; a stage run more than once (register's photos) is summed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StageTimes {
    /// From the request's hand-off to the pool to the job's start.
    pub queue: Duration,
    /// Bytes to pixels.
    pub decode: Duration,
    /// Finding the faces.
    pub detect: Duration,
    /// Aligning and embedding the faces.
    pub embed: Duration,
}

/// A stage of [`StageTimes`] measured by a [`Timer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// [`StageTimes::decode`].
    Decode,
    /// [`StageTimes::detect`].
    Detect,
    /// [`StageTimes::embed`].
    Embed,
}

thread_local! {
    /// The times of the job [`collect`] runs on this thread, if any.
    static CURRENT: Cell<Option<StageTimes>> = const { Cell::new(None) };
}

/// Measures a stage until dropped, and adds its wall time to the job being collected on this
/// thread (none: nothing is kept).
#[must_use = "the stage is measured until the timer is dropped"]
pub struct Timer {
    stage: Stage,
    start: Instant,
}

/// Starts measuring `stage` (see [`Timer`]).
pub fn start(stage: Stage) -> Timer {
    Timer {
        stage,
        start: Instant::now(),
    }
}

impl Drop for Timer {
    fn drop(&mut self) {
        if let Some(mut times) = CURRENT.get() {
            let spent = self.start.elapsed();
            match self.stage {
                Stage::Decode => times.decode += spent,
                Stage::Detect => times.detect += spent,
                Stage::Embed => times.embed += spent,
            }
            CURRENT.set(Some(times));
        }
    }
}

/// Runs `f` and returns the times of the stages it ran on this thread, after `queue` in the
/// queue.
pub fn collect<T>(queue: Duration, f: impl FnOnce() -> T) -> (T, StageTimes) {
    struct Restore(Option<StageTimes>);
    impl Drop for Restore {
        fn drop(&mut self) {
            CURRENT.set(self.0);
        }
    }
    let restore = Restore(CURRENT.replace(Some(StageTimes {
        queue,
        ..StageTimes::default()
    })));
    let out = f();
    let times = CURRENT.get().unwrap_or_default();
    drop(restore);
    (out, times)
}

/// Milliseconds with a hundredth's precision, as the log line writes them.
pub fn millis(d: Duration) -> f64 {
    (d.as_secs_f64() * 100_000.0).round() / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn busy(d: Duration) {
        let start = Instant::now();
        while start.elapsed() < d {}
    }

    #[test]
    fn each_stage_gets_its_own_time_and_repeats_add_up() {
        let ms = Duration::from_millis(1);
        let (answer, times) = collect(3 * ms, || {
            for (stage, d) in [
                (Stage::Decode, 2 * ms),
                (Stage::Detect, 4 * ms),
                (Stage::Decode, 2 * ms),
            ] {
                let _timer = start(stage);
                busy(d);
            }
            42
        });
        assert_eq!(answer, 42);
        assert_eq!(times.queue, 3 * ms);
        assert!(
            times.decode >= 4 * ms && times.decode < 40 * ms,
            "{times:?}"
        );
        assert!(times.detect >= 4 * ms && times.detect < times.decode + 40 * ms);
        assert_eq!(times.embed, Duration::ZERO);
    }

    #[test]
    fn outside_a_collected_job_nothing_is_kept() {
        drop(start(Stage::Embed));
        let ((), times) = collect(Duration::ZERO, || {});
        assert_eq!(times, StageTimes::default(), "the earlier stage leaked in");
        assert_eq!(CURRENT.get(), None, "collect restores the thread's state");
    }

    #[test]
    fn millis_rounds_to_a_hundredth() {
        assert_eq!(millis(Duration::from_micros(1_654)), 1.65);
        assert_eq!(millis(Duration::from_micros(6_207)), 6.21);
        assert_eq!(millis(Duration::ZERO), 0.0);
    }
}
