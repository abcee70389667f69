//! The VAE posterior of an encoded source and how img2img takes its latent from it: sampled
//! (`mean + std · noise`, diffusers' default) or its mean, then times the scaling factor. An
//! encoder that gives a latent rather than the posterior's parameters (`latent_sample`), and a
//! pixel-space model's source image, are taken as they are whatever the mode.

use crate::runtime::error::RuntimeError;
use std::fmt;
use std::sync::Arc;

/// How the latent of a source image is taken from the VAE posterior (`vae_latent`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum VaeLatent {
    /// `mean + std · noise` with the image's keyed posterior noise, as diffusers' img2img does.
    #[default]
    Sample,
    /// The posterior's mean (deterministic; discl's behaviour before `vae_latent` existed).
    Mean,
}

impl VaeLatent {
    pub fn as_str(&self) -> &'static str {
        match self {
            VaeLatent::Sample => "sample",
            VaeLatent::Mean => "mean",
        }
    }
}

impl fmt::Display for VaeLatent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for VaeLatent {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let choices = [("sample", VaeLatent::Sample), ("mean", VaeLatent::Mean)];
        crate::runtime::choice::one_of("vae_latent", s, &choices)
    }
}

/// An encoded source image: the posterior's mean and standard deviation (before scaling), or
/// a latent to take as it is (`std` absent).
#[derive(Debug)]
pub struct Encoded {
    mean: Arc<Vec<f32>>,
    std: Option<Vec<f32>>,
    scale: f32,
}

impl Encoded {
    /// A latent taken as it is: a pixel-space model's image (`scale` 1) or an encoder's
    /// `latent_sample`.
    pub fn given(latent: Arc<Vec<f32>>, scale: f32) -> Self {
        Encoded {
            mean: latent,
            std: None,
            scale,
        }
    }

    /// The posterior from an encoder's `latent_parameters` of one image (mean, then
    /// log-variance): `std = exp(0.5 · clamp(logvar, −30, 20))`, as diffusers'
    /// `DiagonalGaussianDistribution`.
    pub fn posterior(parameters: &[f32], scale: f32) -> Self {
        let (mean, logvar) = parameters.split_at(parameters.len() / 2);
        Encoded {
            mean: Arc::new(mean.to_vec()),
            std: Some(
                logvar
                    .iter()
                    .map(|v| (0.5 * v.clamp(-30.0, 20.0)).exp())
                    .collect(),
            ),
            scale,
        }
    }

    /// Whether the latent depends on the mode (the encoder gave a posterior).
    pub fn is_posterior(&self) -> bool {
        self.std.is_some()
    }

    /// The scaled latent img2img starts from. `noise` (one standard normal per latent value)
    /// is needed when a posterior is sampled and unused otherwise.
    pub fn latent(&self, mode: VaeLatent, noise: Option<&[f32]>) -> Result<Vec<f32>, RuntimeError> {
        let scale = self.scale;
        match (&self.std, mode) {
            (Some(std), VaeLatent::Sample) => {
                let noise = noise.ok_or_else(|| {
                    RuntimeError::request("sampling the VAE posterior needs its noise")
                })?;
                if noise.len() != std.len() {
                    return Err(RuntimeError::request(format!(
                        "posterior noise has {} values, the latent {}",
                        noise.len(),
                        std.len()
                    )));
                }
                Ok(self
                    .mean
                    .iter()
                    .zip(std)
                    .zip(noise)
                    .map(|((m, s), e)| (m + s * e) * scale)
                    .collect())
            }
            _ => Ok(self.mean.iter().map(|m| m * scale).collect()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_parse_and_print() {
        for mode in [VaeLatent::Sample, VaeLatent::Mean] {
            assert_eq!(mode.as_str().parse::<VaeLatent>(), Ok(mode));
        }
        assert_eq!(VaeLatent::default(), VaeLatent::Sample);
        let err = "argmax".parse::<VaeLatent>().unwrap_err();
        assert!(err.contains("(expected \"sample\" or \"mean\")"), "{err}");
    }

    #[test]
    fn the_posterior_is_sampled_or_its_mean_taken() {
        // Two latent values: means 1 and −2, log-variances 0 and 2·ln 3 (std 1 and 3).
        let encoded = Encoded::posterior(&[1.0, -2.0, 0.0, 2.0 * 3f32.ln()], 0.5);
        assert!(encoded.is_posterior());
        let mean = encoded.latent(VaeLatent::Mean, None).unwrap();
        assert_eq!(mean, vec![0.5, -1.0]);
        let noise = [0.5, -1.0];
        let sampled = encoded.latent(VaeLatent::Sample, Some(&noise)).unwrap();
        assert_eq!(sampled[0], 0.75);
        assert!(
            (sampled[1] - (-2.0 - 3.0) * 0.5).abs() < 1e-6,
            "{sampled:?}"
        );
        // The noise is needed, and of the latent's size.
        assert!(encoded.latent(VaeLatent::Sample, None).is_err());
        assert!(encoded.latent(VaeLatent::Sample, Some(&[0.0])).is_err());
    }

    #[test]
    fn log_variance_is_clamped_as_diffusers_does() {
        let encoded = Encoded::posterior(&[0.0, 0.0, -100.0, 100.0], 1.0);
        let sampled = encoded
            .latent(VaeLatent::Sample, Some(&[1.0, 1.0]))
            .unwrap();
        assert_eq!(sampled, vec![(-15f32).exp(), 10f32.exp()]);
    }

    #[test]
    fn a_given_latent_ignores_the_mode() {
        let encoded = Encoded::given(Arc::new(vec![0.25, -1.0]), 1.0);
        assert!(!encoded.is_posterior());
        for mode in [VaeLatent::Sample, VaeLatent::Mean] {
            assert_eq!(encoded.latent(mode, None).unwrap(), vec![0.25, -1.0]);
        }
    }
}
