//! `hard`: picks the samples the current model finds hard. Rules: misclassified, p(true) below
//! a threshold, the top-k or top fraction by loss, and every sample of a tail class (fewer than
//! n images). Only each sample's latest checkpoint counts. Rules combine by union (`any`) or
//! intersection (`all`); every change in scores retracts and inserts exactly.

use crate::record::{Sample, SampleId, Score};
use differential_dataflow::trace::implementations::{ValBuilder, ValSpine};
use differential_dataflow::VecCollection;

/// One way of calling a sample hard.
#[derive(Clone, Debug, PartialEq)]
pub enum HardSampleRule {
    /// The latest prediction is not the label.
    Misclassified,
    /// p(true class) is below the threshold.
    PTrueBelow(f32),
    /// The k samples with the highest loss.
    TopKLoss(usize),
    /// The given fraction (0, 1] of scored samples with the highest loss, rounded up.
    TopFractionLoss(f64),
    /// Every sample of a class with fewer than n samples.
    TailClassesBelow(usize),
}

/// How several rules combine.
#[derive(Clone, Copy, Debug, PartialEq, Default)]
pub enum Combine {
    /// A sample is hard if any rule picks it.
    #[default]
    Any,
    /// A sample is hard if every rule picks it.
    All,
}

/// Adds `hard` to sample collections.
pub trait HardExt<'scope> {
    /// The hard samples among `self`, given their scores.
    ///
    /// # Examples
    /// ```
    /// use differential_dataflow::input::Input;
    /// use discl::operators::{Combine, HardExt, HardSampleRule};
    /// use discl::record::{Digest, Sample, Score, Value};
    ///
    /// timely::example(|scope| {
    ///     let sample = |id, label: &str| Sample { id, name: format!("{id}"), label: label.into(), path: String::new(), digest: Digest::default() };
    ///     let score = |sample, p: f32, predicted: &str| Score { sample, checkpoint: 0, p_true: Value(p), loss: Value(-p.ln()), predicted: predicted.into() };
    ///     let samples = scope.new_collection_from(vec![sample(1, "coat"), sample(2, "coat"), sample(3, "bag")]).1;
    ///     let scores = scope.new_collection_from(vec![score(1, 0.9, "coat"), score(2, 0.2, "shirt"), score(3, 0.8, "bag")]).1;
    ///     samples
    ///         .hard(scores, &[HardSampleRule::Misclassified, HardSampleRule::TailClassesBelow(2)], Combine::Any)
    ///         .map(|s| s.id)
    ///         .inspect(|(id, _time, diff)| assert!(*diff == 1 && (*id == 2 || *id == 3)));
    /// });
    /// ```
    fn hard(
        self,
        scores: VecCollection<'scope, u64, Score>,
        rules: &[HardSampleRule],
        combine: Combine,
    ) -> VecCollection<'scope, u64, Sample>;
}

