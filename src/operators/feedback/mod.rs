//! `feedback`: reads trainer feedback from a folder — `checkpoint-N.jsonl` (one score per
//! training sample per line) into the same `Score` collection the classifier feeds, and
//! `progress-N.jsonl` (validation p_true per image and level after N stages) for the adaptive
//! curriculum. Only regular files are read, line by line (a line over [`MAX_LINE_BYTES`] or not
//! UTF-8 is an error record; the rest of the file still counts); malformed lines, NaN values and
//! file names whose number does not parse are error records naming file and line. Scores for
//! samples the pipeline does not know, or predicting a class no sample has, are reported (and
//! withheld) by joins against the samples, so they become valid if the sample or class appears.

mod lines;

use lines::{kind_of, FileKind};
/// How one line of a feedback file is read; the Python package reads pushed rows with these too.
pub use lines::{parse_line, parse_progress};

use crate::record::{ErrorRecord, Progress, Sample, Score};
use crate::runtime::input_file::regular_lines;
use differential_dataflow::VecCollection;
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// The longest feedback line read (64 KiB; a score line takes about a hundred bytes).
pub const MAX_LINE_BYTES: usize = 64 * 1024;

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
        let mut files: Vec<(PathBuf, FileKind)> = Vec::new();
        for path in entries.filter_map(|e| e.ok()).map(|e| e.path()) {
            match kind_of(&path) {
                Some(Ok(kind)) => files.push((path, kind)),
                Some(Err(message)) => {
                    let location = path.display().to_string();
                    now.errors.insert(self.error(location, message));
                }
                None => {}
            }
        }
        files.sort_by(|a, b| a.0.cmp(&b.0));
        let mut parsed = HashMap::new();
        for (file, kind) in files {
            let stamp = std::fs::metadata(&file)
                .map(|m| (m.len(), m.modified().unwrap_or(SystemTime::UNIX_EPOCH)))
                .ok();
            let entry = match self.parsed.remove(&file) {
                Some(cached) if stamp.is_some() && cached.stamp == stamp => cached,
                _ => ParsedFile {
                    stamp,
                    ..self.parse_file(&file, kind)
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

    /// Reads a feedback file line by line: only a regular file, each line on its own (a line
    /// that is too long or not UTF-8 is an error record; the other lines still count).
    fn parse_file(&self, file: &Path, kind: FileKind) -> ParsedFile {
        let mut out = ParsedFile::default();
        let unreadable = |e: &dyn std::fmt::Display| {
            let message = format!("cannot read feedback: {e}");
            self.error(file.display().to_string(), message)
        };
        let lines = match regular_lines(file, MAX_LINE_BYTES) {
            Ok(lines) => lines,
            Err(e) => {
                out.errors.push(unreadable(&e));
                return out;
            }
        };
        for read in lines {
            let (number, line) = match read {
                Ok(read) => read,
                Err(e) => {
                    out.errors.push(unreadable(&e));
                    break;
                }
            };
            let location = format!("{}:{number}", file.display());
            let line = match line {
                Ok(line) if line.trim().is_empty() => continue,
                Ok(line) => line,
                Err(e) => {
                    out.errors.push(self.error(location, e.to_string()));
                    continue;
                }
            };
            let read = match kind {
                FileKind::Checkpoint(n) => {
                    lines::parse_line(&line, n).map(|s| out.scores.push((s, location.clone())))
                }
                FileKind::Progress(n) => lines::parse_progress(&line, n)
                    .map(|p| out.progress.push((p, location.clone()))),
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

/// Adds the unknown-sample check to feedback collections.
pub trait FeedbackExt<'scope> {
    /// Splits feedback into scores of known samples whose predicted class is a label some
    /// sample has, and errors for the others (unknown sample, or unknown predicted class).
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
        let known = samples.clone().map(|s| s.id).distinct();
        let classes = samples.map(|s| s.label).distinct();
        let keyed = self.map(|(score, location)| (score.sample, (score, location)));
        let by_class = keyed
            .clone()
            .semijoin(known.clone())
            .map(|(_, (score, location))| (score.predicted.clone(), (score, location)));
        let scores = by_class
            .clone()
            .semijoin(classes.clone())
            .map(|(_, (score, _))| score);
        let error = |node: &str, location: String, message: String| ErrorRecord {
            node: node.to_string(),
            location,
            message,
        };
        let name = node.to_string();
        let unknown = keyed.antijoin(known).map(move |(id, (_, location))| {
            error(
                &name,
                location,
                format!("feedback names unknown sample {id}"),
            )
        });
        let name = node.to_string();
        let unknown_class = by_class
            .antijoin(classes)
            .map(move |(class, (_, location))| {
                let message = format!("predicted class `{class}` is not a class of the samples");
                error(&name, location, message)
            });
        (scores, unknown.concat(unknown_class))
    }
}

#[cfg(test)]
mod tests;
