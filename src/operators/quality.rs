//! `quality`: scores every synthetic image with an image–text scorer (a CLIP export or the
//! judge) — the raw cosine to its class prompt (`text_score`) and to the real image it was
//! guided by (`image_score`) — on the inference service, memoized per (image, source, prompt),
//! and kept across runs in the answer store by (scorer digest, image digest, text, the source
//! image's content digest), so a rerun scores only images it has not seen.
//! Images at or above the threshold are kept; the rest are rejected, and both stay visible.
//! With retries, a rejected image is made again with derived seeds first (see [`retry`]).

mod retry;

pub use retry::{derived_seed, Retries};

use crate::operators::model_map::{model_map, ModelMap};
use crate::operators::stats::NodeStats;
use crate::record::{Digest, ErrorRecord, Synthetic, Value};
use crate::runtime::scorer::{ScoreItem, ScoreResult, SourceImage};
use crate::runtime::{Answered, InferenceService, Keyed, Persisted, Scorer, TextQuery};
use differential_dataflow::VecCollection;
use std::path::PathBuf;
use std::sync::Arc;

/// The text a class is scored against (`None`: the scorer cannot score that class).
pub type ClassQuery = Arc<dyn Fn(&str) -> Option<TextQuery> + Send + Sync>;

/// How a `quality` node runs.
#[derive(Clone)]
pub struct QualityParams {
    pub node: String,
    pub service: Arc<InferenceService<Persisted<Scorer>>>,
    /// The scorer folder's digest (part of every memo key).
    pub scorer_digest: Digest,
    /// The text each class is scored against: a prompt, or the judge's class.
    pub queries: ClassQuery,
    /// Synthetic image paths are relative to this folder (the run's output).
    pub root: PathBuf,
    pub threshold: f32,
    pub batch_size: usize,
    pub stats: Arc<NodeStats>,
}

/// Scored synthetic images: (kept, rejected, errors).
pub type QualityOutputs<'scope> = (
    VecCollection<'scope, u64, Synthetic>,
    VecCollection<'scope, u64, Synthetic>,
    VecCollection<'scope, u64, ErrorRecord>,
);

/// Scores synthetic images and splits them by the threshold, retrying the images below it
/// when `retries` says how.
pub fn quality<'scope>(
    synthetic: VecCollection<'scope, u64, Synthetic>,
    params: QualityParams,
    retries: Option<Retries<'scope>>,
) -> QualityOutputs<'scope> {
    let name = format!("quality:{}", params.node);
    let (service, batch, stats, threshold) = (
        Arc::clone(&params.service),
        params.batch_size,
        Arc::clone(&params.stats),
        params.threshold,
    );
    let scoring = params.clone();
    let (scored, errors) = model_map(synthetic, &name, params, service, batch, stats);
    if let Some(retries) = retries {
        let (kept, rejected, more_errors) = retry::retry(scored, &scoring, retries);
        return (kept, rejected, errors.concat(more_errors));
    }
    let passes = move |s: &Synthetic| s.text_score.is_some_and(|v| v.0 >= threshold);
    let kept = scored.clone().filter(passes);
    let rejected = scored.filter(move |s| !passes(s));
    (kept, rejected, errors)
}

impl ModelMap for QualityParams {
    type In = Synthetic;
    type Out = Synthetic;
    type Key = (Digest, Digest, String, Option<TextQuery>);
    type Worker = Persisted<Scorer>;

    fn route(&self, image: &Synthetic) -> u64 {
        image.key.sample
    }
    fn key(&self, image: &Synthetic) -> Self::Key {
        let query = (self.queries)(&image.label);
        (
            self.scorer_digest,
            image.digest,
            image.source.clone(),
            query,
        )
    }
    fn request(&self, image: &Synthetic) -> Result<Keyed<ScoreItem>, Answered<ScoreResult>> {
        let Some(text) = (self.queries)(&image.label) else {
            return Err(Answered {
                answer: Err(format!(
                    "class `{}` has no prompt or class embedding in the scorer",
                    image.label
                )),
                computed: false,
            });
        };
        Ok(Keyed {
            key: Some(answer_key(self.scorer_digest, image.digest, &text)),
            item: ScoreItem {
                image: self.root.join(&image.path),
                text,
                source: Some(SourceImage {
                    path: PathBuf::from(&image.source),
                    digest: None,
                }),
            },
        })
    }
    fn answer(
        &self,
        image: &Synthetic,
        result: &Answered<ScoreResult>,
    ) -> Result<Synthetic, ErrorRecord> {
        match &result.answer {
            Ok(score) => Ok(Synthetic {
                text_score: Some(Value(score.text_score)),
                image_score: score.image_score.map(Value),
                ..image.clone()
            }),
            Err(message) => Err(ErrorRecord {
                node: self.node.clone(),
                location: image.path.clone(),
                message: message.clone(),
            }),
        }
    }
    fn was_computed(&self, answer: &Answered<ScoreResult>) -> bool {
        answer.computed
    }
}

/// The operator's part of a quality answer's content key: the scorer, the synthetic image's
/// bytes and the text; the scorer's worker adds the source image's digest.
pub fn answer_key(scorer: Digest, image: Digest, text: &TextQuery) -> Digest {
    let mut h = blake3::Hasher::new_derive_key("discl 2026-11 quality answer v1");
    h.update(&scorer.0);
    h.update(&image.0);
    match text {
        TextQuery::Class(i) => {
            h.update(&[0]);
            h.update(&(*i as u64).to_le_bytes());
        }
        TextQuery::Prompt(prompt) => {
            h.update(&[1]);
            h.update(&(prompt.len() as u64).to_le_bytes());
            h.update(prompt.as_bytes());
        }
    }
    Digest(*h.finalize().as_bytes())
}
