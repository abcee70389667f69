//! `op = "mix"`: the training manifest of every stage and epoch from the real samples, the
//! hard ones, their synthetic images and the curriculum's stage plans (METHOD §5).

use super::{Dataflow, GraphContext, ModelPool, Node, NodeInfo, Op, OpError, Opened, Ready, Stream};
use crate::operators::mix::{mix, MixRule};
use crate::record::RecordKind;
use serde::Deserialize;
use std::sync::Arc;

/// `op = "mix"`: `inputs = [samples, hard, synthetic, stages]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MixConfig {
    /// Share of the non-hard real images drawn afresh for each epoch (METHOD: 0.3 for long-tail
    /// data; 1.0 keeps them all, as the adaptive setting does).
    #[serde(default = "default_head")]
    pub head_fraction: f64,
    /// Share of each epoch made of hard items, real and synthetic (METHOD: 0.136, the share of
    /// ImageNet-LT's few-shot classes).
    #[serde(default = "default_tail")]
    pub tail_share: f64,
    /// In real-only stages, fill the tail share with copies of the hard real images.
    #[serde(default)]
    pub oversample_real: bool,
    /// Seed of every keyed choice; the pipeline's when absent.
    #[serde(default)]
    pub seed: Option<u64>,
}

fn default_head() -> f64 {
    0.3
}
fn default_tail() -> f64 {
    0.136
}

impl Op for MixConfig {
    fn kind(&self) -> &'static str {
        "mix"
    }
    fn arity(&self) -> (usize, usize) {
        (4, 4)
    }
    fn check(&self, _graph: &GraphContext) -> Vec<OpError> {
        let mut errors = Vec::new();
        if !(self.head_fraction > 0.0 && self.head_fraction <= 1.0) {
            let message = format!("head_fraction = {} must be in (0, 1]", self.head_fraction);
            errors.push(OpError::field("head_fraction", message));
        }
        if !(0.0..1.0).contains(&self.tail_share) {
            let message = format!("tail_share = {} must be in [0, 1)", self.tail_share);
            errors.push(OpError::field("tail_share", message));
        }
        errors
    }
    fn output(&self, inputs: &[RecordKind]) -> Result<Option<RecordKind>, OpError> {
        use RecordKind::*;
        match inputs {
            [Sample, Sample, Synthetic, StagePlan] => Ok(Some(StageItem)),
            _ => Err(super::wrong_inputs(
                "[Sample, Sample, Synthetic, StagePlan] (all real samples, the hard ones, their synthetic images, the stage plans)",
                inputs,
            )),
        }
    }
    fn dot_detail(&self) -> String {
        format!("head {}, tail share {}", self.head_fraction, self.tail_share)
    }
    fn open(&self, _node: &NodeInfo, _pool: &mut ModelPool) -> Result<Box<dyn Opened>, Vec<OpError>> {
        Ok(Box::new(Ready(self.clone())))
    }
}

impl Node for MixConfig {
    fn build<'scope>(
        &self,
        dataflow: &mut Dataflow<'scope>,
        node: &NodeInfo,
        inputs: &[Stream<'scope>],
    ) -> Stream<'scope> {
        let rule = MixRule {
            head_fraction: self.head_fraction,
            tail_share: self.tail_share,
            oversample_real: self.oversample_real,
            seed: self.seed.unwrap_or(dataflow.run.seed),
        };
        // Synthetic paths are relative to the output folder; in a manifest they are as usable
        // as the real images' paths (relative to where discl runs, or absolute).
        let output = dataflow.run.output.clone();
        let synthetic = inputs[2].synthetics().map(move |mut image| {
            image.path = output.join(&image.path).display().to_string();
            image
        });
        let items = mix(inputs[0].samples(), inputs[1].samples(), synthetic, inputs[3].plans(), rule);
        let stats = dataflow.stats_of(&node.name);
        let counted = Arc::clone(&stats);
        Stream::StageItems(items.inspect(move |(_, _, d)| counted.records_out(*d)))
    }
}
