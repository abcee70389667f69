//! Per-node counters for the run summary: records in and out, errors, model calls, batches,
//! cache hits and busy seconds. Shared by every worker of a process, so they are atomics.
//! Model calls are counted per node (from the service's replies to that node's batches), so two
//! nodes sharing one model each report their own.

use serde::Serialize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// Counters for one graph node.
#[derive(Debug, Default)]
pub struct NodeStats {
    records_in: AtomicU64,
    records_out: AtomicU64,
    errors: AtomicU64,
    model_calls: AtomicU64,
    batches: AtomicU64,
    computed: AtomicU64,
    cache_hits: AtomicU64,
    busy_nanos: AtomicU64,
}

/// A plain copy of a node's counters, as the summary writes it.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct NodeSummary {
    /// The node's op (`generate`, `sink`, …); none for the built-in `errors` sink.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub op: Option<String>,
    pub records_in: u64,
    pub records_out: u64,
    pub errors: u64,
    pub model_calls: u64,
    pub batches: u64,
    /// Answers a model computed (images classified, images generated).
    pub computed: u64,
    /// Answers found in the memo or the persistent store instead.
    pub cache_hits: u64,
    pub seconds: f64,
    /// A quality node's regenerations (images made or found again, UNet calls), already
    /// counted in the node's model calls, batches, answers computed and cache hits.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retries: Option<Box<NodeSummary>>,
}

fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

impl NodeStats {
    /// Counts an input update (retractions count too: they are work).
    pub fn records_in(&self, diff: isize) {
        add(&self.records_in, diff.unsigned_abs() as u64);
    }
    /// Counts an output update.
    pub fn records_out(&self, diff: isize) {
        add(&self.records_out, diff.unsigned_abs() as u64);
    }
    /// Counts an error update.
    pub fn error(&self, diff: isize) {
        add(&self.errors, diff.unsigned_abs() as u64);
    }
    /// Counts a result or an error.
    pub fn outcome<T, E>(&self, outcome: &Result<T, E>, diff: isize) {
        match outcome {
            Ok(_) => self.records_out(diff),
            Err(_) => self.error(diff),
        }
    }
    /// Counts the model calls one of this node's batches made.
    pub fn model_calls(&self, n: u64) {
        add(&self.model_calls, n);
    }
    /// Counts a batch handed to a model.
    pub fn batch(&self) {
        add(&self.batches, 1);
    }
    /// Counts an answer a model computed.
    pub fn computed(&self) {
        add(&self.computed, 1);
    }
    /// Counts a memoized answer.
    pub fn cache_hit(&self) {
        add(&self.cache_hits, 1);
    }
    /// Adds `took` to the node's busy time.
    pub fn busy_for(&self, took: std::time::Duration) {
        add(&self.busy_nanos, took.as_nanos() as u64);
    }
    /// Adds the time since `started` to the node's busy time.
    pub fn busy_since(&self, started: Instant) {
        add(&self.busy_nanos, started.elapsed().as_nanos() as u64);
    }
    /// A plain copy; `extra_busy_seconds` is time spent for the node elsewhere (its service).
    pub fn summary(&self, extra_busy_seconds: f64) -> NodeSummary {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        NodeSummary {
            op: None,
            records_in: get(&self.records_in),
            records_out: get(&self.records_out),
            errors: get(&self.errors),
            model_calls: get(&self.model_calls),
            batches: get(&self.batches),
            computed: get(&self.computed),
            cache_hits: get(&self.cache_hits),
            seconds: get(&self.busy_nanos) as f64 / 1e9 + extra_busy_seconds,
            retries: None,
        }
    }

    /// [`Self::summary`] with the counters of work done for the node elsewhere added in, and
    /// shown on their own as `retries`.
    pub fn summary_with(&self, extra_busy_seconds: f64, retries: &NodeStats) -> NodeSummary {
        let mut summary = self.summary(extra_busy_seconds);
        let more = retries.summary(0.0);
        summary.model_calls += more.model_calls;
        summary.batches += more.batches;
        summary.computed += more.computed;
        summary.cache_hits += more.cache_hits;
        summary.retries = Some(Box::new(more));
        summary
    }
}
