//! DDIM (Song et al. 2020), deterministic (eta = 0): predict the clean sample, then move it to the
//! previous timestep along the predicted noise direction.

use super::betas::{np_arange, np_linspace, np_round};
use super::params::{Prediction, SchedulerParams, Spacing};
use super::{ItemState, Result, Schedule, SchedulerError};

/// Descending timesteps for `n` inference steps (diffusers' `DDIMScheduler.set_timesteps`).
pub(super) fn timesteps(p: &SchedulerParams, n: usize) -> Result<Vec<f32>> {
    let train = p.num_train_timesteps;
    let t: Vec<i64> = match p.spacing {
        Spacing::Linspace => np_linspace(0.0, (train - 1) as f64, n)
            .into_iter()
            .rev()
            .map(|t| np_round(t) as i64)
            .collect(),
        Spacing::Leading => {
            let ratio = (train / n) as i64;
            (0..n as i64)
                .rev()
                .map(|i| i * ratio + p.steps_offset)
                .collect()
        }
        Spacing::Trailing => np_arange(train as f64, 0.0, -(train as f64 / n as f64))
            .into_iter()
            .map(|t| np_round(t) as i64 - 1)
            .collect(),
    };
    check_range(p, &t)?;
    Ok(t.into_iter().map(|t| t as f32).collect())
}

/// Refuses timesteps that would index outside alphas_cumprod (diffusers would fail or wrap).
pub(super) fn check_range(p: &SchedulerParams, t: &[i64]) -> Result<()> {
    match t
        .iter()
        .find(|&&t| t < 0 || t as usize >= p.num_train_timesteps)
    {
        Some(&bad) => Err(SchedulerError::TimestepOutOfRange {
            kind: p.kind,
            timestep: bad,
            num_train: p.num_train_timesteps,
        }),
        None => Ok(()),
    }
}

/// One DDIM step with eta = 0, in place.
pub(super) fn step(
    s: &Schedule,
    item: &mut ItemState,
    model_output: &[f32],
    sample: &mut [f32],
) -> Result<()> {
    // diffusers steps back by num_train // n whatever the spacing.
    let t = s.timesteps[item.index] as i64;
    let prev_t = t - (s.params.num_train_timesteps / s.num_inference_steps) as i64;
    let a_t = s.alphas_cumprod[s.train_index(t)?];
    let a_prev = s.alpha_prev(prev_t)?;
    let b_t = 1.0 - a_t;
    let (sa, sb) = (a_t.sqrt(), b_t.sqrt());
    let (sa_prev, dir) = (a_prev.sqrt(), (1.0 - a_prev).sqrt());
    let clip = s.params.clip_sample_range;
    let pred = s.params.prediction;
    for (x, &m) in sample.iter_mut().zip(model_output) {
        let (mut x0, eps) = match pred {
            Prediction::Epsilon => ((*x - sb * m) / sa, m),
            Prediction::Sample => (m, (*x - sa * m) / sb),
            Prediction::VPrediction => (sa * *x - sb * m, sa * m + sb * *x),
        };
        if let Some(r) = clip {
            x0 = x0.clamp(-r, r);
        }
        *x = sa_prev * x0 + dir * eps;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::{Scheduler, SchedulerConfig, SchedulerKind};

    #[test]
    fn leading_trailing_linspace() {
        let mk = |extra: &str| {
            let cfg = SchedulerConfig::from_json_str(&format!(r#"{{"steps_offset": 1 {extra}}}"#))
                .unwrap();
            Scheduler::new(&cfg, SchedulerKind::Ddim)
                .unwrap()
                .schedule(10)
                .unwrap()
        };
        assert_eq!(mk("").timesteps()[..3], [901.0, 801.0, 701.0]);
        let trailing = mk(r#", "timestep_spacing": "trailing""#);
        assert_eq!(trailing.timesteps()[..3], [999.0, 899.0, 799.0]);
        assert_eq!(*trailing.timesteps().last().unwrap(), 99.0);
        let lin = mk(r#", "timestep_spacing": "linspace""#);
        assert_eq!(lin.timesteps()[..3], [999.0, 888.0, 777.0]);
        assert_eq!(*lin.timesteps().last().unwrap(), 0.0);
    }

    #[test]
    fn clean_prediction_lands_on_it_at_the_end() {
        // With sample prediction and set_alpha_to_one, the last step returns the prediction.
        let cfg = SchedulerConfig::from_json_str(
            r#"{"prediction_type": "sample", "clip_sample": false}"#,
        )
        .unwrap();
        let s = Scheduler::new(&cfg, SchedulerKind::Ddim)
            .unwrap()
            .schedule(5)
            .unwrap();
        let mut item = s.start_at(4).unwrap();
        let mut x = vec![3.0f32, -2.0];
        s.step(&mut item, &[0.25, 0.5], &mut x).unwrap();
        assert_eq!(x, vec![0.25, 0.5]);
        assert!(item.is_finished());
    }
}
