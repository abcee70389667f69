//! A small column model for writing record tables as Parquet (snappy), without Arrow.

use parquet::basic::Compression;
use parquet::data_type::{ByteArray, ByteArrayType, FloatType, Int64Type};
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::parser::parse_message_type;
use std::sync::Arc;

/// One column's values.
pub enum Column {
    /// Unsigned 64-bit integers (Parquet INT64 annotated unsigned).
    U64(Vec<u64>),
    F32(Vec<f32>),
    Text(Vec<String>),
}

impl Column {
    fn schema(&self, name: &str) -> String {
        match self {
            Column::U64(_) => format!("REQUIRED INT64 {name} (INTEGER(64,false));"),
            Column::F32(_) => format!("REQUIRED FLOAT {name};"),
            Column::Text(_) => format!("REQUIRED BYTE_ARRAY {name} (UTF8);"),
        }
    }
}

/// Encodes named columns of equal length as a Parquet file.
pub fn encode(columns: &[(&str, Column)]) -> Result<Vec<u8>, String> {
    let fields: String = columns
        .iter()
        .map(|(name, c)| c.schema(name))
        .collect::<Vec<_>>()
        .join(" ");
    let schema = Arc::new(
        parse_message_type(&format!("message manifest {{ {fields} }}"))
            .map_err(|e| e.to_string())?,
    );
    let props = Arc::new(
        WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .build(),
    );
    let mut bytes = Vec::new();
    let mut writer =
        SerializedFileWriter::new(&mut bytes, schema, props).map_err(|e| e.to_string())?;
    let mut group = writer.next_row_group().map_err(|e| e.to_string())?;
    for (_, column) in columns {
        let mut out = group
            .next_column()
            .map_err(|e| e.to_string())?
            .expect("a column per schema field");
        let written = match column {
            Column::U64(values) => {
                let values: Vec<i64> = values.iter().map(|v| *v as i64).collect();
                out.typed::<Int64Type>().write_batch(&values, None, None)
            }
            Column::F32(values) => out.typed::<FloatType>().write_batch(values, None, None),
            Column::Text(values) => {
                let values: Vec<ByteArray> =
                    values.iter().map(|v| ByteArray::from(v.as_str())).collect();
                out.typed::<ByteArrayType>()
                    .write_batch(&values, None, None)
            }
        };
        written.map_err(|e| e.to_string())?;
        out.close().map_err(|e| e.to_string())?;
    }
    group.close().map_err(|e| e.to_string())?;
    writer.close().map_err(|e| e.to_string())?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use parquet::file::reader::{FileReader, SerializedFileReader};

    #[test]
    fn round_trips_through_the_parquet_reader() {
        let bytes = encode(&[
            ("id", Column::U64(vec![u64::MAX, 3])),
            ("p", Column::F32(vec![0.5, 0.25])),
            ("name", Column::Text(vec!["a".into(), "bé".into()])),
        ])
        .unwrap();
        let reader = SerializedFileReader::new(bytes::Bytes::from(bytes)).unwrap();
        assert_eq!(reader.metadata().file_metadata().num_rows(), 2);
        let rows: Vec<String> = reader
            .get_row_iter(None)
            .unwrap()
            .map(|r| r.unwrap().to_string())
            .collect();
        assert_eq!(
            rows[0],
            format!("{{id: {}, p: 0.5, name: \"a\"}}", u64::MAX)
        );
        assert_eq!(rows[1], "{id: 3, p: 0.25, name: \"bé\"}");
    }
}
