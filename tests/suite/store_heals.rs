//! The store heals itself: a missing, truncated or corrupt image index (`state/synthetic.redb`)
//! and a corrupt run state (`state/run.json`) are rebuilt from what is on disk, and the next
//! run succeeds without making any image again, writing the same manifests byte for byte.

use crate::common;

use common::*;
use discl::RunSummary;
use std::collections::BTreeMap;
use std::path::Path;

/// The shipped fixture → classify → 3 hardest → generate (tiny pixel UNet) → sink `out`.
fn graph(out: &Path) -> String {
    scored_graph(
        out,
        &fixture(),
        &format!(
            r#"
[models.gen]
path = "{repo}/models/tiny-pixel-unet"

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
batch_size = 4

[nodes.out]
op = "sink"
inputs = ["hard", "synthetic"]
formats = ["jsonl", "parquet"]
"#,
            repo = REPO
        ),
    )
}

/// The manifest files (not `_snapshot.json`, which names its version) of `out/current`.
fn manifests(out: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(out.join("out/current"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap() != "_snapshot.json")
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&p).unwrap())
        })
        .collect()
}

fn made(summary: &RunSummary) -> (u64, u64) {
    let synthetic = &summary.nodes["synthetic"];
    (synthetic.computed, synthetic.cache_hits)
}

#[test]
fn a_damaged_image_index_and_run_state_are_rebuilt_and_nothing_is_made_again() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let text = graph(&out);
    let first = run_text(&text, 1);
    assert_eq!(made(&first), (12, 0));
    let written = manifests(&out);
    assert_eq!(written.len(), 4, "{:?}", written.keys());
    let index = out.join("state/synthetic.redb");
    let run_state = out.join("state/run.json");
    let damage: [(&str, &dyn Fn()); 3] = [
        ("garbage", &|| {
            std::fs::write(&index, vec![0x5a; 4096]).unwrap()
        }),
        ("truncated", &|| {
            let bytes = std::fs::read(&index).unwrap();
            std::fs::write(&index, &bytes[..bytes.len().min(700)]).unwrap()
        }),
        ("missing", &|| std::fs::remove_file(&index).unwrap()),
    ];
    for (how, damage) in damage {
        damage();
        std::fs::write(&run_state, "{\"last_version\": ").unwrap();
        // Without its manifests the next run writes them again, from the store alone.
        std::fs::remove_dir_all(out.join("out")).unwrap();
        let again = run_text(&text, 1);
        assert_eq!(
            made(&again),
            (0, 12),
            "{how}: every image came from the store"
        );
        assert_eq!(manifests(&out), written, "{how}: the same manifests");
        let state: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&run_state).unwrap()).unwrap();
        assert_eq!(
            state["last_version"].as_u64(),
            again.versions_written.last().copied(),
            "{how}: the run state is whole again"
        );
    }
}
