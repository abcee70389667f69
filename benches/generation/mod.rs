//! The generation benchmarks' shared workload and their bare loop: the same ONNX Runtime calls
//! the engine makes (text encoder once, VAE encoder once per source, its posterior sampled per
//! image as the engine's default `vae_latent = "sample"` does, UNet calls grouped by timestep
//! as the engine groups them, VAE decoder), with nothing around them.

#![allow(dead_code)]

#[path = "../../tests/common/mod.rs"]
mod common;

use discl::runtime::diffusion::img2img::GenerationSettings;
use discl::runtime::diffusion::img2img::{Condition, Generator, ImageRequest};
use discl::runtime::diffusion::model::{Conditioning, DiffusionModel, TimestepShape};
use discl::runtime::diffusion::noise::ImageNoise;
use discl::runtime::diffusion::posterior::{Encoded, VaeLatent};
use discl::runtime::diffusion::NoiseKey;
use discl::runtime::image_input::{decode_into, ImageSpec};
use discl::runtime::scheduler::{Scheduler, SchedulerKind};
use discl::{Pipeline, RunOptions};
use ort::value::TensorRef;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

pub const LEVELS: [u16; 3] = [300, 500, 700];
pub const SEEDS: u32 = 2;
pub const STEPS: usize = 20;
pub const GUIDANCE: f32 = 3.0;
pub const ROUNDS: usize = 3;
pub const DISPLAY: [&str; 10] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
];

/// The repository: `DISCL_REPO` when set (the bench binary run from another checkout), else
/// the one it was built in.
pub fn repo() -> PathBuf {
    std::env::var_os("DISCL_REPO")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}

/// (class index, class folder name, image path) of the workload's 8 source images.
pub fn workload() -> Vec<(usize, String, PathBuf)> {
    let fixture = repo().join("tests/fixtures/fashion-tiny");
    common::CLASSES
        .iter()
        .take(8)
        .enumerate()
        .map(|(i, class)| {
            let mut files: Vec<PathBuf> = std::fs::read_dir(fixture.join(class))
                .unwrap()
                .map(|e| e.unwrap().path())
                .collect();
            files.sort();
            (i, class.to_string(), files[0].clone())
        })
        .collect()
}

pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The workload's source images in the model's image space, in workload order.
pub fn source_pixels(model: &DiffusionModel) -> Vec<Vec<f32>> {
    let [c, h, w] = model.image_shape;
    let spec = ImageSpec {
        channels: c,
        height: h,
        width: w,
        mean: vec![0.5; c],
        std: vec![0.5; c],
    };
    workload()
        .iter()
        .map(|(_, _, path)| {
            let mut pixels = Vec::new();
            decode_into(&std::fs::read(path).unwrap(), &spec, &mut pixels).unwrap();
            pixels
        })
        .collect()
}

/// The workload as the engine's generator takes it: the same images, prompts (or, for a
/// class-conditional model, class labels), levels and noise keys as [`bare_generate`].
pub fn requests(model: &DiffusionModel) -> Vec<ImageRequest> {
    let class = matches!(model.conditioning, Conditioning::Class { .. });
    let mut requests = Vec::new();
    for (s, ((i, _, _), pixels)) in workload().iter().zip(source_pixels(model)).enumerate() {
        let digest = discl::record::Digest::of(&s.to_le_bytes());
        let pixels = Arc::new(pixels);
        for &level in &LEVELS {
            for seed in 0..SEEDS {
                requests.push(ImageRequest {
                    source: Some((digest, Arc::clone(&pixels))),
                    condition: if class {
                        Condition::Class(*i as i64)
                    } else {
                        Condition::Prompt(format!("a photo of a {}", DISPLAY[*i]))
                    },
                    level,
                    noise: NoiseKey {
                        pipeline_seed: 0,
                        sample: s as u64,
                        level,
                        seed_index: seed,
                    },
                });
            }
        }
    }
    requests
}

