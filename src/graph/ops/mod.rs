//! The ops a graph file may name, one file each: an op owns its config (the node's fields,
//! unknown ones refused), its checks, the files and models it opens, how it builds into the
//! dataflow, its DOT label and its summary counters, behind [`Op`] and [`Node`]. The compiler,
//! the builder, the DOT writer, the summary and the run driver see ops only through these
//! traits. [`REGISTRY`] lists every op: adding one is a new file here and one line there.

pub mod context;
mod stream;

pub use context::{Dataflow, FeedbackInput, ModelPool, NodeInfo, SourceInput, StartContext};
pub use stream::Stream;

use crate::operators::sink::SinkLog;
use crate::record::RecordKind;
use serde::de::DeserializeOwned;
use std::fmt;
use std::sync::{Arc, Mutex};

/// Where an op's error belongs, so the compiler can give it a line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Place {
    /// A field of the node (its line, or the node's when the field is not written).
    Field(&'static str),
    /// The node as a whole.
    Node,
    /// A `[models]` entry.
    Model(String),
}

/// One problem an op found, with where it belongs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpError {
    pub place: Place,
    pub message: String,
}

impl OpError {
    /// An error about one field.
    pub fn field(field: &'static str, message: impl Into<String>) -> Self {
        OpError {
            place: Place::Field(field),
            message: message.into(),
        }
    }
    /// An error about the node.
    pub fn node(message: impl Into<String>) -> Self {
        OpError {
            place: Place::Node,
            message: message.into(),
        }
    }
    /// An error about a model the node uses.
    pub fn model(model: &str, message: impl Into<String>) -> Self {
        OpError {
            place: Place::Model(model.to_string()),
            message: message.into(),
        }
    }
}

/// How a node shows in DOT and in progress lines.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Reads from outside the dataflow (files, the API).
    Input,
    /// Turns collections into collections.
    Transform,
    /// Writes files and gives nothing downstream.
    Output,
}

/// What the rest of the graph looks like to an op's checks (phase 1).
pub struct GraphContext<'a> {
    /// The node's name.
    pub node: &'a str,
    /// The names under `[models]`.
    pub models: Vec<&'a str>,
    /// The op of each input's node, in order (`None` where that node's op is unreadable).
    pub input_ops: Vec<Option<&'static str>>,
}

/// A node's checked config: everything the compiler needs to know about an op.
pub trait Op: fmt::Debug + Send + Sync {
    /// The op's name in graph files.
    fn kind(&self) -> &'static str;
    /// Fewest and most inputs (phase 2).
    fn arity(&self) -> (usize, usize);
    /// Checks field values and what they name elsewhere in the graph (phase 1).
    fn check(&self, _graph: &GraphContext) -> Vec<OpError> {
        Vec::new()
    }
    /// The kind of record the node gives, from its inputs' kinds in order, or why they do not
    /// fit (phase 3); `None` for a node that gives nothing.
    fn output(&self, inputs: &[RecordKind]) -> Result<Option<RecordKind>, OpError>;
    /// The kind of a named extra output (`node.port` in other nodes' inputs), if the op has
    /// one by that name, given the node's input kinds.
    fn port(&self, _port: &str, _inputs: &[RecordKind]) -> Option<RecordKind> {
        None
    }
    /// The folder whose files the node reads as samples (an image folder), if any: the
    /// pipeline's output may not lie inside it (phase 4).
    fn sample_folder(&self) -> Option<&std::path::Path> {
        None
    }
    /// The `[models]` entry the node runs, if any.
    fn model(&self) -> Option<&str> {
        None
    }
    /// Settings worth recording in every snapshot's `_snapshot.json` (a quality node's
    /// threshold, which the report pictures also draw).
    fn provenance(&self) -> Option<serde_json::Value> {
        None
    }
    /// What the node chose where the graph left a setting to the default (a generate node's
    /// batch size), for the configuration `discl run` prints.
    fn configuration(&self, _pool: &ModelPool) -> Option<String> {
        None
    }
    /// The folder a `feedback` node reads trainer files from.
    fn feedback_folder(&self) -> Option<&std::path::Path> {
        None
    }
    /// The built-in trainer's settings, for a `train` node (the run driver trains with them).
    fn trainer(&self) -> Option<&train::TrainConfig> {
        None
    }
    /// For a node generating with a diffusion model: the form of the UNet it asks for (a
    /// rewrite made once under the output folder, see `runtime::rewrite`).
    fn unet_form(&self) -> Option<crate::runtime::rewrite::UnetForm> {
        None
    }
    /// For a node that writes snapshots (a sink): how many versions it keeps before its
    /// current one.
    fn kept_versions(&self) -> Option<usize> {
        None
    }
    /// Input, transform or output.
    fn role(&self) -> Role {
        Role::Transform
    }
    /// The detail line of its DOT box.
    fn dot_detail(&self) -> String;
    /// Opens the files and models the node needs and checks they fit (phase 4; `validate`
    /// stops here). `pool` shares model sessions between nodes.
    fn open(&self, node: &NodeInfo, pool: &mut ModelPool) -> Result<Box<dyn Opened>, Vec<OpError>>;
}

