//! What the generator is asked for: one image per [`ImageRequest`] (source, condition, level,
//! noise key), all made with the same [`GenerationSettings`].

use super::noise::NoiseKey;
use super::posterior::VaeLatent;
use crate::record::Digest;
use crate::runtime::scheduler::SchedulerKind;
use std::sync::Arc;

/// What an image is conditioned on.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Condition {
    /// A text prompt (models with a text encoder).
    Prompt(String),
    /// A class index (class-conditional UNets).
    Class(i64),
}

/// How images are made; part of every memo key (`vae_latent` only where it decides the
/// image: models whose VAE encoder gives a posterior).
#[derive(Clone, Debug, PartialEq)]
pub struct GenerationSettings {
    pub steps: usize,
    pub guidance_scale: f32,
    pub scheduler: SchedulerKind,
    /// Items (images) per UNet call; with guidance a call carries twice as many rows.
    pub batch_size: usize,
    /// How a source's latent is taken from the VAE posterior: sampled with the image's keyed
    /// posterior noise (diffusers' img2img) or its mean.
    pub vae_latent: VaeLatent,
}

/// One image to make.
#[derive(Clone, Debug)]
pub struct ImageRequest {
    /// The source image in the model's image space (CHW, values in [-1, 1]) and its digest;
    /// unused at level 0.
    pub source: Option<(Digest, Arc<Vec<f32>>)>,
    pub condition: Condition,
    /// Guidance level λ in per mille, 0 ≤ λ < 1000.
    pub level: u16,
    pub noise: NoiseKey,
}
