//! `feedback`: reads trainer feedback (`<folder>/checkpoint-N.jsonl`, one score per line) into
//! the same `Score` collection the classifier feeds. Malformed lines and NaN values are error
//! records naming file and line; scores for samples the pipeline does not know are reported
//! (and withheld) by a join against the samples, so they become valid if the sample appears.

use crate::record::{sample_id, ErrorRecord, Sample, Score, Value};
use differential_dataflow::VecCollection;
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// A feedback score and the `file:line` it came from.
pub type LocatedScore = (Score, String);

/// One line of a feedback file.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct FeedbackLine {
    /// The sample's id (a number) or its dataset-relative name (a string).
    sample: SampleRef,
    p_true: f64,
    loss: Option<f64>,
    predicted: String,
}

#[derive(serde::Deserialize)]
#[serde(untagged)]
enum SampleRef {
    Id(u64),
    Name(String),
}

/// A feedback folder and what it held last time, so rescans produce diffs.
pub struct FeedbackState {
    node: String,
    folder: PathBuf,
    last_scores: BTreeSet<LocatedScore>,
    last_errors: BTreeSet<ErrorRecord>,
    /// What each file held at its (size, modified time), so rescans parse only changed files.
    parsed: HashMap<PathBuf, ParsedFile>,
}

type ParsedFile = ((u64, SystemTime), Vec<LocatedScore>, Vec<ErrorRecord>);

/// Updates of one rescan.
#[derive(Debug, Default, PartialEq)]
pub struct FeedbackDiff {
    pub scores: Vec<(LocatedScore, isize)>,
    pub errors: Vec<(ErrorRecord, isize)>,
}

impl FeedbackState {
    pub fn new(node: &str, folder: PathBuf) -> Self {
        FeedbackState {
            node: node.into(),
            folder,
            last_scores: BTreeSet::new(),
            last_errors: BTreeSet::new(),
            parsed: HashMap::new(),
        }
    }

    /// Rereads the folder; returns what changed since the last call. A missing folder is empty
    /// (a trainer may not have written anything yet).
    pub fn rescan(&mut self) -> FeedbackDiff {
        let (scores, errors) = self.read_all();
        let mut diff = FeedbackDiff::default();
        diff.scores
            .extend(scores.difference(&self.last_scores).map(|s| (s.clone(), 1)));
        diff.scores.extend(
            self.last_scores
                .difference(&scores)
                .map(|s| (s.clone(), -1)),
        );
        diff.errors
            .extend(errors.difference(&self.last_errors).map(|e| (e.clone(), 1)));
        diff.errors.extend(
            self.last_errors
                .difference(&errors)
                .map(|e| (e.clone(), -1)),
        );
        self.last_scores = scores;
        self.last_errors = errors;
        diff
    }

    fn read_all(&mut self) -> (BTreeSet<LocatedScore>, BTreeSet<ErrorRecord>) {
        let mut scores = BTreeSet::new();
        let mut errors = BTreeSet::new();
        let entries = match std::fs::read_dir(&self.folder) {
            Ok(entries) => entries,
            // No folder yet: the trainer has not written anything.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return (scores, errors),
            Err(e) => {
                // Unreadable now: keep what was read before instead of retracting it all.
                errors.insert(self.error(
                    self.folder.display().to_string(),
                    format!("cannot read feedback folder: {e}"),
                ));
                return (self.last_scores.clone(), errors);
            }
        };
        let mut files: Vec<(u64, PathBuf)> = entries
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter_map(|p| checkpoint_of(&p).map(|c| (c, p)))
            .collect();
        files.sort();
        let mut parsed = HashMap::new();
        for (checkpoint, file) in files {
            let stamp = std::fs::metadata(&file)
                .map(|m| (m.len(), m.modified().unwrap_or(SystemTime::UNIX_EPOCH)));
            let entry = match (stamp, self.parsed.remove(&file)) {
                (Ok(stamp), Some(cached)) if cached.0 == stamp => cached,
                (stamp, _) => {
                    let (file_scores, file_errors) = self.parse_file(&file, checkpoint);
                    (
                        stamp.unwrap_or((0, SystemTime::UNIX_EPOCH)),
                        file_scores,
                        file_errors,
                    )
                }
            };
            scores.extend(entry.1.iter().cloned());
            errors.extend(entry.2.iter().cloned());
            parsed.insert(file, entry);
        }
        self.parsed = parsed;
        (scores, errors)
    }