/// A node whose resources are open, ready to start for a run.
pub trait Opened: Send {
    /// Starts what the node runs on (inference services, stores) and gives the node every
    /// worker builds from.
    fn start(self: Box<Self>, run: &mut StartContext) -> Result<Arc<dyn Node>, String>;
}

/// A started node: builds itself into each worker's dataflow and reports on itself.
pub trait Node: Send + Sync {
    /// Adds the node to a worker's dataflow, given its inputs' streams in order.
    fn build<'scope>(
        &self,
        dataflow: &mut Dataflow<'scope>,
        node: &NodeInfo,
        inputs: &[Stream<'scope>],
    ) -> Stream<'scope>;
    /// Seconds the node's models were busy (its inference service's, shared with any other
    /// node on the same model); model calls are counted per node in its `NodeStats`.
    fn model_seconds(&self) -> f64 {
        0.0
    }
    /// Counters of the work the node has other nodes' models do for it (a quality node's
    /// regenerations); the summary adds them to the node's and shows them as `retries`.
    fn retries(&self) -> Option<&Arc<crate::operators::NodeStats>> {
        None
    }
    /// What the node has written, for nodes that write snapshots.
    fn sink_log(&self) -> Option<&Arc<Mutex<SinkLog>>> {
        None
    }
}

/// A node that needs nothing opened or started: the config is the node.
pub struct Ready<N>(pub N);

impl<N: Node + 'static> Opened for Ready<N> {
    fn start(self: Box<Self>, _run: &mut StartContext) -> Result<Arc<dyn Node>, String> {
        Ok(Arc::new(self.0))
    }
}

/// Reads an op's config from a node's fields.
pub type ParseFn = fn(toml_edit::Value) -> Result<Arc<dyn Op>, toml_edit::de::Error>;

/// Declares each op's module and lists it in [`REGISTRY`]: one line per op.
macro_rules! registry {
    ($($name:literal => $module:ident :: $config:ident,)*) => {
        $(pub mod $module;)*
        /// Every op a graph file may name, in the order errors list them.
        pub const REGISTRY: &[(&str, ParseFn)] = &[$(($name, parse::<$module::$config>)),*];
    };
}

registry! {
    "source" => source::SourceConfig,
    "classify" => classify::ClassifyConfig,
    "feedback" => feedback::FeedbackConfig,
    "hard" => hard::HardConfig,
    "generate" => generate::GenerateConfig,
    "sink" => sink::SinkConfig,
    "filter" => filter::FilterConfig,
    "sample" => sample::SampleConfig,
    "curriculum" => curriculum::CurriculumConfig,
    "mix" => mix::MixConfig,
    "quality" => quality::QualityConfig,
    "train" => train::TrainConfig,
}

fn parse<C: Op + DeserializeOwned + 'static>(
    fields: toml_edit::Value,
) -> Result<Arc<dyn Op>, toml_edit::de::Error> {
    use serde::de::IntoDeserializer;
    C::deserialize(fields.into_deserializer()).map(|config| Arc::new(config) as Arc<dyn Op>)
}

/// The parser of an op by name.
pub fn lookup(op: &str) -> Option<ParseFn> {
    REGISTRY
        .iter()
        .find(|(name, _)| *name == op)
        .map(|(_, parse)| *parse)
}

/// The registered op names, comma-separated, for messages.
pub fn names() -> String {
    REGISTRY
        .iter()
        .map(|(name, _)| *name)
        .collect::<Vec<_>>()
        .join(", ")
}

/// `takes X, but its inputs give [..]`, about the `inputs` field.
pub fn wrong_inputs(expected: &str, kinds: &[RecordKind]) -> OpError {
    let given: Vec<String> = kinds.iter().map(|k| k.to_string()).collect();
    let message = format!(
        "takes {expected}, but its inputs give [{}]",
        given.join(", ")
    );
    OpError::field("inputs", message)
}

/// Reads a field through its `FromStr`, so strings become types while compiling.
pub fn from_str<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: std::str::FromStr,
    T::Err: fmt::Display,
{
    let text = <String as serde::Deserialize>::deserialize(deserializer)?;
    text.parse().map_err(serde::de::Error::custom)
}

/// Reads an optional field through its `FromStr`.
pub fn some_from_str<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: std::str::FromStr,
    T::Err: fmt::Display,
{
    from_str(deserializer).map(Some)
}
