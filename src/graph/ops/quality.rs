//! `op = "quality"`: the image–text quality filter (METHOD §4). Scores every synthetic image
//! with a scorer model — a CLIP export as optimum writes it, or the judge — keeps those at or
//! above `threshold`, and offers the rest as the output `<node>.rejected`; with `retries`, an
//! image below the threshold is first made again with derived seeds by the generate node
//! that feeds this one.

use super::{Dataflow, GraphContext, ModelPool, Node, NodeInfo, Op, OpError, Opened, StartContext, Stream};
use crate::operators::generate::DEFAULT_PROMPT;
use crate::operators::quality::{quality, ClassQuery, QualityParams, Retries};
use crate::operators::{GenerateParams, NodeStats};
use crate::record::{Digest, RecordKind};
use crate::runtime::scorer::ScorerKind;
use crate::runtime::{InferenceService, ModelMeta, Persisted, Scorer, TextQuery};
use serde::Deserialize;
use std::collections::HashMap;
use std::sync::Arc;

/// `op = "quality"`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QualityConfig {
    /// A scorer folder under `[models]`: a CLIP export or a judge.
    pub model: String,
    /// Keep images whose raw image–text cosine is at least this (METHOD: 0.25–0.30 for CLIP).
    pub threshold: f32,
    /// The prompt a CLIP scorer compares with; `{class}` becomes the class's display name.
    #[serde(default)]
    pub prompt: Option<String>,
    /// A `[models]` entry whose `discl.toml` gives display names for the prompt.
    #[serde(default)]
    pub classes_from: Option<String>,
    /// Images per model call.
    #[serde(default = "default_batch")]
    pub batch_size: usize,
    /// Regenerations of an image below the threshold (0..=16), each with the next derived
    /// seed, by the generate node that feeds this one; the first to pass is kept, else the
    /// best goes to `rejected`.
    #[serde(default)]
    pub retries: u32,
}

/// The most retries a node may ask for.
pub const MAX_RETRIES: u32 = 16;

fn default_batch() -> usize {
    32
}

impl Op for QualityConfig {
    fn kind(&self) -> &'static str {
        "quality"
    }
    fn arity(&self) -> (usize, usize) {
        (1, 1)
    }
    fn check(&self, graph: &GraphContext) -> Vec<OpError> {
        let mut errors = Vec::new();
        if !(-1.0..=1.0).contains(&self.threshold) {
            let message = format!("threshold = {} is not a cosine in [-1, 1]", self.threshold);
            errors.push(OpError::field("threshold", message));
        }
        if self.batch_size == 0 {
            errors.push(OpError::field("batch_size", "batch_size must be at least 1"));
        }
        if self.retries > MAX_RETRIES {
            let message = format!("retries = {} is more than {MAX_RETRIES}", self.retries);
            errors.push(OpError::field("retries", message));
        }
        if self.retries > 0 && graph.input_ops.first() != Some(&Some("generate")) {
            let message = "retries regenerate images: the input must be a generate node";
            errors.push(OpError::field("retries", message));
        }
        if let Some(from) = &self.classes_from {
            if !graph.models.contains(&from.as_str()) {
                let message = format!("classes_from names unknown model `{from}`");
                errors.push(OpError::field("classes_from", message));
            }
        }
        errors
    }
    fn output(&self, inputs: &[RecordKind]) -> Result<Option<RecordKind>, OpError> {
        match inputs {
            [RecordKind::Synthetic] => Ok(Some(RecordKind::Synthetic)),
            _ => Err(super::wrong_inputs("one input of Synthetic", inputs)),
        }
    }
    fn port(&self, port: &str, _inputs: &[RecordKind]) -> Option<RecordKind> {
        (port == "rejected").then_some(RecordKind::Synthetic)
    }
    fn model(&self) -> Option<&str> {
        Some(&self.model)
    }
    fn provenance(&self) -> Option<serde_json::Value> {
        let mut settings = serde_json::json!({ "threshold": self.threshold });
        if self.retries > 0 {
            settings["retries"] = self.retries.into();
        }
        Some(settings)
    }
    fn dot_detail(&self) -> String {
        format!("model {}, threshold {}", self.model, self.threshold)
    }
    fn open(&self, _node: &NodeInfo, pool: &mut ModelPool) -> Result<Box<dyn Opened>, Vec<OpError>> {
        let spec = pool.spec(&self.model);
        let in_model = |e: String| vec![OpError::model(&self.model, format!("{e} {}", pool.used_by(&self.model)))];
        // One scorer per runner; on the CPU they share the first one's session.
        let options = pool.session_options(&self.model);
        let first = Scorer::open(&spec.path, &options).map_err(|e| in_model(e.to_string()))?;
        let mut scorers = vec![first];
        for _ in 1..pool.sessions(&self.model) {
            let another = scorers[0].another(&options).map_err(|e| in_model(e.to_string()))?;
            scorers.push(another);
        }
        let display = match &self.classes_from {
            Some(from) => {
                let (meta, _) = ModelMeta::load(&pool.spec(from).path)
                    .map_err(|e| vec![OpError::field("classes_from", format!("classes_from: {e}"))])?;
                let display = meta.display_names.clone().unwrap_or_else(|| meta.classes.clone());
                meta.classes.into_iter().zip(display).collect()
            }
            None => HashMap::new(),
        };
        let queries = self.queries(&scorers[0], display)?;
        Ok(Box::new(OpenedQuality {
            config: self.clone(),
            digest: scorers[0].digest(),
            scorers,
            queries,
        }))
    }
}

