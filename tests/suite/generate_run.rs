//! `generate` end to end on the shipped tiny diffusion models: the spectrum is made once,
//! reruns make no UNet call, a changed level regenerates exactly that level, images are the
//! same bits whatever the batch size, bad input is named, and `vae_latent` keys exactly the
//! images it decides.

use crate::common;

use common::*;
use discl::{Pipeline, RunOptions, RunSummary};
use std::path::Path;

pub(crate) fn pipeline(out: &Path, model: &str, generate: &str) -> String {
    format!(
        r#"[pipeline]
name = "gen"
output = "{out}"
seed = 7

[models.cnn]
path = "{repo}/models/fashion-cnn"

[models.gen]
path = "{repo}/models/{model}"

[nodes.train]
op = "source"
format = "image_folder"
path = "{fixture}"

[nodes.scores]
op = "classify"
inputs = ["train"]
model = "cnn"

[nodes.hard]
op = "hard"
inputs = ["train", "scores"]
rules = [{{ top_k_loss = 3 }}]

[nodes.synthetic]
op = "generate"
inputs = ["hard"]
model = "gen"
classes_from = "cnn"
{generate}

[nodes.out]
op = "sink"
inputs = ["hard", "synthetic"]
formats = ["jsonl", "parquet"]
"#,
        out = out.display(),
        repo = REPO,
        fixture = fixture().display(),
    )
}

pub(crate) fn run(text: &str) -> RunSummary {
    let pipeline = Pipeline::from_toml("gen.toml", text).unwrap_or_else(|e| panic!("{e}"));
    pipeline
        .run(&RunOptions {
            timely_args: vec!["-w".into(), "2".into()],
            progress: false,
            ..Default::default()
        })
        .unwrap_or_else(|e| panic!("{e}"))
}

const PIXEL: &str =
    "levels = [0.0, 0.5, 0.9]\nseeds = 2\nsteps = 10\nguidance_scale = 2.0\nbatch_size = 4";