impl<'scope> HardExt<'scope> for VecCollection<'scope, u64, Sample> {
    fn hard(
        self,
        scores: VecCollection<'scope, u64, Score>,
        rules: &[HardSampleRule],
        combine: Combine,
    ) -> VecCollection<'scope, u64, Sample> {
        // Each sample's latest score, kept arranged: the rules read it without copying it out.
        let latest = scores
            .map(|s| (s.sample, s))
            .arrange_by_key_named("Arrange: LatestScore")
            .reduce_abelian::<_, ValBuilder<_, _, _, _>, ValSpine<SampleId, Score, _, _>, _, _>(
                "LatestScore",
                |_id, input, output| {
                    // Scores order by (sample, checkpoint, ..): the last is the latest checkpoint.
                    output.push((input[input.len() - 1].0.clone(), 1));
                },
                |vec, key, upds| {
                    vec.clear();
                    vec.extend(upds.drain(..).map(|(v, t, r)| ((*key, v), t, r)));
                },
            );
        // Rules pick sample ids; the samples themselves are joined once, at the end, so that a
        // new checkpoint that leaves a sample as hard as it was moves no sample record.
        let ranks = |rule: &HardSampleRule| {
            matches!(
                rule,
                HardSampleRule::TopKLoss(_) | HardSampleRule::TopFractionLoss(_)
            )
        };
        let scored = rules.iter().any(ranks).then(|| {
            self.clone()
                .map(|s| (s.id, s))
                .arrange_by_key()
                .join_core(latest.clone(), |_id, sample, score| {
                    Some((sample.clone(), score.clone()))
                })
        });
        let scored = || scored.clone().expect("made for the ranking rules");
        let ids: Vec<VecCollection<'scope, u64, SampleId>> = rules
            .iter()
            .map(|rule| match rule.clone() {
                HardSampleRule::Misclassified => self
                    .clone()
                    .map(|s| (s.id, s.label))
                    .arrange_by_key()
                    .join_core(latest.clone(), |id, label, score| {
                        (score.predicted != *label).then_some(*id)
                    }),
                HardSampleRule::PTrueBelow(tau) => latest
                    .clone()
                    .flat_map_ref(move |id, score| (score.p_true.0 < tau).then_some(*id)),
                HardSampleRule::TopKLoss(k) => top_by_loss(scored(), move |_| k).map(|s| s.id),
                HardSampleRule::TopFractionLoss(f) => {
                    top_by_loss(scored(), move |n| (f * n as f64).ceil() as usize).map(|s| s.id)
                }
                HardSampleRule::TailClassesBelow(n) => {
                    let tail = self
                        .clone()
                        .map(|s| s.label)
                        .count()
                        .filter(move |(_, count)| (*count as usize) < n)
                        .map(|(label, _)| label);
                    self.clone()
                        .map(|s| (s.label.clone(), s.id))
                        .semijoin(tail)
                        .map(|(_, id)| id)
                }
            })
            .collect();
        let rule_count = ids.len() as isize;
        let all = differential_dataflow::collection::concatenate(self.scope(), ids);
        let hard_ids = match combine {
            Combine::Any => all.distinct(),
            Combine::All => {
                all.threshold_named(
                    "AllRules",
                    move |_, count| if *count == rule_count { 1 } else { 0 },
                )
            }
        };
        // A rule picks a sample only if it has a score (a tail class's samples need none).
        self.map(|s| (s.id, s)).semijoin(hard_ids).map(|(_, s)| s)
    }
}

