//! Feedback files read and diffed; unknown samples reported until they appear.

use super::*;
use crate::record::Digest;
use crate::record::{sample_id, Value};
use differential_dataflow::input::Input;
use timely::dataflow::operators::capture::{Capture, Extract};

#[test]
fn reads_checkpoints_and_reports_bad_lines() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("checkpoint-3.jsonl"),
        "{\"sample\": \"coat/a.png\", \"p_true\": 0.25, \"predicted\": \"shirt\"}\n\
         {\"sample\": 7, \"p_true\": NaN, \"predicted\": \"coat\"}\n\
         {\"sample\": 7, \"p_true\": 1.5, \"predicted\": \"coat\"}\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("notes.txt"), "ignored").unwrap();
    let mut state = FeedbackState::new("fb", dir.path().to_path_buf());
    let diff = state.rescan();
    assert_eq!(diff.scores.len(), 1);
    let ((score, location), d) = &diff.scores[0];
    assert_eq!(
        (score.sample, score.checkpoint, score.p_true.0, *d),
        (sample_id("coat/a.png"), 3, 0.25, 1)
    );
    assert!((score.loss.0 - 0.25f32.ln().abs()).abs() < 1e-6);
    assert!(location.ends_with("checkpoint-3.jsonl:1"));
    assert_eq!(diff.errors.len(), 2);
    assert!(diff
        .errors
        .iter()
        .any(|(e, _)| e.location.ends_with(":2") && e.message.contains("bad feedback line")));
    assert!(diff
        .errors
        .iter()
        .any(|(e, _)| e.location.ends_with(":3") && e.message.contains("[0, 1]")));
    assert_eq!(state.rescan(), FeedbackDiff::default());
    std::fs::remove_file(dir.path().join("checkpoint-3.jsonl")).unwrap();
    let diff = state.rescan();
    assert_eq!(diff.scores.len(), 1);
    assert_eq!(diff.scores[0].1, -1);
    assert_eq!(diff.errors.iter().filter(|(_, d)| *d == -1).count(), 2);
}

#[test]
fn unknown_samples_are_errors_until_they_appear() {
    let known = Sample {
        id: 1,
        name: "a".into(),
        label: "coat".into(),
        path: "a".into(),
        digest: Digest::default(),
    };
    let late = Sample {
        id: 2,
        ..known.clone()
    };
    let score = |sample| Score {
        sample,
        checkpoint: 1,
        p_true: Value(0.5),
        loss: Value(0.69),
        predicted: "coat".into(),
    };
    let captured = timely::execute_directly(move |worker| {
        let (mut samples, mut feedback, out) = worker.dataflow::<u64, _, _>(|scope| {
            let (si, s) = scope.new_collection::<Sample, isize>();
            let (fi, f) = scope.new_collection::<LocatedScore, isize>();
            let (scores, errors) = f.against_samples("fb", s);
            let out = scores
                .map(|s| (s.sample, String::new()))
                .concat(errors.map(|e| (0, e.message)))
                .consolidate()
                .inner
                .capture();
            (si, fi, out)
        });
        samples.update_at(known.clone(), 0, 1);
        feedback.update_at((score(1), "f:1".into()), 0, 1);
        feedback.update_at((score(2), "f:2".into()), 0, 1);
        samples.update_at(late.clone(), 1, 1);
        samples.close();
        feedback.close();
        out
    });
    let mut out: Vec<_> = captured
        .extract()
        .into_iter()
        .flat_map(|(_, d)| d)
        .collect();
    out.sort();
    assert_eq!(
        out,
        vec![
            ((0, "feedback names unknown sample 2".to_string()), 0, 1),
            ((0, "feedback names unknown sample 2".to_string()), 1, -1),
            ((1, String::new()), 0, 1),
            ((2, String::new()), 1, 1),
        ]
    );
}

#[test]
fn reads_progress_files_and_reports_bad_levels() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("progress-2.jsonl"),
        "{\"sample\": \"coat/a.png\", \"level\": 500, \"p_true\": 0.4}\n\
         {\"sample\": 9, \"level\": 1500, \"p_true\": 0.4}\n\
         {\"sample\": 9, \"level\": 300}\n",
    )
    .unwrap();
    let mut state = FeedbackState::new("fb", dir.path().to_path_buf());
    let diff = state.rescan();
    assert!(diff.scores.is_empty());
    let progress: Vec<(Progress, isize)> = diff
        .progress
        .into_iter()
        .map(|((p, _), d)| (p, d))
        .collect();
    assert_eq!(
        progress,
        vec![(
            Progress {
                after_stages: 2,
                sample: sample_id("coat/a.png"),
                level: 500,
                p_true: Value(0.4),
            },
            1
        )]
    );
    let errors: Vec<String> = diff
        .errors
        .iter()
        .map(|(e, _)| format!("{}: {}", e.location.rsplit('/').next().unwrap(), e.message))
        .collect();
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert_eq!(
        errors[0],
        "progress-2.jsonl:2: level 1500 is not a level in per mille (0 to 1000)"
    );
    assert!(
        errors[1].starts_with("progress-2.jsonl:3: bad progress line: missing field `p_true`"),
        "{errors:?}"
    );
    // Unchanged files give no diff; a removed file retracts what it held.
    assert_eq!(state.rescan(), FeedbackDiff::default());
    std::fs::remove_file(dir.path().join("progress-2.jsonl")).unwrap();
    let diff = state.rescan();
    assert_eq!(diff.progress.len(), 1);
    assert_eq!(diff.progress[0].1, -1);
}

