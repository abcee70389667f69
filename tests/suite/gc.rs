//! `discl gc` on a real run: once fewer samples are hard and the older version is pruned, the
//! images and contact sheets of the samples that left are listed (nothing removed), removed
//! with `--delete`, and made again — only they — when those samples are hard once more.

use crate::common;

use common::*;
use std::path::Path;
use std::process::Command;

/// Fixture → classify → the k hardest → generate (tiny pixel UNet, 2 levels × 2 seeds) → a
/// sink keeping no older version.
fn graph(out: &Path, k: usize) -> String {
    scored_graph(
        out,
        &fixture(),
        &format!(
            r#"
[models.gen]
path = "{REPO}/models/tiny-pixel-unet"

[nodes.hard]
op = "hard"
inputs = ["train", "scores"]
rules = [{{ top_k_loss = {k} }}]

[nodes.synthetic]
op = "generate"
inputs = ["hard"]
model = "gen"
classes_from = "cnn"
levels = [0.0, 0.5]
seeds = 2
steps = 6
batch_size = 4

[nodes.out]
op = "sink"
inputs = ["hard", "synthetic"]
keep_versions = 0
"#
        ),
    )
}

fn gc(file: &Path, delete: bool) -> (Vec<String>, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_discl"));
    command.args(["gc", file.to_str().unwrap()]);
    if delete {
        command.arg("--delete");
    }
    let out = command.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stderr}");
    let listed = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    (listed, stderr)
}

fn made(summary: &discl::RunSummary) -> (u64, u64) {
    let synthetic = &summary.nodes["synthetic"];
    (synthetic.computed, synthetic.cache_hits)
}

#[test]
fn gc_lists_then_removes_what_no_snapshot_refers_to() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let file = dir.path().join("g.toml");
    std::fs::write(&file, graph(&out, 3)).unwrap();
    assert_eq!(made(&run_text(&graph(&out, 3), 1)), (12, 0));
    let (listed, said) = gc(&file, false);
    assert!(listed.is_empty(), "{listed:?}");
    assert_eq!(
        said,
        format!(
            "{}: 0 image(s), 0 contact sheet(s) and 0 rewritten UNet(s), 0.0 MiB that nothing \
             kept refers to (2 snapshot(s) read); --delete removes them\n",
            out.display()
        )
    );

    // One sample is hard now; version 0 is pruned: two samples' 8 images and 2 sheets are
    // referred to by nothing.
    std::fs::write(&file, graph(&out, 1)).unwrap();
    assert_eq!(made(&run_text(&graph(&out, 1), 1)), (0, 4));
    let (listed, said) = gc(&file, false);
    let images = listed
        .iter()
        .filter(|p| p.starts_with("synthetic/"))
        .count();
    let sheets = listed
        .iter()
        .filter(|p| p.starts_with("report/spectrum/"))
        .count();
    assert_eq!((images, sheets, listed.len()), (8, 2, 10), "{listed:?}");
    assert!(
        said.contains(": 8 image(s), 2 contact sheet(s) and 0 rewritten UNet(s), "),
        "{said}"
    );
    assert!(listed.iter().all(|p| out.join(p).exists()), "a dry run");

    let (removed, said) = gc(&file, true);
    assert_eq!(removed, listed);
    assert!(
        said.contains(": removed 8 image(s), 2 contact sheet(s) and 0 rewritten UNet(s), "),
        "{said}"
    );
    assert!(listed.iter().all(|p| !out.join(p).exists()));
    assert!(gc(&file, false).0.is_empty());

    // The kept sample's images are still served; the others are made again when needed.
    assert_eq!(made(&run_text(&graph(&out, 3), 1)), (8, 4));
}

/// Rewritten UNets the graph no longer asks for, and a rewrite a killed run left unfinished,
/// are listed and removed; the one in use is kept.
#[test]
fn gc_lists_then_removes_rewritten_unets_no_node_asks_for() {
    use crate::generate_run::{pipeline, run};
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let file = dir.path().join("gen.toml");
    let settings = "levels = [0.5]\nsteps = 2\nscheduler = \"ddim\"";
    let fused = pipeline(
        &out,
        "tiny-sd",
        &format!("{settings}\nattention = \"fused\""),
    );
    std::fs::write(&file, &fused).unwrap();
    run(&fused);
    let models = out.join("state/models");
    let unfinished = models.join(".abc-unet-fused-attention-v1.tmp-4194305-0");
    std::fs::create_dir_all(&unfinished).unwrap();
    std::fs::write(unfinished.join("model.onnx"), b"half written").unwrap();
    // A rewrite in progress: its writer (this test's process) is running.
    let in_progress = models.join(format!(
        ".abd-unet-fused-attention-v1.tmp-{}-0",
        std::process::id()
    ));
    std::fs::create_dir_all(&in_progress).unwrap();
    let rewritten: Vec<String> = std::fs::read_dir(&models)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with("-unet-fused-attention-v1"))
        .collect();
    assert_eq!(rewritten.len(), 1, "{rewritten:?}");
    let in_models = |listed: &[String]| -> Vec<String> {
        listed
            .iter()
            .filter(|p| p.starts_with("state/models/"))
            .cloned()
            .collect()
    };

    let (listed, stderr) = gc(&file, false);
    assert_eq!(
        in_models(&listed),
        ["state/models/.abc-unet-fused-attention-v1.tmp-4194305-0"],
        "{stderr}"
    );
    // The graph no longer asks for fused attention: its UNet is listed too, then removed.
    std::fs::write(&file, pipeline(&out, "tiny-sd", settings)).unwrap();
    let (listed, stderr) = gc(&file, false);
    assert_eq!(in_models(&listed).len(), 2, "{listed:?}");
    assert!(
        listed.contains(&format!("state/models/{}", rewritten[0])),
        "{listed:?}"
    );
    assert!(stderr.contains("2 rewritten UNet(s)"), "{stderr}");
    gc(&file, true);
    let left: Vec<_> = std::fs::read_dir(&models)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(left, [in_progress], "only the write in progress is left");
}
