//! `<output>/state/run.json`: the last committed version and the snapshot folder of each sink
//! that belongs to it. Writing this file (atomically) is what commits a version for every sink
//! at once ([`super::commit`]); a new run continues the version sequence from it.

use super::atomic::write_file;
use super::error::StoreError;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// The persisted run state.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct RunState {
    /// The last committed version.
    pub last_version: Option<u64>,
    /// Each sink's snapshot in that version, as a folder relative to the output folder
    /// (`"manifests": "manifests/v000007"`); a sink whose rows did not change keeps an older
    /// one. Absent in files an earlier discl wrote.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub snapshots: BTreeMap<String, String>,
}

const FILE: &str = "state/run.json";

impl RunState {
    /// Reads `<output>/state/run.json`; a missing file is a fresh start.
    pub fn load(output: &Path) -> Result<RunState, StoreError> {
        let file = output.join(FILE);
        match std::fs::read_to_string(&file) {
            Ok(text) => serde_json::from_str(&text)
                .map_err(|source| StoreError::Json { path: file, source }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(RunState::default()),
            Err(e) => Err(StoreError::io(&file, e)),
        }
    }

    /// Reads the state like [`RunState::load`], but a file that does not parse (torn by a
    /// crash, edited by hand) is no dead end: it is replaced by `rebuilt` (what the snapshots on
    /// disk say), with a message.
    pub fn load_or_rebuild(output: &Path, rebuilt: RunState) -> Result<RunState, StoreError> {
        match RunState::load(output) {
            Err(StoreError::Json { path, source }) => {
                eprintln!(
                    "warning: {}: cannot read the run state ({source}); rebuilt from the \
                     snapshots on disk (last version: {})",
                    path.display(),
                    rebuilt
                        .last_version
                        .map_or_else(|| "none".to_string(), |v| v.to_string())
                );
                rebuilt.save(output)?;
                Ok(rebuilt)
            }
            other => other,
        }
    }

    /// The version of a sink's committed snapshot.
    pub fn version_of(&self, sink: &str) -> Option<u64> {
        let folder = self.snapshots.get(sink)?;
        let name = folder.strip_prefix(sink)?.strip_prefix('/')?;
        super::manifest::parse_version_dir(name)
    }

    /// Names `version` as a sink's committed snapshot.
    pub fn set_snapshot(&mut self, sink: &str, version: u64) {
        let folder = format!("{sink}/{}", super::manifest::version_dir(version));
        self.snapshots.insert(sink.to_string(), folder);
    }

    /// The first version a new run uses.
    pub fn next_version(&self) -> u64 {
        self.last_version.map_or(0, |v| v + 1)
    }

    /// Writes the state atomically.
    pub fn save(&self, output: &Path) -> Result<(), StoreError> {
        let json = serde_json::to_vec_pretty(self).expect("serialisable");
        write_file(&output.join(FILE), &json)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_continue_across_runs() {
        let dir = tempfile::tempdir().unwrap();
        let state = RunState::load(dir.path()).unwrap();
        assert_eq!(state.next_version(), 0);
        RunState {
            last_version: Some(4),
            ..RunState::default()
        }
        .save(dir.path())
        .unwrap();
        assert_eq!(RunState::load(dir.path()).unwrap().next_version(), 5);
        std::fs::write(dir.path().join(FILE), "{").unwrap();
        assert!(RunState::load(dir.path())
            .unwrap_err()
            .to_string()
            .contains("run.json"));
    }

    #[test]
    fn a_run_state_that_does_not_parse_is_rebuilt() {
        let dir = tempfile::tempdir().unwrap();
        let rebuilt = RunState {
            last_version: Some(6),
            ..RunState::default()
        };
        assert_eq!(
            RunState::load_or_rebuild(dir.path(), rebuilt.clone()).unwrap(),
            RunState::default(),
            "a missing file is a fresh start"
        );
        std::fs::create_dir_all(dir.path().join("state")).unwrap();
        for torn in ["{\"last_vers", "", "\0\0\0"] {
            std::fs::write(dir.path().join(FILE), torn).unwrap();
            let state = RunState::load_or_rebuild(dir.path(), rebuilt.clone()).unwrap();
            assert_eq!(state, rebuilt);
            assert_eq!(
                RunState::load(dir.path()).unwrap(),
                rebuilt,
                "and written back"
            );
        }
    }
}
