//! Per-image Gaussian noise from a counter-based generator keyed by (pipeline seed, sample,
//! guidance level, seed index): BLAKE3's extendable output in keyed mode is a counter-mode
//! stream, so an image's noise is the same whatever batch, worker or run makes it. An image
//! has two independent streams: the noise img2img adds to the source latent (or text-to-image
//! starts from), and the noise that samples the VAE posterior of its source.

/// What one image's noise is keyed by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct NoiseKey {
    pub pipeline_seed: u64,
    pub sample: u64,
    /// Guidance level λ in per mille.
    pub level: u16,
    pub seed_index: u32,
}

/// The key-derivation context of the add-noise stream (unchanged since the first release:
/// every stored image's noise comes from it).
const ADD_NOISE: &str = "discl 2026-11 image noise v1";
/// The key-derivation context of the VAE posterior's noise.
const POSTERIOR_NOISE: &str = "discl 2026-11 vae posterior noise v1";

impl NoiseKey {
    fn stream_key(&self, context: &str) -> [u8; 32] {
        let mut hasher = blake3::Hasher::new_derive_key(context);
        hasher.update(&self.pipeline_seed.to_le_bytes());
        hasher.update(&self.sample.to_le_bytes());
        hasher.update(&self.level.to_le_bytes());
        hasher.update(&self.seed_index.to_le_bytes());
        *hasher.finalize().as_bytes()
    }
}

/// The noise of one image, given rather than drawn from its key: to land on a reference that
/// recorded its own draws.
#[derive(Clone, Debug, PartialEq)]
pub struct ImageNoise {
    /// What img2img adds to the source latent (text-to-image: the starting latent).
    pub add: Vec<f32>,
    /// What samples the VAE posterior of the source (`mean + std · noise`); needed only when
    /// a posterior is sampled.
    pub posterior: Option<Vec<f32>>,
}

impl ImageNoise {
    /// The image's keyed noise: `n` values of each stream, the posterior's only if asked for.
    pub fn keyed(key: &NoiseKey, n: usize, posterior: bool) -> Self {
        ImageNoise {
            add: gaussian(key, n),
            posterior: posterior.then(|| posterior_gaussian(key, n)),
        }
    }
}

/// `n` standard normal values for `key`: the add-noise stream.
pub fn gaussian(key: &NoiseKey, n: usize) -> Vec<f32> {
    normals(&key.stream_key(ADD_NOISE), n)
}

/// `n` standard normal values for `key`: the VAE posterior's stream, independent of the
/// add-noise stream.
pub fn posterior_gaussian(key: &NoiseKey, n: usize) -> Vec<f32> {
    normals(&key.stream_key(POSTERIOR_NOISE), n)
}

/// `n` standard normal values (Box–Muller over the keyed stream).
fn normals(stream_key: &[u8; 32], n: usize) -> Vec<f32> {
    let mut reader = blake3::Hasher::new_keyed(stream_key).finalize_xof();
    let mut bytes = vec![0u8; n.div_ceil(2) * 8];
    reader.fill(&mut bytes);
    let mut out = Vec::with_capacity(n + 1);
    for pair in bytes.chunks_exact(8) {
        let a = u32::from_le_bytes(pair[..4].try_into().expect("4 bytes"));
        let b = u32::from_le_bytes(pair[4..].try_into().expect("4 bytes"));
        // Uniforms strictly inside (0, 1), so the logarithm is finite.
        let u1 = (a as f64 + 0.5) / 4_294_967_296.0;
        let u2 = (b as f64 + 0.5) / 4_294_967_296.0;
        let radius = (-2.0 * u1.ln()).sqrt();
        let angle = std::f64::consts::TAU * u2;
        out.push((radius * angle.cos()) as f32);
        out.push((radius * angle.sin()) as f32);
    }
    out.truncate(n);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(seed_index: u32) -> NoiseKey {
        NoiseKey {
            pipeline_seed: 7,
            sample: 42,
            level: 500,
            seed_index,
        }
    }

    #[test]
    fn noise_is_keyed_and_reproducible() {
        let a = gaussian(&key(0), 1001);
        assert_eq!(a.len(), 1001);
        assert_eq!(a, gaussian(&key(0), 1001));
        // A prefix of a longer draw is the shorter draw: the stream is counter-based.
        assert_eq!(&gaussian(&key(0), 4000)[..1001], &a[..]);
        assert_ne!(a, gaussian(&key(1), 1001));
        assert_ne!(
            a,
            gaussian(
                &NoiseKey {
                    level: 300,
                    ..key(0)
                },
                1001
            )
        );
    }

    #[test]
    fn the_add_noise_stream_is_unchanged() {
        // Drawn before the posterior stream existed: stored images depend on these values.
        let head = [1.122478, -0.18258044, -1.3761805, -0.047941875, 0.5213685];
        let a = gaussian(&key(0), 5);
        for (got, want) in a.iter().zip(head) {
            assert!((got - want).abs() < 1e-6, "{a:?}");
        }
    }

    #[test]
    fn the_posterior_stream_is_keyed_and_independent() {
        let p = posterior_gaussian(&key(0), 1001);
        assert_eq!(p, posterior_gaussian(&key(0), 1001));
        assert_ne!(p, posterior_gaussian(&key(1), 1001));
        let a = gaussian(&key(0), 1001);
        let dot: f64 = p.iter().zip(&a).map(|(x, y)| (x * y) as f64).sum::<f64>() / 1001.0;
        assert!(dot.abs() < 0.15, "correlation {dot}");
        let keyed = ImageNoise::keyed(&key(0), 1001, true);
        assert_eq!((keyed.add, keyed.posterior), (a.clone(), Some(p)));
        assert_eq!(ImageNoise::keyed(&key(0), 1001, false).posterior, None);
    }

    #[test]
    fn noise_is_standard_normal() {
        let x = gaussian(&key(3), 200_000);
        let mean = x.iter().map(|v| *v as f64).sum::<f64>() / x.len() as f64;
        let var = x.iter().map(|v| (*v as f64 - mean).powi(2)).sum::<f64>() / x.len() as f64;
        assert!(mean.abs() < 0.01, "mean {mean}");
        assert!((var - 1.0).abs() < 0.01, "variance {var}");
        let beyond_2 = x.iter().filter(|v| v.abs() > 2.0).count() as f64 / x.len() as f64;
        assert!((beyond_2 - 0.0455).abs() < 0.003, "tail mass {beyond_2}");
    }
}
