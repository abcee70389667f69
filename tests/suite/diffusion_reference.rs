//! The diffusion runtime against references made with diffusers and transformers
//! (`scripts/models/dump_img2img_reference.py`, `dump_clip_tokens.py`) on the shipped tiny
//! models: CLIP token ids, and whole img2img / text-to-image runs with recorded noise (on
//! tiny-sd, diffusers' own pipelines, the VAE posterior sampled as diffusers samples it).

use discl::record::Digest;
use discl::runtime::diffusion::img2img::{to_png, Generator};
use discl::runtime::diffusion::model::DiffusionModel;
use discl::runtime::diffusion::tokenizer::ClipTokenizer;
use discl::runtime::diffusion::{
    Condition, GenerationSettings, ImageNoise, ImageRequest, NoiseKey, VaeLatent,
};
use discl::runtime::onnx::SessionOptions;
use discl::runtime::scheduler::SchedulerKind;
use discl::runtime::ServiceStats;
use serde_json::Value;
use std::path::Path;
use std::sync::Arc;

const REPO: &str = env!("CARGO_MANIFEST_DIR");

fn fixture(name: &str) -> Value {
    serde_json::from_str(
        &std::fs::read_to_string(Path::new(REPO).join("tests/fixtures").join(name)).unwrap(),
    )
    .unwrap()
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

#[test]
fn clip_tokenizer_matches_transformers() {
    let tokens = fixture("clip_tokens.json");
    let tokenizer =
        ClipTokenizer::from_folder(&Path::new(REPO).join("models/tiny-sd/tokenizer")).unwrap();
    for case in tokens["cases"].as_array().unwrap() {
        let expected: Vec<u32> = case["input_ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as u32)
            .collect();
        let prompt = case["prompt"].as_str().unwrap();
        assert_eq!(
            tokenizer.encode(prompt).unwrap(),
            expected,
            "prompt {:?} ({})",
            prompt,
            case["name"]
        );
    }
}

fn kind(name: &str) -> SchedulerKind {
    SchedulerKind::from_class_name(name).unwrap()
}

/// The differences of discl's 8-bit image (its PNG) from a reference's, in 1/255: (max, mean).
fn byte_differences(image: &[f32], shape: [usize; 3], expected: &[u8]) -> (u8, f64) {
    let png = to_png(image, shape).unwrap();
    let decoded = image::load_from_memory(&png).unwrap().to_rgb8();
    // The reference is CHW; the PNG is HWC.
    let [c, h, w] = shape;
    let mut max = 0u8;
    let mut sum = 0u64;
    for (i, want) in expected.iter().enumerate() {
        let (ch, y, x) = (i / (h * w), i / w % h, i % w);
        let got = decoded.get_pixel(x as u32, y as u32)[ch];
        let d = got.abs_diff(*want);
        max = max.max(d);
        sum += u64::from(d);
    }
    assert_eq!(expected.len(), c * h * w);
    (max, sum as f64 / expected.len() as f64)
}

/// Whole runs against the reference: for tiny-sd, diffusers' own pipelines — img2img
/// unpatched (the VAE posterior sampled, both of its draws recorded and injected here), img2img
/// with the posterior's mean (`vae_latent = "mean"`) and text-to-image — compared as floats
/// and as the 8-bit images both write; for the pixel UNet, the scheduler loop.
#[test]
fn img2img_matches_the_diffusers_reference() {
    let reference = fixture("img2img_reference.json");
    for (name, model_ref) in reference["models"].as_object().unwrap() {
        let model = DiffusionModel::open(
            &Path::new(REPO).join("models").join(name),
            &SessionOptions::default(),
        )
        .unwrap();
        let shape = model.image_shape;
        let mut generator = Generator::new(model);
        let source = floats(&model_ref["source_image"]);
        let condition = match model_ref.get("prompt") {
            Some(p) => Condition::Prompt(p.as_str().unwrap().to_string()),
            None => Condition::Class(model_ref["class_label"].as_i64().unwrap()),
        };
        for case in model_ref["cases"].as_array().unwrap() {
            let strength = case["strength"].as_f64().unwrap();
            let level = ((1.0 - strength) * 1000.0).round() as u16;
            let vae_latent = match case.get("vae_latent").and_then(Value::as_str) {
                Some(mode) => mode.parse().unwrap(),
                None => VaeLatent::default(),
            };
            let mut settings = GenerationSettings {
                steps: model_ref["num_inference_steps"].as_u64().unwrap() as usize,
                guidance_scale: model_ref["guidance_scale"].as_f64().unwrap() as f32,
                scheduler: kind(case["scheduler"].as_str().unwrap()),
                batch_size: 4,
                vae_latent,
            };
            let request = ImageRequest {
                source: Some((Digest::of(b"reference source"), Arc::new(source.clone()))),
                condition: condition.clone(),
                level,
                noise: NoiseKey {
                    pipeline_seed: 0,
                    sample: 0,
                    level,
                    seed_index: 0,
                },
            };
            // diffusers' sampled img2img drew both noises from its generator; the other runs
            // took the fixture's `noise`.
            let sampled = case["vae_latent"] == "sample";
            let noise = if sampled {
                ImageNoise {
                    add: floats(&model_ref["add_noise"]),
                    posterior: Some(floats(&model_ref["posterior_noise"])),
                }
            } else {
                ImageNoise {
                    add: floats(&model_ref["noise"]),
                    posterior: None,
                }
            };
            let stats = ServiceStats::default();
            let images = generator
                .generate_from_noise(
                    std::slice::from_ref(&request),
                    vec![noise.clone()],
                    &settings,
                    &stats,
                )
                .unwrap();
            let expected = floats(&case["image"]);
            let scale = expected.iter().fold(1.0f32, |m, v| m.max(v.abs()));
            let worst = images[0]
                .iter()
                .zip(&expected)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max);
            let what = format!(
                "{name} {} strength {strength} vae_latent {}",
                case["scheduler"], case["vae_latent"]
            );
            assert_eq!(images[0].len(), expected.len(), "{what}");
            assert!(
                worst <= 2e-4 * scale,
                "{what}: worst difference {worst} (scale {scale})"
            );
            assert_eq!(
                stats.snapshot().2,
                case["unet_calls"].as_u64().unwrap(),
                "{what}: UNet calls"
            );
            let Some(bytes) = case.get("image_u8") else {
                continue;
            };
            let bytes: Vec<u8> = bytes
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as u8)
                .collect();
            let (max, mean) = byte_differences(&images[0], shape, &bytes);
            // Images in [-1, 1]: one 1/255 step is 2/255 wide.
            let float_max = worst * 127.5;
            println!(
                "{what}: whole run vs diffusers: 8-bit max {max}/255, mean {mean:.5}/255; \
                 before rounding max {float_max:.5}/255"
            );
            // Rounding to 8 bits can split values that differ in the 6th digit.
            assert!(max <= 1, "{what}: 8-bit images differ by up to {max}/255");
            if sampled {
                // The posterior's mean instead (discl before `vae_latent`) cannot land there.
                settings.vae_latent = VaeLatent::Mean;
                let mean_images = generator
                    .generate_from_noise(&[request], vec![noise], &settings, &stats)
                    .unwrap();
                let (max, mean) = byte_differences(&mean_images[0], shape, &bytes);
                println!("{what}: the posterior's mean instead: max {max}/255, mean {mean:.5}/255");
                assert!(max >= 16, "{what}: the mean lands within {max}/255");
            }
        }
    }
}
