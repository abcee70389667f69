//! Whether a snapshot would change anything: the content digest of a sink's tables — what its
//! files hold (inputs, their kinds, formats, and every row with its count), not the version
//! number nor the provenance — is written into `_snapshot.json` as `content`, and a sink about
//! to write a snapshot whose digest equals the one `current` points at writes nothing. A rerun
//! with nothing changed therefore writes no version, in any run of the pipeline; two folders
//! with the same manifests have the same `content`.

use super::error::StoreError;
use super::manifest::{write_snapshot_with, Layout, Row};
use crate::record::Digest;
use std::path::Path;

/// The content digest of the snapshot `layout` and `tables` make, whatever its version.
pub fn content_digest(layout: &Layout, tables: &[Vec<(&Row, isize)>]) -> Digest {
    let mut h = blake3::Hasher::new_derive_key("discl 2026-11 snapshot content v1");
    let mut add = |bytes: &[u8]| {
        h.update(&(bytes.len() as u64).to_le_bytes());
        h.update(bytes);
    };
    add(env!("CARGO_PKG_VERSION").as_bytes());
    for (input, kind) in layout.inputs.iter().zip(layout.kinds) {
        add(input.as_bytes());
        add(kind.to_string().as_bytes());
    }
    for format in layout.formats {
        add(format!("{format:?}").as_bytes());
    }
    for rows in tables {
        add(&(rows.len() as u64).to_le_bytes());
        for (row, count) in rows {
            add(&bincode::serialize(row).expect("rows serialise"));
            add(&(*count as i64).to_le_bytes());
        }
    }
    Digest(*h.finalize().as_bytes())
}

/// The content digest recorded by the snapshot `<folder>/current` points at, if any.
pub fn current_content(folder: &Path) -> Option<String> {
    let text = std::fs::read(folder.join("current/_snapshot.json")).ok()?;
    let info: serde_json::Value = serde_json::from_slice(&text).ok()?;
    info.get("content")?.as_str().map(str::to_owned)
}

/// Writes the snapshot's version folder as [`super::manifest::write_snapshot`] does, unless
/// `current` already holds the same content; returns whether it wrote. The folder is not made
/// current: the caller publishes it ([`super::manifest::publish_snapshot`]), alone or in one
/// commit with other sinks ([`super::commit`]).
pub fn write_snapshot_if_changed(
    folder: &Path,
    version: u64,
    layout: &Layout,
    tables: &[Vec<(&Row, isize)>],
) -> Result<bool, StoreError> {
    let content = content_digest(layout, tables);
    if current_content(folder).is_some_and(|current| current == content.to_hex()) {
        return Ok(false);
    }
    write_snapshot_with(folder, version, layout, tables, &content)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Sample;
    use crate::store::manifest::{publish_snapshot, ManifestFormat, TableKind};

    #[test]
    fn an_unchanged_snapshot_is_not_written_again_whatever_its_version() {
        let dir = tempfile::tempdir().unwrap();
        let sample = |id| {
            Row::Sample(Sample {
                id,
                name: format!("c/{id}.png"),
                label: "c".into(),
                path: format!("/d/c/{id}.png"),
                digest: Digest::of(&id.to_le_bytes()),
            })
        };
        let (a, b) = (sample(1), sample(2));
        let inputs = ["hard".to_string()];
        let (kinds, formats) = ([TableKind::Sample], [ManifestFormat::Jsonl]);
        let provenance = serde_json::Map::new();
        let layout = Layout {
            inputs: &inputs,
            kinds: &kinds,
            formats: &formats,
            keep: 3,
            provenance: &provenance,
        };
        let write = |version, tables: Vec<Vec<(&Row, isize)>>| {
            let wrote = write_snapshot_if_changed(dir.path(), version, &layout, &tables).unwrap();
            if wrote {
                publish_snapshot(dir.path(), version, layout.keep).unwrap();
            }
            wrote
        };
        // A fresh folder gets its first snapshot even when empty.
        assert!(write(0, vec![vec![]]));
        assert!(!write(1, vec![vec![]]));
        assert!(write(2, vec![vec![(&a, 1)]]));
        assert!(!write(3, vec![vec![(&a, 1)]]));
        // Counts and rows both count.
        assert!(write(4, vec![vec![(&a, 2)]]));
        assert!(write(5, vec![vec![(&a, 2), (&b, 1)]]));
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.starts_with('v'))
            .collect();
        assert_eq!(left.len(), 4, "v0, v2, v4, v5: {left:?}");
        let content = current_content(dir.path()).unwrap();
        assert_eq!(
            content,
            content_digest(&layout, &[vec![(&a, 2), (&b, 1)]]).to_hex()
        );
    }
}