/// The `k(n)` samples with the highest loss among `n` scored ones; ties go to the larger sample.
fn top_by_loss<'scope>(
    scored: VecCollection<'scope, u64, (Sample, Score)>,
    k: impl Fn(usize) -> usize + 'static,
) -> VecCollection<'scope, u64, Sample> {
    scored
        .map(|(s, score)| ((), (score.loss, s)))
        .reduce_named("TopByLoss", move |_unit, input, output| {
            let n: isize = input.iter().map(|(_, count)| *count).sum();
            let take = k(n.max(0) as usize);
            output.extend(
                input
                    .iter()
                    .rev()
                    .take(take)
                    .map(|((_, s), _)| (s.clone(), 1)),
            );
        })
        .map(|((), s)| s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{sample_id, Digest, Value};
    use differential_dataflow::input::Input;
    use timely::dataflow::operators::capture::{Capture, Extract};

    fn sample(name: &str, label: &str) -> Sample {
        Sample {
            id: sample_id(name),
            name: name.into(),
            label: label.into(),
            path: name.into(),
            digest: Digest::of(name.as_bytes()),
        }
    }
    fn score(s: &Sample, checkpoint: u64, p: f32, predicted: &str) -> Score {
        Score {
            sample: s.id,
            checkpoint,
            p_true: Value(p),
            loss: Value(-p.ln()),
            predicted: predicted.into(),
        }
    }

    type Updates = Vec<(String, u64, isize)>;
    /// One time of a test script: sample and score updates.
    type Step = (u64, Vec<(Sample, isize)>, Vec<(Score, isize)>);

    /// Runs `hard` over scripted updates; returns the output diffs as (name, time, diff), sorted.
    fn run(rules: Vec<HardSampleRule>, combine: Combine, script: Vec<Step>) -> Updates {
        let captured = timely::execute_directly(move |worker| {
            let (mut samples, mut scores, captured) = worker.dataflow::<u64, _, _>(|scope| {
                let (si, s) = scope.new_collection::<Sample, isize>();
                let (ci, c) = scope.new_collection::<Score, isize>();
                let out = s
                    .hard(c, &rules, combine)
                    .map(|s| s.name)
                    .consolidate()
                    .inner
                    .capture();
                (si, ci, out)
            });
            for (time, sample_updates, score_updates) in script.clone() {
                samples.advance_to(time);
                scores.advance_to(time);
                for (s, d) in sample_updates {
                    samples.update_at(s, time, d);
                }
                for (s, d) in score_updates {
                    scores.update_at(s, time, d);
                }
            }
            samples.close();
            scores.close();
            captured
        });
        let mut out: Updates = captured
            .extract()
            .into_iter()
            .flat_map(|(_, data)| data)
            .collect();
        out.sort();
        out
    }

    #[test]
    fn misclassified_or_low_p_true_with_exact_retractions() {
        let (a, b, c) = (
            sample("coat/a", "coat"),
            sample("coat/b", "coat"),
            sample("shirt/c", "shirt"),
        );
        let script = vec![
            (
                0,
                vec![(a.clone(), 1), (b.clone(), 1), (c.clone(), 1)],
                vec![
                    (score(&a, 0, 0.9, "coat"), 1),
                    (score(&b, 0, 0.3, "coat"), 1),
                    (score(&c, 0, 0.6, "coat"), 1),
                ],
            ),
            // A new checkpoint: b is now confident, a slips below the threshold.
            (
                1,
                vec![],
                vec![
                    (score(&b, 1, 0.95, "coat"), 1),
                    (score(&a, 1, 0.2, "shirt"), 1),
                ],
            ),
            // c's score is withdrawn: it is no longer misclassified by anything.
            (2, vec![], vec![(score(&c, 0, 0.6, "coat"), -1)]),
        ];
        let out = run(
            vec![
                HardSampleRule::Misclassified,
                HardSampleRule::PTrueBelow(0.5),
            ],
            Combine::Any,
            script,
        );
        assert_eq!(
            out,
            vec![
                ("coat/a".to_string(), 1, 1),
                ("coat/b".to_string(), 0, 1),
                ("coat/b".to_string(), 1, -1),
                ("shirt/c".to_string(), 0, 1),
                ("shirt/c".to_string(), 2, -1),
            ]
        );
    }

    #[test]
    fn top_k_tail_classes_and_all_combination() {
        let samples: Vec<Sample> = (0..4)
            .map(|i| sample(&format!("coat/{i}"), "coat"))
            .chain([sample("bag/0", "bag")])
            .collect();
        let scores: Vec<(Score, isize)> = samples
            .iter()
            .enumerate()
            .map(|(i, s)| (score(s, 0, 0.1 + 0.2 * i as f32, &s.label), 1))
            .collect();
        let initial = vec![(
            0,
            samples.iter().map(|s| (s.clone(), 1)).collect(),
            scores.clone(),
        )];
        let out = run(
            vec![HardSampleRule::TopKLoss(2)],
            Combine::Any,
            initial.clone(),
        );
        assert_eq!(
            out,
            vec![("coat/0".to_string(), 0, 1), ("coat/1".to_string(), 0, 1)]
        );
        let out = run(
            vec![HardSampleRule::TopFractionLoss(0.5)],
            Combine::Any,
            initial.clone(),
        );
        assert_eq!(out.len(), 3, "ceil(0.5 * 5) = 3: {out:?}");
        let out = run(
            vec![HardSampleRule::TailClassesBelow(2)],
            Combine::Any,
            initial.clone(),
        );
        assert_eq!(out, vec![("bag/0".to_string(), 0, 1)]);
        // bag/0 has p = 0.9: a tail sample, but not a low-p one.
        let out = run(
            vec![
                HardSampleRule::TailClassesBelow(2),
                HardSampleRule::PTrueBelow(0.95),
            ],
            Combine::All,
            initial.clone(),
        );
        assert_eq!(out, vec![("bag/0".to_string(), 0, 1)]);
        let out = run(
            vec![
                HardSampleRule::TailClassesBelow(2),
                HardSampleRule::PTrueBelow(0.5),
            ],
            Combine::All,
            initial,
        );
        assert!(out.is_empty(), "{out:?}");
        // Adding a second bag lifts the class out of the tail: bag/0 is retracted.
        let script = vec![
            (0, samples.iter().map(|s| (s.clone(), 1)).collect(), scores),
            (1, vec![(sample("bag/1", "bag"), 1)], vec![]),
        ];
        let out = run(
            vec![HardSampleRule::TailClassesBelow(2)],
            Combine::Any,
            script,
        );
        assert_eq!(
            out,
            vec![("bag/0".to_string(), 0, 1), ("bag/0".to_string(), 1, -1)]
        );
    }
}
