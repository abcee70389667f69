//! Building the timely/differential dataflow of a compiled graph inside one worker. Every
//! worker builds the same dataflow from the same node order; sources and feedback become
//! input sessions the driver feeds, the rest are operators wired by name.

use super::compile::Compiled;
use super::config::{OpConfig, SourceFormat};
use crate::operators::feedback::LocatedScore;
use crate::operators::sink::SinkLog;
use crate::operators::source::SourceLocation;
use crate::operators::{
    ClassifyExt, ClassifyParams, FeedbackExt, FeedbackState, GenerateExt, GenerateParams, HardExt,
    NodeStats, SinkExt, SinkParams, SourceState,
};
use crate::record::{Digest, ErrorRecord, Sample, Score, Synthetic};
use crate::runtime::{Classifier, InferenceService};
use crate::store::manifest::{ManifestFormat, Row};
use differential_dataflow::input::{Input, InputSession};
use differential_dataflow::VecCollection;
use indexmap::IndexMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use timely::dataflow::operators::probe::{Handle as ProbeHandle, Probe};
use timely::dataflow::Scope;

/// What every worker of a process shares: the graph, model services and counters.
pub struct Shared {
    pub compiled: Compiled,
    /// Per `generate` node: its parameters, service included.
    pub generators: IndexMap<String, GenerateParams>,
    pub services: IndexMap<String, Arc<InferenceService<Classifier>>>,
    pub classes: IndexMap<String, Arc<Vec<String>>>,
    /// Per classifier model: its digest (`Classifier::digest`).
    pub digests: IndexMap<String, Digest>,
    pub stats: IndexMap<String, Arc<NodeStats>>,
    pub sink_logs: IndexMap<String, Arc<Mutex<SinkLog>>>,
    /// The version this run starts at.
    pub first_version: u64,
}

/// The name of the built-in sink that writes every error record.
pub const ERRORS_SINK: &str = "errors";

/// A source node's input session and scanner.
pub struct SourceInput {
    pub node: String,
    pub state: SourceState,
    pub input: InputSession<u64, Sample, isize>,
}

/// A feedback node's input session and scanner.
pub struct FeedbackInput {
    pub node: String,
    pub state: FeedbackState,
    pub input: InputSession<u64, LocatedScore, isize>,
}

/// The handles a driver needs to feed one worker's dataflow.
pub struct WorkerHandles {
    pub sources: Vec<SourceInput>,
    pub feedback: Vec<FeedbackInput>,
    /// Errors found while scanning (unreadable images, bad feedback lines).
    pub errors: InputSession<u64, ErrorRecord, isize>,
    pub probe: ProbeHandle<u64>,
}

enum Output<'scope> {
    Samples(VecCollection<'scope, u64, Sample>),
    Scores(VecCollection<'scope, u64, Score>),
    Synthetics(VecCollection<'scope, u64, Synthetic>),
    Nothing,
}

impl<'scope> Output<'scope> {
    fn samples(&self) -> VecCollection<'scope, u64, Sample> {
        match self {
            Output::Samples(c) => c.clone(),
            _ => unreachable!("the compiler checked record kinds"),
        }
    }
    fn scores(&self) -> VecCollection<'scope, u64, Score> {
        match self {
            Output::Scores(c) => c.clone(),
            _ => unreachable!("the compiler checked record kinds"),
        }
    }
    fn rows(&self, index: usize) -> VecCollection<'scope, u64, (usize, Row)> {
        match self {
            Output::Samples(c) => c.clone().map(move |s| (index, Row::Sample(s))),
            Output::Scores(c) => c.clone().map(move |s| (index, Row::Score(s))),
            Output::Synthetics(c) => c.clone().map(move |s| (index, Row::Synthetic(s))),
            Output::Nothing => unreachable!("the compiler refuses sinks as inputs"),
        }
    }
}

