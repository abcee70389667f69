//! The quality filter's retries (METHOD §4) on the shipped tiny models: a threshold at the
//! upper quartile of the scores rejects most images; with `retries = 3` each rejected image is made
//! again with derived seeds by the generate node, and more images pass. Retried images are
//! memoized like any other: a rerun makes no model call and writes nothing, and a run from
//! scratch writes the same bytes. Bad `retries` values are graph errors naming field and line.

use crate::common;

use common::*;
use discl::{Pipeline, PipelineError, RunSummary};
use std::path::Path;

/// Bags and ankle boots (24 images) × λ {0, 0.5} × one seed on the tiny pixel UNet, scored by
/// the judge.
fn graph(out: &Path, images: &Path, threshold: f64, retries: u32) -> String {
    format!(
        r#"[pipeline]
name = "retries"
output = "{out}"
seed = 7

[models.cnn]
path = "{repo}/models/fashion-cnn"

[models.gen]
path = "{repo}/models/tiny-pixel-unet"

[models.judge]
path = "{repo}/models/fashion-judge"

[nodes.train]
op = "source"
format = "image_folder"
path = "{images}"

[nodes.tail]
op = "filter"
inputs = ["train"]
field = "label"
one_of = ["bag", "ankle-boot"]

[nodes.synthetic]
op = "generate"
inputs = ["tail"]
model = "gen"
classes_from = "cnn"
levels = [0.0, 0.5]
seeds = 1
steps = 4
guidance_scale = 2.0
batch_size = 16

[nodes.quality]
op = "quality"
inputs = ["synthetic"]
model = "judge"
threshold = {threshold}
retries = {retries}

[nodes.manifests]
op = "sink"
inputs = ["quality", "quality.rejected"]
formats = ["jsonl", "parquet"]
"#,
        out = out.display(),
        repo = REPO,
        images = images.display(),
    )
}

const IMAGES: usize = 48;

fn calls(summary: &RunSummary) -> u64 {
    summary.nodes.values().map(|n| n.model_calls).sum()
}

fn score(row: &serde_json::Value) -> f64 {
    row["text_score"].as_f64().expect("scored")
}

fn manifest_text(out: &Path, dir: &Path) -> Vec<String> {
    ["quality.jsonl", "quality.rejected.jsonl"]
        .iter()
        .map(|file| {
            std::fs::read_to_string(out.join("manifests/current").join(file))
                .unwrap()
                .replace(&dir.display().to_string(), "<dir>")
        })
        .collect()
}

