//! The shape every model-backed operator shares: for each input record, a memoized answer
//! computed in batches on an inference service, with two outputs — the records answered and
//! the error records (dead letters), built like timely's `ok_err`. The operator holds a
//! capability per output for every time with an answer outstanding, sends full batches at
//! once and the rest of a time once that time is complete, and is woken by the service.
//!
//! An answer is computed once per memo key: a retraction, or the same record again, is
//! answered from the memo without a model call. The memo is bounded (see [`memo`]): answers of
//! live keys (net multiplicity not zero) are kept, since a retraction must negate exactly what
//! the insertion produced; a key whose records are all retracted moves to a cache of recently
//! retracted answers, [`memo::RECENTLY_RETRACTED`] per worker unless
//! [`ModelMap::retracted_capacity`] says otherwise, evicted oldest first. Past that, a key
//! inserted again is asked again (generate finds it in its image store).
//!
//! Model calls are counted per node from the service's replies, so nodes sharing a service
//! each report their own.

pub mod memo;

use crate::operators::stats::NodeStats;
use crate::record::ErrorRecord;
use crate::runtime::service::{BatchWorker, Reply, Wake};
use crate::runtime::InferenceService;
use crossbeam_channel::{unbounded, Receiver};
use differential_dataflow::{AsCollection, VecCollection};
use memo::Memo;
use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;
use std::sync::Arc;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::operators::Capability;

/// What makes a model-backed operator: how to key, ask and answer.
pub trait ModelMap: 'static {
    /// Input records.
    type In: differential_dataflow::ExchangeData;
    /// Output records (errors go to the error output as [`ErrorRecord`]s).
    type Out: differential_dataflow::Data;
    /// What answers are memoized by.
    type Key: Clone + Eq + Hash + 'static;
    /// The service's worker.
    type Worker: BatchWorker;

    /// Which worker an input goes to. Inputs with one key must go to one worker.
    fn route(&self, input: &Self::In) -> u64;
    /// The memo key of an input.
    fn key(&self, input: &Self::In) -> Self::Key;
    /// The request for an input, or an immediate answer when no model call can help.
    fn request(
        &self,
        input: &Self::In,
    ) -> Result<<Self::Worker as BatchWorker>::Item, <Self::Worker as BatchWorker>::Output>;
    /// The output for an input, given its (memoized) answer, or the error record instead.
    fn answer(
        &self,
        input: &Self::In,
        answer: &<Self::Worker as BatchWorker>::Output,
    ) -> Result<Self::Out, ErrorRecord>;
    /// Whether the service computed an answer (rather than finding it in a persistent store).
    fn was_computed(&self, _answer: &<Self::Worker as BatchWorker>::Output) -> bool {
        true
    }
    /// How many answers of fully retracted keys each worker keeps.
    fn retracted_capacity(&self) -> usize {
        memo::RECENTLY_RETRACTED
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

/// An output update, good or error, ready to go.
type Ready<M> = (Result<<M as ModelMap>::Out, ErrorRecord>, u64, isize);

/// The capabilities held for one time (one per output) and how many updates still need them.
struct Held {
    good: Capability<u64>,
    errors: Capability<u64>,
    outstanding: usize,
}

/// Runs `map` over `input`: the records answered, and the error records.
pub fn model_map<'scope, M>(
    input: VecCollection<'scope, u64, M::In>,
    name: &str,
    map: M,
    service: Arc<InferenceService<M::Worker>>,
    batch_size: usize,
    stats: Arc<NodeStats>,
) -> (
    VecCollection<'scope, u64, M::Out>,
    VecCollection<'scope, u64, ErrorRecord>,
)
where
    M: ModelMap,
    <M::Worker as BatchWorker>::Output: Clone,
{
    let scope = input.scope();
    let mut builder = OperatorBuilder::new(name.to_owned(), scope);
    let info = builder.operator_info();
    let router = Arc::new(map);
    let map = Arc::clone(&router);
    let pact = Exchange::new(move |update: &(M::In, u64, isize)| router.route(&update.0));
    let mut input = builder.new_input(input.inner, pact);
    let (good, good_stream) = builder.new_output();
    let (errors, error_stream) = builder.new_output();
    let mut good =
        OutputBuilder::<_, CapacityContainerBuilder<Vec<(M::Out, u64, isize)>>>::from(good);
    let mut errors =
        OutputBuilder::<_, CapacityContainerBuilder<Vec<(ErrorRecord, u64, isize)>>>::from(errors);

    builder.build(move |_initial| {
        let activator = scope.worker().sync_activator_for(info.address.to_vec());
        let wake: Wake = Arc::new(move || {
            let _ = activator.activate();
        });
        let (reply, replies): (_, Receiver<Reply<M::Worker>>) = unbounded();
        let mut memo: Memo<M::Key, <M::Worker as BatchWorker>::Output, Update<M>> =
            Memo::new(map.retracted_capacity());
        let mut unsent: Vec<Unsent<M>> = Vec::new();
        let mut in_flight: HashMap<u64, Vec<M::Key>> = HashMap::new();
        let mut held: BTreeMap<u64, Held> = BTreeMap::new();
        let mut next_tag = 0u64;
        let mut ready: Vec<Ready<M>> = Vec::new();
        move |frontiers| {
            input.for_each_stamp(|cap, data| {
                for batch in data {
                    for (record, time, diff) in batch.drain(..) {
                        stats.records_in(diff);
                        // Every record holds its time's capabilities until its answer is out.
                        held.entry(time)
                            .or_insert_with(|| Held {
                                good: cap.delayed(&time, 0),
                                errors: cap.delayed(&time, 1),
                                outstanding: 0,
                            })
                            .outstanding += 1;
                        let key = map.key(&record);
                        let entry = memo.update(&key, diff);
                        if let Some(answer) = &entry.answer {
                            stats.cache_hit();
                            ready.push((map.answer(&record, answer), time, diff));
                        } else if !entry.waiting.is_empty() {
                            // The same request is already on its way.
                            stats.cache_hit();
                            entry.waiting.push((record, time, diff));
                        } else {
                            match map.request(&record) {
                                Ok(item) => {
                                    unsent.push((key.clone(), item, time));
                                    entry.waiting.push((record, time, diff));
                                }
                                Err(answer) => {
                                    ready.push((map.answer(&record, &answer), time, diff));
                                    entry.answer = Some(answer);
                                }
                            }
                        }
                        memo.settle(&key);
                    }
                }
            });
            // Full batches go now, a round for the runners at a time; the rest of a time once
            // no more input can come for it, spread evenly over the service's runners.
            let frontier = frontiers[0].frontier();
            let (complete, open): (Vec<_>, Vec<_>) = unsent
                .drain(..)
                .partition(|(_, _, t)| !frontier.less_equal(t));
            unsent = open;
            let (size, runners) = (batch_size.max(1), service.runners());
            let mut sizes = even_jobs(complete.len(), size, runners);
            let full = full_jobs_while_open(unsent.len(), size, runners);
            sizes.extend(std::iter::repeat_n(size, full));
            let mut to_send = complete.into_iter().chain(unsent.drain(..full * size));
            for size in sizes {
                let (keys, items): (Vec<_>, Vec<_>) = to_send
                    .by_ref()
                    .take(size)
                    .map(|(k, item, _)| (k, item))
                    .unzip();
                in_flight.insert(next_tag, keys);
                service.submit(next_tag, items, &reply, &wake);
                next_tag += 1;
                stats.batch();
            }
            while let Ok(reply) = replies.try_recv() {
                stats.model_calls(reply.model_calls);
                let keys = in_flight.remove(&reply.tag).expect("a batch we sent");
                for (key, answer) in keys.into_iter().zip(reply.outputs) {
                    if map.was_computed(&answer) {
                        stats.computed();
                    } else {
                        stats.cache_hit();
                    }
                    let outputs: Vec<_> = memo
                        .answer(&key, answer.clone())
                        .into_iter()
                        .map(|(record, time, diff)| (map.answer(&record, &answer), time, diff))
                        .collect();
                    ready.extend(outputs);
                }
            }
            if !ready.is_empty() {
                ready.sort_by_key(|(_, t, _)| *t);
                let (mut good, mut errors) = (good.activate(), errors.activate());
                for (out, time, diff) in ready.drain(..) {
                    let held = held.get_mut(&time).expect("capabilities held");
                    held.outstanding -= 1;
                    match out {
                        Ok(out) => {
                            stats.records_out(diff);
                            good.session(&held.good).give((out, time, diff));
                        }
                        Err(error) => {
                            stats.error(diff);
                            errors.session(&held.errors).give((error, time, diff));
                        }
                    }
                }
            }
            held.retain(|_, h| h.outstanding > 0);
        }
    });
    (good_stream.as_collection(), error_stream.as_collection())
}

