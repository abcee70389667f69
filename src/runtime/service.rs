//! The inference service: threads that own model sessions and run batches sent to them over a
//! channel, so the dataflow workers that submit work never block on a model call. Each job
//! carries its own reply channel and a wake-up callback (the caller's activator). A reply
//! says how many model calls its batch made, so each submitter can count its own even when
//! several share one service.

use crossbeam_channel::{unbounded, Receiver, Sender};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

/// What one service thread does with a batch: one output per item, in order.
pub trait BatchWorker: Send + 'static {
    type Item: Send + 'static;
    type Output: Send + 'static;
    /// Runs one batch; `stats` is for counting model calls (a fresh one per batch, whose calls
    /// the service adds to its own and reports in the batch's [`Reply`]).
    fn run(&mut self, items: Vec<Self::Item>, stats: &ServiceStats) -> Vec<Self::Output>;
    /// The answer for an item whose batch failed outright (the worker panicked).
    fn failed(message: &str) -> Self::Output;
}

/// Counters a service keeps while it runs.
#[derive(Debug, Default)]
pub struct ServiceStats {
    /// Batches received.
    pub batches: AtomicU64,
    /// Items received.
    pub items: AtomicU64,
    /// Model (session) calls made.
    pub model_calls: AtomicU64,
    /// Nanoseconds spent running batches, summed over threads.
    pub busy_nanos: AtomicU64,
}

impl ServiceStats {
    /// Counts one model call.
    pub fn model_call(&self) {
        self.model_calls.fetch_add(1, Ordering::Relaxed);
    }
    fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
    /// A plain snapshot: (batches, items, model calls, busy seconds).
    pub fn snapshot(&self) -> (u64, u64, u64, f64) {
        (
            Self::get(&self.batches),
            Self::get(&self.items),
            Self::get(&self.model_calls),
            Self::get(&self.busy_nanos) as f64 / 1e9,
        )
    }
}

/// A callback that wakes whoever waits for a reply (in the dataflow: a timely `SyncActivator`).
pub type Wake = Arc<dyn Fn() + Send + Sync>;

/// The outputs of one submitted batch, with the tag it was submitted under.
pub struct Reply<W: BatchWorker> {
    /// The tag the batch was submitted under.
    pub tag: u64,
    /// One output per item, in order.
    pub outputs: Vec<W::Output>,
    /// Model calls this batch made (those made before a panic included).
    pub model_calls: u64,
}

struct Job<W: BatchWorker> {
    tag: u64,
    items: Vec<W::Item>,
    reply: Sender<Reply<W>>,
    wake: Wake,
}

/// A pool of threads, each owning one worker (one model session).
pub struct InferenceService<W: BatchWorker> {
    sender: Option<Sender<Job<W>>>,
    threads: Vec<JoinHandle<()>>,
    stats: Arc<ServiceStats>,
}

impl<W: BatchWorker> InferenceService<W> {
    /// Starts one thread per worker.
    pub fn start(name: &str, workers: Vec<W>) -> Self {
        let (sender, receiver) = unbounded::<Job<W>>();
        let stats = Arc::new(ServiceStats::default());
        let threads = workers
            .into_iter()
            .enumerate()
            .map(|(i, worker)| {
                let receiver: Receiver<Job<W>> = receiver.clone();
                let stats = Arc::clone(&stats);
                std::thread::Builder::new()
                    .name(format!("{name}-{i}"))
                    .spawn(move || serve(worker, receiver, stats))
                    .expect("spawn inference thread")
            })
            .collect();
        InferenceService {
            sender: Some(sender),
            threads,
            stats,
        }
    }

    /// Queues a batch; its outputs (one per item, in order) arrive on `reply` under `tag`,
    /// then `wake` is called. Never blocks.
    pub fn submit(&self, tag: u64, items: Vec<W::Item>, reply: &Sender<Reply<W>>, wake: &Wake) {
        let job = Job {
            tag,
            items,
            reply: reply.clone(),
            wake: Arc::clone(wake),
        };
        self.sender
            .as_ref()
            .expect("service running")
            .send(job)
            .expect("inference threads alive");
    }

    /// How many threads (runners) take its jobs.
    pub fn runners(&self) -> usize {
        self.threads.len()
    }

    /// The service's counters.
    pub fn stats(&self) -> &Arc<ServiceStats> {
        &self.stats
    }
}

fn serve<W: BatchWorker>(mut worker: W, jobs: Receiver<Job<W>>, stats: Arc<ServiceStats>) {
    while let Ok(job) = jobs.recv() {
        let started = Instant::now();
        stats.batches.fetch_add(1, Ordering::Relaxed);
        stats
            .items
            .fetch_add(job.items.len() as u64, Ordering::Relaxed);
        let n = job.items.len();
        let batch = ServiceStats::default();
        // A panic must not strand the caller waiting for a reply: every item gets an error.
        let outputs = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            worker.run(job.items, &batch)
        }))
        .unwrap_or_else(|panic| {
            let why = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("unknown cause");
            let message = format!("the inference service failed on this batch: {why}");
            (0..n).map(|_| W::failed(&message)).collect()
        });
        let model_calls = ServiceStats::get(&batch.model_calls);
        stats.model_calls.fetch_add(model_calls, Ordering::Relaxed);
        stats
            .busy_nanos
            .fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
        let reply = Reply {
            tag: job.tag,
            outputs,
            model_calls,
        };
        // The caller may have gone away (a failed run); nothing to do then.
        if job.reply.send(reply).is_ok() {
            (job.wake)();
        }
    }
}

impl<W: BatchWorker> Drop for InferenceService<W> {
    fn drop(&mut self) {
        self.sender.take();
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    struct Doubler;
    impl BatchWorker for Doubler {
        type Item = u32;
        type Output = u32;
        fn run(&mut self, items: Vec<u32>, stats: &ServiceStats) -> Vec<u32> {
            stats.model_call();
            assert!(!items.contains(&13), "unlucky");
            items.into_iter().map(|x| 2 * x).collect()
        }
        fn failed(_: &str) -> u32 {
            u32::MAX
        }
    }

    #[test]
    fn runs_batches_on_its_threads_and_wakes_the_caller() {
        let service = InferenceService::start("test", vec![Doubler, Doubler]);
        let (tx, rx) = unbounded();
        let woken = Arc::new(AtomicUsize::new(0));
        let w = Arc::clone(&woken);
        let wake: Wake = Arc::new(move || {
            w.fetch_add(1, Ordering::SeqCst);
        });
        service.submit(7, vec![1, 2, 3], &tx, &wake);
        service.submit(8, vec![10], &tx, &wake);
        let plain = |r: Reply<Doubler>| (r.tag, r.outputs, r.model_calls);
        let mut got = vec![plain(rx.recv().unwrap()), plain(rx.recv().unwrap())];
        got.sort();
        assert_eq!(got, vec![(7, vec![2, 4, 6], 1), (8, vec![20], 1)]);
        // A panicking batch is answered, item by item, with the failure answer; the model call
        // it made before panicking still counts.
        service.submit(9, vec![12, 13], &tx, &wake);
        assert_eq!(plain(rx.recv().unwrap()), (9, vec![u32::MAX, u32::MAX], 1));
        let stats = Arc::clone(service.stats());
        drop(service);
        assert_eq!(woken.load(Ordering::SeqCst), 3);
        assert_eq!(stats.snapshot().0, 3);
        assert_eq!(stats.snapshot().1, 6);
        assert_eq!(stats.snapshot().2, 3);
    }
}
