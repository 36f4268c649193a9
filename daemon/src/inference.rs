//! The inference pool: THREADCOUNT OS threads running jobs on one shared [`Pipeline`], so
//! decoding, the models and gallery writes never block actix's async workers.
//!
//! A job waits in a queue of MAX_QUEUE slots for a free thread; the request's deadline covers
//! that wait and the job itself. When every slot is taken the request is refused at once
//! ([`InferenceError::Busy`]): each waiting request holds its upload in memory, so waiting
//! "at the door" without a bound would let a flood of requests exhaust the memory of a small
//! board long before their deadlines answered them. A job whose caller has gone (deadline
//! passed, client hung up) is skipped if no worker has started it yet.
//!
//! tract plans are immutable and create their state per run, so one `Arc<Pipeline>` serves
//! every thread.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use crate::stage_times::{self, StageTimes};
use crate::vision::Pipeline;

type Job = Box<dyn FnOnce(&Pipeline) + Send>;

/// Why a job gave no result.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InferenceError {
    /// The deadline passed, waiting in the queue or running.
    #[error("not done before the deadline")]
    TimedOut,
    /// Every queue slot was taken: refused without waiting.
    #[error("{queued} requests already wait for inference")]
    Busy {
        /// The queue's size (MAX_QUEUE).
        queued: usize,
    },
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
    queue: usize,
    timeout: Duration,
    heartbeats: Arc<[Heartbeat]>,
    epoch: Instant,
    /// Milliseconds since `epoch` when the last job ended.
    last_done: Arc<AtomicU64>,
}

/// What one worker tells the watchdog: whether its thread still runs, and since when it has
/// been busy with its current job.
#[derive(Default)]
struct Heartbeat {
    /// Milliseconds since the pool's epoch + 1 when the running job started; 0 when idle.
    busy_since: AtomicU64,
    exited: AtomicBool,
}

/// Marks the worker's thread as gone however it ends (return or unwind).
struct ExitGuard<'a>(&'a Heartbeat);

impl Drop for ExitGuard<'_> {
    fn drop(&mut self) {
        self.0.exited.store(true, Ordering::SeqCst);
    }
}

/// Why the pool is not healthy (the watchdog then stops its keep-alives).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Unhealthy {
    /// A worker thread ended; the pool serves with fewer threads than configured.
    #[error("inference worker {0} has stopped")]
    Exited(usize),
    /// A worker has run one job far past any deadline: stuck.
    #[error("inference worker {worker} has been busy with one job for {busy:?}")]
    Stalled {
        /// Which worker.
        worker: usize,
        /// How long its job has run.
        busy: Duration,
    },
}

impl InferencePool {
    /// Starts `threads` workers sharing `pipeline`, with `queue` slots for waiting jobs; each
    /// job gets `timeout` to finish, waiting included.
    pub fn start(
        pipeline: Arc<Pipeline>,
        threads: usize,
        queue: usize,
        timeout: Duration,
    ) -> std::io::Result<InferencePool> {
        let threads = threads.max(1);
        let queue = queue.max(1);
        let (sender, receiver) = mpsc::channel::<Job>(queue);
        let receiver = Arc::new(Mutex::new(receiver));
        let heartbeats: Arc<[Heartbeat]> = (0..threads).map(|_| Heartbeat::default()).collect();
        let epoch = Instant::now();
        let last_done = Arc::new(AtomicU64::new(0));
        pipeline.allow_threads(threads);
        for i in 0..threads {
            let receiver = Arc::clone(&receiver);
            let pipeline = Arc::clone(&pipeline);
            let heartbeats = Arc::clone(&heartbeats);
            let last_done = Arc::clone(&last_done);
            std::thread::Builder::new()
                .name(format!("inference-{i}"))
                .spawn(move || worker(&receiver, &pipeline, &heartbeats[i], &last_done, epoch))?;
        }
        Ok(InferencePool {
            sender,
            pipeline,
            threads,
            queue,
            timeout,
            heartbeats,
            epoch,
            last_done,
        })
    }

