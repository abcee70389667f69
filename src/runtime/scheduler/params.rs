//! One scheduler kind's parameters, resolved from a [`SchedulerConfig`] with that kind's
//! defaults. The defaults differ between kinds (DDIM clips samples and sets alpha to one, Euler and
//! DPM space timesteps with linspace, PNDM runs PRK steps unless told to skip them), which is why
//! the raw config keeps every key optional.

use super::config::SchedulerConfig;
use super::{Result, SchedulerError, SchedulerKind};

/// How betas are made.
#[derive(Debug, Clone, PartialEq)]
pub enum BetaSchedule {
    Linear { start: f64, end: f64 },
    ScaledLinear { start: f64, end: f64 },
    SquaredCosCapV2,
    Trained(Vec<f64>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prediction {
    Epsilon,
    VPrediction,
    /// The model predicts the clean sample (`sample` / `original_sample`).
    Sample,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spacing {
    Leading,
    Trailing,
    Linspace,
}

/// DPM-Solver's second-order formula.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SolverType {
    Midpoint,
    Heun,
}

/// One kind's parameters after defaults and validation. Fields a kind does not use hold its
/// neutral value (e.g. `solver_order` 1 outside DPM).
#[derive(Debug, Clone, PartialEq)]
pub struct SchedulerParams {
    pub kind: SchedulerKind,
    pub num_train_timesteps: usize,
    pub beta_schedule: BetaSchedule,
    pub rescale_betas_zero_snr: bool,
    pub prediction: Prediction,
    pub spacing: Spacing,
    pub steps_offset: i64,
    /// PNDM / DDIM: alpha_cumprod past the last step is 1 (else alphas_cumprod[0]).
    pub set_alpha_to_one: bool,
    /// DDIM: clamp the predicted clean sample to ±range.
    pub clip_sample_range: Option<f32>,
    /// Euler / DPM: final sigma is sigma_min (`final_sigmas_type` "sigma_min") instead of 0.
    pub final_sigma_min: bool,
    pub solver_order: usize,
    pub solver_type: SolverType,
    pub lower_order_final: bool,
    pub euler_at_final: bool,
    pub lambda_min_clipped: f64,
}

impl SchedulerConfig {
    /// Applies `kind`'s defaults and rejects what this module does not implement.
    pub fn resolve(&self, kind: SchedulerKind) -> Result<SchedulerParams> {
        use SchedulerKind::*;
        let unsupported = |option: &'static str, value: &dyn std::fmt::Debug, why: &'static str| {
            SchedulerError::Unsupported {
                kind,
                option,
                value: format!("{value:?}"),
                why,
            }
        };
        let invalid =
            |option: &'static str, why: String| SchedulerError::Invalid { kind, option, why };

        let num_train_timesteps = self.num_train_timesteps.unwrap_or(1000);
        if num_train_timesteps < 2 {
            return Err(invalid(
                "num_train_timesteps",
                format!("{num_train_timesteps} < 2"),
            ));
        }
        let (start, end) = (
            self.beta_start.unwrap_or(0.0001),
            self.beta_end.unwrap_or(0.02),
        );
        let beta_schedule = match (&self.trained_betas, self.beta_schedule.as_deref()) {
            (Some(b), _) => {
                if b.len() != num_train_timesteps {
                    return Err(invalid(
                        "trained_betas",
                        format!(
                            "{} values for {num_train_timesteps} train timesteps",
                            b.len()
                        ),
                    ));
                }
                BetaSchedule::Trained(b.clone())
            }
            (None, None | Some("linear")) => BetaSchedule::Linear { start, end },
            (None, Some("scaled_linear")) => BetaSchedule::ScaledLinear { start, end },
            (None, Some("squaredcos_cap_v2")) => BetaSchedule::SquaredCosCapV2,
            (None, Some(other)) => {
                return Err(unsupported(
                    "beta_schedule",
                    &other,
                    "use linear, scaled_linear or squaredcos_cap_v2",
                ))
            }
        };
        // PNDM has no zero-SNR option: diffusers ignores the key there.
        let rescale_betas_zero_snr = kind != Pndm && self.rescale_betas_zero_snr.unwrap_or(false);

        let prediction = match self.prediction_type.as_deref().unwrap_or("epsilon") {
            "epsilon" => Prediction::Epsilon,
            "v_prediction" => Prediction::VPrediction,
            "sample" if kind != Pndm => Prediction::Sample,
            "original_sample" if kind == EulerDiscrete => Prediction::Sample,
            other => {
                return Err(unsupported(
                    "prediction_type",
                    &other,
                    "not available for this scheduler",
                ))
            }
        };

        let default_spacing = match kind {
            Pndm | Ddim => "leading",
            EulerDiscrete | DpmSolverMultistep => "linspace",
        };
        let spacing = match self.timestep_spacing.as_deref().unwrap_or(default_spacing) {
            "leading" => Spacing::Leading,
            "trailing" => Spacing::Trailing,
            "linspace" => Spacing::Linspace,
            other => {
                return Err(unsupported(
                    "timestep_spacing",
                    &other,
                    "use leading, trailing or linspace",
                ))
            }
        };

        let mut p = SchedulerParams {
            kind,
            num_train_timesteps,
            beta_schedule,
            rescale_betas_zero_snr,
            prediction,
            spacing,
            steps_offset: self.steps_offset.unwrap_or(0),
            set_alpha_to_one: false,
            clip_sample_range: None,
            final_sigma_min: false,
            solver_order: 1,
            solver_type: SolverType::Midpoint,
            lower_order_final: false,
            euler_at_final: false,
            lambda_min_clipped: f64::NEG_INFINITY,
        };

        match kind {
            Pndm => {
                if !self.skip_prk_steps.unwrap_or(false) {
                    return Err(unsupported(
                        "skip_prk_steps",
                        &self.skip_prk_steps,
                        "only PLMS (skip_prk_steps = true, as Stable Diffusion uses) is implemented",
                    ));
                }
                p.set_alpha_to_one = self.set_alpha_to_one.unwrap_or(false);
            }
            Ddim => {
                p.set_alpha_to_one = self.set_alpha_to_one.unwrap_or(true);
                if self.thresholding.unwrap_or(false) {
                    return Err(unsupported(
                        "thresholding",
                        &true,
                        "dynamic thresholding is not supported",
                    ));
                }
                if self.clip_sample.unwrap_or(true) {
                    let r = self.clip_sample_range.unwrap_or(1.0);
                    if r.is_nan() || r <= 0.0 {
                        return Err(invalid("clip_sample_range", format!("{r} is not positive")));
                    }
                    p.clip_sample_range = Some(r as f32);
                }
            }
            EulerDiscrete => {
                if let Some(t) = self
                    .interpolation_type
                    .as_deref()
                    .filter(|t| *t != "linear")
                {
                    return Err(unsupported(
                        "interpolation_type",
                        &t,
                        "only linear is implemented",
                    ));
                }
                if let Some(t) = self.timestep_type.as_deref().filter(|t| *t != "discrete") {
                    return Err(unsupported(
                        "timestep_type",
                        &t,
                        "only discrete is implemented",
                    ));
                }
                self.reject_sigma_variants(kind, false)?;
                p.final_sigma_min = self.final_sigma_min(kind)?;
            }
            DpmSolverMultistep => {
                match self.algorithm_type.as_deref().unwrap_or("dpmsolver++") {
                    // diffusers maps the removed "deis" to dpmsolver++.
                    "dpmsolver++" | "deis" => {}
                    other => {
                        return Err(unsupported(
                            "algorithm_type",
                            &other,
                            "only dpmsolver++ is implemented",
                        ))
                    }
                }
                p.solver_type = match self.solver_type.as_deref().unwrap_or("midpoint") {
                    // diffusers maps these UniPC/DEIS names to midpoint.
                    "midpoint" | "logrho" | "bh1" | "bh2" => SolverType::Midpoint,
                    "heun" => SolverType::Heun,
                    other => {
                        return Err(unsupported("solver_type", &other, "use midpoint or heun"))
                    }
                };
                p.solver_order = self.solver_order.unwrap_or(2);
                if !(1..=3).contains(&p.solver_order) {
                    return Err(unsupported(
                        "solver_order",
                        &p.solver_order,
                        "use 1, 2 or 3",
                    ));
                }
                if self.thresholding.unwrap_or(false) {
                    return Err(unsupported(
                        "thresholding",
                        &true,
                        "dynamic thresholding is not supported",
                    ));
                }
                // Only the learned kinds change anything (a channel split); DDPM's fixed_* are ignored.
                if let Some(v) = self
                    .variance_type
                    .as_deref()
                    .filter(|v| v.starts_with("learned"))
                {
                    return Err(unsupported(
                        "variance_type",
                        &v,
                        "learned variance is not supported",
                    ));
                }
                self.reject_sigma_variants(kind, true)?;
                p.final_sigma_min = self.final_sigma_min(kind)?;
                p.lower_order_final = self.lower_order_final.unwrap_or(true);
                p.euler_at_final = self.euler_at_final.unwrap_or(false);
                p.lambda_min_clipped = self.lambda_min_clipped.unwrap_or(f64::NEG_INFINITY);
                if p.lambda_min_clipped.is_nan() {
                    return Err(invalid("lambda_min_clipped", "NaN".into()));
                }
            }
        }
        Ok(p)
    }

    fn reject_sigma_variants(&self, kind: SchedulerKind, dpm: bool) -> Result<()> {
        let mut flags = vec![
            ("use_karras_sigmas", self.use_karras_sigmas),
            ("use_exponential_sigmas", self.use_exponential_sigmas),
            ("use_beta_sigmas", self.use_beta_sigmas),
        ];
        if dpm {
            flags.push(("use_lu_lambdas", self.use_lu_lambdas));
            flags.push(("use_flow_sigmas", self.use_flow_sigmas));
            flags.push(("use_dynamic_shifting", self.use_dynamic_shifting));
        }
        for (option, value) in flags {
            if value.unwrap_or(false) {
                return Err(SchedulerError::Unsupported {
                    kind,
                    option,
                    value: "true".into(),
                    why: "only the plain (interpolated) sigma schedule is implemented",
                });
            }
        }
        Ok(())
    }

    fn final_sigma_min(&self, kind: SchedulerKind) -> Result<bool> {
        match self.final_sigmas_type.as_deref().unwrap_or("zero") {
            "zero" => Ok(false),
            "sigma_min" => Ok(true),
            other => Err(SchedulerError::Unsupported {
                kind,
                option: "final_sigmas_type",
                value: format!("{other:?}"),
                why: "use zero or sigma_min",
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SD15: &str = r#"{
      "_class_name": "PNDMScheduler", "_diffusers_version": "0.6.0",
      "beta_end": 0.012, "beta_schedule": "scaled_linear", "beta_start": 0.00085,
      "num_train_timesteps": 1000, "set_alpha_to_one": false, "skip_prk_steps": true,
      "steps_offset": 1, "trained_betas": null, "clip_sample": false
    }"#;

    #[test]
    fn reads_sd15_and_applies_per_kind_defaults() {
        let cfg = SchedulerConfig::from_json_str(SD15).unwrap();
        assert_eq!(cfg.class_kind().unwrap(), SchedulerKind::Pndm);
        let pndm = cfg.resolve(SchedulerKind::Pndm).unwrap();
        assert_eq!(pndm.spacing, Spacing::Leading);
        assert_eq!(
            pndm.beta_schedule,
            BetaSchedule::ScaledLinear {
                start: 0.00085,
                end: 0.012
            }
        );
        // DDIM keeps the file's clip_sample false and set_alpha_to_one false.
        let ddim = cfg.resolve(SchedulerKind::Ddim).unwrap();
        assert_eq!(ddim.clip_sample_range, None);
        assert!(!ddim.set_alpha_to_one);
        // Euler's own default spacing applies when the file has none.
        assert_eq!(
            cfg.resolve(SchedulerKind::EulerDiscrete).unwrap().spacing,
            Spacing::Linspace
        );
        let dpm = cfg.resolve(SchedulerKind::DpmSolverMultistep).unwrap();
        assert_eq!((dpm.solver_order, dpm.lower_order_final), (2, true));
    }

    #[test]
    fn rejects_what_is_not_implemented() {
        let prk = SchedulerConfig::from_json_str(r#"{"_class_name": "PNDMScheduler"}"#).unwrap();
        let err = prk.resolve(SchedulerKind::Pndm).unwrap_err();
        assert!(err.to_string().contains("skip_prk_steps"), "{err}");
        let ddpm = SchedulerConfig::from_json_str(r#"{"_class_name": "DDPMScheduler"}"#).unwrap();
        assert!(matches!(
            ddpm.class_kind(),
            Err(SchedulerError::UnsupportedClass(_))
        ));
        // ... but any supported kind can still read it.
        assert!(ddpm.resolve(SchedulerKind::Ddim).is_ok());
        let karras = SchedulerConfig::from_json_str(r#"{"use_karras_sigmas": true}"#).unwrap();
        assert!(karras.resolve(SchedulerKind::EulerDiscrete).is_err());
        assert!(
            karras.resolve(SchedulerKind::Ddim).is_ok(),
            "DDIM has no such option"
        );
        let sde =
            SchedulerConfig::from_json_str(r#"{"algorithm_type": "sde-dpmsolver++"}"#).unwrap();
        assert!(sde.resolve(SchedulerKind::DpmSolverMultistep).is_err());
        let bad = SchedulerConfig::from_json_str(r#"{"beta_schedule": "sigmoid"}"#).unwrap();
        assert!(bad.resolve(SchedulerKind::Ddim).is_err());
        let vpndm = SchedulerConfig::from_json_str(
            r#"{"prediction_type": "sample", "skip_prk_steps": true}"#,
        )
        .unwrap();
        assert!(vpndm.resolve(SchedulerKind::Pndm).is_err());
        assert!(vpndm.resolve(SchedulerKind::Ddim).is_ok());
    }
}
