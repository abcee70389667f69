//! `op = "feedback"`: trainer scores from `<path>/checkpoint-N.jsonl` (or pushed through the
//! API), checked against the samples so scores of unknown samples become error records; and,
//! as the output `<node>.progress`, validation progress from `<path>/progress-N.jsonl` for the
//! adaptive curriculum.

use super::{Dataflow, FeedbackInput, ModelPool, NodeInfo, Op, OpError, Opened, Ready, Role, Stream};
use crate::operators::feedback::{LocatedProgress, LocatedScore};
use crate::operators::{FeedbackExt, FeedbackState};
use crate::record::RecordKind;
use differential_dataflow::input::Input;
use serde::Deserialize;
use std::path::PathBuf;
use std::sync::Arc;

/// `op = "feedback"`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeedbackConfig {
    /// The folder the trainer writes checkpoint files into.
    pub path: PathBuf,
}

impl Op for FeedbackConfig {
    fn kind(&self) -> &'static str {
        "feedback"
    }
    fn arity(&self) -> (usize, usize) {
        (1, 1)
    }
    fn output(&self, inputs: &[RecordKind]) -> Result<Option<RecordKind>, OpError> {
        match inputs {
            [RecordKind::Sample] => Ok(Some(RecordKind::Score)),
            _ => Err(super::wrong_inputs("one input of Sample", inputs)),
        }
    }
    fn port(&self, port: &str, _inputs: &[RecordKind]) -> Option<RecordKind> {
        (port == "progress").then_some(RecordKind::Progress)
    }
    fn role(&self) -> Role {
        Role::Input
    }
    fn feedback_folder(&self) -> Option<&std::path::Path> {
        Some(&self.path)
    }
    fn dot_detail(&self) -> String {
        self.path.display().to_string()
    }
    fn open(&self, _node: &NodeInfo, _pool: &mut ModelPool) -> Result<Box<dyn Opened>, Vec<OpError>> {
        if self.path.exists() && !self.path.is_dir() {
            let message = format!("{}: not a folder", self.path.display());
            return Err(vec![OpError::field("path", message)]);
        }
        Ok(Box::new(Ready(self.clone())))
    }
}

impl super::Node for FeedbackConfig {
    fn build<'scope>(
        &self,
        dataflow: &mut Dataflow<'scope>,
        node: &NodeInfo,
        inputs: &[Stream<'scope>],
    ) -> Stream<'scope> {
        let stats = dataflow.stats_of(&node.name);
        let (input, located) = dataflow.scope.new_collection::<LocatedScore, isize>();
        let (progress, located_progress) =
            dataflow.scope.new_collection::<LocatedProgress, isize>();
        dataflow.feedback.push(FeedbackInput {
            node: node.name.clone(),
            state: FeedbackState::new(&node.name, self.path.clone()),
            input,
            progress,
        });
        let progress = located_progress.map(|(progress, _)| progress);
        dataflow.add_port(&node.name, "progress", Stream::Progress(progress));
        let counted = Arc::clone(&stats);
        let located = located.inspect(move |(_, _, diff)| counted.records_in(*diff));
        let (scores, unknown) = located.against_samples(&node.name, inputs[0].samples());
        let counted = Arc::clone(&stats);
        dataflow
            .errors
            .push(unknown.inspect(move |(_, _, diff)| counted.error(*diff)));
        Stream::Scores(scores.inspect(move |(_, _, diff)| stats.records_out(*diff)))
    }
}
