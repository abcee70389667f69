//! `generate`: for every hard sample, synthetic variants over the guidance spectrum — one
//! image per (level λ, seed index), each conditioned on a prompt (or class) chosen by keyed
//! hash; images that cannot be made become error records on the second output. Images are
//! made in batches on the inference service and memoized twice: in the operator (a retraction
//! never calls a model; answers of fully retracted samples are kept only for a while, see
//! `model_map`) and in the content-addressed image store (a rerun, a resumed run, or a sample
//! that comes back after leaving the operator's memo regenerates nothing already made). The content key hashes
//! everything that decides the image: model, source bytes, sample, λ, seed, prompt,
//! scheduler, steps, guidance scale, pipeline seed, for a model whose VAE gives a posterior,
//! whether it is sampled (`vae_latent`), and a rewrite of the UNet (`quantize = "int8"`).

use crate::operators::model_map::{model_map, ModelMap};
use crate::operators::stats::NodeStats;
use crate::record::{Digest, ErrorRecord, GenKey, Level, Sample, Synthetic};
use crate::runtime::diffusion::img2img::{to_png, Generator};
use crate::runtime::diffusion::{Condition, GenerationSettings, ImageRequest, NoiseKey, VaeLatent};
use crate::runtime::image_input::{decode_into, ImageSpec};
use crate::runtime::input_file::{read_regular, MAX_CHECKED_INPUT_BYTES};
use crate::runtime::service::{BatchWorker, ServiceStats};
use crate::runtime::InferenceService;
use crate::store::failpoint;
use crate::store::images::{ImageStore, StoredImage};
use differential_dataflow::VecCollection;
use std::collections::BTreeMap;
use std::sync::Arc;

/// The prompt template when a node gives none (METHOD §4's scorer prompt too).
pub const DEFAULT_PROMPT: &str = "a photo of a {class}";

/// How prompts are chosen for a class.
#[derive(Clone, Debug)]
pub enum Prompts {
    /// One template; `{class}` becomes the class's display name.
    Template(String),
    /// Descriptions per class name; one is chosen per image by keyed hash.
    PerClass(BTreeMap<String, Vec<String>>),
}

/// The classes a generator knows, in its class-label order, with display names.
#[derive(Clone, Debug)]
pub struct ClassNames {
    pub names: Vec<String>,
    pub display: Vec<String>,
}

/// How a `generate` node runs.
#[derive(Clone)]
pub struct GenerateParams {
    pub node: String,
    pub service: Arc<InferenceService<GenerateWorker>>,
    pub settings: GenerationSettings,
    pub levels: Vec<Level>,
    pub seeds: u32,
    pub prompts: Prompts,
    pub classes: ClassNames,
    /// Class-conditional model (conditioned on the class index, not on text).
    pub class_conditional: bool,
    pub pipeline_seed: u64,
    pub model_digest: Digest,
    /// The model's VAE encoder gives a posterior, so `settings.vae_latent` decides its images
    /// (pixel-space models and encoders giving a latent: it does not).
    pub vae_posterior: bool,
    /// The rewrite of the UNet the images are made with (`runtime::rewrite::UnetForm`), or
    /// `None` for the model as exported; part of the content key when set.
    pub unet_variant: Option<String>,
    /// Images per job sent to the service (several UNet batches).
    pub job_size: usize,
    pub stats: Arc<NodeStats>,
}

/// Adds `generate` to sample collections.
pub trait GenerateExt<'scope> {
    /// The synthetic images of every sample, and error records for the images that could not
    /// be made.
    fn generate(
        self,
        params: GenerateParams,
    ) -> (
        VecCollection<'scope, u64, Synthetic>,
        VecCollection<'scope, u64, ErrorRecord>,
    );
}

impl<'scope> GenerateExt<'scope> for VecCollection<'scope, u64, Sample> {
    fn generate(
        self,
        params: GenerateParams,
    ) -> (
        VecCollection<'scope, u64, Synthetic>,
        VecCollection<'scope, u64, ErrorRecord>,
    ) {
        let name = format!("generate:{}", params.node);
        let keys = params.clone();
        let wanted = self.flat_map(move |sample| {
            keys.gen_keys(&sample)
                .into_iter()
                .map(move |k| (sample.clone(), k))
        });
        let (service, job, stats) = (
            Arc::clone(&params.service),
            params.job_size,
            Arc::clone(&params.stats),
        );
        model_map(wanted, &name, params, service, job, stats)
    }
}

/// A keyed hash choice in `0..n`.
fn keyed_choice(parts: &[u64], n: usize) -> usize {
    let mut hasher = blake3::Hasher::new_derive_key("discl 2026-11 prompt choice v1");
    for p in parts {
        hasher.update(&p.to_le_bytes());
    }
    (u64::from_le_bytes(
        hasher.finalize().as_bytes()[..8]
            .try_into()
            .expect("8 bytes"),
    ) % n as u64) as usize
}

