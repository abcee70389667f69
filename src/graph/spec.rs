//! Reading a graph file: the TOML is parsed twice — once for values, once (with `toml_edit`)
//! for where every key stands — so each later error can name its node and line.

use super::fields::FieldError;
use super::output_folder::not_a_folder_of_its_own;
use super::toml_spans::{as_inline_table, entries, line_at, LineIndex, Lines};
use crate::runtime::Device;
use indexmap::IndexMap;
use serde::Deserialize;
use std::fmt;
use std::path::{Path, PathBuf};

/// One problem in a graph file, with where it is.
#[derive(Clone, Debug, PartialEq)]
pub struct GraphError {
    pub file: String,
    pub line: usize,
    /// The node (or `models.NAME`) the error is about, if any.
    pub node: Option<String>,
    /// The field the error is about, where one is known.
    pub field: Option<String>,
    pub message: String,
}

impl fmt::Display for GraphError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: ", self.file, self.line)?;
        if let Some(node) = &self.node {
            write!(f, "{node}: ")?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for GraphError {}

impl GraphError {
    /// An error about a field of `[pipeline]`, a model or a node (`node` labels it).
    pub fn of_field(file: &str, node: Option<&str>, error: FieldError) -> Self {
        GraphError {
            file: file.to_string(),
            line: error.line,
            node: node.map(str::to_string),
            field: error.field,
            message: error.message,
        }
    }
}

/// Names of folders the run itself writes under the output folder; no sink may take them.
pub const RESERVED: &[&str] = &["errors", "state", "synthetic", "report"];

/// `[pipeline]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineSpec {
    /// The pipeline's name.
    pub name: String,
    /// Every file the run writes lands under this folder.
    pub output: PathBuf,
    /// Seed for every keyed random choice.
    #[serde(default)]
    pub seed: u64,
}

/// `[models.NAME]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    /// The model folder.
    pub path: PathBuf,
    /// `cpu`, `cuda` or `cuda:N`.
    #[serde(default, deserialize_with = "super::ops::from_str")]
    pub device: Device,
    /// `"cpu"` to run on the CPU when the device is missing; otherwise that is an error.
    #[serde(default)]
    pub fallback: Option<Fallback>,
    /// ONNX Runtime threads per session.
    #[serde(default = "one")]
    pub threads: usize,
    /// Sessions (service threads) for this model; by default one single-thread session per
    /// core on the CPU (what measured fastest), one session on a GPU.
    #[serde(default)]
    pub sessions: Option<usize>,
    /// The memory this model's sessions may hold (`"6 GiB"`, `"800 MB"`, bytes): it caps the
    /// default number of sessions and a generator's batch. By default 60% of the machine's
    /// memory, split evenly among the models the graph uses.
    #[serde(default, deserialize_with = "super::ops::some_from_str")]
    pub memory: Option<crate::runtime::memory::ByteSize>,
}

/// Where a model runs when its device is missing.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Fallback {
    Cpu,
}

fn one() -> usize {
    1
}

/// `[nodes.NAME]` before its op-specific fields are checked.
#[derive(Clone, Debug)]
pub struct NodeSpec {
    pub name: String,
    pub line: usize,
    pub op: Option<String>,
    pub inputs: Vec<String>,
    /// Every field but `op` and `inputs`, as an inline table whose keys and values keep their
    /// spans.
    pub fields: toml_edit::InlineTable,
    /// Line of each field, `op` and `inputs` included.
    pub field_lines: IndexMap<String, usize>,
    /// Where the graph file's lines start, for turning spans into lines.
    pub lines: std::sync::Arc<LineIndex>,
}

impl NodeSpec {
    /// The line of a field, or of the node when the field is not written.
    pub fn line_of(&self, field: &str) -> usize {
        self.field_lines.get(field).copied().unwrap_or(self.line)
    }
}

/// A parsed graph file.
#[derive(Clone, Debug)]
pub struct GraphFile {
    pub file: String,
    /// BLAKE3 of the file's text: what snapshots record as the graph that made them.
    pub digest: crate::record::Digest,
    pub pipeline: Option<PipelineSpec>,
    pub models: IndexMap<String, (ModelSpec, usize)>,
    pub nodes: IndexMap<String, NodeSpec>,
}

