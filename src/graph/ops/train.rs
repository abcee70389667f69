//! `op = "train"`: discl's own trainer, a client of the trainer feedback protocol. It trains the
//! built-in learner (`runtime::learner`) stage by stage on the stage manifests a sink writes,
//! and writes `checkpoint-K.jsonl` / `progress-K.jsonl` into a feedback node's folder, exactly
//! as an outside trainer does; the run driver (`trainer::drive`) refreshes the pipeline after
//! every stage. Inside the dataflow the node gives nothing: it reads what sinks wrote.
//!
//! Inputs, by kind: the training samples (the first `Sample` input; scored after every stage
//! and counted for the many/medium/few groups), the curriculum (`StagePlan`), the mix
//! (`StageItem`), the feedback node it writes to (`Score`), and optionally the validation
//! images (a second `Sample` input and their `Synthetic` images) for the adaptive schedule.

use super::{Dataflow, GraphContext, ModelPool, Node, NodeInfo, Op, OpError, Opened, Ready, Role, Stream};
use crate::record::RecordKind;
use serde::Deserialize;
use std::path::PathBuf;

/// `op = "train"`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// The `[models]` classifier whose input size, normalisation and classes the learner takes.
    pub like: String,
    /// Keys the learner's initial weights, order, augmentation and dropout (the pipeline's
    /// seed when absent).
    #[serde(default)]
    pub seed: Option<u64>,
    /// Threads of the learner's pool.
    #[serde(default = "one")]
    pub threads: usize,
    /// Output channels of the learner's five conv blocks (fashion-cnn's by default).
    #[serde(default = "default_widths")]
    pub widths: [usize; 5],
    /// Rows per optimiser step.
    #[serde(default = "default_batch")]
    pub batch_size: usize,
    /// AdamW's learning rate (the peak of the cosine schedule).
    #[serde(default = "default_learning_rate")]
    pub learning_rate: f64,
    /// How the learning rate moves across the planned epochs.
    #[serde(default)]
    pub lr_schedule: LrSchedule,
    /// AdamW's decoupled weight decay.
    #[serde(default = "default_weight_decay")]
    pub weight_decay: f64,
    /// Random flips and shifts of training images.
    #[serde(default = "yes")]
    pub augment: bool,
    /// Write `checkpoint-K.jsonl` (p_true of every training sample) after each stage, so the
    /// hard set follows the learner; `false` keeps the hard set of the scores already given.
    #[serde(default = "yes")]
    pub score_training: bool,
    /// Stages to train (default: every stage the curriculum plans).
    #[serde(default)]
    pub stages: Option<u32>,
    /// An image folder (one sub-folder per class) to evaluate on after every stage.
    #[serde(default)]
    pub test: Option<PathBuf>,
    /// Evaluate on `test` after every stage (`false`: after the last one only).
    #[serde(default = "yes")]
    pub test_every_stage: bool,
    /// Classes with more training samples than this are "many".
    #[serde(default = "default_many")]
    pub many_above: usize,
    /// Classes with fewer training samples than this are "few" (the rest "medium").
    #[serde(default = "default_few")]
    pub few_below: usize,
}

/// The learning rate over a run.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum LrSchedule {
    /// One cosine from `learning_rate` towards 0 over every epoch the stage index plans, so the
    /// learner ends at a small step and its final accuracy does not hang on the last batches.
    #[default]
    Cosine,
    /// `learning_rate` throughout.
    Constant,
}

impl LrSchedule {
    /// The rate of epoch `epoch` (0-based) of a run of `total` epochs.
    pub fn rate(self, peak: f64, epoch: u64, total: u64) -> f64 {
        match self {
            LrSchedule::Constant => peak,
            LrSchedule::Cosine => {
                let t = epoch.min(total) as f64 / total.max(1) as f64;
                peak * 0.5 * (1.0 + (std::f64::consts::PI * t).cos())
            }
        }
    }
}

fn one() -> usize {
    1
}
fn yes() -> bool {
    true
}
fn default_widths() -> [usize; 5] {
    crate::runtime::learner::net::WIDTHS
}
fn default_batch() -> usize {
    64
}
fn default_learning_rate() -> f64 {
    2e-3
}
fn default_weight_decay() -> f64 {
    1e-4
}
/// ImageNet-LT's thresholds.
fn default_many() -> usize {
    100
}
fn default_few() -> usize {
    20
}

