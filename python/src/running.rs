//! A started pipeline from Python (see `discl.RunningPipeline`). The engine's
//! `RunningPipeline` sits behind a mutex: each call takes it on a thread of its own
//! (`call::interruptible`), so a call abandoned by a second Ctrl-C keeps it until done, and
//! later calls are refused as busy instead of waiting on it.

use crate::call::interruptible;
use crate::errors::{run_error, to_py};
use crate::rows::{self, ProgressRow, SampleRow, ScoreRow};
use crate::{summary_parts, SummaryParts};
use discl::record::RecordKind;
use discl::PipelineError;
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, TryLockError};

type Engine = discl::pipeline::RunningPipeline;

/// A started pipeline; `None` once stopped.
#[pyclass(module = "discl._discl", frozen)]
pub struct RunningPipeline {
    pipeline: Arc<discl::Pipeline>,
    inner: Arc<Mutex<Option<Engine>>>,
}

impl RunningPipeline {
    pub fn new(pipeline: Arc<discl::Pipeline>, running: Engine) -> Self {
        RunningPipeline {
            pipeline,
            inner: Arc::new(Mutex::new(Some(running))),
        }
    }

    /// Runs `work` on the engine's running pipeline (see the module header).
    fn call<T, F>(&self, py: Python<'_>, work: F) -> PyResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Option<Engine>) -> Result<T, PipelineError> + Send + 'static,
    {
        match self.inner.try_lock() {
            Ok(_) | Err(TryLockError::Poisoned(_)) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(run_error(
                    py,
                    "busy: another call on this pipeline is still running (an abandoned one \
                     finishes its version first)"
                        .into(),
                ))
            }
        }
        let inner = Arc::clone(&self.inner);
        let stop = Arc::new(AtomicBool::new(false));
        let result = interruptible(py, &stop, move || match inner.lock() {
            Ok(mut running) => work(&mut running),
            Err(_) => Err(PipelineError::Run(
                "this pipeline failed in an earlier call; stop it and start again".into(),
            )),
        })?;
        result.map_err(|e| to_py(py, e))
    }

    /// Like `call`, on a pipeline that must still be running.
    fn on_running<T, F>(&self, py: Python<'_>, work: F) -> PyResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Engine) -> Result<T, PipelineError> + Send + 'static,
    {
        self.call(py, move |running| match running.as_mut() {
            Some(running) => work(running),
            None => Err(PipelineError::Run("this pipeline was stopped".into())),
        })
    }
}

#[pymethods]
impl RunningPipeline {
    /// Rescans sources and feedback, computes and commits the next version; returns its number.
    fn refresh(&self, py: Python<'_>) -> PyResult<u64> {
        self.on_running(py, |running| running.refresh())
    }

    /// Queues sample rows for source node `source` (they enter at the next refresh).
    fn push_samples(&self, py: Python<'_>, source: String, rows: Vec<SampleRow>) -> PyResult<()> {
        let samples = rows::samples(rows).map_err(|e| run_error(py, e))?;
        self.on_running(py, move |running| running.push_samples(&source, samples))
    }

    /// Queues feedback rows (checkpoint lines) for feedback node `feedback`.
    fn push_feedback(&self, py: Python<'_>, feedback: String, rows: Vec<ScoreRow>) -> PyResult<()> {
        let scores = rows::scores(rows).map_err(|e| run_error(py, e))?;
        self.on_running(py, move |running| running.push_feedback(&feedback, scores))
    }

    /// Queues progress rows (progress lines) for feedback node `feedback`.
    fn push_progress(
        &self,
        py: Python<'_>,
        feedback: String,
        rows: Vec<ProgressRow>,
    ) -> PyResult<()> {
        let progress = rows::progress(rows).map_err(|e| run_error(py, e))?;
        self.on_running(py, move |running| {
            running.push_progress(&feedback, progress)
        })
    }

    /// Input `input` of sink `sink` in the committed snapshot, as Parquet bytes.
    fn snapshot<'py>(
        &self,
        py: Python<'py>,
        sink: String,
        input: String,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let compiled = self.pipeline.compiled();
        let kind = rows::input_kind(compiled, &sink, &input).map_err(|e| run_error(py, e))?;
        if kind == RecordKind::StageItem {
            return Err(run_error(
                py,
                format!(
                    "input `{input}` of sink `{sink}` holds stage manifests, one file per stage: \
                     open them with discl.stage_manifest() and discl.torch.StageDataset"
                ),
            ));
        }
        let bytes = self.on_running(py, move |running| {
            let rows = running.snapshot(&sink, &input)?;
            rows::parquet(kind, rows).map_err(PipelineError::Run)
        })?;
        Ok(PyBytes::new(py, &bytes))
    }

    /// The summary so far.
    fn summary(&self, py: Python<'_>) -> PyResult<SummaryParts> {
        self.on_running(py, |running| Ok(summary_parts(&running.summary())))
    }

    /// Closes the inputs, drains, joins the workers; returns the summary parts.
    fn stop(&self, py: Python<'_>) -> PyResult<SummaryParts> {
        self.call(py, |running| match running.take() {
            Some(running) => running.stop().map(|s| summary_parts(&s)),
            None => Err(PipelineError::Run("this pipeline was stopped".into())),
        })
    }

    /// Whether `stop` has been called (successfully or not).
    #[getter]
    fn stopped(&self) -> bool {
        match self.inner.try_lock() {
            Ok(running) => running.is_none(),
            Err(TryLockError::Poisoned(running)) => running.get_ref().is_none(),
            Err(TryLockError::WouldBlock) => false,
        }
    }
}
