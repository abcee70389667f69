//! `op = "hard"`: the samples the current model finds hard, from one or more score inputs
//! (the classifier's, the trainer's feedback): misclassified, p_true below a threshold, the
//! top-k or top fraction by loss, every sample of a tail class.

use super::{Dataflow, GraphContext, ModelPool, Node, NodeInfo, Op, OpError, Opened, Ready, Stream};
use crate::operators::{Combine, HardExt, HardSampleRule};
use crate::record::RecordKind;
use serde::Deserialize;
use std::sync::Arc;

/// `op = "hard"`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HardConfig {
    /// Rules, each a one-key table: `{ misclassified = true }`, `{ p_true_below = 0.5 }`,
    /// `{ top_k_loss = 100 }`, `{ top_fraction_loss = 0.1 }`, `{ tail_classes_below = 100 }`.
    pub rules: Vec<RuleConfig>,
    /// `"any"` (default: a rule picks it) or `"all"` (every rule picks it).
    #[serde(default)]
    pub combine: CombineConfig,
}

/// One rule as written.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum RuleConfig {
    Misclassified(bool),
    PTrueBelow(f32),
    TopKLoss(usize),
    TopFractionLoss(f64),
    TailClassesBelow(usize),
}

/// How rules combine.
#[derive(Clone, Copy, Debug, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CombineConfig {
    #[default]
    Any,
    All,
}

impl HardConfig {
    /// The rules as the operator takes them (`misclassified = false` is no rule).
    pub fn hard_rules(&self) -> Vec<HardSampleRule> {
        self.rules
            .iter()
            .filter_map(|rule| match *rule {
                RuleConfig::Misclassified(false) => None,
                RuleConfig::Misclassified(true) => Some(HardSampleRule::Misclassified),
                RuleConfig::PTrueBelow(t) => Some(HardSampleRule::PTrueBelow(t)),
                RuleConfig::TopKLoss(k) => Some(HardSampleRule::TopKLoss(k)),
                RuleConfig::TopFractionLoss(f) => Some(HardSampleRule::TopFractionLoss(f)),
                RuleConfig::TailClassesBelow(n) => Some(HardSampleRule::TailClassesBelow(n)),
            })
            .collect()
    }
    fn combine(&self) -> Combine {
        match self.combine {
            CombineConfig::Any => Combine::Any,
            CombineConfig::All => Combine::All,
        }
    }
}

impl Op for HardConfig {
    fn kind(&self) -> &'static str {
        "hard"
    }
    fn arity(&self) -> (usize, usize) {
        (2, usize::MAX)
    }
    fn check(&self, _graph: &GraphContext) -> Vec<OpError> {
        let mut errors = Vec::new();
        for rule in &self.rules {
            match *rule {
                RuleConfig::PTrueBelow(t) if !(0.0..=1.0).contains(&t) => errors.push(
                    OpError::field("rules", format!("p_true_below = {t} is not a probability in [0, 1]")),
                ),
                RuleConfig::TopFractionLoss(f) if !(f > 0.0 && f <= 1.0) => errors.push(
                    OpError::field("rules", format!("top_fraction_loss = {f} must be in (0, 1]")),
                ),
                _ => {}
            }
        }
        if errors.is_empty() && self.hard_rules().is_empty() {
            errors.push(OpError::field(
                "rules",
                "`rules` selects nothing: give at least one rule",
            ));
        }
        errors
    }
    fn output(&self, inputs: &[RecordKind]) -> Result<Option<RecordKind>, OpError> {
        match inputs {
            [RecordKind::Sample, scores @ ..]
                if !scores.is_empty() && scores.iter().all(|k| *k == RecordKind::Score) =>
            {
                Ok(Some(RecordKind::Sample))
            }
            _ => Err(super::wrong_inputs(
                "[Sample, Score, ...] (the samples, then one or more score inputs)",
                inputs,
            )),
        }
    }
    fn dot_detail(&self) -> String {
        format!("{} rule(s)", self.rules.len())
    }
    fn open(&self, _node: &NodeInfo, _pool: &mut ModelPool) -> Result<Box<dyn Opened>, Vec<OpError>> {
        Ok(Box::new(Ready(self.clone())))
    }
}

impl Node for HardConfig {
    fn build<'scope>(
        &self,
        dataflow: &mut Dataflow<'scope>,
        node: &NodeInfo,
        inputs: &[Stream<'scope>],
    ) -> Stream<'scope> {
        let stats = dataflow.stats_of(&node.name);
        let counted = Arc::clone(&stats);
        let samples = inputs[0]
            .samples()
            .inspect(move |(_, _, d)| counted.records_in(*d));
        let scores: Vec<_> = inputs[1..].iter().map(Stream::scores).collect();
        let counted = Arc::clone(&stats);
        let scores = differential_dataflow::collection::concatenate(dataflow.scope, scores)
            .inspect(move |(_, _, d)| counted.records_in(*d));
        let hard = samples.hard(scores, &self.hard_rules(), self.combine());
        Stream::Samples(hard.inspect(move |(_, _, d)| stats.records_out(*d)))
    }
}
