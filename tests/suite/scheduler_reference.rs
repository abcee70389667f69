//! Compares `discl::runtime::scheduler` with diffusers' own schedulers, recorded by
//! scripts/fixtures/dump_scheduler_reference.py into tests/fixtures/scheduler_reference.json:
//! truncated timestep lists, sigmas, add_noise / text-to-image starts and every step of a
//! denoising loop driven by a deterministic fake model (see the fixture's "model" field).

use discl::runtime::scheduler::{Schedule, Scheduler, SchedulerConfig, SchedulerKind};
use serde::Deserialize;

const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/scheduler_reference.json"
);
const TOL: f64 = 1e-5;

#[derive(Deserialize)]
struct Fixture {
    diffusers: String,
    x0: Vec<f32>,
    noise: Vec<f32>,
    configs: Vec<ConfigCases>,
}

#[derive(Deserialize)]
struct ConfigCases {
    name: String,
    config_json: String,
    runs: Vec<Run>,
}

#[derive(Deserialize)]
struct Run {
    kind: String,
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    steps: usize,
    strength: f64,
    text_to_image: bool,
    start_index: usize,
    timesteps: Vec<f32>,
    init_noise_sigma: f32,
    sigmas: Option<Vec<f32>>,
    start: Vec<f32>,
    samples: Vec<Vec<f32>>,
}

fn load() -> Fixture {
    let text = std::fs::read_to_string(FIXTURE).expect("read fixture");
    serde_json::from_str(&text).expect("parse fixture")
}

/// The fixture's fake UNet: f32(0.1 * input + 0.05 * cos(t / 100 + i)), computed in f64.
fn fake_model(t: f32, input: &[f32]) -> Vec<f32> {
    input
        .iter()
        .enumerate()
        .map(|(i, &x)| (0.1 * x as f64 + 0.05 * (t as f64 / 100.0 + i as f64).cos()) as f32)
        .collect()
}

fn max_abs(v: &[f32]) -> f64 {
    v.iter().fold(0.0f64, |m, &x| m.max((x as f64).abs()))
}

/// Element-wise closeness to TOL, absolute up to magnitude 1 and relative beyond, to the larger of
/// the expected vector's scale and `inputs` (the largest value the computation read: float32
/// rounding of inputs scales with them, and torch's float32 sqrt is not always correctly rounded,
/// e.g. it gives 4096 for sqrt(16777215), which zero-terminal-SNR Euler starts from).
fn assert_close_scaled(what: &str, got: &[f32], want: &[f32], inputs: f64) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let scale = max_abs(want).max(inputs).max(1.0);
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let err = (g as f64 - w as f64).abs();
        assert!(
            err <= TOL * scale,
            "{what}[{i}]: got {g}, want {w} (err {err:e}, scale {scale})"
        );
    }
}

fn assert_close(what: &str, got: &[f32], want: &[f32]) {
    assert_close_scaled(what, got, want, 0.0);
}

/// Runs one recorded case through the Rust scheduler, checking every recorded value.
fn check_case(label: &str, s: &Schedule, c: &Case, fx: &Fixture) {
    let mut item = s
        .start(c.strength)
        .unwrap_or_else(|e| panic!("{label}: {e}"));
    assert_eq!(item.start_index(), c.start_index, "{label}: start index");
    assert_close(
        &format!("{label} timesteps"),
        s.timesteps_for(c.strength).unwrap(),
        &c.timesteps,
    );
    assert_eq!(item.steps_left(), c.samples.len(), "{label}: UNet calls");
    assert_close(
        &format!("{label} init_noise_sigma"),
        &[s.init_noise_sigma()],
        &[c.init_noise_sigma],
    );
    match &c.sigmas {
        Some(sig) => assert_close(&format!("{label} sigmas"), s.sigmas(), sig),
        None => assert!(s.sigmas().is_empty(), "{label}: unexpected sigmas"),
    }

    let mut x = if c.text_to_image {
        let mut x = fx.noise.clone();
        s.init_noise(&mut x);
        x
    } else {
        let mut x = fx.x0.clone();
        s.add_noise(&item, &mut x, &fx.noise).unwrap();
        x
    };
    assert_close(&format!("{label} start"), &x, &c.start);
    // Carry on from diffusers' values so an error is reported where it appears, not compounded.
    x.copy_from_slice(&c.start);

    let mut input = vec![0.0f32; x.len()];
    for (k, want) in c.samples.iter().enumerate() {
        let t = s.timestep(&item).expect("item finished early");
        assert_close(
            &format!("{label} step {k} timestep"),
            &[t],
            &[c.timesteps[k]],
        );
        s.scale_model_input(&item, &x, &mut input).unwrap();
        let before = max_abs(&x);
        s.step(&mut item, &fake_model(t, &input), &mut x).unwrap();
        assert_close_scaled(&format!("{label} step {k}"), &x, want, before);
        // Go on from diffusers' value, as with the start.
        x.copy_from_slice(want);
    }
    assert!(item.is_finished(), "{label}: item not finished");
}

