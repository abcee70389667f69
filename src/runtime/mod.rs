//! Model execution, independent of timely: ONNX Runtime sessions, model metadata, image
//! decoding, and the inference service that runs batches on threads of its own.

pub mod choice;
pub mod classifier;
pub mod device;
pub mod diffusion;
pub mod error;
pub mod image_input;
pub mod input_file;
pub mod learner;
pub mod memory;
pub mod model_meta;
pub mod onnx;
pub mod persisted;
pub mod rewrite;
pub mod scheduler;
pub mod scorer;
pub mod service;
pub mod shared_session;

pub use classifier::{Classifier, ClassifierOutput};
pub use device::Device;
pub use error::RuntimeError;
pub use model_meta::ModelMeta;
pub use persisted::{Answered, Keyed, Persist, Persisted};
pub use scorer::{QualityScore, ScoreItem, Scorer, ScorerError, TextQuery};
pub use service::{InferenceService, ServiceStats};
