//! What can go wrong loading and running models. Every variant carries where it went wrong
//! (a file, a model folder, an input or output name); the messages are the ones the engine has
//! always printed, so a user sees the same text while a library user can match on the kind.

use super::scheduler::SchedulerError;
use std::path::{Path, PathBuf};

/// An error of the model runtime: ONNX Runtime, model folders, metadata, images, inference.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RuntimeError {
    // --- The ONNX Runtime library -------------------------------------------------------
    /// No ONNX Runtime library to load.
    #[error(
        "ONNX Runtime library not found: set ORT_DYLIB_PATH or run `scripts/setup.sh` (it installs {})",
        super::onnx::BUNDLED_LIBRARY
    )]
    LibraryNotFound,
    /// The library at `path` could not be loaded.
    #[error("cannot load ONNX Runtime from {path}: {message}")]
    Library { path: PathBuf, message: String },
    /// The library loaded, but its environment would not start.
    #[error("cannot start ONNX Runtime: {message}")]
    Environment { message: String },

    // --- Files and folders --------------------------------------------------------------
    /// A file a model folder needs is not there; `what` says which and why it is needed.
    #[error("{path}: {what}")]
    Missing { path: PathBuf, what: &'static str },
    /// A file or folder could not be read.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A JSON config of a model folder does not parse.
    #[error("{file}: not valid JSON: {source}")]
    Json {
        file: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    /// A TOML metadata file (`discl.toml`) does not parse.
    #[error("{}: {}", .file.display(), .source.message())]
    Toml {
        file: PathBuf,
        #[source]
        source: toml::de::Error,
    },
    /// A config or metadata file parses but says something unusable.
    #[error("{file}: {message}")]
    Config { file: PathBuf, message: String },
    /// A metadata file's `[outputs]` names no output for a role.
    #[error("[outputs] has no `{role}` entry")]
    NoOutputRole { role: String },

    // --- Sessions and model interfaces ----------------------------------------------------
    /// ONNX Runtime could not make a session of `file`.
    #[error("{file}: {source}")]
    Session {
        file: PathBuf,
        #[source]
        source: ort::Error,
    },
    /// The CUDA execution provider failed for `file`.
    #[error("{file}: cannot use CUDA device {device}: {source}")]
    Cuda {
        file: PathBuf,
        device: i32,
        #[source]
        source: ort::Error,
    },
    /// A CUDA device was asked for, the loaded library has no CUDA, and no CPU fallback.
    #[error(
        "{file}: device cuda:{device} asked for, but the loaded ONNX Runtime has no CUDA support (install the GPU build, or set fallback = \"cpu\")"
    )]
    NoCuda { file: PathBuf, device: i32 },
    /// The model's declared inputs or outputs do not fit what the engine feeds it or reads.
    #[error("{file}: {message}")]
    Interface { file: PathBuf, message: String },

    // --- Tokenizer ------------------------------------------------------------------------
    /// The tokenizer in `folder` could not be built.
    #[error("{folder}: {source}")]
    Tokenizer {
        folder: PathBuf,
        #[source]
        source: tokenizers::Error,
    },
    /// A tokenizer config file is not valid JSON.
    #[error("{file}: {source}")]
    TokenizerConfig {
        file: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    /// A special token the tokenizer needs is not in its vocabulary.
    #[error("{folder}: token `{token}` is not in vocab.json")]
    UnknownToken { folder: PathBuf, token: String },
    /// A prompt could not be tokenized.
    #[error("cannot tokenize {prompt:?}: {source}")]
    Tokenize {
        prompt: String,
        #[source]
        source: tokenizers::Error,
    },

    // --- Schedulers -----------------------------------------------------------------------
    /// A scheduler built from the model's config `file` failed.
    #[error("{file}: {source}")]
    SchedulerConfig {
        file: PathBuf,
        #[source]
        source: SchedulerError,
    },
    /// A scheduler step failed.
    #[error(transparent)]
    Scheduler(#[from] SchedulerError),
    /// A guidance level (per mille) outside [0, 1).
    #[error("guidance level {} is outside [0, 1)", f64::from(*.level) / 1000.0)]
    LevelOutOfRange { level: u16 },
    /// A guidance level that leaves no denoising step out of `steps`.
    #[error(
        "λ = {} leaves no denoising step out of {steps}: use more steps or a lower level",
        f64::from(*.level) / 1000.0
    )]
    NoSteps { level: u16, steps: usize },

    // --- Inference --------------------------------------------------------------------------
    /// An input tensor could not be made.
    #[error("{0}")]
    Tensor(#[from] ort::Error),
    /// Running the session of `file` failed.
    #[error("{file}: {source}")]
    Inference {
        file: PathBuf,
        #[source]
        source: ort::Error,
    },
    /// The model of `file` answered with a shape or size the engine did not expect.
    #[error("{file}: {message}")]
    Output { file: PathBuf, message: String },
    /// A request the model cannot serve (a prompt for a class-conditional model, a source of
    /// the wrong size, …).
    #[error("{message}")]
    Request { message: String },

    // --- Images -----------------------------------------------------------------------------
    /// Image bytes that do not decode.
    #[error("cannot decode image: {0}")]
    Decode(#[from] image::ImageError),
    /// An image with more pixels than its source's budget (read from its header).
    #[error(
        "image is {width}×{height} pixels ({}), over the budget of {max_pixels} pixels (the source's `max_pixels`)",
        u64::from(*.width) * u64::from(*.height)
    )]
    TooManyPixels {
        width: u32,
        height: u32,
        max_pixels: u64,
    },
    /// An image that cannot be encoded as PNG.
    #[error("{source}")]
    Encode {
        #[source]
        source: image::ImageError,
    },
    /// An image with a number of channels PNG encoding does not support here.
    #[error("cannot write a {channels}-channel image as PNG")]
    Channels { channels: usize },
}

