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
                RuleConfig::PTrueBelow(t) if (0.0..=1.0).contains(&t) => {
                    Some(Ok(HardSampleRule::PTrueBelow(t)))
                }
                RuleConfig::PTrueBelow(t) => Some(Err(format!(
                    "p_true_below = {t} is not a probability in [0, 1]"
                ))),
                RuleConfig::TopKLoss(k) => Some(Ok(HardSampleRule::TopKLoss(k))),
                RuleConfig::TopFractionLoss(f) if f > 0.0 && f <= 1.0 => {
                    Some(Ok(HardSampleRule::TopFractionLoss(f)))
                }
                RuleConfig::TopFractionLoss(f) => {
                    Some(Err(format!("top_fraction_loss = {f} must be in (0, 1]")))
                }
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

/// `op = "generate"`: synthetic variants of each sample over the guidance spectrum.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenerateConfig {
    /// A diffusion model folder under `[models]`.
    pub model: String,
    /// Guidance levels λ in [0, 1), in per-mille steps (0 = text only, towards 1 = the real image).
    pub levels: Vec<f64>,
    /// Images per (sample, level).
    #[serde(default = "one_seed")]
    pub seeds: u32,
    /// Inference steps T; a level λ runs the last ⌊T·(1−λ)⌋ of them.
    #[serde(default = "default_steps")]
    pub steps: usize,
    /// Classifier-free guidance scale w (1 = no guidance).
    #[serde(default = "default_guidance")]
    pub guidance_scale: f32,
    /// `pndm`, `ddim`, `euler` or `dpm++`, read from the model's own scheduler config;
    /// the model's own scheduler when absent.
    #[serde(default)]
    pub scheduler: Option<String>,
    /// Images per UNet call (each call carries the guided and unguided halves).
    #[serde(default = "default_gen_batch")]
    pub batch_size: usize,
    /// Prompt template; `{class}` becomes the class's display name.
    #[serde(default)]
    pub prompt: Option<String>,
    /// Descriptions per class name, one chosen per image by keyed hash.
    #[serde(default)]
    pub prompts: Option<std::collections::BTreeMap<String, Vec<String>>>,
    /// A `[models]` entry whose `discl.toml` names the classes (and display names), in
    /// class-label order; class-conditional generators need this or `classes`.
    #[serde(default)]
    pub classes_from: Option<String>,
    /// Class names in class-label order.
    #[serde(default)]
    pub classes: Option<Vec<String>>,
}

fn one_seed() -> u32 {
    1
}
fn default_steps() -> usize {
    50
}
fn default_guidance() -> f32 {
    3.0
}
fn default_gen_batch() -> usize {
    8
}

impl GenerateConfig {
    /// The levels in per mille, checked: each in [0, 1), on the per-mille grid, and leaving at
    /// least one denoising step.
    pub fn levels(&self) -> Result<Vec<crate::record::Level>, String> {
        if self.levels.is_empty() {
            return Err("`levels` is empty".into());
        }
        let mut out = Vec::new();
        for &level in &self.levels {
            if !(0.0..1.0).contains(&level) {
                return Err(format!("level λ = {level} is outside [0, 1)"));
            }
            let per_mille = (level * 1000.0).round();
            if (per_mille / 1000.0 - level).abs() > 1e-9 {
                return Err(format!("level λ = {level} is not a multiple of 0.001"));
            }
            let per_mille = per_mille as crate::record::Level;
            if self.steps * (1000 - per_mille as usize) / 1000 == 0 {
                return Err(format!(
                    "level λ = {level} leaves no denoising step out of {} steps",
                    self.steps
                ));
            }
            if !out.contains(&per_mille) {
                out.push(per_mille);
            }
        }
        out.sort_unstable();
        Ok(out)
    }

    /// The scheduler asked for, if any.
    pub fn scheduler_kind(
        &self,
    ) -> Result<Option<crate::runtime::scheduler::SchedulerKind>, String> {
        self.scheduler
            .as_deref()
            .map(|s| s.parse().map_err(|e| format!("{e}")))
            .transpose()
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
            .map(|f| {
                ManifestFormat::parse(f).ok_or_else(|| {
                    format!("unknown format `{f}` (expected \"jsonl\" or \"parquet\")")
                })
            })
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
    Generate(GenerateConfig),
    Sink(SinkConfig),
}

/// The ops a graph file may name.
pub const OPS: &[&str] = &["source", "classify", "feedback", "hard", "generate", "sink"];

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
            "generate" => OpConfig::Generate(value.try_into().map_err(read)?),
            "sink" => OpConfig::Sink(value.try_into().map_err(read)?),
            other => {
                return Err(format!(
                    "unknown op `{other}` (expected one of {})",
                    OPS.join(", ")
                ))
            }
        })
    }

    /// The kind of record the node produces (`None` for sinks).
    pub fn output(&self) -> Option<RecordKind> {
        match self {
            OpConfig::Source(_) | OpConfig::Hard(_) => Some(RecordKind::Sample),
            OpConfig::Classify(_) | OpConfig::Feedback(_) => Some(RecordKind::Score),
            OpConfig::Generate(_) => Some(RecordKind::Synthetic),
            OpConfig::Sink(_) => None,
        }
    }

    /// Checks the kinds of the node's inputs, in order.
    pub fn check_inputs(&self, kinds: &[RecordKind]) -> Result<(), String> {
        use RecordKind::*;
        let want =
            |expected: &str| format!("takes {expected}, but its inputs give [{}]", list(kinds));
        match self {
            OpConfig::Source(_) if !kinds.is_empty() => Err("a source takes no inputs".into()),
            OpConfig::Classify(_) | OpConfig::Feedback(_) | OpConfig::Generate(_)
                if kinds != [Sample] =>
            {
                Err(want("one input of Sample"))
            }
            OpConfig::Hard(_)
                if kinds.len() < 2
                    || kinds[0] != Sample
                    || kinds[1..].iter().any(|k| *k != Score) =>
            {
                Err(want(
                    "[Sample, Score, ...] (the samples, then one or more score inputs)",
                ))
            }
            OpConfig::Sink(_) if kinds.is_empty() => Err("a sink needs at least one input".into()),
            _ => Ok(()),
        }
    }

    /// Arity only, for the shape phase: (at least, at most).
    pub fn arity(&self) -> (usize, usize) {
        match self {
            OpConfig::Source(_) => (0, 0),
            OpConfig::Classify(_) | OpConfig::Feedback(_) | OpConfig::Generate(_) => (1, 1),
            OpConfig::Hard(_) => (2, usize::MAX),
            OpConfig::Sink(_) => (1, usize::MAX),
        }
    }

    /// The `[models]` entry the node uses, if any.
    pub fn model(&self) -> Option<&str> {
        match self {
            OpConfig::Classify(c) => Some(&c.model),
            OpConfig::Generate(g) => Some(&g.model),
            _ => None,
        }
    }
}

fn list(kinds: &[RecordKind]) -> String {
    kinds
        .iter()
        .map(|k| k.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}
