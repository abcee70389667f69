//! The `generate` operator alone on the tiny pixel UNet: exact differential output, and
//! retractions (and re-insertions) answered without a model call; and its content keys,
//! pinned where they must not change.

use crate::common;

use common::*;
use differential_dataflow::input::Input;
use discl::operators::generate::{ClassNames, Prompts};
use discl::operators::model_map::ModelMap;
use discl::operators::{GenerateExt, GenerateParams, GenerateWorker, NodeStats};
use discl::record::{sample_id, Digest, Sample};
use discl::runtime::diffusion::img2img::Generator;
use discl::runtime::diffusion::model::Conditioning;
use discl::runtime::diffusion::{DiffusionModel, GenerationSettings, VaeLatent};
use discl::runtime::onnx::SessionOptions;
use discl::runtime::scheduler::SchedulerKind;
use discl::runtime::InferenceService;
use discl::store::images::ImageStore;
use std::path::Path;
use std::sync::Arc;
use timely::dataflow::operators::capture::Capture;

fn sample(class: &str) -> Sample {
    let mut files: Vec<_> = std::fs::read_dir(fixture().join(class))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let name = format!(
        "{class}/{}",
        files[0].file_name().unwrap().to_str().unwrap()
    );
    Sample {
        id: sample_id(&name),
        name,
        label: class.into(),
        path: files[0].display().to_string(),
        digest: Digest::of(&std::fs::read(&files[0]).unwrap()),
    }
}

#[test]
fn retractions_never_call_the_model() {
    let dir = tempfile::tempdir().unwrap();
    let model = DiffusionModel::open(
        &Path::new(REPO).join("models/tiny-pixel-unet"),
        &SessionOptions::default(),
    )
    .unwrap();
    let model_digest = model.digest;
    let settings = GenerationSettings {
        steps: 6,
        guidance_scale: 2.0,
        scheduler: SchedulerKind::Ddim,
        batch_size: 4,
        vae_latent: VaeLatent::default(),
    };
    let store = Arc::new(ImageStore::open(dir.path(), 0).unwrap());
    let worker = GenerateWorker {
        generator: Generator::new(model),
        settings: settings.clone(),
        store,
    };
    let service = Arc::new(InferenceService::start("gen", vec![worker]));
    let names: Vec<String> = CLASSES.map(String::from).to_vec();
    let stats = Arc::new(NodeStats::default());
    let params = GenerateParams {
        node: "synthetic".into(),
        service: Arc::clone(&service),
        settings,
        levels: vec![0, 500],
        seeds: 2,
        prompts: Prompts::Template("a photo of a {class}".into()),
        classes: ClassNames {
            display: names.clone(),
            names,
        },
        class_conditional: true,
        pipeline_seed: 3,
        model_digest,
        vae_posterior: false,
        unet_variant: None,
        job_size: 16,
        stats: Arc::clone(&stats),
    };
    let (coat, bag) = (sample("coat"), sample("bag"));
    let inputs = (coat.clone(), bag.clone());
    let (captured, errors) = timely::execute_directly(move |worker| {
        let (mut input, captured) = worker.dataflow::<u64, _, _>(|scope| {
            let (input, samples) = scope.new_collection::<Sample, isize>();
            let (synthetics, errors) = samples.generate(params.clone());
            let out = synthetics
                .map(|s| {
                    (
                        s.key.sample,
                        s.key.level,
                        s.key.seed,
                        s.key.prompt,
                        s.digest,
                    )
                })
                .inner
                .capture();
            (input, (out, errors.inner.capture()))
        });
        let (coat, bag) = inputs.clone();
        input.update_at(coat.clone(), 0, 1);
        input.update_at(bag.clone(), 0, 1);
        input.update_at(bag.clone(), 1, -1);
        input.update_at(bag, 2, 1);
        input.close();
        captured
    });
    let out = sorted_updates(captured);
    assert_eq!(sorted_updates(errors), Vec::new());
    let images = |s: &Sample, display: &str| -> Vec<(u64, u16, u32, String)> {
        [0u16, 500]
            .iter()
            .flat_map(|&l| (0..2).map(move |seed| (s.id, l, seed, display.to_string())))
            .collect()
    };
    let mut expected = Vec::new();
    for key in images(&coat, "coat") {
        expected.push((key, 0, 1));
    }
    for key in images(&bag, "bag") {
        expected.extend([(key.clone(), 0, 1), (key.clone(), 1, -1), (key, 2, 1)]);
    }
    expected.sort();
    let got: Vec<_> = out
        .iter()
        .map(|(r, t, d)| {
            let (sample, level, seed, prompt, _) = r.clone();
            ((sample, level, seed, prompt), *t, *d)
        })
        .collect();
    let mut got = got;
    got.sort();
    assert_eq!(got, expected);
    // Every update of one image carries the same file.
    let digests: std::collections::BTreeSet<_> = out.iter().map(|(r, _, _)| r.4).collect();
    assert_eq!(digests.len(), 8);
    let summary = stats.summary(0.0);
    assert_eq!(summary.model_calls, service.stats().snapshot().2);
    assert_eq!(summary.computed, 8, "eight images made once");
    assert_eq!(
        summary.cache_hits, 8,
        "the retraction and re-insertion of bag's four images"
    );
    // Items: 4 at λ = 0 (6 steps) and 4 at λ = 0.5 (3 steps), 4 per call, per-item timesteps.
    assert_eq!(service.stats().snapshot().2, 9);
}

