//! The embedding API: build a pipeline from a graph file or a string, check it, run it, and
//! read the summary. Timely and differential stay behind this facade.

use crate::graph::build::{build, Shared, ERRORS_SINK};
use crate::graph::config::OpConfig;
use crate::graph::{check_resources, compile, dot, Compiled, GraphError, GraphFile};
use crate::operators::generate::Prompts;
use crate::operators::sink::SinkLog;
use crate::operators::stats::NodeSummary;
use crate::operators::{GenerateParams, GenerateWorker, NodeStats};
use crate::runtime::diffusion::img2img::Generator;
use crate::runtime::InferenceService;
use crate::store::atomic::write_file;
use crate::store::images::ImageStore;
use crate::store::state::RunState;
use indexmap::IndexMap;
use serde::Serialize;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Why a pipeline could not be built or run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PipelineError {
    /// The graph file has errors; every one is listed.
    #[error("{}", .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n"))]
    Graph(Vec<GraphError>),
    /// The run failed.
    #[error("{0}")]
    Run(String),
}

/// How to run.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// Timely's own arguments: `-w` workers, `-n` processes, `-p` this process, `-h` hostfile.
    pub timely_args: Vec<String>,
    /// Show a progress spinner (when stderr is a terminal).
    pub progress: bool,
}

/// What a run did, per node, as `--summary-json` writes it.
#[derive(Clone, Debug, Serialize)]
pub struct RunSummary {
    pub pipeline: String,
    pub versions_written: Vec<u64>,
    pub nodes: IndexMap<String, NodeSummary>,
    /// Error records in the last snapshot of `<output>/errors/`.
    pub errors: u64,
    pub seconds: f64,
}

impl RunSummary {
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

/// A compiled pipeline.
pub struct Pipeline {
    compiled: Compiled,
}

impl Pipeline {
    /// Reads and compiles a graph file (structure only; no model is loaded).
    pub fn from_file(path: &Path) -> Result<Pipeline, PipelineError> {
        let graph = GraphFile::read(path).map_err(PipelineError::Graph)?;
        Ok(Pipeline {
            compiled: compile(graph).map_err(PipelineError::Graph)?,
        })
    }

    /// Compiles graph-file text; `name` stands for the file in errors.
    pub fn from_toml(name: &str, text: &str) -> Result<Pipeline, PipelineError> {
        let graph = GraphFile::parse(name, text).map_err(PipelineError::Graph)?;
        Ok(Pipeline {
            compiled: compile(graph).map_err(PipelineError::Graph)?,
        })
    }

    /// Checks files and models too (loads every model once).
    pub fn validate(&self) -> Result<(), PipelineError> {
        check_resources(&self.compiled)
            .map(drop)
            .map_err(PipelineError::Graph)
    }

    /// The graph as Graphviz DOT.
    pub fn dot(&self) -> String {
        dot::to_dot(&self.compiled)
    }

    /// The compiled graph.
    pub fn compiled(&self) -> &Compiled {
        &self.compiled
    }

