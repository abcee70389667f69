//! `quality` retries (METHOD §4): an image below the threshold is made again — by the generate
//! node that made it, on its inference service — from the same sample, level and prompt with
//! the next derived seed, and scored again, up to `retries` times; the first attempt at or
//! above the threshold is kept. When none reaches it, the best-scoring attempt (ties to the
//! earlier one) is the rejected image and the others stay in the image store only.
//!
//! A derived seed is a keyed hash of (sample, level, first seed, attempt) with the top bit set,
//! so it never equals a seed index: every attempt is the same image whatever the run, batch or
//! worker, memoized in the image store and the answer store like any other image and score.
//! Each record says which attempt it is and the seed its chain started from.

use super::{QualityOutputs, QualityParams};
use crate::operators::generate::{GenerateAnswer, GenerateItem};
use crate::operators::model_map::{model_map, ModelMap};
use crate::operators::{GenerateParams, GenerateWorker, NodeStats};
use crate::record::{Digest, ErrorRecord, GenKey, Retry, Sample, Synthetic, Value};
use differential_dataflow::collection::concatenate;
use differential_dataflow::VecCollection;
use std::cmp::Reverse;
use std::sync::Arc;

/// What a quality node needs to retry: how many times, and the generate node that feeds it.
pub struct Retries<'scope> {
    /// Regenerations per rejected image (1..=16).
    pub retries: u32,
    /// The generate node's input samples (a regeneration is guided by the same real image).
    pub samples: VecCollection<'scope, u64, Sample>,
    /// The generate node's settings and inference service.
    pub generator: GenerateParams,
    /// Counters of the regenerations (images made or found, UNet calls).
    pub stats: Arc<NodeStats>,
}

/// The seed of retry `attempt` (≥ 1) of the image first made with seed index `first_seed`.
pub fn derived_seed(key: &GenKey, first_seed: u32, attempt: u32) -> u32 {
    let mut h = blake3::Hasher::new_derive_key("discl 2026-11 quality retry seed v1");
    h.update(&key.sample.to_le_bytes());
    h.update(&key.level.to_le_bytes());
    h.update(&first_seed.to_le_bytes());
    h.update(&attempt.to_le_bytes());
    let bytes: [u8; 4] = h.finalize().as_bytes()[..4].try_into().expect("4 bytes");
    u32::from_le_bytes(bytes) | 0x8000_0000
}

/// Retries the scored images below the threshold; gives (kept, rejected, errors).
pub fn retry<'scope>(
    scored: VecCollection<'scope, u64, Synthetic>,
    scoring: &QualityParams,
    retries: Retries<'scope>,
) -> QualityOutputs<'scope> {
    let threshold = scoring.threshold;
    let passes = move |s: &Synthetic| s.text_score.is_some_and(|v| v.0 >= threshold);
    let scope = scored.scope();
    let first = scored.map(|image| {
        let retry = Retry {
            attempt: 0,
            first_seed: image.key.seed,
        };
        Synthetic {
            retry: Some(retry),
            ..image
        }
    });
    let samples = retries
        .samples
        .map(|s| (s.id, s))
        .arrange_by_key_named("QualityRetrySamples");
    let (mut attempts, mut errors) = (vec![first.clone()], Vec::new());
    let mut failing = first.filter(move |s| !passes(s));
    for attempt in 1..=retries.retries {
        let wanted = failing.map(|image| (image.key.sample, image)).join_core(
            samples.clone(),
            move |_, image, sample| {
                let first_seed = image.retry.map_or(image.key.seed, |r| r.first_seed);
                let key = GenKey {
                    seed: derived_seed(&image.key, first_seed, attempt),
                    ..image.key.clone()
                };
                Some((
                    (sample.clone(), key),
                    Retry {
                        attempt,
                        first_seed,
                    },
                ))
            },
        );
        let generator = &retries.generator;
        let (made, unmade) = model_map(
            wanted,
            &format!("regenerate:{}:{attempt}", scoring.node),
            Regenerate(generator.clone()),
            Arc::clone(&generator.service),
            generator.job_size,
            Arc::clone(&retries.stats),
        );
        let (rescored, unscored) = model_map(
            made,
            &format!("quality:{}:{attempt}", scoring.node),
            scoring.clone(),
            Arc::clone(&scoring.service),
            scoring.batch_size,
            Arc::clone(&scoring.stats),
        );
        errors.extend([unmade, unscored]);
        failing = rescored.clone().filter(move |s| !passes(s));
        attempts.push(rescored);
    }
    let all = concatenate(scope, attempts);
    let kept = all.clone().filter(passes);
    let rejected = all
        .map(|image| {
            let first_seed = image.retry.map_or(image.key.seed, |r| r.first_seed);
            let chain = GenKey {
                seed: first_seed,
                ..image.key.clone()
            };
            (chain, image)
        })
        .reduce_named("QualityBestAttempt", move |_, input, output| {
            if input.iter().any(|(image, _)| passes(image)) {
                return;
            }
            let rank = |image: &Synthetic| {
                let attempt = image.retry.map_or(0, |r| r.attempt);
                (
                    image.text_score.unwrap_or(Value(f32::NEG_INFINITY)),
                    Reverse(attempt),
                )
            };
            if let Some((best, count)) = input.iter().max_by_key(|(image, _)| rank(image)) {
                output.push(((*best).clone(), *count));
            }
        })
        .map(|(_, image)| image);
    (kept, rejected, concatenate(scope, errors))
}

/// The generate node's images, made for a retry: the record says which attempt it is.
struct Regenerate(GenerateParams);

impl ModelMap for Regenerate {
    type In = ((Sample, GenKey), Retry);
    type Out = Synthetic;
    type Key = Digest;
    type Worker = GenerateWorker;

    fn route(&self, (wanted, _): &Self::In) -> u64 {
        self.0.route(wanted)
    }
    fn key(&self, (wanted, _): &Self::In) -> Digest {
        self.0.key(wanted)
    }
    fn request(&self, (wanted, _): &Self::In) -> Result<GenerateItem, GenerateAnswer> {
        self.0.request(wanted)
    }
    fn answer(
        &self,
        (wanted, retry): &Self::In,
        answer: &GenerateAnswer,
    ) -> Result<Synthetic, ErrorRecord> {
        let image = self.0.answer(wanted, answer)?;
        Ok(Synthetic {
            retry: Some(*retry),
            ..image
        })
    }
    fn was_computed(&self, answer: &GenerateAnswer) -> bool {
        self.0.was_computed(answer)
    }
    fn retracted_capacity(&self) -> usize {
        self.0.retracted_capacity()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_seeds_are_keyed_distinct_and_never_seed_indices() {
        let key = GenKey {
            sample: 11,
            level: 500,
            seed: 0,
            prompt: "a coat".into(),
        };
        let seeds: Vec<u32> = (1..=16).map(|a| derived_seed(&key, 0, a)).collect();
        assert_eq!(
            seeds,
            (1..=16)
                .map(|a| derived_seed(&key, 0, a))
                .collect::<Vec<_>>()
        );
        assert!(seeds.iter().all(|s| *s >= 1 << 31));
        let mut distinct = seeds.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert_eq!(distinct.len(), seeds.len());
        assert_ne!(
            derived_seed(&key, 1, 1),
            seeds[0],
            "keyed by the first seed"
        );
        let other = GenKey {
            sample: 12,
            ..key.clone()
        };
        assert_ne!(derived_seed(&other, 0, 1), seeds[0], "keyed by the sample");
    }
}