impl GenerateParams {
    /// The images to make for a sample: every level × seed, each with its prompt.
    pub fn gen_keys(&self, sample: &Sample) -> Vec<GenKey> {
        let display = self
            .classes
            .names
            .iter()
            .position(|c| *c == sample.label)
            .map_or(sample.label.as_str(), |i| self.classes.display[i].as_str());
        let mut keys = Vec::with_capacity(self.levels.len() * self.seeds as usize);
        for &level in &self.levels {
            for seed in 0..self.seeds {
                let prompt = if self.class_conditional {
                    display.to_string()
                } else {
                    match &self.prompts {
                        Prompts::Template(t) => t.replace("{class}", display),
                        Prompts::PerClass(map) => {
                            match map.get(&sample.label).filter(|l| !l.is_empty()) {
                                Some(list) => {
                                    let parts =
                                        [self.pipeline_seed, sample.id, level as u64, seed as u64];
                                    list[keyed_choice(&parts, list.len())].clone()
                                }
                                None => DEFAULT_PROMPT.replace("{class}", display),
                            }
                        }
                    }
                };
                keys.push(GenKey {
                    sample: sample.id,
                    level,
                    seed,
                    prompt,
                });
            }
        }
        keys
    }

    fn content_key(&self, sample: &Sample, key: &GenKey) -> Digest {
        let mut h = blake3::Hasher::new_derive_key("discl 2026-11 synthetic image v1");
        h.update(&self.model_digest.0);
        h.update(&sample.digest.0);
        h.update(&sample.id.to_le_bytes());
        h.update(&key.level.to_le_bytes());
        h.update(&key.seed.to_le_bytes());
        h.update(&(key.prompt.len() as u64).to_le_bytes());
        h.update(key.prompt.as_bytes());
        // Class-conditional models are conditioned on the class index, not the prompt text.
        let class = self
            .class_conditional
            .then(|| self.classes.names.iter().position(|c| *c == sample.label))
            .flatten();
        h.update(&class.map_or(u64::MAX, |i| i as u64).to_le_bytes());
        h.update(self.settings.scheduler.class_name().as_bytes());
        h.update(&(self.settings.steps as u64).to_le_bytes());
        h.update(&self.settings.guidance_scale.to_le_bytes());
        h.update(&self.pipeline_seed.to_le_bytes());
        // The posterior's mode, where it decides the image (a source is encoded: λ > 0). The
        // mean (discl's only mode before `vae_latent`) adds nothing, so the images made then
        // keep their keys.
        if self.vae_posterior && key.level > 0 && self.settings.vae_latent == VaeLatent::Sample {
            h.update(b"vae_latent = sample");
        }
        // A rewritten UNet (int8, fused attention) makes other images; the model as exported
        // adds nothing, so the images made before the options existed keep their keys.
        if let Some(variant) = &self.unet_variant {
            h.update(b"unet = ");
            h.update(variant.as_bytes());
        }
        Digest(*h.finalize().as_bytes())
    }
}

/// One image for the service to make (or find in the store).
pub struct GenerateItem {
    content_key: Digest,
    source: (Digest, String),
    request: ImageRequest,
}

/// What the service answers for an image: the stored file, and whether it was made now.
pub type GenerateAnswer = Result<(StoredImage, bool), String>;

impl ModelMap for GenerateParams {
    type In = (Sample, GenKey);
    type Out = Synthetic;
    type Key = Digest;
    type Worker = GenerateWorker;

    fn route(&self, (sample, key): &(Sample, GenKey)) -> u64 {
        // Spread the images of one sample over workers too.
        sample.id ^ ((key.level as u64) << 32) ^ key.seed as u64
    }
    fn key(&self, (sample, key): &(Sample, GenKey)) -> Digest {
        self.content_key(sample, key)
    }
    fn request(&self, (sample, key): &(Sample, GenKey)) -> Result<GenerateItem, GenerateAnswer> {
        let condition = if self.class_conditional {
            match self.classes.names.iter().position(|c| *c == sample.label) {
                Some(i) => Condition::Class(i as i64),
                None => {
                    return Err(Err(format!(
                        "class `{}` is not one of the generator's classes {:?}",
                        sample.label, self.classes.names
                    )))
                }
            }
        } else {
            Condition::Prompt(key.prompt.clone())
        };
        let noise = NoiseKey {
            pipeline_seed: self.pipeline_seed,
            sample: sample.id,
            level: key.level,
            seed_index: key.seed,
        };
        Ok(GenerateItem {
            content_key: self.content_key(sample, key),
            source: (sample.digest, sample.path.clone()),
            request: ImageRequest {
                source: None,
                condition,
                level: key.level,
                noise,
            },
        })
    }
    fn answer(
        &self,
        (sample, key): &(Sample, GenKey),
        answer: &GenerateAnswer,
    ) -> Result<Synthetic, ErrorRecord> {
        match answer {
            Ok((stored, _)) => Ok(Synthetic {
                key: key.clone(),
                label: sample.label.clone(),
                path: stored.file.clone(),
                digest: stored.digest,
                source: sample.path.clone(),
                text_score: None,
                image_score: None,
                retry: None,
            }),
            Err(message) => Err(ErrorRecord {
                node: self.node.clone(),
                location: sample.path.clone(),
                message: message.clone(),
            }),
        }
    }
    fn was_computed(&self, answer: &GenerateAnswer) -> bool {
        matches!(answer, Ok((_, true)))
    }
}

