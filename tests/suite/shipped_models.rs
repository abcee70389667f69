//! Every shipped model loads through the project's runtime, declares the inputs and outputs
//! its metadata promises, and gives a known output on the shipped test images.

use crate::common;

use common::*;
use discl::record::Digest;
use discl::runtime::classifier::{score_logits, Classifier};
use discl::runtime::diffusion::img2img::Generator;
use discl::runtime::diffusion::model::{Conditioning, DiffusionModel, TimestepShape};
use discl::runtime::diffusion::{Condition, GenerationSettings, ImageRequest, NoiseKey, VaeLatent};
use discl::runtime::image_input::{decode_into, ImageSpec};
use discl::runtime::onnx::{self, SessionOptions};
use discl::runtime::scheduler::SchedulerKind;
use discl::runtime::scorer::{cosine, Scorer, ScorerKind, TextQuery};
use discl::runtime::{ModelMeta, ServiceStats};
use ort::value::TensorRef;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Every fixture image with its class index, in a fixed order.
fn fixture_images(classes: &[String]) -> Vec<(PathBuf, usize)> {
    let mut out = Vec::new();
    for (label, class) in classes.iter().enumerate() {
        let mut files: Vec<PathBuf> = std::fs::read_dir(fixture().join(class))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        out.extend(files.into_iter().map(|f| (f, label)));
    }
    out
}

fn pixels(images: &[(PathBuf, usize)], spec: &ImageSpec) -> Vec<f32> {
    let mut out = Vec::new();
    for (path, _) in images {
        decode_into(&std::fs::read(path).unwrap(), spec, &mut out).unwrap();
    }
    out
}

#[test]
fn fashion_cnn_classifies_the_fixture() {
    let cnn = Classifier::open(&classifier(), &SessionOptions::default()).unwrap();
    let (meta, _) = ModelMeta::load(&classifier()).unwrap();
    assert_eq!(
        (
            meta.input.as_str(),
            meta.output("logits").unwrap(),
            meta.output("features").unwrap()
        ),
        ("input", "logits", "features")
    );
    let images = fixture_images(&meta.classes);
    let rows = cnn
        .logits(&pixels(&images, cnn.spec()), images.len())
        .unwrap();
    let correct = rows
        .iter()
        .zip(&images)
        .filter(|(row, (_, label))| score_logits(row, *label).predicted == *label)
        .count();
    // 80.4% on the official test set (models/fashion-cnn/metrics.json); the fixture is a sample of it.
    assert!((80..=110).contains(&correct), "{correct}/120 correct");
    // Trousers are this model's best class (98.9%).
    let trousers = &rows[12..24];
    assert!(trousers
        .iter()
        .all(|row| score_logits(row, 1).predicted == 1));
}

/// The shipped judge: its session, input spec and class-prompt embeddings.
struct Judge {
    session: ort::session::Session,
    spec: ImageSpec,
    prompts: Vec<Vec<f32>>,
}

impl Judge {
    fn open() -> Judge {
        let folder = Path::new(REPO).join("models/fashion-judge");
        let (meta, _) = ModelMeta::load(&folder).unwrap();
        let session =
            onnx::open_session(&folder.join(&meta.onnx), &SessionOptions::default()).unwrap();
        let text: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(folder.join("text_embeds.json")).unwrap(),
        )
        .unwrap();
        let prompts = text["embeds"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                let values = e.as_array().unwrap().iter();
                values.map(|v| v.as_f64().unwrap() as f32).collect()
            })
            .collect();
        let spec = meta.image_spec();
        Judge {
            session,
            spec,
            prompts,
        }
    }

    /// The class whose prompt each image (normalised by the judge's spec, CHW) is nearest.
    fn best(&mut self, x: &[f32]) -> Vec<usize> {
        let n = x.len() / self.spec.len();
        let shape = [n, self.spec.channels, self.spec.height, self.spec.width];
        let input = TensorRef::from_array_view((shape, x)).unwrap();
        let out = self
            .session
            .run(ort::inputs!["pixel_values" => input])
            .unwrap();
        let (_, embeds) = out["image_embeds"].try_extract_tensor::<f32>().unwrap();
        let prompts = &self.prompts;
        (0..n)
            .map(|k| {
                let e = &embeds[k * 64..(k + 1) * 64];
                (0..prompts.len())
                    .max_by(|&i, &j| cosine(e, &prompts[i]).total_cmp(&cosine(e, &prompts[j])))
                    .unwrap()
            })
            .collect()
    }
}