/// The workload's settings for discl's generator, `batch` images per UNet call.
pub fn settings(batch: usize) -> GenerationSettings {
    GenerationSettings {
        steps: STEPS,
        guidance_scale: GUIDANCE,
        scheduler: SchedulerKind::Ddim,
        batch_size: batch,
        vae_latent: VaeLatent::Sample,
    }
}

/// discl's generator warm: one session, the workload made `warmup` times untimed, then
/// `rounds` timed, one request at a time as the engine's service makes them at batch 1.
/// ONNX Runtime speeds up over its first thousand or so calls on a session (about 10% on
/// tiny-pixel-unet); the engine's rounds above each open a fresh session, the peers' rounds
/// reuse theirs. Returns the median round's seconds.
pub fn warm_generator(model: &Path, warmup: usize, rounds: usize) -> f64 {
    use discl::runtime::onnx::SessionOptions;
    use discl::runtime::service::ServiceStats;
    let model = DiffusionModel::open(model, &SessionOptions::default()).unwrap();
    let requests = requests(&model);
    let mut generator = Generator::new(model);
    let settings = settings(1);
    let stats = ServiceStats::default();
    let mut round = || {
        let started = Instant::now();
        for request in &requests {
            generator
                .generate(std::slice::from_ref(request), &settings, &stats)
                .unwrap();
        }
        started.elapsed().as_secs_f64()
    };
    (0..warmup).for_each(|_| {
        round();
    });
    median((0..rounds).map(|_| round()).collect())
}

/// What one run through the engine took.
pub struct EngineRun {
    /// The whole run's seconds, sessions loaded inside.
    pub seconds: f64,
    /// The generate node's model seconds (its summary's `seconds`: the generator busy, models
    /// loaded; with one session, the steady state a peer's loop is compared with).
    pub model_seconds: f64,
    pub unet_calls: u64,
}

/// One run of the workload through the whole engine (manifest source → generate → sink) on the
/// model folder `model`, its sessions on `device`, with an empty image store: every image is
/// made.
pub fn through_engine(model: &Path, device: &str, batch: usize, sessions: usize) -> EngineRun {
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("sources.jsonl");
    let lines: Vec<String> = workload()
        .iter()
        .map(|(_, class, path)| serde_json::json!({"path": path, "label": class}).to_string())
        .collect();
    std::fs::write(&manifest, lines.join("\n")).unwrap();
    let text = format!(
        r#"[pipeline]
name = "bench"
output = "{out}"
[models.cnn]
path = "{repo}/models/fashion-cnn"
[models.gen]
path = "{model}"
device = "{device}"
sessions = {sessions}
[nodes.images]
op = "source"
format = "manifest"
path = "{manifest}"
[nodes.synthetic]
op = "generate"
inputs = ["images"]
model = "gen"
classes_from = "cnn"
levels = [0.3, 0.5, 0.7]
seeds = {SEEDS}
steps = {STEPS}
guidance_scale = {GUIDANCE}
scheduler = "ddim"
batch_size = {batch}
[nodes.out]
op = "sink"
inputs = ["synthetic"]
"#,
        out = dir.path().join("out").display(),
        repo = repo().display(),
        model = model.display(),
        manifest = manifest.display(),
    );
    let pipeline = Pipeline::from_toml("bench.toml", &text).unwrap();
    let started = Instant::now();
    let summary = pipeline
        .run(&RunOptions {
            timely_args: vec!["-w".into(), "1".into()],
            progress: false,
            ..Default::default()
        })
        .unwrap();
    let secs = started.elapsed().as_secs_f64();
    let expected = workload().len() * LEVELS.len() * SEEDS as usize;
    if summary.nodes["synthetic"].computed as usize != expected {
        let errors = dir.path().join("out/errors/current/errors.jsonl");
        panic!(
            "the engine made {} of {expected} images; its errors:\n{}",
            summary.nodes["synthetic"].computed,
            std::fs::read_to_string(&errors)
                .unwrap_or_else(|e| format!("({}: {e})", errors.display()))
        );
    }
    EngineRun {
        seconds: secs,
        model_seconds: summary.nodes["synthetic"].seconds,
        unet_calls: summary.nodes["synthetic"].model_calls,
    }
}

