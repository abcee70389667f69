//! `op = "classify"`: scores samples with an ONNX classifier on the model's inference service
//! (shared by every node that names the same model).

use super::{Dataflow, ModelPool, Node, NodeInfo, Op, OpError, Opened, StartContext, Stream};
use crate::operators::{ClassifyExt, ClassifyParams};
use crate::record::{Digest, RecordKind};
use crate::runtime::{Classifier, InferenceService, Persisted};
use serde::Deserialize;
use std::sync::Arc;

/// `op = "classify"`.
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

impl Op for ClassifyConfig {
    fn kind(&self) -> &'static str {
        "classify"
    }
    fn arity(&self) -> (usize, usize) {
        (1, 1)
    }
    fn check(&self, _graph: &super::GraphContext) -> Vec<OpError> {
        if self.batch_size == 0 {
            return vec![OpError::field("batch_size", "batch_size must be at least 1")];
        }
        Vec::new()
    }
    fn output(&self, inputs: &[RecordKind]) -> Result<Option<RecordKind>, OpError> {
        match inputs {
            [RecordKind::Sample] => Ok(Some(RecordKind::Score)),
            _ => Err(super::wrong_inputs("one input of Sample", inputs)),
        }
    }
    fn model(&self) -> Option<&str> {
        Some(&self.model)
    }
    fn dot_detail(&self) -> String {
        format!("model {}", self.model)
    }
    fn open(&self, _node: &NodeInfo, pool: &mut ModelPool) -> Result<Box<dyn Opened>, Vec<OpError>> {
        let classifier = pool.classifier(&self.model)?;
        Ok(Box::new(OpenedClassify {
            config: self.clone(),
            classes: Arc::new(classifier.meta().classes.clone()),
            model_digest: classifier.digest(),
        }))
    }
}

struct OpenedClassify {
    config: ClassifyConfig,
    classes: Arc<Vec<String>>,
    model_digest: Digest,
}

impl Opened for OpenedClassify {
    fn start(self: Box<Self>, run: &mut StartContext) -> Result<Arc<dyn Node>, String> {
        let service = run.classifier_service(&self.config.model)?;
        Ok(Arc::new(ClassifyNode {
            config: self.config,
            classes: self.classes,
            model_digest: self.model_digest,
            service,
        }))
    }
}

struct ClassifyNode {
    config: ClassifyConfig,
    classes: Arc<Vec<String>>,
    model_digest: Digest,
    service: Arc<InferenceService<Persisted<Classifier>>>,
}

impl Node for ClassifyNode {
    fn build<'scope>(
        &self,
        dataflow: &mut Dataflow<'scope>,
        node: &NodeInfo,
        inputs: &[Stream<'scope>],
    ) -> Stream<'scope> {
        let params = ClassifyParams {
            node: node.name.clone(),
            service: Arc::clone(&self.service),
            classes: Arc::clone(&self.classes),
            model_digest: self.model_digest,
            checkpoint: self.config.checkpoint,
            batch_size: self.config.batch_size,
            stats: dataflow.stats_of(&node.name),
        };
        let (good, failed) = inputs[0].samples().classify(params);
        dataflow.errors.push(failed);
        Stream::Scores(good)
    }
    fn model_seconds(&self) -> f64 {
        self.service.stats().snapshot().3
    }
}
