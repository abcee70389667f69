//! What a model has encoded: prompt states (text encoder) and source latents (VAE encoder),
//! pure functions of the model and their input, held by the model so that every generator
//! sharing it (its runners on the CPU) encodes each prompt and each source once. A miss is
//! encoded under the lock: a second generator wanting the same entry waits for it instead of
//! encoding it again, so call counts do not depend on which runner came first.

use super::posterior::Encoded;
use crate::record::Digest;
use crate::runtime::error::RuntimeError;
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex, PoisonError};

/// Keep at most this many entries of each kind (the whole memo is dropped past it).
pub(super) const ENCODED_LIMIT: usize = 4096;

/// A model's encoded prompts and sources.
#[derive(Default)]
pub struct Encodings {
    pub(super) prompts: Memo<String, Vec<f32>>,
    pub(super) latents: Memo<Digest, Encoded>,
}

/// Entries computed once, on the first miss.
pub(super) struct Memo<K, V> {
    map: Mutex<HashMap<K, Arc<V>>>,
}

impl<K, V> Default for Memo<K, V> {
    fn default() -> Self {
        Memo {
            map: Mutex::new(HashMap::new()),
        }
    }
}

impl<K: Clone + Eq + Hash, V> Memo<K, V> {
    /// The entry of each wanted key (first occurrence kept), encoding the missing ones in one
    /// `encode` call (it gets them in order and returns one value each). A failed call stores
    /// nothing; a panicking one leaves the memo as it was.
    pub(super) fn get_or_encode<I>(
        &self,
        wanted: Vec<(K, I)>,
        encode: impl FnOnce(&[(K, I)]) -> Result<Vec<V>, RuntimeError>,
    ) -> Result<Vec<(K, Arc<V>)>, RuntimeError> {
        let mut map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        if map.len() + wanted.len() > ENCODED_LIMIT {
            map.clear();
        }
        let mut keys: Vec<K> = Vec::with_capacity(wanted.len());
        let mut missing = Vec::new();
        for (key, input) in wanted {
            if keys.contains(&key) {
                continue;
            }
            keys.push(key.clone());
            if !map.contains_key(&key) {
                missing.push((key, input));
            }
        }
        if !missing.is_empty() {
            let values = encode(&missing)?;
            if values.len() != missing.len() {
                return Err(RuntimeError::request(format!(
                    "{} encodings for {} inputs",
                    values.len(),
                    missing.len()
                )));
            }
            for ((key, _), value) in missing.into_iter().zip(values) {
                map.insert(key, Arc::new(value));
            }
        }
        Ok(keys
            .into_iter()
            .map(|key| {
                let value = Arc::clone(&map[&key]);
                (key, value)
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn each_key_is_encoded_once_however_many_threads_ask() {
        let memo: Arc<Memo<u32, u32>> = Arc::default();
        let calls = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let (memo, calls) = (Arc::clone(&memo), Arc::clone(&calls));
                std::thread::spawn(move || {
                    let wanted = vec![(1, ()), (2, ()), (t + 10, ()), (1, ())];
                    let got = memo
                        .get_or_encode(wanted, |todo| {
                            calls.fetch_add(todo.len(), Ordering::SeqCst);
                            std::thread::sleep(std::time::Duration::from_millis(20));
                            Ok(todo.iter().map(|(k, _)| k * 100).collect())
                        })
                        .unwrap();
                    let got: Vec<(u32, u32)> = got.into_iter().map(|(k, v)| (k, *v)).collect();
                    assert_eq!(got, vec![(1, 100), (2, 200), (t + 10, (t + 10) * 100)]);
                })
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        // Keys 1 and 2 once, and each thread's own key.
        assert_eq!(calls.load(Ordering::SeqCst), 2 + 4);
    }

    #[test]
    fn a_failed_encoding_stores_nothing() {
        let memo: Memo<u32, u32> = Memo::default();
        let failed = memo.get_or_encode(vec![(1, ())], |_| Err(RuntimeError::request("no")));
        assert!(failed.is_err());
        let short = memo.get_or_encode(vec![(1, ()), (2, ())], |_| Ok(vec![5]));
        assert!(short
            .unwrap_err()
            .to_string()
            .contains("1 encodings for 2 inputs"));
        let got = memo.get_or_encode(vec![(1, ())], |_| Ok(vec![7])).unwrap();
        assert_eq!(*got[0].1, 7);
    }
}