#[test]
fn matches_diffusers_reference() {
    let fx = load();
    let mut cases = 0;
    for cfg in &fx.configs {
        let config = SchedulerConfig::from_json_str(&cfg.config_json).expect("config parses");
        for run in &cfg.runs {
            let kind = SchedulerKind::from_class_name(&run.kind).unwrap();
            let sched = Scheduler::new(&config, kind)
                .unwrap_or_else(|e| panic!("{} {kind}: {e}", cfg.name));
            for c in &run.cases {
                let label = format!(
                    "{} {kind} steps={} strength={}{}",
                    cfg.name,
                    c.steps,
                    c.strength,
                    if c.text_to_image { " t2i" } else { "" }
                );
                check_case(&label, &sched.schedule(c.steps).unwrap(), c, &fx);
                cases += 1;
            }
        }
    }
    assert!(
        cases >= 150,
        "only {cases} cases in the fixture (diffusers {})",
        fx.diffusers
    );
}

/// A fresh, unchecked trajectory (no re-sync to diffusers' values) still ends where diffusers ends.
#[test]
fn free_running_trajectories_stay_close() {
    let fx = load();
    for cfg in &fx.configs {
        let config = SchedulerConfig::from_json_str(&cfg.config_json).unwrap();
        for run in &cfg.runs {
            let kind = SchedulerKind::from_class_name(&run.kind).unwrap();
            let sched = Scheduler::new(&config, kind).unwrap();
            for c in run.cases.iter().filter(|c| !c.text_to_image) {
                let s = sched.schedule(c.steps).unwrap();
                let mut item = s.start(c.strength).unwrap();
                let mut x = fx.x0.clone();
                s.add_noise(&item, &mut x, &fx.noise).unwrap();
                let mut input = vec![0.0f32; x.len()];
                while let Some(t) = s.timestep(&item) {
                    s.scale_model_input(&item, &x, &mut input).unwrap();
                    s.step(&mut item, &fake_model(t, &input), &mut x).unwrap();
                }
                let label = format!(
                    "{} {kind} steps={} strength={} final",
                    cfg.name, c.steps, c.strength
                );
                // Errors made early are carried along: scale by the largest value on the way.
                let peak = c
                    .samples
                    .iter()
                    .map(|v| max_abs(v))
                    .fold(max_abs(&c.start), f64::max);
                assert_close_scaled(&label, &x, c.samples.last().unwrap(), peak);
            }
        }
    }
}

/// The facts in shared/OPTIMUM.md "Scheduler facts" (SD 1.x config with leading spacing).
#[test]
fn img2img_truncation_facts() {
    let config = SchedulerConfig::from_json_str(
        r#"{"_class_name": "PNDMScheduler", "beta_end": 0.012, "beta_schedule": "scaled_linear",
            "beta_start": 0.00085, "clip_sample": false, "num_train_timesteps": 1000,
            "set_alpha_to_one": false, "skip_prk_steps": true, "steps_offset": 1,
            "timestep_spacing": "leading", "trained_betas": null}"#,
    )
    .unwrap();
    let at = |kind| {
        let s = Scheduler::new(&config, kind).unwrap().schedule(20).unwrap();
        let item = s.start(0.5).unwrap();
        let sigma = s.sigmas().get(item.step_index()).copied();
        (s.timestep(&item).unwrap(), item.steps_left(), sigma)
    };
    let (t, calls, _) = at(SchedulerKind::Pndm);
    assert_eq!((t, calls), (501.0, 11));
    let (t, calls, _) = at(SchedulerKind::Ddim);
    assert_eq!((t, calls), (451.0, 10));
    let (t, calls, sigma) = at(SchedulerKind::EulerDiscrete);
    assert_eq!((t, calls), (451.0, 10));
    assert!(
        (sigma.unwrap() - 1.376).abs() < 5e-4,
        "Euler start sigma {sigma:?}"
    );
    // DDIM read from the PNDM file keeps its clip_sample false (no clamp of x0).
    assert_eq!(
        Scheduler::new(&config, SchedulerKind::Ddim)
            .unwrap()
            .params()
            .clip_sample_range,
        None
    );
    // Strength 1.0 is the whole list.
    let pndm = Scheduler::from_config(&config)
        .unwrap()
        .schedule(20)
        .unwrap();
    assert_eq!(pndm.start(1.0).unwrap().steps_left(), 21);
}

/// The fixture's own cases agree with the facts too (Euler read from the leading DPM config).
#[test]
fn fixture_contains_the_facts() {
    let fx = load();
    let find = |config: &str, kind: &str, steps: usize, strength: f64| {
        let cfg = fx.configs.iter().find(|c| c.name == config).unwrap();
        let run = cfg.runs.iter().find(|r| r.kind == kind).unwrap();
        run.cases
            .iter()
            .find(|c| c.steps == steps && c.strength == strength && !c.text_to_image)
            .unwrap()
    };
    let pndm = find("sd15", "PNDMScheduler", 20, 0.5);
    assert_eq!((pndm.timesteps[0], pndm.samples.len()), (501.0, 11));
    let ddim = find("sd15", "DDIMScheduler", 20, 0.5);
    assert_eq!((ddim.timesteps[0], ddim.samples.len()), (451.0, 10));
    let euler = find("dpm_sd", "EulerDiscreteScheduler", 20, 0.5);
    assert_eq!((euler.timesteps[0], euler.samples.len()), (451.0, 10));
    let sigma = euler.sigmas.as_ref().unwrap()[euler.start_index];
    assert!((sigma - 1.376).abs() < 5e-4, "{sigma}");
}
