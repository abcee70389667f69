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

mod generation;

use discl::runtime::diffusion::model::DiffusionModel;
use discl::runtime::onnx::SessionOptions;
use generation::*;
use std::time::Instant;

fn main() {
    let peers = run_peers(1);
    let images = workload().len() * LEVELS.len() * SEEDS as usize;
    let mut best_batch = std::collections::HashMap::new();
    println!("\n== one thread each: discl (1 session, 1 ONNX Runtime thread) vs the same calls bare vs peers (1 thread)");
    for model in ["tiny-sd", "tiny-pixel-unet"] {
        println!("\n{model}: {images} images, {ROUNDS} rounds per batch size (medians)");
        let mut best = (0.0f64, 1, 0.0f64);
        for batch in [1, 2, 8] {
            let mut engine = Vec::new();
            let mut loaded = Vec::new();
            let mut bare = Vec::new();
            let mut calls = (0, 0);
            for _ in 0..ROUNDS {
                let run = through_engine(&repo().join("models").join(model), "cpu", batch, 1);
                engine.push(run.seconds);
                loaded.push(run.model_seconds);
                let (secs, bare_calls) = bare_loop(model, batch);
                bare.push(secs);
                calls = (run.unet_calls, bare_calls);
            }
            let (engine, bare) = (images as f64 / median(engine), images as f64 / median(bare));
            let loaded = images as f64 / median(loaded);
            if engine > best.0 {
                best = (engine, batch, loaded);
            }
            println!(
                "  batch {batch}: discl {engine:6.1} images/s ({} UNet calls) | bare ONNX Runtime loop {bare:6.1} images/s ({} calls) | discl/bare {:.3} (target >= 0.97)",
                calls.0,
                calls.1,
                engine / bare
            );
        }
        best_batch.insert(model, best.1);
        println!(
            "  discl at batch {}, models loaded (the generate node's model seconds): {:6.1} images/s",
            best.1, best.2
        );
        compare_with_peers(&peers, model, best.0, best.1);
        compare_loaded(&peers, model, best.2, best.1);
        let warm = images as f64 / warm_generator(&repo().join("models").join(model), 3, ROUNDS);
        println!("  discl's generator warm (one session, 3 untimed rounds first, batch 1): {warm:6.1} images/s");
        compare_loaded(&peers, model, warm, 1);
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
            .map(|_| {
                images as f64
                    / through_engine(&repo().join("models").join(model), "cpu", batch, cores)
                        .seconds
            })
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

/// discl with its models loaded against the peers' loops, which leave loading out too.
fn compare_loaded(peers: &Option<serde_json::Value>, model: &str, discl: f64, batch: usize) {
    let Some(p) = peers.as_ref().and_then(|p| p["peers"].get(model)) else {
        return;
    };
    if let Some(plain) = p["plain-ort-loop"]["images_per_s"].as_f64() {
        println!("  plain Python ONNX Runtime loop, batch 1: {plain:6.1} images/s → discl (batch {batch}), both with models loaded, {:.3}x (target >= 1.0)", discl / plain);
    }
    if let Some(optimum) = p["optimum-ort"]["images_per_s"].as_f64() {
        println!("  optimum ORT img2img, best batch: {optimum:6.1} images/s → discl (batch {batch}), both with models loaded, {:.3}x", discl / optimum);
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

/// The same calls with nothing around them. The engine's run includes loading its sessions,
/// so the bare loop loads the model too.
fn bare_loop(model: &str, batch: usize) -> (f64, u64) {
    let started = Instant::now();
    let mut model = DiffusionModel::open(
        &repo().join("models").join(model),
        &SessionOptions::default(),
    )
    .unwrap();
    let calls = bare_generate(&mut model, batch);
    (started.elapsed().as_secs_f64(), calls)
}
