//! Kill and resume: `discl run` is killed (SIGKILL) at several points of a first run — inside
//! the creation of each redb index (strace injects the kill into its first fdatasync, where a
//! kill once left an index that never opened again), after the first and the fourth UNet
//! batch's images are stored, after the sink's write and at the commit — and run again. The
//! second run makes only the images the first did not store, and the output folder ends byte
//! for byte like an uninterrupted run's: manifests, errors, images and contact sheets. The one
//! thing a kill may add: a runner killed while another was writing an image leaves that write's
//! temporary file (`synthetic/xx/.<key>.png.tmp-<pid>-<n>`), which `discl gc` lists.

use crate::common;

use common::*;
use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::Command;

/// 3 hard samples × 2 levels × 2 seeds = 12 images, 2 per UNet call; relative paths, so two
/// folders write the same bytes.
fn graph() -> String {
    format!(
        r#"[pipeline]
name = "kill"
output = "out"
seed = 3

[models.cnn]
path = "{REPO}/models/fashion-cnn"

[models.gen]
path = "{REPO}/models/tiny-pixel-unet"

[nodes.train]
op = "source"
format = "image_folder"
path = "{REPO}/tests/fixtures/fashion-tiny"

[nodes.scores]
op = "classify"
inputs = ["train"]
model = "cnn"
batch_size = 32

[nodes.hard]
op = "hard"
inputs = ["train", "scores"]
rules = [{{ top_k_loss = 3 }}]

[nodes.synthetic]
op = "generate"
inputs = ["hard"]
model = "gen"
classes_from = "cnn"
levels = [0.0, 0.5]
seeds = 2
steps = 6
batch_size = 2

[nodes.out]
op = "sink"
inputs = ["hard", "synthetic"]
formats = ["jsonl", "parquet"]
"#
    )
}

/// Where a run is killed.
enum Kill {
    /// A test failpoint (`DISCL_FAILPOINT`).
    At(&'static str),
    /// strace kills the process at the first fdatasync on this file under `out/state/`.
    FirstSyncOf(&'static str),
}

/// Runs `discl run g.toml` in `dir`; `Some(images made)` when it finished, `None` if killed.
fn run(dir: &Path, kill: Option<&Kill>) -> Option<u64> {
    let summary = dir.join("summary.json");
    let discl = env!("CARGO_BIN_EXE_discl");
    let args = ["run", "g.toml", "--summary-json", summary.to_str().unwrap()];
    let mut command = match kill {
        Some(Kill::FirstSyncOf(file)) => {
            let path = dir.join("out/state").join(file);
            let mut c = Command::new("strace");
            c.args(["-f", "-o", "/dev/null", "-P", path.to_str().unwrap()])
                .args([
                    "-e",
                    "trace=fdatasync",
                    "-e",
                    "inject=fdatasync:signal=KILL:when=1",
                ])
                .arg(discl)
                .args(args);
            c
        }
        _ => {
            let mut c = Command::new(discl);
            c.args(args);
            c
        }
    };
    if let Some(Kill::At(point)) = kill {
        command.env("DISCL_FAILPOINT", point);
    }
    let out = command.current_dir(dir).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.status.signal() == Some(9) || out.status.code() == Some(137) {
        return None;
    }
    assert!(out.status.success(), "{stderr}");
    let text = std::fs::read_to_string(summary).unwrap();
    let summary: serde_json::Value = serde_json::from_str(&text).unwrap();
    let synthetic = &summary["nodes"]["synthetic"];
    let (made, found) = (
        synthetic["computed"].as_u64(),
        synthetic["cache_hits"].as_u64(),
    );
    assert_eq!(made.unwrap() + found.unwrap(), 12, "{summary}");
    made
}

/// Every file a reader or a rerun uses, by path below `out/`: the current snapshots, the
/// images and the contact sheets (not `state/`, whose databases differ in layout).
fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let out = dir.join("out");
    let mut found = BTreeMap::new();
    for folder in ["out/current", "errors/current", "synthetic", "report"] {
        collect(&out, &out.join(folder), &mut found);
    }
    found
}

fn collect(out: &Path, folder: &Path, found: &mut BTreeMap<String, Vec<u8>>) {
    for entry in std::fs::read_dir(folder).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            collect(out, &path, found);
        } else {
            let name = path.strip_prefix(out).unwrap().display().to_string();
            found.insert(name, std::fs::read(&path).unwrap());
        }
    }
}

#[test]
fn a_run_killed_anywhere_resumes_to_the_same_bytes() {
    let scratch = tempfile::tempdir().unwrap();
    let reference = scratch.path().join("reference");
    std::fs::create_dir_all(&reference).unwrap();
    std::fs::write(reference.join("g.toml"), graph()).unwrap();
    assert_eq!(run(&reference, None), Some(12));
    let expected = files(&reference);
    assert_eq!(
        expected.keys().filter(|f| f.ends_with(".png")).count(),
        12 + 3,
        "12 images, 3 contact sheets"
    );

    let strace = Command::new("strace").arg("-V").output().is_ok();
    let mut points = vec![
        // (where, images already stored when it is killed at the least)
        (Kill::At("images-persisted#1"), 2),
        (Kill::At("images-persisted#4"), 8),
        (Kill::At("sink-written:out"), 12),
        (Kill::At("committed"), 12),
    ];
    if strace {
        points.insert(0, (Kill::FirstSyncOf("answers.redb"), 0));
        points.insert(1, (Kill::FirstSyncOf("synthetic.redb"), 0));
    } else {
        eprintln!("strace is not installed: the kills inside index creation are skipped");
    }
    for (n, (kill, stored)) in points.iter().enumerate() {
        let name = match kill {
            Kill::At(point) => format!("failpoint {point}"),
            Kill::FirstSyncOf(file) => format!("first fdatasync of {file}"),
        };
        let dir = scratch.path().join(format!("killed-{n}"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("g.toml"), graph()).unwrap();
        assert_eq!(run(&dir, Some(kill)), None, "{name}: killed");
        let made = run(&dir, None).unwrap_or_else(|| panic!("{name}: the rerun was killed"));
        assert!(made <= 12 - stored, "{name}: {made} images made again");
        let (got, leftovers): (BTreeMap<_, _>, BTreeMap<_, _>) = files(&dir)
            .into_iter()
            .partition(|(file, _)| !file.contains(".tmp-"));
        for file in leftovers.keys() {
            let base = file.rsplit('/').next().unwrap();
            let image = base.split(".tmp-").next().unwrap().trim_start_matches('.');
            assert!(
                file.starts_with("synthetic/") && got.keys().any(|f| f.ends_with(image)),
                "{name}: a kill left {file}, not an unfinished image write"
            );
        }
        assert_eq!(
            got.keys().collect::<Vec<_>>(),
            expected.keys().collect::<Vec<_>>(),
            "{name}"
        );
        for (file, bytes) in &expected {
            assert!(got[file] == *bytes, "{name}: {file} differs");
        }
    }
}