impl RuntimeError {
    /// An I/O error on `path`.
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        RuntimeError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    /// A config file that says something unusable.
    pub fn config(file: &Path, message: impl Into<String>) -> Self {
        RuntimeError::Config {
            file: file.to_path_buf(),
            message: message.into(),
        }
    }

    /// A model file whose inputs or outputs do not fit.
    pub fn interface(file: &Path, message: impl Into<String>) -> Self {
        RuntimeError::Interface {
            file: file.to_path_buf(),
            message: message.into(),
        }
    }

    /// Whether a model call failed for want of memory (ONNX Runtime's CPU allocator, or CUDA's):
    /// the caller may retry with fewer images per call.
    pub fn is_out_of_memory(&self) -> bool {
        let RuntimeError::Inference { source, .. } = self else {
            return false;
        };
        let message = source.message().to_ascii_lowercase();
        [
            "failed to allocate memory",
            "bad_alloc",
            "out of memory",
            "alloc_failed",
        ]
        .iter()
        .any(|m| message.contains(m))
    }

    /// A simulated allocation failure of `file` (the `DISCL_FAIL_ALLOC` test hook).
    pub fn simulated_out_of_memory(file: &Path, images: usize) -> Self {
        RuntimeError::Inference {
            file: file.to_path_buf(),
            source: ort::Error::new(format!(
                "Failed to allocate memory for {images} images (simulated: DISCL_FAIL_ALLOC)"
            )),
        }
    }

    /// A request the model cannot serve.
    pub fn request(message: impl Into<String>) -> Self {
        RuntimeError::Request {
            message: message.into(),
        }
    }

    /// A copy of a library error (the environment is made once; its failure is reported to
    /// every caller). `None` for other kinds, which are never cached.
    pub(super) fn library_copy(&self) -> Option<Self> {
        match self {
            RuntimeError::LibraryNotFound => Some(RuntimeError::LibraryNotFound),
            RuntimeError::Library { path, message } => Some(RuntimeError::Library {
                path: path.clone(),
                message: message.clone(),
            }),
            RuntimeError::Environment { message } => Some(RuntimeError::Environment {
                message: message.clone(),
            }),
            _ => None,
        }
    }
}

/// For callers that still report errors as text (the graph and the operators): `?` turns a
/// runtime error into its message.
impl From<RuntimeError> for String {
    fn from(error: RuntimeError) -> String {
        error.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::diffusion::DiffusionModel;
    use crate::runtime::onnx::SessionOptions;
    use crate::runtime::Classifier;

    #[test]
    fn a_missing_classifier_folder_is_an_io_error_on_its_metadata_file() {
        let dir = tempfile::tempdir().unwrap();
        let folder = dir.path().join("no-such-model");
        let err = Classifier::open(&folder, &SessionOptions::default())
            .err()
            .expect("no model there");
        match &err {
            RuntimeError::Io { path, source } => {
                assert_eq!(path, &folder.join("discl.toml"));
                assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
            }
            other => panic!("expected Io, got {other:?}"),
        }
        assert!(err
            .to_string()
            .starts_with(&format!("{}: ", folder.join("discl.toml").display())));
    }

    #[test]
    fn a_folder_that_is_not_a_diffusers_model_names_its_missing_index() {
        let dir = tempfile::tempdir().unwrap();
        let err = DiffusionModel::open(dir.path(), &SessionOptions::default())
            .err()
            .expect("an empty folder is no model");
        let RuntimeError::Missing { path, .. } = &err else {
            panic!("expected Missing, got {err:?}");
        };
        assert_eq!(path, &dir.path().join("model_index.json"));
        assert_eq!(
            err.to_string(),
            format!("{}: missing (not a diffusers model folder)", path.display())
        );
        // Bad metadata is a parse error naming the file, with the parser's own message.
        std::fs::write(dir.path().join("discl.toml"), "kind = ").unwrap();
        let err = crate::runtime::ModelMeta::load(dir.path()).unwrap_err();
        assert!(
            matches!(&err, RuntimeError::Toml { file, .. } if file.ends_with("discl.toml")),
            "{err:?}"
        );
    }
}
