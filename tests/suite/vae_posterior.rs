//! The VAE posterior on the shipped models: tiny-sd samples it with each image's keyed
//! posterior noise (the same bits whatever the batch or the other images asked for, and the
//! very noise `ImageNoise::keyed` gives), `vae_latent = "mean"` takes its mean, and a
//! pixel-space model's images do not depend on the mode.

use discl::record::Digest;
use discl::runtime::diffusion::img2img::Generator;
use discl::runtime::diffusion::noise::gaussian;
use discl::runtime::diffusion::{
    Condition, DiffusionModel, GenerationSettings, ImageNoise, ImageRequest, NoiseKey, VaeLatent,
};
use discl::runtime::onnx::SessionOptions;
use discl::runtime::scheduler::SchedulerKind;
use discl::runtime::ServiceStats;
use std::path::Path;
use std::sync::Arc;

const REPO: &str = env!("CARGO_MANIFEST_DIR");

fn generator(model: &str) -> Generator {
    let folder = Path::new(REPO).join("models").join(model);
    Generator::new(DiffusionModel::open(&folder, &SessionOptions::default()).unwrap())
}

fn settings(vae_latent: VaeLatent, batch_size: usize) -> GenerationSettings {
    GenerationSettings {
        steps: 8,
        guidance_scale: 2.0,
        scheduler: SchedulerKind::EulerDiscrete,
        batch_size,
        vae_latent,
    }
}

/// Two sources × λ ∈ {0, 0.4, 0.7} × two seeds, in the model's image space.
fn requests(generator: &Generator, condition: Condition) -> Vec<ImageRequest> {
    let len = generator.model.image_len();
    let mut out = Vec::new();
    for source in 0..2u64 {
        let pixels: Vec<f32> = (0..len)
            .map(|i| ((i as u64 * 37 + source * 11) % 101) as f32 / 50.0 - 1.0)
            .collect();
        let pixels = Arc::new(pixels);
        for level in [0u16, 400, 700] {
            for seed_index in 0..2 {
                out.push(ImageRequest {
                    source: Some((Digest::of(&source.to_le_bytes()), Arc::clone(&pixels))),
                    condition: condition.clone(),
                    level,
                    noise: NoiseKey {
                        pipeline_seed: 5,
                        sample: source,
                        level,
                        seed_index,
                    },
                });
            }
        }
    }
    out
}

fn make(model: &str, requests: &[ImageRequest], settings: &GenerationSettings) -> Vec<Vec<f32>> {
    generator(model)
        .generate(requests, settings, &ServiceStats::default())
        .unwrap()
}

fn max_difference(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn the_posterior_is_sampled_with_keyed_noise_per_image() {
    let mut tiny_sd = generator("tiny-sd");
    let requests = requests(&tiny_sd, Condition::Prompt("a photo of a coat".into()));
    let sampled = make("tiny-sd", &requests, &settings(VaeLatent::Sample, 1));
    // The same bits whatever the batch size, and for an image asked for alone.
    assert_eq!(
        sampled,
        make("tiny-sd", &requests, &settings(VaeLatent::Sample, 5))
    );
    let alone = make("tiny-sd", &requests[9..10], &settings(VaeLatent::Sample, 1));
    assert_eq!(alone[0], sampled[9]);
    // The noise used is each image's keyed noise, the posterior's stream included.
    let len = tiny_sd.model.latent_len();
    let noises = requests
        .iter()
        .map(|r| ImageNoise::keyed(&r.noise, len, r.level > 0))
        .collect();
    let injected = tiny_sd
        .generate_from_noise(
            &requests,
            noises,
            &settings(VaeLatent::Sample, 3),
            &ServiceStats::default(),
        )
        .unwrap();
    assert_eq!(injected, sampled);

    // The mean: the same images where no source is encoded (λ = 0), others elsewhere.
    let mean = make("tiny-sd", &requests, &settings(VaeLatent::Mean, 4));
    for (i, request) in requests.iter().enumerate() {
        let d = max_difference(&sampled[i], &mean[i]);
        if request.level == 0 {
            assert_eq!(d, 0.0, "image {i} at λ = 0");
        } else {
            assert!(d > 0.05, "image {i} at λ = {}: {d}", request.level);
        }
    }
    // Seeds of one (source, λ) draw different posterior noise.
    assert!(max_difference(&sampled[2], &sampled[3]) > 0.05);
}

#[test]
fn sampling_needs_the_posterior_noise() {
    let mut tiny_sd = generator("tiny-sd");
    let requests = requests(&tiny_sd, Condition::Prompt("a coat".into()));
    let len = tiny_sd.model.latent_len();
    let stats = ServiceStats::default();
    let without = |r: &ImageRequest| ImageNoise::keyed(&r.noise, len, false);
    let err = tiny_sd
        .generate_from_noise(
            &requests[2..3],
            vec![without(&requests[2])],
            &settings(VaeLatent::Sample, 1),
            &stats,
        )
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("sampling the VAE posterior needs its noise"),
        "{err}"
    );
    let mut short = ImageNoise::keyed(&requests[2].noise, len, true);
    short.posterior.as_mut().unwrap().pop();
    let err = tiny_sd
        .generate_from_noise(
            &requests[2..3],
            vec![short],
            &settings(VaeLatent::Sample, 1),
            &stats,
        )
        .unwrap_err()
        .to_string();
    assert!(err.contains("posterior noise has"), "{err}");
    // The mean needs none; one noise per request.
    assert!(tiny_sd
        .generate_from_noise(
            &requests[2..3],
            vec![without(&requests[2])],
            &settings(VaeLatent::Mean, 1),
            &stats,
        )
        .is_ok());
    let err = tiny_sd
        .generate_from_noise(
            &requests[..2],
            Vec::new(),
            &settings(VaeLatent::Mean, 1),
            &stats,
        )
        .unwrap_err()
        .to_string();
    assert!(err.contains("0 noises for 2 requests"), "{err}");
}

/// A pixel-space model has no posterior: its images are those of the add-noise stream alone,
/// whatever `vae_latent` says (the images stores made before the mode existed hold).
#[test]
fn pixel_images_ignore_the_vae_latent() {
    let mut pixel = generator("tiny-pixel-unet");
    let requests = requests(&pixel, Condition::Class(4));
    let len = pixel.model.latent_len();
    let sampled = make(
        "tiny-pixel-unet",
        &requests,
        &settings(VaeLatent::Sample, 4),
    );
    let mean = make("tiny-pixel-unet", &requests, &settings(VaeLatent::Mean, 4));
    assert_eq!(sampled, mean);
    let add_only = requests
        .iter()
        .map(|r| ImageNoise {
            add: gaussian(&r.noise, len),
            posterior: None,
        })
        .collect();
    let injected = pixel
        .generate_from_noise(
            &requests,
            add_only,
            &settings(VaeLatent::Sample, 4),
            &ServiceStats::default(),
        )
        .unwrap();
    assert_eq!(injected, sampled);
}
