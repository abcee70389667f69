//! What ops are given at each stage: the model pool while opening (phase 4), the start
//! context while a run starts, and the dataflow under construction inside each worker.

use super::OpError;
use crate::graph::spec::ModelSpec;
use crate::operators::feedback::{LocatedProgress, LocatedScore};
use crate::operators::{FeedbackState, GenerateParams, NodeStats, SourceState};
use crate::record::{ErrorRecord, RecordKind, Sample};
use crate::runtime::device::Device;
use crate::runtime::memory::{self, ByteSize};
use crate::runtime::onnx::SessionOptions;
use crate::runtime::{Classifier, InferenceService, Persisted};
use crate::store::answers::AnswerStore;
use crate::store::images::ImageStore;
use differential_dataflow::input::InputSession;
use differential_dataflow::VecCollection;
use indexmap::IndexMap;
use std::path::PathBuf;
use std::sync::Arc;
use timely::dataflow::operators::probe::Handle as ProbeHandle;
use timely::dataflow::Scope;

/// A node as the compiler checked it: its name, inputs and their record kinds.
#[derive(Clone, Debug)]
pub struct NodeInfo {
    pub name: String,
    /// The graph file's line of the node.
    pub line: usize,
    pub inputs: Vec<String>,
    /// The kind of record each input carries, in order.
    pub input_kinds: Vec<RecordKind>,
}

/// Model sessions opened while checking resources, shared by the nodes that use one model.
pub struct ModelPool {
    models: IndexMap<String, ModelSpec>,
    /// Per model, the nodes using it (for messages).
    users: IndexMap<String, Vec<String>>,
    /// Classifier sessions per model, or `None` once opening failed (already reported).
    classifiers: IndexMap<String, Option<Vec<Classifier>>>,
    /// The run's output folder: what an op derives from a model (an int8 UNet) is kept there.
    output: PathBuf,
}

impl ModelPool {
    /// A pool over the graph's `[models]`; `users` names the nodes using each; `output` is the
    /// run's output folder.
    pub fn new(
        models: IndexMap<String, ModelSpec>,
        users: IndexMap<String, Vec<String>>,
        output: PathBuf,
    ) -> Self {
        ModelPool {
            models,
            users,
            classifiers: IndexMap::new(),
            output,
        }
    }

    /// The run's output folder.
    pub fn output(&self) -> &std::path::Path {
        &self.output
    }

    /// A model's `[models]` entry (the compiler checked the name).
    pub fn spec(&self, model: &str) -> &ModelSpec {
        &self.models[model]
    }

    /// How sessions of a model are built.
    pub fn session_options(&self, model: &str) -> SessionOptions {
        let spec = self.spec(model);
        SessionOptions {
            device: spec.device,
            fallback_to_cpu: spec.fallback.is_some(),
            intra_threads: spec.threads,
        }
    }

    /// How many runners call a model at once: the graph's `sessions`, else one single-thread
    /// runner per core on the CPU (all sharing one session), as many as its memory budget holds
    /// beside the weights, and one on a GPU.
    pub fn sessions(&self, model: &str) -> usize {
        let spec = self.spec(model);
        match (
            spec.sessions,
            crate::runtime::onnx::resolved_device(&self.session_options(model)),
        ) {
            (Some(n), _) => n.max(1),
            (None, Device::Cpu) if spec.threads <= 1 => memory::runners_within(
                self.memory_budget(model),
                memory::session_bytes(&spec.path),
                memory::unet_image_bytes(&spec.path),
                cores(),
            ),
            (None, _) => 1,
        }
    }

    /// The memory a model's sessions may hold: the graph's `memory`, else an even part of
    /// [`memory::DEFAULT_SHARE`] of the machine's memory among the models in use.
    pub fn memory_budget(&self, model: &str) -> ByteSize {
        let in_use = self.users.values().filter(|u| !u.is_empty()).count();
        self.spec(model)
            .memory
            .unwrap_or_else(|| memory::default_budget(in_use))
    }

