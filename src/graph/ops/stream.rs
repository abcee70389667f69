//! What flows along a graph edge inside a worker: a collection of one record kind.

use crate::record::{Progress, RecordKind, Sample, Score, StageItem, StagePlan, Synthetic};
use crate::store::manifest::Row;
use differential_dataflow::VecCollection;

/// A node's output collection; its kind is the one the compiler checked.
#[derive(Clone)]
pub enum Stream<'scope> {
    Samples(VecCollection<'scope, u64, Sample>),
    Scores(VecCollection<'scope, u64, Score>),
    Synthetics(VecCollection<'scope, u64, Synthetic>),
    Progress(VecCollection<'scope, u64, Progress>),
    Plans(VecCollection<'scope, u64, StagePlan>),
    StageItems(VecCollection<'scope, u64, StageItem>),
    /// A node that gives nothing (a sink).
    Nothing,
}

impl<'scope> Stream<'scope> {
    /// The kind of record it carries (`None` for nothing).
    pub fn kind(&self) -> Option<RecordKind> {
        match self {
            Stream::Samples(_) => Some(RecordKind::Sample),
            Stream::Scores(_) => Some(RecordKind::Score),
            Stream::Synthetics(_) => Some(RecordKind::Synthetic),
            Stream::Progress(_) => Some(RecordKind::Progress),
            Stream::Plans(_) => Some(RecordKind::StagePlan),
            Stream::StageItems(_) => Some(RecordKind::StageItem),
            Stream::Nothing => None,
        }
    }
    /// The samples (the compiler checked the kind).
    pub fn samples(&self) -> VecCollection<'scope, u64, Sample> {
        match self {
            Stream::Samples(c) => c.clone(),
            _ => unreachable!("the compiler checked record kinds"),
        }
    }
    /// The scores (the compiler checked the kind).
    pub fn scores(&self) -> VecCollection<'scope, u64, Score> {
        match self {
            Stream::Scores(c) => c.clone(),
            _ => unreachable!("the compiler checked record kinds"),
        }
    }
    /// The synthetic images (the compiler checked the kind).
    pub fn synthetics(&self) -> VecCollection<'scope, u64, Synthetic> {
        match self {
            Stream::Synthetics(c) => c.clone(),
            _ => unreachable!("the compiler checked record kinds"),
        }
    }
    /// The validation progress (the compiler checked the kind).
    pub fn progress(&self) -> VecCollection<'scope, u64, Progress> {
        match self {
            Stream::Progress(c) => c.clone(),
            _ => unreachable!("the compiler checked record kinds"),
        }
    }
    /// The stage plans (the compiler checked the kind).
    pub fn plans(&self) -> VecCollection<'scope, u64, StagePlan> {
        match self {
            Stream::Plans(c) => c.clone(),
            _ => unreachable!("the compiler checked record kinds"),
        }
    }
    /// The records as sink rows tagged with the sink input's index.
    pub fn rows(&self, index: usize) -> VecCollection<'scope, u64, (usize, Row)> {
        match self {
            Stream::Samples(c) => c.clone().map(move |s| (index, Row::Sample(s))),
            Stream::Scores(c) => c.clone().map(move |s| (index, Row::Score(s))),
            Stream::Synthetics(c) => c.clone().map(move |s| (index, Row::Synthetic(s))),
            Stream::Progress(c) => c.clone().map(move |s| (index, Row::Progress(s))),
            Stream::Plans(c) => c.clone().map(move |s| (index, Row::StagePlan(s))),
            Stream::StageItems(c) => c.clone().map(move |s| (index, Row::StageItem(s))),
            Stream::Nothing => unreachable!("the compiler refuses sinks as inputs"),
        }
    }
}