    /// How long every worker has been idle (since the last job ended, or since the start),
    /// `None` while one is busy.
    pub fn idle_for(&self) -> Option<Duration> {
        if self
            .heartbeats
            .iter()
            .any(|b| b.busy_since.load(Ordering::SeqCst) > 0)
        {
            return None;
        }
        let last = Duration::from_millis(self.last_done.load(Ordering::SeqCst));
        Some(self.epoch.elapsed().saturating_sub(last))
    }

    /// Whether every worker thread runs and none has been on one job for longer than
    /// `stall_after`. Idle workers are healthy: they wait on the queue.
    pub fn health(&self, stall_after: Duration) -> Result<(), Unhealthy> {
        check_heartbeats(&self.heartbeats, self.epoch.elapsed(), stall_after)
    }

    /// The request deadline (TIMEOUT).
    pub fn timeout(&self) -> Duration {
        self.timeout
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
        Ok(self.run_timed(job).await?.0)
    }

    /// [`InferencePool::run`], with the time the job waited for a worker and spent in each
    /// stage of the pipeline.
    pub async fn run_timed<R, F>(&self, job: F) -> Result<(R, StageTimes), InferenceError>
    where
        F: FnOnce(&Pipeline) -> R + Send + 'static,
        R: Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let handed_over = Instant::now();
        let job: Job = Box::new(move |pipeline| {
            // The caller dropped its receiver: nobody would read the answer.
            if tx.is_closed() {
                return;
            }
            let _ = tx.send(stage_times::collect(handed_over.elapsed(), || {
                job(pipeline)
            }));
        });
        self.sender.try_send(job).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => InferenceError::Busy { queued: self.queue },
            mpsc::error::TrySendError::Closed(_) => InferenceError::Stopped,
        })?;
        // A dropped sender without an answer: the job panicked.
        let queued_and_done = async { rx.await.map_err(|_| InferenceError::Failed) };
        actix_web::rt::time::timeout(self.timeout, queued_and_done)
            .await
            .unwrap_or(Err(InferenceError::TimedOut))
    }
}

/// `now`: time since the pool's epoch.
fn check_heartbeats(
    heartbeats: &[Heartbeat],
    now: Duration,
    stall_after: Duration,
) -> Result<(), Unhealthy> {
    for (worker, beat) in heartbeats.iter().enumerate() {
        if beat.exited.load(Ordering::SeqCst) {
            return Err(Unhealthy::Exited(worker));
        }
        let since = beat.busy_since.load(Ordering::SeqCst);
        if since > 0 {
            let busy = now.saturating_sub(Duration::from_millis(since - 1));
            if busy > stall_after {
                return Err(Unhealthy::Stalled { worker, busy });
            }
        }
    }
    Ok(())
}

