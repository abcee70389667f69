//! DPM-Solver++ multistep (Lu et al. 2022), diffusers' `DPMSolverMultistepScheduler` with
//! `algorithm_type = "dpmsolver++"`: DPM++ 2M by default (solver_order 2), also orders 1 and 3.
//!
//! The model output is first converted to a clean-sample prediction x0; the update extrapolates
//! x0 over the last `solver_order` steps in log-SNR time (lambda). The first step of an item has no
//! history and is first order; the last step is first order too (always when the final sigma is 0,
//! and for short schedules when `lower_order_final`), which is what keeps few-step runs stable.

use super::betas::{np_arange, np_interp, np_linspace, np_round, train_sigmas};
use super::params::{Prediction, SchedulerParams, SolverType, Spacing};
use super::{ItemState, Result, Schedule};

/// (timesteps, sigmas) for `n` steps (integer timesteps; sigmas has the final one appended).
pub(super) fn timesteps(p: &SchedulerParams, ac: &[f32], n: usize) -> Result<(Vec<f32>, Vec<f32>)> {
    let train = p.num_train_timesteps;
    // Clip the high-noise end where lambda < lambda_min_clipped (searchsorted over flipped lambdas).
    let clipped = ac
        .iter()
        .rev()
        .map(|&a| a.sqrt().ln() - (1.0 - a).sqrt().ln())
        .filter(|&l| (l as f64) < p.lambda_min_clipped)
        .count();
    let last = train - clipped;
    let t: Vec<i64> = match p.spacing {
        Spacing::Linspace => {
            let mut v: Vec<i64> = np_linspace(0.0, last as f64 - 1.0, n + 1)
                .into_iter()
                .rev()
                .map(|t| np_round(t) as i64)
                .collect();
            v.pop();
            v
        }
        Spacing::Leading => {
            let ratio = (last / (n + 1)) as i64;
            (1..=n as i64)
                .rev()
                .map(|i| i * ratio + p.steps_offset)
                .collect()
        }
        Spacing::Trailing => np_arange(last as f64, 0.0, -(train as f64 / n as f64))
            .into_iter()
            .map(|t| np_round(t) as i64 - 1)
            .collect(),
    };
    let table = train_sigmas(ac);
    let mut sigmas: Vec<f32> = t
        .iter()
        .map(|&t| np_interp(t as f64, &table) as f32)
        .collect();
    sigmas.push(if p.final_sigma_min { table[0] } else { 0.0 });
    Ok((t.into_iter().map(|t| t as f32).collect(), sigmas))
}

/// (alpha_t, sigma_t) of the VP process at noise level sigma.
pub(super) fn alpha_sigma(sigma: f32) -> (f32, f32) {
    let alpha = 1.0 / (sigma * sigma + 1.0).sqrt();
    (alpha, sigma * alpha)
}

/// Log-SNR of noise level sigma, as diffusers computes it (log alpha - log sigma).
fn lambda(alpha: f32, sigma: f32) -> f32 {
    alpha.ln() - sigma.ln()
}

