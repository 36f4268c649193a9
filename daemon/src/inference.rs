//! The inference pool: THREADCOUNT OS threads running jobs on one shared [`Pipeline`], so
//! decoding, the models and gallery writes never block actix's async workers.
//!
//! A job waits in a bounded queue of [`QUEUE_PER_THREAD`] x THREADCOUNT slots. When the queue
//! is full the caller waits (asynchronously) for a slot; the request's deadline covers both
//! that wait and the job itself, so a flood of requests turns into timeout answers rather
//! than an unbounded backlog. A job whose caller has gone (deadline passed, client hung up)
//! is skipped if no worker has started it yet.
//!
//! tract plans are immutable and create their state per run, so one `Arc<Pipeline>` serves
//! every thread.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use crate::vision::Pipeline;

/// Queue slots per inference thread. Enough that a worker finishing a job finds the next one
/// already decoded from the network and waiting, small enough that a burst waits at the
/// door (where its deadline still runs) instead of piling up behind the workers.
pub const QUEUE_PER_THREAD: usize = 4;

type Job = Box<dyn FnOnce(&Pipeline) + Send>;

/// Why a job gave no result.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InferenceError {
    /// The deadline passed, waiting for a slot or for the job.
    #[error("not done before the deadline")]
    TimedOut,
    /// The job panicked (a bug); the worker survived it.
    #[error("the inference job failed")]
    Failed,
    /// The workers are gone (the server is shutting down).
    #[error("the inference pool is stopped")]
    Stopped,
}

/// A handle to the pool; cheap to clone. The threads stop when the last handle is dropped.
#[derive(Clone)]
pub struct InferencePool {
    sender: mpsc::Sender<Job>,
    pipeline: Arc<Pipeline>,
    threads: usize,
    timeout: Duration,
}

impl InferencePool {
    /// Starts `threads` workers sharing `pipeline`; each job gets `timeout` to finish.
    pub fn start(
        pipeline: Arc<Pipeline>,
        threads: usize,
        timeout: Duration,
    ) -> std::io::Result<InferencePool> {
        let threads = threads.max(1);
        let (sender, receiver) = mpsc::channel::<Job>(threads * QUEUE_PER_THREAD);
        let receiver = Arc::new(Mutex::new(receiver));
        for i in 0..threads {
            let receiver = Arc::clone(&receiver);
            let pipeline = Arc::clone(&pipeline);
            std::thread::Builder::new()
                .name(format!("inference-{i}"))
                .spawn(move || worker(&receiver, &pipeline))?;
        }
        Ok(InferencePool {
            sender,
            pipeline,
            threads,
            timeout,
        })
    }

    /// The shared pipeline (models and mode, for the status page).
    pub fn pipeline(&self) -> &Pipeline {
        &self.pipeline
    }

    /// Number of worker threads.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Runs `job` on a worker and returns its result, or an error once the deadline passed.
    pub async fn run<R, F>(&self, job: F) -> Result<R, InferenceError>
    where
        F: FnOnce(&Pipeline) -> R + Send + 'static,
        R: Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |pipeline| {
            // The caller dropped its receiver: nobody would read the answer.
            if tx.is_closed() {
                return;
            }
            let _ = tx.send(job(pipeline));
        });
        let queued_and_done = async {
            self.sender
                .send(job)
                .await
                .map_err(|_| InferenceError::Stopped)?;
            // A dropped sender without an answer: the job panicked.
            rx.await.map_err(|_| InferenceError::Failed)
        };
        actix_web::rt::time::timeout(self.timeout, queued_and_done)
            .await
            .unwrap_or(Err(InferenceError::TimedOut))
    }
}

fn worker(receiver: &Mutex<mpsc::Receiver<Job>>, pipeline: &Pipeline) {
    loop {
        // One idle worker waits on the channel, the others on the lock; a poisoned lock only
        // means a thread died while waiting, the receiver itself is fine.
        let job = receiver
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .blocking_recv();
        let Some(job) = job else {
            return; // every handle dropped: shutting down
        };
        if catch_unwind(AssertUnwindSafe(|| job(pipeline))).is_err() {
            log::error!("an inference job panicked; the worker goes on");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::OnceLock;

    use super::*;
    use crate::vision::{Mode, ModelFiles};

    fn pipeline() -> Arc<Pipeline> {
        static P: OnceLock<Arc<Pipeline>> = OnceLock::new();
        P.get_or_init(|| Arc::new(Pipeline::load(ModelFiles::embedded(), Mode::Low).unwrap()))
            .clone()
    }

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        actix_web::rt::System::new().block_on(f)
    }

    #[test]
    fn runs_jobs_and_survives_a_panic() {
        let pool = InferencePool::start(pipeline(), 2, Duration::from_secs(10)).unwrap();
        block_on(async {
            assert_eq!(pool.run(|p| p.mode()).await, Ok(Mode::Low));
            let failed = pool.run(|_| -> u8 { panic!("test panic") }).await;
            assert_eq!(failed, Err(InferenceError::Failed));
            assert_eq!(pool.run(|_| 7).await, Ok(7));
        });
    }

    #[test]
    fn a_late_job_times_out_and_an_abandoned_one_is_skipped() {
        let pool = InferencePool::start(pipeline(), 1, Duration::from_millis(100)).unwrap();
        let ran = Arc::new(AtomicUsize::new(0));
        block_on(async {
            let slow = pool.run(|_| std::thread::sleep(Duration::from_millis(300)));
            let counter = Arc::clone(&ran);
            let queued = pool.run(move |_| counter.fetch_add(1, Ordering::SeqCst));
            let (slow, queued) = futures_util::future::join(slow, queued).await;
            assert_eq!(slow, Err(InferenceError::TimedOut));
            assert_eq!(queued, Err(InferenceError::TimedOut));
            // The worker is free again once the slow job ends; the queued one was skipped.
            std::thread::sleep(Duration::from_millis(300));
            assert_eq!(pool.run(|_| 1).await, Ok(1));
        });
        assert_eq!(ran.load(Ordering::SeqCst), 0);
    }
}
