//! The quality scorer against references computed outside discl
//! (`tests/fixtures/clip_reference.json`, written by `scripts/models/make_tiny_clip.py`):
//! transformers' CLIPProcessor + CLIPModel for the shipped tiny CLIP export, PIL's resampling,
//! and onnxruntime + numpy for the shipped judge. Also the service worker and bad folders.

use discl::record::Digest;
use discl::runtime::onnx::SessionOptions;
use discl::runtime::scorer::preprocess::{ClipImageConfig, PREPROCESSOR_FILE};
use discl::runtime::scorer::resample::{resize, Filter};
use discl::runtime::scorer::text::PromptTokenizer;
use discl::runtime::scorer::{
    cosine, QualityScore, ScoreItem, Scorer, ScorerError, ScorerKind, SourceImage, TextQuery,
};
use discl::runtime::service::Wake;
use discl::runtime::InferenceService;
use serde_json::Value as Json;
use std::path::{Path, PathBuf};
use std::sync::Arc;

const REPO: &str = env!("CARGO_MANIFEST_DIR");
const TOLERANCE: f64 = 1e-4;

fn repo(path: &str) -> PathBuf {
    Path::new(REPO).join(path)
}

fn fixture() -> Json {
    let file = repo("tests/fixtures/clip_reference.json");
    serde_json::from_str(&std::fs::read_to_string(file).unwrap()).unwrap()
}

fn floats(v: &Json) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

fn rows(v: &Json) -> Vec<Vec<f64>> {
    v.as_array().unwrap().iter().map(floats).collect()
}

fn strings(v: &Json) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap().to_string())
        .collect()
}

/// The largest absolute difference between our rows and the reference's.
fn max_diff(ours: &[Vec<f32>], reference: &[Vec<f64>]) -> f64 {
    assert_eq!(ours.len(), reference.len());
    ours.iter()
        .zip(reference)
        .flat_map(|(a, b)| {
            assert_eq!(a.len(), b.len());
            a.iter().zip(b).map(|(x, y)| (f64::from(*x) - y).abs())
        })
        .fold(0.0, f64::max)
}

fn cosines(a: &[Vec<f32>], b: &[Vec<f32>]) -> Vec<Vec<f32>> {
    a.iter()
        .map(|x| b.iter().map(|y| cosine(x, y)).collect())
        .collect()
}

fn open(folder: &Path) -> Scorer {
    Scorer::open(folder, &SessionOptions::default()).unwrap()
}

fn prompts(clip: &Json) -> Vec<TextQuery> {
    strings(&clip["prompts"])
        .into_iter()
        .map(TextQuery::Prompt)
        .collect()
}

#[test]
fn tiny_clip_tokenizes_and_prepares_images_as_transformers_does() {
    let fixture = fixture();
    let clip = &fixture["clip"];
    let folder = repo("models/tiny-clip");
    let tokenizer = PromptTokenizer::open(&folder, Some(77)).unwrap();
    let texts = strings(&clip["prompts"]);
    let views: Vec<&str> = texts.iter().map(String::as_str).collect();
    let batch = tokenizer.batch(&views).unwrap();
    let flat = |v: &Json| -> Vec<i64> {
        v.as_array()
            .unwrap()
            .iter()
            .flat_map(|r| r.as_array().unwrap().iter().map(|x| x.as_i64().unwrap()))
            .collect()
    };
    assert_eq!(batch.ids, flat(&clip["input_ids"]));
    assert_eq!(batch.mask, flat(&clip["attention_mask"]));

    let config = ClipImageConfig::load(&folder.join(PREPROCESSOR_FILE)).unwrap();
    let scorer = open(&folder);
    let mut worst = 0.0f64;
    for image in clip["images"].as_array().unwrap() {
        let path = repo(image["path"].as_str().unwrap());
        let bytes = std::fs::read(&path).unwrap();
        // The 8-bit stage (RGB, resize, crop) is exact.
        let rgb = image::load_from_memory(&bytes).unwrap().to_rgb8();
        let crop: Vec<u8> = image["crop_rgb_hwc"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u8)
            .collect();
        assert_eq!(
            config.resize_and_crop(&rgb).as_raw(),
            &crop,
            "{}",
            path.display()
        );
        let mut pixels = Vec::new();
        scorer.prepare_image(&bytes, &mut pixels).unwrap();
        worst = worst.max(max_diff(&[pixels], &[floats(&image["pixel_values"])]));
    }
    // The reference is rounded to 7 decimals.
    println!("pixel_values max abs diff vs transformers: {worst:.2e}");
    assert!(worst < 1e-6, "{worst}");
}

