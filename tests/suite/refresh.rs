//! A started pipeline refreshed as its inputs change: only what changed is recomputed, each
//! refresh that changes something is a new consistent snapshot, retractions really remove.

use crate::common;

use common::*;
use discl::{Pipeline, RunOptions};
use std::collections::BTreeSet;

fn names(rows: &[serde_json::Value]) -> BTreeSet<String> {
    rows.iter()
        .map(|r| r["name"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn refreshes_recompute_only_what_changed() {
    let dir = tempfile::tempdir().unwrap();
    let images = copy_fixture(dir.path());
    let out = dir.path().join("out");
    let text = pipeline_text(
        dir.path(),
        &images,
        &classifier(),
        "[{ misclassified = true }, { p_true_below = 0.5 }]",
    );
    let pipeline = Pipeline::from_toml("refresh.toml", &text).unwrap();
    let mut running = pipeline
        .start(&RunOptions {
            timely_args: vec!["-w".into(), "2".into()],
            progress: false,
            ..Default::default()
        })
        .unwrap();

    assert_eq!(running.refresh().unwrap(), 0);
    let first = running.summary();
    assert_eq!(first.versions_written, vec![0]);
    assert_eq!(first.nodes["scores"].computed, 120);
    let hard_v0 = names(&read_jsonl(&out, "manifests", "hard"));

    // Nothing changed: a refresh writes no new snapshot and calls no model.
    assert_eq!(running.refresh().unwrap(), 1);
    assert_eq!(running.summary().versions_written, vec![0]);
    assert_eq!(
        running.summary().nodes["scores"].model_calls,
        first.nodes["scores"].model_calls
    );

    // A new image, a removed image, and trainer feedback that makes a trouser hard.
    let bag = std::fs::read_dir(images.join("bag"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    // A new image: a bag with one pixel changed (an exact copy would be answered from the
    // answer store, which keys scores by the image's bytes).
    let mut copy = image::open(&bag).unwrap().to_luma8();
    copy.get_pixel_mut(0, 0).0[0] ^= 0x80;
    copy.save(images.join("bag/copy.png")).unwrap();
    let removed = hard_v0.iter().next().unwrap().clone();
    std::fs::remove_file(images.join(&removed)).unwrap();
    let trouser = format!(
        "trouser/{}",
        std::fs::read_dir(images.join("trouser"))
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .file_name()
            .to_str()
            .unwrap()
    );
    std::fs::create_dir_all(dir.path().join("feedback")).unwrap();
    std::fs::write(
        dir.path().join("feedback/checkpoint-1.jsonl"),
        format!("{{\"sample\": \"{trouser}\", \"p_true\": 0.1, \"predicted\": \"dress\"}}\n"),
    )
    .unwrap();
    assert_eq!(running.refresh().unwrap(), 2);
    let summary = running.stop().unwrap();
    assert_eq!(summary.versions_written, vec![0, 2]);
    // Exactly one new image was classified, in one more model call.
    assert_eq!(summary.nodes["scores"].computed, 121);
    assert_eq!(
        summary.nodes["scores"].model_calls,
        first.nodes["scores"].model_calls + 1
    );

    let hard_v2 = names(&read_jsonl(&out, "manifests", "hard"));
    assert!(
        !hard_v2.contains(&removed),
        "the removed image was retracted"
    );
    assert!(hard_v2.contains(&trouser), "feedback made {trouser} hard");
    let expected: BTreeSet<String> = hard_v0
        .iter()
        .filter(|n| **n != removed)
        .cloned()
        .chain([trouser.clone()])
        .collect();
    let copy_is_hard = hard_v2.contains("bag/copy.png");
    let expected: BTreeSet<String> = if copy_is_hard {
        expected
            .into_iter()
            .chain(["bag/copy.png".to_string()])
            .collect()
    } else {
        expected
    };
    assert_eq!(hard_v2, expected);
    let train = names(&read_jsonl(&out, "manifests", "train"));
    assert_eq!(train.len(), 120);
    assert!(train.contains("bag/copy.png") && !train.contains(&removed));
    // The first snapshot is still there, untouched.
    let v0 = std::fs::read_to_string(out.join("manifests/v000000/hard.jsonl")).unwrap();
    assert_eq!(v0.lines().count(), hard_v0.len());
    assert_eq!(
        std::fs::read_link(out.join("manifests/current"))
            .unwrap()
            .to_str(),
        Some("v000002")
    );
}

#[test]
fn records_pushed_through_the_api_enter_at_the_next_refresh_and_retract() {
    use discl::record::{sample_id, Digest, Sample, Score, Value};
    let dir = tempfile::tempdir().unwrap();
    let images = copy_fixture(dir.path());
    let text = pipeline_text(
        dir.path(),
        &images,
        &classifier(),
        "[{ p_true_below = 0.5 }]",
    );
    let pipeline = Pipeline::from_toml("push.toml", &text).unwrap();
    let mut running = pipeline.start(&RunOptions::default()).unwrap();
    running.refresh().unwrap();
    let hard_before = names(&running.snapshot("manifests", "hard").unwrap());

    // A trouser the model is sure of, made hard by a pushed trainer score.
    let trouser = std::fs::read_dir(images.join("trouser"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let name = format!("trouser/{}", trouser.file_name().unwrap().to_str().unwrap());
    assert!(!hard_before.contains(&name));
    let score = Score {
        sample: sample_id(&name),
        checkpoint: 5,
        p_true: Value(0.1),
        loss: Value(2.3),
        predicted: "dress".into(),
    };
    running
        .push_feedback("trainer", [(score.clone(), 1)])
        .unwrap();
    // A sample pushed directly, from a file outside the folder.
    let extra = dir.path().join("extra.png");
    std::fs::copy(&trouser, &extra).unwrap();
    let sample = Sample {
        id: sample_id("api/extra.png"),
        name: "api/extra.png".into(),
        label: "trouser".into(),
        path: extra.display().to_string(),
        digest: Digest::of(&std::fs::read(&extra).unwrap()),
    };
    running
        .push_samples("train", [(sample.clone(), 1)])
        .unwrap();
    running.refresh().unwrap();
    assert!(names(&running.snapshot("manifests", "hard").unwrap()).contains(&name));
    assert_eq!(running.snapshot("manifests", "train").unwrap().len(), 121);
    assert_eq!(
        running.snapshot("manifests", "scores").unwrap().len(),
        121,
        "the pushed sample was classified"
    );

    // Retracting both puts everything back as it was.
    running.push_feedback("trainer", [(score, -1)]).unwrap();
    running.push_samples("train", [(sample, -1)]).unwrap();
    running.refresh().unwrap();
    assert_eq!(
        names(&running.snapshot("manifests", "hard").unwrap()),
        hard_before
    );
    assert_eq!(running.snapshot("manifests", "train").unwrap().len(), 120);

    let err = running.push_samples("trainer", []).unwrap_err().to_string();
    assert_eq!(err, "node `trainer` is not a source");
    let err = running.snapshot("nowhere", "hard").unwrap_err().to_string();
    assert_eq!(err, "no node `nowhere` in this pipeline");
    let summary = running.stop().unwrap();
    assert_eq!(summary.versions_written.len(), 3);
}