/// Builds the dataflow for one worker.
pub fn build<'scope>(scope: Scope<'scope, u64>, shared: &Shared) -> WorkerHandles {
    let compiled = &shared.compiled;
    let output_root = compiled.pipeline.output.clone();
    let mut outputs: IndexMap<String, Output<'scope>> = IndexMap::new();
    let (errors_input, scan_errors) = scope.new_collection::<ErrorRecord, isize>();
    let mut errors: Vec<VecCollection<'scope, u64, ErrorRecord>> = vec![scan_errors];
    let mut sources = Vec::new();
    let mut feedback = Vec::new();
    let probe = ProbeHandle::new();

    for node in compiled.nodes.values() {
        let name = node.name.clone();
        let stats = Arc::clone(&shared.stats[&name]);
        let output = match &node.op {
            OpConfig::Source(config) => {
                let (input, samples) = scope.new_collection::<Sample, isize>();
                let location = match config.format {
                    SourceFormat::ImageFolder => SourceLocation::ImageFolder(config.path.clone()),
                    SourceFormat::Manifest => SourceLocation::Manifest(config.path.clone()),
                };
                sources.push(SourceInput {
                    node: name.clone(),
                    state: SourceState::new(&name, location),
                    input,
                });
                Output::Samples(samples)
            }
            OpConfig::Classify(config) => {
                let params = ClassifyParams {
                    node: name.clone(),
                    service: Arc::clone(&shared.services[&config.model]),
                    model_digest: shared.digests[&config.model],
                    classes: Arc::clone(&shared.classes[&config.model]),
                    checkpoint: config.checkpoint,
                    batch_size: config.batch_size,
                    stats,
                };
                let (scores, failed) = outputs[&node.inputs[0]].samples().classify(params);
                errors.push(failed);
                Output::Scores(scores)
            }
            OpConfig::Feedback(config) => {
                let (input, located) = scope.new_collection::<LocatedScore, isize>();
                feedback.push(FeedbackInput {
                    node: name.clone(),
                    state: FeedbackState::new(&name, config.path.clone()),
                    input,
                });
                let counted = Arc::clone(&stats);
                let located = located.inspect(move |(_, _, diff)| counted.records_in(*diff));
                let (scores, unknown) =
                    located.against_samples(&name, outputs[&node.inputs[0]].samples());
                let counted = Arc::clone(&stats);
                errors.push(unknown.inspect(move |(_, _, diff)| counted.error(*diff)));
                Output::Scores(scores.inspect(move |(_, _, diff)| stats.records_out(*diff)))
            }
            OpConfig::Hard(config) => {
                let (rules, combine) = config.rules().expect("checked while compiling");
                let counted = Arc::clone(&stats);
                let samples = outputs[&node.inputs[0]]
                    .samples()
                    .inspect(move |(_, _, d)| counted.records_in(*d));
                let scores: Vec<_> = node.inputs[1..]
                    .iter()
                    .map(|i| outputs[i].scores())
                    .collect();
                let counted = Arc::clone(&stats);
                let scores = differential_dataflow::collection::concatenate(scope, scores)
                    .inspect(move |(_, _, d)| counted.records_in(*d));
                let hard = samples.hard(scores, &rules, combine);
                Output::Samples(hard.inspect(move |(_, _, d)| stats.records_out(*d)))
            }
            OpConfig::Generate(_) => {
                let params = shared.generators[&name].clone();
                let (synthetics, failed) = outputs[&node.inputs[0]].samples().generate(params);
                errors.push(failed);
                Output::Synthetics(synthetics)
            }
            OpConfig::Sink(config) => {
                let rows: Vec<_> = node
                    .inputs
                    .iter()
                    .enumerate()
                    .map(|(i, input)| outputs[input].rows(i))
                    .collect();
                let rows = differential_dataflow::collection::concatenate(scope, rows);
                rows.sink_manifests(SinkParams {
                    node: name.clone(),
                    folder: output_root.join(&name),
                    inputs: node.inputs.clone(),
                    formats: config.formats().expect("checked while compiling"),
                    keep_versions: config.keep_versions,
                    first_version: shared.first_version,
                    report: Some(output_root.clone()),
                    stats,
                    written: Arc::clone(&shared.sink_logs[&name]),
                })
                .probe_with(&probe);
                Output::Nothing
            }
        };
        outputs.insert(name, output);
    }

    let errors = differential_dataflow::collection::concatenate(scope, errors)
        .map(|e| (0usize, Row::Error(e)));
    let written = errors.sink_manifests(SinkParams {
        node: ERRORS_SINK.into(),
        folder: output_root.join(ERRORS_SINK),
        inputs: vec![ERRORS_SINK.into()],
        formats: vec![ManifestFormat::Jsonl],
        keep_versions: 3,
        first_version: shared.first_version,
        report: None,
        stats: Arc::clone(&shared.stats[ERRORS_SINK]),
        written: Arc::clone(&shared.sink_logs[ERRORS_SINK]),
    });
    written.probe_with(&probe);
    WorkerHandles {
        sources,
        feedback,
        errors: errors_input,
        probe,
    }
}

/// The folder a node writes to.
pub fn node_folder(compiled: &Compiled, node: &str) -> PathBuf {
    compiled.pipeline.output.join(node)
}
