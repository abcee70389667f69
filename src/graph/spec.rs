//! Reading a graph file: the TOML is parsed twice — once for values, once (with `toml_edit`)
//! for where every key stands — so each later error can name its node and line.

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
    #[serde(default = "default_device")]
    pub device: String,
    /// `"cpu"` to run on the CPU when the device is missing; otherwise that is an error.
    #[serde(default)]
    pub fallback: Option<String>,
    /// ONNX Runtime threads per session.
    #[serde(default = "one")]
    pub threads: usize,
    /// Sessions (service threads) for this model.
    #[serde(default = "one")]
    pub sessions: usize,
}

fn default_device() -> String {
    "cpu".into()
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
    /// Every field but `op` and `inputs`.
    pub fields: toml::Table,
    /// Line of each field, `op` and `inputs` included.
    pub field_lines: IndexMap<String, usize>,
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
        let values: toml::Table =
            toml::from_str(text).map_err(|e| vec![error(1, None, e.message().to_string())])?;
        let lines = Lines { text, doc: &doc };
        let mut errors = Vec::new();

        for key in values.keys() {
            if !["pipeline", "models", "nodes"].contains(&key.as_str()) {
                errors.push(error(
                    lines.key(&[key]),
                    None,
                    format!("unknown section `{key}` (expected pipeline, models, nodes)"),
                ));
            }
        }
        let pipeline = match values.get("pipeline") {
            None => {
                errors.push(error(
                    1,
                    None,
                    "missing [pipeline] section (name, output, seed)".into(),
                ));
                None
            }
            Some(value) => match value.clone().try_into::<PipelineSpec>() {
                Ok(spec) => Some(spec),
                Err(e) => {
                    let message = e.message().to_string();
                    let line = lines.field_line(&["pipeline"], &message);
                    errors.push(error(line, Some("pipeline"), message));
                    None
                }
            },
        };
        let mut models = IndexMap::new();
        for (name, value) in table(values.get("models")) {
            let line = lines.key(&["models", name]);
            let label = format!("models.{name}");
            match value.clone().try_into::<ModelSpec>() {
                Ok(spec) => {
                    models.insert(name.clone(), (spec, line));
                }
                Err(e) => {
                    let message = e.message().to_string();
                    errors.push(error(
                        lines.field_line(&["models", name], &message),
                        Some(&label),
                        message,
                    ));
                }
            }
        }
        let mut nodes = IndexMap::new();
        for (name, value) in table(values.get("nodes")) {
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
            let Some(fields) = value.as_table() else {
                errors.push(error(line, Some(&label), "a node must be a table".into()));
                continue;
            };
            let mut fields = fields.clone();
            let field_lines: IndexMap<String, usize> = fields
                .keys()
                .map(|k| (k.clone(), lines.key(&["nodes", name, k])))
                .collect();
            let op = match fields.remove("op") {
                Some(toml::Value::String(op)) => Some(op),
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
                Some(toml::Value::Array(items)) if items.iter().all(|i| i.is_str()) => items
                    .iter()
                    .map(|i| i.as_str().expect("checked").to_string())
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
                name.clone(),
                NodeSpec {
                    name: name.clone(),
                    line,
                    op,
                    inputs,
                    fields,
                    field_lines,
                },
            );
        }
        if values.contains_key("nodes") && nodes.is_empty() && errors.is_empty() {
            errors.push(error(
                lines.key(&["nodes"]),
                None,
                "[nodes] is empty".into(),
            ));
        } else if !values.contains_key("nodes") {
            errors.push(error(1, None, "missing [nodes] section".into()));
        }
        if errors.is_empty() {
            Ok(GraphFile {
                file: file.to_string(),
                pipeline,
                models,
                nodes,
            })
        } else {
            Err(errors)
        }
    }
}

fn table(value: Option<&toml::Value>) -> impl Iterator<Item = (&String, &toml::Value)> {
    value
        .and_then(toml::Value::as_table)
        .into_iter()
        .flat_map(|t| t.iter())
}

/// 1-based line of a byte offset.
pub fn line_at(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())]
        .bytes()
        .filter(|b| *b == b'\n')
        .count()
        + 1
}

struct Lines<'a> {
    text: &'a str,
    doc: &'a toml_edit::Document<String>,
}

impl Lines<'_> {
    /// The line where the key at `path` is written (the nearest written parent otherwise).
    fn key(&self, path: &[&str]) -> usize {
        let mut table: &dyn toml_edit::TableLike = self.doc.as_table();
        let mut line = 1;
        for (depth, part) in path.iter().enumerate() {
            let Some((key, item)) = table.get_key_value(part) else {
                break;
            };
            if let Some(span) = key.span() {
                line = line_at(self.text, span.start);
            } else if let Some(span) = item.span() {
                line = line_at(self.text, span.start);
            }
            match item.as_table_like() {
                Some(inner) if depth + 1 < path.len() => table = inner,
                _ => break,
            }
        }
        line
    }

    /// For a serde error about a table at `path`, the line of the field the message names
    /// (`unknown field `x``, `invalid type ... for key `x``), or the table's own line.
    fn field_line(&self, path: &[&str], message: &str) -> usize {
        match backticked(message) {
            Some(field) => {
                let mut full: Vec<&str> = path.to_vec();
                full.push(field);
                self.key(&full)
            }
            None => self.key(path),
        }
    }
}

/// The first `backticked` word of a message.
pub fn backticked(message: &str) -> Option<&str> {
    let start = message.find('`')? + 1;
    let len = message[start..].find('`')?;
    Some(&message[start..start + len])
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
        assert_eq!(shown.len(), 5, "{shown:#?}");
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
        assert_eq!(shown[2], "p.toml:9: node `a`: missing `op`");
        assert_eq!(shown[3], "p.toml:13: node `b`: `op` must be a string");
        assert_eq!(
            shown[4],
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
