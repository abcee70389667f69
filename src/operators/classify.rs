//! `classify`: runs an ONNX classifier over a collection of samples and emits one `Score` per
//! sample on its first output, and an error record on its second for an image that cannot be
//! read. Batches run on the inference service (see `model_map`); answers are memoized by
//! (model digest, sample, image digest, label), so a retraction, or a record seen again, never
//! calls the model; and kept across runs in the output folder's answer store, keyed by
//! (model digest, image digest, label), so a rerun classifies only images it has not seen.

use crate::operators::model_map::{model_map, ModelMap};
use crate::operators::stats::NodeStats;
use crate::record::{Digest, ErrorRecord, Sample, SampleId, Score, Value};
use crate::runtime::classifier::{ClassifyItem, ClassifyResult};
use crate::runtime::{Answered, Classifier, InferenceService, Keyed, Persisted};
use differential_dataflow::VecCollection;
use std::path::PathBuf;
use std::sync::Arc;

/// How a `classify` node runs.
#[derive(Clone)]
pub struct ClassifyParams {
    /// The graph node's name (for error records and logs).
    pub node: String,
    /// The model's service; its workers keep answers in the run's answer store.
    pub service: Arc<InferenceService<Persisted<Classifier>>>,
    /// The model's digest ([`Classifier::digest`]: weights and metadata), part of every memo key.
    pub model_digest: Digest,
    /// The model's classes, in output order.
    pub classes: Arc<Vec<String>>,
    /// The checkpoint number the scores carry.
    pub checkpoint: u64,
    /// Items per model call.
    pub batch_size: usize,
    pub stats: Arc<NodeStats>,
}

/// Adds `classify` to sample collections.
pub trait ClassifyExt<'scope> {
    /// Scores every sample with the classifier: the scores, and error records for the samples
    /// that could not be scored.
    fn classify(
        self,
        params: ClassifyParams,
    ) -> (
        VecCollection<'scope, u64, Score>,
        VecCollection<'scope, u64, ErrorRecord>,
    );
}

impl<'scope> ClassifyExt<'scope> for VecCollection<'scope, u64, Sample> {
    fn classify(
        self,
        params: ClassifyParams,
    ) -> (
        VecCollection<'scope, u64, Score>,
        VecCollection<'scope, u64, ErrorRecord>,
    ) {
        let name = format!("classify:{}", params.node);
        let (service, batch, stats) = (
            Arc::clone(&params.service),
            params.batch_size,
            Arc::clone(&params.stats),
        );
        model_map(self, &name, params, service, batch, stats)
    }
}

impl ModelMap for ClassifyParams {
    type In = Sample;
    type Out = Score;
    type Key = (Digest, SampleId, Digest, String);
    type Worker = Persisted<Classifier>;

    fn route(&self, sample: &Sample) -> u64 {
        sample.id
    }
    fn key(&self, sample: &Sample) -> Self::Key {
        (
            self.model_digest,
            sample.id,
            sample.digest,
            sample.label.clone(),
        )
    }
    fn request(&self, sample: &Sample) -> Result<Keyed<ClassifyItem>, Answered<ClassifyResult>> {
        match self.classes.iter().position(|c| *c == sample.label) {
            Some(label) => Ok(Keyed {
                key: Some(answer_key(self.model_digest, sample.digest, label)),
                item: ClassifyItem {
                    path: PathBuf::from(&sample.path),
                    label,
                },
            }),
            None => Err(Answered {
                answer: Err(format!(
                    "class `{}` is not one of the model's classes {:?}",
                    sample.label, self.classes
                )),
                computed: false,
            }),
        }
    }
    fn answer(
        &self,
        sample: &Sample,
        result: &Answered<ClassifyResult>,
    ) -> Result<Score, ErrorRecord> {
        match &result.answer {
            Ok(out) => Ok(Score {
                sample: sample.id,
                checkpoint: self.checkpoint,
                p_true: Value(out.p_true),
                loss: Value(out.loss),
                predicted: self.classes[out.predicted].clone(),
            }),
            Err(message) => Err(ErrorRecord {
                node: self.node.clone(),
                location: sample.path.clone(),
                message: message.clone(),
            }),
        }
    }
    fn was_computed(&self, answer: &Answered<ClassifyResult>) -> bool {
        answer.computed
    }
}

/// The content key of a score in the answer store: what decides it is the model (weights and
/// metadata), the image's bytes and the index of its true class.
pub fn answer_key(model: Digest, image: Digest, label: usize) -> Digest {
    let mut h = blake3::Hasher::new_derive_key("discl 2026-11 classify answer v1");
    h.update(&model.0);
    h.update(&image.0);
    h.update(&(label as u64).to_le_bytes());
    Digest(*h.finalize().as_bytes())
}
