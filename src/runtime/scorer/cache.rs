//! A bounded map from keys to embeddings that forgets its oldest entries first, so a long run
//! keeps prompt and source-image embeddings without growing without limit.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;

/// Embeddings by key, at most `capacity` of them.
pub struct EmbeddingCache<K> {
    entries: HashMap<K, Vec<f32>>,
    order: VecDeque<K>,
    capacity: usize,
}

impl<K: Hash + Eq + Clone> EmbeddingCache<K> {
    /// An empty cache holding at most `capacity` embeddings (0 keeps none).
    pub fn new(capacity: usize) -> Self {
        EmbeddingCache {
            entries: HashMap::new(),
            order: VecDeque::new(),
            capacity,
        }
    }

    /// The embedding stored under `key`.
    pub fn get(&self, key: &K) -> Option<&Vec<f32>> {
        self.entries.get(key)
    }

    /// Whether `key` has an embedding.
    pub fn contains(&self, key: &K) -> bool {
        self.entries.contains_key(key)
    }

    /// Stores an embedding, forgetting the oldest ones beyond the capacity.
    pub fn insert(&mut self, key: K, embedding: Vec<f32>) {
        if self.capacity == 0 {
            return;
        }
        if self.entries.insert(key.clone(), embedding).is_none() {
            self.order.push_back(key);
        }
        self.shrink();
    }

    /// How many embeddings it keeps at most.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Changes the capacity, forgetting the oldest entries if it shrank.
    pub fn set_capacity(&mut self, capacity: usize) {
        self.capacity = capacity;
        self.shrink();
    }

    fn shrink(&mut self) {
        while self.order.len() > self.capacity {
            if let Some(old) = self.order.pop_front() {
                self.entries.remove(&old);
            }
        }
    }

    /// How many embeddings it holds.
    pub fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forgets_the_oldest_beyond_its_capacity() {
        let mut cache = EmbeddingCache::new(2);
        cache.insert("a", vec![1.0]);
        cache.insert("b", vec![2.0]);
        cache.insert("a", vec![3.0]);
        assert_eq!((cache.len(), cache.get(&"a")), (2, Some(&vec![3.0])));
        cache.insert("c", vec![4.0]);
        assert!(!cache.contains(&"a") && cache.contains(&"b") && cache.contains(&"c"));
        cache.set_capacity(1);
        assert_eq!(cache.len(), 1);
        assert!(cache.contains(&"c"));
        cache.set_capacity(0);
        cache.insert("d", vec![5.0]);
        assert_eq!(cache.len(), 0);
    }
}
