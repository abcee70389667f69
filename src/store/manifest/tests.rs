//! Snapshots written whole and switched atomically, old versions pruned, rows in both formats.

use super::*;
use crate::record::{Digest, Value};

fn layout<'a>(
    inputs: &'a [String],
    kinds: &'a [TableKind],
    formats: &'a [ManifestFormat],
    provenance: &'a serde_json::Map<String, serde_json::Value>,
) -> Layout<'a> {
    Layout {
        inputs,
        kinds,
        formats,
        keep: 1,
        provenance,
    }
}

#[test]
fn rows_cross_processes_through_bincode() {
    let row = Row::Score(Score {
        sample: 1,
        checkpoint: 2,
        p_true: Value(0.5),
        loss: Value(0.7),
        predicted: "c".into(),
    });
    let back: Row = bincode::deserialize(&bincode::serialize(&(3usize, row.clone())).unwrap())
        .map(|(_, r): (usize, Row)| r)
        .unwrap();
    assert_eq!(back, row);
}

#[test]
fn snapshots_are_versioned_current_and_pruned() {
    let dir = tempfile::tempdir().unwrap();
    let s = Row::Sample(Sample {
        id: 7,
        name: "c/a.png".into(),
        label: "c".into(),
        path: "/x/c/a.png".into(),
        digest: Digest::of(b"a"),
    });
    let e = Row::Score(Score {
        sample: 7,
        checkpoint: 0,
        p_true: Value(0.5),
        loss: Value(0.7),
        predicted: "c".into(),
    });
    let inputs = vec!["samples".to_string(), "scores".to_string()];
    let formats = [ManifestFormat::Jsonl, ManifestFormat::Parquet];
    let none = serde_json::Map::new();
    for version in 0..4 {
        let tables = vec![vec![(&s, 2)], vec![(&e, 1)]];
        let kinds = [TableKind::Sample, TableKind::Score];
        write_snapshot(
            dir.path(),
            version,
            &layout(&inputs, &kinds, &formats, &none),
            &tables,
        )
        .unwrap();
    }
    let current = dir.path().join("current");
    assert_eq!(fs::read_link(&current).unwrap().to_str(), Some("v000003"));
    let jsonl = fs::read_to_string(current.join("samples.jsonl")).unwrap();
    assert_eq!(jsonl.lines().count(), 2, "a count of 2 is two rows");
    let row: serde_json::Value = serde_json::from_str(jsonl.lines().next().unwrap()).unwrap();
    assert_eq!(row["label"], "c");
    assert_eq!(row["digest"], Digest::of(b"a").to_hex());
    assert!(current.join("scores.parquet").exists());
    let info: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(current.join("_snapshot.json")).unwrap()).unwrap();
    assert_eq!(info["version"], 3);
    assert_eq!(info["rows"]["samples"], 2);
    let mut left: Vec<String> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    left.sort();
    assert_eq!(left, vec!["current", "v000002", "v000003"]);
}

#[test]
fn jsonl_and_parquet_agree_on_synthetic_rows() {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    use parquet::record::Field;
    let dir = tempfile::tempdir().unwrap();
    let row = |level, text_score: Option<f32>| {
        Row::Synthetic(Synthetic {
            key: crate::record::GenKey {
                sample: 9,
                level,
                seed: 1,
                prompt: "a bag".into(),
            },
            label: "bag".into(),
            path: "gen/b.png".into(),
            digest: Digest::of(b"b"),
            source: "/d/bag/b.png".into(),
            text_score: text_score.map(Value),
            image_score: Some(Value(0.5)),
            retry: None,
        })
    };
    let (a, b) = (row(125, Some(0.25)), row(875, None));
    let formats = [ManifestFormat::Jsonl, ManifestFormat::Parquet];
    let tables = vec![vec![(&a, 1), (&b, 1)]];
    let inputs = ["synthetic".to_string()];
    let none = serde_json::Map::new();
    let kinds = [TableKind::Synthetic];
    write_snapshot(
        dir.path(),
        0,
        &layout(&inputs, &kinds, &formats, &none),
        &tables,
    )
    .unwrap();
    let current = dir.path().join("current");
    let jsonl: Vec<serde_json::Value> = fs::read_to_string(current.join("synthetic.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let file = fs::File::open(current.join("synthetic.parquet")).unwrap();
    let parquet: Vec<_> = SerializedFileReader::new(file)
        .unwrap()
        .get_row_iter(None)
        .unwrap()
        .map(|r| r.unwrap())
        .collect();
    assert_eq!(jsonl.len(), 2);
    assert_eq!(parquet.len(), 2);
    for (json, row) in jsonl.iter().zip(&parquet) {
        for (name, field) in row.get_column_iter() {
            // The JSONL nests the generation key; Parquet flattens it.
            let value = match name.as_str() {
                "sample" | "level" | "seed" | "prompt" => &json["key"][name],
                _ => &json[name],
            };
            match field {
                Field::Null => assert!(value.is_null(), "{name}"),
                Field::ULong(n) => assert_eq!(value.as_u64(), Some(*n), "{name}"),
                Field::UInt(n) => assert_eq!(value.as_u64(), Some(u64::from(*n)), "{name}"),
                Field::UShort(n) => assert_eq!(value.as_u64(), Some(u64::from(*n)), "{name}"),
                Field::Float(x) => assert_eq!(value.as_f64().map(|v| v as f32), Some(*x)),
                Field::Str(s) => assert_eq!(value.as_str(), Some(s.as_str()), "{name}"),
                other => panic!("{name}: unexpected {other:?}"),
            }
        }
    }
    assert!(jsonl[1]["text_score"].is_null());
    assert_eq!(jsonl[0]["key"]["level"], 125);
}

#[test]
fn a_row_of_the_wrong_kind_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let e = Row::Error(ErrorRecord {
        node: "n".into(),
        location: "f".into(),
        message: "m".into(),
    });
    let tables = vec![vec![(&e, 1)]];
    let inputs = ["scores".to_string()];
    let none = serde_json::Map::new();
    let (kinds, formats) = ([TableKind::Score], [ManifestFormat::Jsonl]);
    let err = write_snapshot(
        dir.path(),
        0,
        &layout(&inputs, &kinds, &formats, &none),
        &tables,
    )
    .unwrap_err();
    assert!(
        matches!(&err, StoreError::WrongKind { input, kind: TableKind::Score, found: TableKind::Error, .. } if input == "scores"),
        "{err:?}"
    );
    let err = err.to_string();
    assert!(
        err.ends_with("input `scores` carries Score records, not Error"),
        "{err}"
    );
    assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
}
