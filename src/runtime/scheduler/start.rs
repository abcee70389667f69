//! Where an img2img item starts. One rule serves the engine's guidance levels (strength
//! 1 − λ, λ in per mille) and diffusers-style strengths: diffusers' `get_timesteps`,
//! `init_timestep = min(int(steps * strength), steps)`, `t_start = max(steps - init_timestep,
//! 0)`, computed in exact integers over thousandths. A double product can land just below an
//! integer (`100 * 0.29` is 28.999…) and truncate a step away; thousandths never do.

use super::{ItemState, Result, Schedule, SchedulerError};

/// How many of `steps` inference steps img2img runs at strength `strength_per_mille` / 1000:
/// the last ⌊steps · strength⌋ (strengths above 1000 count as 1000).
pub fn img2img_steps(steps: usize, strength_per_mille: u16) -> usize {
    steps * usize::from(strength_per_mille.min(1000)) / 1000
}

/// The first inference step img2img runs at strength `strength_per_mille` / 1000 (diffusers'
/// `t_start`); `steps` when it runs none.
pub fn img2img_first_step(steps: usize, strength_per_mille: u16) -> usize {
    steps - img2img_steps(steps, strength_per_mille)
}

impl Schedule {
    /// The index in [`Schedule::timesteps`] where an item at strength `strength_per_mille` /
    /// 1000 starts: [`img2img_first_step`] times the scheduler's order. Strength 1000 is the
    /// full list; a strength that leaves no step is an error.
    pub fn start_index_per_mille(&self, strength_per_mille: u16) -> Result<usize> {
        let n = self.num_inference_steps;
        let start = img2img_first_step(n, strength_per_mille) * self.order();
        // No step at all (diffusers' SD img2img would still run PNDM's leftover entry, or fail).
        if img2img_steps(n, strength_per_mille) == 0 || start >= self.timesteps.len() {
            return Err(SchedulerError::NoSteps {
                strength: f64::from(strength_per_mille) / 1000.0,
                steps: n,
            });
        }
        Ok(start)
    }

    /// As [`Schedule::start_index_per_mille`], for a strength in [0, 1] given in steps of 0.001
    /// (`1.0 - 0.7` is accepted as 0.3).
    pub fn start_index(&self, strength: f64) -> Result<usize> {
        let thousandths = strength * 1000.0;
        let per_mille = thousandths.round();
        if !(0.0..=1000.0).contains(&per_mille) || (thousandths - per_mille).abs() > 1e-6 {
            return Err(SchedulerError::InvalidStrength(strength));
        }
        self.start_index_per_mille(per_mille as u16)
    }

    /// The timesteps an item starting at `strength` runs through (diffusers' truncated list).
    pub fn timesteps_for(&self, strength: f64) -> Result<&[f32]> {
        Ok(&self.timesteps[self.start_index(strength)?..])
    }

    /// A fresh item starting at `strength` (1.0: text-to-image or full img2img).
    pub fn start(&self, strength: f64) -> Result<ItemState> {
        self.start_at(self.start_index(strength)?)
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Scheduler, SchedulerConfig, SchedulerKind};
    use super::*;

    #[test]
    fn img2img_runs_the_last_floor_of_steps_times_strength() {
        // (steps, λ per mille, diffusers' t_start for strength 1 − λ).
        for (steps, level, t_start) in [
            (50, 0, 0),
            (50, 100, 5),
            (50, 500, 25),
            (50, 999, 50),
            (25, 500, 13),
            (7, 700, 5),
        ] {
            assert_eq!(
                img2img_first_step(steps, 1000 - level),
                t_start,
                "T = {steps}, λ = {level}‰"
            );
        }
        // Where doubles would truncate a step away: int(100 * 0.29) is 28 in Python.
        assert_eq!(img2img_steps(100, 290), 29);
        assert_eq!(img2img_steps(10, 1500), 10);
    }

    #[test]
    fn schedules_start_where_the_rule_says() {
        let config = SchedulerConfig::from_json_str(
            r#"{"_class_name": "DDIMScheduler", "num_train_timesteps": 1000}"#,
        )
        .unwrap();
        let s = Scheduler::new(&config, SchedulerKind::Ddim)
            .unwrap()
            .schedule(50)
            .unwrap();
        assert_eq!(s.start_index_per_mille(900).unwrap(), 5);
        assert_eq!(s.start_index(0.9).unwrap(), 5);
        assert_eq!(s.start_index(1.0 - 0.7).unwrap(), 35);
        assert_eq!(s.start_index(1.0).unwrap(), 0);
        assert!(matches!(
            s.start_index_per_mille(1),
            Err(SchedulerError::NoSteps { steps: 50, .. })
        ));
        for bad in [0.3333, -0.001, 1.001, f64::NAN, f64::INFINITY] {
            assert!(
                matches!(s.start_index(bad), Err(SchedulerError::InvalidStrength(_))),
                "{bad}"
            );
        }
    }
}
