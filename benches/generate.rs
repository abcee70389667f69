//! Generation throughput on the shipped tiny models, side by side in one run:
//! - discl: a pipeline (manifest source → generate → sink) through the whole engine, with an
//!   empty image store each round, so every image is made;
//! - bare: a loop of ONNX Runtime calls making exactly the same calls at the same batch size
//!   (text encoder once, VAE encoder once per source, UNet calls grouped by timestep as the
//!   engine groups them, VAE decoder), images kept in memory;
//! - peers (when `.venv-export` exists, see scripts/bench/README.md): diffusers' PyTorch
//!   img2img once per image, and optimum's ONNX Runtime img2img pipeline at its best batch size.
//!
//! Workload (the same in scripts/bench/peers.py): the first image of each of the first 8
//! classes of tests/fixtures/fashion-tiny, λ ∈ {0.3, 0.5, 0.7}, 2 seeds (48 images), 20 DDIM
//! steps, guidance 3.0, one ONNX Runtime thread. Run: `cargo bench --bench generate`.

#[path = "../tests/common/mod.rs"]
mod common;

use discl::runtime::diffusion::img2img::Generator;
use discl::runtime::diffusion::model::{Conditioning, DiffusionModel, TimestepShape};
use discl::runtime::diffusion::noise::gaussian;
use discl::runtime::diffusion::NoiseKey;
use discl::runtime::image_input::{decode_into, ImageSpec};
use discl::runtime::onnx::SessionOptions;
use discl::runtime::scheduler::{Scheduler, SchedulerKind};
use discl::{Pipeline, RunOptions};
use ort::value::TensorRef;
use std::path::{Path, PathBuf};
use std::time::Instant;

