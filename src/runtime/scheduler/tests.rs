//! Cross-kind tests of the item API: interleaving items must not change any item's result.

use super::*;

const SD15: &str = r#"{"_class_name": "PNDMScheduler", "beta_end": 0.012, "beta_schedule": "scaled_linear",
    "beta_start": 0.00085, "clip_sample": false, "num_train_timesteps": 1000, "set_alpha_to_one": false,
    "skip_prk_steps": true, "steps_offset": 1, "timestep_spacing": "leading", "trained_betas": null}"#;

fn fake_model(t: f32, x: &[f32]) -> Vec<f32> {
    x.iter()
        .enumerate()
        .map(|(i, &v)| 0.1 * v + 0.05 * (t / 100.0 + i as f32).cos())
        .collect()
}

fn run_alone(s: &Schedule, strength: f64, z0: &[f32], noise: &[f32]) -> Vec<f32> {
    let mut item = s.start(strength).unwrap();
    let mut x = z0.to_vec();
    s.add_noise(&item, &mut x, noise).unwrap();
    let mut inp = vec![0.0; x.len()];
    while let Some(t) = s.timestep(&item) {
        s.scale_model_input(&item, &x, &mut inp).unwrap();
        let out = fake_model(t, &inp);
        s.step(&mut item, &out, &mut x).unwrap();
    }
    x
}

#[test]
fn interleaved_items_match_items_run_alone() {
    let cfg = SchedulerConfig::from_json_str(SD15).unwrap();
    for kind in SchedulerKind::ALL {
        let s = Scheduler::new(&cfg, kind).unwrap().schedule(12).unwrap();
        let strengths = [1.0, 0.5, 0.3];
        let z0: Vec<Vec<f32>> = (0..3)
            .map(|k| (0..6).map(|i| ((i + k) as f32 * 0.7).sin()).collect())
            .collect();
        let noise: Vec<f32> = (0..6).map(|i| (i as f32 * 1.3).cos()).collect();
        let alone: Vec<Vec<f32>> = (0..3)
            .map(|k| run_alone(&s, strengths[k], &z0[k], &noise))
            .collect();

        // Round-robin over the three items, each at its own position.
        let mut items: Vec<ItemState> = strengths.iter().map(|&st| s.start(st).unwrap()).collect();
        let mut xs = z0.clone();
        for k in 0..3 {
            s.add_noise(&items[k], &mut xs[k], &noise).unwrap();
        }
        while items.iter().any(|it| !it.is_finished()) {
            for k in 0..3 {
                if let Some(t) = s.timestep(&items[k]) {
                    let scale = s.model_input_scale(&items[k]);
                    let inp: Vec<f32> = xs[k].iter().map(|v| v * scale).collect();
                    let out = fake_model(t, &inp);
                    s.step(&mut items[k], &out, &mut xs[k]).unwrap();
                }
            }
        }
        for k in 0..3 {
            for (a, b) in xs[k].iter().zip(&alone[k]) {
                assert!(
                    (a - b).abs() <= 1e-5 * b.abs().max(1.0),
                    "{kind} item {k}: {a} vs {b}"
                );
            }
        }
    }
}

#[test]
fn unet_calls_per_strength() {
    let cfg = SchedulerConfig::from_json_str(SD15).unwrap();
    let calls = |kind, strength| {
        let s = Scheduler::new(&cfg, kind).unwrap().schedule(20).unwrap();
        let item = s.start(strength).unwrap();
        (s.timestep(&item).unwrap(), item.steps_left())
    };
    assert_eq!(calls(SchedulerKind::Pndm, 0.5), (501.0, 11));
    assert_eq!(calls(SchedulerKind::Ddim, 0.5), (451.0, 10));
    assert_eq!(calls(SchedulerKind::EulerDiscrete, 0.5), (451.0, 10));
    assert_eq!(calls(SchedulerKind::Pndm, 1.0), (951.0, 21));
    assert_eq!(calls(SchedulerKind::Ddim, 1.0), (951.0, 20));
}

#[test]
fn misuse_is_an_error_not_a_panic() {
    let cfg = SchedulerConfig::from_json_str(SD15).unwrap();
    let sched = Scheduler::from_config(&cfg).unwrap();
    assert!(matches!(
        sched.schedule(0),
        Err(SchedulerError::InvalidSteps { .. })
    ));
    assert!(matches!(
        sched.schedule(1001),
        Err(SchedulerError::InvalidSteps { .. })
    ));
    let s = sched.schedule(10).unwrap();
    assert!(matches!(s.start(0.05), Err(SchedulerError::NoSteps { .. })));
    assert!(matches!(
        s.start(1.5),
        Err(SchedulerError::InvalidStrength(_))
    ));
    assert!(matches!(
        s.start(f64::NAN),
        Err(SchedulerError::InvalidStrength(_))
    ));
    let mut item = s.start(0.3).unwrap();
    let mut x = vec![0.0f32; 4];
    assert!(matches!(
        s.step(&mut item, &[0.0; 3], &mut x),
        Err(SchedulerError::LengthMismatch { .. })
    ));
    let other = sched.schedule(20).unwrap();
    assert!(matches!(
        other.step(&mut item, &[0.0; 4], &mut x),
        Err(SchedulerError::WrongSchedule)
    ));
    while !item.is_finished() {
        s.step(&mut item, &[0.0; 4], &mut x).unwrap();
    }
    assert_eq!(s.timestep(&item), None);
    assert!(matches!(
        s.step(&mut item, &[0.0; 4], &mut x),
        Err(SchedulerError::Finished)
    ));
}

#[test]
fn text_to_image_noise_scale() {
    let cfg = SchedulerConfig::from_json_str(SD15).unwrap();
    let euler = Scheduler::new(&cfg, SchedulerKind::EulerDiscrete)
        .unwrap()
        .schedule(20)
        .unwrap();
    let mut n = vec![1.0f32, -2.0];
    euler.init_noise(&mut n);
    let m = euler.sigmas()[0];
    assert!(
        (n[0] - (m * m + 1.0).sqrt()).abs() < 1e-6 && m > 9.0,
        "{n:?} {m}"
    );
    let ddim = Scheduler::new(&cfg, SchedulerKind::Ddim)
        .unwrap()
        .schedule(20)
        .unwrap();
    assert_eq!(ddim.init_noise_sigma(), 1.0);
}

#[test]
fn kind_names_parse() {
    assert_eq!(
        "euler".parse::<SchedulerKind>().unwrap(),
        SchedulerKind::EulerDiscrete
    );
    assert_eq!(
        "DDIMScheduler".parse::<SchedulerKind>().unwrap(),
        SchedulerKind::Ddim
    );
    assert!("LMSDiscreteScheduler".parse::<SchedulerKind>().is_err());
}