/// The content keys of a generator's images (one per (level, seed) of a fixed sample).
fn content_keys(model_dir: &str, settings: GenerationSettings, prompt: &str) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let model =
        DiffusionModel::open(&Path::new(REPO).join(model_dir), &SessionOptions::default()).unwrap();
    let model_digest = model.digest;
    let vae_posterior = model.has_posterior();
    let class_conditional = matches!(model.conditioning, Conditioning::Class { .. });
    let worker = GenerateWorker {
        generator: Generator::new(model),
        settings: settings.clone(),
        store: Arc::new(ImageStore::open(dir.path(), 0).unwrap()),
    };
    let names: Vec<String> = CLASSES.map(String::from).to_vec();
    let params = GenerateParams {
        node: "synthetic".into(),
        service: Arc::new(InferenceService::start("gen", vec![worker])),
        settings,
        levels: vec![0, 500],
        seeds: 2,
        prompts: Prompts::Template(prompt.into()),
        classes: ClassNames {
            display: names.clone(),
            names,
        },
        class_conditional,
        pipeline_seed: 3,
        model_digest,
        vae_posterior,
        unet_variant: None,
        job_size: 16,
        stats: Arc::new(NodeStats::default()),
    };
    let sample = Sample {
        id: 11,
        name: "coat/0.png".into(),
        label: "coat".into(),
        path: "coat/0.png".into(),
        digest: Digest::of(b"a source image"),
    };
    params
        .gen_keys(&sample)
        .into_iter()
        .map(|k| params.key(&(sample.clone(), k)).to_hex())
        .collect()
}

/// Content keys made by discl before `vae_latent` existed (commit 5baf9e1), with the
/// settings below: a pixel-space generator (no VAE) and tiny-sd, whose VAE posterior was then
/// always taken at its mean.
const PIXEL_KEYS: [&str; 4] = [
    "4aeef528d2114ea6abbc7c701f7e815b1dfa0dd471652c468e1fe24f474f0961",
    "a62a34f7c9b6c4b9323091e05213011c189c8acd0e625015e86bd8911c903938",
    "97dd3634611460b67a0f397c0f37ef4269333a059ffe0d48ec134a770a9c4c2f",
    "2f47a2316eb7fe898e7d8bdca1e1f70df34ad81b19153fedb40faefcf577ea4e",
];
const TINY_SD_MEAN_KEYS: [&str; 4] = [
    "b785469ee22a0d62ec5a6abbfe089041989395c118bc0abe4bf4a9efe3716335",
    "9c71951e7dc8c84c4e80369e7758ce6feadd37e3612e07a4add334bcbc58f393",
    "9fb3d5241e8a9eab318f52ea7b14c50bdabc1f672029e227c9d1eb69b583aa71",
    "d54fc724a3daedd7a7469a1a105b2286f27b15bb212e823cd7d49f01f7215385",
];

/// `vae_latent` enters a content key only where it decides the image: a pixel-space model's
/// keys are those made before it existed, in either mode (stores made then stay valid); on
/// tiny-sd the mean keeps the old keys, and sampling the posterior changes the keys of the
/// images made from a source (λ > 0) and no other.
#[test]
fn content_keys_take_the_vae_latent_only_where_it_decides_the_image() {
    let settings = |vae_latent| GenerationSettings {
        steps: 6,
        guidance_scale: 2.0,
        scheduler: SchedulerKind::Ddim,
        batch_size: 4,
        vae_latent,
    };
    let prompt = "a photo of a {class}";
    for mode in [VaeLatent::Sample, VaeLatent::Mean] {
        let keys = content_keys("models/tiny-pixel-unet", settings(mode), prompt);
        assert_eq!(keys, PIXEL_KEYS, "pixel model, vae_latent {mode}");
    }
    let mean = content_keys("models/tiny-sd", settings(VaeLatent::Mean), prompt);
    assert_eq!(mean, TINY_SD_MEAN_KEYS);
    let sampled = content_keys("models/tiny-sd", settings(VaeLatent::Sample), prompt);
    // Keys in (level, seed) order: λ = 0 (seeds 0, 1), then λ = 0.5.
    assert_eq!(sampled[..2], mean[..2], "λ = 0 encodes no source");
    for i in 2..4 {
        assert_ne!(sampled[i], mean[i], "λ = 0.5, seed {}", i - 2);
    }
    assert_ne!(sampled[2], sampled[3]);
}
