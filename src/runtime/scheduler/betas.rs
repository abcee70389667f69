//! Noise tables (betas, alphas_cumprod, sigmas) and the numpy helpers the timestep lists are built
//! with, reproducing diffusers' float32 / float64 mix so that the results agree to the last bits.

use super::params::{BetaSchedule, SchedulerParams};
use super::{Result, SchedulerError, SchedulerKind};

/// `alphas_cumprod` (float32) for the config, including zero-terminal-SNR rescaling.
pub(super) fn alphas_cumprod(p: &SchedulerParams) -> Result<Vec<f32>> {
    let n = p.num_train_timesteps;
    let mut betas: Vec<f32> = match &p.beta_schedule {
        BetaSchedule::Linear { start, end } => torch_linspace_f32(*start, *end, n),
        BetaSchedule::ScaledLinear { start, end } => {
            torch_linspace_f32(start.sqrt(), end.sqrt(), n)
                .into_iter()
                .map(|b| b * b)
                .collect()
        }
        BetaSchedule::SquaredCosCapV2 => squaredcos_cap_v2(n),
        BetaSchedule::Trained(b) => b.iter().map(|&x| x as f32).collect(),
    };
    if p.rescale_betas_zero_snr {
        betas = rescale_zero_terminal_snr(&betas);
    }
    if let Some(i) = betas.iter().position(|b| !(0.0..=1.0).contains(b)) {
        return Err(SchedulerError::Invalid {
            kind: p.kind,
            option: "betas",
            why: format!("beta[{i}] = {} is outside [0, 1]", betas[i]),
        });
    }
    let mut ac = cumprod(betas.iter().map(|&b| 1.0f32 - b));
    // diffusers pins the last value away from 0 so Euler/DPM sigmas stay finite.
    if p.rescale_betas_zero_snr
        && matches!(
            p.kind,
            SchedulerKind::EulerDiscrete | SchedulerKind::DpmSolverMultistep
        )
    {
        *ac.last_mut().expect("n >= 2") = 2f32.powi(-24);
    }
    Ok(ac)
}

/// torch's CPU cumprod accumulates float32 in double and stores float32.
fn cumprod(alphas: impl Iterator<Item = f32>) -> Vec<f32> {
    let mut acc = 1.0f64;
    alphas
        .map(|a| {
            acc *= a as f64;
            acc as f32
        })
        .collect()
}

/// `torch.linspace(start, end, n, dtype=float32)`: float32 step, filled from both ends.
fn torch_linspace_f32(start: f64, end: f64, n: usize) -> Vec<f32> {
    let (s, e) = (start as f32, end as f32);
    if n == 1 {
        return vec![s];
    }
    let step = (e - s) / (n - 1) as f32;
    let half = n / 2;
    (0..n)
        .map(|i| {
            if i < half {
                s + step * i as f32
            } else {
                e - step * (n - 1 - i) as f32
            }
        })
        .collect()
}

/// Cosine schedule (Nichol & Dhariwal), computed in double, stored float32, capped at 0.999.
fn squaredcos_cap_v2(n: usize) -> Vec<f32> {
    let alpha_bar = |t: f64| {
        ((t + 0.008) / 1.008 * std::f64::consts::PI / 2.0)
            .cos()
            .powi(2)
    };
    (0..n)
        .map(|i| {
            let (t1, t2) = (i as f64 / n as f64, (i + 1) as f64 / n as f64);
            (1.0 - alpha_bar(t2) / alpha_bar(t1)).min(0.999) as f32
        })
        .collect()
}

/// Rescales betas to zero terminal SNR (Lin et al. 2023), as diffusers' `rescale_zero_terminal_snr`.
fn rescale_zero_terminal_snr(betas: &[f32]) -> Vec<f32> {
    let ac = cumprod(betas.iter().map(|&b| 1.0f32 - b));
    let mut sqrt: Vec<f32> = ac.iter().map(|a| a.sqrt()).collect();
    let (first, last) = (sqrt[0], sqrt[sqrt.len() - 1]);
    let scale = first / (first - last);
    for s in &mut sqrt {
        *s -= last;
        *s *= scale;
    }
    let bar: Vec<f32> = sqrt.iter().map(|s| s * s).collect();
    let mut out = Vec::with_capacity(bar.len());
    out.push(1.0 - bar[0]);
    out.extend(bar.windows(2).map(|w| 1.0 - w[1] / w[0]));
    out
}

/// Sigma per train timestep, `((1 - ac) / ac) ** 0.5` in float32.
pub(super) fn train_sigmas(ac: &[f32]) -> Vec<f32> {
    ac.iter().map(|&a| ((1.0 - a) / a).sqrt()).collect()
}

/// `np.linspace(start, stop, num)` (float64, last value exactly `stop`).
pub(super) fn np_linspace(start: f64, stop: f64, num: usize) -> Vec<f64> {
    if num == 1 {
        return vec![start];
    }
    let step = (stop - start) / (num - 1) as f64;
    let mut v: Vec<f64> = (0..num).map(|i| i as f64 * step + start).collect();
    v[num - 1] = stop;
    v
}

/// `np.arange(start, stop, step)` for a float step (length `ceil((stop - start) / step)`).
pub(super) fn np_arange(start: f64, stop: f64, step: f64) -> Vec<f64> {
    let len = ((stop - start) / step).ceil().max(0.0) as usize;
    (0..len).map(|i| start + i as f64 * step).collect()
}

/// `np.interp(x, arange(len(fp)), fp)` in float64.
pub(super) fn np_interp(x: f64, fp: &[f32]) -> f64 {
    let last = fp.len() - 1;
    if x <= 0.0 {
        return fp[0] as f64;
    }
    if x >= last as f64 {
        return fp[last] as f64;
    }
    let j = x.floor() as usize;
    let (lo, hi) = (fp[j] as f64, fp[j + 1] as f64);
    if x == j as f64 {
        return lo;
    }
    (hi - lo) * (x - j as f64) + lo
}

/// numpy rounds half to even.
pub(super) fn np_round(x: f64) -> f64 {
    x.round_ties_even()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linspace_and_arange_match_numpy_shapes() {
        assert_eq!(np_linspace(0.0, 999.0, 4), vec![0.0, 333.0, 666.0, 999.0]);
        assert_eq!(
            np_arange(1000.0, 0.0, -250.0),
            vec![1000.0, 750.0, 500.0, 250.0]
        );
        let f = torch_linspace_f32(0.0001, 0.02, 1000);
        assert_eq!((f[0], f[999]), (0.0001, 0.02));
        assert_eq!(np_round(2.5), 2.0);
    }

    #[test]
    fn interp_is_linear_between_integers() {
        let fp = [0.0f32, 1.0, 4.0];
        assert_eq!(np_interp(0.5, &fp), 0.5);
        assert_eq!(np_interp(1.25, &fp), 1.75);
        assert_eq!(np_interp(2.0, &fp), 4.0);
    }

    #[test]
    fn zero_snr_rescale_ends_at_zero() {
        let b = torch_linspace_f32(0.00085f64.sqrt(), 0.012f64.sqrt(), 1000)
            .into_iter()
            .map(|b| b * b)
            .collect::<Vec<_>>();
        let r = rescale_zero_terminal_snr(&b);
        let ac = cumprod(r.iter().map(|&b| 1.0 - b));
        assert_eq!(*ac.last().unwrap(), 0.0);
        assert!((ac[0] - (1.0 - b[0])).abs() < 1e-6);
    }
}
