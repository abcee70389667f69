//! The diffusion runtime against references made with diffusers and transformers
//! (`scripts/models/dump_img2img_reference.py`, `dump_clip_tokens.py`) on the shipped tiny
//! models: CLIP token ids, and whole img2img / text-to-image runs with recorded noise.

use discl::record::Digest;
use discl::runtime::diffusion::img2img::Generator;
use discl::runtime::diffusion::model::DiffusionModel;
use discl::runtime::diffusion::tokenizer::ClipTokenizer;
use discl::runtime::diffusion::{Condition, GenerationSettings, ImageRequest, NoiseKey};
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

#[test]
fn img2img_matches_the_diffusers_reference() {
    let reference = fixture("img2img_reference.json");
    for (name, model_ref) in reference["models"].as_object().unwrap() {
        let model = DiffusionModel::open(
            &Path::new(REPO).join("models").join(name),
            &SessionOptions::default(),
        )
        .unwrap();
        let mut generator = Generator::new(model);
        let source = floats(&model_ref["source_image"]);
        let noise = floats(&model_ref["noise"]);
        let condition = match model_ref.get("prompt") {
            Some(p) => Condition::Prompt(p.as_str().unwrap().to_string()),
            None => Condition::Class(model_ref["class_label"].as_i64().unwrap()),
        };
        for case in model_ref["cases"].as_array().unwrap() {
            let strength = case["strength"].as_f64().unwrap();
            let level = ((1.0 - strength) * 1000.0).round() as u16;
            let settings = GenerationSettings {
                steps: model_ref["num_inference_steps"].as_u64().unwrap() as usize,
                guidance_scale: model_ref["guidance_scale"].as_f64().unwrap() as f32,
                scheduler: kind(case["scheduler"].as_str().unwrap()),
                batch_size: 4,
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
            let stats = ServiceStats::default();
            let images = generator
                .generate_from_noise(&[request], vec![noise.clone()], &settings, &stats)
                .unwrap();
            let expected = floats(&case["image"]);
            let scale = expected.iter().fold(1.0f32, |m, v| m.max(v.abs()));
            let worst = images[0]
                .iter()
                .zip(&expected)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max);
            let what = format!("{name} {} strength {strength}", case["scheduler"]);
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
        }
    }
}
