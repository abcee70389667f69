//! Where things are written in a graph file: byte spans from `toml_edit` turned into lines,
//! and values read through serde with their spans kept, so every error can name its line.

use super::fields::{read_every_field, FieldError};

/// The entries of a table (or inline table), in file order.
pub fn entries(item: Option<&toml_edit::Item>) -> Vec<(&str, &toml_edit::Item)> {
    match item.and_then(toml_edit::Item::as_table_like) {
        Some(table) => table.iter().collect(),
        None => Vec::new(),
    }
}

/// A table item as an inline table value (the keys keep their spans), if it is a table.
pub fn as_inline_table(item: &toml_edit::Item) -> Option<toml_edit::InlineTable> {
    match item {
        toml_edit::Item::Table(table) => Some(table.clone().into_inline_table()),
        toml_edit::Item::Value(toml_edit::Value::InlineTable(table)) => Some(table.clone()),
        _ => None,
    }
}

/// 1-based line of a byte offset (a scan of the text: for one lookup; [`LineIndex`] for many).
pub fn line_at(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())]
        .bytes()
        .filter(|b| *b == b'\n')
        .count()
        + 1
}

/// Where each line of a text starts, so a byte offset finds its line by binary search: a graph
/// file asks for a line per key, and scanning the text for each made `validate` quadratic in
/// the number of nodes.
#[derive(Clone, Debug, Default)]
pub struct LineIndex {
    /// Byte offset just past each `\n`, in order.
    starts: Vec<usize>,
}

impl LineIndex {
    pub fn new(text: &str) -> Self {
        let starts = text
            .bytes()
            .enumerate()
            .filter(|(_, b)| *b == b'\n')
            .map(|(i, _)| i + 1)
            .collect();
        LineIndex { starts }
    }

    /// 1-based line of a byte offset: one more than the number of line breaks before it.
    pub fn line(&self, offset: usize) -> usize {
        self.starts.partition_point(|start| *start <= offset) + 1
    }
}

pub struct Lines<'a> {
    pub index: std::sync::Arc<LineIndex>,
    pub doc: &'a toml_edit::Document<String>,
}

impl Lines<'_> {
    /// The line where the key at `path` is written (the nearest written parent otherwise).
    pub fn key(&self, path: &[&str]) -> usize {
        let mut table: &dyn toml_edit::TableLike = self.doc.as_table();
        let mut line = 1;
        for (depth, part) in path.iter().enumerate() {
            let Some((key, item)) = table.get_key_value(part) else {
                break;
            };
            if let Some(span) = key.span() {
                line = self.index.line(span.start);
            } else if let Some(span) = item.span() {
                line = self.index.line(span.start);
            }
            match item.as_table_like() {
                Some(inner) if depth + 1 < path.len() => table = inner,
                _ => break,
            }
        }
        line
    }

    /// Reads the table at `path` into `T`, reporting every wrong field with its line (errors
    /// that point nowhere get the table's own line).
    pub fn read<T: serde::de::DeserializeOwned>(
        &self,
        item: &toml_edit::Item,
        path: &[&str],
    ) -> Result<T, Vec<FieldError>> {
        let Some(table) = as_inline_table(item) else {
            return Err(vec![FieldError {
                line: self.key(path),
                field: None,
                message: "must be a table".into(),
            }]);
        };
        read_every_field(&table, &self.index, self.key(path), read_value)
    }
}

/// A deserialisation error: its message and where in the file it points, if anywhere.
pub struct ReadError {
    pub message: String,
    pub span: Option<std::ops::Range<usize>>,
}

impl From<toml_edit::de::Error> for ReadError {
    fn from(e: toml_edit::de::Error) -> Self {
        ReadError {
            message: e.message().to_string(),
            span: e.span(),
        }
    }
}

/// Reads a TOML value (spans kept from the file) into `T`.
pub fn read_value<T: serde::de::DeserializeOwned>(value: toml_edit::Value) -> Result<T, ReadError> {
    use serde::de::IntoDeserializer;
    T::deserialize(value.into_deserializer()).map_err(ReadError::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_index_agrees_with_the_scan_at_every_offset() {
        let text = "a = 1\n\n[b]\nc = \"x\"\nno newline at the end";
        let index = LineIndex::new(text);
        for offset in 0..=text.len() + 3 {
            assert_eq!(index.line(offset), line_at(text, offset), "offset {offset}");
        }
    }
}
