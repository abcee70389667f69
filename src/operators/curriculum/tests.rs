//! Each schedule's λ order per stage (METHOD §5), the adaptive rule on hand-made progress, and
//! the plans flowing through a dataflow as progress arrives.

use super::*;
use crate::record::Value;

fn curriculum(schedule: Schedule) -> Curriculum {
    Curriculum {
        schedule,
        levels: vec![100, 300, 500],
        stages: 3,
        epochs_per_stage: 15,
        real_epochs: 5,
        seed: 7,
        start_level: 100,
    }
}

fn levels(plans: &[StagePlan]) -> Vec<(u32, Vec<Level>, u32)> {
    plans
        .iter()
        .map(|p| (p.stage, p.levels.clone(), p.epochs))
        .collect()
}

#[test]
fn diverse_to_specific_ascends_in_equal_shares_then_real_only() {
    let plans = curriculum(Schedule::DiverseToSpecific).static_plans();
    assert_eq!(
        levels(&plans),
        vec![
            (0, vec![100], 15),
            (1, vec![300], 15),
            (2, vec![500], 15),
            (3, vec![], 5)
        ]
    );
}

#[test]
fn specific_to_diverse_descends() {
    let plans = curriculum(Schedule::SpecificToDiverse).static_plans();
    assert_eq!(
        levels(&plans),
        vec![
            (0, vec![500], 15),
            (1, vec![300], 15),
            (2, vec![100], 15),
            (3, vec![], 5)
        ]
    );
}

#[test]
fn fixed_all_levels_and_text_only_repeat_one_choice() {
    let fixed = curriculum(Schedule::Fixed(500)).static_plans();
    assert_eq!(
        levels(&fixed)[..3],
        [(0, vec![500], 15), (1, vec![500], 15), (2, vec![500], 15)]
    );
    let all = curriculum(Schedule::AllLevels).static_plans();
    assert!(all[..3].iter().all(|p| p.levels == vec![100, 300, 500]));
    let text = curriculum(Schedule::TextOnly).static_plans();
    assert!(text[..3].iter().all(|p| p.levels == vec![0]));
    assert_eq!(text[3].levels, Vec::<Level>::new());
    let real = curriculum(Schedule::RealOnly).static_plans();
    assert_eq!(
        real.len(),
        text.len(),
        "a baseline trains as long as a curriculum"
    );
    assert!(real.iter().all(|p| p.levels.is_empty()));
    assert_eq!(
        real.iter().map(|p| p.epochs).collect::<Vec<_>>(),
        text.iter().map(|p| p.epochs).collect::<Vec<_>>()
    );
}

#[test]
fn random_is_keyed_by_seed_and_stage() {
    let mut c = curriculum(Schedule::Random);
    c.stages = 12;
    let a = c.static_plans();
    assert_eq!(a, c.static_plans(), "the same seed gives the same plan");
    assert!(a[..12]
        .iter()
        .all(|p| p.levels.len() == 1 && c.levels.contains(&p.levels[0])));
    let distinct: std::collections::BTreeSet<Level> = a[..12].iter().map(|p| p.levels[0]).collect();
    assert!(distinct.len() > 1, "twelve stages use more than one level");
    c.seed = 8;
    assert_ne!(a, c.static_plans());
}

#[test]
fn no_real_stage_without_real_epochs() {
    let mut c = curriculum(Schedule::DiverseToSpecific);
    c.real_epochs = 0;
    assert_eq!(c.static_plans().len(), 3);
}

#[test]
fn outliers_beyond_one_and_a_half_iqr_are_dropped() {
    // Q1 = 0.1, Q3 = 0.3 → bounds [-0.2, 0.6]: 5.0 is dropped, the mean of the rest is 0.2.
    let mean = mean_without_outliers(vec![0.1, 0.1, 0.2, 0.3, 0.3, 5.0]).unwrap();
    assert!((mean - 0.2).abs() < 1e-12, "{mean}");
    assert_eq!(mean_without_outliers(vec![]), None);
    assert_eq!(mean_without_outliers(vec![0.5]), Some(0.5));
}

fn progress(after: u32, sample: u64, level: Level, p: f32) -> Progress {
    Progress {
        after_stages: after,
        sample,
        level,
        p_true: Value(p),
    }
}

