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
                let mut summary = match node.and_then(|node| node.retries()) {
                    Some(retries) => stats.summary_with(busy, retries),
                    None => stats.summary(busy),
                };
                let op = shared.compiled.nodes.get(name).map(|n| n.op.kind());
                summary.op = op.map(str::to_string);
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

    /// One plain line for logs: the versions written (the first two and last two once there
    /// are more than four, so a long watch keeps it short), records in → out per node, and per
    /// model node what its model computed and what came from the store.
    pub fn line(&self) -> String {
        let counts: Vec<String> = self
            .nodes
            .iter()
            .filter(|(name, _)| *name != ERRORS_SINK)
            .map(|(name, n)| format!("{name} {}→{}{}", n.records_in, n.records_out, work(n)))
            .collect();
        format!(
            "{}: version(s) {} written in {:.2}s; {}; {} error record(s)",
            self.pipeline,
            versions(&self.versions_written),
            self.seconds,
            counts.join(", "),
            self.errors
        )
    }
}

/// `[0, 1, 2]`, or `[0, 1, …, 56, 57] (58 in all)` past four versions.
fn versions(written: &[u64]) -> String {
    let list = |v: &[u64]| v.iter().map(u64::to_string).collect::<Vec<_>>().join(", ");
    if written.len() <= 4 {
        return format!("[{}]", list(written));
    }
    let (head, tail) = (&written[..2], &written[written.len() - 2..]);
    format!(
        "[{}, …, {}] ({} in all)",
        list(head),
        list(tail),
        written.len()
    )
}

/// ` (12 made, 3 from the store)` for a model node: answers its model computed and answers
/// the memo or the store already held (images for `generate`, scores for `quality` and
/// `classify`); a quality node's regenerated images follow.
fn work(node: &NodeSummary) -> String {
    let verb = match node.op.as_deref() {
        Some("generate") => "made",
        Some("quality") => "scored",
        Some("classify") => "classified",
        _ => return String::new(),
    };
    match &node.retries {
        // The node's counters include its retries; its own scoring is what is left.
        Some(retries) => format!(
            " ({} {verb}, {} from the store; retries: {} made, {} from the store)",
            node.computed - retries.computed,
            node.cache_hits - retries.cache_hits,
            retries.computed,
            retries.cache_hits
        ),
        None => format!(
            " ({} {verb}, {} from the store)",
            node.computed, node.cache_hits
        ),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn node(op: Option<&str>, records: (u64, u64), work: (u64, u64)) -> NodeSummary {
        NodeSummary {
            op: op.map(str::to_string),
            records_in: records.0,
            records_out: records.1,
            computed: work.0,
            cache_hits: work.1,
            ..NodeSummary::default()
        }
    }

    #[test]
    fn the_line_says_what_each_model_computed_and_what_came_from_the_store() {
        let mut quality = node(Some("quality"), (12, 9), (5, 10));
        quality.retries = Some(Box::new(node(None, (0, 0), (2, 1))));
        let nodes = [
            ("train", node(Some("source"), (0, 120), (0, 0))),
            ("scores", node(Some("classify"), (120, 120), (0, 120))),
            ("synthetic", node(Some("generate"), (3, 12), (4, 8))),
            ("quality", quality),
            ("out", node(Some("sink"), (21, 0), (0, 0))),
            ("errors", node(None, (1, 0), (0, 0))),
        ];
        let summary = RunSummary {
            pipeline: "p".into(),
            versions_written: vec![3],
            nodes: nodes.into_iter().map(|(n, s)| (n.to_string(), s)).collect(),
            errors: 1,
            seconds: 1.5,
            training: None,
        };
        assert_eq!(
            summary.line(),
            "p: version(s) [3] written in 1.50s; train 0→120, scores 120→120 (0 classified, \
             120 from the store), synthetic 3→12 (4 made, 8 from the store), quality 12→9 \
             (3 scored, 9 from the store; retries: 2 made, 1 from the store), out 21→0; \
             1 error record(s)"
        );
    }

    #[test]
    fn a_long_watch_shows_a_bounded_version_list() {
        assert_eq!(versions(&[]), "[]");
        assert_eq!(versions(&[0, 1, 2, 5]), "[0, 1, 2, 5]");
        let many: Vec<u64> = (0..10_000).collect();
        assert_eq!(versions(&many), "[0, 1, …, 9998, 9999] (10000 in all)");
    }
}
