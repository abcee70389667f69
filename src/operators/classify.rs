//! `classify`: runs an ONNX classifier over a collection of samples and emits one `Score` per
//! sample (or an error record). Batches go to the inference service; the operator holds a
//! capability for every time with work outstanding and is woken by the service when a batch
//! is done, so a timely worker never waits on a model. Results are memoized by (sample, image
//! digest, label): a retraction, or a record seen again, never calls the model.

use crate::operators::stats::NodeStats;
use crate::record::{Digest, ErrorRecord, Sample, SampleId, Score, Value};
use crate::runtime::classifier::{ClassifierOutput, ClassifyItem, ClassifyResult};
use crate::runtime::service::Wake;
use crate::runtime::{Classifier, InferenceService};
use crossbeam_channel::{unbounded, Receiver};
use differential_dataflow::{AsCollection, VecCollection};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::Capability;

/// A score or the reason there is none.
pub type ScoreOutcome = Result<Score, ErrorRecord>;

/// How a `classify` node runs.
#[derive(Clone)]
pub struct ClassifyParams {
    /// The graph node's name (for error records and logs).
    pub node: String,
    pub service: Arc<InferenceService<Classifier>>,
    /// The model's classes, in output order.
    pub classes: Arc<Vec<String>>,
    /// The checkpoint number the scores carry.
    pub checkpoint: u64,
    /// Items per model call.
    pub batch_size: usize,
    pub stats: Arc<NodeStats>,
}

/// Adds `classify` to sample collections.
pub trait ClassifyExt<'scope> {
    /// Scores every sample with the classifier; bad images become error records.
    fn classify(self, params: ClassifyParams) -> VecCollection<'scope, u64, ScoreOutcome>;
}

type MemoKey = (SampleId, Digest, String);

impl<'scope> ClassifyExt<'scope> for VecCollection<'scope, u64, Sample> {
    fn classify(self, params: ClassifyParams) -> VecCollection<'scope, u64, ScoreOutcome> {
        let name = format!("classify:{}", params.node);
        let scope = self.scope();
        self.inner
            .unary_frontier(Exchange::new(|update: &(Sample, u64, isize)| update.0.id), &name, move |_cap, info| {
                let activator = scope.worker().sync_activator_for(info.address.to_vec());
                let wake: Wake = Arc::new(move || {
                    let _ = activator.activate();
                });
                let (reply, replies): (_, Receiver<Vec<ClassifyResult>>) = unbounded();
                let mut memo: HashMap<MemoKey, Result<ClassifierOutput, String>> = HashMap::new();
                let mut waiting: HashMap<MemoKey, Vec<(Sample, u64, isize)>> = HashMap::new();
                let mut requests: HashMap<u64, MemoKey> = HashMap::new();
                let mut unsent: Vec<(ClassifyItem, u64)> = Vec::new();
                let mut caps: BTreeMap<u64, (Capability<u64>, usize)> = BTreeMap::new();
                let mut next_request = 0u64;
                let mut ready: Vec<(ScoreOutcome, u64, isize)> = Vec::new();
                move |(input, frontier), output| {
                    input.for_each_stamp(|cap, data| {
                        let cap = cap.retain_least(0).expect("a totally ordered stamp");
                        for batch in data {
                            for (sample, time, diff) in batch.drain(..) {
                                params.stats.records_in(diff);
                                // Every record holds its time's capability until its answer is out.
                                caps.entry(time).or_insert_with(|| (cap.delayed(&time), 0)).1 += 1;
                                let label = params.classes.iter().position(|c| *c == sample.label);
                                let key = (sample.id, sample.digest, sample.label.clone());
                                if let Some(result) = memo.get(&key) {
                                    params.stats.cache_hit();
                                    ready.push((outcome(&params, &sample, result), time, diff));
                                    continue;
                                }
                                let Some(label) = label else {
                                    let message = format!(
                                        "class `{}` is not one of the model's classes {:?}",
                                        sample.label, params.classes
                                    );
                                    ready.push((Err(error(&params, &sample, message)), time, diff));
                                    continue;
                                };
                                let queue = waiting.entry(key.clone()).or_default();
                                if !queue.is_empty() {
                                    // The same image is already on its way to the model.
                                    params.stats.cache_hit();
                                } else {
                                    let id = next_request;
                                    next_request += 1;
                                    requests.insert(id, key);
                                    let item = ClassifyItem { key: id, path: PathBuf::from(&sample.path), label };
                                    unsent.push((item, time));
                                }
                                queue.push((sample, time, diff));
                            }
                        }
                    });
                    // Send full batches now; a partial batch once no more input can come for its time.
                    let complete = |t: &u64| !frontier.frontier().less_equal(t);
                    while unsent.len() >= params.batch_size
                        || (!unsent.is_empty() && unsent.iter().all(|(_, t)| complete(t)))
                    {
                        let take = unsent.len().min(params.batch_size);
                        let items: Vec<ClassifyItem> = unsent.drain(..take).map(|(item, _)| item).collect();
                        params.service.submit(items, &reply, &wake);
                        params.stats.batch();
                    }
                    while let Ok(results) = replies.try_recv() {
                        for result in results {
                            let key = requests.remove(&result.key).expect("a request we sent");
                            for (sample, time, diff) in waiting.remove(&key).unwrap_or_default() {
                                ready.push((outcome(&params, &sample, &result.result), time, diff));
                            }
                            memo.insert(key, result.result);
                        }
                    }
                    if !ready.is_empty() {
                        ready.sort_by_key(|(_, t, _)| *t);
                        for (outcome, time, diff) in ready.drain(..) {
                            let (cap, count) = caps.get_mut(&time).expect("capability held");
                            *count -= 1;
                            params.stats.outcome(&outcome, diff);
                            output.session(&*cap).give((outcome, time, diff));
                        }
                    }
                    caps.retain(|_, (_, count)| *count > 0);
                }
            })
            .as_collection()
    }
}

fn error(params: &ClassifyParams, sample: &Sample, message: String) -> ErrorRecord {
    ErrorRecord { node: params.node.clone(), location: sample.path.clone(), message }
}

fn outcome(params: &ClassifyParams, sample: &Sample, result: &Result<ClassifierOutput, String>) -> ScoreOutcome {
    match result {
        Ok(out) => Ok(Score {
            sample: sample.id,
            checkpoint: params.checkpoint,
            p_true: Value(out.p_true),
            loss: Value(out.loss),
            predicted: params.classes[out.predicted].clone(),
        }),
        Err(message) => Err(error(params, sample, message.clone())),
    }
}
