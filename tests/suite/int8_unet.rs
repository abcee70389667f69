//! The int8 rewrite of a UNet (`runtime::rewrite::int8`) on the shipped tiny-sd: every weight MatMul is
//! rewritten, ONNX Runtime runs the result, its output stays close to the float model's, and a
//! model whose weights live in an external data file gives exactly the same int8 model.

use discl::runtime::diffusion::model::{Conditioning, DiffusionModel};
use discl::runtime::onnx::SessionOptions;
use discl::runtime::rewrite::int8::{quantize_matmuls, Summary};
use discl::runtime::rewrite::tensor::{self, DataFile, Tensor, FLOAT};
use discl::runtime::rewrite::wire::{self, Field, Value};
use ort::value::TensorRef;
use std::path::{Path, PathBuf};

const REPO: &str = env!("CARGO_MANIFEST_DIR");

fn tiny_sd() -> PathBuf {
    Path::new(REPO).join("models/tiny-sd")
}

/// Rewrites `source` into `folder/model.onnx` (and its data file, when written).
fn rewrite(source: &Path, folder: &Path) -> (PathBuf, Summary, u64) {
    std::fs::create_dir_all(folder).unwrap();
    let mut data = DataFile {
        name: "model.onnx_data".into(),
        out: std::fs::File::create(folder.join("model.onnx_data")).unwrap(),
        written: 0,
    };
    let bytes = std::fs::read(source).unwrap();
    let (model, summary) = quantize_matmuls(&bytes, source.parent().unwrap(), &mut data).unwrap();
    let file = folder.join("model.onnx");
    std::fs::write(&file, model).unwrap();
    (file, summary, data.written)
}

/// The UNet's output for fixed inputs (2 rows, a timestep, text states).
pub(crate) fn unet_output(unet_file: Option<PathBuf>) -> Vec<f32> {
    let model =
        DiffusionModel::open_with_unet(&tiny_sd(), &SessionOptions::default(), unet_file).unwrap();
    let [c, h, w] = model.latent_shape;
    let Conditioning::Text(text) = &model.conditioning else {
        panic!("tiny-sd is text-conditioned")
    };
    let seq = text.tokenizer.max_length;
    let sample: Vec<f32> = (0..2 * c * h * w)
        .map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0)
        .collect();
    let hidden: Vec<f32> = (0..2 * seq * 32)
        .map(|i| ((i * 13 % 97) as f32 / 48.0) - 1.0)
        .collect();
    let time = [481.0f32];
    let sample = TensorRef::from_array_view(([2, c, h, w], sample.as_slice())).unwrap();
    let time = TensorRef::from_array_view((Vec::<usize>::new(), &time[..])).unwrap();
    let hidden = TensorRef::from_array_view(([2, seq, 32], hidden.as_slice())).unwrap();
    let inputs = [
        ("sample", &sample.into_dyn()),
        ("timestep", &time.into_dyn()),
        ("encoder_hidden_states", &hidden.into_dyn()),
    ];
    let out = model.unet.run(&inputs, &model.unet_io.output).unwrap();
    out.try_extract_tensor::<f32>().unwrap().1.to_vec()
}

pub(crate) fn op_types(file: &Path) -> Vec<String> {
    let bytes = std::fs::read(file).unwrap();
    let model = wire::fields(&bytes).unwrap();
    let graph = wire::fields(
        model
            .iter()
            .find(|f| f.number == 7)
            .unwrap()
            .bytes()
            .unwrap(),
    )
    .unwrap();
    graph
        .iter()
        .filter(|f| f.number == 1)
        .map(|node| {
            let node = wire::fields(node.bytes().unwrap()).unwrap();
            node.iter()
                .find(|f| f.number == 4)
                .unwrap()
                .text()
                .unwrap()
                .to_string()
        })
        .collect()
}

/// A copy of `source` with every float initializer in an external data file beside it.
fn externalised(source: &Path, folder: &Path) -> PathBuf {
    std::fs::create_dir_all(folder).unwrap();
    let bytes = std::fs::read(source).unwrap();
    let model = wire::fields(&bytes).unwrap();
    let graph_bytes = model
        .iter()
        .find(|f| f.number == 7)
        .unwrap()
        .bytes()
        .unwrap();
    let mut data = DataFile {
        name: "weights.bin".into(),
        out: std::fs::File::create(folder.join("weights.bin")).unwrap(),
        written: 0,
    };
    let mut graph = Vec::new();
    let mut moved = 0;
    for field in wire::fields(graph_bytes).unwrap() {
        let Some(t) = (field.number == 5).then(|| Tensor::parse(field.bytes().unwrap()).unwrap())
        else {
            wire::put(&mut graph, &field);
            continue;
        };
        if t.data_type != FLOAT || t.values() < 16 {
            wire::put(&mut graph, &field);
            continue;
        }
        let values: Vec<u8> = t
            .floats(Path::new("/"))
            .unwrap()
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        wire::put_bytes(
            &mut graph,
            5,
            &tensor::encode(t.name, FLOAT, &t.dims, &values, Some(&mut data)).unwrap(),
        );
        moved += 1;
    }
    assert!(moved > 40, "{moved} tensors moved");
    let mut out = Vec::new();
    for field in &model {
        match field.number {
            7 => wire::put(
                &mut out,
                &Field {
                    number: 7,
                    value: Value::Bytes(&graph),
                },
            ),
            _ => wire::put(&mut out, field),
        }
    }
    let file = folder.join("model.onnx");
    std::fs::write(&file, out).unwrap();
    file
}