#[test]
fn spectrum_is_made_once_and_a_changed_level_regenerates_only_that_level() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    // Two runners whatever the cores, so the calls below are the same on any machine.
    let two_runners =
        |text: String| text.replace("tiny-pixel-unet\"", "tiny-pixel-unet\"\nsessions = 2");
    let first = run(&two_runners(pipeline(&out, "tiny-pixel-unet", PIXEL)));
    let synthetic = &first.nodes["synthetic"];
    // 3 hard samples × 3 levels × 2 seeds.
    assert_eq!(
        (
            synthetic.records_out,
            synthetic.computed,
            synthetic.cache_hits
        ),
        (18, 18, 0)
    );
    // Per-item timesteps: 6 images × (10 + 5 + 1) = 96 image-steps, in calls of up to 4
    // images. The 18 images go as two jobs of 9, one per runner, (a complete version's requests
    // are spread over the runners). Each UNet batch runs to the end and is stored before the
    // next starts (a kill loses one batch at most), level by level: the partly filled batches
    // where a job's levels meet make 42 calls (32 when one job of 16 and one of 2 left a
    // runner nearly idle).
    assert_eq!(synthetic.model_calls, 42);
    let rows = read_jsonl(&out, "out", "synthetic");
    assert_eq!(rows.len(), 18);
    for row in &rows {
        let png = out.join(row["path"].as_str().unwrap());
        let bytes = std::fs::read(&png).unwrap();
        assert_eq!(
            discl::record::Digest::of(&bytes).to_hex(),
            row["digest"].as_str().unwrap()
        );
        let image = image::load_from_memory(&bytes).unwrap();
        assert_eq!((image.width(), image.height()), (28, 28));
        assert_eq!(
            row["key"]["prompt"],
            serde_json::Value::String(display_name(row["label"].as_str().unwrap()))
        );
    }
    // One contact sheet per hard sample: real image row + one row per level, a column per seed.
    let sheets: Vec<_> = std::fs::read_dir(out.join("report/spectrum"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(sheets.len(), 3);
    let sheet = image::open(&sheets[0]).unwrap();
    assert_eq!(
        (sheet.width(), sheet.height()),
        (2 * (56 + 2) + 2, 4 * (56 + 2) + 2)
    );

    let again = run(&two_runners(pipeline(&out, "tiny-pixel-unet", PIXEL)));
    let synthetic = &again.nodes["synthetic"];
    assert_eq!(
        (
            synthetic.model_calls,
            synthetic.computed,
            synthetic.cache_hits
        ),
        (0, 0, 18)
    );
    assert_eq!(read_jsonl(&out, "out", "synthetic"), rows);

    let changed = run(&pipeline(
        &out,
        "tiny-pixel-unet",
        &PIXEL.replace("0.5", "0.6"),
    ));
    let synthetic = &changed.nodes["synthetic"];
    assert_eq!(
        (synthetic.computed, synthetic.cache_hits),
        (6, 12),
        "only λ = 0.6 is new"
    );
    assert!(synthetic.model_calls > 0);
    let now = read_jsonl(&out, "out", "synthetic");
    let levels: std::collections::BTreeSet<u64> = now
        .iter()
        .map(|r| r["key"]["level"].as_u64().unwrap())
        .collect();
    assert_eq!(levels, [0, 600, 900].into());
    let unchanged = |rows: &[serde_json::Value]| -> Vec<serde_json::Value> {
        rows.iter()
            .filter(|r| r["key"]["level"] != 500 && r["key"]["level"] != 600)
            .cloned()
            .collect()
    };
    assert_eq!(unchanged(&now), unchanged(&rows));
}

fn display_name(class: &str) -> String {
    let meta = std::fs::read_to_string(classifier().join("discl.toml")).unwrap();
    let meta: toml::Table = toml::from_str(&meta).unwrap();
    let classes = meta["classes"].as_array().unwrap();
    let i = classes
        .iter()
        .position(|c| c.as_str() == Some(class))
        .unwrap();
    meta["display_names"].as_array().unwrap()[i]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn images_are_the_same_bits_whatever_the_batch_size() {
    for (model, settings) in [
        ("tiny-pixel-unet", "levels = [0.0, 0.3, 0.7]\nseeds = 2\nsteps = 8\nguidance_scale = 2.0"),
        ("tiny-sd", "levels = [0.0, 0.5]\nseeds = 2\nsteps = 6\nguidance_scale = 3.0\nscheduler = \"euler\""),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let mut manifests = Vec::new();
        let mut calls = Vec::new();
        // No batch_size: on the CPU the node measures 1, 2, 4, 8 images per call as it goes.
        for batch in ["1", "3", "8", "measured"] {
            let out = dir.path().join(format!("b{batch}"));
            let asked = match batch {
                "measured" => String::new(),
                n => format!("batch_size = {n}"),
            };
            let summary = run(&pipeline(&out, model, &format!("{settings}\n{asked}")));
            calls.push(summary.nodes["synthetic"].model_calls);
            let rows: Vec<(serde_json::Value, serde_json::Value)> = read_jsonl(&out, "out", "synthetic")
                .into_iter()
                .map(|r| (r["key"].clone(), r["digest"].clone()))
                .collect();
            manifests.push(rows);
        }
        assert!(!manifests[0].is_empty());
        assert_eq!(manifests[0], manifests[1], "{model}: batch 1 vs 3");
        assert_eq!(manifests[0], manifests[2], "{model}: batch 1 vs 8");
        assert_eq!(manifests[0], manifests[3], "{model}: batch 1 vs measured");
        // Measuring tries 2 images per call after three calls of 1, whatever it then keeps.
        assert!(calls[3] < calls[0], "{model}: UNet calls {calls:?}");
    }
}

#[test]
fn text_models_use_prompts_chosen_per_class() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let settings = "levels = [0.2, 0.6]\nseeds = 3\nsteps = 5\nbatch_size = 6\n\
                    [nodes.synthetic.prompts]\nshirt = [\"a shirt on a hanger\", \"a folded shirt\"]\n";
    let summary = run(&pipeline(&out, "tiny-sd", settings));
    let rows = read_jsonl(&out, "out", "synthetic");
    assert_eq!(rows.len() as u64, summary.nodes["synthetic"].records_out);
    assert_eq!(rows.len() % 6, 0);
    for row in &rows {
        let prompt = row["key"]["prompt"].as_str().unwrap();
        if row["label"] == "shirt" {
            assert!(
                ["a shirt on a hanger", "a folded shirt"].contains(&prompt),
                "{prompt}"
            );
        } else {
            assert_eq!(
                prompt,
                format!(
                    "a photo of a {}",
                    display_name(row["label"].as_str().unwrap())
                )
            );
        }
        let image = image::open(out.join(row["path"].as_str().unwrap())).unwrap();
        assert_eq!(
            (image.width(), image.height(), image.color().channel_count()),
            (32, 32, 3)
        );
    }
}

pub(crate) fn validate(text: &str) -> String {
    match Pipeline::from_toml("gen.toml", text).and_then(|p| p.validate()) {
        Ok(()) => String::new(),
        Err(e) => e.to_string(),
    }
}

#[test]
fn bad_generation_input_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let err = validate(&pipeline(&out, "tiny-pixel-unet", "levels = [0.5, 1.0]"));
    assert!(
        err.contains(
            "gen.toml:32: node `synthetic`: field `levels`: level λ = 1 is outside [0, 1)"
        ),
        "{err}"
    );

    // A UNet whose inputs do not fit: the classifier's ONNX file in a diffusion layout.
    let broken = dir.path().join("broken");
    let tiny = Path::new(REPO).join("models/tiny-pixel-unet");
    for file in [
        "model_index.json",
        "scheduler/scheduler_config.json",
        "unet/config.json",
    ] {
        std::fs::create_dir_all(broken.join(file).parent().unwrap()).unwrap();
        std::fs::copy(tiny.join(file), broken.join(file)).unwrap();
    }
    std::fs::copy(
        classifier().join("model.onnx"),
        broken.join("unet/model.onnx"),
    )
    .unwrap();
    let text = pipeline(&out, "tiny-pixel-unet", "levels = [0.5]").replace(
        &format!("{REPO}/models/tiny-pixel-unet"),
        broken.to_str().unwrap(),
    );
    let err = validate(&text);
    assert!(
        err.contains("models.gen:")
            && err.contains("broken/unet/model.onnx: UNet has no `sample` input"),
        "{err}"
    );

    std::fs::remove_file(broken.join("scheduler/scheduler_config.json")).unwrap();
    let err = validate(&text);
    assert!(
        err.contains("broken/scheduler/scheduler_config.json: missing scheduler config"),
        "{err}"
    );

    // Without `classes_from` the generator's own discl.toml names its classes…
    let text =
        pipeline(&out, "tiny-pixel-unet", "levels = [0.5]").replace("classes_from = \"cnn\"\n", "");
    assert_eq!(validate(&text), "");
    // …and a folder without one must be told.
    let bare = dir.path().join("bare");
    for file in [
        "model_index.json",
        "scheduler/scheduler_config.json",
        "unet/config.json",
        "unet/model.onnx",
    ] {
        std::fs::create_dir_all(bare.join(file).parent().unwrap()).unwrap();
        std::fs::copy(tiny.join(file), bare.join(file)).unwrap();
    }
    let err = validate(&text.replace(
        &format!("{REPO}/models/tiny-pixel-unet"),
        bare.to_str().unwrap(),
    ));
    assert!(
        err.contains(
            "node `synthetic`: the generator is class-conditional (10 classes): name them"
        ),
        "{err}"
    );
}