#[test]
fn retries_regenerate_rejected_images_with_derived_seeds_and_are_memoized() {
    let dir = tempfile::tempdir().unwrap();
    let images = copy_fixture(dir.path());
    let out = dir.path().join("out");

    // Every score, to put the threshold at the upper quartile: the judge scores one class
    // far above the other, so this is the median of the better class.
    let all = run_text(&graph(&out, &images, -1.0, 0), 2);
    assert_eq!(all.errors, 0);
    let mut scores: Vec<f64> = read_jsonl(&out, "manifests", "quality")
        .iter()
        .map(score)
        .collect();
    assert_eq!(scores.len(), IMAGES);
    scores.sort_by(f64::total_cmp);
    let threshold = scores[IMAGES * 3 / 4];

    // Without retries (images and scores come from the stores): a quarter pass.
    let plain = run_text(&graph(&out, &images, threshold, 0), 2);
    assert_eq!(calls(&plain), 0, "{plain:?}");
    let kept_plain = read_jsonl(&out, "manifests", "quality");
    let rejected_plain = read_jsonl(&out, "manifests", "quality.rejected");
    assert_eq!(kept_plain.len() + rejected_plain.len(), IMAGES);
    assert!(!rejected_plain.is_empty() && !kept_plain.is_empty());
    assert!(kept_plain
        .iter()
        .all(|r| r.get("attempt").is_none() && r.get("retry").is_none()));

    // With three retries, rejected images are made again until one passes.
    let retried = run_text(&graph(&out, &images, threshold, 3), 2);
    assert_eq!(retried.errors, 0);
    let kept = read_jsonl(&out, "manifests", "quality");
    let rejected = read_jsonl(&out, "manifests", "quality.rejected");
    assert_eq!(
        kept.len() + rejected.len(),
        IMAGES,
        "one image per (sample, λ, seed)"
    );
    assert!(
        kept.len() > kept_plain.len(),
        "{} ≤ {}",
        kept.len(),
        kept_plain.len()
    );
    let mut regenerated = 0;
    for row in &kept {
        assert!(score(row) >= threshold, "{row}");
        let (attempt, first) = (
            row["retry"]["attempt"].as_u64().unwrap(),
            row["retry"]["first_seed"].as_u64().unwrap(),
        );
        let seed = row["key"]["seed"].as_u64().unwrap();
        assert_eq!(first, 0, "the chain starts from seed index 0");
        if attempt == 0 {
            assert_eq!(seed, first);
        } else {
            assert!(seed >= 1 << 31 && seed != first, "a derived seed: {row}");
        }
        regenerated += attempt;
    }
    assert!(kept
        .iter()
        .any(|r| r["retry"]["attempt"].as_u64() > Some(0)));
    for row in &rejected {
        assert!(score(row) < threshold, "{row}");
        regenerated += 3;
    }
    // The images first kept are kept as they were.
    for row in &kept_plain {
        assert!(kept
            .iter()
            .any(|k| k["path"] == row["path"] && k["retry"]["attempt"] == 0));
    }
    let retries = retried.nodes["quality"]
        .retries
        .as_ref()
        .expect("retry counters");
    assert_eq!(
        retries.computed, regenerated,
        "every regeneration made once"
    );
    assert!(retries.model_calls > 0);
    assert!(
        retried.nodes["quality"].model_calls > retries.model_calls,
        "rescored too"
    );
    assert_eq!(
        retried.nodes["synthetic"].model_calls, 0,
        "first images from the store"
    );
    assert!(out.join("manifests/current/quality.parquet").is_file());

    // A rerun with nothing changed asks no model and writes nothing.
    let again = run_text(&graph(&out, &images, threshold, 3), 1);
    assert_eq!(calls(&again), 0, "{again:?}");
    assert!(again.versions_written.is_empty(), "{again:?}");
    assert_eq!(again.nodes["quality"].retries.as_ref().unwrap().computed, 0);

    // From scratch in a fresh folder, with another worker count: the same manifests.
    let scratch = tempfile::tempdir().unwrap();
    let scratch_images = copy_fixture(scratch.path());
    let scratch_out = scratch.path().join("out");
    run_text(&graph(&scratch_out, &scratch_images, threshold, 3), 3);
    assert_eq!(
        manifest_text(&scratch_out, scratch.path()),
        manifest_text(&out, dir.path())
    );
}

fn graph_errors(text: &str) -> Vec<discl::graph::GraphError> {
    match Pipeline::from_toml("bad.toml", text) {
        Err(PipelineError::Graph(errors)) => errors,
        Err(other) => panic!("{other}"),
        Ok(_) => panic!("accepted:\n{text}"),
    }
}

#[test]
fn bad_retries_name_node_field_and_line() {
    let dir = Path::new("/nonexistent");
    let text = graph(&dir.join("out"), dir, 0.2, 17);
    let line = text.lines().position(|l| l.starts_with("retries")).unwrap() + 1;
    let errors = graph_errors(&text);
    assert_eq!(errors.len(), 1, "{errors:?}");
    let error = &errors[0];
    assert_eq!(
        (error.line, error.field.as_deref()),
        (line, Some("retries"))
    );
    assert_eq!(error.node.as_deref(), Some("node `quality`"));
    assert!(
        error.message.contains("retries = 17 is more than 16"),
        "{error}"
    );

    for value in ["-1", "1.5", "\"two\""] {
        let text = text.replace("retries = 17", &format!("retries = {value}"));
        let errors = graph_errors(&text);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(
            (errors[0].line, errors[0].field.as_deref()),
            (line, Some("retries")),
            "{value}"
        );
    }

    // Retries need a generate node to make images again.
    let text = text
        .replace("retries = 17", "retries = 2")
        .replace("inputs = [\"synthetic\"]", "inputs = [\"synthetic_tail\"]")
        + "\n[nodes.synthetic_tail]\nop = \"sample\"\ninputs = [\"synthetic\"]\nfraction = 0.5\n";
    let errors = graph_errors(&text);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(
        (errors[0].line, errors[0].field.as_deref()),
        (line, Some("retries"))
    );
    assert!(errors[0].message.contains("generate node"), "{}", errors[0]);
}
