//! Euler discrete (Karras et al. 2022, Algorithm 2 without churn): the sample lives at noise level
//! sigma (x = x0 + sigma * eps, hence the input scaling by 1/sqrt(sigma²+1)) and one Euler step of
//! the probability-flow ODE moves it from sigma_i to sigma_{i+1}.

use super::betas::{np_arange, np_interp, np_linspace, np_round, train_sigmas};
use super::params::{Prediction, SchedulerParams, Spacing};
use super::{ItemState, Result, Schedule};

/// (timesteps, sigmas) for `n` steps; timesteps are float (fractional with linspace spacing),
/// sigmas has one more entry (the final 0, or sigma_min).
pub(super) fn timesteps(p: &SchedulerParams, ac: &[f32], n: usize) -> Result<(Vec<f32>, Vec<f32>)> {
    let train = p.num_train_timesteps;
    let timesteps: Vec<f32> = match p.spacing {
        Spacing::Linspace => np_linspace(0.0, (train - 1) as f64, n)
            .into_iter()
            .rev()
            .map(|t| t as f32)
            .collect(),
        Spacing::Leading => {
            let ratio = train / n;
            // float32 array += int offset stays float32.
            (0..n)
                .rev()
                .map(|i| (i * ratio) as f32 + p.steps_offset as f32)
                .collect()
        }
        Spacing::Trailing => np_arange(train as f64, 0.0, -(train as f64 / n as f64))
            .into_iter()
            .map(|t| np_round(t) as f32 - 1.0)
            .collect(),
    };
    let table = train_sigmas(ac);
    let mut sigmas: Vec<f32> = timesteps
        .iter()
        .map(|&t| np_interp(t as f64, &table) as f32)
        .collect();
    sigmas.push(if p.final_sigma_min { table[0] } else { 0.0 });
    Ok((timesteps, sigmas))
}

/// The text-to-image noise scale: the largest sigma, or sqrt(max² + 1) with leading spacing
/// (diffusers' historical choice, kept for parity).
pub(super) fn init_noise_sigma(p: &SchedulerParams, sigmas: &[f32]) -> f32 {
    let max = sigmas.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    match p.spacing {
        Spacing::Leading => (max * max + 1.0).sqrt(),
        Spacing::Linspace | Spacing::Trailing => max,
    }
}

/// One Euler step from sigmas[i] to sigmas[i + 1], in place.
pub(super) fn step(s: &Schedule, item: &mut ItemState, model_output: &[f32], sample: &mut [f32]) {
    let sigma = s.sigmas[item.index];
    // gamma = 0 (no churn): sigma_hat = sigma * (0 + 1).
    let sigma_hat = sigma * 1.0;
    let dt = s.sigmas[item.index + 1] - sigma_hat;
    let pred = s.params.prediction;
    let (c_out, c_in) = (-sigma / (sigma * sigma + 1.0).sqrt(), sigma * sigma + 1.0);
    for (x, &m) in sample.iter_mut().zip(model_output) {
        let x0 = match pred {
            Prediction::Epsilon => *x - sigma_hat * m,
            Prediction::VPrediction => m * c_out + *x / c_in,
            Prediction::Sample => m,
        };
        let derivative = (*x - x0) / sigma_hat;
        *x += derivative * dt;
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Scheduler, SchedulerConfig, SchedulerKind};

    fn sd15_euler() -> Scheduler {
        let cfg = SchedulerConfig::from_json_str(
            r#"{"_class_name": "PNDMScheduler", "beta_end": 0.012, "beta_schedule": "scaled_linear",
                "beta_start": 0.00085, "skip_prk_steps": true, "steps_offset": 1, "timestep_spacing": "leading"}"#,
        )
        .unwrap();
        Scheduler::new(&cfg, SchedulerKind::EulerDiscrete).unwrap()
    }

    #[test]
    fn img2img_start_sigma() {
        let s = sd15_euler().schedule(20).unwrap();
        let item = s.start(0.5).unwrap();
        assert_eq!(s.timestep(&item), Some(451.0));
        assert!((s.sigmas()[item.step_index()] - 1.376).abs() < 1e-3);
        assert_eq!(item.steps_left(), 10);
        assert_eq!(s.sigmas().len(), 21);
        assert_eq!(*s.sigmas().last().unwrap(), 0.0);
        // Leading spacing: sqrt(sigma_max² + 1).
        let m = s.sigmas()[0];
        assert!((s.init_noise_sigma() - (m * m + 1.0).sqrt()).abs() < 1e-6);
    }

    #[test]
    fn input_scaling_and_final_step_to_the_prediction() {
        let s = sd15_euler().schedule(4).unwrap();
        let mut item = s.start_at(3).unwrap();
        let sigma = s.sigmas()[3];
        let x = [2.0f32, -1.0];
        let mut scaled = [0.0f32; 2];
        s.scale_model_input(&item, &x, &mut scaled).unwrap();
        assert!((scaled[0] - 2.0 / (sigma * sigma + 1.0).sqrt()).abs() < 1e-6);
        // Last step goes to sigma 0: x - sigma * eps, the clean prediction.
        let mut y = x;
        s.step(&mut item, &[0.5, 0.5], &mut y).unwrap();
        assert!((y[0] - (2.0 - sigma * 0.5)).abs() < 1e-5);
        assert!(s.step(&mut item, &[0.5, 0.5], &mut y).is_err());
    }
}
