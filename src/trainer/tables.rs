//! What the built-in trainer reads, as any trainer does: the JSONL tables of a sink's current
//! version (`<output>/<sink>/current/<input>.jsonl`, and `<mix>/stage-N.jsonl`), resolved once
//! per stage so every table comes from one complete version.

use crate::record::{StageItem, StagePlan, REAL_LEVEL};
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// A real image as a sink writes a `Sample` row.
#[derive(Clone, Debug, Deserialize)]
pub struct SampleRow {
    pub id: u64,
    pub label: String,
    pub path: String,
}

#[derive(Deserialize)]
struct GenKeyRow {
    sample: u64,
    level: u16,
}

/// A synthetic image as a sink writes a `Synthetic` row (path relative to the output folder).
#[derive(Deserialize)]
struct SyntheticRow {
    key: GenKeyRow,
    path: String,
}

/// One image of the validation set: a real image (level 1000) or a synthetic one.
#[derive(Clone, Debug)]
pub struct ValidationImage {
    pub sample: u64,
    pub level: u16,
    pub label: String,
    pub path: PathBuf,
}

/// A sink's version folder, resolved from its `current` link once.
pub struct Version {
    pub folder: PathBuf,
}

impl Version {
    /// The version `<sink>/current` points to.
    pub fn current(sink: &Path) -> Result<Version, String> {
        let link = sink.join("current");
        let target = std::fs::read_link(&link)
            .map_err(|e| format!("{}: no current version yet ({e})", link.display()))?;
        Ok(Version {
            folder: sink.join(target),
        })
    }

    /// The rows of `<input>.jsonl` (or of `<input>/<file>.jsonl` when `file` is given).
    pub fn rows<T: for<'de> Deserialize<'de>>(
        &self,
        input: &str,
        file: Option<&str>,
    ) -> Result<Vec<T>, String> {
        let path = match file {
            Some(file) => self.folder.join(input).join(format!("{file}.jsonl")),
            None => self.folder.join(format!("{input}.jsonl")),
        };
        read_jsonl(&path)
    }

    /// The stage plans, by stage.
    pub fn plans(&self, input: &str) -> Result<Vec<StagePlan>, String> {
        let mut plans: Vec<StagePlan> = self.rows(input, None)?;
        plans.sort_by_key(|p| p.stage);
        Ok(plans)
    }

    /// The rows of stage `stage` of the mix `input`.
    pub fn stage(&self, input: &str, stage: u32) -> Result<Vec<StageItem>, String> {
        let file = format!("stage-{stage}");
        if !self
            .folder
            .join(input)
            .join(format!("{file}.jsonl"))
            .is_file()
        {
            // A stage the budget left empty has no file.
            return Ok(Vec::new());
        }
        self.rows(input, Some(&file))
    }

    /// The real validation images and their synthetic ones (paths made relative to where
    /// discl runs: synthetic rows name files under the output folder).
    pub fn validation(
        &self,
        real: &str,
        synthetic: &str,
        output: &Path,
    ) -> Result<Vec<ValidationImage>, String> {
        let samples: Vec<SampleRow> = self.rows(real, None)?;
        let labels: std::collections::HashMap<u64, &str> =
            samples.iter().map(|s| (s.id, s.label.as_str())).collect();
        let mut images: Vec<ValidationImage> = samples
            .iter()
            .map(|s| ValidationImage {
                sample: s.id,
                level: REAL_LEVEL,
                label: s.label.clone(),
                path: PathBuf::from(&s.path),
            })
            .collect();
        for row in self.rows::<SyntheticRow>(synthetic, None)? {
            let Some(label) = labels.get(&row.key.sample) else {
                return Err(format!(
                    "{}: synthetic image of sample {} that `{real}` does not have",
                    self.folder.join(format!("{synthetic}.jsonl")).display(),
                    row.key.sample
                ));
            };
            images.push(ValidationImage {
                sample: row.key.sample,
                level: row.key.level,
                label: label.to_string(),
                path: output.join(row.path),
            });
        }
        Ok(images)
    }
}

/// Every line of a JSONL file as `T`; an error names the file and line.
pub fn read_jsonl<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<Vec<T>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        format!(
            "{}: {e} (the trainer reads the JSONL a sink writes: is \"jsonl\" among its formats?)",
            path.display()
        )
    })?;
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(i, line)| {
            serde_json::from_str(line).map_err(|e| format!("{}:{}: {e}", path.display(), i + 1))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_line_is_named_by_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stages.jsonl");
        std::fs::write(
            &path,
            "{\"stage\":0,\"levels\":[100],\"epochs\":2}\n{\"stage\":1,\n",
        )
        .unwrap();
        let error = read_jsonl::<StagePlan>(&path).unwrap_err();
        assert!(
            error.starts_with(&format!("{}:2: ", path.display())),
            "{error}"
        );
        std::fs::write(&path, "{\"stage\":1,\"levels\":[],\"epochs\":1}\n\n").unwrap();
        let plans = read_jsonl::<StagePlan>(&path).unwrap();
        assert_eq!(
            plans,
            vec![StagePlan {
                stage: 1,
                levels: vec![],
                epochs: 1
            }]
        );
    }
}