#[test]
fn fashion_judge_scores_images_against_its_prompts() {
    let folder = Path::new(REPO).join("models/fashion-judge");
    let mut judge = Judge::open();
    let inputs = onnx::inputs(&judge.session);
    let outputs = onnx::outputs(&judge.session);
    assert_eq!(
        (inputs[0].name.as_str(), inputs[0].shape.as_slice()),
        ("pixel_values", &[-1, 1, 28, 28][..])
    );
    assert_eq!(
        (outputs[0].name.as_str(), outputs[0].shape.as_slice()),
        ("image_embeds", &[-1, 64][..])
    );
    assert_eq!(judge.prompts.len(), 10);
    let (meta, _) = ModelMeta::load(&folder).unwrap();
    let images = fixture_images(&meta.classes);
    let x = pixels(&images, &judge.spec.clone());
    let best = judge.best(&x);
    let correct = images
        .iter()
        .zip(&best)
        .filter(|((_, label), best)| label == *best)
        .count();
    // 90.5% on the official test set.
    assert!(correct >= 96, "{correct}/120 matched their own prompt best");
}

/// The generator at λ = 0 (class only, DDIM 25 steps, the guidance `training/selection.json`
/// chose): the judge recognises the intended class of 4 images per class at least 80% of the
/// time (93% over 2 × 500 images in the selection).
#[test]
fn fashion_unet_makes_images_the_judge_recognises() {
    let folder = Path::new(REPO).join("models/fashion-unet");
    let model = DiffusionModel::open(&folder, &SessionOptions::default()).unwrap();
    let mut generator = Generator::new(model);
    let settings = GenerationSettings {
        steps: 25,
        guidance_scale: 1.25,
        scheduler: SchedulerKind::Ddim,
        batch_size: 8,
        vae_latent: VaeLatent::default(),
    };
    let requests: Vec<ImageRequest> = (0..40u64)
        .map(|i| ImageRequest {
            source: None,
            condition: Condition::Class((i % 10) as i64),
            level: 0,
            noise: NoiseKey {
                pipeline_seed: 0,
                sample: i,
                level: 0,
                seed_index: 0,
            },
        })
        .collect();
    let out = generator
        .generate(&requests, &settings, &ServiceStats::default())
        .unwrap();
    let mut judge = Judge::open();
    // Generator pixels are in [-1, 1]; the judge wants (x/255 - mean) / std.
    let (mean, std) = (judge.spec.mean[0], judge.spec.std[0]);
    let x: Vec<f32> = out
        .iter()
        .flat_map(|image| {
            image
                .iter()
                .map(move |v| ((v.clamp(-1.0, 1.0) + 1.0) / 2.0 - mean) / std)
        })
        .collect();
    let best = judge.best(&x);
    let correct = best
        .iter()
        .enumerate()
        .filter(|(i, b)| i % 10 == **b)
        .count();
    assert!(correct >= 32, "the judge recognised {correct}/40");
}

#[test]
fn fashion_unet_stays_close_to_its_source_at_high_lambda() {
    let folder = Path::new(REPO).join("models/fashion-unet");
    let model = DiffusionModel::open(&folder, &SessionOptions::default()).unwrap();
    let io = &model.unet_io;
    assert_eq!(
        (
            io.sample.as_str(),
            io.timestep.as_str(),
            io.condition.as_str(),
            io.output.as_str()
        ),
        ("sample", "timestep", "class_labels", "out_sample")
    );
    assert_eq!(io.timestep_shape, TimestepShape::PerItem);
    assert!(matches!(
        model.conditioning,
        Conditioning::Class { null_class: 10 }
    ));
    assert_eq!(
        (model.latent_shape, model.image_shape),
        ([1, 28, 28], [1, 28, 28])
    );
    let mut generator = Generator::new(model);
    let (meta, _) = ModelMeta::load(&classifier()).unwrap();
    let images = fixture_images(&meta.classes);
    let spec = ImageSpec {
        channels: 1,
        height: 28,
        width: 28,
        mean: vec![0.5],
        std: vec![0.5],
    };
    let settings = GenerationSettings {
        steps: 25,
        guidance_scale: 2.0,
        scheduler: SchedulerKind::Ddim,
        batch_size: 8,
        vae_latent: VaeLatent::default(),
    };
    // λ = 0.9 from a real image stays near it; λ = 0 makes a new image.
    let requests: Vec<ImageRequest> = [(0usize, 900u16), (30, 900), (60, 900), (0, 0)]
        .iter()
        .map(|&(i, level)| {
            let source = pixels(&images[i..i + 1], &spec);
            ImageRequest {
                source: Some((
                    Digest::of(images[i].0.to_str().unwrap().as_bytes()),
                    Arc::new(source),
                )),
                condition: Condition::Class(images[i].1 as i64),
                level,
                noise: NoiseKey {
                    pipeline_seed: 0,
                    sample: i as u64,
                    level,
                    seed_index: 0,
                },
            }
        })
        .collect();
    let out = generator
        .generate(&requests, &settings, &ServiceStats::default())
        .unwrap();
    let distance = |a: &[f32], b: &[f32]| {
        a.iter()
            .zip(b)
            .map(|(x, y)| (x.clamp(-1.0, 1.0) - y).abs())
            .sum::<f32>()
            / a.len() as f32
            / 2.0
    };
    for (k, &i) in [0usize, 30, 60].iter().enumerate() {
        let d = distance(&out[k], &pixels(&images[i..i + 1], &spec));
        assert!(d < 0.08, "λ = 0.9 image {i} is {d} from its source");
    }
    let d = distance(&out[3], &pixels(&images[0..1], &spec));
    assert!(d > 0.08, "λ = 0 should not copy the source ({d})");
}

