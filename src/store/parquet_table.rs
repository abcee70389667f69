//! Record tables as Parquet (snappy), without Arrow: one schema per record kind, built from the
//! kind a sink's input carries (so an empty table still has its kind's columns), and columns
//! that borrow from the rows rather than cloning them.

use super::error::StoreError;
pub use super::table_columns::encode_rows;
use parquet::basic::Compression;
use parquet::data_type::{ByteArray, ByteArrayType, FloatType, Int32Type, Int64Type};
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::parser::parse_message_type;
use std::borrow::Cow;
use std::sync::Arc;

/// One column's values.
pub enum Column<'a> {
    /// Unsigned 64-bit integers (Parquet INT64 annotated `INTEGER(64,false)`).
    U64(Vec<u64>),
    /// Unsigned 32-bit integers (Parquet INT32 annotated `INTEGER(32,false)`).
    U32(Vec<u32>),
    /// Unsigned 16-bit integers (Parquet INT32 annotated `INTEGER(16,false)`).
    U16(Vec<u16>),
    /// Parquet FLOAT, required.
    F32(Vec<f32>),
    /// Parquet FLOAT, optional: `None` is written as a null (definition level 0).
    OptionalF32(Vec<Option<f32>>),
    /// UTF-8 text (Parquet BYTE_ARRAY annotated `UTF8`).
    Text(Vec<Cow<'a, str>>),
    /// Unsigned 32-bit integers or nulls.
    OptionalU32(Vec<Option<u32>>),
    /// UTF-8 text or nulls.
    OptionalText(Vec<Option<Cow<'a, str>>>),
    /// A list of unsigned 16-bit integers per row (Parquet LIST of INT32 `INTEGER(16,false)`).
    ListU16(Vec<Vec<u16>>),
}

impl Column<'_> {
    fn schema(&self, name: &str) -> String {
        match self {
            Column::U64(_) => format!("REQUIRED INT64 {name} (INTEGER(64,false));"),
            Column::U32(_) => format!("REQUIRED INT32 {name} (INTEGER(32,false));"),
            Column::U16(_) => format!("REQUIRED INT32 {name} (INTEGER(16,false));"),
            Column::F32(_) => format!("REQUIRED FLOAT {name};"),
            Column::OptionalF32(_) => format!("OPTIONAL FLOAT {name};"),
            Column::Text(_) => format!("REQUIRED BYTE_ARRAY {name} (UTF8);"),
            Column::OptionalU32(_) => format!("OPTIONAL INT32 {name} (INTEGER(32,false));"),
            Column::OptionalText(_) => format!("OPTIONAL BYTE_ARRAY {name} (UTF8);"),
            Column::ListU16(_) => format!(
                "REQUIRED GROUP {name} (LIST) {{ REPEATED GROUP list {{ REQUIRED INT32 element (INTEGER(16,false)); }} }}"
            ),
        }
    }
}