#[test]
fn int8_unet_runs_close_to_the_float_unet() {
    let dir = tempfile::tempdir().unwrap();
    let source = tiny_sd().join("unet/model.onnx");
    let (file, summary, data) = rewrite(&source, &dir.path().join("int8"));
    let float_matmuls = op_types(&source).iter().filter(|o| *o == "MatMul").count();
    let ops = op_types(&file);
    let count = |op: &str| ops.iter().filter(|o| *o == op).count();
    // tiny-sd has 56 MatMuls, 40 of them against a weight matrix (the rest multiply
    // activations: attention scores and their weighted sums).
    assert_eq!(float_matmuls, 56);
    assert_eq!((count("DynamicQuantizeMatMul"), count("MatMul")), (40, 16));
    assert_eq!(summary.matmuls, 40);
    assert_eq!(
        summary.kept, 0,
        "no float copy of a quantized weight is kept"
    );
    assert_eq!(data, 0, "an inline model stays inline");
    let smaller = std::fs::metadata(&file).unwrap().len() as f64
        / std::fs::metadata(&source).unwrap().len() as f64;
    assert!(smaller < 0.95, "int8 file is {smaller:.2} of the float one");

    let float = unet_output(None);
    let int8 = unet_output(Some(file));
    assert_eq!(float.len(), int8.len());
    let scale = float.iter().map(|v| v.abs()).sum::<f32>() / float.len() as f32;
    let max = float
        .iter()
        .zip(&int8)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    let mean = float
        .iter()
        .zip(&int8)
        .map(|(a, b)| (a - b).abs())
        .sum::<f32>()
        / float.len() as f32;
    assert!(
        max > 0.0,
        "the int8 model computes something else than the float one"
    );
    assert!(
        mean < 0.02 * scale && max < 0.2 * scale,
        "mean |Δ| {mean}, max |Δ| {max}, mean |x| {scale}"
    );
}

#[test]
fn external_weights_give_the_same_int8_model() {
    let dir = tempfile::tempdir().unwrap();
    let source = tiny_sd().join("unet/model.onnx");
    let (inline, _, _) = rewrite(&source, &dir.path().join("inline"));
    let external = externalised(&source, &dir.path().join("external-source"));
    assert_eq!(
        unet_output(Some(external.clone())),
        unet_output(None),
        "the externalised copy is the same model"
    );
    let (file, summary, written) = rewrite(&external, &dir.path().join("external-int8"));
    assert_eq!(summary.matmuls, 40);
    assert!(written > 0, "external weights stay external");
    assert_eq!(unet_output(Some(file)), unet_output(Some(inline)));
}

#[test]
fn a_file_that_is_not_onnx_is_an_error() {
    let mut data = DataFile {
        name: "d".into(),
        out: Vec::new(),
        written: 0,
    };
    let err = quantize_matmuls(b"\x0b not protobuf", Path::new("."), &mut data).unwrap_err();
    assert!(err.contains("wire type 3"), "{err}");
    let mut only_ir = Vec::new();
    wire::put_varint_field(&mut only_ir, 1, 8);
    let err = quantize_matmuls(&only_ir, Path::new("."), &mut data).unwrap_err();
    assert_eq!(err, "the file has no graph");
}

/// Inline weights read in place (`rewrite::in_place`): the view moves every large initializer out
/// of the protobuf, and a session opened through it (as every discl session is) computes what
/// one opened from the file computes, bit for bit.
#[test]
fn a_view_with_weights_in_place_computes_what_the_file_computes() {
    use discl::runtime::rewrite::in_place::weights_in_place;
    let file = tiny_sd().join("unet/model.onnx");
    let bytes = std::fs::read(&file).unwrap();
    let view = weights_in_place(&bytes, "model.onnx").unwrap().unwrap();
    assert!(
        view.len() * 3 < bytes.len(),
        "{} of {}",
        view.len(),
        bytes.len()
    );
    let through_view = unet_output(None);
    // The same call on a session ONNX Runtime makes from the file itself.
    discl::runtime::onnx::environment().unwrap();
    let mut session = ort::session::Session::builder(discl::runtime::onnx::environment().unwrap())
        .unwrap()
        .with_intra_threads(1)
        .unwrap()
        .commit_from_file(&file)
        .unwrap();
    let seq = 77;
    let sample: Vec<f32> = (0..2 * 4 * 16 * 16)
        .map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0)
        .collect();
    let hidden: Vec<f32> = (0..2 * seq * 32)
        .map(|i| ((i * 13 % 97) as f32 / 48.0) - 1.0)
        .collect();
    let time = [481.0f32];
    let out = session
        .run(ort::inputs![
            "sample" => TensorRef::from_array_view(([2, 4, 16, 16], sample.as_slice())).unwrap(),
            "timestep" => TensorRef::from_array_view((Vec::<usize>::new(), &time[..])).unwrap(),
            "encoder_hidden_states" => TensorRef::from_array_view(([2, seq, 32], hidden.as_slice())).unwrap(),
        ])
        .unwrap();
    assert_eq!(
        out[0].try_extract_tensor::<f32>().unwrap().1,
        &through_view[..]
    );
}
