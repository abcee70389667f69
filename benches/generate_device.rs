//! Generation on an execution device, side by side in one run, on the model folder named by
//! `DISCL_BENCH_MODEL` (an SD-shaped export: `scripts/models/make_sd_shaped.py`), its sessions
//! on `DISCL_BENCH_DEVICE` (default `cuda`), with `DISCL_BENCH_THREADS` intra-op threads
//! (default: one per core):
//! - discl: the engine's generator (`img2img::Generator`: on CUDA the UNet's IO binding keeps
//!   each group's text states on the device) on the loaded model;
//! - bare: plain ONNX Runtime `run` calls making the same calls (`generation::bare_generate`);
//! - discl fused: the generator on the model with `attention = "fused"` (its UNet's attention
//!   blocks as `MultiHeadAttention`, `runtime::rewrite::attention`), unless
//!   `DISCL_BENCH_FUSED=0`;
//!
//! at each batch size of `DISCL_BENCH_BATCHES` (default 1,2,4,8,16), `DISCL_BENCH_ROUNDS`
//! rounds (default 3) interleaved, models loaded and warmed; medians. Then one run through the
//! whole engine (sessions loaded inside, PNGs written) at the best batch, and the agreement of
//! `DISCL_BENCH_CHECK` images (default 4) made on the device and on the CPU, and of the fused
//! model's against the exported one's on the device.
//! Workload: `benches/generation` (48 images, λ ∈ {0.3, 0.5, 0.7}, 20 DDIM steps, guidance 3).
//! Run: `DISCL_BENCH_MODEL=/tmp/sd cargo bench --bench generate_device`.

mod generation;

use discl::runtime::device::Device;
use discl::runtime::diffusion::img2img::Generator;
use discl::runtime::diffusion::model::DiffusionModel;
use discl::runtime::onnx::SessionOptions;
use discl::runtime::rewrite::{rewritten_unet, Attention, UnetForm};
use discl::runtime::service::ServiceStats;
use generation::*;
use std::path::PathBuf;
use std::time::Instant;

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

/// Seconds for discl's generator to make every image of the workload on `model`.
fn discl_round(model: DiffusionModel, batch: usize) -> (DiffusionModel, f64, u64) {
    let model = std::sync::Arc::new(model);
    let requests = requests(&model);
    let stats = ServiceStats::default();
    let mut generator = Generator::new(model);
    let started = Instant::now();
    let images = generator
        .generate(&requests, &settings(batch), &stats)
        .unwrap();
    let secs = started.elapsed().as_secs_f64();
    assert_eq!(images.len(), requests.len());
    let calls = stats.model_calls.load(std::sync::atomic::Ordering::Relaxed);
    let model = std::sync::Arc::into_inner(generator.model).expect("the generator's alone");
    (model, secs, calls)
}

