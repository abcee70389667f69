//! Scans, diffs, worker shares and manifests of `source`; the presence rule of pushed samples.

use super::*;

fn png(path: &Path, value: u8) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    image::GrayImage::from_pixel(4, 4, image::Luma([value]))
        .save(path)
        .unwrap();
}

#[test]
fn image_folder_scans_diff_and_report_corrupt_files() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    png(&root.join("coat/a.png"), 1);
    png(&root.join("coat/b.png"), 2);
    png(&root.join("shirt/c.png"), 3);
    std::fs::write(root.join("shirt/broken.png"), b"\x89PNG not really").unwrap();
    let mut state = SourceState::new("train", SourceLocation::ImageFolder(root.to_path_buf()));
    let first = state.rescan(0, 1);
    let names: Vec<_> = first
        .samples
        .iter()
        .map(|(s, d)| (s.name.as_str(), s.label.as_str(), *d))
        .collect();
    assert_eq!(names.len(), 3);
    assert!(names.contains(&("coat/a.png", "coat", 1)));
    assert!(names.contains(&("shirt/c.png", "shirt", 1)));
    assert_eq!(first.errors.len(), 1);
    assert!(first.errors[0].0.location.ends_with("broken.png"));
    assert!(first.errors[0].0.message.contains("cannot decode image"));

    // Nothing changed: an empty diff.
    assert_eq!(state.rescan(0, 1), SourceDiff::default());

    // Remove one, rewrite one, fix the broken one.
    std::fs::remove_file(root.join("coat/a.png")).unwrap();
    png(&root.join("coat/b.png"), 9);
    std::fs::remove_file(root.join("shirt/broken.png")).unwrap();
    let old_b = state.last.samples[&sample_id("coat/b.png")].clone();
    let diff = state.rescan(0, 1);
    let changes: Vec<_> = diff
        .samples
        .iter()
        .map(|(s, d)| (s.name.as_str(), *d))
        .collect();
    assert_eq!(changes.len(), 3);
    assert!(changes.contains(&("coat/a.png", -1)));
    assert!(diff.samples.contains(&(old_b.clone(), -1)));
    assert!(diff
        .samples
        .iter()
        .any(|(s, d)| s.name == "coat/b.png" && *d == 1 && s.digest != old_b.digest));
    assert_eq!(diff.errors.len(), 1);
    assert_eq!(diff.errors[0].1, -1);
}

#[test]
fn an_unreadable_source_keeps_its_samples_and_reports_once() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("images");
    png(&root.join("coat/a.png"), 1);
    let mut state = SourceState::new("train", SourceLocation::ImageFolder(root.clone()));
    assert_eq!(state.rescan(0, 1).samples.len(), 1);
    std::fs::rename(&root, dir.path().join("moved")).unwrap();
    let diff = state.rescan(0, 1);
    assert!(diff.samples.is_empty(), "nothing is retracted: {diff:?}");
    assert_eq!(diff.errors.len(), 1);
    assert!(diff.errors[0]
        .0
        .message
        .contains("cannot read image folder"));
    assert_eq!(state.rescan(0, 1), SourceDiff::default(), "reported once");
}

#[test]
fn workers_split_the_samples() {
    let dir = tempfile::tempdir().unwrap();
    for i in 0..20 {
        png(&dir.path().join(format!("c/{i}.png")), i);
    }
    let location = SourceLocation::ImageFolder(dir.path().to_path_buf());
    let a = SourceState::new("s", location.clone()).rescan(0, 2).samples;
    let b = SourceState::new("s", location).rescan(1, 2).samples;
    assert_eq!(a.len() + b.len(), 20);
    assert!(!a.is_empty() && !b.is_empty());
}

#[test]
fn manifests_name_bad_lines() {
    let dir = tempfile::tempdir().unwrap();
    png(&dir.path().join("img/x.png"), 5);
    let jsonl = dir.path().join("m.jsonl");
    std::fs::write(
        &jsonl,
        "{\"path\": \"img/x.png\", \"label\": \"coat\", \"id\": \"x1\"}\n{\"path\": \"img/missing.png\", \"label\": \"coat\"}\n{\"label\": 3}\n",
    )
    .unwrap();
    let diff = SourceState::new("m", SourceLocation::Manifest(jsonl)).rescan(0, 1);
    assert_eq!(diff.samples.len(), 1);
    assert_eq!(diff.samples[0].0.id, sample_id("x1"));
    let errors: Vec<_> = diff
        .errors
        .iter()
        .map(|(e, _)| (e.location.clone(), e.message.clone()))
        .collect();
    assert_eq!(errors.len(), 2);
    assert!(errors
        .iter()
        .any(|(l, m)| l.ends_with("m.jsonl:3") && m.contains("bad manifest row")));
    assert!(errors
        .iter()
        .any(|(l, m)| l.ends_with("missing.png") && m.contains("cannot read image")));

    let csv = dir.path().join("m.csv");
    std::fs::write(&csv, "path,label\nimg/x.png,coat\n").unwrap();
    let diff = SourceState::new("m", SourceLocation::Manifest(csv.clone())).rescan(0, 1);
    assert_eq!(diff.samples[0].0.name, "img/x.png");
    std::fs::write(&csv, "path,label\n\nimg/x.png,coat\nimg/x.png\n").unwrap();
    let diff = SourceState::new("m", SourceLocation::Manifest(csv)).rescan(0, 1);
    assert!(
        diff.errors
            .iter()
            .any(|(e, _)| e.location.ends_with("m.csv:4")),
        "{diff:?}"
    );
    assert_eq!(diff.samples[0].0.label, "coat");
}

