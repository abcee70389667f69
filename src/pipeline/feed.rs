//! Feeding one worker's dataflow at a refresh: what the API pushed, then what the scans of its
//! sources and feedback folders found (run beside the worker, which keeps stepping), all at the
//! new version, after which every input advances past it.

use crate::graph::build::{Shared, WorkerHandles};
use crate::operators::feedback::FeedbackDiff;
use crate::operators::source::SourceDiff;
use crate::operators::{FeedbackState, SourceState};
use crate::record::{Progress, Sample, Score};
use std::time::{Duration, Instant};
use timely::worker::Worker;

/// Records pushed through the API, waiting for the next refresh (by node name).
#[derive(Default)]
pub struct Pushed {
    pub samples: Vec<(String, Sample, isize)>,
    pub feedback: Vec<(String, Score, isize)>,
    pub progress: Vec<(String, Progress, isize)>,
}

/// What one refresh's scans found: per source and per feedback node (in handle order), the
/// diff and the time it took; feedback is read by worker 0 alone.
pub struct Scans {
    sources: Vec<(SourceDiff, Duration)>,
    feedback: Vec<Option<(FeedbackDiff, Duration)>>,
}

/// Rescans this worker's share of every source and (on worker 0) every feedback folder on a
/// thread of its own, stepping the dataflow meanwhile: reading and decoding a first scan of
/// thousands of images never stalls the workers this one exchanges data with.
pub fn scan(worker: &mut Worker, handles: &mut WorkerHandles) -> Scans {
    let (index, peers) = (worker.index(), worker.peers());
    let sources: Vec<&mut SourceState> = handles.sources.iter_mut().map(|s| &mut s.state).collect();
    let feedback: Vec<&mut FeedbackState> =
        handles.feedback.iter_mut().map(|f| &mut f.state).collect();
    let timed = |started: Instant| started.elapsed();
    off_worker(worker, move || Scans {
        sources: sources
            .into_iter()
            .map(|state| {
                let started = Instant::now();
                let diff = state.rescan(index, peers);
                (diff, timed(started))
            })
            .collect(),
        // Feedback files are small: one worker reads them and the dataflow spreads them.
        feedback: feedback
            .into_iter()
            .map(|state| {
                let started = Instant::now();
                (index == 0).then(|| (state.rescan(), timed(started)))
            })
            .collect(),
    })
}

/// Runs `job` on its own thread while the worker keeps stepping its dataflow.
fn off_worker<T: Send>(worker: &mut Worker, job: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|scope| {
        let running = scope.spawn(job);
        while !running.is_finished() {
            worker.step_or_park(Some(Duration::from_millis(1)));
        }
        running
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// Pushes what changed in sources and feedback at `version`, then advances every input past it.
pub fn feed(
    handles: &mut WorkerHandles,
    shared: &Shared,
    version: u64,
    pushed: Pushed,
    scans: Scans,
) {
    handles.errors.advance_to(version);
    for (node, sample, d) in pushed.samples {
        if let Some(source) = handles.sources.iter_mut().find(|s| s.node == node) {
            source.input.advance_to(version);
            for (sample, d) in source.state.push(sample, d) {
                shared.stats[&node].records_out(d);
                source.input.update_at(sample, version, d);
            }
        }
    }
    for (node, score, d) in pushed.feedback {
        if let Some(feedback) = handles.feedback.iter_mut().find(|f| f.node == node) {
            feedback.input.advance_to(version);
            feedback
                .input
                .update_at((score, format!("api:{node}")), version, d);
        }
    }
    for (node, progress, d) in pushed.progress {
        if let Some(feedback) = handles.feedback.iter_mut().find(|f| f.node == node) {
            feedback.progress.advance_to(version);
            feedback
                .progress
                .update_at((progress, format!("api:{node}")), version, d);
        }
    }
    for (source, (diff, took)) in handles.sources.iter_mut().zip(scans.sources) {
        source.input.advance_to(version);
        let stats = &shared.stats[&source.node];
        stats.busy_for(took);
        for (sample, d) in diff.samples {
            stats.records_out(d);
            source.input.update_at(sample, version, d);
        }
        for (error, d) in diff.errors {
            stats.error(d);
            handles.errors.update_at(error, version, d);
        }
        source.input.advance_to(version + 1);
        source.input.flush();
    }
    for (feedback, scanned) in handles.feedback.iter_mut().zip(scans.feedback) {
        feedback.input.advance_to(version);
        if let Some((diff, took)) = scanned {
            let stats = &shared.stats[&feedback.node];
            stats.busy_for(took);
            for (score, d) in diff.scores {
                feedback.input.update_at(score, version, d);
            }
            for (progress, d) in diff.progress {
                feedback.progress.update_at(progress, version, d);
            }
            for (error, d) in diff.errors {
                stats.error(d);
                handles.errors.update_at(error, version, d);
            }
        }
        feedback.input.advance_to(version + 1);
        feedback.input.flush();
        feedback.progress.advance_to(version + 1);
        feedback.progress.flush();
    }
    handles.errors.advance_to(version + 1);
    handles.errors.flush();
}