impl GraphFile {
    /// Reads and parses a graph file.
    pub fn read(path: &Path) -> Result<GraphFile, Vec<GraphError>> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            vec![GraphError {
                file: path.display().to_string(),
                line: 0,
                node: None,
                field: None,
                message: format!("cannot read graph file: {e}"),
            }]
        })?;
        GraphFile::parse(&path.display().to_string(), &text)
    }

    /// Parses graph-file text; `file` names it in errors. Reports every error it can find.
    pub fn parse(file: &str, text: &str) -> Result<GraphFile, Vec<GraphError>> {
        let error = |line: usize, node: Option<&str>, message: String| GraphError {
            file: file.to_string(),
            line,
            node: node.map(str::to_string),
            field: None,
            message,
        };
        let doc = toml_edit::Document::parse(text.to_string()).map_err(|e| {
            let line = e.span().map(|s| line_at(text, s.start)).unwrap_or(1);
            vec![error(
                line,
                None,
                format!("not valid TOML: {}", e.message().trim()),
            )]
        })?;
        let lines = Lines {
            index: std::sync::Arc::new(LineIndex::new(text)),
            doc: &doc,
        };
        let root = doc.as_table();
        let mut errors = Vec::new();

        for (key, _) in root.iter() {
            if !["pipeline", "models", "nodes"].contains(&key) {
                errors.push(error(
                    lines.key(&[key]),
                    None,
                    format!("unknown section `{key}` (expected pipeline, models, nodes)"),
                ));
            }
        }
        let pipeline = match root.get("pipeline") {
            None => {
                errors.push(error(
                    1,
                    None,
                    "missing [pipeline] section (name, output, seed)".into(),
                ));
                None
            }
            Some(item) => match lines.read::<PipelineSpec>(item, &["pipeline"]) {
                Ok(spec) => {
                    if let Some(message) = not_a_folder_of_its_own(&spec.output) {
                        let line = lines.key(&["pipeline", "output"]);
                        errors.push(error(line, Some("pipeline"), message));
                    }
                    Some(spec)
                }
                Err(found) => {
                    let place = |e| GraphError::of_field(file, Some("pipeline"), e);
                    errors.extend(found.into_iter().map(place));
                    None
                }
            },
        };
        let mut models = IndexMap::new();
        for (name, item) in entries(root.get("models")) {
            let line = lines.key(&["models", name]);
            let label = format!("models.{name}");
            match lines.read::<ModelSpec>(item, &["models", name]) {
                Ok(spec) => {
                    models.insert(name.to_string(), (spec, line));
                }
                Err(found) => {
                    let place = |e| GraphError::of_field(file, Some(&label), e);
                    errors.extend(found.into_iter().map(place));
                }
            }
        }
        let nodes = read_nodes(file, &lines, entries(root.get("nodes")), &mut errors);
        if root.contains_key("nodes") && nodes.is_empty() && errors.is_empty() {
            errors.push(error(
                lines.key(&["nodes"]),
                None,
                "[nodes] is empty".into(),
            ));
        } else if !root.contains_key("nodes") {
            errors.push(error(1, None, "missing [nodes] section".into()));
        }
        if errors.is_empty() {
            Ok(GraphFile {
                file: file.to_string(),
                digest: crate::record::Digest::of(text.as_bytes()),
                pipeline,
                models,
                nodes,
            })
        } else {
            Err(errors)
        }
    }
}

