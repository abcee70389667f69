//! `op = "filter"`: keeps the records whose field meets every condition given, on any record
//! kind: `field = "label"` with `equals`, `not_equals`, `one_of`, `not_one_of` (text or
//! numbers), or `below`, `above`, `at_most`, `at_least` (numbers). A missing value (a
//! synthetic image not yet scored) meets no condition.

use super::{Dataflow, GraphContext, ModelPool, Node, NodeInfo, Op, OpError, Opened, Ready, Stream};
use crate::operators::NodeStats;
use crate::record::{Progress, RecordKind, Sample, Score, StageItem, StagePlan, Synthetic};
use differential_dataflow::VecCollection;
use serde::Deserialize;
use std::borrow::Cow;
use std::sync::Arc;

/// `op = "filter"`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilterConfig {
    /// The field to test (see [`fields_of`] for each record kind's fields).
    pub field: String,
    /// Keep records whose field equals this text or number.
    #[serde(default)]
    pub equals: Option<Literal>,
    /// Keep records whose field differs from this.
    #[serde(default)]
    pub not_equals: Option<Literal>,
    /// Keep records whose field is one of these.
    #[serde(default)]
    pub one_of: Option<Vec<Literal>>,
    /// Keep records whose field is none of these.
    #[serde(default)]
    pub not_one_of: Option<Vec<Literal>>,
    /// Keep records whose numeric field is below this.
    #[serde(default)]
    pub below: Option<f64>,
    /// Keep records whose numeric field is above this.
    #[serde(default)]
    pub above: Option<f64>,
    /// Keep records whose numeric field is at most this.
    #[serde(default)]
    pub at_most: Option<f64>,
    /// Keep records whose numeric field is at least this.
    #[serde(default)]
    pub at_least: Option<f64>,
}

/// A value to compare with: text or a number.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum Literal {
    Number(f64),
    Text(String),
}

/// A record's field as the filter sees it.
#[derive(Debug, PartialEq)]
pub enum FieldValue<'a> {
    Number(f64),
    Text(Cow<'a, str>),
    Missing,
}

/// Whether a field holds numbers (`true`) or text, per record kind; levels are per mille.
pub fn fields_of(kind: RecordKind) -> &'static [(&'static str, bool)] {
    match kind {
        RecordKind::Sample => &[("id", true), ("name", false), ("label", false), ("path", false), ("digest", false)],
        RecordKind::Score => &[("sample", true), ("checkpoint", true), ("p_true", true), ("loss", true), ("predicted", false)],
        RecordKind::Synthetic => &[
            ("sample", true), ("level", true), ("seed", true), ("prompt", false), ("label", false),
            ("path", false), ("digest", false), ("source", false), ("text_score", true), ("image_score", true),
        ],
        RecordKind::Progress => &[("after_stages", true), ("sample", true), ("level", true), ("p_true", true)],
        RecordKind::StagePlan => &[("stage", true), ("epochs", true)],
        RecordKind::StageItem => &[
            ("stage", true), ("epoch", true), ("sample", true), ("level", true), ("seed", true),
            ("prompt", false), ("label", false), ("path", false), ("copies", true),
        ],
    }
}

/// Field access by name for each record kind.
pub trait Fields {
    fn field(&self, name: &str) -> FieldValue<'_>;
}

fn text(s: &str) -> FieldValue<'_> {
    FieldValue::Text(Cow::Borrowed(s))
}

impl Fields for Sample {
    fn field(&self, name: &str) -> FieldValue<'_> {
        match name {
            "id" => FieldValue::Number(self.id as f64),
            "name" => text(&self.name),
            "label" => text(&self.label),
            "path" => text(&self.path),
            "digest" => FieldValue::Text(Cow::Owned(self.digest.to_hex())),
            _ => FieldValue::Missing,
        }
    }
}

