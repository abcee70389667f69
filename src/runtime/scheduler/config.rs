//! diffusers' `scheduler/scheduler_config.json` as read from disk.
//!
//! Every key is kept optional so one file can serve any kind, as `Kind.from_config(config)` does;
//! [`SchedulerConfig::resolve`] (in params.rs) applies the chosen kind's defaults.

use std::path::Path;

use serde::{Deserialize, Deserializer};

use super::{Result, SchedulerError, SchedulerKind};

/// The raw config file. Unknown keys are ignored; JSON `null` counts as absent.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct SchedulerConfig {
    #[serde(rename = "_class_name")]
    pub class_name: Option<String>,
    pub num_train_timesteps: Option<usize>,
    #[serde(deserialize_with = "lenient_f64")]
    pub beta_start: Option<f64>,
    #[serde(deserialize_with = "lenient_f64")]
    pub beta_end: Option<f64>,
    pub beta_schedule: Option<String>,
    pub trained_betas: Option<Vec<f64>>,
    pub rescale_betas_zero_snr: Option<bool>,
    pub prediction_type: Option<String>,
    pub timestep_spacing: Option<String>,
    pub steps_offset: Option<i64>,
    pub skip_prk_steps: Option<bool>,
    pub set_alpha_to_one: Option<bool>,
    pub clip_sample: Option<bool>,
    #[serde(deserialize_with = "lenient_f64")]
    pub clip_sample_range: Option<f64>,
    pub thresholding: Option<bool>,
    pub interpolation_type: Option<String>,
    pub use_karras_sigmas: Option<bool>,
    pub use_exponential_sigmas: Option<bool>,
    pub use_beta_sigmas: Option<bool>,
    pub use_lu_lambdas: Option<bool>,
    pub use_flow_sigmas: Option<bool>,
    pub use_dynamic_shifting: Option<bool>,
    pub timestep_type: Option<String>,
    pub final_sigmas_type: Option<String>,
    pub solver_order: Option<usize>,
    pub algorithm_type: Option<String>,
    pub solver_type: Option<String>,
    pub lower_order_final: Option<bool>,
    pub euler_at_final: Option<bool>,
    #[serde(deserialize_with = "lenient_f64")]
    pub lambda_min_clipped: Option<f64>,
    pub variance_type: Option<String>,
    /// Keys diffusers recorded as "left at the default": dropped on load so the loading kind's own
    /// defaults apply (diffusers' `extract_init_dict` does the same).
    #[serde(rename = "_use_default_values")]
    pub use_default_values: Option<Vec<String>>,
}

impl SchedulerConfig {
    /// Parses the file's text. Python's `-Infinity` / `Infinity` / `NaN` tokens (diffusers writes
    /// `lambda_min_clipped: -Infinity`) are accepted.
    pub fn from_json_str(text: &str) -> Result<Self> {
        let mut value: serde_json::Value = serde_json::from_str(&quote_non_finite(text))?;
        if let Some(obj) = value.as_object_mut() {
            let defaults: Vec<String> = obj
                .get("_use_default_values")
                .and_then(|v| v.as_array())
                .map(|a| {
                    a.iter()
                        .filter_map(|k| k.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default();
            for key in defaults {
                obj.remove(&key);
            }
        }
        Ok(serde_json::from_value(value)?)
    }

    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| SchedulerError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_json_str(&text)
    }

    /// The kind named by `_class_name`.
    pub fn class_kind(&self) -> Result<SchedulerKind> {
        match &self.class_name {
            Some(name) => SchedulerKind::from_class_name(name),
            None => Err(SchedulerError::MissingClass),
        }
    }
}

/// Accepts a number, `null`, or the strings `Infinity` / `-Infinity` / `NaN`.
fn lenient_f64<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Option<f64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Num {
        F(f64),
        S(String),
    }
    match Option::<Num>::deserialize(d)? {
        None => Ok(None),
        Some(Num::F(x)) => Ok(Some(x)),
        Some(Num::S(s)) => match s.as_str() {
            "Infinity" => Ok(Some(f64::INFINITY)),
            "-Infinity" => Ok(Some(f64::NEG_INFINITY)),
            "NaN" => Ok(Some(f64::NAN)),
            _ => s.parse().map(Some).map_err(serde::de::Error::custom),
        },
    }
}

/// Wraps Python's non-standard float tokens (outside strings) in quotes so serde_json reads them.
fn quote_non_finite(text: &str) -> std::borrow::Cow<'_, str> {
    if !(text.contains("Infinity") || text.contains("NaN")) {
        return text.into();
    }
    let mut out = String::with_capacity(text.len() + 8);
    let (mut in_str, mut escaped) = (false, false);
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        if in_str {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_str = false;
            }
            rest = &rest[c.len_utf8()..];
            continue;
        }
        if c == '"' {
            in_str = true;
        } else if let Some(tok) = ["-Infinity", "Infinity", "NaN"]
            .into_iter()
            .find(|t| rest.starts_with(t))
        {
            out.push('"');
            out.push_str(tok);
            out.push('"');
            rest = &rest[tok.len()..];
            continue;
        }
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    out.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_infinity_and_default_values_list() {
        let text = r#"{"_class_name": "DPMSolverMultistepScheduler", "lambda_min_clipped": -Infinity,
            "note": "a -Infinity in a string stays", "timestep_spacing": "trailing",
            "_use_default_values": ["timestep_spacing"]}"#;
        let cfg = SchedulerConfig::from_json_str(text).unwrap();
        assert_eq!(cfg.lambda_min_clipped, Some(f64::NEG_INFINITY));
        assert_eq!(cfg.timestep_spacing, None);
        let p = cfg.resolve(SchedulerKind::DpmSolverMultistep).unwrap();
        assert_eq!(p.spacing, super::super::Spacing::Linspace);
    }
}