#[test]
fn tiny_clip_reproduces_transformers_embeddings_and_cosines() {
    let fixture = fixture();
    let clip = &fixture["clip"];
    let mut scorer = open(&repo("models/tiny-clip"));
    assert_eq!((scorer.kind(), scorer.classes()), (ScorerKind::Clip, None));
    let texts = scorer.embed_texts(&prompts(clip)).unwrap();
    let paths: Vec<PathBuf> = clip["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| repo(i["path"].as_str().unwrap()))
        .collect();
    let images = scorer.embed_image_files(&paths).unwrap();
    let diffs = [
        ("text_embeds", max_diff(&texts, &rows(&clip["text_embeds"]))),
        (
            "image_embeds",
            max_diff(&images, &rows(&clip["image_embeds"])),
        ),
        (
            "text_scores",
            max_diff(&cosines(&images, &texts), &rows(&clip["text_scores"])),
        ),
        (
            "image_scores",
            max_diff(&cosines(&images, &images), &rows(&clip["image_scores"])),
        ),
    ];
    println!("tiny-clip max abs diff vs transformers: {diffs:?}");
    for (what, diff) in diffs {
        assert!(diff < TOLERANCE, "{what}: {diff}");
    }
    assert_eq!(scorer.model_calls(), 2);
    // Prompts are embedded once: asking again (in any order, with repeats) calls no model.
    let mut again = prompts(clip);
    again.reverse();
    again.push(again[0].clone());
    let cached = scorer.embed_texts(&again).unwrap();
    assert_eq!(
        (scorer.model_calls(), cached[0].clone()),
        (2, texts[2].clone())
    );
    // A CLIP export has no class table.
    let err = scorer.embed_texts(&[TextQuery::Class(0)]).unwrap_err();
    assert!(err.to_string().contains("no class table"), "{err}");
}

#[test]
fn resampling_matches_pil_for_every_filter() {
    let fixture = fixture();
    let reference = &fixture["resample"];
    let img = image::open(repo(reference["path"].as_str().unwrap()))
        .unwrap()
        .to_rgb8();
    let size = reference["width_height"].as_array().unwrap();
    let (w, h) = (
        size[0].as_u64().unwrap() as u32,
        size[1].as_u64().unwrap() as u32,
    );
    for (code, expected) in reference["filters"].as_object().unwrap() {
        let filter = Filter::from_pil(code.parse().unwrap()).unwrap();
        let ours = resize(&img, w, h, filter);
        let expected: Vec<u8> = expected["rgb_hwc"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u8)
            .collect();
        let off = ours
            .as_raw()
            .iter()
            .zip(&expected)
            .filter(|(a, b)| a != b)
            .count();
        assert_eq!(
            off,
            0,
            "{filter:?}: {off} of {} values differ from PIL",
            expected.len()
        );
        if filter == Filter::Bicubic {
            // For the record: the image crate's Catmull-Rom (also a = -0.5) is not PIL's bicubic.
            let theirs =
                image::imageops::resize(&img, w, h, image::imageops::FilterType::CatmullRom);
            let diffs: Vec<i32> = theirs
                .as_raw()
                .iter()
                .zip(&expected)
                .map(|(a, b)| i32::from(*a) - i32::from(*b))
                .collect();
            let off = diffs.iter().filter(|d| **d != 0).count();
            let worst = diffs.iter().map(|d| d.abs()).max().unwrap();
            println!("image crate CatmullRom vs PIL bicubic: {off} of {} values differ, by up to {worst}", diffs.len());
        }
    }
}

#[test]
fn the_judge_reproduces_onnxruntime_and_numpy() {
    let fixture = fixture();
    let judge = &fixture["judge"];
    let folder = repo("models/fashion-judge");
    let mut scorer = open(&folder);
    assert_eq!(scorer.kind(), ScorerKind::Judge);
    assert_eq!(scorer.classes().unwrap().len(), 10);
    let paths: Vec<PathBuf> = strings(&judge["images"]).iter().map(|p| repo(p)).collect();
    let images = scorer.embed_image_files(&paths).unwrap();
    let classes: Vec<TextQuery> = (0..10).map(TextQuery::Class).collect();
    let texts = scorer.embed_texts(&classes).unwrap();
    let table: Json =
        serde_json::from_str(&std::fs::read_to_string(folder.join("text_embeds.json")).unwrap())
            .unwrap();
    assert!(max_diff(&texts, &rows(&table["embeds"])) < 1e-7);
    let diffs = [
        (
            "image_embeds",
            max_diff(&images, &rows(&judge["image_embeds"])),
        ),
        (
            "text_scores",
            max_diff(&cosines(&images, &texts), &rows(&judge["text_scores"])),
        ),
        (
            "image_scores",
            max_diff(&cosines(&images, &images), &rows(&judge["image_scores"])),
        ),
    ];
    println!("fashion-judge max abs diff vs onnxruntime/numpy: {diffs:?}");
    for (what, diff) in diffs {
        assert!(diff < TOLERANCE, "{what}: {diff}");
    }
    // One image-encoder call; the table needs none.
    assert_eq!(scorer.model_calls(), 1);
    // The prompts the table was made from are answered; free text is refused, naming the table.
    let coat = scorer
        .embed_texts(&[TextQuery::Prompt("a photo of a coat".into())])
        .unwrap();
    assert_eq!(coat[0], texts[4]);
    let err = scorer
        .embed_texts(&[TextQuery::Prompt("a photo of a red coat".into())])
        .unwrap_err();
    assert!(matches!(err, ScorerError::Query(_)), "{err}");
    assert!(
        err.to_string().contains("text_embeds.json") && err.to_string().contains("no text encoder"),
        "{err}"
    );
    let err = scorer.embed_texts(&[TextQuery::Class(10)]).unwrap_err();
    assert!(err.to_string().contains("class 10 does not exist"), "{err}");
}

fn item(image: &Path, prompt: &str, source: Option<&Path>) -> ScoreItem {
    ScoreItem {
        image: image.to_path_buf(),
        text: TextQuery::Prompt(prompt.to_string()),
        source: source.map(|p| SourceImage {
            path: p.to_path_buf(),
            digest: None,
        }),
    }
}

#[test]
fn scores_batches_on_the_service_with_one_model_call_and_cached_prompts_and_sources() {
    let fixture = fixture();
    let clip = &fixture["clip"];
    let texts = strings(&clip["prompts"]);
    let paths: Vec<PathBuf> = clip["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| repo(i["path"].as_str().unwrap()))
        .collect();
    let text_scores = rows(&clip["text_scores"]);
    let image_scores = rows(&clip["image_scores"]);
    let items = vec![
        item(&paths[0], &texts[0], Some(&paths[2])),
        item(&paths[1], &texts[1], Some(&paths[2])),
        item(&paths[2], &texts[0], None),
        item(&repo("tests/fixtures/no-such.png"), &texts[2], None),
    ];
    let service = InferenceService::start("scorer", vec![open(&repo("models/tiny-clip"))]);
    let (tx, rx) = crossbeam_channel::unbounded();
    let wake: Wake = Arc::new(|| {});
    service.submit(1, items.clone(), &tx, &wake);
    let reply = rx.recv().unwrap();
    assert_eq!(reply.model_calls, 1);
    let check = |outputs: &[Result<QualityScore, String>]| {
        for (k, (i, t, s)) in [(0, 0, Some(2)), (1, 1, Some(2)), (2, 0, None)]
            .into_iter()
            .enumerate()
        {
            let got = outputs[k].as_ref().unwrap();
            assert!(
                (f64::from(got.text_score) - text_scores[i][t]).abs() < TOLERANCE,
                "{k}: {got:?}"
            );
            match (got.image_score, s) {
                (Some(score), Some(s)) => {
                    assert!((f64::from(score) - image_scores[i][s]).abs() < TOLERANCE)
                }
                (None, None) => {}
                other => panic!("{k}: {other:?}"),
            }
        }
        let err = outputs[3].as_ref().unwrap_err();
        assert!(err.contains("no-such.png"), "{err}");
    };
    check(&reply.outputs);
    // Again: prompts and the source come from the caches; the synthetic images need one call.
    service.submit(2, items, &tx, &wake);
    let reply = rx.recv().unwrap();
    assert_eq!(reply.model_calls, 1);
    check(&reply.outputs);
}

#[test]
fn the_worker_embeds_each_prompt_and_source_once_and_fails_items_alone() {
    let paths: Vec<PathBuf> = ["coat/test-0247.png", "sneaker/test-1151.png"]
        .iter()
        .map(|p| repo(&format!("tests/fixtures/fashion-tiny/{p}")))
        .collect();
    let mut judge = open(&repo("models/fashion-judge"));
    let source = SourceImage {
        path: paths[1].clone(),
        digest: Some(Digest::of(&std::fs::read(&paths[1]).unwrap())),
    };
    let items = vec![
        ScoreItem {
            image: paths[0].clone(),
            text: TextQuery::Class(4),
            source: Some(source.clone()),
        },
        ScoreItem {
            image: paths[1].clone(),
            text: TextQuery::Class(7),
            source: Some(source.clone()),
        },
        ScoreItem {
            image: paths[0].clone(),
            text: TextQuery::Prompt("a coat".into()),
            source: None,
        },
        ScoreItem {
            image: paths[0].clone(),
            text: TextQuery::Class(4),
            source: None,
        },
    ];
    let first = judge.score(&items);
    assert_eq!(judge.model_calls(), 1);
    assert_eq!(judge.cached_embeddings(), (2, 1));
    let err = first[2].as_ref().unwrap_err();
    assert!(err.contains("no text encoder"), "{err}");
    let (a, b, d) = (
        first[0].clone().unwrap(),
        first[1].clone().unwrap(),
        first[3].clone().unwrap(),
    );
    assert_eq!(a.text_score, d.text_score);
    assert!(
        (b.image_score.unwrap() - 1.0).abs() < 1e-6,
        "an image against itself: {b:?}"
    );
    // The source's digest finds its cached embedding without reading the file.
    let moved = SourceImage {
        path: repo("tests/fixtures/gone.png"),
        digest: source.digest,
    };
    let again = judge.score(&[ScoreItem {
        source: Some(moved),
        ..items[0].clone()
    }]);
    let again = again[0].clone().unwrap();
    assert!(
        (again.text_score - a.text_score).abs() < 1e-6,
        "{again:?} {a:?}"
    );
    assert!((again.image_score.unwrap() - a.image_score.unwrap()).abs() < 1e-6);
    assert_eq!(judge.model_calls(), 2);
    // With no room to cache, everything still scores the same.
    judge.set_cache_limits(0, 0);
    assert_eq!(judge.score(&items)[..2], first[..2]);
    assert_eq!(judge.cached_embeddings(), (0, 0));
}

/// Copies a model folder's files into a fresh temporary folder.
fn copy_model(name: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(repo(&format!("models/{name}"))).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, dir.path().join(path.file_name().unwrap())).unwrap();
    }
    dir
}

