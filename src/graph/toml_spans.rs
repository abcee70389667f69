//! Where things are written in a graph file: byte spans from `toml_edit` turned into lines,
//! and values read through serde with their spans kept, so every error can name its line.

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

/// 1-based line of a byte offset.
pub fn line_at(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())]
        .bytes()
        .filter(|b| *b == b'\n')
        .count()
        + 1
}

pub struct Lines<'a> {
    pub text: &'a str,
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

    /// Reads the table at `path` into `T`; an error gives the line its span points at (the
    /// table's own line when it has none).
    pub fn read<T: serde::de::DeserializeOwned>(
        &self,
        item: &toml_edit::Item,
        path: &[&str],
    ) -> Result<T, (usize, String)> {
        let Some(table) = as_inline_table(item) else {
            return Err((self.key(path), "must be a table".into()));
        };
        read_value(toml_edit::Value::InlineTable(table)).map_err(|e| {
            let line = e
                .span
                .map_or(self.key(path), |s| line_at(self.text, s.start));
            (line, e.message)
        })
    }
}

/// A deserialisation error: its message and where in the file it points, if anywhere.
pub struct ReadError {
    pub message: String,
    pub span: Option<std::ops::Range<usize>>,
}

/// Reads a TOML value (spans kept from the file) into `T`.
pub fn read_value<T: serde::de::DeserializeOwned>(value: toml_edit::Value) -> Result<T, ReadError> {
    use serde::de::IntoDeserializer;
    T::deserialize(value.into_deserializer()).map_err(|e| ReadError {
        message: e.message().to_string(),
        span: e.span(),
    })
}
