//! End-to-end runs of real pipelines on the shipped tiny image set and the shipped ONNX
//! classifier: manifests, hard samples, errors, reruns, workers and feedback.

use crate::common;

use common::*;
use discl::{Pipeline, RunOptions};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

const RULES: &str = "[{ misclassified = true }, { p_true_below = 0.5 }]";

fn run(text: &str, workers: usize) -> discl::RunSummary {
    let pipeline = Pipeline::from_toml("test.toml", text).unwrap_or_else(|e| panic!("{e}"));
    let options = RunOptions {
        timely_args: vec!["-w".into(), workers.to_string()],
        progress: false,
        ..Default::default()
    };
    pipeline.run(&options).unwrap_or_else(|e| panic!("{e}"))
}

/// The names of the rows of a manifest.
fn names(rows: &[serde_json::Value]) -> BTreeSet<String> {
    rows.iter()
        .map(|r| r["name"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn classifies_selects_hard_samples_and_writes_manifests() {
    let dir = tempfile::tempdir().unwrap();
    let images = copy_fixture(dir.path());
    let out = dir.path().join("out");
    let summary = run(&pipeline_text(dir.path(), &images, &classifier(), RULES), 1);

    assert_eq!(summary.versions_written, vec![0]);
    assert_eq!(summary.errors, 0);
    assert_eq!(summary.nodes["train"].records_out, 120);
    assert_eq!(summary.nodes["scores"].records_out, 120);
    // 120 images in batches of 16: 8 model calls, and up to one more for each further runner
    // (one per core) the requests left when the version completes are spread over.
    let calls = summary.nodes["scores"].model_calls;
    assert!((8..8 + runners()).contains(&(calls as usize)), "{calls}");
    assert_eq!(summary.nodes["scores"].batches, calls);

    let samples = read_jsonl(&out, "manifests", "train");
    let scores = read_jsonl(&out, "manifests", "scores");
    let hard = read_jsonl(&out, "manifests", "hard");
    assert_eq!(samples.len(), 120);
    assert_eq!(scores.len(), 120);
    // The hard set is exactly the misclassified or p_true < 0.5 samples, recomputed here.
    let label_of: BTreeMap<u64, (String, String)> = samples
        .iter()
        .map(|s| {
            (
                s["id"].as_u64().unwrap(),
                (
                    s["name"].as_str().unwrap().into(),
                    s["label"].as_str().unwrap().into(),
                ),
            )
        })
        .collect();
    let expected: BTreeSet<String> = scores
        .iter()
        .filter(|s| {
            let (_, label) = &label_of[&s["sample"].as_u64().unwrap()];
            s["predicted"].as_str().unwrap() != label || s["p_true"].as_f64().unwrap() < 0.5
        })
        .map(|s| label_of[&s["sample"].as_u64().unwrap()].0.clone())
        .collect();
    assert!(
        !expected.is_empty() && expected.len() < 60,
        "a trained model gets most right: {}",
        expected.len()
    );
    assert_eq!(names(&hard), expected);
    // The shirts are this model's weakest class (9% test accuracy): most of them are hard.
    assert!(hard.iter().filter(|h| h["label"] == "shirt").count() >= 6);
    // Scores are real probabilities.
    for s in &scores {
        let p = s["p_true"].as_f64().unwrap();
        let loss = s["loss"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&p));
        assert!(
            (loss - (-p.max(1e-30).ln())).abs() < 1e-3 * (1.0 + loss),
            "loss = -ln p: {s}"
        );
    }
    // Parquet holds the same rows.
    let current = out.join("manifests/current");
    assert_eq!(
        parquet_rows(&current.join("hard.parquet")),
        hard.len() as i64
    );
    assert_eq!(parquet_rows(&current.join("scores.parquet")), 120);
    // The summary's counts agree with the files.
    assert_eq!(summary.nodes["hard"].records_out, hard.len() as u64);
}

#[test]
fn corrupt_images_become_error_records_and_nothing_else_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let images = copy_fixture(dir.path());
    std::fs::write(images.join("coat/broken.png"), b"\x89PNG\r\n\x1a\n garbage").unwrap();
    std::fs::write(images.join("bag/empty.jpg"), b"").unwrap();
    let out = dir.path().join("out");
    let summary = run(&pipeline_text(dir.path(), &images, &classifier(), RULES), 1);
    assert_eq!(summary.errors, 2);
    assert_eq!(summary.nodes["scores"].records_out, 120);
    let errors = read_jsonl(&out, "errors", "errors");
    let located: BTreeSet<(String, String)> = errors
        .iter()
        .map(|e| {
            let location = e["location"].as_str().unwrap();
            let file = Path::new(location)
                .file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .to_string();
            (e["node"].as_str().unwrap().to_string(), file)
        })
        .collect();
    assert_eq!(
        located,
        BTreeSet::from([
            ("train".into(), "broken.png".into()),
            ("train".into(), "empty.jpg".into())
        ])
    );
    assert!(errors.iter().all(|e| e["message"]
        .as_str()
        .unwrap()
        .contains("cannot decode image")));
}

#[test]
fn reruns_write_nothing_unchanged_and_continue_the_version_sequence() {
    let dir = tempfile::tempdir().unwrap();
    let images = copy_fixture(dir.path());
    let out = dir.path().join("out");
    let text = pipeline_text(dir.path(), &images, &classifier(), RULES);
    run(&text, 1);
    let first = std::fs::read(out.join("manifests/v000000/hard.jsonl")).unwrap();
    // Nothing changed: no version, and every score comes from the answer store.
    let summary = run(&text, 1);
    assert_eq!(summary.versions_written, Vec::<u64>::new());
    assert_eq!(summary.nodes["scores"].model_calls, 0);
    assert_eq!(summary.nodes["scores"].cache_hits, 120);
    assert!(!out.join("manifests/v000001").exists());
    // A copy of an image that is not hard: the next version continues the sequence.
    let hard = read_jsonl(&out, "manifests", "hard");
    let easy = std::fs::read_dir(images.join("trouser"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| !hard.iter().any(|h| h["path"].as_str() == p.to_str()))
        .unwrap();
    std::fs::copy(&easy, images.join("trouser/copy.png")).unwrap();
    let summary = run(&text, 1);
    assert_eq!(summary.versions_written, vec![1]);
    assert_eq!(
        summary.nodes["scores"].computed, 0,
        "the copy's bytes were scored before"
    );
    assert_eq!(
        std::fs::read_link(out.join("manifests/current"))
            .unwrap()
            .to_str(),
        Some("v000001")
    );
    assert_eq!(
        std::fs::read(out.join("manifests/v000001/hard.jsonl")).unwrap(),
        first
    );
}

#[test]
fn output_is_identical_whatever_the_worker_count() {
    let dir = tempfile::tempdir().unwrap();
    let images = copy_fixture(dir.path());
    let rules = "[{ misclassified = true }, { top_k_loss = 10 }, { tail_classes_below = 13 }]";
    let text_in = |sub: &str| {
        let d = dir.path().join(sub);
        std::fs::create_dir_all(&d).unwrap();
        (
            pipeline_text(&d, &images, &classifier(), rules),
            d.join("out"),
        )
    };
    let (one, out_one) = text_in("one");
    let (three, out_three) = text_in("three");
    run(&one, 1);
    let summary = run(&three, 3);
    assert_eq!(summary.nodes["train"].records_out, 120);
    for file in ["hard.jsonl", "scores.jsonl", "train.jsonl", "hard.parquet"] {
        let a = std::fs::read(out_one.join("manifests/current").join(file)).unwrap();
        let b = std::fs::read(out_three.join("manifests/current").join(file)).unwrap();
        assert_eq!(a, b, "{file} differs between 1 and 3 workers");
    }
}

#[test]
fn trainer_feedback_supersedes_scores_and_unknown_samples_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let images = copy_fixture(dir.path());
    let out = dir.path().join("out");
    let feedback = dir.path().join("feedback");
    std::fs::create_dir_all(&feedback).unwrap();
    // The CNN gets trouser/test-* right; a later checkpoint says one of them is now hard.
    let trouser = std::fs::read_dir(images.join("trouser"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .file_name();
    let name = format!("trouser/{}", trouser.to_str().unwrap());
    std::fs::write(
        feedback.join("checkpoint-1.jsonl"),
        format!(
            "{{\"sample\": \"{name}\", \"p_true\": 0.05, \"predicted\": \"dress\"}}\n\
             {{\"sample\": \"nowhere/x.png\", \"p_true\": 0.5, \"predicted\": \"dress\"}}\n\
             {{\"sample\": \"{name}\", \"p_true\": NaN, \"predicted\": \"dress\"}}\n"
        ),
    )
    .unwrap();
    let summary = run(&pipeline_text(dir.path(), &images, &classifier(), RULES), 1);
    let hard = names(&read_jsonl(&out, "manifests", "hard"));
    assert!(hard.contains(&name), "feedback made {name} hard");
    assert_eq!(summary.errors, 2);
    let errors = read_jsonl(&out, "errors", "errors");
    let messages: Vec<String> = errors
        .iter()
        .map(|e| format!("{} {}", e["location"], e["message"]))
        .collect();
    assert!(
        messages
            .iter()
            .any(|m| m.contains("checkpoint-1.jsonl:2") && m.contains("unknown sample")),
        "{messages:?}"
    );
    assert!(
        messages
            .iter()
            .any(|m| m.contains("checkpoint-1.jsonl:3") && m.contains("bad feedback line")),
        "{messages:?}"
    );
}
