//! The embedding API: build a pipeline from a graph file or a string, check it, run it once,
//! or start it and refresh it as data and feedback change, and read the summary. Timely and
//! differential stay behind this facade.

mod feed;
mod prepare;
mod running;
mod summary;

pub use running::RunningPipeline;
pub use summary::{write_summary, RunSummary};

use crate::graph::build::sink_folders;
use crate::graph::ops::context::RunInfo;
use crate::graph::{check_resources, compile, configuration, dot, Compiled, GraphError, GraphFile};
use crate::store::commit::{committed, recover};
use std::path::Path;

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
    /// Raised to stop: a `train` node's trainer stops between epochs, leaving what it
    /// finished (a later run resumes from it).
    pub stop: Option<std::sync::Arc<std::sync::atomic::AtomicBool>>,
}

/// What produced a run's snapshots: the graph file's digest and each model folder's.
fn provenance(compiled: &Compiled) -> serde_json::Map<String, serde_json::Value> {
    let models: serde_json::Map<String, serde_json::Value> = compiled
        .models
        .iter()
        .map(|(name, (spec, _))| {
            let digest = crate::runtime::diffusion::digest::folder_digest(&spec.path)
                .map_or_else(|e| format!("unreadable: {e}"), |d| d.to_hex());
            (name.clone(), digest.into())
        })
        .collect();
    let mut out = serde_json::Map::new();
    out.insert(
        "graph".into(),
        serde_json::json!({ "file": compiled.file, "digest": compiled.digest.to_hex() }),
    );
    out.insert("models".into(), models.into());
    let thresholds: serde_json::Map<String, serde_json::Value> = compiled
        .nodes
        .iter()
        .filter_map(|(name, node)| {
            let threshold = node.op.provenance()?.get("threshold")?.clone();
            Some((name.clone(), threshold))
        })
        .collect();
    if !thresholds.is_empty() {
        out.insert("thresholds".into(), thresholds.into());
    }
    out
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
    ///
    /// # Examples
    /// ```
    /// let text = r#"
    /// [pipeline]
    /// name = "p"
    /// output = "out/p"
    ///
    /// [nodes.train]
    /// op = "source"
    /// format = "image_folder"
    /// path = "data/train"
    ///
    /// [nodes.out]
    /// op = "sink"
    /// inputs = ["trian"]
    /// "#;
    /// let error = discl::Pipeline::from_toml("p.toml", text).err().unwrap();
    /// assert_eq!(error.to_string(), "p.toml:13: node `out`: input `trian` is not a node");
    /// ```
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

    /// What a run will use, one line each, defaults resolved: each model's device and
    /// sessions × threads, and each generate node's batch size. `discl run` prints it.
    pub fn configuration(&self) -> Vec<String> {
        configuration(&self.compiled)
    }

    /// The graph as Graphviz DOT.
    pub fn dot(&self) -> String {
        dot::to_dot(&self.compiled)
    }

    /// The compiled graph.
    pub fn compiled(&self) -> &Compiled {
        &self.compiled
    }

    /// Loads every model, starts the inference services and the timely workers; nothing is
    /// read until the first [`RunningPipeline::refresh`].
    pub fn start(&self, options: &RunOptions) -> Result<RunningPipeline, PipelineError> {
        let resources = check_resources(&self.compiled).map_err(PipelineError::Graph)?;
        let output = &self.compiled.pipeline.output;
        let config = timely::Config::from_args(options.timely_args.iter().cloned())
            .map_err(PipelineError::Run)?;
        let process = match &config.communication {
            timely::CommunicationConfig::Cluster { process, .. } => *process,
            _ => 0,
        };
        // The first process (which alone writes manifests) brings the output folder back to
        // its last commit; a version written and never committed is removed, so its number
        // is used again.
        let sinks = sink_folders(&self.compiled);
        let state = if process == 0 {
            recover(output, &sinks).map_err(|e| PipelineError::Run(e.to_string()))?
        } else {
            committed(output, &sinks)
        };
        let first_version = state.next_version();
        let run = RunInfo {
            output: output.clone(),
            seed: self.compiled.pipeline.seed,
            first_version,
            process,
            provenance: provenance(&self.compiled),
        };
        let shared =
            prepare::prepare(&self.compiled, resources, run).map_err(PipelineError::Run)?;
        RunningPipeline::start(shared, config, options.progress, state)
    }

    /// Runs the pipeline once: one version from everything the sources and feedback hold;
    /// with a `train` node, one version per trained stage (see [`Pipeline::train`]).
    pub fn run(&self, options: &RunOptions) -> Result<RunSummary, PipelineError> {
        let mut running = self.start(options)?;
        let training = match self.train(&mut running, options)? {
            Some(report) => Some(report),
            None => {
                running.refresh()?;
                None
            }
        };
        let mut summary = running.stop()?;
        summary.training = training;
        Ok(summary)
    }

    /// With a `train` node: trains its learner stage by stage, refreshing `running` before the
    /// first stage and after each (the trainer writes feedback files the refresh reads);
    /// `None`, doing nothing, without one.
    pub fn train(
        &self,
        running: &mut RunningPipeline,
        options: &RunOptions,
    ) -> Result<Option<crate::trainer::TrainingReport>, PipelineError> {
        let Some(plan) = crate::trainer::TrainPlan::of(&self.compiled)? else {
            return Ok(None);
        };
        crate::trainer::drive(running, &plan, options.stop.as_deref(), options.progress).map(Some)
    }
}
