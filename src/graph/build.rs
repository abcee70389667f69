//! Building the timely/differential dataflow of a started graph inside one worker. Every
//! worker builds the same dataflow from the same node order: each node adds itself through
//! [`Node::build`], given its inputs' streams; error records from every node go to the
//! built-in `errors` sink.

use super::compile::Compiled;
use super::ops::context::RunInfo;
use super::ops::{Dataflow, FeedbackInput, Node, SourceInput, Stream};
use crate::operators::sink::{Publish, SinkLog};
use crate::operators::{NodeStats, SinkExt, SinkParams};
use crate::record::ErrorRecord;
use crate::store::commit::SinkFolder;
use crate::store::manifest::{ManifestFormat, Row, TableKind};
use differential_dataflow::input::{Input, InputSession};
use indexmap::IndexMap;
use std::sync::{Arc, Mutex};
use timely::dataflow::operators::probe::{Handle as ProbeHandle, Probe};
use timely::dataflow::Scope;

/// What every worker of a process shares: the graph, its started nodes and their counters.
pub struct Shared {
    pub compiled: Compiled,
    pub run: RunInfo,
    pub nodes: IndexMap<String, Arc<dyn Node>>,
    /// Counters per node, the `errors` sink's included.
    pub stats: IndexMap<String, Arc<NodeStats>>,
    /// What the built-in `errors` sink has written.
    pub errors_log: Arc<Mutex<SinkLog>>,
}

impl Shared {
    /// Every sink's log, the `errors` sink's included.
    pub fn sink_logs(&self) -> Vec<(&str, &Arc<Mutex<SinkLog>>)> {
        let mut logs: Vec<_> = self
            .nodes
            .iter()
            .filter_map(|(name, node)| Some((name.as_str(), node.sink_log()?)))
            .collect();
        logs.push((ERRORS_SINK, &self.errors_log));
        logs
    }
}

/// The name of the built-in sink that writes every error record.
pub const ERRORS_SINK: &str = "errors";

/// Versions the built-in `errors` sink keeps before its current one.
const ERRORS_KEPT: usize = 3;

/// Every sink of a graph, the built-in `errors` sink last, with the versions each keeps.
pub fn sink_folders(compiled: &Compiled) -> Vec<SinkFolder> {
    let mut sinks: Vec<SinkFolder> = compiled
        .nodes
        .values()
        .filter_map(|node| {
            Some(SinkFolder {
                name: node.name().to_string(),
                keep: node.op.kept_versions()?,
            })
        })
        .collect();
    sinks.push(SinkFolder {
        name: ERRORS_SINK.into(),
        keep: ERRORS_KEPT,
    });
    sinks
}

/// The handles a driver needs to feed one worker's dataflow.
pub struct WorkerHandles {
    pub sources: Vec<SourceInput>,
    pub feedback: Vec<FeedbackInput>,
    /// Errors found while scanning (unreadable images, bad feedback lines).
    pub errors: InputSession<u64, ErrorRecord, isize>,
    pub probe: ProbeHandle<u64>,
}

/// Builds the dataflow for one worker.
pub fn build<'scope>(scope: Scope<'scope, u64>, shared: &Shared) -> WorkerHandles {
    let (errors_input, scan_errors) = scope.new_collection::<ErrorRecord, isize>();
    let mut dataflow = Dataflow {
        scope,
        run: shared.run.clone(),
        stats: shared.stats.clone(),
        errors: vec![scan_errors],
        sources: Vec::new(),
        feedback: Vec::new(),
        probe: ProbeHandle::new(),
        ports: IndexMap::new(),
        generators: IndexMap::new(),
    };
    let mut streams: IndexMap<&str, Stream<'scope>> = IndexMap::new();
    for (name, compiled) in &shared.compiled.nodes {
        let inputs: Vec<Stream<'scope>> = compiled
            .info
            .inputs
            .iter()
            .map(|input| match streams.get(input.as_str()) {
                Some(stream) => stream.clone(),
                None => dataflow.ports[input.as_str()].clone(),
            })
            .collect();
        let stream = shared.nodes[name].build(&mut dataflow, &compiled.info, &inputs);
        streams.insert(name, stream);
    }

    let output = &shared.run.output;
    let errors = differential_dataflow::collection::concatenate(scope, dataflow.errors)
        .map(|e| (0usize, Row::Error(e)));
    errors
        .sink_manifests(SinkParams {
            node: ERRORS_SINK.into(),
            folder: output.join(ERRORS_SINK),
            inputs: vec![ERRORS_SINK.into()],
            kinds: vec![TableKind::Error],
            formats: vec![ManifestFormat::Jsonl],
            keep_versions: ERRORS_KEPT,
            first_version: shared.run.first_version,
            report: None,
            stats: Arc::clone(&shared.stats[ERRORS_SINK]),
            written: Arc::clone(&shared.errors_log),
            provenance: shared.run.provenance.clone(),
            publish: Publish::AtCommit,
        })
        .probe_with(&dataflow.probe);
    WorkerHandles {
        sources: dataflow.sources,
        feedback: dataflow.feedback,
        errors: errors_input,
        probe: dataflow.probe,
    }
}