impl Fields for Score {
    fn field(&self, name: &str) -> FieldValue<'_> {
        match name {
            "sample" => FieldValue::Number(self.sample as f64),
            "checkpoint" => FieldValue::Number(self.checkpoint as f64),
            "p_true" => FieldValue::Number(self.p_true.0 as f64),
            "loss" => FieldValue::Number(self.loss.0 as f64),
            "predicted" => text(&self.predicted),
            _ => FieldValue::Missing,
        }
    }
}

impl Fields for Synthetic {
    fn field(&self, name: &str) -> FieldValue<'_> {
        let score = |v: Option<crate::record::Value>| v.map_or(FieldValue::Missing, |v| FieldValue::Number(v.0 as f64));
        match name {
            "sample" => FieldValue::Number(self.key.sample as f64),
            "level" => FieldValue::Number(self.key.level as f64),
            "seed" => FieldValue::Number(self.key.seed as f64),
            "prompt" => text(&self.key.prompt),
            "label" => text(&self.label),
            "path" => text(&self.path),
            "digest" => FieldValue::Text(Cow::Owned(self.digest.to_hex())),
            "source" => text(&self.source),
            "text_score" => score(self.text_score),
            "image_score" => score(self.image_score),
            _ => FieldValue::Missing,
        }
    }
}

impl Fields for Progress {
    fn field(&self, name: &str) -> FieldValue<'_> {
        match name {
            "after_stages" => FieldValue::Number(self.after_stages as f64),
            "sample" => FieldValue::Number(self.sample as f64),
            "level" => FieldValue::Number(self.level as f64),
            "p_true" => FieldValue::Number(self.p_true.0 as f64),
            _ => FieldValue::Missing,
        }
    }
}

impl Fields for StagePlan {
    fn field(&self, name: &str) -> FieldValue<'_> {
        match name {
            "stage" => FieldValue::Number(self.stage as f64),
            "epochs" => FieldValue::Number(self.epochs as f64),
            _ => FieldValue::Missing,
        }
    }
}

impl Fields for StageItem {
    fn field(&self, name: &str) -> FieldValue<'_> {
        match name {
            "stage" => FieldValue::Number(self.stage as f64),
            "epoch" => FieldValue::Number(self.epoch as f64),
            "sample" => FieldValue::Number(self.sample as f64),
            "level" => FieldValue::Number(self.level as f64),
            "seed" => self.seed.map_or(FieldValue::Missing, |s| FieldValue::Number(s as f64)),
            "prompt" => self.prompt.as_deref().map_or(FieldValue::Missing, text),
            "label" => text(&self.label),
            "path" => text(&self.path),
            "copies" => FieldValue::Number(self.copies as f64),
            _ => FieldValue::Missing,
        }
    }
}

fn same(value: &FieldValue, literal: &Literal) -> bool {
    match (value, literal) {
        (FieldValue::Number(a), Literal::Number(b)) => a == b,
        (FieldValue::Text(a), Literal::Text(b)) => a == b,
        _ => false,
    }
}

impl FilterConfig {
    /// Whether a record's field meets every condition.
    pub fn keeps(&self, value: FieldValue) -> bool {
        if value == FieldValue::Missing {
            return false;
        }
        let number = match value {
            FieldValue::Number(n) => Some(n),
            _ => None,
        };
        let compare = |bound: Option<f64>, holds: fn(f64, f64) -> bool| {
            bound.is_none_or(|b| number.is_some_and(|n| holds(n, b)))
        };
        self.equals.as_ref().is_none_or(|l| same(&value, l))
            && self.not_equals.as_ref().is_none_or(|l| !same(&value, l))
            && self.one_of.as_ref().is_none_or(|ls| ls.iter().any(|l| same(&value, l)))
            && self.not_one_of.as_ref().is_none_or(|ls| !ls.iter().any(|l| same(&value, l)))
            && compare(self.below, |n, b| n < b)
            && compare(self.above, |n, b| n > b)
            && compare(self.at_most, |n, b| n <= b)
            && compare(self.at_least, |n, b| n >= b)
    }

