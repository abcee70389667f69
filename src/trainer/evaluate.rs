//! How well the learner does: accuracy on a test image folder (one sub-folder per class), per
//! class and per many / medium / few group, the groups set by each class's training count.

use crate::runtime::learner::{Learner, LearnerImage};
use indexmap::IndexMap;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The many / medium / few split of the classes by training count.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Groups {
    pub many: Vec<String>,
    pub medium: Vec<String>,
    pub few: Vec<String>,
}

impl Groups {
    /// Classes with more than `many_above` training samples are many, fewer than `few_below`
    /// few, the rest medium; `counts` is per class in the learner's class order.
    pub fn by_count(
        counts: &IndexMap<String, usize>,
        many_above: usize,
        few_below: usize,
    ) -> Groups {
        let pick = |keep: &dyn Fn(usize) -> bool| -> Vec<String> {
            counts
                .iter()
                .filter(|(_, n)| keep(**n))
                .map(|(c, _)| c.clone())
                .collect()
        };
        Groups {
            many: pick(&|n| n > many_above),
            medium: pick(&|n| n <= many_above && n >= few_below),
            few: pick(&|n| n < few_below),
        }
    }

    /// Each group's name and classes, in table order.
    pub fn named(&self) -> [(&'static str, &[String]); 3] {
        [
            ("many", &self.many),
            ("medium", &self.medium),
            ("few", &self.few),
        ]
    }
}

/// A test folder's images with their class indices, sorted by path.
pub struct TestSet {
    pub images: Vec<LearnerImage>,
    pub labels: Vec<usize>,
}

impl TestSet {
    /// Reads `<folder>/<class>/*.{png,jpg,jpeg}`; a sub-folder that is not one of `classes`
    /// is an error naming it.
    pub fn read(folder: &Path, classes: &[String]) -> Result<TestSet, String> {
        let fail = |path: &Path, e: std::io::Error| format!("{}: {e}", path.display());
        let mut found: BTreeMap<PathBuf, usize> = BTreeMap::new();
        for entry in std::fs::read_dir(folder).map_err(|e| fail(folder, e))? {
            let entry = entry.map_err(|e| fail(folder, e))?;
            if !entry
                .file_type()
                .map_err(|e| fail(&entry.path(), e))?
                .is_dir()
            {
                continue;
            }
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(label) = classes.iter().position(|c| *c == name) else {
                return Err(format!(
                    "{}: `{name}` is not a class of the learner ({})",
                    entry.path().display(),
                    classes.join(", ")
                ));
            };
            for file in std::fs::read_dir(entry.path()).map_err(|e| fail(&entry.path(), e))? {
                let path = file.map_err(|e| fail(&entry.path(), e))?.path();
                let image = path.extension().and_then(|e| e.to_str()).is_some_and(|e| {
                    matches!(e.to_ascii_lowercase().as_str(), "png" | "jpg" | "jpeg")
                });
                if image {
                    found.insert(path, label);
                }
            }
        }
        if found.is_empty() {
            return Err(format!("{}: no test images", folder.display()));
        }
        let (images, labels) = found
            .into_iter()
            .map(|(path, label)| (LearnerImage::File(path), label))
            .unzip();
        Ok(TestSet { images, labels })
    }
}

/// Accuracy per class, per group and over all test images.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Accuracy {
    pub per_class: IndexMap<String, f64>,
    pub many: f64,
    pub medium: f64,
    pub few: f64,
    pub all: f64,
}

/// The learner's accuracy on `test`; a group's is the mean over its classes' test images.
pub fn accuracy(learner: &Learner, test: &TestSet, groups: &Groups) -> Result<Accuracy, String> {
    let logits = learner.logits(&test.images).map_err(|e| e.to_string())?;
    let classes = learner.classes();
    let mut right = vec![0usize; classes.len()];
    let mut total = vec![0usize; classes.len()];
    for (row, &label) in logits.iter().zip(&test.labels) {
        total[label] += 1;
        if argmax(row) == label {
            right[label] += 1;
        }
    }
    let rate = |members: &[usize]| -> f64 {
        let (r, t) = members
            .iter()
            .fold((0, 0), |(r, t), &c| (r + right[c], t + total[c]));
        if t == 0 {
            f64::NAN
        } else {
            r as f64 / t as f64
        }
    };
    let index = |names: &[String]| -> Vec<usize> {
        names
            .iter()
            .filter_map(|n| classes.iter().position(|c| c == n))
            .collect()
    };
    let per_class = classes
        .iter()
        .enumerate()
        .filter(|(c, _)| total[*c] > 0)
        .map(|(c, name)| (name.clone(), rate(&[c])))
        .collect();
    Ok(Accuracy {
        per_class,
        many: rate(&index(&groups.many)),
        medium: rate(&index(&groups.medium)),
        few: rate(&index(&groups.few)),
        all: rate(&(0..classes.len()).collect::<Vec<_>>()),
    })
}

/// The index of the largest value (the first of ties).
pub fn argmax(row: &[f32]) -> usize {
    row.iter()
        .enumerate()
        .fold(0, |best, (i, v)| if *v > row[best] { i } else { best })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_follow_the_thresholds() {
        let counts: IndexMap<String, usize> = [("a", 500), ("b", 100), ("c", 20), ("d", 19)]
            .into_iter()
            .map(|(c, n)| (c.to_string(), n))
            .collect();
        let groups = Groups::by_count(&counts, 100, 20);
        assert_eq!(groups.many, vec!["a"]);
        assert_eq!(groups.medium, vec!["b", "c"]);
        assert_eq!(groups.few, vec!["d"]);
        assert_eq!(argmax(&[0.1, 0.7, 0.7, 0.2]), 1);
    }
}
