//! One commit per version across all sinks: `discl run` is killed (a test failpoint sends it
//! SIGKILL) between one sink's write and another's, at the commit point, and between switching
//! one sink's `current` and the next. Whatever the point, a reader following the contract
//! (`state/run.json` names each sink's snapshot) sees one version whole; one reading
//! `<sink>/current` sees the previous version everywhere until the commit point; and the next
//! run leaves the same manifests, byte for byte, as a run never interrupted.

use crate::common;

use common::*;
use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::Command;

const SINKS: [&str; 3] = ["all", "coats", "errors"];

const GRAPH: &str = r#"[pipeline]
name = "commit"
output = "out"

[nodes.train]
op = "source"
format = "image_folder"
path = "images"

[nodes.coat]
op = "filter"
inputs = ["train"]
field = "label"
equals = "coat"

[nodes.all]
op = "sink"
inputs = ["train"]

[nodes.coats]
op = "sink"
inputs = ["coat"]
formats = ["jsonl", "parquet"]
"#;

/// A folder with the graph and version 0's images (two good ones, one corrupt) committed.
fn first_version(dir: &Path) {
    std::fs::write(dir.join("g.toml"), GRAPH).unwrap();
    for (class, n) in [("coat", 0), ("bag", 0)] {
        add_image(dir, class, n);
    }
    std::fs::write(dir.join("images/coat/broken-1.png"), b"not a png").unwrap();
    assert_eq!(discl(dir, None), Some(0));
}

/// Version 1's changes: every sink's rows change (a coat, a bag, a second corrupt image).
fn change_inputs(dir: &Path) {
    add_image(dir, "coat", 1);
    add_image(dir, "bag", 1);
    std::fs::write(dir.join("images/bag/broken-2.png"), b"nor this").unwrap();
}

/// Copies the fixture's `n`-th image of a class.
fn add_image(dir: &Path, class: &str, n: usize) {
    let mut files: Vec<_> = std::fs::read_dir(fixture().join(class))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let to = dir.join("images").join(class);
    std::fs::create_dir_all(&to).unwrap();
    std::fs::copy(&files[n], to.join(files[n].file_name().unwrap())).unwrap();
}

/// Runs `discl run g.toml` in `dir` (relative paths, so two folders write the same bytes),
/// with a failpoint armed if given; the exit code, `None` when killed.
fn discl(dir: &Path, failpoint: Option<&str>) -> Option<i32> {
    let mut command = Command::new(env!("CARGO_BIN_EXE_discl"));
    command.args(["run", "g.toml"]).current_dir(dir);
    if let Some(point) = failpoint {
        command.env("DISCL_FAILPOINT", point);
    }
    let out = command.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.status.signal() == Some(9) {
        assert!(stderr.contains("failpoint"), "{stderr}");
        return None;
    }
    assert!(out.status.success(), "{stderr}");
    out.status.code()
}

/// The snapshot folder of each sink that `state/run.json` names, and its version.
fn committed(dir: &Path) -> (u64, BTreeMap<String, String>) {
    let text = std::fs::read_to_string(dir.join("out/state/run.json")).unwrap();
    let state: serde_json::Value = serde_json::from_str(&text).unwrap();
    let snapshots = state["snapshots"].as_object().unwrap();
    let folders = snapshots
        .iter()
        .map(|(sink, folder)| (sink.clone(), folder.as_str().unwrap().to_string()))
        .collect();
    (state["last_version"].as_u64().unwrap(), folders)
}

/// Rows per sink in a snapshot folder: what a reader of that version sees.
fn rows(dir: &Path, folders: &BTreeMap<String, String>) -> Vec<usize> {
    let file = |sink: &str| match sink {
        "all" => "train.jsonl",
        "coats" => "coat.jsonl",
        _ => "errors.jsonl",
    };
    SINKS
        .iter()
        .map(|sink| {
            let path = dir.join("out").join(&folders[*sink]).join(file(sink));
            std::fs::read_to_string(path).unwrap().lines().count()
        })
        .collect()
}

fn currents(dir: &Path) -> Vec<String> {
    SINKS
        .iter()
        .map(|sink| {
            let link = std::fs::read_link(dir.join("out").join(sink).join("current")).unwrap();
            link.to_string_lossy().into_owned()
        })
        .collect()
}

/// Every file of every sink's `current` snapshot, by path.
fn current_files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut files = BTreeMap::new();
    for sink in SINKS {
        let current = dir.join("out").join(sink).join("current");
        for entry in std::fs::read_dir(&current).unwrap() {
            let path = entry.unwrap().path();
            let name = format!("{sink}/{}", path.file_name().unwrap().to_string_lossy());
            files.insert(name, std::fs::read(&path).unwrap());
        }
    }
    files
}

#[test]
fn a_kill_anywhere_in_a_commit_leaves_one_version_for_readers_and_the_next_run_completes_it() {
    let scratch = tempfile::tempdir().unwrap();
    let reference = scratch.path().join("reference");
    std::fs::create_dir_all(&reference).unwrap();
    first_version(&reference);
    change_inputs(&reference);
    assert_eq!(discl(&reference, None), Some(0));
    let (last, folders) = committed(&reference);
    assert_eq!(last, 1);
    let (rows_0, rows_1) = (vec![2, 1, 1], rows(&reference, &folders));
    assert_eq!(rows_1, [4, 2, 2]);
    let expected = current_files(&reference);

    let before_commit = [
        "sink-written:all",
        "sink-written:coats",
        "sink-written:errors",
    ];
    let after_commit = ["committed", "published:all", "published:coats"];
    for point in before_commit.iter().chain(&after_commit) {
        let dir = scratch.path().join(point.replace(':', "-"));
        std::fs::create_dir_all(&dir).unwrap();
        first_version(&dir);
        change_inputs(&dir);
        assert_eq!(discl(&dir, Some(point)), None, "{point}: killed");

        // What a reader sees now, with the run dead mid-commit.
        let (last, folders) = committed(&dir);
        let seen = rows(&dir, &folders);
        if before_commit.contains(point) {
            assert_eq!(last, 0, "{point}");
            assert_eq!(seen, rows_0, "{point}: version 0 whole");
            assert_eq!(currents(&dir), ["v000000"; 3], "{point}: no current moved");
        } else {
            assert_eq!(last, 1, "{point}");
            assert_eq!(seen, rows_1, "{point}: version 1 whole");
            assert!(folders.values().all(|f| f.ends_with("/v000001")), "{point}");
        }

        // The next run rolls back or forward and finishes version 1 as if never stopped.
        assert_eq!(discl(&dir, None), Some(0), "{point}: rerun");
        assert_eq!(committed(&dir), committed(&reference), "{point}");
        assert_eq!(currents(&dir), ["v000001"; 3], "{point}");
        assert!(current_files(&dir) == expected, "{point}: the same bytes");
        for sink in SINKS {
            let left: Vec<_> = std::fs::read_dir(dir.join("out").join(sink))
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .filter(|n| n.starts_with('.'))
                .collect();
            assert!(left.is_empty(), "{point}: {sink} keeps {left:?}");
        }
    }
}
