//! `gc` on a hand-made output folder: what the snapshots name stays, the rest is listed, and
//! removed only when asked and when no run holds the image index.

use super::*;
use crate::record::{Digest, GenKey, Synthetic};
use crate::store::image_scan::image_file;
use crate::store::manifest::{write_snapshot, Layout, ManifestFormat, Row, TableKind};

fn write(path: &Path, bytes: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

/// Keys a..e: a is named by a JSONL synthetic row, b by a stage row (a path relative to where
/// discl ran), c by a Parquet-only table; d and e by nothing.
fn output_folder(out: &Path) -> [Digest; 5] {
    let keys = [b"a", b"b", b"c", b"d", b"e"].map(|k| Digest::of(k));
    for key in &keys {
        write(&out.join(image_file(key)), b"png");
    }
    // A crash's leftover (pid_max is at most 2^22: no process has this pid) and a write in
    // progress (this process's).
    write(&out.join("synthetic/aa/.x.png.tmp-4194305-0"), b"torn");
    let writing = format!("synthetic/aa/.y.png.tmp-{}-0", std::process::id());
    write(&out.join(writing), b"half");
    let synthetic = format!(
        "{{\"key\":{{\"sample\":9,\"level\":500,\"seed\":0,\"prompt\":\"p\"}},\"path\":\"{}\",\
         \"source\":\"/d/bag/b.png\"}}\n",
        image_file(&keys[0])
    );
    write(
        &out.join("manifests/v000001/quality.jsonl"),
        synthetic.as_bytes(),
    );
    let stage = format!(
        "{{\"stage\":0,\"path\":\"out/{}\"}}\n",
        image_file(&keys[1])
    );
    write(
        &out.join("manifests/v000002/mix/stage-0.jsonl"),
        stage.as_bytes(),
    );
    let row = Row::Synthetic(Synthetic {
        key: GenKey {
            sample: 1,
            level: 300,
            seed: 0,
            prompt: "p".into(),
        },
        label: "coat".into(),
        path: image_file(&keys[2]),
        digest: Digest::of(b"png"),
        source: "/d/coat/c.png".into(),
        text_score: None,
        image_score: None,
        retry: None,
    });
    let (inputs, provenance) = (["generated".to_string()], serde_json::Map::new());
    let layout = Layout {
        inputs: &inputs,
        kinds: &[TableKind::Synthetic],
        formats: &[ManifestFormat::Parquet],
        keep: 5,
        provenance: &provenance,
    };
    write_snapshot(&out.join("pool"), 4, &layout, &[vec![(&row, 1)]]).unwrap();
    for sheet in [
        "spectrum/b-0000000000000009.png",
        "spectrum/c-0000000000000001.png",
        "spectrum/gone-0000000000000002.png",
        "stages/manifests-mix-stage-0.png",
        "stages/manifests-mix-stage-3.png",
        "quality/manifests-quality-lambda-0500.png",
    ] {
        write(&out.join("report").join(sheet), b"sheet");
    }
    keys
}

#[test]
fn lists_what_no_kept_snapshot_names_and_removes_it_only_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path();
    let keys = output_folder(out);
    let found = find(out, &[]).unwrap();
    let mut images = vec![
        image_file(&keys[3]),
        image_file(&keys[4]),
        "synthetic/aa/.x.png.tmp-4194305-0".to_string(),
    ];
    images.sort();
    assert_eq!(
        found,
        Garbage {
            images,
            sheets: vec![
                "report/spectrum/gone-0000000000000002.png".into(),
                "report/stages/manifests-mix-stage-3.png".into(),
            ],
            models: Vec::new(),
            bytes: 3 + 3 + 4 + 5 + 5,
            snapshots: 3,
        }
    );
    assert!(
        out.join(image_file(&keys[3])).exists(),
        "listing removes nothing"
    );

    // A run holds the index: nothing is removed.
    let held = ImageStore::open(out, 0).unwrap();
    let err = remove(out, &found).unwrap_err().to_string();
    assert_eq!(
        err,
        format!(
            "{}: in use by a running discl; stop it before removing anything",
            out.join("state/synthetic.redb").display()
        )
    );
    assert!(out.join(image_file(&keys[3])).exists());
    drop(held);

    remove(out, &found).unwrap();
    for file in found.images.iter().chain(&found.sheets) {
        assert!(!out.join(file).exists(), "{file}");
    }
    for key in &keys[..3] {
        assert!(out.join(image_file(key)).exists());
    }
    assert!(out
        .join("report/quality/manifests-quality-lambda-0500.png")
        .exists());
    assert_eq!(find(out, &[]).unwrap().images, Vec::<String>::new());
}