/// Each error of a diff as `file name[:line]: message`.
fn shown(diff: &FeedbackDiff) -> Vec<String> {
    let mut shown: Vec<String> = diff
        .errors
        .iter()
        .map(|(e, _)| format!("{}: {}", e.location.rsplit('/').next().unwrap(), e.message))
        .collect();
    shown.sort();
    shown
}

#[test]
fn a_bad_line_is_reported_alone_and_the_other_lines_count() {
    let dir = tempfile::tempdir().unwrap();
    let line = |name: &str| {
        format!("{{\"sample\": \"{name}\", \"p_true\": 0.5, \"predicted\": \"coat\"}}\n")
    };
    let mut bytes = line("a").into_bytes();
    bytes.extend(b"{\"sample\": \"b\xff\", \"p_true\": 0.5, \"predicted\": \"coat\"}\n");
    bytes.extend(line("c").into_bytes());
    bytes.extend(format!("{{\"sample\": \"{}\"}}\n", "x".repeat(MAX_LINE_BYTES)).into_bytes());
    bytes.extend(line("d").into_bytes());
    std::fs::write(dir.path().join("checkpoint-1.jsonl"), bytes).unwrap();
    let diff = FeedbackState::new("fb", dir.path().to_path_buf()).rescan();
    let kept: BTreeSet<u64> = diff.scores.iter().map(|((s, _), _)| s.sample).collect();
    assert_eq!(kept, BTreeSet::from(["a", "c", "d"].map(sample_id)));
    assert_eq!(
        shown(&diff),
        [
            "checkpoint-1.jsonl:2: line is not valid UTF-8 (byte 13)",
            "checkpoint-1.jsonl:4: line longer than 65536 bytes",
        ]
    );
}

#[test]
fn feedback_files_that_are_not_regular_files_or_badly_named_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("checkpoint-2.jsonl");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    std::os::unix::fs::symlink("/dev/zero", dir.path().join("checkpoint-3.jsonl")).unwrap();
    let ok = "{\"sample\": 1, \"p_true\": 0.5, \"predicted\": \"coat\"}\n";
    for name in [
        "checkpoint--1.jsonl",
        "checkpoint-18446744073709551616.jsonl",
        "progress-x.jsonl",
        "checkpoint-4.jsonl",
        ".checkpoint-5.jsonl.tmp",
    ] {
        std::fs::write(dir.path().join(name), ok).unwrap();
    }
    let mut state = FeedbackState::new("fb", dir.path().to_path_buf());
    let diff = state.rescan();
    assert_eq!(
        diff.scores.len(),
        1,
        "checkpoint-4 counts: {:?}",
        diff.scores
    );
    assert_eq!(diff.scores[0].0 .0.checkpoint, 4);
    assert_eq!(
        shown(&diff),
        [
            "checkpoint--1.jsonl: cannot read the checkpoint number of this file: `-1` is not a \
             whole number from 0 to 18446744073709551615 (expected checkpoint-N.jsonl)",
            "checkpoint-18446744073709551616.jsonl: cannot read the checkpoint number of this \
             file: `18446744073709551616` is not a whole number from 0 to 18446744073709551615 \
             (expected checkpoint-N.jsonl)",
            "checkpoint-2.jsonl: cannot read feedback: not a regular file (a FIFO); only regular \
             files are read",
            "checkpoint-3.jsonl: cannot read feedback: not a regular file (a character device); \
             only regular files are read",
            "progress-x.jsonl: cannot read the progress number of this file: `x` is not a whole \
             number from 0 to 4294967295 (expected progress-N.jsonl)",
        ]
    );
    assert_eq!(state.rescan(), FeedbackDiff::default());
}

#[test]
fn a_predicted_class_no_sample_has_is_an_error_until_one_does() {
    let sample = |id, label: &str| Sample {
        id,
        name: format!("{id}"),
        label: label.into(),
        path: String::new(),
        digest: Digest::default(),
    };
    let score = |sample, predicted: &str| Score {
        sample,
        checkpoint: 1,
        p_true: Value(0.5),
        loss: Value(0.69),
        predicted: predicted.into(),
    };
    let captured = timely::execute_directly(move |worker| {
        let (mut samples, mut feedback, out) = worker.dataflow::<u64, _, _>(|scope| {
            let (si, s) = scope.new_collection::<Sample, isize>();
            let (fi, f) = scope.new_collection::<LocatedScore, isize>();
            let (scores, errors) = f.against_samples("fb", s);
            let out = scores
                .map(|s| (s.sample, String::new()))
                .concat(errors.map(|e| (0, format!("{}: {}", e.location, e.message))))
                .consolidate()
                .inner
                .capture();
            (si, fi, out)
        });
        samples.update_at(sample(1, "coat"), 0, 1);
        feedback.update_at((score(1, "coat"), "f:1".into()), 0, 1);
        feedback.update_at((score(1, "cot"), "f:2".into()), 0, 1);
        samples.update_at(sample(2, "cot"), 1, 1);
        samples.close();
        feedback.close();
        out
    });
    let mut out: Vec<_> = captured
        .extract()
        .into_iter()
        .flat_map(|(_, d)| d)
        .collect();
    out.sort();
    let unknown = "f:2: predicted class `cot` is not a class of the samples".to_string();
    assert_eq!(
        out,
        vec![
            ((0, unknown.clone()), 0, 1),
            ((0, unknown), 1, -1),
            ((1, String::new()), 0, 1),
            ((1, String::new()), 1, 1),
        ]
    );
}
