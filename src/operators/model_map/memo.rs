//! The answers of a model-backed operator, bounded. An answer stays while its key is live (the
//! net multiplicity of the records with that key is not zero): a retraction must negate exactly
//! what the insertion produced, so a live answer is never dropped. When a key's net count
//! reaches zero its answer moves to a bounded cache of recently retracted answers (oldest
//! evicted first), so a quick retract-then-reinsert calls no model; beyond that, recomputing is
//! left to the operator's own persistent store, if it has one (generate's image store).

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;

/// How many recently retracted answers an operator keeps by default, per worker.
pub const RECENTLY_RETRACTED: usize = 65_536;

/// What the memo holds for a live key.
pub struct Entry<A, U> {
    /// Net multiplicity of the records with this key seen so far.
    pub count: isize,
    /// The answer, once known.
    pub answer: Option<A>,
    /// Updates waiting for the answer (not empty only while its request is on its way).
    pub waiting: Vec<U>,
}

/// Answers by key: every live one, and a bounded number of recently retracted ones.
pub struct Memo<K, A, U> {
    live: HashMap<K, Entry<A, U>>,
    retracted: Recent<K, A>,
}

impl<K: Clone + Eq + Hash, A, U> Memo<K, A, U> {
    /// An empty memo keeping up to `capacity` recently retracted answers.
    pub fn new(capacity: usize) -> Self {
        Memo {
            live: HashMap::new(),
            retracted: Recent::new(capacity),
        }
    }

    /// Counts an update of `key` by `diff` and returns its entry, revived from the recently
    /// retracted answers when it is there. Call [`Memo::settle`] once done with the entry.
    pub fn update(&mut self, key: &K, diff: isize) -> &mut Entry<A, U> {
        if !self.live.contains_key(key) {
            let entry = Entry {
                count: 0,
                answer: self.retracted.take(key),
                waiting: Vec::new(),
            };
            self.live.insert(key.clone(), entry);
        }
        let entry = self.live.get_mut(key).expect("just inserted");
        entry.count += diff;
        entry
    }

    /// Records `key`'s answer and returns the updates that waited for it; then settles the key.
    pub fn answer(&mut self, key: &K, answer: A) -> Vec<U> {
        let Some(entry) = self.live.get_mut(key) else {
            return Vec::new();
        };
        entry.answer = Some(answer);
        let waiting = std::mem::take(&mut entry.waiting);
        self.settle(key);
        waiting
    }

    /// Moves `key`'s answer to the recently retracted ones if no record with the key is live
    /// and nothing waits for it.
    pub fn settle(&mut self, key: &K) {
        let done = self
            .live
            .get(key)
            .is_some_and(|e| e.count == 0 && e.waiting.is_empty() && e.answer.is_some());
        if done {
            let entry = self.live.remove(key).expect("checked");
            self.retracted
                .put(key.clone(), entry.answer.expect("checked"));
        }
    }

    /// Live keys.
    pub fn live(&self) -> usize {
        self.live.len()
    }

    /// Recently retracted answers kept.
    pub fn retracted(&self) -> usize {
        self.retracted.answers.len()
    }
}

/// A bounded map that forgets its oldest entries first.
struct Recent<K, A> {
    capacity: usize,
    answers: HashMap<K, (A, u64)>,
    /// Keys in the order they were put, with the stamp they were put under; an entry whose
    /// stamp no longer matches (the key was taken, or put again) is stale and skipped.
    order: VecDeque<(K, u64)>,
    next: u64,
}

impl<K: Clone + Eq + Hash, A> Recent<K, A> {
    fn new(capacity: usize) -> Self {
        Recent {
            capacity,
            answers: HashMap::new(),
            order: VecDeque::new(),
            next: 0,
        }
    }