const LEVELS: [u16; 3] = [300, 500, 700];
const SEEDS: u32 = 2;
const STEPS: usize = 20;
const GUIDANCE: f32 = 3.0;
const ROUNDS: usize = 3;
const DISPLAY: [&str; 10] = [
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

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// (class index, class folder name, image path) of the workload's 8 source images.
fn workload() -> Vec<(usize, String, PathBuf)> {
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

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let peers = run_peers(1);
    let images = workload().len() * LEVELS.len() * SEEDS as usize;
    let mut best_batch = std::collections::HashMap::new();
    println!("\n== one thread each: discl (1 session, 1 ONNX Runtime thread) vs the same calls bare vs peers (1 thread)");
    for model in ["tiny-sd", "tiny-pixel-unet"] {
        println!("\n{model}: {images} images, {ROUNDS} rounds per batch size (medians)");
        let mut best = (0.0f64, 1);
        for batch in [1, 2, 8] {
            let mut engine = Vec::new();
            let mut bare = Vec::new();
            let mut calls = (0, 0);
            for _ in 0..ROUNDS {
                let (secs, engine_calls) = through_engine(model, batch, 1);
                engine.push(secs);
                let (secs, bare_calls) = bare_loop(model, batch);
                bare.push(secs);
                calls = (engine_calls, bare_calls);
            }
            let (engine, bare) = (images as f64 / median(engine), images as f64 / median(bare));
            if engine > best.0 {
                best = (engine, batch);
            }
            println!(
                "  batch {batch}: discl {engine:6.1} images/s ({} UNet calls) | bare ONNX Runtime loop {bare:6.1} images/s ({} calls) | discl/bare {:.3} (target >= 0.97)",
                calls.0,
                calls.1,
                engine / bare
            );
        }
        best_batch.insert(model, best.1);
        compare_with_peers(&peers, model, best.0, best.1);
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    if cores < 2 {
        return;
    }
    let peers = run_peers(cores);
    println!("\n== the whole machine ({cores} cores) each: discl ({cores} sessions × 1 thread) vs peers ({cores} intra-op threads)");
    for model in ["tiny-sd", "tiny-pixel-unet"] {
        let batch = best_batch[model];
        let rates: Vec<f64> = (0..ROUNDS)
            .map(|_| images as f64 / through_engine(model, batch, cores).0)
            .collect();
        let rate = median(rates);
        println!("\n{model}: discl {rate:6.1} images/s (batch {batch})");
        compare_with_peers(&peers, model, rate, batch);
    }
}

fn compare_with_peers(peers: &Option<serde_json::Value>, model: &str, discl: f64, batch: usize) {
    match peers.as_ref().and_then(|p| p["peers"].get(model)) {
        Some(p) => {
            if let Some(torch) = p["diffusers-torch-per-image"]["images_per_s"].as_f64() {
                println!("  diffusers PyTorch img2img, once per image: {torch:6.1} images/s → discl (batch {batch}) {:.2}x (target >= 3)", discl / torch);
            }
            if let Some(optimum) = p["optimum-ort"]["images_per_s"].as_f64() {
                let best = &p["optimum-ort"]["best_batch"];
                println!("  optimum ORT img2img, best batch {best}: {optimum:6.1} images/s → discl (batch {batch}) {:.2}x (target >= 1.2)", discl / optimum);
            }
        }
        None => println!("  peers: not measured (run scripts/bench/setup-peers.sh first)"),
    }
}

fn run_peers(threads: usize) -> Option<serde_json::Value> {
    let python = repo().join(".venv-export/bin/python");
    if !python.exists() {
        return None;
    }
    let out = std::env::temp_dir().join(format!("discl-peers-{}.json", std::process::id()));
    let status = std::process::Command::new(python)
        .args([
            "scripts/bench/peers.py",
            "--threads",
            &threads.to_string(),
            "--json",
            out.to_str().unwrap(),
        ])
        .current_dir(repo())
        .status()
        .ok()?;
    if !status.success() {
        eprintln!("peers.py failed ({status})");
        return None;
    }
    serde_json::from_str(&std::fs::read_to_string(out).ok()?).ok()
}

fn through_engine(model: &str, batch: usize, sessions: usize) -> (f64, u64) {
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
path = "{repo}/models/{model}"
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
        manifest = manifest.display(),
    );
    let pipeline = Pipeline::from_toml("bench.toml", &text).unwrap();
    let started = Instant::now();
    let summary = pipeline
        .run(&RunOptions {
            timely_args: vec!["-w".into(), "1".into()],
            progress: false,
        })
        .unwrap();
    let secs = started.elapsed().as_secs_f64();
    assert_eq!(
        summary.nodes["synthetic"].computed as usize,
        workload().len() * LEVELS.len() * SEEDS as usize
    );
    (secs, summary.nodes["synthetic"].model_calls)
}

/// The same calls with nothing around them. The engine's run includes loading its sessions,
/// so the bare loop loads the model too.
fn bare_loop(model: &str, batch: usize) -> (f64, u64) {
    let started = Instant::now();
    let mut model = DiffusionModel::open(
        &repo().join("models").join(model),
        &SessionOptions::default(),
    )
    .unwrap();
    let schedule = Scheduler::new(&model.scheduler_config, SchedulerKind::Ddim)
        .unwrap()
        .schedule(STEPS)
        .unwrap();
    let [c, h, w] = model.image_shape;
    let spec = ImageSpec {
        channels: c,
        height: h,
        width: w,
        mean: vec![0.5; c],
        std: vec![0.5; c],
    };
    let sources = workload();
    let mut pixels = Vec::new();
    for (_, _, path) in &sources {
        decode_into(&std::fs::read(path).unwrap(), &spec, &mut pixels).unwrap();
    }
    let latent_len = model.latent_len();
    let n_src = sources.len();
    // Encode prompts and sources once.
    let (embeds, z0): (Option<Vec<Vec<f32>>>, Vec<Vec<f32>>) = {
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
                    .run(ort::inputs![vae.encoder_input.as_str() => input])
                    .unwrap();
                let (_, data) = out[vae.encoder_output.as_str()]
                    .try_extract_tensor::<f32>()
                    .unwrap();
                let per = data.len() / n_src;
                data.chunks(per)
                    .map(|p| {
                        p[..latent_len]
                            .iter()
                            .map(|v| v * vae.scaling_factor)
                            .collect()
                    })
                    .collect()
            }
            None => pixels.chunks(latent_len).map(<[f32]>::to_vec).collect(),
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
                let noise = gaussian(
                    &NoiseKey {
                        pipeline_seed: 0,
                        sample: s as u64,
                        level,
                        seed_index: seed,
                    },
                    latent_len,
                );
                let mut x = z0[s].clone();
                schedule.add_noise(&state, &mut x, &noise).unwrap();
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
                model.unet.run(ort::inputs![io.sample.as_str() => sample_t, io.timestep.as_str() => t_t, io.condition.as_str() => hidden_t]).unwrap()
            }
            _ => {
                let labels: Vec<i64> = std::iter::repeat_n(null_class, n)
                    .chain(group.iter().map(|(_, k)| items[*k].2 as i64))
                    .collect();
                let labels_t = TensorRef::from_array_view(([2 * n], labels.as_slice())).unwrap();
                let ts: Vec<i64> = times.iter().map(|t| t.round() as i64).collect();
                let t_t = TensorRef::from_array_view(([2 * n], ts.as_slice())).unwrap();
                model.unet.run(ort::inputs![io.sample.as_str() => sample_t, io.timestep.as_str() => t_t, io.condition.as_str() => labels_t]).unwrap()
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
    (started.elapsed().as_secs_f64(), calls)
}
