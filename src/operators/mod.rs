//! The dataflow operators, one per file; each is an extension trait on differential
//! collections (or, for inputs and outputs, a small driver), tested alone.

pub mod classify;
pub mod curriculum;
pub mod feedback;
pub mod generate;
pub mod hard;
pub mod mix;
pub mod model_map;
pub mod quality;
pub mod sink;
pub mod source;
pub mod stats;

pub use classify::{ClassifyExt, ClassifyParams};
pub use feedback::{FeedbackExt, FeedbackState};
pub use generate::{GenerateExt, GenerateParams, GenerateWorker};
pub use hard::{Combine, HardExt, HardSampleRule};
pub use sink::{SinkExt, SinkParams};
pub use source::{SourceLocation, SourceOptions, SourceState};
pub use stats::NodeStats;
