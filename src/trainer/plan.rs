//! A `train` node resolved against its graph: which sink's files hold each of its inputs, the
//! feedback folder it writes, and the learner's settings (image spec and classes from the
//! classifier named by `like`).

use crate::graph::compile::CompiledNode;
use crate::graph::ops::train::{TrainConfig, TrainInputs};
use crate::graph::ops::OpError;
use crate::graph::Compiled;
use crate::pipeline::PipelineError;
use crate::runtime::learner::LearnerConfig;
use crate::runtime::ModelMeta;
use std::path::PathBuf;

/// Everything the driver needs to train for one `train` node.
#[derive(Clone, Debug)]
pub struct TrainPlan {
    pub node: String,
    pub config: TrainConfig,
    pub learner: LearnerConfig,
    pub classes: Vec<String>,
    /// The pipeline's output folder.
    pub output: PathBuf,
    /// `<output>/<node>`: the learner's weights, report and export.
    pub folder: PathBuf,
    /// The feedback node's folder, where checkpoint and progress files go.
    pub feedback: PathBuf,
    pub samples_sink: String,
    pub samples_input: String,
    /// The sink holding both the stage index and the stage manifests (one version for both).
    pub items_sink: String,
    pub plans_input: String,
    pub items_input: String,
    /// The sink and its inputs with the validation samples and their synthetic images.
    pub validation: Option<(String, String, String)>,
    /// Digest of the graph the stages are trained under (a resumed run must match it).
    pub trained_under: String,
}

/// A sink of `compiled` writing every one of `inputs`.
fn sink_writing(compiled: &Compiled, inputs: &[&str]) -> Option<String> {
    compiled
        .nodes
        .values()
        .find(|n| {
            n.op.kind() == "sink" && inputs.iter().all(|i| n.info.inputs.iter().any(|x| x == i))
        })
        .map(|n| n.name().to_string())
}

fn graph_error(compiled: &Compiled, node: &CompiledNode, error: OpError) -> PipelineError {
    PipelineError::Graph(vec![compiled.op_error(node, error)])
}

impl TrainPlan {
    /// The plan of the graph's `train` node, if it has one.
    pub fn of(compiled: &Compiled) -> Result<Option<TrainPlan>, PipelineError> {
        let mut nodes = compiled.nodes.values().filter(|n| n.op.trainer().is_some());
        let Some(node) = nodes.next() else {
            return Ok(None);
        };
        if let Some(second) = nodes.next() {
            let message = format!(
                "a pipeline has one train node; `{}` is another",
                node.name()
            );
            return Err(graph_error(compiled, second, OpError::node(message)));
        }
        let config = node.op.trainer().expect("a train node").clone();
        let info = &node.info;
        let roles = TrainInputs::of(&info.input_kinds).expect("the compiler checked the kinds");
        let name = |i: usize| info.inputs[i].as_str();
        let need_sink = |inputs: &[&str]| -> Result<String, PipelineError> {
            sink_writing(compiled, inputs).ok_or_else(|| {
                let listed = inputs.iter().map(|i| format!("`{i}`")).collect::<Vec<_>>().join(" and ");
                let message = format!(
                    "no sink writes {listed}: the trainer reads what sinks write, so add {} to a sink's inputs",
                    if inputs.len() > 1 { "them" } else { "it" }
                );
                graph_error(compiled, node, OpError::field("inputs", message))
            })
        };
        let samples_sink = need_sink(&[name(roles.samples)])?;
        let items_sink = need_sink(&[name(roles.plans), name(roles.items)])?;
        let validation = match roles.validation {
            Some((real, synthetic)) => {
                let sink = need_sink(&[name(real), name(synthetic)])?;
                Some((sink, name(real).to_string(), name(synthetic).to_string()))
            }
            None => None,
        };
        let feedback_node = &compiled.nodes[name(roles.feedback)];
        let Some(feedback) = feedback_node.op.feedback_folder() else {
            let message = format!(
                "input `{}` is not a feedback node: the trainer writes a feedback node's folder",
                name(roles.feedback)
            );
            return Err(graph_error(
                compiled,
                node,
                OpError::field("inputs", message),
            ));
        };
        let (spec, _) = &compiled.models[&config.like];
        let (meta, _) = ModelMeta::load(&spec.path).map_err(|e| {
            graph_error(compiled, node, OpError::model(&config.like, e.to_string()))
        })?;
        let learner = LearnerConfig {
            seed: config.seed.unwrap_or(compiled.pipeline.seed),
            threads: config.threads,
            batch_size: config.batch_size,
            learning_rate: config.learning_rate,
            weight_decay: config.weight_decay,
            augment: config.augment,
            widths: config.widths,
            image: meta.image_spec(),
        };
        let trained_under = blake3::hash(
            format!("{}\n{:?}\n{:?}", compiled.digest.to_hex(), config, learner).as_bytes(),
        )
        .to_hex()
        .to_string();
        let output = compiled.pipeline.output.clone();
        Ok(Some(TrainPlan {
            node: node.name().to_string(),
            folder: output.join(node.name()),
            feedback: feedback.to_path_buf(),
            output,
            learner,
            classes: meta.classes.clone(),
            samples_sink,
            samples_input: name(roles.samples).to_string(),
            items_sink,
            plans_input: name(roles.plans).to_string(),
            items_input: name(roles.items).to_string(),
            validation,
            trained_under,
            config,
        }))
    }

    /// A sink's folder.
    pub fn sink(&self, sink: &str) -> PathBuf {
        self.output.join(sink)
    }

    /// The sink holding the validation images (only called when there is one).
    pub fn validation_sink(&self) -> &str {
        &self.validation.as_ref().expect("a validation set").0
    }

    /// A class's index in the learner's output.
    pub fn class_index(&self, class: &str) -> Option<usize> {
        self.classes.iter().position(|c| c == class)
    }

    /// The learner's weights after `stages` stages.
    pub fn weights(&self, stages: usize) -> PathBuf {
        self.folder.join(format!("learner-{stages}.safetensors"))
    }

    /// The feedback file `<kind>-<n>.jsonl`.
    pub fn feedback_file(&self, kind: &str, n: u32) -> PathBuf {
        self.feedback.join(format!("{kind}-{n}.jsonl"))
    }
}