impl QualityConfig {
    /// What each class is scored against: a judge's own class, or the prompt for CLIP.
    fn queries(
        &self,
        scorer: &Scorer,
        display: HashMap<String, String>,
    ) -> Result<ClassQuery, Vec<OpError>> {
        match scorer.kind() {
            ScorerKind::Judge => {
                if self.prompt.is_some() {
                    let message = "a judge scores its own classes: `prompt` needs a CLIP scorer";
                    return Err(vec![OpError::field("prompt", message)]);
                }
                let classes: Vec<String> = scorer.classes().unwrap_or_default().to_vec();
                Ok(Arc::new(move |label: &str| {
                    classes.iter().position(|c| c == label).map(TextQuery::Class)
                }))
            }
            ScorerKind::Clip => {
                let template = self.prompt.clone().unwrap_or_else(|| DEFAULT_PROMPT.into());
                Ok(Arc::new(move |label: &str| {
                    let name = display.get(label).map_or(label, String::as_str);
                    Some(TextQuery::Prompt(template.replace("{class}", name)))
                }))
            }
        }
    }
}

struct OpenedQuality {
    config: QualityConfig,
    scorers: Vec<Scorer>,
    digest: Digest,
    queries: ClassQuery,
}

impl Opened for OpenedQuality {
    fn start(self: Box<Self>, run: &mut StartContext) -> Result<Arc<dyn Node>, String> {
        let answers = run.answer_store();
        let workers = self
            .scorers
            .into_iter()
            .map(|scorer| Persisted::new(scorer, Arc::clone(&answers)))
            .collect();
        let service = Arc::new(InferenceService::start(&self.config.model, workers));
        Ok(Arc::new(QualityNode {
            config: self.config,
            service,
            digest: self.digest,
            queries: self.queries,
            retry_stats: Arc::default(),
        }))
    }
}

struct QualityNode {
    config: QualityConfig,
    service: Arc<InferenceService<Persisted<Scorer>>>,
    digest: Digest,
    queries: ClassQuery,
    /// The regenerations' counters, shared by every worker.
    retry_stats: Arc<NodeStats>,
}

impl Node for QualityNode {
    fn build<'scope>(
        &self,
        dataflow: &mut Dataflow<'scope>,
        node: &NodeInfo,
        inputs: &[Stream<'scope>],
    ) -> Stream<'scope> {
        let params = QualityParams {
            node: node.name.clone(),
            service: Arc::clone(&self.service),
            scorer_digest: self.digest,
            queries: Arc::clone(&self.queries),
            root: dataflow.run.output.clone(),
            threshold: self.config.threshold,
            batch_size: self.config.batch_size,
            stats: dataflow.stats_of(&node.name),
        };
        let retries = (self.config.retries > 0).then(|| {
            // The compiler checked that the input is a generate node, built before this one.
            let generator = &dataflow.generators[node.inputs[0].as_str()];
            Retries {
                retries: self.config.retries,
                samples: generator.samples.clone(),
                generator: GenerateParams {
                    node: node.name.clone(),
                    ..generator.params.clone()
                },
                stats: Arc::clone(&self.retry_stats),
            }
        });
        let (kept, rejected, errors) = quality(inputs[0].synthetics(), params, retries);
        dataflow.errors.push(errors);
        dataflow.add_port(&node.name, "rejected", Stream::Synthetics(rejected));
        Stream::Synthetics(kept)
    }
    fn model_seconds(&self) -> f64 {
        self.service.stats().snapshot().3
    }
    fn retries(&self) -> Option<&Arc<NodeStats>> {
        (self.config.retries > 0).then_some(&self.retry_stats)
    }
}
