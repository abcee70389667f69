//! One commit per version across all sinks. Each sink renames its finished version folder into
//! place (`<sink>/vNNNNNN`), but no reader is pointed at it yet; once every sink has written
//! the version, [`commit`] writes `state/run.json` naming each sink's snapshot — that atomic
//! rename is the commit point — and only then switches each sink's `current` and prunes.
//!
//! A crash before the commit point leaves the previous version everywhere (the new folders are
//! rolled back by the next run's [`recover`]); a crash after it leaves `run.json` naming the new
//! version whole, and [`recover`] switches the `current` links the crash did not reach.

use super::error::StoreError;
use super::failpoint;
use super::manifest::{current_version, parse_version_dir, publish_snapshot};
use super::state::RunState;
use std::path::Path;

/// A sink of the graph: its name (and folder under the output folder) and how many versions
/// it keeps before its current one.
#[derive(Clone, Debug)]
pub struct SinkFolder {
    pub name: String,
    pub keep: usize,
}

/// Commits `state` (the new version and each sink's snapshot in it), then makes every sink's
/// `current` point where it says.
pub fn commit(output: &Path, state: &RunState, sinks: &[SinkFolder]) -> Result<(), StoreError> {
    state.save(output)?;
    failpoint::reached("committed");
    publish(output, state, sinks)
}

/// Points each sink's `current` at the snapshot `state` names, where it does not already, and
/// prunes what that sink no longer keeps.
fn publish(output: &Path, state: &RunState, sinks: &[SinkFolder]) -> Result<(), StoreError> {
    for sink in state.snapshots.keys() {
        let Some(version) = state.version_of(sink) else {
            continue;
        };
        let folder = output.join(sink);
        if current_version(&folder) == Some(version) || !folder.join(version_name(version)).is_dir()
        {
            continue;
        }
        let keep = sinks
            .iter()
            .find(|s| s.name == *sink)
            .map_or(usize::MAX, |s| s.keep);
        publish_snapshot(&folder, version, keep)?;
        failpoint::reached(&format!("published:{sink}"));
    }
    Ok(())
}

fn version_name(version: u64) -> String {
    super::manifest::version_dir(version)
}

/// Brings the output folder back to its last committed version before a run starts, and
/// returns that state: a `run.json` that does not parse, or is missing while snapshots are
/// published, is rebuilt from the `current` links ([`merge`]). Then every `current` is
/// switched to the committed snapshot (rolling a crash after the commit point forward), and
/// version folders newer than the committed version — written, never committed — are removed
/// (rolling a crash before it back), each with a message.
pub fn recover(output: &Path, sinks: &[SinkFolder]) -> Result<RunState, StoreError> {
    let published = from_current_links(output, sinks);
    let loaded = RunState::load_or_rebuild(output, published.clone())?;
    let state = merge(loaded.clone(), published);
    if loaded == RunState::default() && state != loaded {
        eprintln!(
            "warning: {}: no run state; rebuilt from the snapshots on disk",
            output.join("state/run.json").display()
        );
        state.save(output)?;
    }
    publish(output, &state, sinks)?;
    for sink in sinks {
        roll_back(&output.join(&sink.name), state.last_version)?;
    }
    Ok(state)
}

/// The committed state as [`recover`] finds it, changing nothing on disk: for the processes of
/// a cluster other than the first, which alone recovers the shared output folder.
pub fn committed(output: &Path, sinks: &[SinkFolder]) -> RunState {
    let published = from_current_links(output, sinks);
    match RunState::load(output) {
        Ok(state) => merge(state, published),
        Err(_) => published,
    }
}

/// The state a loaded `run.json` and the `current` links make together: the file, unless it
/// is missing while snapshots are published; an earlier discl's file (no snapshot list, and
/// written after the links were switched) takes its list and the newest version from them.
fn merge(mut state: RunState, published: RunState) -> RunState {
    if state == RunState::default() {
        return published;
    }
    if state.snapshots.is_empty() {
        state.last_version = state.last_version.max(published.last_version);
        state.snapshots = published.snapshots;
    }
    state
}

/// The state the `current` links describe.
fn from_current_links(output: &Path, sinks: &[SinkFolder]) -> RunState {
    let mut state = RunState::default();
    for sink in sinks {
        if let Some(version) = current_version(&output.join(&sink.name)) {
            state.set_snapshot(&sink.name, version);
            state.last_version = state.last_version.max(Some(version));
        }
    }
    state
}

/// Removes a sink's version folders newer than `last` (all of them when nothing was
/// committed) and the staging folders of writes a crash cut short.
fn roll_back(folder: &Path, last: Option<u64>) -> Result<(), StoreError> {
    let Ok(entries) = std::fs::read_dir(folder) else {
        return Ok(());
    };
    let current = current_version(folder);
    for entry in entries.filter_map(|e| e.ok()) {
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        let staging = name.starts_with(".v") && name.contains(".tmp-");
        let uncommitted = parse_version_dir(&name)
            .is_some_and(|v| last.is_none_or(|l| v > l) && Some(v) != current);
        if !(staging || uncommitted) || !entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        if uncommitted {
            eprintln!(
                "warning: {}: written by a run that stopped before committing it; removed",
                path.display()
            );
        }
        std::fs::remove_dir_all(&path).map_err(|e| StoreError::io(&path, e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
