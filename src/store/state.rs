//! `<output>/state/`: the last committed version, so a new run continues the version sequence
//! instead of overwriting earlier snapshots.

use super::atomic::write_file;
use super::error::StoreError;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The persisted run state.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct RunState {
    /// The last version every sink finished writing.
    pub last_version: Option<u64>,
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