    fn literals(&self) -> impl Iterator<Item = &Literal> {
        let one = [&self.equals, &self.not_equals].into_iter().flatten();
        let many = [&self.one_of, &self.not_one_of].into_iter().flatten().flatten();
        one.chain(many)
    }

    fn has_bounds(&self) -> bool {
        [self.below, self.above, self.at_most, self.at_least].iter().any(Option::is_some)
    }
}

impl Op for FilterConfig {
    fn kind(&self) -> &'static str {
        "filter"
    }
    fn arity(&self) -> (usize, usize) {
        (1, 1)
    }
    fn check(&self, _graph: &GraphContext) -> Vec<OpError> {
        if self.literals().next().is_none() && !self.has_bounds() {
            return vec![OpError::node(
                "give a condition: equals, not_equals, one_of, not_one_of, below, above, at_most or at_least",
            )];
        }
        Vec::new()
    }
    fn output(&self, inputs: &[RecordKind]) -> Result<Option<RecordKind>, OpError> {
        let [kind] = inputs else {
            return Err(super::wrong_inputs("one input", inputs));
        };
        let fields = fields_of(*kind);
        let Some((_, numeric)) = fields.iter().find(|(name, _)| *name == self.field) else {
            let names: Vec<&str> = fields.iter().map(|(name, _)| *name).collect();
            let message = format!("{kind} has no field `{}` (fields: {})", self.field, names.join(", "));
            return Err(OpError::field("field", message));
        };
        if !numeric && self.has_bounds() {
            let message = format!("`{}` is text: below, above, at_most and at_least need a number field", self.field);
            return Err(OpError::field("field", message));
        }
        let mismatched = self.literals().any(|l| matches!(l, Literal::Number(_)) != *numeric);
        if mismatched {
            let what = if *numeric { "a number" } else { "text" };
            let message = format!("`{}` holds {what}: compare it with {what}", self.field);
            return Err(OpError::field("field", message));
        }
        Ok(Some(*kind))
    }
    fn dot_detail(&self) -> String {
        format!("by {}", self.field)
    }
    fn open(&self, _node: &NodeInfo, _pool: &mut ModelPool) -> Result<Box<dyn Opened>, Vec<OpError>> {
        Ok(Box::new(Ready(self.clone())))
    }
}

impl Node for FilterConfig {
    fn build<'scope>(
        &self,
        dataflow: &mut Dataflow<'scope>,
        node: &NodeInfo,
        inputs: &[Stream<'scope>],
    ) -> Stream<'scope> {
        let (config, stats) = (Arc::new(self.clone()), dataflow.stats_of(&node.name));
        match &inputs[0] {
            Stream::Samples(c) => Stream::Samples(filtered(c, config, stats)),
            Stream::Scores(c) => Stream::Scores(filtered(c, config, stats)),
            Stream::Synthetics(c) => Stream::Synthetics(filtered(c, config, stats)),
            Stream::Progress(c) => Stream::Progress(filtered(c, config, stats)),
            Stream::Plans(c) => Stream::Plans(filtered(c, config, stats)),
            Stream::StageItems(c) => Stream::StageItems(filtered(c, config, stats)),
            Stream::Nothing => unreachable!("the compiler refuses sinks as inputs"),
        }
    }
}

fn filtered<'scope, D>(
    records: &VecCollection<'scope, u64, D>,
    config: Arc<FilterConfig>,
    stats: Arc<NodeStats>,
) -> VecCollection<'scope, u64, D>
where
    D: Fields + differential_dataflow::Data,
{
    let counted = Arc::clone(&stats);
    records
        .clone()
        .inspect(move |(_, _, d)| counted.records_in(*d))
        .filter(move |record| config.keeps(record.field(&config.field)))
        .inspect(move |(_, _, d)| stats.records_out(*d))
}
