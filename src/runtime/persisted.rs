//! Answers that outlive a run: a service worker wrapped so that each batch first looks up every
//! item in the [`AnswerStore`], runs the inner worker on the misses only (no model call when
//! every item hits), keeps the new answers (one transaction per batch) and says for each
//! answer whether it was computed now. Items carry their answer's content key, computed by the
//! operator from digests it knows (model, input content, parameters); a worker may complete it
//! on the service thread from what only it reads ([`Persist::answer_key`]). Only successful
//! answers are kept: an error is asked again next time.

use super::service::{BatchWorker, ServiceStats};
use crate::record::Digest;
use crate::store::answers::AnswerStore;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::sync::Arc;

/// A worker whose answers can be kept in the answer store.
pub trait Persist: BatchWorker {
    /// The answer store's table for this worker's answers.
    const TABLE: &'static str;
    /// What is kept of a successful answer.
    type Stored: Serialize + DeserializeOwned;
    /// The full content key of an item's answer, from the operator's `key`; `None`: the
    /// answer is not kept. Runs on the service thread, so it may read the item's files.
    fn answer_key(&mut self, key: Digest, _item: &mut Self::Item) -> Option<Digest> {
        Some(key)
    }
    /// What to keep of an answer (`None`: nothing; errors are not kept).
    fn to_stored(output: &Self::Output) -> Option<Self::Stored>;
    /// The answer again.
    fn from_stored(stored: Self::Stored) -> Self::Output;
}

/// An item with its answer's content key (`None`: never looked up or kept).
#[derive(Clone, Debug)]
pub struct Keyed<I> {
    pub key: Option<Digest>,
    pub item: I,
}

/// An answer, and whether a model computed it in this run (`false`: found in the store, or
/// answered without a model).
#[derive(Clone, Debug, PartialEq)]
pub struct Answered<O> {
    pub answer: O,
    pub computed: bool,
}

/// A worker whose answers persist in an answer store.
pub struct Persisted<W> {
    inner: W,
    store: Arc<AnswerStore>,
}

impl<W: Persist> Persisted<W> {
    /// Wraps `inner`; with [`AnswerStore::disabled`] every answer is computed.
    pub fn new(inner: W, store: Arc<AnswerStore>) -> Self {
        Persisted { inner, store }
    }
    /// Wraps `inner` without a store.
    pub fn alone(inner: W) -> Self {
        Self::new(inner, Arc::new(AnswerStore::disabled()))
    }
    /// The wrapped worker.
    pub fn inner(&self) -> &W {
        &self.inner
    }
}

impl<W: Persist> BatchWorker for Persisted<W> {
    type Item = Keyed<W::Item>;
    type Output = Answered<W::Output>;

    fn failed(message: &str) -> Self::Output {
        Answered {
            answer: W::failed(message),
            computed: true,
        }
    }

    fn run(&mut self, items: Vec<Self::Item>, stats: &ServiceStats) -> Vec<Self::Output> {
        let mut keys = Vec::with_capacity(items.len());
        let mut inner_items = Vec::with_capacity(items.len());
        for Keyed { key, mut item } in items {
            let key = key.and_then(|key| self.inner.answer_key(key, &mut item));
            keys.push(key);
            inner_items.push(item);
        }
        let wanted: Vec<Digest> = keys.iter().flatten().copied().collect();
        let mut found = self.store.get_many(W::TABLE, &wanted).into_iter();
        let mut answers: Vec<Option<Answered<W::Output>>> = Vec::with_capacity(keys.len());
        let mut misses = Vec::new();
        for (i, (key, item)) in keys.iter().zip(inner_items).enumerate() {
            let stored = key
                .and_then(|_| found.next().flatten())
                .and_then(|bytes| bincode::deserialize::<W::Stored>(&bytes).ok());
            match stored {
                Some(stored) => answers.push(Some(Answered {
                    answer: W::from_stored(stored),
                    computed: false,
                })),
                None => {
                    answers.push(None);
                    misses.push((i, item));
                }
            }
        }
        if !misses.is_empty() {
            let (at, items): (Vec<usize>, Vec<W::Item>) = misses.into_iter().unzip();
            let outputs = self.inner.run(items, stats);
            let mut keep = Vec::new();
            for (i, answer) in at.into_iter().zip(outputs) {
                if let (Some(key), Some(stored)) = (keys[i], W::to_stored(&answer)) {
                    keep.push((key, bincode::serialize(&stored).expect("answers serialise")));
                }
                answers[i] = Some(Answered {
                    answer,
                    computed: true,
                });
            }
            self.store.put_many(W::TABLE, &keep);
        }
        answers
            .into_iter()
            .map(|a| a.expect("every item answered"))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Doubles numbers; odd ones fail; counts one model call per batch it runs.
    struct Doubler;
    impl BatchWorker for Doubler {
        type Item = u32;
        type Output = Result<u32, String>;
        fn run(&mut self, items: Vec<u32>, stats: &ServiceStats) -> Vec<Self::Output> {
            stats.model_call();
            items
                .into_iter()
                .map(|x| {
                    if x % 2 == 0 {
                        Ok(2 * x)
                    } else {
                        Err("odd".into())
                    }
                })
                .collect()
        }
        fn failed(message: &str) -> Self::Output {
            Err(message.into())
        }
    }
    impl Persist for Doubler {
        const TABLE: &'static str = "double";
        type Stored = u32;
        fn to_stored(output: &Self::Output) -> Option<u32> {
            output.as_ref().ok().copied()
        }
        fn from_stored(stored: u32) -> Self::Output {
            Ok(stored)
        }
    }

    fn keyed(x: u32) -> Keyed<u32> {
        Keyed {
            key: Some(Digest::of(&x.to_le_bytes())),
            item: x,
        }
    }

    fn calls(stats: &ServiceStats) -> u64 {
        stats.snapshot().2
    }

    #[test]
    fn computes_only_misses_and_keeps_answers_across_reopens() {
        let dir = tempfile::tempdir().unwrap();
        let open = || Persisted::new(Doubler, Arc::new(AnswerStore::open(dir.path(), 0)));
        let stats = ServiceStats::default();
        {
            let mut worker = open();
            let out = worker.run(vec![keyed(2), keyed(3)], &stats);
            assert_eq!(
                out[0],
                Answered {
                    answer: Ok(4),
                    computed: true
                }
            );
            assert_eq!(out[1].answer, Err("odd".to_string()));
            assert_eq!(calls(&stats), 1);
        }
        let mut worker = open();
        // 2 is found; 3 failed before, so it is asked again, with 4, in one call.
        let unkeyed = Keyed { key: None, item: 8 };
        let out = worker.run(vec![keyed(2), keyed(3), keyed(4), unkeyed], &stats);
        let computed: Vec<bool> = out.iter().map(|a| a.computed).collect();
        assert_eq!(computed, vec![false, true, true, true]);
        assert_eq!(out[2].answer, Ok(8));
        assert_eq!(out[3].answer, Ok(16));
        assert_eq!(calls(&stats), 2);
        // Everything kept is a hit: no model call at all.
        let out = worker.run(vec![keyed(4), keyed(2)], &stats);
        assert!(out.iter().all(|a| !a.computed));
        assert_eq!(calls(&stats), 2);
        // Without a store, everything is computed.
        let out = Persisted::alone(Doubler).run(vec![keyed(2)], &stats);
        assert!(out[0].computed);
    }
}
