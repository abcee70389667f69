//! Samples pushed through the API into a `source` whose folder also has them: each sample is
//! present once, whichever worker scans its file.

use crate::common;

use common::*;
use discl::record::{sample_id, Digest, Sample};
use discl::{Pipeline, RunOptions};
use std::path::Path;

/// The samples the source makes of `images`, as it makes them.
fn folder_samples(images: &Path) -> Vec<Sample> {
    let mut samples = Vec::new();
    for class in CLASSES {
        for file in std::fs::read_dir(images.join(class)).unwrap() {
            let path = file.unwrap().path();
            let name = format!("{class}/{}", path.file_name().unwrap().to_str().unwrap());
            samples.push(Sample {
                id: sample_id(&name),
                name,
                label: class.into(),
                path: path.display().to_string(),
                digest: Digest::of(&std::fs::read(&path).unwrap()),
            });
        }
    }
    samples
}

#[test]
fn a_pushed_sample_the_folder_also_has_is_present_once() {
    let dir = tempfile::tempdir().unwrap();
    let images = copy_fixture(dir.path());
    let out = dir.path().join("out");
    let text = format!(
        r#"[pipeline]
name = "push"
output = "{out}"

[nodes.train]
op = "source"
format = "image_folder"
path = "{images}"

[nodes.manifests]
op = "sink"
inputs = ["train"]
formats = ["jsonl"]
"#,
        out = out.display(),
        images = images.display(),
    );
    let pipeline = Pipeline::from_toml("push.toml", &text).unwrap();
    // Two workers, so half the pushed samples belong to the worker that did not take them.
    let mut running = pipeline
        .start(&RunOptions {
            timely_args: vec!["-w".into(), "2".into()],
            progress: false,
            ..Default::default()
        })
        .unwrap();
    let rows = |running: &discl::pipeline::RunningPipeline| {
        let rows = running.snapshot("manifests", "train").unwrap();
        let mut names: Vec<String> = rows
            .iter()
            .map(|r| r["name"].as_str().unwrap().to_string())
            .collect();
        names.sort();
        names
    };
    running.refresh().unwrap();
    let all = rows(&running);
    assert_eq!(all.len(), 120);

    let samples = folder_samples(&images);
    assert_eq!(samples.len(), 120);
    running
        .push_samples("train", samples.iter().map(|s| (s.clone(), 1)))
        .unwrap();
    running.refresh().unwrap();
    assert_eq!(rows(&running).len(), 120, "pushed and scanned: once each");
    assert_eq!(rows(&running), all);

    // A file removed while its sample is pushed stays; retracted, it goes.
    let gone = &samples[0];
    std::fs::remove_file(&gone.path).unwrap();
    running.refresh().unwrap();
    assert_eq!(rows(&running), all);
    running
        .push_samples("train", samples.iter().map(|s| (s.clone(), -1)))
        .unwrap();
    running.refresh().unwrap();
    let left = rows(&running);
    assert_eq!(left.len(), 119);
    assert!(!left.contains(&gone.name));
    running.stop().unwrap();
}