/// Encodes named columns of equal length as a Parquet file.
pub fn encode(columns: &[(&str, Column<'_>)]) -> Result<Vec<u8>, StoreError> {
    let fields: String = columns
        .iter()
        .map(|(name, c)| c.schema(name))
        .collect::<Vec<_>>()
        .join(" ");
    let schema = Arc::new(parse_message_type(&format!(
        "message manifest {{ {fields} }}"
    ))?);
    let props = Arc::new(
        WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .build(),
    );
    let mut bytes = Vec::new();
    let mut writer = SerializedFileWriter::new(&mut bytes, schema, props)?;
    let mut group = writer.next_row_group()?;
    for (_, column) in columns {
        let mut out = group.next_column()?.expect("a column per schema field");
        let written = match column {
            Column::U64(values) => {
                // Unsigned values keep their bits in the signed physical type.
                let values: Vec<i64> = values.iter().map(|v| *v as i64).collect();
                out.typed::<Int64Type>().write_batch(&values, None, None)
            }
            Column::U32(values) => {
                let values: Vec<i32> = values.iter().map(|v| *v as i32).collect();
                out.typed::<Int32Type>().write_batch(&values, None, None)
            }
            Column::U16(values) => {
                let values: Vec<i32> = values.iter().map(|v| i32::from(*v)).collect();
                out.typed::<Int32Type>().write_batch(&values, None, None)
            }
            Column::F32(values) => out.typed::<FloatType>().write_batch(values, None, None),
            Column::OptionalF32(values) => {
                // Only present values are written; definition level 1 marks them, 0 a null.
                let levels: Vec<i16> = values.iter().map(|v| i16::from(v.is_some())).collect();
                let present: Vec<f32> = values.iter().flatten().copied().collect();
                out.typed::<FloatType>()
                    .write_batch(&present, Some(&levels), None)
            }
            Column::Text(values) => {
                let values: Vec<ByteArray> =
                    values.iter().map(|v| ByteArray::from(v.as_ref())).collect();
                out.typed::<ByteArrayType>()
                    .write_batch(&values, None, None)
            }
            Column::OptionalU32(values) => {
                let levels: Vec<i16> = values.iter().map(|v| i16::from(v.is_some())).collect();
                let present: Vec<i32> = values.iter().flatten().map(|v| *v as i32).collect();
                out.typed::<Int32Type>()
                    .write_batch(&present, Some(&levels), None)
            }
            Column::OptionalText(values) => {
                let levels: Vec<i16> = values.iter().map(|v| i16::from(v.is_some())).collect();
                let present: Vec<ByteArray> = values
                    .iter()
                    .flatten()
                    .map(|v| ByteArray::from(v.as_ref()))
                    .collect();
                out.typed::<ByteArrayType>()
                    .write_batch(&present, Some(&levels), None)
            }
            Column::ListU16(lists) => {
                // An empty list is definition level 0; each element is level 1, its repetition
                // level 0 when it starts a row and 1 when it continues one.
                let (mut values, mut defs, mut reps) = (Vec::new(), Vec::new(), Vec::new());
                for list in lists {
                    if list.is_empty() {
                        defs.push(0);
                        reps.push(0);
                    }
                    for (i, v) in list.iter().enumerate() {
                        values.push(i32::from(*v));
                        defs.push(1);
                        reps.push(i16::from(i > 0));
                    }
                }
                out.typed::<Int32Type>()
                    .write_batch(&values, Some(&defs), Some(&reps))
            }
        };
        written?;
        out.close()?;
    }
    group.close()?;
    writer.close()?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Synthetic;
    use crate::record::{Digest, GenKey, Value};
    use crate::store::manifest::{Row, TableKind};
    use parquet::basic::{ConvertedType, Repetition, Type as Physical};
    use parquet::column::reader::ColumnReader;
    use parquet::file::reader::{FileReader, SerializedFileReader};
    use parquet::record::Field;

    fn read(bytes: Vec<u8>) -> SerializedFileReader<bytes::Bytes> {
        SerializedFileReader::new(bytes::Bytes::from(bytes)).unwrap()
    }

    /// (name, physical type, converted type, repetition) of every column.
    fn schema(
        reader: &SerializedFileReader<bytes::Bytes>,
    ) -> Vec<(String, Physical, ConvertedType, Repetition)> {
        let descr = reader.metadata().file_metadata().schema_descr_ptr();
        descr
            .columns()
            .iter()
            .map(|c| {
                let info = c.self_type().get_basic_info();
                (
                    c.name().to_string(),
                    c.physical_type(),
                    c.converted_type(),
                    info.repetition(),
                )
            })
            .collect()
    }

    fn synthetic(level: u16, text_score: Option<f32>) -> Row {
        Row::Synthetic(Synthetic {
            key: GenKey {
                sample: u64::MAX,
                level,
                seed: 3,
                prompt: "a coat".into(),
            },
            label: "coat".into(),
            path: "gen/a.png".into(),
            digest: Digest::of(b"a"),
            source: "/data/coat/a.png".into(),
            text_score: text_score.map(Value),
            image_score: None,
            retry: None,
        })
    }

    #[test]
    fn round_trips_through_the_parquet_reader() {
        let bytes = encode(&[
            ("id", Column::U64(vec![u64::MAX, 3])),
            ("p", Column::F32(vec![0.5, 0.25])),
            ("name", Column::Text(vec!["a".into(), "bé".into()])),
        ])
        .unwrap();
        let reader = read(bytes);
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

    #[test]
    fn missing_scores_are_nulls_and_levels_integers() {
        let rows = [synthetic(250, Some(0.75)), synthetic(1000, None)];
        let rows: Vec<&Row> = rows.iter().collect();
        let reader = read(encode_rows(TableKind::Synthetic, &rows).unwrap());
        let columns = schema(&reader);
        let text_score = columns.iter().position(|c| c.0 == "text_score").unwrap();
        assert_eq!(columns[text_score].3, Repetition::OPTIONAL);
        let descr = reader.metadata().file_metadata().schema_descr_ptr();
        assert_eq!(descr.column(text_score).max_def_level(), 1);
        // The definition levels themselves: 1 for the present score, 0 for the missing one.
        let group = reader.get_row_group(0).unwrap();
        let ColumnReader::FloatColumnReader(mut scores) =
            group.get_column_reader(text_score).unwrap()
        else {
            panic!("text_score is a FLOAT column");
        };
        let (mut levels, mut values) = (Vec::new(), Vec::new());
        scores
            .read_records(10, Some(&mut levels), None, &mut values)
            .unwrap();
        assert_eq!(levels, vec![1, 0]);
        assert_eq!(values, vec![0.75]);
        let read: Vec<_> = reader
            .get_row_iter(None)
            .unwrap()
            .map(|r| r.unwrap())
            .collect();
        let field = |row: &parquet::record::Row, name: &str| {
            row.get_column_iter()
                .find(|(n, _)| *n == name)
                .unwrap()
                .1
                .clone()
        };
        assert_eq!(field(&read[0], "text_score"), Field::Float(0.75));
        assert_eq!(field(&read[1], "text_score"), Field::Null);
        assert_eq!(field(&read[1], "image_score"), Field::Null);
        assert_eq!(field(&read[0], "level"), Field::UShort(250));
        assert_eq!(field(&read[1], "level"), Field::UShort(1000));
        assert_eq!(field(&read[0], "seed"), Field::UInt(3));
        assert_eq!(field(&read[0], "sample"), Field::ULong(u64::MAX));
        assert_eq!(
            field(&read[0], "digest"),
            Field::Str(Digest::of(b"a").to_hex())
        );
    }

    #[test]
    fn retried_images_add_attempt_and_first_seed_columns() {
        let names = |rows: &[Row]| {
            let rows: Vec<&Row> = rows.iter().collect();
            let reader = read(encode_rows(TableKind::Synthetic, &rows).unwrap());
            let names: Vec<String> = schema(&reader).into_iter().map(|c| c.0).collect();
            names
        };
        let plain = [synthetic(250, Some(0.75))];
        assert!(!names(&plain).contains(&"attempt".to_string()));
        let mut retried = synthetic(250, Some(0.75));
        if let Row::Synthetic(image) = &mut retried {
            image.retry = Some(crate::record::Retry {
                attempt: 2,
                first_seed: 1,
            });
        }
        let both = [plain[0].clone(), retried];
        let columns = names(&both);
        assert_eq!(columns[columns.len() - 2..], ["attempt", "first_seed"]);
        let rows: Vec<&Row> = both.iter().collect();
        let reader = read(encode_rows(TableKind::Synthetic, &rows).unwrap());
        let read: Vec<_> = reader
            .get_row_iter(None)
            .unwrap()
            .map(|r| r.unwrap())
            .collect();
        let field = |row: &parquet::record::Row, name: &str| {
            let found = row.get_column_iter().find(|(n, _)| *n == name);
            found.unwrap().1.clone()
        };
        // A row without retry information is a first attempt from its own seed.
        assert_eq!(field(&read[0], "attempt"), Field::UInt(0));
        assert_eq!(field(&read[0], "first_seed"), Field::UInt(3));
        assert_eq!(field(&read[1], "attempt"), Field::UInt(2));
        assert_eq!(field(&read[1], "first_seed"), Field::UInt(1));
    }

    #[test]
    fn empty_tables_have_their_kinds_columns() {
        use parquet::basic::FieldRepetitionType as R;
        use ConvertedType::{NONE, UINT_16, UINT_32, UINT_64, UTF8};
        use Physical::{BYTE_ARRAY, FLOAT, INT32, INT64};
        const OPTIONAL: Repetition = R::OPTIONAL;
        const REQUIRED: Repetition = R::REQUIRED;
        let expect = |kind, columns: &[(&str, Physical, ConvertedType, Repetition)]| {
            let got = schema(&read(encode_rows(kind, &[]).unwrap()));
            let want: Vec<_> = columns
                .iter()
                .map(|(n, p, c, r)| (n.to_string(), *p, *c, *r))
                .collect();
            assert_eq!(got, want, "{kind}");
        };
        let text = |n| (n, BYTE_ARRAY, UTF8, REQUIRED);
        let u64s = |n| (n, INT64, UINT_64, REQUIRED);
        let f32s = |n| (n, FLOAT, NONE, REQUIRED);
        expect(
            TableKind::Sample,
            &[
                u64s("id"),
                text("name"),
                text("label"),
                text("path"),
                text("digest"),
            ],
        );
        expect(
            TableKind::Score,
            &[
                u64s("sample"),
                u64s("checkpoint"),
                f32s("p_true"),
                f32s("loss"),
                text("predicted"),
            ],
        );
        expect(
            TableKind::Synthetic,
            &[
                u64s("sample"),
                ("level", INT32, UINT_16, REQUIRED),
                ("seed", INT32, UINT_32, REQUIRED),
                text("prompt"),
                text("label"),
                text("path"),
                text("digest"),
                text("source"),
                ("text_score", FLOAT, NONE, OPTIONAL),
                ("image_score", FLOAT, NONE, OPTIONAL),
            ],
        );
        expect(
            TableKind::Error,
            &[text("node"), text("location"), text("message")],
        );
    }

    #[test]
    fn a_row_of_another_kind_is_an_error_not_a_panic() {
        let row = synthetic(0, None);
        let err = encode_rows(TableKind::Sample, &[&row]).unwrap_err();
        assert!(matches!(
            err,
            StoreError::WrongRow {
                row: TableKind::Synthetic,
                table: TableKind::Sample
            }
        ));
        assert_eq!(
            err.to_string(),
            "a Synthetic row in a table of Sample records"
        );
    }
}