/// The service side: a generator, the settings of its node and the image store.
pub struct GenerateWorker {
    pub generator: Generator,
    pub settings: GenerationSettings,
    pub store: Arc<ImageStore>,
}

impl GenerateWorker {
    /// Makes one batch of images and stores them (files, then their index entries).
    fn make(
        &mut self,
        batch: &[(usize, Digest, ImageRequest)],
        stats: &ServiceStats,
    ) -> Vec<GenerateAnswer> {
        let requests: Vec<ImageRequest> = batch.iter().map(|(_, _, r)| r.clone()).collect();
        let images = match self.generator.generate(&requests, &self.settings, stats) {
            Ok(images) => images,
            Err(e) => return vec![Err(e.to_string()); batch.len()],
        };
        let shape = self.generator.model.image_shape;
        let stored = batch
            .iter()
            .zip(images)
            .map(|((_, key, _), image)| Ok((*key, to_png(&image, shape)?)))
            .collect::<Result<Vec<(Digest, Vec<u8>)>, String>>()
            .and_then(|pngs| self.store.put_many(&pngs).map_err(|e| e.to_string()));
        match stored {
            Ok(stored) => stored.into_iter().map(|s| Ok((s, true))).collect(),
            Err(e) => vec![Err(e); batch.len()],
        }
    }
}

impl BatchWorker for GenerateWorker {
    type Item = GenerateItem;
    type Output = GenerateAnswer;

    fn failed(message: &str) -> GenerateAnswer {
        Err(message.to_string())
    }

    fn run(&mut self, items: Vec<GenerateItem>, stats: &ServiceStats) -> Vec<GenerateAnswer> {
        let mut answers: Vec<Option<GenerateAnswer>> = (0..items.len()).map(|_| None).collect();
        let [channels, height, width] = self.generator.model.image_shape;
        let spec = ImageSpec {
            channels,
            height,
            width,
            mean: vec![0.5; channels],
            std: vec![0.5; channels],
        };
        let mut todo = Vec::new();
        let mut sources: BTreeMap<Digest, Result<Arc<Vec<f32>>, String>> = BTreeMap::new();
        for (i, item) in items.into_iter().enumerate() {
            match self.store.get(&item.content_key) {
                Ok(Some(stored)) => answers[i] = Some(Ok((stored, false))),
                Ok(None) | Err(_) => {
                    let (digest, path) = &item.source;
                    let loaded = sources.entry(*digest).or_insert_with(|| {
                        let mut pixels = Vec::with_capacity(spec.len());
                        read_regular(path.as_ref(), MAX_CHECKED_INPUT_BYTES)
                            .map_err(|e| format!("cannot read image: {e}"))
                            .and_then(|bytes| {
                                decode_into(&bytes, &spec, &mut pixels).map_err(|e| e.to_string())
                            })
                            .map(|()| Arc::new(pixels))
                    });
                    match loaded {
                        Ok(pixels) => {
                            let mut request = item.request;
                            request.source = Some((*digest, Arc::clone(pixels)));
                            todo.push((i, item.content_key, request));
                        }
                        Err(e) => answers[i] = Some(Err(e.clone())),
                    }
                }
            }
        }
        // One UNet batch at a time, each persisted before the next starts, so a kill loses at
        // most one batch of work. Same-level images share their timesteps, so sorting by level
        // keeps the batches full.
        todo.sort_by_key(|(_, _, request)| request.level);
        for chunk in todo.chunks(self.settings.batch_size.max(1)) {
            let made = self.make(chunk, stats);
            for ((i, _, _), answer) in chunk.iter().zip(made) {
                answers[*i] = Some(answer);
            }
            failpoint::reached("images-persisted");
        }
        answers
            .into_iter()
            .map(|a| a.expect("every item answered"))
            .collect()
    }
}