/// The `[nodes]` entries: name, op, inputs and the op's own fields, each error with its line.
fn read_nodes(
    file: &str,
    lines: &Lines,
    items: Vec<(&str, &toml_edit::Item)>,
    errors: &mut Vec<GraphError>,
) -> IndexMap<String, NodeSpec> {
    let error = |line: usize, node: Option<&str>, message: String| GraphError {
        file: file.to_string(),
        line,
        node: node.map(str::to_string),
        field: None,
        message,
    };
    let mut nodes = IndexMap::new();
    for (name, item) in items {
        let line = lines.key(&["nodes", name]);
        let label = format!("node `{name}`");
        // Node names become folder names under the output folder.
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            errors.push(error(
                line,
                Some(&label),
                "node names may use only letters, digits, `_` and `-`".into(),
            ));
        }
        let Some(mut fields) = as_inline_table(item) else {
            errors.push(error(line, Some(&label), "a node must be a table".into()));
            continue;
        };
        let field_lines: IndexMap<String, usize> = fields
            .iter()
            .map(|(k, _)| (k.to_string(), lines.key(&["nodes", name, k])))
            .collect();
        let op = match fields.remove("op") {
            Some(toml_edit::Value::String(op)) => Some(op.into_value()),
            Some(_) => {
                errors.push(error(
                    field_lines["op"],
                    Some(&label),
                    "`op` must be a string".into(),
                ));
                None
            }
            None => {
                errors.push(error(line, Some(&label), "missing `op`".into()));
                None
            }
        };
        let inputs = match fields.remove("inputs") {
            None => Vec::new(),
            Some(toml_edit::Value::Array(items)) if items.iter().all(|i| i.is_str()) => items
                .iter()
                .filter_map(|i| i.as_str().map(str::to_string))
                .collect(),
            Some(_) => {
                errors.push(error(
                    field_lines["inputs"],
                    Some(&label),
                    "`inputs` must be a list of node names".into(),
                ));
                Vec::new()
            }
        };
        nodes.insert(
            name.to_string(),
            NodeSpec {
                name: name.to_string(),
                line,
                op,
                inputs,
                fields,
                field_lines,
                lines: std::sync::Arc::clone(&lines.index),
            },
        );
    }
    nodes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_nodes_with_lines() {
        let text = "[pipeline]\nname = \"p\"\noutput = \"out\"\n\n[nodes.train]\nop = \"source\"\npath = \"data\"\n\n[nodes.s]\nop = \"classify\"\ninputs = [\"train\"]\nmodel = \"m\"\n";
        let graph = GraphFile::parse("p.toml", text).unwrap();
        let s = &graph.nodes["s"];
        assert_eq!(
            (s.line, s.op.as_deref(), s.inputs.clone()),
            (9, Some("classify"), vec!["train".to_string()])
        );
        assert_eq!(s.line_of("model"), 12);
        assert_eq!(s.line_of("inputs"), 11);
        assert_eq!(graph.pipeline.unwrap().seed, 0);
    }

    #[test]
    fn reports_every_structural_error_with_its_line() {
        let text = "[pipeline]\nname = \"p\"\noutput = \"out\"\ncolour = \"red\"\n\n[models.m]\npth = \"x\"\n\n[nodes.a]\npath = \"d\"\n\n[nodes.b]\nop = 3\ninputs = \"a\"\n";
        let errors = GraphFile::parse("p.toml", text).unwrap_err();
        let shown: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
        assert_eq!(shown.len(), 6, "{shown:#?}");
        assert!(
            shown[0].starts_with("p.toml:4: pipeline: unknown field `colour`"),
            "{}",
            shown[0]
        );
        assert!(
            shown[1].starts_with("p.toml:7: models.m: unknown field `pth`"),
            "{}",
            shown[1]
        );
        // The unknown key left out, the table is read again: `path` is missing too.
        assert_eq!(shown[2], "p.toml:6: models.m: missing field `path`");
        assert_eq!(shown[3], "p.toml:9: node `a`: missing `op`");
        assert_eq!(shown[4], "p.toml:13: node `b`: `op` must be a string");
        assert_eq!(
            shown[5],
            "p.toml:14: node `b`: `inputs` must be a list of node names"
        );
    }

    #[test]
    fn node_names_must_be_folder_safe() {
        let text = "[pipeline]\nname = \"p\"\noutput = \"out\"\n[nodes.\"../x\"]\nop = \"sink\"\n";
        let errors: Vec<String> = GraphFile::parse("p.toml", text)
            .unwrap_err()
            .iter()
            .map(|e| e.to_string())
            .collect();
        assert_eq!(
            errors,
            vec!["p.toml:4: node `../x`: node names may use only letters, digits, `_` and `-`"]
        );
    }

    #[test]
    fn bad_toml_names_its_line() {
        let errors =
            GraphFile::parse("p.toml", "[pipeline]\nname = \"p\"\noutput = \n").unwrap_err();
        assert_eq!(errors.len(), 1);
        assert!(
            errors[0]
                .to_string()
                .starts_with("p.toml:3: not valid TOML"),
            "{}",
            errors[0]
        );
    }
}