    fn parse_file(&self, file: &Path, checkpoint: u64) -> (Vec<LocatedScore>, Vec<ErrorRecord>) {
        let (mut scores, mut errors) = (Vec::new(), Vec::new());
        let text = match std::fs::read_to_string(file) {
            Ok(text) => text,
            Err(e) => {
                errors.push(self.error(
                    file.display().to_string(),
                    format!("cannot read feedback: {e}"),
                ));
                return (scores, errors);
            }
        };
        for (i, line) in text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
        {
            let location = format!("{}:{}", file.display(), i + 1);
            match parse_line(line, checkpoint) {
                Ok(score) => scores.push((score, location)),
                Err(message) => errors.push(self.error(location, message)),
            }
        }
        (scores, errors)
    }

    fn error(&self, location: String, message: String) -> ErrorRecord {
        ErrorRecord {
            node: self.node.clone(),
            location,
            message,
        }
    }
}

/// `checkpoint-12.jsonl` → 12.
fn checkpoint_of(path: &Path) -> Option<u64> {
    let name = path.file_name()?.to_str()?;
    name.strip_prefix("checkpoint-")?
        .strip_suffix(".jsonl")?
        .parse()
        .ok()
}

fn parse_line(line: &str, checkpoint: u64) -> Result<Score, String> {
    let parsed: FeedbackLine =
        serde_json::from_str(line).map_err(|e| format!("bad feedback line: {e}"))?;
    if !(0.0..=1.0).contains(&parsed.p_true) {
        return Err(format!(
            "p_true must be a probability in [0, 1], got {}",
            parsed.p_true
        ));
    }
    let loss = parsed.loss.unwrap_or(-parsed.p_true.max(1e-12).ln());
    if !loss.is_finite() || loss < 0.0 {
        return Err(format!(
            "loss must be a finite, non-negative number, got {loss}"
        ));
    }
    let sample = match parsed.sample {
        SampleRef::Id(id) => id,
        SampleRef::Name(name) => sample_id(&name),
    };
    Ok(Score {
        sample,
        checkpoint,
        p_true: Value(parsed.p_true as f32),
        loss: Value(loss as f32),
        predicted: parsed.predicted,
    })
}

/// Adds the unknown-sample check to feedback collections.
pub trait FeedbackExt<'scope> {
    /// Splits feedback into scores of known samples and errors for unknown ones.
    fn against_samples(
        self,
        node: &str,
        samples: VecCollection<'scope, u64, Sample>,
    ) -> (
        VecCollection<'scope, u64, Score>,
        VecCollection<'scope, u64, ErrorRecord>,
    );
}

impl<'scope> FeedbackExt<'scope> for VecCollection<'scope, u64, LocatedScore> {
    fn against_samples(
        self,
        node: &str,
        samples: VecCollection<'scope, u64, Sample>,
    ) -> (
        VecCollection<'scope, u64, Score>,
        VecCollection<'scope, u64, ErrorRecord>,
    ) {
        let known = samples.map(|s| s.id).distinct();
        let keyed = self.map(|(score, location)| (score.sample, (score, location)));
        let scores = keyed
            .clone()
            .semijoin(known.clone())
            .map(|(_, (score, _))| score);
        let node = node.to_string();
        let unknown = keyed
            .antijoin(known)
            .map(move |(id, (_, location))| ErrorRecord {
                node: node.clone(),
                location,
                message: format!("feedback names unknown sample {id}"),
            });
        (scores, unknown)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Digest;
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
}
