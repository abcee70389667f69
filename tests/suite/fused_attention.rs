//! `attention = "fused"` (`runtime::rewrite::attention`): every attention block of the shipped
//! UNets becomes one `MultiHeadAttention`, ONNX Runtime runs the result within float rounding
//! of the exported graph, and a generate node asking for it makes its UNet once, keys its
//! images apart, keeps them the same bits at any batch size, and combines with int8.

use crate::common::*;
use crate::generate_run::{pipeline, run, validate};
use crate::int8_unet::{op_types, unet_output};
use discl::runtime::rewrite::attention::{fuse, Summary};
use discl::RunSummary;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The UNet of a shipped model, or of a test fixture (`tiny-sd-fp16`).
fn unet(model: &str) -> PathBuf {
    let shipped = Path::new(REPO).join("models").join(model);
    let folder = match shipped.is_dir() {
        true => shipped,
        false => Path::new(REPO).join("tests/fixtures").join(model),
    };
    folder.join("unet/model.onnx")
}

fn fused_file(model: &str, folder: &Path) -> (PathBuf, Summary) {
    let (bytes, summary) = fuse(&std::fs::read(unet(model)).unwrap()).unwrap();
    let file = folder.join(format!("{model}.onnx"));
    std::fs::write(&file, bytes).unwrap();
    (file, summary)
}

#[test]
fn every_attention_block_of_the_shipped_unets_is_fused() {
    let dir = tempfile::tempdir().unwrap();
    let models = [
        ("tiny-sd", 8),
        ("tiny-sd-fp16", 8),
        ("fashion-unet", 4),
        ("tiny-pixel-unet", 4),
    ];
    for (model, blocks) in models {
        let (file, summary) = fused_file(model, dir.path());
        assert_eq!(
            (summary.softmaxes, summary.fused),
            (blocks, blocks),
            "{model}"
        );
        let ops = op_types(&file);
        let count = |op: &str| ops.iter().filter(|o| *o == op).count();
        assert_eq!(count("MultiHeadAttention"), blocks, "{model}");
        assert_eq!(count("Softmax"), 0, "{model}");
        let before = op_types(&unet(model)).len();
        assert_eq!(ops.len() + summary.removed, before, "{model}: nodes");
        // Per block at least the two products, the softmax, five transposes and four reshapes.
        assert!(summary.removed >= 12 * blocks, "{model}: {summary:?}");
        // ONNX Runtime opens it (float16 attention included) as discl opens every file.
        discl::runtime::onnx::open_session(&file, &Default::default())
            .unwrap_or_else(|e| panic!("{model}: {e}"));
    }
}

#[test]
fn the_fused_unet_computes_what_the_exported_one_computes() {
    let dir = tempfile::tempdir().unwrap();
    let (file, _) = fused_file("tiny-sd", dir.path());
    let exported = unet_output(None);
    let fused = unet_output(Some(file));
    assert_eq!(exported.len(), fused.len());
    let max = exported
        .iter()
        .zip(&fused)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    let scale = exported.iter().map(|v| v.abs()).fold(0.0f32, f32::max);
    assert!(
        max <= 1e-5 * scale.max(1.0),
        "max |Δ| {max}, max |x| {scale}"
    );
}

fn computed(summary: &RunSummary) -> (u64, u64) {
    let s = &summary.nodes["synthetic"];
    (s.computed, s.cache_hits)
}

/// Image key → (file, pixels) of what a run left in `out`; a file is named by its content key.
fn images(out: &Path) -> BTreeMap<String, (String, Vec<u8>)> {
    read_jsonl(out, "out", "synthetic")
        .iter()
        .map(|row| {
            let path = row["path"].as_str().unwrap();
            let png = image::open(out.join(path)).unwrap();
            (
                row["key"].to_string(),
                (path.to_string(), png.to_rgb8().into_raw()),
            )
        })
        .collect()
}

#[test]
fn fused_attention_is_made_once_keys_its_images_and_keeps_them_whatever_the_batch() {
    let dir = tempfile::tempdir().unwrap();
    let settings = "levels = [0.0, 0.5]\nsteps = 4\nscheduler = \"ddim\"";
    let fused = format!("{settings}\nattention = \"fused\"");
    let out = dir.path().join("out");
    assert_eq!(computed(&run(&pipeline(&out, "tiny-sd", settings))), (6, 0));
    let exported = images(&out);
    assert_eq!(computed(&run(&pipeline(&out, "tiny-sd", &fused))), (6, 0));
    let made = images(&out);
    assert_eq!(made.len(), 6);
    for (key, (file, pixels)) in &made {
        let (other, before) = &exported[key];
        assert_ne!(file, other, "{key}: a fused image has its own content key");
        let worst = pixels
            .iter()
            .zip(before)
            .map(|(a, b)| a.abs_diff(*b))
            .max()
            .unwrap();
        assert!(
            worst <= 2,
            "{key}: {worst}/255 from the exported graph's image"
        );
    }
    let folders: Vec<String> = std::fs::read_dir(out.join("state/models"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(folders.len(), 1, "{folders:?}");
    assert!(
        folders[0].ends_with("-unet-fused-attention-v1"),
        "{folders:?}"
    );
    assert_eq!(computed(&run(&pipeline(&out, "tiny-sd", &fused))), (0, 6));

    // The same bits at another batch size, in a fresh output folder.
    let batched = dir.path().join("batched");
    run(&pipeline(
        &batched,
        "tiny-sd",
        &format!("{fused}\nbatch_size = 3"),
    ));
    assert_eq!(images(&batched), made, "batch 3 against batch 1");

    // With int8 weights too: a form of its own.
    let both = format!("{fused}\nquantize = \"int8\"");
    assert_eq!(computed(&run(&pipeline(&out, "tiny-sd", &both))), (6, 0));
    assert!(out.join("state/models").read_dir().unwrap().any(|e| e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .ends_with("-unet-fused-attention-v1+int8-dynamic-matmul-v1")));

    let err = validate(&pipeline(
        &out,
        "tiny-sd",
        &format!("{settings}\nattention = \"flash\""),
    ));
    assert!(
        err.contains("attention `flash`") && err.contains("expected \"as-exported\" or \"fused\""),
        "{err}"
    );
}

/// A model with no attention left to fuse (here: an already fused UNet) is an error naming its
/// file, and nothing is left under the output folder.
#[test]
fn a_unet_without_attention_to_fuse_is_an_error_naming_it() {
    use discl::runtime::rewrite::{rewritten_unet, Attention, UnetForm};
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("fused-already");
    std::fs::create_dir_all(model.join("unet")).unwrap();
    let (file, _) = fused_file("tiny-sd", dir.path());
    std::fs::rename(&file, model.join("unet/model.onnx")).unwrap();
    let output = dir.path().join("out");
    let form = UnetForm {
        attention: Attention::Fused,
        ..UnetForm::default()
    };
    let digest = discl::runtime::diffusion::digest::folder_digest(&model).unwrap();
    let err = rewritten_unet(&model, &digest, &output, form)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("fused-already/unet/model.onnx")
            && err.contains("no attention (no Softmax node)"),
        "{err}"
    );
    let left: Vec<_> = std::fs::read_dir(output.join("state/models"))
        .unwrap()
        .collect();
    assert!(left.is_empty(), "{left:?}");
}
