//! Turning opened resources into what every worker shares: each node started (inference
//! services, the image store) and a counter set per node.

use crate::graph::build::{Shared, ERRORS_SINK};
use crate::graph::ops::context::RunInfo;
use crate::graph::{Compiled, Resources};
use crate::operators::NodeStats;
use indexmap::IndexMap;
use std::sync::Arc;

/// Starts the nodes of a compiled graph and gathers what its workers share.
pub fn prepare(compiled: &Compiled, resources: Resources, run: RunInfo) -> Result<Shared, String> {
    let mut stats: IndexMap<String, Arc<NodeStats>> = compiled
        .nodes
        .keys()
        .map(|n| (n.clone(), Arc::new(NodeStats::default())))
        .collect();
    stats.insert(ERRORS_SINK.into(), Arc::new(NodeStats::default()));
    let nodes = resources.start(run.clone())?;
    Ok(Shared {
        compiled: compiled.clone(),
        run,
        nodes,
        stats,
        errors_log: Arc::default(),
    })
}
