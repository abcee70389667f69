//! Keyed randomness: every random choice of the trainer (initial weights, the order of an
//! epoch, augmentation, dropout) is a pure function of the seed and a key naming the choice,
//! never of a generator's running state, so a run is reproducible piece by piece and the order
//! of an epoch does not depend on the order its rows arrived in.

/// SplitMix64's finaliser: a bijective mix of 64 bits.
pub fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A 64-bit key from a list of parts (order matters).
pub fn key(parts: &[u64]) -> u64 {
    parts
        .iter()
        .fold(0x6469_7363_6c2d_6c72, |acc, &p| mix(acc ^ mix(p)))
}

/// The first 8 bytes of a blake3 hash of `bytes`, as a key part.
pub fn hash_bytes(bytes: &[u8]) -> u64 {
    let digest = blake3::hash(bytes);
    u64::from_le_bytes(digest.as_bytes()[..8].try_into().expect("8 bytes"))
}

/// A stream of numbers drawn from one key (SplitMix64).
pub struct Stream(u64);

impl Stream {
    pub fn new(key: u64) -> Stream {
        Stream(key)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix(self.0)
    }
    /// Uniform in [0, 1) with 24 bits, exact in f32.
    pub fn unit(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }
    /// Uniform integer in 0..n (n small; the bias of a modulo of 64 bits is negligible).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

/// Purposes, so two choices never share a key.
pub mod purpose {
    pub const INIT: u64 = 1;
    pub const ORDER: u64 = 2;
    pub const AUGMENT: u64 = 3;
    pub const DROPOUT: u64 = 4;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_stable_and_distinct() {
        assert_eq!(key(&[1, 2, 3]), key(&[1, 2, 3]));
        assert_ne!(key(&[1, 2, 3]), key(&[1, 3, 2]));
        assert_ne!(key(&[0]), key(&[0, 0]));
        let mut s = Stream::new(7);
        let u: Vec<f32> = (0..1000).map(|_| s.unit()).collect();
        assert!(u.iter().all(|v| (0.0..1.0).contains(v)));
        let mean = u.iter().sum::<f32>() / 1000.0;
        assert!((mean - 0.5).abs() < 0.05, "{mean}");
    }
}
