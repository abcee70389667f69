//! `discl._discl`: the native half of the `discl` Python package, over discl's embedding API
//! (`discl::Pipeline`, `discl::pipeline::RunningPipeline`) and nothing below it: no timely or
//! differential type crosses into Python. The Python modules in `discl/` wrap these classes
//! with the documented API (rows as dicts, snapshots as `pyarrow.Table`, summaries, errors).
//!
//! Every call that may take long (validating, starting, running, refreshing, stopping) runs
//! with the GIL released and honours Ctrl-C (`call`).

mod call;
mod errors;
mod rows;
mod running;

use call::interruptible;
use discl::runtime::onnx::{disable_telemetry, BUNDLED_LIBRARY};
use discl::{PipelineError, RunOptions, RunSummary};
use errors::to_py;
use pyo3::prelude::*;
use running::RunningPipeline;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

/// A summary as (JSON as `--summary-json` writes it, the line `discl run` prints).
type SummaryParts = (String, String);

fn summary_parts(summary: &RunSummary) -> SummaryParts {
    let json = serde_json::to_string(summary).expect("a summary is JSON");
    (json, summary.line())
}

/// A compiled graph (see `discl.Pipeline`).
#[pyclass(module = "discl._discl", frozen)]
struct Pipeline {
    inner: Arc<discl::Pipeline>,
}

fn options(timely_args: Vec<String>, progress: bool, stop: &Arc<AtomicBool>) -> RunOptions {
    RunOptions {
        timely_args,
        progress,
        stop: Some(Arc::clone(stop)),
    }
}

#[pymethods]
impl Pipeline {
    /// Reads and compiles a graph file (structure only; no model is loaded).
    #[staticmethod]
    fn from_file(py: Python<'_>, path: PathBuf) -> PyResult<Self> {
        let inner = discl::Pipeline::from_file(&path).map_err(|e| to_py(py, e))?;
        Ok(Pipeline {
            inner: Arc::new(inner),
        })
    }

    /// Compiles graph-file text; `name` stands for the file in errors.
    #[staticmethod]
    fn from_toml(py: Python<'_>, text: &str, name: &str) -> PyResult<Self> {
        let inner = discl::Pipeline::from_toml(name, text).map_err(|e| to_py(py, e))?;
        Ok(Pipeline {
            inner: Arc::new(inner),
        })
    }

    /// Checks files and models too (loads every model once).
    fn validate(&self, py: Python<'_>) -> PyResult<()> {
        let inner = Arc::clone(&self.inner);
        let stop = Arc::new(AtomicBool::new(false));
        interruptible(py, &stop, move || inner.validate())?.map_err(|e| to_py(py, e))
    }

    /// The graph as Graphviz DOT.
    fn dot(&self) -> String {
        self.inner.dot()
    }

    /// What a run will use, one line each (models' devices and sessions, batch sizes).
    fn configuration(&self) -> Vec<String> {
        self.inner.configuration()
    }

    /// The pipeline's name.
    #[getter]
    fn name(&self) -> String {
        self.inner.compiled().pipeline.name.clone()
    }

    /// The output folder, as the graph file gives it.
    #[getter]
    fn output(&self) -> PathBuf {
        self.inner.compiled().pipeline.output.clone()
    }

    /// Every node in dependency order: (name, op, inputs).
    fn nodes(&self) -> Vec<(String, String, Vec<String>)> {
        let compiled = self.inner.compiled();
        compiled
            .nodes
            .iter()
            .map(|(name, node)| {
                let op = node.op.kind().to_string();
                (name.clone(), op, node.info.inputs.clone())
            })
            .collect()
    }

    /// Runs once; returns the summary parts.
    fn run(
        &self,
        py: Python<'_>,
        timely_args: Vec<String>,
        progress: bool,
    ) -> PyResult<SummaryParts> {
        let inner = Arc::clone(&self.inner);
        let stop = Arc::new(AtomicBool::new(false));
        let options = options(timely_args, progress, &stop);
        let result = interruptible(py, &stop, move || inner.run(&options))?;
        result.map(|s| summary_parts(&s)).map_err(|e| to_py(py, e))
    }

    /// Loads every model and starts the workers.
    fn start(
        &self,
        py: Python<'_>,
        timely_args: Vec<String>,
        progress: bool,
    ) -> PyResult<RunningPipeline> {
        let inner = Arc::clone(&self.inner);
        let stop = Arc::new(AtomicBool::new(false));
        let options = options(timely_args, progress, &stop);
        let started = interruptible(py, &stop, move || -> Result<_, PipelineError> {
            let running = inner.start(&options)?;
            Ok((inner, running))
        })?;
        let (pipeline, running) = started.map_err(|e| to_py(py, e))?;
        Ok(RunningPipeline::new(pipeline, running))
    }
}

/// The stable id of a sample with this dataset-relative name (what the engine derives).
#[pyfunction]
fn sample_id(name: &str) -> u64 {
    discl::record::sample_id(name)
}

#[pymodule]
fn _discl(m: &Bound<'_, PyModule>) -> PyResult<()> {
    // Before the engine starts any thread (README: ONNX Runtime's telemetry).
    disable_telemetry();
    m.add_class::<Pipeline>()?;
    m.add_class::<RunningPipeline>()?;
    m.add_function(wrap_pyfunction!(sample_id, m)?)?;
    m.add("BUNDLED_LIBRARY", BUNDLED_LIBRARY)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
