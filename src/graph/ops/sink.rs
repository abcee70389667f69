//! `op = "sink"`: writes the collections wired into it as manifests under
//! `<output>/<node>/vNNNNNN/<input>.{jsonl,parquet}`, one consistent snapshot per version.

use super::{Dataflow, GraphContext, ModelPool, Node, NodeInfo, Op, OpError, Opened, Role, StartContext, Stream};
use crate::graph::spec::RESERVED;
use crate::operators::sink::{Publish, SinkLog};
use crate::operators::{SinkExt, SinkParams};
use crate::record::RecordKind;
use crate::store::manifest::ManifestFormat;
use serde::{Deserialize, Deserializer};
use std::sync::{Arc, Mutex};
use timely::dataflow::operators::probe::Probe;

/// `op = "sink"`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkConfig {
    /// Any of `"jsonl"`, `"parquet"`.
    #[serde(default = "default_formats", deserialize_with = "formats")]
    pub formats: Vec<ManifestFormat>,
    /// Past versions kept beside the current one.
    #[serde(default = "default_keep")]
    pub keep_versions: usize,
}

fn default_formats() -> Vec<ManifestFormat> {
    vec![ManifestFormat::Jsonl]
}
fn default_keep() -> usize {
    3
}

fn formats<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<ManifestFormat>, D::Error> {
    Vec::<String>::deserialize(deserializer)?
        .iter()
        .map(|f| {
            ManifestFormat::parse(f).ok_or_else(|| {
                serde::de::Error::custom(format!(
                    "unknown format `{f}` (expected \"jsonl\" or \"parquet\")"
                ))
            })
        })
        .collect()
}

impl Op for SinkConfig {
    fn kind(&self) -> &'static str {
        "sink"
    }
    fn arity(&self) -> (usize, usize) {
        (1, usize::MAX)
    }
    fn check(&self, graph: &GraphContext) -> Vec<OpError> {
        if RESERVED.contains(&graph.node) {
            let name = graph.node;
            return vec![OpError::node(format!(
                "a sink cannot be named `{name}`: the run writes its own `{name}/` folder"
            ))];
        }
        Vec::new()
    }
    fn output(&self, inputs: &[RecordKind]) -> Result<Option<RecordKind>, OpError> {
        if inputs.is_empty() {
            return Err(OpError::field("inputs", "a sink needs at least one input"));
        }
        Ok(None)
    }
    fn role(&self) -> Role {
        Role::Output
    }
    fn kept_versions(&self) -> Option<usize> {
        Some(self.keep_versions)
    }
    fn dot_detail(&self) -> String {
        let names: Vec<String> = self
            .formats
            .iter()
            .map(|f| format!("{f:?}").to_lowercase())
            .collect();
        names.join(", ")
    }
    fn open(&self, _node: &NodeInfo, _pool: &mut ModelPool) -> Result<Box<dyn Opened>, Vec<OpError>> {
        Ok(Box::new(self.clone()))
    }
}

impl Opened for SinkConfig {
    fn start(self: Box<Self>, _run: &mut StartContext) -> Result<Arc<dyn Node>, String> {
        Ok(Arc::new(SinkNode {
            config: *self,
            log: Arc::default(),
        }))
    }
}

struct SinkNode {
    config: SinkConfig,
    log: Arc<Mutex<SinkLog>>,
}

impl Node for SinkNode {
    fn build<'scope>(
        &self,
        dataflow: &mut Dataflow<'scope>,
        node: &NodeInfo,
        inputs: &[Stream<'scope>],
    ) -> Stream<'scope> {
        let rows: Vec<_> = inputs.iter().enumerate().map(|(i, s)| s.rows(i)).collect();
        let rows = differential_dataflow::collection::concatenate(dataflow.scope, rows);
        let output = &dataflow.run.output;
        rows.sink_manifests(SinkParams {
            node: node.name.clone(),
            folder: output.join(&node.name),
            inputs: node.inputs.clone(),
            kinds: node.input_kinds.iter().map(|k| (*k).into()).collect(),
            formats: self.config.formats.clone(),
            keep_versions: self.config.keep_versions,
            first_version: dataflow.run.first_version,
            report: Some(output.clone()),
            stats: dataflow.stats_of(&node.name),
            written: Arc::clone(&self.log),
            provenance: dataflow.run.provenance.clone(),
            publish: Publish::AtCommit,
        })
        .probe_with(&dataflow.probe);
        Stream::Nothing
    }
    fn sink_log(&self) -> Option<&Arc<Mutex<SinkLog>>> {
        Some(&self.log)
    }
}
