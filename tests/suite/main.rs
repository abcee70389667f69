//! The integration tests, one binary: each file below is a module that runs real pipelines on the
//! shipped tiny models. One binary instead of one per file: each links the whole engine (~80 MB),
//! so a clean build of three dozen of them filled CI's disk and spent minutes linking.
//!
//! Run one file's tests with its module name as the filter, e.g.
//! `cargo test --test suite curriculum_run::`. Tests that change process-wide state (the working
//! directory, the environment) keep binaries of their own beside this one: `shipped_pipelines.rs`,
//! `onnx_telemetry.rs`, and `fuzz_graph.rs` (its own harness).

#[path = "../common/mod.rs"]
mod common;

mod classify_operator;
mod cli;
mod cluster;
mod commit_across_sinks;
mod curriculum_pandas;
mod curriculum_run;
mod diffusion_reference;
mod fashion_split;
mod filter;
mod fp16_export;
mod fused_attention;
mod gc;
mod generate_operator;
mod generate_run;
mod inputs_and_output;
mod int8_unet;
mod kill_resume;
mod learner;
mod memory_budget;
mod model_map;
mod pipeline_run;
mod quality_retries;
mod refresh;
mod refresh_across_runs;
mod report_plots;
mod sample;
mod scheduler_reference;
mod scorer;
mod shared_session;
mod shipped_models;
mod sink_alone;
mod source_push;
mod store_heals;
mod train_loop;
mod trainer_loop;
mod vae_posterior;
