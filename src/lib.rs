//! discl: a dataflow engine that builds diffusion curricula for training image classifiers.
//!
//! A pipeline is a graph file (`pipelines/*.toml`) of named nodes — sources, classifiers,
//! feedback, hard-sample selection, sinks — compiled into a timely/differential dataflow whose
//! expensive steps run ONNX models on an inference service. See `../shared/DESIGN.md`.

pub mod graph;
pub mod operators;
pub mod pipeline;
pub mod record;
pub mod runtime;
pub mod store;
pub mod trainer;

pub use pipeline::{Pipeline, PipelineError, RunOptions, RunSummary};
