//! What the built-in trainer did, stage by stage: levels, epochs, examples, loss, training
//! accuracy and test accuracy per group; as a table for the console and as
//! `<output>/<node>/report.json`.

use super::evaluate::{Accuracy, Groups};
use serde::{Deserialize, Serialize};

/// One trained stage.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StageReport {
    pub stage: u32,
    /// λ per mille of the stage's synthetic images (empty: real only).
    pub levels: Vec<u16>,
    pub epochs: u32,
    /// The version whose manifest the stage trained on.
    pub version: u64,
    /// Examples seen over the stage's epochs (rows times copies).
    pub examples: usize,
    /// Of which synthetic.
    pub synthetic_examples: usize,
    /// Mean training loss and accuracy of the stage's last epoch.
    pub loss: f64,
    pub train_accuracy: f64,
    pub seconds: f64,
    /// Test accuracy after the stage (when the node has a `test` folder).
    pub test: Option<AccuracyRow>,
}

/// Test accuracy per group (per class in `per_class`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AccuracyRow {
    pub many: f64,
    pub medium: f64,
    pub few: f64,
    pub all: f64,
    pub per_class: indexmap::IndexMap<String, f64>,
}

impl From<Accuracy> for AccuracyRow {
    fn from(a: Accuracy) -> Self {
        AccuracyRow {
            many: a.many,
            medium: a.medium,
            few: a.few,
            all: a.all,
            per_class: a.per_class,
        }
    }
}

/// Everything a train node did in a run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainingReport {
    pub node: String,
    pub seed: u64,
    /// Digest of the graph file and the node's settings the stages were trained under.
    pub trained_under: String,
    pub groups: Option<GroupsRow>,
    pub stages: Vec<StageReport>,
    /// The learner exported as an ONNX classifier folder, once training ended.
    pub model: Option<String>,
}

/// The many / medium / few classes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GroupsRow {
    pub many: Vec<String>,
    pub medium: Vec<String>,
    pub few: Vec<String>,
}

impl From<&Groups> for GroupsRow {
    fn from(g: &Groups) -> Self {
        GroupsRow {
            many: g.many.clone(),
            medium: g.medium.clone(),
            few: g.few.clone(),
        }
    }
}

fn levels_text(levels: &[u16]) -> String {
    if levels.is_empty() {
        return "real".into();
    }
    levels
        .iter()
        .map(|l| format!("{:.1}", f64::from(*l) / 1000.0))
        .collect::<Vec<_>>()
        .join(",")
}

fn percent(value: f64) -> String {
    if value.is_nan() {
        "-".into()
    } else {
        format!("{:.1}", value * 100.0)
    }
}

impl TrainingReport {
    /// The per-stage table, one line a stage (accuracies in percent).
    pub fn table(&self) -> String {
        let mut out = format!(
            "{:>5}  {:<9} {:>6} {:>8} {:>7} {:>6} {:>6}  {:>5} {:>6} {:>5} {:>5}\n",
            "stage",
            "λ",
            "epochs",
            "examples",
            "loss",
            "train",
            "secs",
            "many",
            "medium",
            "few",
            "all"
        );
        for s in &self.stages {
            let (many, medium, few, all) = match &s.test {
                Some(t) => (
                    percent(t.many),
                    percent(t.medium),
                    percent(t.few),
                    percent(t.all),
                ),
                None => ("-".into(), "-".into(), "-".into(), "-".into()),
            };
            out.push_str(&format!(
                "{:>5}  {:<9} {:>6} {:>8} {:>7.4} {:>6} {:>6.1}  {:>5} {:>6} {:>5} {:>5}\n",
                s.stage,
                levels_text(&s.levels),
                s.epochs,
                s.examples,
                s.loss,
                percent(s.train_accuracy),
                s.seconds,
                many,
                medium,
                few,
                all
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_has_a_line_per_stage() {
        let stage = |stage, levels: Vec<u16>| StageReport {
            stage,
            levels,
            epochs: 2,
            version: 0,
            examples: 240,
            synthetic_examples: 40,
            loss: 1.25,
            train_accuracy: 0.5,
            seconds: 3.0,
            test: None,
        };
        let report = TrainingReport {
            node: "learner".into(),
            seed: 1,
            trained_under: "x".into(),
            groups: None,
            stages: vec![stage(0, vec![300, 700]), stage(1, vec![])],
            model: None,
        };
        let table = report.table();
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 3, "{table}");
        assert!(lines[1].contains("0.3,0.7"), "{table}");
        assert!(lines[2].contains("real"), "{table}");
        assert!(lines[2].contains("50.0"), "{table}");
    }
}