fn worker(
    receiver: &Mutex<mpsc::Receiver<Job>>,
    pipeline: &Pipeline,
    heartbeat: &Heartbeat,
    last_done: &AtomicU64,
    epoch: Instant,
) {
    let _exit = ExitGuard(heartbeat);
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
        let started = epoch.elapsed().as_millis() as u64 + 1;
        heartbeat.busy_since.store(started, Ordering::SeqCst);
        let running = pipeline.enter();
        if catch_unwind(AssertUnwindSafe(|| job(pipeline))).is_err() {
            log::error!("an inference job panicked; the worker goes on");
        }
        drop(running);
        last_done.store(epoch.elapsed().as_millis() as u64, Ordering::SeqCst);
        heartbeat.busy_since.store(0, Ordering::SeqCst);
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
        let pool = InferencePool::start(pipeline(), 2, 4, Duration::from_secs(10)).unwrap();
        block_on(async {
            assert_eq!(pool.run(|p| p.mode()).await, Ok(Mode::Low));
            let failed = pool.run(|_| -> u8 { panic!("test panic") }).await;
            assert_eq!(failed, Err(InferenceError::Failed));
            assert_eq!(pool.run(|_| 7).await, Ok(7));
        });
    }

    #[test]
    fn a_late_job_times_out_and_an_abandoned_one_is_skipped() {
        let pool = InferencePool::start(pipeline(), 1, 4, Duration::from_millis(100)).unwrap();
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

    #[test]
    fn health_reports_a_stuck_job_and_recovers_when_it_ends() {
        let pool = InferencePool::start(pipeline(), 2, 4, Duration::from_secs(10)).unwrap();
        assert_eq!(pool.health(Duration::from_millis(50)), Ok(()));
        block_on(async {
            let p = pool.clone();
            let slow = actix_web::rt::spawn(async move {
                p.run(|_| std::thread::sleep(Duration::from_millis(400)))
                    .await
            });
            actix_web::rt::time::sleep(Duration::from_millis(200)).await;
            assert!(matches!(
                pool.health(Duration::from_millis(100)),
                Err(Unhealthy::Stalled { busy, .. }) if busy >= Duration::from_millis(100)
            ));
            assert_eq!(pool.health(Duration::from_secs(5)), Ok(()));
            slow.await.unwrap().unwrap();
        });
        assert_eq!(pool.health(Duration::from_millis(50)), Ok(()));
    }

    #[test]
    fn idle_time_counts_from_the_last_job() {
        let pool = InferencePool::start(pipeline(), 1, 4, Duration::from_secs(10)).unwrap();
        block_on(async {
            let p = pool.clone();
            let job = actix_web::rt::spawn(async move {
                p.run(|_| std::thread::sleep(Duration::from_millis(300)))
                    .await
            });
            actix_web::rt::time::sleep(Duration::from_millis(100)).await;
            assert_eq!(pool.idle_for(), None, "busy");
            job.await.unwrap().unwrap();
        });
        let idle = pool.idle_for().expect("idle after the job");
        assert!(idle < Duration::from_millis(200), "{idle:?}");
        std::thread::sleep(Duration::from_millis(250));
        assert!(pool.idle_for().unwrap() >= Duration::from_millis(250));
    }

    #[test]
    fn health_reports_a_worker_that_ended() {
        let pool = InferencePool::start(pipeline(), 1, 4, Duration::from_secs(10)).unwrap();
        let sender = pool.sender.clone();
        let heartbeats = Arc::clone(&pool.heartbeats);
        drop(pool);
        drop(sender); // the last sender: the worker's queue closes and its thread returns
        let deadline = Instant::now() + Duration::from_secs(5);
        while !heartbeats[0].exited.load(Ordering::SeqCst) {
            assert!(Instant::now() < deadline, "the worker did not end");
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(
            check_heartbeats(&heartbeats, Duration::ZERO, Duration::from_secs(1)),
            Err(Unhealthy::Exited(0))
        );
    }

    #[test]
    fn a_full_queue_refuses_at_once() {
        let pool = InferencePool::start(pipeline(), 1, 2, Duration::from_secs(10)).unwrap();
        let (release, wait) = std::sync::mpsc::channel::<()>();
        let wait = Arc::new(Mutex::new(wait));
        block_on(async {
            let pause = || actix_web::rt::time::sleep(Duration::from_millis(100));
            // One job holds the worker; the queue then holds two more; the fourth is refused.
            let (p, held) = (pool.clone(), Arc::clone(&wait));
            let running =
                actix_web::rt::spawn(
                    async move { p.run(move |_| held.lock().unwrap().recv()).await },
                );
            pause().await;
            let queued: Vec<_> = (0..2)
                .map(|i| {
                    let p = pool.clone();
                    actix_web::rt::spawn(async move { p.run(move |_| i).await })
                })
                .collect();
            pause().await;
            let started = std::time::Instant::now();
            assert_eq!(
                pool.run(|_| 9).await,
                Err(InferenceError::Busy { queued: 2 })
            );
            assert!(started.elapsed() < Duration::from_secs(1));
            release.send(()).unwrap();
            assert_eq!(running.await.unwrap(), Ok(Ok(())));
            for (i, q) in queued.into_iter().enumerate() {
                assert_eq!(q.await.unwrap(), Ok(i));
            }
        });
    }
}
