//! Commits over several sinks, and what [`recover`] makes of a crash on either side of the
//! commit point.

use super::*;
use crate::record::{Digest, Sample};
use crate::store::content::write_snapshot_if_changed;
use crate::store::manifest::{Layout, ManifestFormat, Row, TableKind};
use std::path::PathBuf;

fn sinks() -> Vec<SinkFolder> {
    ["manifests", "errors"]
        .iter()
        .map(|name| SinkFolder {
            name: name.to_string(),
            keep: 1,
        })
        .collect()
}

/// Writes a version folder of `sink` holding `rows` samples, unpublished.
fn write(output: &Path, sink: &str, version: u64, rows: u64) {
    let samples: Vec<Row> = (0..rows)
        .map(|id| {
            Row::Sample(Sample {
                id,
                name: format!("c/{id}.png"),
                label: "c".into(),
                path: format!("/d/c/{id}.png"),
                digest: Digest::of(&id.to_le_bytes()),
            })
        })
        .collect();
    let inputs = ["rows".to_string()];
    let provenance = serde_json::Map::new();
    let layout = Layout {
        inputs: &inputs,
        kinds: &[TableKind::Sample],
        formats: &[ManifestFormat::Jsonl],
        keep: 1,
        provenance: &provenance,
    };
    let tables = vec![samples.iter().map(|r| (r, 1)).collect()];
    let folder = output.join(sink);
    assert!(write_snapshot_if_changed(&folder, version, &layout, &tables).unwrap());
}

/// Both sinks write `version` and it is committed.
fn commit_version(output: &Path, version: u64) -> RunState {
    let mut state = RunState::load(output).unwrap();
    for sink in ["manifests", "errors"] {
        write(output, sink, version, version + 1);
        state.set_snapshot(sink, version);
    }
    state.last_version = Some(version);
    commit(output, &state, &sinks()).unwrap();
    state
}

fn currents(output: &Path) -> Vec<Option<u64>> {
    ["manifests", "errors"]
        .iter()
        .map(|sink| current_version(&output.join(sink)))
        .collect()
}

fn versions_on_disk(output: &Path, sink: &str) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(output.join(sink))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n != "current")
        .collect();
    names.sort();
    names
}

fn run_json(output: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(output.join("state/run.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

#[test]
fn a_commit_names_every_sinks_snapshot_then_switches_and_prunes() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path();
    commit_version(out, 0);
    commit_version(out, 1);
    commit_version(out, 2);
    assert_eq!(
        run_json(out),
        serde_json::json!({
            "last_version": 2,
            "snapshots": { "errors": "errors/v000002", "manifests": "manifests/v000002" }
        })
    );
    assert_eq!(currents(out), [Some(2), Some(2)]);
    assert_eq!(
        versions_on_disk(out, "manifests"),
        ["v000001", "v000002"],
        "keep 1 before the current one"
    );
}

#[test]
fn a_crash_before_the_commit_point_leaves_the_previous_version_and_is_rolled_back() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path();
    commit_version(out, 0);
    // Version 1: manifests written, then the process dies before errors and the commit.
    write(out, "manifests", 1, 5);
    std::fs::create_dir_all(out.join("errors/.v000001.tmp-77")).unwrap();
    assert_eq!(
        currents(out),
        [Some(0), Some(0)],
        "readers still see version 0"
    );
    assert_eq!(run_json(out)["last_version"], 0);

    let state = recover(out, &sinks()).unwrap();
    assert_eq!(state.last_version, Some(0));
    assert_eq!(
        state.next_version(),
        1,
        "the uncommitted number is used again"
    );
    assert_eq!(versions_on_disk(out, "manifests"), ["v000000"]);
    assert_eq!(versions_on_disk(out, "errors"), ["v000000"]);
    assert_eq!(currents(out), [Some(0), Some(0)]);
}

#[test]
fn a_crash_after_the_commit_point_is_rolled_forward() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path();
    commit_version(out, 0);
    // Version 1 is written by both sinks and committed; the process dies before any `current`
    // is switched. Readers of run.json see version 1 whole; `current` still says 0 everywhere.
    let mut state = RunState::load(out).unwrap();
    for sink in ["manifests", "errors"] {
        write(out, sink, 1, 9);
        state.set_snapshot(sink, 1);
    }
    state.last_version = Some(1);
    state.save(out).unwrap();
    assert_eq!(currents(out), [Some(0), Some(0)]);

    let recovered = recover(out, &sinks()).unwrap();
    assert_eq!(recovered, state);
    assert_eq!(currents(out), [Some(1), Some(1)]);
    assert_eq!(versions_on_disk(out, "manifests"), ["v000000", "v000001"]);
}

#[test]
fn a_sink_that_did_not_change_keeps_its_older_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path();
    commit_version(out, 0);
    let mut state = RunState::load(out).unwrap();
    write(out, "manifests", 1, 3);
    state.set_snapshot("manifests", 1);
    state.last_version = Some(1);
    commit(out, &state, &sinks()).unwrap();
    assert_eq!(currents(out), [Some(1), Some(0)]);
    let recovered = recover(out, &sinks()).unwrap();
    assert_eq!(recovered.version_of("errors"), Some(0));
    assert_eq!(
        versions_on_disk(out, "errors"),
        ["v000000"],
        "not rolled back"
    );
}

#[test]
fn an_earlier_discls_run_state_and_a_missing_one_are_read_from_the_links() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path();
    commit_version(out, 0);
    commit_version(out, 1);
    // An earlier discl: no snapshot list, and `current` switched before run.json was written.
    std::fs::write(out.join("state/run.json"), "{\"last_version\": 0}").unwrap();
    let state = recover(out, &sinks()).unwrap();
    assert_eq!(state.last_version, Some(1));
    assert_eq!(state.version_of("manifests"), Some(1));
    assert_eq!(versions_on_disk(out, "manifests"), ["v000000", "v000001"]);

    std::fs::remove_file(out.join("state/run.json")).unwrap();
    let state = recover(out, &sinks()).unwrap();
    assert_eq!(state.last_version, Some(1));
    assert_eq!(run_json(out)["snapshots"]["errors"], "errors/v000001");
    assert_eq!(committed(out, &sinks()), state);
}

#[test]
fn nothing_committed_means_every_version_folder_goes() {
    let dir = tempfile::tempdir().unwrap();
    let out: PathBuf = dir.path().into();
    write(&out, "manifests", 0, 2);
    let state = recover(&out, &sinks()).unwrap();
    assert_eq!(state, RunState::default());
    assert!(versions_on_disk(&out, "manifests").is_empty());
}
