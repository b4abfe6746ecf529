//! The group commit of trunk uploads (`fsync_before_reply`): one thread flushes, for
//! every upload waiting, the trunk files they wrote into and the binlog through their
//! records, then answers them all.
//!
//! An upload hands its flush over and waits for the answer without holding a thread.
//! While a flush runs, the next uploads queue up, so the next one covers all of them:
//! the batches grow with the load. Uploads already under way (a slot taken, their
//! content still coming) are counted, and a flush about to start waits for them, for
//! at most as long as the last flush took (2 ms at most): otherwise each would wait
//! for the rest of this flush and the whole next one. On a disk whose flush costs
//! the machine CPU (a virtual one), this halves the flushes per upload under load; an
//! upload alone is never kept waiting. Compared with a flush per upload
//! behind a lock, this also saves a thread hand-off per upload and the convoy of
//! wake-ups through the lock. The binlog is flushed on a second thread, beside the trunk
//! files, so a batch waits for the slower of the two flushes rather than their sum.

use std::io;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::Written;
use crate::binlog::{Binlog, BinlogPos};

/// Which flush failed, for every upload of the batch.
#[derive(Debug)]
pub enum FlushFailed {
    /// The trunk file's (the content and header are not known to be on disk).
    Trunk(io::Error),
    /// The binlog's (the content is on disk, its record maybe not).
    Binlog(io::Error),
}

/// A failure shared by a batch (an `io::Error` cannot be cloned).
#[derive(Clone)]
struct Failure {
    binlog: bool,
    kind: io::ErrorKind,
    os: Option<i32>,
    text: String,
}

impl Failure {
    fn of(binlog: bool, e: &io::Error) -> Self {
        Failure {
            binlog,
            kind: e.kind(),
            os: e.raw_os_error(),
            text: e.to_string(),
        }
    }

    fn error(self) -> FlushFailed {
        let e = match self.os {
            Some(code) => io::Error::from_raw_os_error(code),
            None => io::Error::new(self.kind, self.text),
        };
        if self.binlog {
            FlushFailed::Binlog(e)
        } else {
            FlushFailed::Trunk(e)
        }
    }
}

/// The longest a flush waits for uploads under way.
const MAX_GATHER: Duration = Duration::from_millis(2);

type Answer = oneshot::Sender<Result<(), Failure>>;

#[derive(Default)]
struct Queue {
    /// The newest write of each trunk file to flush.
    files: Vec<Written>,
    binlog: Option<(Arc<Binlog>, BinlogPos)>,
    waiting: Vec<Answer>,
    /// Uploads under way (a slot taken, their flush not asked for yet).
    coming: usize,
    closed: bool,
}

impl Queue {
    fn add(&mut self, written: Written, binlog: &Arc<Binlog>, pos: BinlogPos) {
        written.keep_newest(&mut self.files);
        match &mut self.binlog {
            Some((_, p)) if *p >= pos => {}
            slot => *slot = Some((binlog.clone(), pos)),
        }
    }
}

struct Shared {
    queue: Mutex<Queue>,
    wake: Condvar,
    /// How long a flush may wait for uploads under way: the last flush's time, within
    /// these bounds.
    gather: (Duration, Duration),
    /// Flushes made (batches answered).
    batches: std::sync::atomic::AtomicU64,
}

impl Default for Shared {
    fn default() -> Self {
        Shared {
            queue: Mutex::default(),
            wake: Condvar::new(),
            gather: (Duration::ZERO, MAX_GATHER),
            batches: Default::default(),
        }
    }
}

/// The flushing thread of one storage's trunk uploads (started with the first flush,
/// ended when this is dropped).
#[derive(Default)]
pub struct Flusher {
    shared: Arc<Shared>,
    /// Whether the thread runs (set when the first flush starts it).
    running: std::sync::OnceLock<bool>,
}

impl Flusher {
    /// Counts an upload under way until its [`Flusher::flush`] (or its end): the flush
    /// running when it comes waits a little for it, so that it need not wait for the
    /// whole next one.
    pub fn coming(&self) -> Coming {
        self.shared.queue.lock().unwrap().coming += 1;
        Coming {
            shared: self.shared.clone(),
            asked: false,
        }
    }

    /// Waits until `written` (with everything else written into its trunk file) and
    /// `binlog` through `pos` are on disk. `coming` counted this upload.
    pub async fn flush(
        &self,
        mut coming: Coming,
        written: Written,
        binlog: &Arc<Binlog>,
        pos: BinlogPos,
    ) -> Result<(), FlushFailed> {
        if !self.start() {
            return Err(FlushFailed::Trunk(io::Error::other(
                "no trunk flushing thread",
            )));
        }
        let (tx, rx) = oneshot::channel();
        let wake = {
            let mut q = self.shared.queue.lock().unwrap();
            q.add(written, binlog, pos);
            q.waiting.push(tx);
            coming.asked = true;
            q.coming -= 1;
            // The thread waits for a first upload, or for the last one under way.
            q.waiting.len() == 1 || q.coming == 0
        };
        if wake {
            self.shared.wake.notify_one();
        }
        match rx.await {
            Ok(r) => r.map_err(Failure::error),
            Err(_) => Err(FlushFailed::Trunk(io::Error::other(
                "the trunk flushing thread is gone",
            ))),
        }
    }

