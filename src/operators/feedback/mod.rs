//! `feedback`: reads trainer feedback from a folder — `checkpoint-N.jsonl` (one score per
//! training sample per line) into the same `Score` collection the classifier feeds, and
//! `progress-N.jsonl` (validation p_true per image and level after N stages) for the adaptive
//! curriculum. Malformed lines and NaN values are error records naming file and line; scores
//! for samples the pipeline does not know are reported (and withheld) by a join against the
//! samples, so they become valid if the sample appears.

mod lines;

use crate::record::{ErrorRecord, Progress, Sample, Score};
use differential_dataflow::VecCollection;
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// A feedback score and the `file:line` it came from.
pub type LocatedScore = (Score, String);

/// A validation-progress record and the `file:line` it came from.
pub type LocatedProgress = (Progress, String);

/// Everything a feedback folder holds at one scan.
#[derive(Clone, Debug, Default)]
struct Contents {
    scores: BTreeSet<LocatedScore>,
    progress: BTreeSet<LocatedProgress>,
    errors: BTreeSet<ErrorRecord>,
}

/// What one file held at its (size, modified time), so rescans parse only changed files.
#[derive(Clone, Debug, Default)]
struct ParsedFile {
    stamp: Option<(u64, SystemTime)>,
    scores: Vec<LocatedScore>,
    progress: Vec<LocatedProgress>,
    errors: Vec<ErrorRecord>,
}

/// A feedback file by kind and number.
enum FileKind {
    Checkpoint(u64),
    Progress(u32),
}

/// A feedback folder and what it held last time, so rescans produce diffs.
pub struct FeedbackState {
    node: String,
    folder: PathBuf,
    last: Contents,
    parsed: HashMap<PathBuf, ParsedFile>,
}

/// Updates of one rescan.
#[derive(Debug, Default, PartialEq)]
pub struct FeedbackDiff {
    pub scores: Vec<(LocatedScore, isize)>,
    pub progress: Vec<(LocatedProgress, isize)>,
    pub errors: Vec<(ErrorRecord, isize)>,
}

/// `(x, +1)` for what `now` has and `before` lacks, `(x, -1)` the other way.
fn changes<T: Ord + Clone>(before: &BTreeSet<T>, now: &BTreeSet<T>) -> Vec<(T, isize)> {
    let added = now.difference(before).map(|x| (x.clone(), 1));
    added
        .chain(before.difference(now).map(|x| (x.clone(), -1)))
        .collect()
}

impl FeedbackState {
    pub fn new(node: &str, folder: PathBuf) -> Self {
        FeedbackState {
            node: node.into(),
            folder,
            last: Contents::default(),
            parsed: HashMap::new(),
        }
    }

    /// Rereads the folder; returns what changed since the last call. A missing folder is empty
    /// (a trainer may not have written anything yet).
    pub fn rescan(&mut self) -> FeedbackDiff {
        let now = self.read_all();
        let diff = FeedbackDiff {
            scores: changes(&self.last.scores, &now.scores),
            progress: changes(&self.last.progress, &now.progress),
            errors: changes(&self.last.errors, &now.errors),
        };
        self.last = now;
        diff
    }

    fn read_all(&mut self) -> Contents {
        let mut now = Contents::default();
        let entries = match std::fs::read_dir(&self.folder) {
            Ok(entries) => entries,
            // No folder yet: the trainer has not written anything.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return now,
            Err(e) => {
                // Unreadable now: keep what was read before instead of retracting it all.
                let mut kept = self.last.clone();
                kept.errors = BTreeSet::from([self.error(
                    self.folder.display().to_string(),
                    format!("cannot read feedback folder: {e}"),
                )]);
                return kept;
            }
        };
        let mut files: Vec<PathBuf> = entries
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| kind_of(p).is_some())
            .collect();
        files.sort();
        let mut parsed = HashMap::new();
        for file in files {
            let stamp = std::fs::metadata(&file)
                .map(|m| (m.len(), m.modified().unwrap_or(SystemTime::UNIX_EPOCH)))
                .ok();
            let entry = match self.parsed.remove(&file) {
                Some(cached) if stamp.is_some() && cached.stamp == stamp => cached,
                _ => ParsedFile {
                    stamp,
                    ..self.parse_file(&file)
                },
            };
            now.scores.extend(entry.scores.iter().cloned());
            now.progress.extend(entry.progress.iter().cloned());
            now.errors.extend(entry.errors.iter().cloned());
            parsed.insert(file, entry);
        }
        self.parsed = parsed;
        now
    }

    fn parse_file(&self, file: &Path) -> ParsedFile {
        let mut out = ParsedFile::default();
        let text = match std::fs::read_to_string(file) {
            Ok(text) => text,
            Err(e) => {
                let message = format!("cannot read feedback: {e}");
                out.errors
                    .push(self.error(file.display().to_string(), message));
                return out;
            }
        };
        let kind = kind_of(file).expect("listed feedback files have a kind");
        for (i, line) in text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
        {
            let location = format!("{}:{}", file.display(), i + 1);
            let read = match kind {
                FileKind::Checkpoint(n) => {
                    lines::parse_line(line, n).map(|s| out.scores.push((s, location.clone())))
                }
                FileKind::Progress(n) => {
                    lines::parse_progress(line, n).map(|p| out.progress.push((p, location.clone())))
                }
            };
            if let Err(message) = read {
                out.errors.push(self.error(location, message));
            }
        }
        out
    }

    fn error(&self, location: String, message: String) -> ErrorRecord {
        ErrorRecord {
            node: self.node.clone(),
            location,
            message,
        }
    }
}

fn kind_of(path: &Path) -> Option<FileKind> {
    lines::checkpoint_of(path)
        .map(FileKind::Checkpoint)
        .or_else(|| lines::progress_of(path).map(FileKind::Progress))
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
mod tests;