/// One multistep update, in place.
pub(super) fn step(s: &Schedule, item: &mut ItemState, model_output: &[f32], sample: &mut [f32]) {
    let p = &*s.params;
    let i = item.index;
    let len = s.timesteps.len();
    let short = p.lower_order_final && len < 15;
    let lower_final = i == len - 1 && (p.euler_at_final || short || !p.final_sigma_min);
    let lower_second = i + 2 == len && short;

    // Convert to x0 and push into the history (oldest first, at most solver_order kept).
    let (alpha_s0, sigma_s0) = alpha_sigma(s.sigmas[i]);
    let mut x0 = if item.history.len() >= p.solver_order {
        item.history.remove(0)
    } else {
        Vec::new()
    };
    x0.clear();
    x0.extend(
        sample
            .iter()
            .zip(model_output)
            .map(|(&x, &m)| match p.prediction {
                Prediction::Epsilon => (x - sigma_s0 * m) / alpha_s0,
                Prediction::Sample => m,
                Prediction::VPrediction => alpha_s0 * x - sigma_s0 * m,
            }),
    );
    item.history.push(x0);
    let lower_order_nums = item.steps_taken().min(p.solver_order);

    let (alpha_t, sigma_t) = alpha_sigma(s.sigmas[i + 1]);
    let lambda_t = lambda(alpha_t, sigma_t);
    let lambda_s0 = lambda(alpha_s0, sigma_s0);
    let h = lambda_t - lambda_s0;
    let c_x = sigma_t / sigma_s0;
    let c_d0 = alpha_t * ((-h).exp() - 1.0);
    let m = &item.history;
    let m0 = &m[m.len() - 1];

    if p.solver_order == 1 || lower_order_nums < 1 || lower_final {
        for (x, &d0) in sample.iter_mut().zip(m0) {
            *x = c_x * *x - c_d0 * d0;
        }
    } else if p.solver_order == 2 || lower_order_nums < 2 || lower_second {
        let m1 = &m[m.len() - 2];
        let (alpha_s1, sigma_s1) = alpha_sigma(s.sigmas[i - 1]);
        let h0 = lambda_s0 - lambda(alpha_s1, sigma_s1);
        let inv_r0 = 1.0 / (h0 / h);
        let c_d1 = match p.solver_type {
            SolverType::Midpoint => -(0.5 * c_d0),
            SolverType::Heun => alpha_t * (((-h).exp() - 1.0) / h + 1.0),
        };
        for ((x, &a), &b) in sample.iter_mut().zip(m0).zip(m1) {
            let d1 = inv_r0 * (a - b);
            *x = c_x * *x - c_d0 * a + c_d1 * d1;
        }
    } else {
        let (m1, m2) = (&m[m.len() - 2], &m[m.len() - 3]);
        let (alpha_s1, sigma_s1) = alpha_sigma(s.sigmas[i - 1]);
        let (alpha_s2, sigma_s2) = alpha_sigma(s.sigmas[i - 2]);
        let lambda_s1 = lambda(alpha_s1, sigma_s1);
        let (h0, h1) = (
            lambda_s0 - lambda_s1,
            lambda_s1 - lambda(alpha_s2, sigma_s2),
        );
        let (r0, r1) = (h0 / h, h1 / h);
        let (inv_r0, inv_r1) = (1.0 / r0, 1.0 / r1);
        let (w1, w2) = (r0 / (r0 + r1), 1.0 / (r0 + r1));
        let e = (-h).exp() - 1.0;
        let c_d1 = alpha_t * (e / h + 1.0);
        let c_d2 = alpha_t * ((e + h) / (h * h) - 0.5);
        for (((x, &a), &b), &c) in sample.iter_mut().zip(m0).zip(m1).zip(m2) {
            let (d1_0, d1_1) = (inv_r0 * (a - b), inv_r1 * (b - c));
            let d1 = d1_0 + w1 * (d1_0 - d1_1);
            let d2 = w2 * (d1_0 - d1_1);
            *x = c_x * *x - c_d0 * a + c_d1 * d1 - c_d2 * d2;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Scheduler, SchedulerConfig, SchedulerKind};

    fn dpm(extra: &str) -> Scheduler {
        let cfg = SchedulerConfig::from_json_str(&format!(
            r#"{{"_class_name": "DPMSolverMultistepScheduler", "beta_schedule": "scaled_linear",
                "beta_start": 0.00085, "beta_end": 0.012 {extra}}}"#
        ))
        .unwrap();
        Scheduler::new(&cfg, SchedulerKind::DpmSolverMultistep).unwrap()
    }

    #[test]
    fn linspace_and_leading_lists() {
        let s = dpm("").schedule(10).unwrap();
        assert_eq!(s.timesteps()[..3], [999.0, 899.0, 799.0]);
        assert_eq!(*s.timesteps().last().unwrap(), 100.0);
        let s = dpm(r#", "timestep_spacing": "leading", "steps_offset": 1"#)
            .schedule(10)
            .unwrap();
        assert_eq!(s.timesteps()[..2], [901.0, 811.0]);
        assert_eq!(*s.timesteps().last().unwrap(), 91.0);
    }

    #[test]
    fn sample_prediction_is_exact_at_the_end() {
        // Final sigma 0: the last (first-order) step returns the x0 prediction itself.
        let s = dpm(r#", "prediction_type": "sample""#).schedule(3).unwrap();
        let mut item = s.start(1.0).unwrap();
        let mut x = vec![1.0f32, 2.0];
        for _ in 0..3 {
            s.step(&mut item, &[0.25, -0.5], &mut x).unwrap();
        }
        assert!(
            (x[0] - 0.25).abs() < 1e-6 && (x[1] + 0.5).abs() < 1e-6,
            "{x:?}"
        );
    }

    #[test]
    fn lambda_clipping_shortens_the_top() {
        // The cosine schedule's last timesteps have lambda far below -5.1.
        let cos = r#", "beta_schedule": "squaredcos_cap_v2""#;
        assert_eq!(dpm(cos).schedule(10).unwrap().timesteps()[0], 999.0);
        let s = dpm(&format!(r#"{cos}, "lambda_min_clipped": -5.1"#))
            .schedule(10)
            .unwrap();
        assert!(s.timesteps()[0] < 999.0, "{:?}", s.timesteps());
    }
}