fn main() {
    let folder = PathBuf::from(
        std::env::var("DISCL_BENCH_MODEL").expect("set DISCL_BENCH_MODEL to a model folder"),
    );
    let device: Device = env_or("DISCL_BENCH_DEVICE", "cuda").parse().unwrap();
    let batches: Vec<usize> = env_or("DISCL_BENCH_BATCHES", "1,2,4,8,16")
        .split(',')
        .map(|b| b.trim().parse().unwrap())
        .collect();
    let rounds: usize = env_or("DISCL_BENCH_ROUNDS", "3").parse().unwrap();
    let check: usize = env_or("DISCL_BENCH_CHECK", "4").parse().unwrap();
    let options = SessionOptions {
        device,
        fallback_to_cpu: false,
        intra_threads: match std::env::var("DISCL_BENCH_THREADS") {
            Ok(n) => n.parse().unwrap(),
            Err(_) => std::thread::available_parallelism().map_or(1, |n| n.get()),
        },
    };
    let started = Instant::now();
    let mut model = DiffusionModel::open(&folder, &options).unwrap();
    println!(
        "{}: opened on {} in {:.1} s (sessions run on {})",
        folder.display(),
        device,
        started.elapsed().as_secs_f64(),
        model.device
    );
    let fused_unet = (env_or("DISCL_BENCH_FUSED", "1") != "0").then(|| {
        let digest = discl::runtime::diffusion::digest::folder_digest(&folder).unwrap();
        let output = std::env::temp_dir().join("discl-bench-fused");
        let form = UnetForm {
            attention: Attention::Fused,
            ..UnetForm::default()
        };
        rewritten_unet(&folder, &digest, &output, form)
            .unwrap()
            .unwrap()
    });
    let mut fused = fused_unet
        .clone()
        .map(|file| DiffusionModel::open_with_unet(&folder, &options, Some(file)).unwrap());
    let images = workload().len() * LEVELS.len() * SEEDS as usize;
    // Warm-up: the first calls at each shape allocate and pick kernels.
    for &batch in &batches {
        model = discl_round(model, batch).0;
        fused = fused.map(|f| discl_round(f, batch).0);
    }
    println!("\n{images} images, {rounds} rounds per batch size, models loaded (medians)");
    let mut best = (f64::MAX, 1);
    for &batch in &batches {
        let (mut ours, mut bare, mut calls) = (Vec::new(), Vec::new(), (0, 0));
        let mut ours_fused = Vec::new();
        for _ in 0..rounds {
            let (m, secs, c) = discl_round(model, batch);
            model = m;
            ours.push(secs);
            if let Some(f) = fused.take() {
                let (f, secs, _) = discl_round(f, batch);
                fused = Some(f);
                ours_fused.push(secs);
            }
            let started = Instant::now();
            let bare_calls = bare_generate(&mut model, batch);
            bare.push(started.elapsed().as_secs_f64());
            calls = (c, bare_calls);
        }
        let (ours, bare) = (median(ours), median(bare));
        if ours < best.0 {
            best = (ours, batch);
        }
        println!(
            "  batch {batch:2}: discl {:7.4} s/image ({} UNet calls) | bare ONNX Runtime loop {:7.4} s/image ({} calls) | bare/discl {:.3}",
            ours / images as f64,
            calls.0,
            bare / images as f64,
            calls.1,
            bare / ours
        );
        if !ours_fused.is_empty() {
            let f = median(ours_fused);
            println!(
                "            discl, attention fused {:7.4} s/image | exported/fused {:.3}",
                f / images as f64,
                ours / f
            );
        }
    }
    drop(model);
    drop(fused);

    let run = through_engine(&folder, &device.to_string(), best.1, 1);
    let (secs, calls) = (run.seconds, run.unet_calls);
    println!(
        "\nwhole engine (manifest → generate → sink, sessions loaded inside, PNGs written), batch {}: {:.1} s, {:.4} s/image, {calls} UNet calls",
        best.1,
        secs,
        secs / images as f64
    );

    if check > 0 {
        // The same images on the device and on the CPU; then the fused model's on the device.
        let on_device = make_images(&folder, &options, None, check);
        let cpu = SessionOptions {
            device: Device::Cpu,
            ..options.clone()
        };
        let on_cpu = make_images(&folder, &cpu, None, check);
        let what = format!("{} device vs CPU", options.device);
        print_difference(&what, &on_device, &on_cpu);
        if let Some(file) = fused_unet {
            let fused = make_images(&folder, &options, Some(file), check);
            let what = "attention fused vs exported, on the device";
            print_difference(what, &fused, &on_device);
        }
    }
}

/// The first `n` images of the workload, made at batch `n` by the model in `folder` (its UNet
/// replaced by `unet` when given).
fn make_images(
    folder: &std::path::Path,
    options: &SessionOptions,
    unet: Option<PathBuf>,
    n: usize,
) -> Vec<Vec<f32>> {
    let model = DiffusionModel::open_with_unet(folder, options, unet).unwrap();
    let requests: Vec<_> = requests(&model).into_iter().take(n).collect();
    let mut generator = Generator::new(model);
    generator
        .generate(&requests, &settings(n), &ServiceStats::default())
        .unwrap()
}

/// How far apart two sets of images are, in 8-bit pixel levels (images in [-1, 1] map to
/// 0..255).
fn print_difference(what: &str, a: &[Vec<f32>], b: &[Vec<f32>]) {
    let (mut max, mut sum, mut count) = (0.0f32, 0.0f64, 0usize);
    for (a, b) in a.iter().zip(b) {
        for (x, y) in a.iter().zip(b) {
            let d = (x.clamp(-1.0, 1.0) - y.clamp(-1.0, 1.0)).abs() * 127.5;
            max = max.max(d);
            sum += f64::from(d);
            count += 1;
        }
    }
    println!(
        "\n{what}, {} images: max |Δ| {max:.3} / 255, mean |Δ| {:.5} / 255",
        a.len(),
        sum / count as f64
    );
}