    /// Runs the pipeline once: scans every source and feedback folder, computes every node,
    /// writes one snapshot per sink and returns the summary.
    pub fn run(&self, options: &RunOptions) -> Result<RunSummary, PipelineError> {
        let started = Instant::now();
        let resources = check_resources(&self.compiled).map_err(PipelineError::Graph)?;
        let output = self.compiled.pipeline.output.clone();
        let state = RunState::load(&output).map_err(PipelineError::Run)?;
        let first_version = state.next_version();

        let mut services = IndexMap::new();
        let mut classes = IndexMap::new();
        for (model, sessions) in resources.classifiers {
            classes.insert(model.clone(), Arc::new(sessions[0].meta().classes.clone()));
            services.insert(
                model.clone(),
                Arc::new(InferenceService::start(&model, sessions)),
            );
        }
        let mut stats: IndexMap<String, Arc<NodeStats>> = self
            .compiled
            .nodes
            .keys()
            .map(|n| (n.clone(), Arc::new(NodeStats::default())))
            .collect();
        let mut generators = IndexMap::new();
        if !resources.generators.is_empty() {
            let store = Arc::new(ImageStore::open(&output).map_err(PipelineError::Run)?);
            for (node, generator) in resources.generators {
                let model_digest = generator.models[0].digest;
                // Jobs large enough to batch across levels, small enough to keep every session busy.
                let job_size = (generator.settings.batch_size * 8 / generator.models.len())
                    .max(generator.settings.batch_size);
                let workers = generator
                    .models
                    .into_iter()
                    .map(|model| GenerateWorker {
                        generator: Generator::new(model),
                        settings: generator.settings.clone(),
                        store: Arc::clone(&store),
                    })
                    .collect();
                let OpConfig::Generate(config) = &self.compiled.nodes[&node].op else {
                    unreachable!("a generate node")
                };
                let prompts = match (&config.prompt, &config.prompts) {
                    (_, Some(lists)) => Prompts::PerClass(lists.clone()),
                    (Some(template), None) => Prompts::Template(template.clone()),
                    (None, None) => Prompts::Template("a photo of a {class}".into()),
                };
                let params = GenerateParams {
                    node: node.clone(),
                    service: Arc::new(InferenceService::start(&node, workers)),
                    job_size,
                    settings: generator.settings,
                    levels: generator.levels,
                    seeds: config.seeds,
                    prompts,
                    classes: generator.classes,
                    class_conditional: generator.class_conditional,
                    pipeline_seed: self.compiled.pipeline.seed,
                    model_digest,
                    stats: Arc::clone(&stats[&node]),
                };
                generators.insert(node, params);
            }
        }
        stats.insert(ERRORS_SINK.into(), Arc::new(NodeStats::default()));
        let mut sink_logs: IndexMap<String, Arc<Mutex<SinkLog>>> = self
            .compiled
            .nodes
            .values()
            .filter(|n| matches!(n.op, OpConfig::Sink(_)))
            .map(|n| (n.name.clone(), Arc::default()))
            .collect();
        sink_logs.insert(ERRORS_SINK.into(), Arc::default());
        let shared = Arc::new(Shared {
            compiled: self.compiled.clone(),
            generators,
            services,
            classes,
            stats,
            sink_logs,
            first_version,
        });

        let config = timely::Config::from_args(options.timely_args.iter().cloned())
            .map_err(PipelineError::Run)?;
        let worker_shared = Arc::clone(&shared);
        let progress = options.progress;
        let guards = timely::execute(config, move |worker| {
            let shared = &worker_shared;
            let mut handles = worker.dataflow::<u64, _, _>(|scope| build(scope, shared));
            let (index, peers) = (worker.index(), worker.peers());
            let version = shared.first_version;
            handles.errors.advance_to(version);
            for source in &mut handles.sources {
                source.input.advance_to(version);
                let scan_started = Instant::now();
                let diff = source.state.rescan(index, peers);
                let stats = &shared.stats[&source.node];
                stats.busy_since(scan_started);
                for (sample, d) in diff.samples {
                    stats.records_out(d);
                    source.input.update_at(sample, version, d);
                }
                for (error, d) in diff.errors {
                    stats.error(d);
                    handles.errors.update_at(error, version, d);
                }
            }
            for feedback in &mut handles.feedback {
                feedback.input.advance_to(version);
                // Feedback files are small: one worker reads them and the dataflow spreads them.
                if index == 0 {
                    let scan_started = Instant::now();
                    let diff = feedback.state.rescan();
                    let stats = &shared.stats[&feedback.node];
                    stats.busy_since(scan_started);
                    for (score, d) in diff.scores {
                        feedback.input.update_at(score, version, d);
                    }
                    for (error, d) in diff.errors {
                        stats.error(d);
                        handles.errors.update_at(error, version, d);
                    }
                }
            }
            let probe = handles.probe.clone();
            drop(handles);
            let spinner = (progress && index == 0).then(|| spinner(&shared.compiled.pipeline.name));
            while !probe.done() {
                worker.step_or_park(Some(Duration::from_millis(20)));
                if let Some(bar) = &spinner {
                    bar.set_message(progress_message(shared));
                    bar.tick();
                }
            }
            if let Some(bar) = spinner {
                bar.finish_and_clear();
            }
        })
        .map_err(PipelineError::Run)?;
        for result in guards.join() {
            result.map_err(|e| PipelineError::Run(format!("a worker failed: {e}")))?;
        }

        let mut versions = Vec::new();
        for (sink, log) in &shared.sink_logs {
            let log = log.lock().expect("sink log");
            if let Some(error) = &log.error {
                return Err(PipelineError::Run(format!(
                    "sink `{sink}` could not write: {error}"
                )));
            }
            versions.extend(log.versions.iter().copied());
        }
        versions.sort_unstable();
        versions.dedup();
        // Only the process that holds worker 0 writes; others have nothing to commit.
        if let Some(last) = versions.last() {
            RunState {
                last_version: Some(*last),
            }
            .save(&output)
            .map_err(PipelineError::Run)?;
        }
        let nodes: IndexMap<String, NodeSummary> = shared
            .stats
            .iter()
            .map(|(name, stats)| {
                let service_stats = match shared.compiled.nodes.get(name).map(|n| &n.op) {
                    Some(OpConfig::Classify(c)) => {
                        Some(shared.services[&c.model].stats().snapshot())
                    }
                    Some(OpConfig::Generate(_)) => {
                        Some(shared.generators[name].service.stats().snapshot())
                    }
                    _ => None,
                };
                let (model_calls, busy) =
                    service_stats.map_or((0, 0.0), |(_, _, calls, busy)| (calls, busy));
                (name.clone(), stats.summary(model_calls, busy))
            })
            .collect();
        let errors = shared.sink_logs[ERRORS_SINK]
            .lock()
            .expect("sink log")
            .last_rows as u64;
        Ok(RunSummary {
            pipeline: self.compiled.pipeline.name.clone(),
            versions_written: versions,
            nodes,
            errors,
            seconds: started.elapsed().as_secs_f64(),
        })
    }
}

/// Writes a summary as JSON, atomically.
pub fn write_summary(summary: &RunSummary, path: &Path) -> Result<(), String> {
    write_file(
        path,
        &serde_json::to_vec_pretty(summary).expect("summary serialises"),
    )
}

fn spinner(name: &str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new_spinner();
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} {prefix} [{elapsed}] {msg}")
            .expect("template"),
    );
    bar.set_prefix(name.to_string());
    bar
}

fn progress_message(shared: &Shared) -> String {
    shared
        .stats
        .iter()
        .filter(|(name, _)| {
            shared
                .compiled
                .nodes
                .get(*name)
                .is_some_and(|n| !matches!(n.op, OpConfig::Sink(_)))
        })
        .map(|(name, stats)| {
            let s = stats.summary(0, 0.0);
            format!("{name} {}", s.records_out)
        })
        .collect::<Vec<_>>()
        .join(" · ")
}
