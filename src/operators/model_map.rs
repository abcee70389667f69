//! The shape every model-backed operator shares: for each input record, a memoized answer
//! computed in batches on an inference service. The operator holds a capability for every
//! time with an answer outstanding, sends full batches at once and the rest of a time once
//! that time is complete, and is woken by the service. An answer is computed once per memo key:
//! a retraction, or the same record again, is answered from the memo without a model call.

use crate::operators::stats::NodeStats;
use crate::runtime::service::{BatchWorker, Reply, Wake};
use crate::runtime::InferenceService;
use crossbeam_channel::{unbounded, Receiver};
use differential_dataflow::{AsCollection, VecCollection};
use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;
use std::sync::Arc;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::Capability;

/// What makes a model-backed operator: how to key, ask and answer.
pub trait ModelMap: 'static {
    /// Input records.
    type In: differential_dataflow::ExchangeData;
    /// Output records.
    type Out: differential_dataflow::Data;
    /// What answers are memoized by.
    type Key: Clone + Eq + Hash + 'static;
    /// The service's worker.
    type Worker: BatchWorker;

    /// Which worker an input goes to.
    fn route(&self, input: &Self::In) -> u64;
    /// The memo key of an input.
    fn key(&self, input: &Self::In) -> Self::Key;
    /// The request for an input, or an immediate answer when no model call can help.
    fn request(
        &self,
        input: &Self::In,
    ) -> Result<<Self::Worker as BatchWorker>::Item, <Self::Worker as BatchWorker>::Output>;
    /// The output for an input, given its (memoized) answer.
    fn answer(&self, input: &Self::In, answer: &<Self::Worker as BatchWorker>::Output)
        -> Self::Out;
    /// Whether an output counts as an error in the stats.
    fn is_error(&self, output: &Self::Out) -> bool;
    /// Whether the service computed an answer (rather than finding it in a persistent store).
    fn was_computed(&self, _answer: &<Self::Worker as BatchWorker>::Output) -> bool {
        true
    }
}

/// An input update waiting for its answer.
type Update<M> = (<M as ModelMap>::In, u64, isize);

/// A request not yet sent: its memo key, the item and its time.
type Unsent<M> = (
    <M as ModelMap>::Key,
    <<M as ModelMap>::Worker as BatchWorker>::Item,
    u64,
);

/// Runs `map` over `input`.
pub fn model_map<'scope, M>(
    input: VecCollection<'scope, u64, M::In>,
    name: &str,
    map: M,
    service: Arc<InferenceService<M::Worker>>,
    batch_size: usize,
    stats: Arc<NodeStats>,
) -> VecCollection<'scope, u64, M::Out>
where
    M: ModelMap,
    <M::Worker as BatchWorker>::Output: Clone,
{
    let scope = input.scope();
    let router = Arc::new(map);
    let map = Arc::clone(&router);
    input
        .inner
        .unary_frontier(
            Exchange::new(move |update: &(M::In, u64, isize)| router.route(&update.0)),
            name,
            move |_cap, info| {
                let activator = scope.worker().sync_activator_for(info.address.to_vec());
                let wake: Wake = Arc::new(move || {
                    let _ = activator.activate();
                });
                let (reply, replies): (_, Receiver<Reply<M::Worker>>) = unbounded();
                let mut memo: HashMap<M::Key, <M::Worker as BatchWorker>::Output> = HashMap::new();
                let mut waiting: HashMap<M::Key, Vec<Update<M>>> = HashMap::new();
                let mut unsent: Vec<Unsent<M>> = Vec::new();
                let mut in_flight: HashMap<u64, Vec<M::Key>> = HashMap::new();
                let mut caps: BTreeMap<u64, (Capability<u64>, usize)> = BTreeMap::new();
                let mut next_tag = 0u64;
                let mut ready: Vec<(M::Out, u64, isize)> = Vec::new();
                move |(input, frontier), output| {
                    input.for_each_stamp(|cap, data| {
                        let cap = cap.retain_least(0).expect("a totally ordered stamp");
                        for batch in data {
                            for (record, time, diff) in batch.drain(..) {
                                stats.records_in(diff);
                                // Every record holds its time's capability until its answer is out.
                                caps.entry(time)
                                    .or_insert_with(|| (cap.delayed(&time), 0))
                                    .1 += 1;
                                let key = map.key(&record);
                                if let Some(answer) = memo.get(&key) {
                                    stats.cache_hit();
                                    ready.push((map.answer(&record, answer), time, diff));
                                    continue;
                                }
                                let queue = waiting.entry(key.clone()).or_default();
                                if !queue.is_empty() {
                                    // The same request is already on its way.
                                    stats.cache_hit();
                                    queue.push((record, time, diff));
                                    continue;
                                }
                                match map.request(&record) {
                                    Ok(item) => {
                                        unsent.push((key, item, time));
                                        queue.push((record, time, diff));
                                    }
                                    Err(answer) => {
                                        waiting.remove(&key);
                                        ready.push((map.answer(&record, &answer), time, diff));
                                        memo.insert(key, answer);
                                    }
                                }
                            }
                        }
                    });
                    // Full batches go now; the rest of a time once no more input can come for it.
                    let frontier = frontier.frontier();
                    let (complete, open): (Vec<_>, Vec<_>) = unsent
                        .drain(..)
                        .partition(|(_, _, t)| !frontier.less_equal(t));
                    unsent = open;
                    let mut ready_to_send = complete;
                    while unsent.len() >= batch_size {
                        ready_to_send.extend(unsent.drain(..batch_size));
                    }
                    let mut ready_to_send = ready_to_send.into_iter().peekable();
                    while ready_to_send.peek().is_some() {
                        let (keys, items): (Vec<_>, Vec<_>) = ready_to_send
                            .by_ref()
                            .take(batch_size.max(1))
                            .map(|(k, item, _)| (k, item))
                            .unzip();
                        in_flight.insert(next_tag, keys);
                        service.submit(next_tag, items, &reply, &wake);
                        next_tag += 1;
                        stats.batch();
                    }
                    while let Ok((tag, answers)) = replies.try_recv() {
                        let keys = in_flight.remove(&tag).expect("a batch we sent");
                        for (key, answer) in keys.into_iter().zip(answers) {
                            if map.was_computed(&answer) {
                                stats.computed();
                            } else {
                                stats.cache_hit();
                            }
                            for (record, time, diff) in waiting.remove(&key).unwrap_or_default() {
                                ready.push((map.answer(&record, &answer), time, diff));
                            }
                            memo.insert(key, answer);
                        }
                    }
                    if !ready.is_empty() {
                        ready.sort_by_key(|(_, t, _)| *t);
                        for (out, time, diff) in ready.drain(..) {
                            let (cap, count) = caps.get_mut(&time).expect("capability held");
                            *count -= 1;
                            if map.is_error(&out) {
                                stats.error(diff);
                            } else {
                                stats.records_out(diff);
                            }
                            output.session(&*cap).give((out, time, diff));
                        }
                    }
                    caps.retain(|_, (_, count)| *count > 0);
                }
            },
        )
        .as_collection()
}