/// The sizes of the jobs `n` requests go in: at most `most` each, and at least as many jobs as
/// `runners` (while there are requests for them), as even as can be, so a small remainder
/// keeps every runner busy instead of queueing on one.
fn even_jobs(n: usize, most: usize, runners: usize) -> Vec<usize> {
    if n == 0 {
        return Vec::new();
    }
    let jobs = n.div_ceil(most.max(1)).max(runners.clamp(1, n));
    (0..jobs)
        .map(|j| n / jobs + usize::from(j < n % jobs))
        .collect()
}

/// Full jobs of `most` to send from `pending` requests of a time still open: whole rounds of
/// one job per runner, so a workload of one or two jobs is not left to one runner while the
/// others wait (what is left goes, spread evenly, when the time completes).
fn full_jobs_while_open(pending: usize, most: usize, runners: usize) -> usize {
    let round = most.max(1) * runners.max(1);
    pending / round * runners.max(1)
}

#[cfg(test)]
mod tests {
    use super::{even_jobs, full_jobs_while_open};

    #[test]
    fn an_open_time_sends_whole_rounds_of_jobs() {
        // 32 requests in jobs of 32 and two runners: none yet (at completion, 16 + 16).
        assert_eq!(full_jobs_while_open(32, 32, 2), 0);
        // 120 in jobs of 16, two runners: three rounds of two.
        assert_eq!(full_jobs_while_open(120, 16, 2), 6);
        // One runner: every full job.
        assert_eq!(full_jobs_while_open(120, 16, 1), 7);
        assert_eq!(full_jobs_while_open(0, 16, 2), 0);
    }

    #[test]
    fn a_remainder_is_spread_over_the_runners() {
        // 8 requests, jobs of up to 8, two runners: 4 each rather than 8 on one.
        assert_eq!(even_jobs(8, 8, 2), [4, 4]);
        // More than the runners' share: as few jobs as the size allows, evened out.
        assert_eq!(even_jobs(20, 16, 2), [10, 10]);
        assert_eq!(even_jobs(33, 16, 2), [11, 11, 11]);
        // Fewer requests than runners: one each.
        assert_eq!(even_jobs(3, 8, 4), [1, 1, 1]);
        assert_eq!(even_jobs(5, 1, 2), [1, 1, 1, 1, 1]);
        assert_eq!(even_jobs(7, 64, 1), [7]);
        assert!(even_jobs(0, 8, 2).is_empty());
    }
}