    fn put(&mut self, key: K, answer: A) {
        if self.capacity == 0 {
            return;
        }
        let stamp = self.next;
        self.next += 1;
        self.order.push_back((key.clone(), stamp));
        self.answers.insert(key, (answer, stamp));
        while self.answers.len() > self.capacity {
            let (key, stamp) = self
                .order
                .pop_front()
                .expect("every answer is in the order");
            if self.answers.get(&key).is_some_and(|(_, s)| *s == stamp) {
                self.answers.remove(&key);
            }
        }
        // Keys taken and put again leave stale entries behind; drop them now and then.
        if self.order.len() > 2 * self.capacity {
            let answers = &self.answers;
            self.order
                .retain(|(key, stamp)| answers.get(key).is_some_and(|(_, s)| s == stamp));
        }
    }

    fn take(&mut self, key: &K) -> Option<A> {
        self.answers.remove(key).map(|(answer, _)| answer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type TestMemo = Memo<u32, String, ()>;

    /// Inserts `key` with an answer, then retracts it.
    fn answer_and_retract(memo: &mut TestMemo, key: u32) {
        memo.update(&key, 1);
        memo.answer(&key, format!("answer {key}"));
        memo.update(&key, -1);
        memo.settle(&key);
    }

    #[test]
    fn keeps_live_answers_and_a_bounded_number_of_retracted_ones() {
        let mut memo = TestMemo::new(2);
        for key in 0..100 {
            memo.update(&key, 1);
            memo.answer(&key, format!("answer {key}"));
        }
        // Live answers are never dropped, however many.
        assert_eq!((memo.live(), memo.retracted()), (100, 0));
        for key in 0..100 {
            memo.update(&key, -1);
            memo.settle(&key);
        }
        assert_eq!((memo.live(), memo.retracted()), (0, 2));
        // The two most recently retracted come back; older ones are gone.
        assert_eq!(memo.update(&99, 1).answer.as_deref(), Some("answer 99"));
        assert_eq!(memo.update(&98, 1).answer.as_deref(), Some("answer 98"));
        assert_eq!(memo.update(&97, 1).answer, None);
    }

    #[test]
    fn evicts_oldest_first_and_revived_keys_start_over() {
        let mut memo = TestMemo::new(3);
        for key in [1, 2, 3] {
            answer_and_retract(&mut memo, key);
        }
        // 1 is revived and retracted again: it is now the newest, so 2 goes first.
        memo.update(&1, 1);
        memo.update(&1, -1);
        memo.settle(&1);
        answer_and_retract(&mut memo, 4);
        assert_eq!(memo.retracted(), 3);
        assert_eq!(memo.update(&2, 1).answer, None);
        for key in [1, 3, 4] {
            assert!(memo.update(&key, 1).answer.is_some(), "{key} kept");
        }
    }

    #[test]
    fn a_key_still_waiting_or_still_live_is_not_retired() {
        let mut memo = TestMemo::new(4);
        // The retraction comes first: the net count is -1, then 0 once the insertion arrives,
        // but the answer is still on its way, so nothing moves until it is in.
        memo.update(&7, -1).waiting.push(());
        memo.settle(&7);
        memo.update(&7, 1).waiting.push(());
        memo.settle(&7);
        assert_eq!((memo.live(), memo.retracted()), (1, 0));
        assert_eq!(memo.answer(&7, "seven".into()).len(), 2);
        assert_eq!((memo.live(), memo.retracted()), (0, 1));
        // Inserted twice, retracted once: still live.
        memo.update(&8, 2);
        memo.answer(&8, "eight".into());
        memo.update(&8, -1);
        memo.settle(&8);
        assert_eq!((memo.live(), memo.retracted()), (1, 1));
    }

    #[test]
    fn stale_order_entries_are_compacted() {
        let mut memo = TestMemo::new(2);
        answer_and_retract(&mut memo, 1);
        for _ in 0..1000 {
            memo.update(&1, 1);
            memo.update(&1, -1);
            memo.settle(&1);
        }
        assert!(memo.retracted.order.len() <= 4);
        assert_eq!(memo.update(&1, 1).answer.as_deref(), Some("answer 1"));
    }

    #[test]
    fn capacity_zero_keeps_only_live_answers() {
        let mut memo = TestMemo::new(0);
        answer_and_retract(&mut memo, 1);
        assert_eq!((memo.live(), memo.retracted()), (0, 0));
        assert_eq!(memo.update(&1, 1).answer, None);
    }
}
