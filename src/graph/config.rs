//! One config struct per op, read from a node's fields with unknown fields refused, and what
//! each op takes and gives, so the compiler can check wiring before anything runs.

use crate::operators::{Combine, HardSampleRule};
use crate::record::RecordKind;
use crate::store::manifest::ManifestFormat;
use serde::Deserialize;
use std::path::PathBuf;

/// `op = "source"`: samples from an image folder or a manifest.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// `"image_folder"` (one sub-folder per class) or `"manifest"` (`.jsonl` or `.csv`).
    pub format: SourceFormat,
    /// The folder or manifest file.
    pub path: PathBuf,
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum SourceFormat {
    ImageFolder,
    Manifest,
}

/// `op = "classify"`: scores samples with an ONNX classifier.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassifyConfig {
    /// A name under `[models]`.
    pub model: String,
    /// Images per model call.
    #[serde(default = "default_batch")]
    pub batch_size: usize,
    /// The checkpoint number the scores carry (trainer feedback uses higher ones).
    #[serde(default)]
    pub checkpoint: u64,
}

fn default_batch() -> usize {
    64
}

/// `op = "feedback"`: trainer scores from `<path>/checkpoint-N.jsonl`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeedbackConfig {
    /// The folder the trainer writes checkpoint files into.
    pub path: PathBuf,
}

/// `op = "hard"`: hard-sample selection.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HardConfig {
    /// Rules, each a one-key table: `{ misclassified = true }`, `{ p_true_below = 0.5 }`,
    /// `{ top_k_loss = 100 }`, `{ top_fraction_loss = 0.1 }`, `{ tail_classes_below = 100 }`.
    pub rules: Vec<RuleConfig>,
    /// `"any"` (default) or `"all"`.
    #[serde(default)]
    pub combine: CombineConfig,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum RuleConfig {
    Misclassified(bool),
    PTrueBelow(f32),
    TopKLoss(usize),
    TopFractionLoss(f64),
    TailClassesBelow(usize),
}

#[derive(Clone, Copy, Debug, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CombineConfig {
    #[default]
    Any,
    All,
}

impl HardConfig {
    /// The rules as the operator takes them; errors say which rule is out of range.
    pub fn rules(&self) -> Result<(Vec<HardSampleRule>, Combine), String> {
        let rules = self
            .rules
            .iter()
            .filter_map(|rule| match *rule {
                RuleConfig::Misclassified(false) => None,
                RuleConfig::Misclassified(true) => Some(Ok(HardSampleRule::Misclassified)),
                RuleConfig::PTrueBelow(t) if (0.0..=1.0).contains(&t) => Some(Ok(HardSampleRule::PTrueBelow(t))),
                RuleConfig::PTrueBelow(t) => Some(Err(format!("p_true_below = {t} is not a probability in [0, 1]"))),
                RuleConfig::TopKLoss(k) => Some(Ok(HardSampleRule::TopKLoss(k))),
                RuleConfig::TopFractionLoss(f) if f > 0.0 && f <= 1.0 => Some(Ok(HardSampleRule::TopFractionLoss(f))),
                RuleConfig::TopFractionLoss(f) => Some(Err(format!("top_fraction_loss = {f} must be in (0, 1]"))),
                RuleConfig::TailClassesBelow(n) => Some(Ok(HardSampleRule::TailClassesBelow(n))),
            })
            .collect::<Result<Vec<_>, _>>()?;
        if rules.is_empty() {
            return Err("`rules` selects nothing: give at least one rule".into());
        }
        let combine = match self.combine {
            CombineConfig::Any => Combine::Any,
            CombineConfig::All => Combine::All,
        };
        Ok((rules, combine))
    }
}

/// `op = "sink"`: manifests under `<output>/<node name>/`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkConfig {
    /// Any of `"jsonl"`, `"parquet"`.
    #[serde(default = "default_formats")]
    pub formats: Vec<String>,
    /// Past versions kept beside the current one.
    #[serde(default = "default_keep")]
    pub keep_versions: usize,
}

fn default_formats() -> Vec<String> {
    vec!["jsonl".into()]
}
fn default_keep() -> usize {
    3
}

impl SinkConfig {
    pub fn formats(&self) -> Result<Vec<ManifestFormat>, String> {
        self.formats
            .iter()
            .map(|f| ManifestFormat::parse(f).ok_or_else(|| format!("unknown format `{f}` (expected \"jsonl\" or \"parquet\")")))
            .collect()
    }
}

/// A node's op with its checked config.
#[derive(Clone, Debug)]
pub enum OpConfig {
    Source(SourceConfig),
    Classify(ClassifyConfig),
    Feedback(FeedbackConfig),
    Hard(HardConfig),
    Sink(SinkConfig),
}

/// The ops a graph file may name.
pub const OPS: &[&str] = &["source", "classify", "feedback", "hard", "sink"];

impl OpConfig {
    /// Reads the op's config from the node's fields.
    pub fn parse(op: &str, fields: toml::Table) -> Result<OpConfig, String> {
        let value = toml::Value::Table(fields);
        let read = |e: toml::de::Error| e.message().to_string();
        Ok(match op {
            "source" => OpConfig::Source(value.try_into().map_err(read)?),
            "classify" => OpConfig::Classify(value.try_into().map_err(read)?),
            "feedback" => OpConfig::Feedback(value.try_into().map_err(read)?),
            "hard" => OpConfig::Hard(value.try_into().map_err(read)?),
            "sink" => OpConfig::Sink(value.try_into().map_err(read)?),
            other => return Err(format!("unknown op `{other}` (expected one of {})", OPS.join(", "))),
        })
    }

    /// The kind of record the node produces (`None` for sinks).
    pub fn output(&self) -> Option<RecordKind> {
        match self {
            OpConfig::Source(_) | OpConfig::Hard(_) => Some(RecordKind::Sample),
            OpConfig::Classify(_) | OpConfig::Feedback(_) => Some(RecordKind::Score),
            OpConfig::Sink(_) => None,
        }
    }

    /// Checks the kinds of the node's inputs, in order.
    pub fn check_inputs(&self, kinds: &[RecordKind]) -> Result<(), String> {
        use RecordKind::*;
        let want = |expected: &str| format!("takes {expected}, but its inputs give [{}]", list(kinds));
        match self {
            OpConfig::Source(_) if !kinds.is_empty() => Err("a source takes no inputs".into()),
            OpConfig::Classify(_) | OpConfig::Feedback(_) if kinds != [Sample] => Err(want("one input of Sample")),
            OpConfig::Hard(_) if kinds.len() < 2 || kinds[0] != Sample || kinds[1..].iter().any(|k| *k != Score) => {
                Err(want("[Sample, Score, ...] (the samples, then one or more score inputs)"))
            }
            OpConfig::Sink(_) if kinds.is_empty() => Err("a sink needs at least one input".into()),
            _ => Ok(()),
        }
    }

    /// Arity only, for the shape phase: (at least, at most).
    pub fn arity(&self) -> (usize, usize) {
        match self {
            OpConfig::Source(_) => (0, 0),
            OpConfig::Classify(_) | OpConfig::Feedback(_) => (1, 1),
            OpConfig::Hard(_) => (2, usize::MAX),
            OpConfig::Sink(_) => (1, usize::MAX),
        }
    }

    /// The `[models]` entry the node uses, if any.
    pub fn model(&self) -> Option<&str> {
        match self {
            OpConfig::Classify(c) => Some(&c.model),
            _ => None,
        }
    }
}

fn list(kinds: &[RecordKind]) -> String {
    kinds.iter().map(|k| k.to_string()).collect::<Vec<_>>().join(", ")
}