    /// The configuration a run uses, one line per model: device, sessions × threads, users.
    pub fn configuration(&self) -> Vec<String> {
        self.models
            .iter()
            .filter(|(name, _)| self.users.get(*name).is_some_and(|u| !u.is_empty()))
            .map(|(name, spec)| {
                let device = crate::runtime::onnx::resolved_device(&self.session_options(name));
                let sessions = self.sessions(name);
                let chosen = match (spec.sessions, device) {
                    (Some(_), _) => String::new(),
                    (None, Device::Cpu) if sessions < cores() => {
                        " (default: one per core, as many as the memory budget holds)".to_string()
                    }
                    (None, _) => " (default)".into(),
                };
                let threads = spec.threads.max(1);
                let used = self.used_by(name);
                match device {
                    Device::Cpu => format!(
                        "model {name}: cpu, 1 session run by {sessions} runner(s) at once{chosen} × {threads} thread(s) {used}; memory budget {}, ~{} for the session",
                        self.memory_budget(name),
                        ByteSize(memory::session_bytes(&spec.path))
                    ),
                    Device::Cuda(_) => format!(
                        "model {name}: {device}, {sessions} session(s){chosen} × {threads} thread(s) {used}"
                    ),
                }
            })
            .collect()
    }

    /// `(used by node `a`, node `b`)` for a model's messages.
    pub fn used_by(&self, model: &str) -> String {
        let users = self.users.get(model).cloned().unwrap_or_default();
        format!("(used by {})", users.join(", "))
    }

    /// Opens a classifier model once, however many nodes use it: one session its `sessions`
    /// runners share on the CPU, one session per runner on a GPU. Gives the first runner's
    /// classifier, or the error (reported once, to the first node asking).
    pub fn classifier(&mut self, model: &str) -> Result<&Classifier, Vec<OpError>> {
        if !self.classifiers.contains_key(model) {
            let (path, options) = (self.spec(model).path.clone(), self.session_options(model));
            let mut sessions: Vec<Classifier> = Vec::new();
            let mut failed = None;
            for _ in 0..self.sessions(model) {
                let opened = match sessions.first() {
                    Some(first) if first.shareable() => Ok(first.clone()),
                    _ => Classifier::open(&path, &options),
                };
                match opened {
                    Ok(classifier) => sessions.push(classifier),
                    Err(message) => {
                        failed = Some(message);
                        break;
                    }
                }
            }
            let opened = failed.is_none().then_some(sessions);
            self.classifiers.insert(model.to_string(), opened);
            if let Some(message) = failed {
                let message = format!("{message} {}", self.used_by(model));
                return Err(vec![OpError::model(model, message)]);
            }
        }
        match &self.classifiers[model] {
            Some(sessions) => Ok(&sessions[0]),
            None => Err(Vec::new()),
        }
    }

    /// Hands the opened sessions to a run.
    pub fn into_start(self, run: RunInfo) -> StartContext {
        StartContext {
            classifiers: self
                .classifiers
                .into_iter()
                .filter_map(|(model, sessions)| Some((model, sessions?)))
                .collect(),
            services: IndexMap::new(),
            store: None,
            answers: None,
            run,
        }
    }
}

/// What a run is: where it writes, its seed, its first version and this process's index.
#[derive(Clone, Debug)]
pub struct RunInfo {
    pub output: PathBuf,
    pub seed: u64,
    pub first_version: u64,
    /// This process's index in a timely cluster (0 alone).
    pub process: usize,
    /// What every snapshot records as having produced it: graph and model digests.
    pub provenance: serde_json::Map<String, serde_json::Value>,
}

/// What nodes share while a run starts: classifier services per model, the image store and
/// the answer store.
pub struct StartContext {
    classifiers: IndexMap<String, Vec<Classifier>>,
    services: IndexMap<String, Arc<InferenceService<Persisted<Classifier>>>>,
    store: Option<Arc<ImageStore>>,
    answers: Option<Arc<AnswerStore>>,
    pub run: RunInfo,
}