#[test]
fn adaptive_picks_the_level_with_most_progress_after_dropping_an_outlier() {
    let c = curriculum(Schedule::Adaptive);
    assert_eq!(
        levels(&c.static_plans()),
        vec![(0, vec![100], 15), (3, vec![], 5)]
    );
    let mut data = Vec::new();
    for sample in 0..6 {
        // Before training: 0.2 everywhere.
        for level in [100, 300, 500] {
            data.push(progress(0, sample, level, 0.2));
        }
        // After stage 0: level 300 gains 0.2 on every image; level 500 gains 0.1 except one
        // image that jumps by 0.8 — an outlier which, kept, would make 500 win (mean 0.217).
        data.push(progress(1, sample, 100, 0.25));
        data.push(progress(1, sample, 300, 0.4));
        let jump = if sample == 0 { 1.0 } else { 0.3 };
        data.push(progress(1, sample, 500, jump));
    }
    let plans = c.adaptive_plans(&data);
    assert_eq!(levels(&plans), vec![(1, vec![300], 15)]);
    // After stage 1 the progress is measured from the evaluation after stage 0.
    for sample in 0..6 {
        data.push(progress(2, sample, 100, 0.35)); // +0.10
        data.push(progress(2, sample, 300, 0.45)); // +0.05
        data.push(progress(2, sample, 500, 0.35)); // +0.05 (from 0.3) or -0.65
    }
    let plans = c.adaptive_plans(&data);
    assert_eq!(levels(&plans), vec![(1, vec![300], 15), (2, vec![100], 15)]);
}

#[test]
fn adaptive_ties_go_to_the_lower_level_and_unknown_levels_are_ignored() {
    let c = curriculum(Schedule::Adaptive);
    let data = vec![
        progress(1, 1, 500, 0.5),
        progress(1, 1, 300, 0.5),
        progress(1, 1, 700, 0.9), // not a level of this curriculum
    ];
    assert_eq!(levels(&c.adaptive_plans(&data)), vec![(1, vec![300], 15)]);
}

#[test]
fn plans_follow_progress_in_a_dataflow() {
    use timely::dataflow::operators::capture::{Capture, Extract};
    let c = curriculum(Schedule::Adaptive);
    let captured = timely::execute_directly(move |worker| {
        let (mut input, captured) = worker.dataflow::<u64, _, _>(|scope| {
            let (input, progress) = scope.new_collection::<Progress, isize>();
            let plans = stage_plans(scope, &c, Some(progress), 0);
            (input, plans.inner.capture())
        });
        input.advance_to(1);
        for sample in 0..3 {
            input.insert(progress(1, sample, 500, 0.9));
        }
        input.advance_to(2);
        // The trainer corrects its file: level 300 now made the most progress.
        for sample in 0..3 {
            input.remove(progress(1, sample, 500, 0.9));
            input.insert(progress(1, sample, 300, 0.9));
        }
        input.advance_to(3);
        input.close();
        while worker.step() {}
        captured
    });
    let mut updates: Vec<(u64, u32, Vec<Level>, isize)> = captured
        .extract()
        .into_iter()
        .flat_map(|(_, batch)| batch)
        .map(|(plan, time, diff)| (time, plan.stage, plan.levels, diff))
        .collect();
    updates.sort();
    assert_eq!(
        updates,
        vec![
            (0, 0, vec![100], 1),
            (0, 3, vec![], 1),
            (1, 1, vec![500], 1),
            (2, 1, vec![300], 1),
            (2, 1, vec![500], -1),
        ]
    );
}

#[test]
fn repeated_lines_average_and_images_new_to_an_evaluation_are_left_out() {
    let c = curriculum(Schedule::Adaptive);
    let data = vec![
        progress(0, 1, 100, 0.2),
        progress(0, 1, 300, 0.2),
        // Two seeds of image 1 at level 100: mean 0.5, a gain of 0.3.
        progress(1, 1, 100, 0.4),
        progress(1, 1, 100, 0.6),
        progress(1, 1, 300, 0.4), // a gain of 0.2
        // Image 2 was not evaluated before: its 0.9 at level 300 is no known gain.
        progress(1, 2, 300, 0.9),
    ];
    assert_eq!(levels(&c.adaptive_plans(&data)), vec![(1, vec![100], 15)]);
}