fn open_err(folder: &Path) -> ScorerError {
    Scorer::open(folder, &SessionOptions::default())
        .err()
        .expect("should fail")
}

fn edit_json(file: &Path, edit: impl FnOnce(&mut Json)) {
    let mut json: Json = serde_json::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
    edit(&mut json);
    std::fs::write(file, json.to_string()).unwrap();
}

#[test]
fn bad_folders_are_refused_naming_the_file() {
    // A CLIP export without its preprocessor config.
    let dir = copy_model("tiny-clip");
    std::fs::remove_file(dir.path().join(PREPROCESSOR_FILE)).unwrap();
    let err = open_err(dir.path()).to_string();
    assert!(
        err.contains("model.onnx has no preprocessor_config.json beside it"),
        "{err}"
    );

    // A resampling filter we do not reproduce.
    let dir = copy_model("tiny-clip");
    let file = dir.path().join(PREPROCESSOR_FILE);
    edit_json(&file, |j| j["resample"] = 0.into());
    let err = open_err(dir.path());
    assert!(matches!(err, ScorerError::UnknownResample { .. }), "{err}");
    assert!(
        err.to_string().starts_with(&file.display().to_string()),
        "{err}"
    );

    // A crop that does not fit the vision model.
    let dir = copy_model("tiny-clip");
    edit_json(&dir.path().join(PREPROCESSOR_FILE), |j| {
        j["crop_size"] = serde_json::json!({"height": 64, "width": 64})
    });
    let err = open_err(dir.path()).to_string();
    assert!(
        err.contains("prepares 64x64 images but config.json's vision model takes 32x32"),
        "{err}"
    );

    // A judge whose table does not match its classes.
    let dir = copy_model("fashion-judge");
    let table = dir.path().join("text_embeds.json");
    edit_json(&table, |j| {
        j["embeds"].as_array_mut().unwrap().pop();
        j["prompts"].as_array_mut().unwrap().pop();
    });
    let err = open_err(dir.path());
    assert!(matches!(err, ScorerError::BadFile { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("text_embeds.json: has 9 embeddings for the 10 classes of discl.toml"),
        "{err}"
    );

    // A judge whose table has the wrong width for its image encoder.
    let dir = copy_model("fashion-judge");
    edit_json(&dir.path().join("text_embeds.json"), |j| {
        for row in j["embeds"].as_array_mut().unwrap() {
            row.as_array_mut().unwrap().pop();
        }
    });
    let err = open_err(dir.path()).to_string();
    assert!(
        err.contains("model.onnx") && err.contains("text embeddings have 63 values"),
        "{err}"
    );

    // A classifier is not a scorer.
    let err = open_err(&repo("models/fashion-cnn")).to_string();
    assert!(
        err.contains("discl.toml") && err.contains("not a scorer"),
        "{err}"
    );
}