/// `vae_latent` on tiny-sd: the default samples the VAE posterior; switching to the mean
/// remakes exactly the images made from a source (λ > 0), whose content keys carry the mode,
/// and finds the images made from text alone (λ = 0) again.
#[test]
fn vae_latent_remakes_only_the_images_it_decides() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let settings = "levels = [0.0, 0.5]\nsteps = 4\nscheduler = \"ddim\"";
    let counts = |summary: &RunSummary| {
        let s = &summary.nodes["synthetic"];
        (s.computed, s.cache_hits)
    };
    let digests = || -> Vec<(u64, u64, String)> {
        let mut rows: Vec<_> = read_jsonl(&out, "out", "synthetic")
            .iter()
            .map(|r| {
                (
                    r["key"]["sample"].as_u64().unwrap(),
                    r["key"]["level"].as_u64().unwrap(),
                    r["digest"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        rows.sort();
        rows
    };
    // 3 hard samples × 2 levels.
    assert_eq!(counts(&run(&pipeline(&out, "tiny-sd", settings))), (6, 0));
    let sampled = digests();
    let mean = format!("{settings}\nvae_latent = \"mean\"");
    assert_eq!(counts(&run(&pipeline(&out, "tiny-sd", &mean))), (3, 3));
    let means = digests();
    for (s, m) in sampled.iter().zip(&means) {
        assert_eq!((s.0, s.1), (m.0, m.1));
        assert_eq!(s.2 == m.2, s.1 == 0, "sample {} at λ = {}‰", s.0, s.1);
    }
    // `sample` named is the default.
    let named = format!("{settings}\nvae_latent = \"sample\"");
    assert_eq!(counts(&run(&pipeline(&out, "tiny-sd", &named))), (0, 6));
    assert_eq!(digests(), sampled);
}

#[test]
fn vae_latent_is_checked() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let err = validate(&pipeline(
        &out,
        "tiny-pixel-unet",
        "levels = [0.5]\nvae_latent = \"mean\"",
    ));
    assert!(
        err.contains(
            "gen.toml:33: node `synthetic`: vae_latent = \"mean\" cannot apply: \
             the model has no VAE (a pixel-space UNet)"
        ),
        "{err}"
    );
    let err = validate(&pipeline(
        &out,
        "tiny-sd",
        "levels = [0.5]\nvae_latent = \"argmax\"",
    ));
    assert!(
        err.contains("unknown vae_latent `argmax` (expected \"sample\" or \"mean\")"),
        "{err}"
    );
    for mode in ["sample", "mean"] {
        let text = pipeline(
            &out,
            "tiny-sd",
            &format!("levels = [0.5]\nvae_latent = \"{mode}\""),
        );
        assert_eq!(validate(&text), "", "{mode}");
    }
}

/// `quantize = "int8"` on tiny-sd: the int8 UNet is made once under the output folder and
/// reused; its images are keyed apart from the float model's (both kinds stay in the store);
/// an unknown value is named.
#[test]
fn int8_unet_is_made_once_and_keys_its_images() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let settings = "levels = [0.0, 0.5]\nsteps = 4\nscheduler = \"ddim\"";
    let int8 = format!("{settings}\nquantize = \"int8\"");
    let counts = |summary: &RunSummary| {
        let s = &summary.nodes["synthetic"];
        (s.computed, s.cache_hits)
    };
    let digests = || -> Vec<String> {
        let mut rows: Vec<String> = read_jsonl(&out, "out", "synthetic")
            .iter()
            .map(|r| r["digest"].as_str().unwrap().to_string())
            .collect();
        rows.sort();
        rows
    };
    assert_eq!(counts(&run(&pipeline(&out, "tiny-sd", settings))), (6, 0));
    let float = digests();
    assert_eq!(counts(&run(&pipeline(&out, "tiny-sd", &int8))), (6, 0));
    let quantized = digests();
    assert!(
        float.iter().all(|d| !quantized.contains(d)),
        "int8 images differ"
    );
    let made: Vec<_> = std::fs::read_dir(out.join("state/models"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(made.len(), 1, "{made:?}");
    let name = made[0].file_name().unwrap().to_string_lossy().into_owned();
    assert!(name.ends_with("-unet-int8-dynamic-matmul-v1"), "{name}");
    let file = made[0].join("model.onnx");
    let stamp = std::fs::metadata(&file).unwrap().modified().unwrap();
    // A rerun opens the same file, and every image of either kind is found in the store.
    assert_eq!(counts(&run(&pipeline(&out, "tiny-sd", &int8))), (0, 6));
    assert_eq!(std::fs::metadata(&file).unwrap().modified().unwrap(), stamp);
    assert_eq!(digests(), quantized);
    let none = format!("{settings}\nquantize = \"none\"");
    assert_eq!(counts(&run(&pipeline(&out, "tiny-sd", &none))), (0, 6));
    assert_eq!(digests(), float);

    let err = validate(&pipeline(
        &out,
        "tiny-sd",
        &format!("{settings}\nquantize = \"int4\""),
    ));
    assert!(
        err.contains("quantize `int4`") && err.contains("expected \"none\" or \"int8\""),
        "{err}"
    );
}