/// Which input plays which part, by position in `inputs`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TrainInputs {
    pub samples: usize,
    pub plans: usize,
    pub items: usize,
    pub feedback: usize,
    /// The validation samples and their synthetic images.
    pub validation: Option<(usize, usize)>,
}

impl TrainInputs {
    /// Assigns inputs by kind; `None` when the kinds do not fit.
    pub fn of(kinds: &[RecordKind]) -> Option<TrainInputs> {
        let at = |kind: RecordKind| -> Vec<usize> {
            (0..kinds.len()).filter(|i| kinds[*i] == kind).collect()
        };
        let (samples, plans, items, scores, synthetic) = (
            at(RecordKind::Sample),
            at(RecordKind::StagePlan),
            at(RecordKind::StageItem),
            at(RecordKind::Score),
            at(RecordKind::Synthetic),
        );
        if plans.len() != 1 || items.len() != 1 || scores.len() != 1 {
            return None;
        }
        if samples.len() + synthetic.len() + 3 != kinds.len() {
            return None;
        }
        let validation = match (samples.as_slice(), synthetic.as_slice()) {
            ([_], []) => None,
            ([_, val], [synthetic]) => Some((*val, *synthetic)),
            _ => return None,
        };
        Some(TrainInputs {
            samples: samples[0],
            plans: plans[0],
            items: items[0],
            feedback: scores[0],
            validation,
        })
    }
}

const EXPECTED: &str = "the training samples, a curriculum, a mix and a feedback node, then \
                        optionally the validation samples and their synthetic images";

impl Op for TrainConfig {
    fn kind(&self) -> &'static str {
        "train"
    }
    fn arity(&self) -> (usize, usize) {
        (4, 6)
    }
    fn check(&self, graph: &GraphContext) -> Vec<OpError> {
        let mut errors = Vec::new();
        if !graph.input_ops.contains(&Some("feedback")) {
            let message = "needs the feedback node it writes to among its inputs";
            errors.push(OpError::field("inputs", message));
        }
        if !graph.models.contains(&self.like.as_str()) {
            let message = format!("`{}` is not under [models]", self.like);
            errors.push(OpError::field("like", message));
        }
        if self.threads == 0 {
            errors.push(OpError::field("threads", "must be at least 1"));
        }
        if self.widths.contains(&0) {
            errors.push(OpError::field("widths", "every width must be at least 1"));
        }
        if self.batch_size == 0 {
            errors.push(OpError::field("batch_size", "must be at least 1"));
        }
        if !(self.learning_rate.is_finite() && self.learning_rate > 0.0) {
            errors.push(OpError::field("learning_rate", "must be a positive number"));
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            errors.push(OpError::field("weight_decay", "must be zero or more"));
        }
        if self.stages == Some(0) {
            errors.push(OpError::field("stages", "must be at least 1"));
        }
        if self.few_below > self.many_above + 1 {
            errors.push(OpError::field("few_below", "must not exceed many_above + 1"));
        }
        errors
    }
    fn output(&self, inputs: &[RecordKind]) -> Result<Option<RecordKind>, OpError> {
        match TrainInputs::of(inputs) {
            Some(_) => Ok(None),
            None => Err(super::wrong_inputs(EXPECTED, inputs)),
        }
    }
    fn model(&self) -> Option<&str> {
        Some(&self.like)
    }
    fn role(&self) -> Role {
        Role::Output
    }
    fn dot_detail(&self) -> String {
        format!("learner like {}, batch {}", self.like, self.batch_size)
    }
    fn trainer(&self) -> Option<&TrainConfig> {
        Some(self)
    }
    fn open(&self, _node: &NodeInfo, pool: &mut ModelPool) -> Result<Box<dyn Opened>, Vec<OpError>> {
        let folder = &pool.spec(&self.like).path;
        if let Err(e) = crate::runtime::ModelMeta::load(folder) {
            return Err(vec![OpError::model(&self.like, e.to_string())]);
        }
        if let Some(test) = &self.test {
            if !test.is_dir() {
                let message = format!("{}: not a folder", test.display());
                return Err(vec![OpError::field("test", message)]);
            }
        }
        Ok(Box::new(Ready(self.clone())))
    }
}

impl Node for TrainConfig {
    fn build<'scope>(
        &self,
        _dataflow: &mut Dataflow<'scope>,
        _node: &NodeInfo,
        _inputs: &[Stream<'scope>],
    ) -> Stream<'scope> {
        Stream::Nothing
    }
}
