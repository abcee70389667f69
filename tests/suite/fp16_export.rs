//! An fp16 export (every ONNX file's weights, inputs and outputs in Float16, as optimum's
//! `--dtype fp16` writes them): the engine feeds and reads it in f32 through the session's
//! boundary (`runtime::shared_session`) and makes the images the float model makes, within half
//! precision. The files are models/tiny-sd's, converted by `scripts/models/make_tiny_sd_fp16.py`.

use crate::common;

use common::*;
use discl::runtime::diffusion::img2img::Generator;
use discl::runtime::diffusion::{DiffusionModel, GenerationSettings, VaeLatent};
use discl::runtime::onnx::SessionOptions;
use discl::runtime::scheduler::SchedulerKind;
use discl::runtime::ServiceStats;
use std::path::{Path, PathBuf};

const PARTS: [&str; 4] = ["text_encoder", "unet", "vae_encoder", "vae_decoder"];

/// models/tiny-sd with its ONNX files replaced by the fp16 ones.
fn fp16_folder(dir: &Path) -> PathBuf {
    let folder = dir.join("tiny-sd-fp16");
    copy_folder(&Path::new(REPO).join("models/tiny-sd"), &folder);
    for part in PARTS {
        let half = Path::new(REPO)
            .join("tests/fixtures/tiny-sd-fp16")
            .join(part);
        std::fs::copy(
            half.join("model.onnx"),
            folder.join(part).join("model.onnx"),
        )
        .unwrap();
    }
    folder
}

fn images(folder: &Path) -> (Vec<Vec<f32>>, bool) {
    let model = DiffusionModel::open(folder, &SessionOptions::default()).unwrap();
    let half = model.unet.is_half();
    let requests = diffusion_requests(&model, 2, 1, 4);
    let settings = GenerationSettings {
        steps: 8,
        guidance_scale: 2.0,
        scheduler: SchedulerKind::Ddim,
        batch_size: 2,
        vae_latent: VaeLatent::Sample,
    };
    let made = Generator::new(model)
        .generate(&requests, &settings, &ServiceStats::default())
        .unwrap();
    (made, half)
}

#[test]
fn an_fp16_export_makes_the_float_models_images_within_half_precision() {
    let dir = tempfile::tempdir().unwrap();
    let (float, float_is_half) = images(&Path::new(REPO).join("models/tiny-sd"));
    let (half, is_half) = images(&fp16_folder(dir.path()));
    assert!(!float_is_half && is_half);
    assert_eq!(half.len(), float.len());
    // Images are in [-1, 1]: 2/255 is one 8-bit level.
    let level = 2.0 / 255.0;
    let (mut max, mut sum, mut count) = (0.0f32, 0.0f64, 0usize);
    for (a, b) in float.iter().zip(&half) {
        for (x, y) in a.iter().zip(b) {
            let d = (x - y).abs() / level;
            max = max.max(d);
            sum += f64::from(d);
            count += 1;
        }
    }
    let mean = sum / count as f64;
    eprintln!("fp16 against float: max {max:.2} levels, mean {mean:.3} levels");
    assert!(max > 0.0, "the fp16 files ran");
    // Measured: max 0.21 levels, mean 0.023.
    assert!(max < 2.0 && mean < 0.2, "max {max}, mean {mean}");
}

#[test]
fn a_pipeline_runs_on_an_fp16_export() {
    let dir = tempfile::tempdir().unwrap();
    let folder = fp16_folder(dir.path());
    let out = dir.path().join("out");
    let graph = format!(
        r#"[pipeline]
name = "fp16"
output = "{out}"
seed = 2

[models.cnn]
path = "{repo}/models/fashion-cnn"

[models.gen]
path = "{folder}"

[nodes.train]
op = "source"
format = "image_folder"
path = "{fixture}"

[nodes.synthetic]
op = "generate"
inputs = ["train"]
model = "gen"
classes_from = "cnn"
levels = [0.5]
steps = 3
scheduler = "ddim"

[nodes.out]
op = "sink"
inputs = ["synthetic"]
"#,
        out = out.display(),
        repo = REPO,
        folder = folder.display(),
        fixture = fixture().display(),
    );
    let summary = run_text(&graph, 1);
    let written = read_jsonl(&out, "out", "synthetic");
    assert!(!written.is_empty(), "{summary:?}");
    for record in &written {
        let path = out.join(record["path"].as_str().unwrap());
        let png = image::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!((png.width(), png.height()), (32, 32));
    }
}
