//! `op = "source"`: samples from an image folder (one sub-folder per class) or a JSONL/CSV
//! manifest, rescanned at every refresh; the driver feeds what changed.

use super::{Dataflow, NodeInfo, Op, OpError, Opened, ModelPool, Ready, Role, SourceInput, Stream};
use crate::operators::{SourceLocation, SourceState};
use crate::record::{RecordKind, Sample};
use differential_dataflow::input::Input;
use serde::Deserialize;
use std::path::PathBuf;

/// `op = "source"`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// `"image_folder"` (one sub-folder per class) or `"manifest"` (`.jsonl` or `.csv`).
    pub format: SourceFormat,
    /// The folder or manifest file.
    pub path: PathBuf,
}

/// What a source reads.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum SourceFormat {
    ImageFolder,
    Manifest,
}

impl Op for SourceConfig {
    fn kind(&self) -> &'static str {
        "source"
    }
    fn arity(&self) -> (usize, usize) {
        (0, 0)
    }
    fn output(&self, inputs: &[RecordKind]) -> Result<Option<RecordKind>, OpError> {
        if !inputs.is_empty() {
            return Err(OpError::field("inputs", "a source takes no inputs"));
        }
        Ok(Some(RecordKind::Sample))
    }
    fn role(&self) -> Role {
        Role::Input
    }
    fn dot_detail(&self) -> String {
        self.path.display().to_string()
    }
    fn open(&self, _node: &NodeInfo, _pool: &mut ModelPool) -> Result<Box<dyn Opened>, Vec<OpError>> {
        let (ok, what) = match self.format {
            SourceFormat::ImageFolder => (self.path.is_dir(), "image folder"),
            SourceFormat::Manifest => (self.path.is_file(), "manifest file"),
        };
        if !ok {
            let message = format!("{}: no such {what}", self.path.display());
            return Err(vec![OpError::field("path", message)]);
        }
        Ok(Box::new(Ready(self.clone())))
    }
}

impl super::Node for SourceConfig {
    fn build<'scope>(
        &self,
        dataflow: &mut Dataflow<'scope>,
        node: &NodeInfo,
        _inputs: &[Stream<'scope>],
    ) -> Stream<'scope> {
        let (input, samples) = dataflow.scope.new_collection::<Sample, isize>();
        let location = match self.format {
            SourceFormat::ImageFolder => SourceLocation::ImageFolder(self.path.clone()),
            SourceFormat::Manifest => SourceLocation::Manifest(self.path.clone()),
        };
        dataflow.sources.push(SourceInput {
            node: node.name.clone(),
            state: SourceState::new(&node.name, location),
            input,
        });
        Stream::Samples(samples)
    }
}
