//! The `discl.toml` file beside every classifier or scorer model: input size, normalisation,
//! class names and output names, so the engine never guesses how to feed a model.

use super::error::RuntimeError;
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// The metadata file's name inside a model folder.
pub const META_FILE: &str = "discl.toml";

/// A classifier's or scorer's metadata, as written in its `discl.toml`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelMeta {
    /// `"classifier"` or `"judge"`.
    pub kind: String,
    /// The ONNX file, relative to the model folder.
    pub onnx: String,
    /// The name of the image input.
    pub input: String,
    /// Channels, height, width of the image input.
    pub input_shape: [usize; 3],
    /// Per-channel mean subtracted after scaling pixels to [0, 1].
    pub mean: Vec<f32>,
    /// Per-channel standard deviation divided by after the mean.
    pub std: Vec<f32>,
    /// Class names in output order (the image folders' sub-folder names).
    pub classes: Vec<String>,
    /// Human-readable class names, used in prompts; defaults to `classes`.
    #[serde(default)]
    pub display_names: Option<Vec<String>>,
    /// Output roles to output names (`logits`, `features`, `image_embeds`, `text_embeds`).
    pub outputs: indexmap::IndexMap<String, String>,
}

impl ModelMeta {
    /// The image input this model wants: its size and normalisation.
    pub fn image_spec(&self) -> super::image_input::ImageSpec {
        let [channels, height, width] = self.input_shape;
        super::image_input::ImageSpec {
            channels,
            height,
            width,
            mean: self.mean.clone(),
            std: self.std.clone(),
        }
    }

    /// Reads `<folder>/discl.toml` and checks it is self-consistent.
    pub fn load(folder: &Path) -> Result<(ModelMeta, PathBuf), RuntimeError> {
        let file = folder.join(META_FILE);
        let text = std::fs::read_to_string(&file).map_err(|e| RuntimeError::io(&file, e))?;
        let meta: ModelMeta = toml::from_str(&text).map_err(|source| RuntimeError::Toml {
            file: file.clone(),
            source,
        })?;
        meta.check(&file)?;
        Ok((meta, file))
    }

    /// Checks the metadata is self-consistent; errors name `file`.
    fn check(&self, file: &Path) -> Result<(), RuntimeError> {
        let fail = |message: String| Err(RuntimeError::config(file, message));
        let channels = self.input_shape[0];
        if channels != 1 && channels != 3 {
            return fail(format!(
                "input_shape has {channels} channels; 1 (grey) or 3 (RGB) are supported"
            ));
        }
        if self.mean.len() != channels || self.std.len() != channels {
            return fail(format!(
                "mean and std need {channels} values each, one per channel"
            ));
        }
        if self.std.iter().any(|s| *s <= 0.0) {
            return fail("std values must be positive".into());
        }
        if self.classes.is_empty() {
            return fail("classes is empty".into());
        }
        if let Some(names) = &self.display_names {
            if names.len() != self.classes.len() {
                return fail(format!(
                    "display_names has {} names for {} classes",
                    names.len(),
                    self.classes.len()
                ));
            }
        }
        Ok(())
    }

    /// The output name for a role, or an error naming the missing role.
    pub fn output(&self, role: &str) -> Result<&str, RuntimeError> {
        self.outputs
            .get(role)
            .map(String::as_str)
            .ok_or_else(|| RuntimeError::NoOutputRole {
                role: role.to_string(),
            })
    }

    /// Index of a class name.
    pub fn class_index(&self, class: &str) -> Option<usize> {
        self.classes.iter().position(|c| c == class)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, text: &str) {
        std::fs::write(dir.join(META_FILE), text).unwrap();
    }

    #[test]
    fn reads_and_checks_metadata() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            r#"kind = "classifier"
onnx = "model.onnx"
input = "input"
input_shape = [1, 28, 28]
mean = [0.5]
std = [0.5]
classes = ["a", "b"]
[outputs]
logits = "logits"
"#,
        );
        let (meta, _) = ModelMeta::load(dir.path()).unwrap();
        assert_eq!(meta.class_index("b"), Some(1));
        assert_eq!(meta.output("logits").unwrap(), "logits");
        assert!(meta
            .output("features")
            .unwrap_err()
            .to_string()
            .contains("no `features`"));
    }

    #[test]
    fn rejects_inconsistent_metadata_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            r#"kind = "classifier"
onnx = "model.onnx"
input = "input"
input_shape = [3, 28, 28]
mean = [0.5]
std = [0.5]
classes = ["a"]
[outputs]
logits = "logits"
"#,
        );
        let err = ModelMeta::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("discl.toml"), "{err}");
        assert!(err.contains("3 values each"), "{err}");
        write(dir.path(), "kind = \"classifier\"\nbogus = 1\n");
        let err = ModelMeta::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("bogus"), "{err}");
    }
}
