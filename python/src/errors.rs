//! The engine's errors as the Python package's exceptions, which live in `discl/_errors.py`:
//! `GraphError` (every error of a graph file, each with file, line, node and field) and
//! `DisclError` (a run or a call that failed).

use discl::graph::GraphError;
use discl::PipelineError;
use pyo3::prelude::*;

/// A Python exception of class `name` from `discl._errors`, made with `args`.
fn exception<'py>(py: Python<'py>, name: &str, args: impl IntoPyObject<'py>) -> PyErr {
    let made = py
        .import("discl._errors")
        .and_then(|module| module.getattr(name))
        .and_then(|class| class.call1((args,)));
    match made {
        Ok(value) => PyErr::from_value(value),
        Err(error) => error,
    }
}

/// `DisclError(message)`.
pub fn run_error(py: Python<'_>, message: String) -> PyErr {
    exception(py, "DisclError", message)
}

/// The node a graph error names: the engine labels it ``node `name` `` or `models.NAME`; the
/// bare node name, or the label as it is for anything else.
fn node_name(label: &str) -> String {
    label
        .strip_prefix("node `")
        .and_then(|rest| rest.strip_suffix('`'))
        .unwrap_or(label)
        .to_string()
}

/// One graph error as the tuple `discl.GraphError` reads:
/// (file, line, node, label, field, message).
type ErrorTuple = (
    String,
    usize,
    Option<String>,
    Option<String>,
    Option<String>,
    String,
);

fn error_tuple(error: &GraphError) -> ErrorTuple {
    (
        error.file.clone(),
        error.line,
        error.node.as_deref().map(node_name),
        error.node.clone(),
        error.field.clone(),
        error.message.clone(),
    )
}

/// The exception for a pipeline error.
pub fn to_py(py: Python<'_>, error: PipelineError) -> PyErr {
    match error {
        PipelineError::Graph(errors) => exception(
            py,
            "GraphError",
            errors.iter().map(error_tuple).collect::<Vec<_>>(),
        ),
        other => run_error(py, other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::node_name;

    #[test]
    fn node_labels_become_names() {
        assert_eq!(node_name("node `out`"), "out");
        assert_eq!(node_name("node `a`b`"), "a`b");
        assert_eq!(node_name("models.judge"), "models.judge");
        assert_eq!(node_name("[pipeline]"), "[pipeline]");
    }
}