    /// A flusher whose flushes wait up to `gather` for the uploads under way, however
    /// short the last flush was.
    #[cfg(test)]
    pub(crate) fn gathering(gather: Duration) -> Self {
        Flusher {
            shared: Arc::new(Shared {
                gather: (gather, gather),
                ..Shared::default()
            }),
            running: Default::default(),
        }
    }

    /// Flushes made so far.
    #[cfg(test)]
    pub(crate) fn batches(&self) -> u64 {
        self.shared
            .batches
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    fn start(&self) -> bool {
        *self.running.get_or_init(|| {
            let shared = self.shared.clone();
            let spawned = std::thread::Builder::new()
                .name("trunk-flush".into())
                .spawn(move || run(&shared));
            // Without it, uploads are refused, never acknowledged unflushed.
            spawned
                .map_err(|e| tracing::error!("cannot start the trunk flushing thread: {e}"))
                .is_ok()
        })
    }
}

/// An upload under way, counted by the flusher (see [`Flusher::coming`]).
pub struct Coming {
    shared: Arc<Shared>,
    asked: bool,
}

impl Drop for Coming {
    fn drop(&mut self) {
        if self.asked {
            return;
        }
        let mut q = self.shared.queue.lock().unwrap();
        q.coming -= 1;
        if q.coming == 0 && !q.waiting.is_empty() {
            drop(q);
            self.shared.wake.notify_one();
        }
    }
}

impl Drop for Flusher {
    fn drop(&mut self) {
        self.shared.queue.lock().unwrap().closed = true;
        self.shared.wake.notify_all();
    }
}

fn run(shared: &Shared) {
    // The binlog's flush runs beside the trunk files' on a second thread: the two
    // files' writes and waits overlap, and the batch is answered sooner.
    let (jobs, job_rx) = std::sync::mpsc::channel::<(Arc<Binlog>, BinlogPos)>();
    let (done_tx, done) = std::sync::mpsc::channel::<io::Result<()>>();
    let helper = std::thread::Builder::new()
        .name("binlog-flush".into())
        .spawn(move || {
            for (log, pos) in job_rx {
                if done_tx.send(log.sync_through(pos)).is_err() {
                    return;
                }
            }
        });
    let helper = match helper {
        Ok(_) => Some((jobs, done)),
        Err(e) => {
            tracing::warn!("cannot start the binlog flushing thread ({e}): flushed in turn");
            None
        }
    };
    let mut last = Duration::ZERO;
    loop {
        let batch = {
            let mut q = shared.queue.lock().unwrap();
            while q.waiting.is_empty() && !q.closed {
                q = shared.wake.wait(q).unwrap();
            }
            if q.waiting.is_empty() {
                return;
            }
            // Uploads already under way join this flush rather than wait for the whole
            // next one: for as long as a flush lasts (the last one), at most.
            let (floor, cap) = shared.gather;
            let until = Instant::now() + last.clamp(floor, cap);
            while q.coming > 0 && !q.closed {
                let left = until.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                q = shared.wake.wait_timeout(q, left).unwrap().0;
            }
            Queue {
                files: std::mem::take(&mut q.files),
                binlog: q.binlog.take(),
                waiting: std::mem::take(&mut q.waiting),
                coming: 0,
                closed: false,
            }
        };
        let began = Instant::now();
        let result = flush(&batch, helper.as_ref());
        last = began.elapsed();
        shared
            .batches
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        for answer in batch.waiting {
            let _ = answer.send(result.clone());
        }
    }
}

type Helper = (
    std::sync::mpsc::Sender<(Arc<Binlog>, BinlogPos)>,
    std::sync::mpsc::Receiver<io::Result<()>>,
);

fn flush(batch: &Queue, helper: Option<&Helper>) -> Result<(), Failure> {
    let mut binlog = batch.binlog.clone();
    let mut beside = None;
    if let (Some((jobs, done)), Some(job)) = (helper, binlog.take()) {
        // (A helper gone takes the job back: flushed here.)
        match jobs.send(job) {
            Ok(()) => beside = Some(done),
            Err(back) => binlog = Some(back.0),
        }
    }
    let files = batch
        .files
        .iter()
        .try_for_each(|w| w.flush())
        .map_err(|e| Failure::of(false, &e));
    let log = match (beside, binlog) {
        (Some(done), _) => done
            .recv()
            .unwrap_or_else(|_| Err(io::Error::other("the binlog flushing thread is gone"))),
        (None, Some((log, pos))) => log.sync_through(pos),
        (None, None) => Ok(()),
    };
    files?;
    log.map_err(|e| Failure::of(true, &e))
}
