//! Helpers shared by the integration tests: a scratch copy of the tiny Fashion-MNIST fixture,
//! graph files pointing into it, and readers for what a run writes.
#![allow(dead_code)]

use discl::{Pipeline, RunOptions};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

pub const REPO: &str = env!("CARGO_MANIFEST_DIR");

/// Fashion-MNIST's classes (folder names) in label order.
pub const CLASSES: [&str; 10] = [
    "tshirt-top",
    "trouser",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "ankle-boot",
];

/// Copies the fixture into `dir` and writes `dir/p.toml` (see [`pipeline_text`]); returns it.
pub fn write_pipeline(dir: &Path, rules: &str) -> PathBuf {
    let images = copy_fixture(dir);
    let file = dir.join("p.toml");
    std::fs::write(&file, pipeline_text(dir, &images, &classifier(), rules)).unwrap();
    file
}

/// The shipped tiny image set (12 official test images per class).
pub fn fixture() -> PathBuf {
    Path::new(REPO).join("tests/fixtures/fashion-tiny")
}

/// The shipped baseline classifier.
pub fn classifier() -> PathBuf {
    Path::new(REPO).join("models/fashion-cnn")
}

/// The runners a model gets by default on the CPU: one per core.
pub fn runners() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Copies a folder and everything under it (a model folder to edit) to `to`.
pub fn copy_folder(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_folder(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// Copies the fixture's class folders into `dir/images`.
pub fn copy_fixture(dir: &Path) -> PathBuf {
    let target = dir.join("images");
    for class in std::fs::read_dir(fixture()).unwrap() {
        let class = class.unwrap().path();
        if !class.is_dir() {
            continue;
        }
        let to = target.join(class.file_name().unwrap());
        std::fs::create_dir_all(&to).unwrap();
        for file in std::fs::read_dir(&class).unwrap() {
            let file = file.unwrap().path();
            std::fs::copy(&file, to.join(file.file_name().unwrap())).unwrap();
        }
    }
    target
}

/// A graph file: source → classify → (feedback) → hard → sink, over `images`.
pub fn pipeline_text(dir: &Path, images: &Path, model: &Path, rules: &str) -> String {
    format!(
        r#"[pipeline]
name = "tiny"
output = "{out}"

[models.cnn]
path = "{model}"

[nodes.train]
op = "source"
format = "image_folder"
path = "{images}"

[nodes.scores]
op = "classify"
inputs = ["train"]
model = "cnn"
batch_size = 16

[nodes.trainer]
op = "feedback"
inputs = ["train"]
path = "{feedback}"

[nodes.hard]
op = "hard"
inputs = ["train", "scores", "trainer"]
rules = {rules}

[nodes.manifests]
op = "sink"
inputs = ["hard", "scores", "train"]
formats = ["jsonl", "parquet"]
"#,
        out = dir.join("out").display(),
        model = model.display(),
        images = images.display(),
        feedback = dir.join("feedback").display(),
    )
}

/// Reads `<out>/<sink>/current/<file>.jsonl` as JSON values.
pub fn read_jsonl(out: &Path, sink: &str, file: &str) -> Vec<serde_json::Value> {
    let path = out.join(sink).join("current").join(format!("{file}.jsonl"));
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Row count of a Parquet manifest, read back with the parquet crate.
pub fn parquet_rows(path: &Path) -> i64 {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    let reader = SerializedFileReader::new(std::fs::File::open(path).unwrap()).unwrap();
    reader.metadata().file_metadata().num_rows()
}

/// The updates a captured stream carried, as a sorted list (order across batches is not part
/// of a dataflow's meaning; the updates are).
pub fn sorted_updates<T: Ord, D: Ord + Clone + 'static>(
    captured: std::sync::mpsc::Receiver<timely::dataflow::operators::capture::Event<T, Vec<D>>>,
) -> Vec<D> {
    use timely::dataflow::operators::capture::Extract;
    let mut out: Vec<D> = captured
        .extract()
        .into_iter()
        .flat_map(|(_, d)| d)
        .collect();
    out.sort();
    out
}

/// Compiles and runs graph-file text with `workers` timely workers.
pub fn run_text(text: &str, workers: usize) -> discl::RunSummary {
    let pipeline = Pipeline::from_toml("test.toml", text).unwrap_or_else(|e| panic!("{e}"));
    let options = RunOptions {
        timely_args: vec!["-w".into(), workers.to_string()],
        progress: false,
        ..Default::default()
    };
    pipeline.run(&options).unwrap_or_else(|e| panic!("{e}"))
}

/// A graph file: the fixture at `images` scored by the shipped CNN (`train`, `scores`), then `nodes`.
pub fn scored_graph(out: &Path, images: &Path, nodes: &str) -> String {
    format!(
        r#"[pipeline]
name = "ops"
output = "{out}"
seed = 3

[models.cnn]
path = "{model}"

[nodes.train]
op = "source"
format = "image_folder"
path = "{images}"

[nodes.scores]
op = "classify"
inputs = ["train"]
model = "cnn"
batch_size = 32
{nodes}"#,
        out = out.display(),
        model = classifier().display(),
        images = images.display(),
    )
}

/// The distinct values of an integer field.
pub fn ids(rows: &[serde_json::Value], field: &str) -> BTreeSet<u64> {
    rows.iter().map(|r| r[field].as_u64().unwrap()).collect()
}

/// Image requests for a diffusion model: `sources` made-up source images (each with its own
/// prompt, `a photo of thing {source}`) × λ ∈ {0, 0.5} × `seeds` seeds, noise keyed under
/// `pipeline_seed`.
pub fn diffusion_requests(
    model: &discl::runtime::diffusion::DiffusionModel,
    sources: u64,
    seeds: u32,
    pipeline_seed: u64,
) -> Vec<discl::runtime::diffusion::ImageRequest> {
    use discl::runtime::diffusion::{Condition, ImageRequest, NoiseKey};
    let len = model.image_len();
    let mut out = Vec::new();
    for source in 0..sources {
        let pixels: std::sync::Arc<Vec<f32>> = std::sync::Arc::new(
            (0..len)
                .map(|i| ((i as u64 * 29 + source * 7) % 97) as f32 / 48.0 - 1.0)
                .collect(),
        );
        for level in [0u16, 500] {
            for seed_index in 0..seeds {
                out.push(ImageRequest {
                    source: Some((
                        discl::record::Digest::of(&source.to_le_bytes()),
                        std::sync::Arc::clone(&pixels),
                    )),
                    condition: Condition::Prompt(format!("a photo of thing {source}")),
                    level,
                    noise: NoiseKey {
                        pipeline_seed,
                        sample: source,
                        level,
                        seed_index,
                    },
                });
            }
        }
    }
    out
}
