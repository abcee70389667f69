//! Reading a table of fields (a node's op fields, `[pipeline]`, a `[models]` entry) so that every
//! wrong field is reported, not only the first: serde stops at the first error, so the field it
//! names is reported with its line and left out, and the rest is read again, until the table
//! reads or an error names no field. A table of n fields is read at most n + 1 times.

use super::toml_spans::{LineIndex, ReadError};
use std::ops::Range;

/// One wrong field (or a problem with the table as a whole), with its line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    pub line: usize,
    /// The field, when the error points into one.
    pub field: Option<String>,
    pub message: String,
}

/// Reads `table` with `parse`, reporting every field that fails. `line` places errors that
/// point nowhere (a missing field).
pub fn read_every_field<T>(
    table: &toml_edit::InlineTable,
    lines: &LineIndex,
    line: usize,
    parse: impl Fn(toml_edit::Value) -> Result<T, ReadError>,
) -> Result<T, Vec<FieldError>> {
    let written = field_ranges(table);
    let mut table = table.clone();
    let mut errors = Vec::new();
    let mut left_out: Vec<&str> = Vec::new();
    loop {
        let error = match parse(toml_edit::Value::InlineTable(table.clone())) {
            Ok(value) if errors.is_empty() => return Ok(value),
            Ok(_) => return Err(errors),
            Err(error) => error,
        };
        let message = error.message.trim().to_string();
        let field = error.span.as_ref().and_then(|span| {
            written
                .iter()
                .find(|(name, range)| table.contains_key(name) && within(span, range))
                .map(|(name, _)| name.as_str())
        });
        let line = error.span.map_or(line, |span| lines.line(span.start));
        let Some(field) = field else {
            // Leaving a wrong field out can make a required one missing: that one was reported.
            let missing = missing_field(&message).map(str::to_string);
            if !missing.as_deref().is_some_and(|m| left_out.contains(&m)) {
                errors.push(FieldError {
                    line,
                    field: missing,
                    message,
                });
            }
            return Err(errors);
        };
        errors.push(FieldError {
            line,
            field: Some(field.to_string()),
            message: naming(field, message),
        });
        table.remove(field);
        left_out.push(field);
    }
}

/// The message, led by the field's name unless it names the field already.
fn naming(field: &str, message: String) -> String {
    if message.contains(&format!("`{field}`")) {
        message
    } else {
        format!("field `{field}`: {message}")
    }
}

/// The field serde says is missing, if that is the error.
fn missing_field(message: &str) -> Option<&str> {
    message.strip_prefix("missing field `")?.strip_suffix('`')
}

/// Where each field is written, from its key to the end of its value.
fn field_ranges(table: &toml_edit::InlineTable) -> Vec<(String, Range<usize>)> {
    table
        .iter()
        .filter_map(|(name, value)| {
            let value = value.span()?;
            let key = table
                .key(name)
                .and_then(|k| k.span())
                .unwrap_or(value.clone());
            Some((name.to_string(), key.start.min(value.start)..value.end))
        })
        .collect()
}

fn within(span: &Range<usize>, range: &Range<usize>) -> bool {
    range.start <= span.start && span.start < range.end.max(range.start + 1)
}