impl StartContext {
    /// The inference service of a classifier model, started by the first node that asks.
    pub fn classifier_service(
        &mut self,
        model: &str,
    ) -> Result<Arc<InferenceService<Persisted<Classifier>>>, String> {
        if let Some(service) = self.services.get(model) {
            return Ok(Arc::clone(service));
        }
        let sessions = self
            .classifiers
            .shift_remove(model)
            .ok_or_else(|| format!("model `{model}` was not opened"))?;
        let answers = self.answer_store();
        let workers = sessions
            .into_iter()
            .map(|session| Persisted::new(session, Arc::clone(&answers)))
            .collect();
        let service = Arc::new(InferenceService::start(model, workers));
        self.services
            .insert(model.to_string(), Arc::clone(&service));
        Ok(service)
    }

    /// The content-addressed image store under the output folder, opened on first use.
    pub fn image_store(&mut self) -> Result<Arc<ImageStore>, String> {
        if self.store.is_none() {
            let store = ImageStore::open(&self.run.output, self.run.process)?;
            self.store = Some(Arc::new(store));
        }
        Ok(Arc::clone(self.store.as_ref().expect("opened")))
    }

    /// The answer store under the output folder (`state/answers.redb`), opened on first use;
    /// it never fails (see [`AnswerStore`]).
    pub fn answer_store(&mut self) -> Arc<AnswerStore> {
        let (output, process) = (&self.run.output, self.run.process);
        Arc::clone(
            self.answers
                .get_or_insert_with(|| Arc::new(AnswerStore::open(output, process))),
        )
    }
}

/// A source node's input session and scanner.
pub struct SourceInput {
    pub node: String,
    pub state: SourceState,
    pub input: InputSession<u64, Sample, isize>,
}

/// A feedback node's input sessions (scores, validation progress) and scanner.
pub struct FeedbackInput {
    pub node: String,
    pub state: FeedbackState,
    pub input: InputSession<u64, LocatedScore, isize>,
    pub progress: InputSession<u64, LocatedProgress, isize>,
}

/// One worker's dataflow while nodes add themselves to it.
pub struct Dataflow<'scope> {
    pub scope: Scope<'scope, u64>,
    pub run: RunInfo,
    /// Counters per node, shared by every worker of the process.
    pub stats: IndexMap<String, Arc<NodeStats>>,
    /// Error records from every node, written by the built-in `errors` sink.
    pub errors: Vec<VecCollection<'scope, u64, ErrorRecord>>,
    /// Inputs the driver feeds at each refresh.
    pub sources: Vec<SourceInput>,
    pub feedback: Vec<FeedbackInput>,
    /// Passes a version once every sink has written it.
    pub probe: ProbeHandle<u64>,
    /// Extra outputs by `node.port`.
    pub ports: IndexMap<String, super::Stream<'scope>>,
    /// What each generate node makes images with, by node, for the nodes that ask it for more
    /// (a quality node's retries).
    pub generators: IndexMap<String, Regenerator<'scope>>,
}

/// A generate node's samples and how it makes their images: enough to make another image of
/// a sample with another seed on the same inference service.
pub struct Regenerator<'scope> {
    pub samples: VecCollection<'scope, u64, Sample>,
    pub params: GenerateParams,
}

impl<'scope> Dataflow<'scope> {
    /// Offers an extra output of a node as `node.port`.
    pub fn add_port(&mut self, node: &str, port: &str, stream: super::Stream<'scope>) {
        self.ports.insert(format!("{node}.{port}"), stream);
    }
    /// A node's counters.
    pub fn stats_of(&self, node: &str) -> Arc<NodeStats> {
        Arc::clone(&self.stats[node])
    }
}

/// The cores this process may use.
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
