//! What can go wrong training, saving, loading or exporting the learner. Every variant says
//! where (a file, an image, a class index) so a caller can report it without more context.

use crate::runtime::error::RuntimeError;
use std::path::PathBuf;

/// An error of the built-in trainer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LearnerError {
    /// A setting that cannot train (zero threads, zero batch, no classes, a bad image spec…).
    #[error("learner config: {message}")]
    Config { message: String },
    /// The worker pool of `threads` threads could not be built.
    #[error("cannot start {threads} trainer threads: {source}")]
    Threads {
        threads: usize,
        #[source]
        source: rayon::ThreadPoolBuildError,
    },
    /// A tensor operation failed while doing `what`.
    #[error("{what}: {source}")]
    Tensor {
        what: &'static str,
        #[source]
        source: candle_core::Error,
    },
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// An image that does not decode (or pixels of the wrong size); `image` names it.
    #[error("{image}: {source}")]
    Image {
        image: String,
        #[source]
        source: Box<RuntimeError>,
    },
    /// A row's class index is not one of the learner's classes.
    #[error("class index {label} out of range: the learner has {classes} classes")]
    Label { label: usize, classes: usize },
    /// An epoch with no rows (or only rows with zero copies).
    #[error("nothing to train on: every row has zero copies or there are no rows")]
    Empty,
    /// A checkpoint that does not fit this learner (missing tensor, wrong shape).
    #[error("{path}: {message}")]
    Checkpoint { path: PathBuf, message: String },
}

impl LearnerError {
    pub(crate) fn config(message: impl Into<String>) -> Self {
        LearnerError::Config {
            message: message.into(),
        }
    }
    pub(crate) fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        LearnerError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Attaches what the trainer was doing to a tensor error: `.ctx("forward")?`.
pub(crate) trait TensorContext<T> {
    fn ctx(self, what: &'static str) -> Result<T, LearnerError>;
}

impl<T> TensorContext<T> for Result<T, candle_core::Error> {
    fn ctx(self, what: &'static str) -> Result<T, LearnerError> {
        self.map_err(|source| LearnerError::Tensor { what, source })
    }
}
