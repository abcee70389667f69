//! What can go wrong opening or running a quality scorer; every message names the file or the
//! input it is about.

use std::path::PathBuf;

/// Why a scorer could not be opened or could not answer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ScorerError {
    /// The folder is neither a CLIP export nor a judge.
    #[error("{folder}: not a scorer: {why}")]
    NotAScorer { folder: PathBuf, why: String },
    /// A file that should be there cannot be read.
    #[error("{file}: {source}")]
    Read {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A configuration or table file is malformed or inconsistent.
    #[error("{file}: {message}")]
    BadFile { file: PathBuf, message: String },
    /// The preprocessor asks for a resampling filter we do not implement.
    #[error(
        "{file}: resample = {value} is not supported (supported: 1 lanczos, 2 bilinear, \
         3 bicubic, 4 box, 5 hamming, as PIL numbers them)"
    )]
    UnknownResample { file: PathBuf, value: String },
    /// The ONNX file does not have the inputs and outputs a scorer needs, or a run failed.
    #[error("{file}: {message}")]
    Model { file: PathBuf, message: String },
    /// A message from the shared runtime helpers (ONNX Runtime start-up, `discl.toml`), which
    /// already name their file.
    #[error("{0}")]
    Runtime(#[from] crate::runtime::RuntimeError),
    /// An image that cannot be read or decoded.
    #[error("{0}")]
    Image(String),
    /// A text the scorer cannot embed (a free prompt for a judge, a class for a CLIP export).
    #[error("{0}")]
    Query(String),
}

impl ScorerError {
    pub(crate) fn bad(file: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        ScorerError::BadFile {
            file: file.into(),
            message: message.into(),
        }
    }
    pub(crate) fn model(file: impl Into<PathBuf>, message: impl ToString) -> Self {
        ScorerError::Model {
            file: file.into(),
            message: message.to_string(),
        }
    }
}

/// Reads a file to a string, naming the file on failure.
pub(crate) fn read_text(file: &std::path::Path) -> Result<String, ScorerError> {
    std::fs::read_to_string(file).map_err(|source| ScorerError::Read {
        file: file.to_path_buf(),
        source,
    })
}

/// Reads and parses a JSON file, naming the file on failure.
pub(crate) fn read_json(file: &std::path::Path) -> Result<serde_json::Value, ScorerError> {
    serde_json::from_str(&read_text(file)?)
        .map_err(|e| ScorerError::bad(file, format!("not valid JSON: {e}")))
}
