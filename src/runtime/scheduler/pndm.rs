//! PNDM in PLMS mode (`skip_prk_steps = true`), Stable Diffusion 1.x's default scheduler.
//!
//! PLMS is a linear multistep method: it mixes up to four previous model outputs. Its very first
//! step has no history, so diffusers repeats one timestep: the second call re-evaluates the model at
//! the next timestep and redoes the first step with the average of both outputs (a Heun-like
//! start). That repeated entry is why an img2img run with PNDM makes one more UNet call than DDIM.
//! diffusers keys this on its step counter, not on the timestep, so a truncated (img2img) run does
//! its Heun start wherever it starts; reproduced here through the item's own counter.

use super::betas::{np_arange, np_linspace, np_round};
use super::params::{Prediction, SchedulerParams, Spacing};
use super::{ItemState, Result, Schedule};

/// Timesteps (as fed to the UNet) for `n` inference steps, with PLMS's repeated entry.
pub(super) fn timesteps(p: &SchedulerParams, n: usize) -> Result<Vec<f32>> {
    let train = p.num_train_timesteps;
    // Ascending, as diffusers' `_timesteps`.
    let base: Vec<i64> = match p.spacing {
        Spacing::Linspace => np_linspace(0.0, (train - 1) as f64, n)
            .into_iter()
            .map(|t| np_round(t) as i64)
            .collect(),
        Spacing::Leading => {
            let ratio = (train / n) as i64;
            (0..n as i64).map(|i| i * ratio + p.steps_offset).collect()
        }
        Spacing::Trailing => {
            let ratio = train as f64 / n as f64;
            let mut t: Vec<i64> = np_arange(train as f64, 0.0, -ratio)
                .into_iter()
                .map(|t| np_round(t) as i64 - 1)
                .collect();
            t.reverse();
            t
        }
    };
    // plms = concat(_t[:-1], _t[-2:-1], _t[-1:]) reversed.
    let len = base.len();
    let mut plms: Vec<i64> = base[..len - 1].to_vec();
    if len >= 2 {
        plms.push(base[len - 2]);
    }
    plms.push(base[len - 1]);
    plms.reverse();
    super::ddim::check_range(p, &plms)?;
    Ok(plms.into_iter().map(|t| t as f32).collect())
}

/// One PLMS step (diffusers' `step_plms` + `_get_prev_sample`).
pub(super) fn step(
    s: &Schedule,
    item: &mut ItemState,
    model_output: &[f32],
    sample: &mut [f32],
) -> Result<()> {
    let ratio = (s.params.num_train_timesteps / s.num_inference_steps) as i64;
    let counter = item.steps_taken();
    let mut t = s.timesteps[item.index] as i64;
    let mut prev_t = t - ratio;
    let ets = &mut item.history;
    if counter != 1 {
        // Keep the last three, append the new one (reusing the dropped buffer).
        let mut buf = if ets.len() > 3 {
            ets.remove(0)
        } else {
            Vec::new()
        };
        buf.clear();
        buf.extend_from_slice(model_output);
        ets.push(buf);
    } else {
        // The repeated timestep: redo the first step (t + ratio -> t) with the averaged output.
        prev_t = t;
        t += ratio;
    }

    let mut combined = vec![0.0f32; sample.len()];
    match ets.len() {
        1 if counter == 0 => {
            combined.copy_from_slice(model_output);
            item.saved_sample = sample.to_vec();
        }
        1 => {
            let e1 = &ets[0];
            for (c, (m, a)) in combined.iter_mut().zip(model_output.iter().zip(e1)) {
                *c = (m + a) / 2.0;
            }
            sample.copy_from_slice(&item.saved_sample);
            item.saved_sample = Vec::new();
        }
        2 => {
            let (e2, e1) = (&ets[0], &ets[1]);
            for i in 0..combined.len() {
                combined[i] = (3.0 * e1[i] - e2[i]) / 2.0;
            }
        }
        3 => {
            let (e3, e2, e1) = (&ets[0], &ets[1], &ets[2]);
            for i in 0..combined.len() {
                combined[i] = (23.0 * e1[i] - 16.0 * e2[i] + 5.0 * e3[i]) / 12.0;
            }
        }
        _ => {
            let (e4, e3, e2, e1) = (&ets[0], &ets[1], &ets[2], &ets[3]);
            let w = (1.0f64 / 24.0) as f32;
            for i in 0..combined.len() {
                combined[i] = w * (55.0 * e1[i] - 59.0 * e2[i] + 37.0 * e3[i] - 9.0 * e4[i]);
            }
        }
    }
    prev_sample(s, t, prev_t, &mut combined, sample)
}

/// PNDM's update from `t` to `prev_t` (eq. 9 of the PNDM paper), in place on `sample`.
fn prev_sample(
    s: &Schedule,
    t: i64,
    prev_t: i64,
    model_output: &mut [f32],
    sample: &mut [f32],
) -> Result<()> {
    let a_t = s.alphas_cumprod[s.train_index(t)?];
    let a_prev = s.alpha_prev(prev_t)?;
    let (b_t, b_prev) = (1.0 - a_t, 1.0 - a_prev);
    if s.params.prediction == Prediction::VPrediction {
        let (sa, sb) = (a_t.sqrt(), b_t.sqrt());
        for (m, x) in model_output.iter_mut().zip(sample.iter()) {
            *m = sa * *m + sb * *x;
        }
    }
    let sample_coeff = (a_prev / a_t).sqrt();
    let denom = a_t * b_prev.sqrt() + (a_t * b_t * a_prev).sqrt();
    let diff = a_prev - a_t;
    for (x, m) in sample.iter_mut().zip(model_output.iter()) {
        *x = sample_coeff * *x - diff * *m / denom;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::{Scheduler, SchedulerConfig};

    fn sd15() -> Scheduler {
        let cfg = SchedulerConfig::from_json_str(
            r#"{"_class_name": "PNDMScheduler", "beta_end": 0.012, "beta_schedule": "scaled_linear",
                "beta_start": 0.00085, "set_alpha_to_one": false, "skip_prk_steps": true, "steps_offset": 1}"#,
        )
        .unwrap();
        Scheduler::from_config(&cfg).unwrap()
    }

    #[test]
    fn repeats_the_second_timestep() {
        let s = sd15().schedule(20).unwrap();
        assert_eq!(s.timesteps().len(), 21);
        assert_eq!(&s.timesteps()[..4], &[951.0, 901.0, 901.0, 851.0]);
        assert_eq!(*s.timesteps().last().unwrap(), 1.0);
        assert_eq!(s.timesteps_for(0.5).unwrap()[0], 501.0);
        assert_eq!(s.timesteps_for(0.5).unwrap().len(), 11);
    }

    #[test]
    fn second_step_restarts_from_the_saved_sample() {
        let s = sd15().schedule(10).unwrap();
        let mut item = s.start(1.0).unwrap();
        let mut x = vec![0.5f32; 4];
        s.step(&mut item, &[0.1; 4], &mut x).unwrap();
        let after_first = x.clone();
        // Same model output again: the average equals it, so step 2 reproduces step 1's result.
        s.step(&mut item, &[0.1; 4], &mut x).unwrap();
        assert_eq!(x, after_first);
        assert_eq!(item.steps_taken(), 2);
    }
}
