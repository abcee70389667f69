//! The run summary (`--summary-json`): per node records in and out, errors, model calls,
//! batches, answers computed, cache hits and seconds; and the versions written.

use crate::graph::build::{Shared, ERRORS_SINK};
use crate::graph::ops::Role;
use crate::operators::stats::NodeSummary;
use crate::store::atomic::write_file;
use indexmap::IndexMap;
use serde::Serialize;
use std::path::Path;

/// What a run did, per node, as `--summary-json` writes it.
#[derive(Clone, Debug, Serialize)]
pub struct RunSummary {
    pub pipeline: String,
    pub versions_written: Vec<u64>,
    pub nodes: IndexMap<String, NodeSummary>,
    /// Error records in the last snapshot of `<output>/errors/`.
    pub errors: u64,
    pub seconds: f64,
    /// What a `train` node's trainer did, stage by stage (absent without one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub training: Option<crate::trainer::TrainingReport>,
}

impl RunSummary {
    /// The summary of everything the shared counters saw.
    pub fn collect(shared: &Shared, versions_written: Vec<u64>, seconds: f64) -> RunSummary {
        let nodes = shared
            .stats
            .iter()
            .map(|(name, stats)| {
                let node = shared.nodes.get(name);
                let busy = node.map_or(0.0, |node| node.model_seconds());
                let summary = match node.and_then(|node| node.retries()) {
                    Some(retries) => stats.summary_with(busy, retries),
                    None => stats.summary(busy),
                };
                (name.clone(), summary)
            })
            .collect();
        let errors = shared.errors_log.lock().expect("sink log").last_rows as u64;
        RunSummary {
            pipeline: shared.compiled.pipeline.name.clone(),
            versions_written,
            nodes,
            errors,
            seconds,
            training: None,
        }
    }

    /// One plain line for logs.
    pub fn line(&self) -> String {
        let counts: Vec<String> = self
            .nodes
            .iter()
            .filter(|(name, _)| *name != ERRORS_SINK)
            .map(|(name, n)| format!("{name} {}→{}", n.records_in, n.records_out))
            .collect();
        format!(
            "{}: version(s) {:?} written in {:.2}s; {}; {} error record(s)",
            self.pipeline,
            self.versions_written,
            self.seconds,
            counts.join(", "),
            self.errors
        )
    }
}

/// Writes a summary as JSON, atomically.
pub fn write_summary(summary: &RunSummary, path: &Path) -> Result<(), String> {
    write_file(
        path,
        &serde_json::to_vec_pretty(summary).expect("summary serialises"),
    )
    .map_err(|e| e.to_string())
}

/// A spinner on a terminal (the caller only makes one when stderr is one).
pub fn spinner(name: &str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new_spinner();
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} {prefix} [{elapsed}] {msg}")
            .expect("template"),
    );
    bar.set_prefix(name.to_string());
    bar
}

/// What the spinner says: records out of every node but the sinks.
pub fn progress_message(shared: &Shared) -> String {
    shared
        .stats
        .iter()
        .filter(|(name, _)| {
            shared
                .compiled
                .nodes
                .get(*name)
                .is_some_and(|n| n.op.role() != Role::Output)
        })
        .map(|(name, stats)| format!("{name} {}", stats.summary(0.0).records_out))
        .collect::<Vec<_>>()
        .join(" · ")
}