#[test]
fn the_digest_cache_forgets_files_that_are_gone() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    for i in 0..5 {
        png(&root.join(format!("coat/{i}.png")), i);
    }
    let mut state = SourceState::new("train", SourceLocation::ImageFolder(root.to_path_buf()));
    assert_eq!(state.rescan(0, 1).samples.len(), 5);
    assert_eq!(state.digests.len(), 5);
    // Churn: files come and go under new names, as in a long watch run.
    for round in 0..3u8 {
        for i in 0..5u8 {
            let _ = std::fs::remove_file(root.join(format!("coat/{}.png", round * 5 + i)));
            png(&root.join(format!("coat/{}.png", (round + 1) * 5 + i)), i);
        }
        state.rescan(0, 1);
        assert_eq!(state.digests.len(), 5, "round {round}");
    }
    assert!(state.digests.keys().all(|p| p.exists()));
    // A file whose digest fails is not cached either; nor is another worker's share.
    std::fs::write(root.join("coat/broken.png"), b"not a png").unwrap();
    state.rescan(0, 1);
    assert_eq!(state.digests.len(), 5);
    let mut half = SourceState::new("train", SourceLocation::ImageFolder(root.to_path_buf()));
    let mine = half.rescan(0, 2).samples.len();
    assert_eq!(half.digests.len(), mine);
}

fn sample(name: &str, digest: &[u8]) -> Sample {
    Sample {
        id: sample_id(name),
        name: name.into(),
        label: name.split('/').next().unwrap().into(),
        path: format!("/elsewhere/{name}"),
        digest: Digest::of(digest),
    }
}

#[test]
fn a_sample_is_present_once_whether_scanned_pushed_or_both() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    png(&root.join("coat/a.png"), 1);
    png(&root.join("coat/b.png"), 2);
    let mut state = SourceState::new("train", SourceLocation::ImageFolder(root.to_path_buf()));
    let scanned = state.rescan(0, 1).samples;
    let a = scanned
        .iter()
        .find(|(s, _)| s.name == "coat/a.png")
        .unwrap()
        .0
        .clone();
    let b = scanned
        .iter()
        .find(|(s, _)| s.name == "coat/b.png")
        .unwrap()
        .0
        .clone();

    // Pushing what the folder has emits nothing; retracting it while the folder has it, too.
    assert_eq!(state.push(a.clone(), 1), vec![]);
    assert_eq!(state.push(a.clone(), -1), vec![]);
    // Retracting a scanned sample that was never pushed does not hide the file.
    assert_eq!(state.push(b.clone(), -1), vec![]);

    // Pushed, then the file goes: still present. Retracted: now it goes.
    assert_eq!(state.push(a.clone(), 1), vec![]);
    std::fs::remove_file(root.join("coat/a.png")).unwrap();
    assert_eq!(state.rescan(0, 1), SourceDiff::default());
    assert_eq!(state.push(a.clone(), -1), vec![(a.clone(), -1)]);

    // Pushed only: in and out. Twice pushed needs two retractions; extra ones change nothing.
    let c = sample("api/c.png", b"c");
    assert_eq!(state.push(c.clone(), 1), vec![(c.clone(), 1)]);
    assert_eq!(state.push(c.clone(), 1), vec![]);
    assert_eq!(state.push(c.clone(), -1), vec![]);
    assert_eq!(state.push(c.clone(), -1), vec![(c.clone(), -1)]);
    assert_eq!(state.push(c.clone(), -1), vec![]);
    assert_eq!(state.push(c.clone(), 0), vec![]);

    // Pushed first, then the folder gains the same file: nothing new. The push retracted: the
    // file's sample stays.
    png(&root.join("coat/a.png"), 1);
    assert_eq!(state.push(a.clone(), 1), vec![(a.clone(), 1)]);
    assert_eq!(state.rescan(0, 1), SourceDiff::default());
    assert_eq!(state.push(a.clone(), -1), vec![]);

    // A pushed sample that differs from the file's overrides it until retracted; a different
    // sample pushed for the same id replaces the pushed one.
    let b2 = Sample {
        label: "shirt".into(),
        ..b.clone()
    };
    assert_eq!(
        state.push(b2.clone(), 1),
        vec![(b.clone(), -1), (b2.clone(), 1)]
    );
    png(&root.join("coat/b.png"), 9);
    assert_eq!(
        state.rescan(0, 1),
        SourceDiff::default(),
        "the file changed under a push"
    );
    let b3 = Sample {
        label: "dress".into(),
        ..b.clone()
    };
    assert_eq!(
        state.push(b3.clone(), 1),
        vec![(b2.clone(), -1), (b3.clone(), 1)]
    );
    assert_eq!(state.push(b2, -1), vec![], "b2 is no longer pushed");
    let new_b = state.last.samples[&b.id].clone();
    assert_ne!(new_b.digest, b.digest);
    assert_eq!(state.push(b3.clone(), -1), vec![(b3, -1), (new_b, 1)]);
}
