//! `op = "source"`: samples from an image folder (one sub-folder per class) or a JSONL/CSV
//! manifest, rescanned at every refresh; the driver feeds what changed.

use super::{Dataflow, NodeInfo, Op, OpError, Opened, ModelPool, Ready, Role, SourceInput, Stream};
use crate::operators::{SourceLocation, SourceOptions, SourceState};
use crate::record::{RecordKind, Sample};
use crate::runtime::image_input::DEFAULT_MAX_PIXELS;
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
    /// Pixels (width × height) an image may have; larger images are error records, refused
    /// from their header before any pixel is decoded.
    #[serde(default = "default_max_pixels")]
    pub max_pixels: u64,
    /// Read image-folder files that are symbolic links to files outside the folder (refused
    /// as error records by default).
    #[serde(default)]
    pub allow_outside_links: bool,
}

fn default_max_pixels() -> u64 {
    DEFAULT_MAX_PIXELS
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
    fn sample_folder(&self) -> Option<&std::path::Path> {
        (self.format == SourceFormat::ImageFolder).then_some(self.path.as_path())
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
        if self.max_pixels == 0 {
            let message = "max_pixels must be at least 1";
            return Err(vec![OpError::field("max_pixels", message)]);
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
            state: SourceState::new(&node.name, location).with_options(SourceOptions {
                max_pixels: self.max_pixels,
                allow_outside_links: self.allow_outside_links,
            }),
            input,
        });
        Stream::Samples(samples)
    }
}