#[test]
fn tiny_clip_is_an_optimum_clip_export_and_scores_a_known_cosine() {
    let folder = Path::new(REPO).join("models/tiny-clip");
    // The layout optimum writes for zero-shot-image-classification.
    for file in [
        "model.onnx",
        "config.json",
        "preprocessor_config.json",
        "tokenizer.json",
        "vocab.json",
        "merges.txt",
        "tokenizer_config.json",
        "special_tokens_map.json",
    ] {
        assert!(folder.join(file).is_file(), "{file} is missing");
    }
    let session =
        onnx::open_session(&folder.join("model.onnx"), &SessionOptions::default()).unwrap();
    let names = |decls: Vec<onnx::TensorDecl>| -> Vec<(String, Vec<i64>)> {
        decls.into_iter().map(|d| (d.name, d.shape)).collect()
    };
    assert_eq!(
        names(onnx::inputs(&session)),
        [
            ("input_ids".to_string(), vec![-1, -1]),
            ("pixel_values".to_string(), vec![-1, -1, -1, -1]),
            ("attention_mask".to_string(), vec![-1, -1]),
        ]
    );
    let outputs = names(onnx::outputs(&session));
    assert!(outputs.contains(&("text_embeds".to_string(), vec![-1, 16])));
    assert!(outputs.contains(&("image_embeds".to_string(), vec![-1, 16])));
    // Through the runtime: transformers' raw cosine for the first fixture coat and its prompt
    // (tests/fixtures/clip_reference.json; random weights, so the value means nothing).
    let mut scorer = Scorer::open(&folder, &SessionOptions::default()).unwrap();
    assert_eq!(scorer.kind(), ScorerKind::Clip);
    let text = scorer
        .embed_texts(&[TextQuery::Prompt("a photo of a coat".into())])
        .unwrap();
    let image = scorer
        .embed_image_files(&[fixture().join("coat/test-0247.png")])
        .unwrap();
    assert_eq!(text[0].len(), 16);
    let score = cosine(&image[0], &text[0]);
    assert!((score - 0.0357225).abs() < 1e-4, "{score}");
}

#[test]
fn the_learner_exports_a_drop_in_for_fashion_cnn() {
    use discl::runtime::learner::{Learner, LearnerConfig, LearnerImage, TrainRow};
    // The learner a `train` node builds `like = "classifier"`: fashion-cnn's shape, input spec
    // and classes (src/trainer/plan.rs), trained a little on the fixture.
    let (shipped, _) = ModelMeta::load(&classifier()).unwrap();
    let config = LearnerConfig {
        image: shipped.image_spec(),
        ..LearnerConfig::fashion()
    };
    let images = fixture_images(&shipped.classes);
    let rows: Vec<TrainRow> = images
        .iter()
        .map(|(path, label)| TrainRow::new(path.clone(), *label))
        .collect();
    let mut learner = Learner::new(config, shipped.classes.clone()).unwrap();
    learner.train_epoch(&rows).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("learner");
    learner.export_onnx(&folder).unwrap();

    // The same metadata and the same ONNX interface as the shipped classifier …
    let (exported, _) = ModelMeta::load(&folder).unwrap();
    assert_eq!(
        (&exported.kind, &exported.input, exported.input_shape),
        (&shipped.kind, &shipped.input, shipped.input_shape)
    );
    assert_eq!(
        (&exported.mean, &exported.std),
        (&shipped.mean, &shipped.std)
    );
    assert_eq!(exported.classes, shipped.classes);
    assert_eq!(exported.outputs, shipped.outputs);
    let decls = |folder: &Path, meta: &ModelMeta| {
        let session =
            onnx::open_session(&folder.join(&meta.onnx), &SessionOptions::default()).unwrap();
        let names = |d: Vec<onnx::TensorDecl>| -> Vec<(String, String, Vec<i64>)> {
            d.into_iter()
                .map(|d| (d.name, d.element, d.shape))
                .collect()
        };
        (
            names(onnx::inputs(&session)),
            names(onnx::outputs(&session)),
        )
    };
    assert_eq!(decls(&folder, &exported), decls(&classifier(), &shipped));
    // … and, opened as the classify operator opens a model, it gives the learner's own logits.
    let exported_cnn = Classifier::open(&folder, &SessionOptions::default()).unwrap();
    let logits = exported_cnn
        .logits(&pixels(&images, exported_cnn.spec()), images.len())
        .unwrap();
    let files: Vec<LearnerImage> = rows.iter().map(|r| r.image.clone()).collect();
    let own = learner.logits(&files).unwrap();
    let diff = logits
        .iter()
        .flatten()
        .zip(own.iter().flatten())
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    assert!(
        diff < 1e-4,
        "exported logits differ from the learner's by {diff}"
    );
}