/// Makes the workload's images with plain ONNX Runtime calls on an opened model, `batch`
/// items per UNet call; returns the number of UNet calls.
pub fn bare_generate(model: &mut DiffusionModel, batch: usize) -> u64 {
    let schedule = Scheduler::new(&model.scheduler_config, SchedulerKind::Ddim)
        .unwrap()
        .schedule(STEPS)
        .unwrap();
    let [c, h, w] = model.image_shape;
    let sources = workload();
    let pixels: Vec<f32> = source_pixels(model).concat();
    let latent_len = model.latent_len();
    let n_src = sources.len();
    // Encode prompts and sources once; a source is its latent, or its posterior when the
    // encoder gives one (the engine's own `Encoded`, sampled below as the engine samples it).
    let (embeds, z0): (Option<Vec<Vec<f32>>>, Vec<Encoded>) = {
        let embeds = match &mut model.conditioning {
            Conditioning::Text(text) => {
                let mut prompts: Vec<String> = sources
                    .iter()
                    .map(|(i, _, _)| format!("a photo of a {}", DISPLAY[*i]))
                    .collect();
                prompts.push(String::new());
                let ids: Vec<i64> = prompts
                    .iter()
                    .flat_map(|p| text.tokenizer.encode(p).unwrap())
                    .map(i64::from)
                    .collect();
                let input = TensorRef::from_array_view((
                    [prompts.len(), text.tokenizer.max_length],
                    ids.as_slice(),
                ))
                .unwrap();
                let out = text
                    .session
                    .get_mut()
                    .run(ort::inputs![text.input.as_str() => input])
                    .unwrap();
                let (_, data) = out[text.output.as_str()]
                    .try_extract_tensor::<f32>()
                    .unwrap();
                let per = data.len() / prompts.len();
                Some(data.chunks(per).map(<[f32]>::to_vec).collect())
            }
            Conditioning::Class { .. } => None,
        };
        let z0 = match &mut model.vae {
            Some(vae) => {
                let input =
                    TensorRef::from_array_view(([n_src, c, h, w], pixels.as_slice())).unwrap();
                let out = vae
                    .encoder
                    .get_mut()
                    .run(ort::inputs![vae.encoder_input.as_str() => input])
                    .unwrap();
                let (_, data) = out[vae.encoder_output.as_str()]
                    .try_extract_tensor::<f32>()
                    .unwrap();
                let per = data.len() / n_src;
                data.chunks(per)
                    .map(|p| match vae.encoder_gives_parameters {
                        true => Encoded::posterior(p, vae.scaling_factor),
                        false => Encoded::given(Arc::new(p.to_vec()), vae.scaling_factor),
                    })
                    .collect()
            }
            None => pixels
                .chunks(latent_len)
                .map(|p| Encoded::given(Arc::new(p.to_vec()), 1.0))
                .collect(),
        };
        (embeds, z0)
    };
    // Items: (source, level, seed) with their state and latent.
    let mut items = Vec::new();
    for (s, (i, _, _)) in sources.iter().enumerate() {
        for &level in &LEVELS {
            for seed in 0..SEEDS {
                let state = schedule
                    .start_at(Generator::start_index(&schedule, level).unwrap())
                    .unwrap();
                let key = NoiseKey {
                    pipeline_seed: 0,
                    sample: s as u64,
                    level,
                    seed_index: seed,
                };
                let noise = ImageNoise::keyed(&key, latent_len, z0[s].is_posterior());
                let mut x = z0[s]
                    .latent(VaeLatent::Sample, noise.posterior.as_deref())
                    .unwrap();
                schedule.add_noise(&state, &mut x, &noise.add).unwrap();
                items.push((state, x, *i));
            }
        }
    }
    let null_class = match model.conditioning {
        Conditioning::Class { null_class } => null_class,
        Conditioning::Text(_) => 0,
    };
    let io = model.unet_io.clone();
    let [lc, lh, lw] = model.latent_shape;
    let mut calls = 0;
    loop {
        let t = items
            .iter()
            .filter_map(|it| schedule.timestep(&it.0))
            .fold(f32::NEG_INFINITY, f32::max);
        let per_item = io.timestep_shape == TimestepShape::PerItem;
        let mut group: Vec<(f32, usize)> = items
            .iter()
            .enumerate()
            .filter_map(|(k, it)| schedule.timestep(&it.0).map(|tk| (tk, k)))
            .filter(|(tk, _)| per_item || tk.to_bits() == t.to_bits())
            .collect();
        if group.is_empty() {
            break;
        }
        group.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        group.truncate(batch);
        let n = group.len();
        let mut sample = Vec::with_capacity(2 * n * latent_len);
        for _ in 0..2 {
            for &(_, k) in &group {
                let mut scaled = vec![0.0; latent_len];
                schedule
                    .scale_model_input(&items[k].0, &items[k].1, &mut scaled)
                    .unwrap();
                sample.extend(scaled);
            }
        }
        let times: Vec<f32> = group
            .iter()
            .chain(group.iter())
            .map(|(tk, _)| *tk)
            .collect();
        let sample_t =
            TensorRef::from_array_view(([2 * n, lc, lh, lw], sample.as_slice())).unwrap();
        let out = match (&embeds, io.timestep_shape) {
            (Some(embeds), TimestepShape::Scalar) => {
                let mut hidden = Vec::new();
                (0..n).for_each(|_| hidden.extend_from_slice(&embeds[n_src]));
                group
                    .iter()
                    .for_each(|(_, k)| hidden.extend_from_slice(&embeds[items[*k].2]));
                let seq = hidden.len() / (2 * n);
                let hidden_t =
                    TensorRef::from_array_view(([2 * n, 77, seq / 77], hidden.as_slice())).unwrap();
                let time = [times[0]];
                let t_t = TensorRef::from_array_view((Vec::<usize>::new(), &time[..])).unwrap();
                model.unet.get_mut().run(ort::inputs![io.sample.as_str() => sample_t, io.timestep.as_str() => t_t, io.condition.as_str() => hidden_t]).unwrap()
            }
            _ => {
                let labels: Vec<i64> = std::iter::repeat_n(null_class, n)
                    .chain(group.iter().map(|(_, k)| items[*k].2 as i64))
                    .collect();
                let labels_t = TensorRef::from_array_view(([2 * n], labels.as_slice())).unwrap();
                let ts: Vec<i64> = times.iter().map(|t| t.round() as i64).collect();
                let t_t = TensorRef::from_array_view(([2 * n], ts.as_slice())).unwrap();
                model.unet.get_mut().run(ort::inputs![io.sample.as_str() => sample_t, io.timestep.as_str() => t_t, io.condition.as_str() => labels_t]).unwrap()
            }
        };
        calls += 1;
        let (_, eps) = out[io.output.as_str()].try_extract_tensor::<f32>().unwrap();
        let eps = eps.to_vec();
        drop(out);
        for (j, &(_, k)) in group.iter().enumerate() {
            let (u, c) = (
                &eps[j * latent_len..(j + 1) * latent_len],
                &eps[(n + j) * latent_len..(n + j + 1) * latent_len],
            );
            let guided: Vec<f32> = u
                .iter()
                .zip(c)
                .map(|(u, c)| u + GUIDANCE * (c - u))
                .collect();
            let item = &mut items[k];
            schedule.step(&mut item.0, &guided, &mut item.1).unwrap();
        }
    }
    if let Some(vae) = &mut model.vae {
        for chunk in items.chunks(batch) {
            let latents: Vec<f32> = chunk
                .iter()
                .flat_map(|it| it.1.iter().map(|v| v / vae.scaling_factor))
                .collect();
            let input = TensorRef::from_array_view(([chunk.len(), lc, lh, lw], latents.as_slice()))
                .unwrap();
            let out = vae
                .decoder
                .get_mut()
                .run(ort::inputs![vae.decoder_input.as_str() => input])
                .unwrap();
            std::hint::black_box(
                out[vae.decoder_output.as_str()]
                    .try_extract_tensor::<f32>()
                    .unwrap()
                    .1[0],
            );
        }
    }
    calls
}
