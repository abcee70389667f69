//! Memory budgets on the shipped tiny-sd: a model's `memory` caps the default runners (which
//! share one session on the CPU) and a generator's batch (and `discl run` says so), and a UNet or VAE call that runs out of memory
//! is made again at half the batch, with the same images (simulated with `DISCL_FAIL_ALLOC`).

use crate::common;

use common::*;
use discl::Pipeline;
use std::path::Path;
use std::process::Command;

fn graph(out: &Path, model: &str, generate: &str) -> String {
    format!(
        r#"[pipeline]
name = "budget"
output = "{out}"
seed = 3

[models.cnn]
path = "{repo}/models/fashion-cnn"

[models.gen]
path = "{repo}/models/tiny-sd"
{model}

[nodes.train]
op = "source"
format = "image_folder"
path = "{fixture}"

[nodes.synthetic]
op = "generate"
inputs = ["train"]
model = "gen"
classes_from = "cnn"
levels = [0.0, 0.5]
steps = 3
scheduler = "ddim"
{generate}

[nodes.out]
op = "sink"
inputs = ["synthetic"]
"#,
        out = out.display(),
        repo = REPO,
        fixture = fixture().display(),
    )
}

fn configuration(text: &str) -> Vec<String> {
    Pipeline::from_toml("budget.toml", text)
        .unwrap_or_else(|e| panic!("{e}"))
        .configuration()
}

#[test]
fn a_budget_caps_default_sessions_and_the_batch() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let each = discl::runtime::memory::session_bytes(&Path::new(REPO).join("models/tiny-sd"));
    let image =
        discl::runtime::memory::unet_image_bytes(&Path::new(REPO).join("models/tiny-sd")).unwrap();
    // Room for the session and one runner's activations, not for a second runner's.
    let lines = configuration(&graph(
        &out,
        &format!("memory = \"{}\"", each + image + image / 2),
        "",
    ));
    assert!(
        lines[0].starts_with("model gen: cpu, 1 session run by 1 runner(s) at once (default: one per core, as many as the memory budget holds)"),
        "{lines:?}"
    );
    // The session's weights and three images' activations.
    let budget = each + 3 * image + image / 2;
    let model = format!("sessions = 1\nmemory = \"{budget}\"");
    let lines = configuration(&graph(&out, &model, "batch_size = 16"));
    assert!(
        lines.iter().any(|l| l == "node synthetic: batch 3 image(s) per UNet call (16 asked; the model's memory budget holds 3)"),
        "{lines:?}"
    );
    // Without batch_size the sizes measured stop at what the budget holds.
    let model = format!("sessions = 1\nmemory = \"{budget}\"");
    let lines = configuration(&graph(&out, &model, ""));
    assert!(
        lines.iter().any(|l| l == "node synthetic: batch 1 to 3 (the fastest measured) image(s) per UNet call (default; the model's memory budget holds 3)"),
        "{lines:?}"
    );
    // Two runners share the weights: the same budget plus three more images holds 3 each.
    let budget = each + 6 * image + image / 2;
    let model = format!("sessions = 2\nmemory = \"{budget}\"");
    let lines = configuration(&graph(&out, &model, "batch_size = 16"));
    assert!(
        lines.iter().any(|l| l == "node synthetic: batch 3 image(s) per UNet call (16 asked; the model's memory budget holds 3)"),
        "{lines:?}"
    );
    // Runners the graph names are started as named; a roomy budget leaves the batch alone.
    let lines = configuration(&graph(
        &out,
        "sessions = 2\nmemory = \"4 GiB\"",
        "batch_size = 16",
    ));
    assert!(
        lines[0].starts_with("model gen: cpu, 1 session run by 2 runner(s) at once × 1 thread(s)"),
        "{lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l == "node synthetic: batch 16 image(s) per UNet call"),
        "{lines:?}"
    );
    let err = Pipeline::from_toml("budget.toml", &graph(&out, "memory = \"lots\"", ""))
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("`lots` is not a size"), "{err}");
}

#[test]
fn a_measured_batch_keeps_its_activations_within_the_weights() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    // tiny-sd's UNet config claiming 64×64 latents: ~3 GiB of attention maps an image against
    // ~10 MiB of weights, so the default makes one image per call and measures nothing.
    let model = dir.path().join("big-latents");
    copy_folder(&Path::new(REPO).join("models/tiny-sd"), &model);
    let config = model.join("unet/config.json");
    let text = std::fs::read_to_string(&config).unwrap();
    let mut json: serde_json::Value = serde_json::from_str(&text).unwrap();
    json["sample_size"] = 64.into();
    std::fs::write(&config, json.to_string()).unwrap();
    let text =
        graph(&out, "", "").replace(&format!("{REPO}/models/tiny-sd"), model.to_str().unwrap());
    let lines = configuration(&text);
    let image = discl::runtime::memory::unet_image_bytes(&model).unwrap();
    assert!(image > 3 << 30, "{image}");
    assert!(
        lines.iter().any(|l| l.starts_with("node synthetic: batch 1 image(s) per UNet call (default; at ~3.0 GiB of activations an image, more would hold over 256 MiB")),
        "{lines:?}"
    );
    // Asked for, a batch is the graph's to choose (within the budget).
    let lines = configuration(
        &graph(&out, "sessions = 1\nmemory = \"40 GiB\"", "batch_size = 4")
            .replace(&format!("{REPO}/models/tiny-sd"), model.to_str().unwrap()),
    );
    assert!(
        lines
            .iter()
            .any(|l| l == "node synthetic: batch 4 image(s) per UNet call"),
        "{lines:?}"
    );
    // The shipped tiny-sd (~13 MiB an image) still measures up to 8.
    let lines = configuration(&graph(&out, "", ""));
    assert!(
        lines.iter().any(|l| l == "node synthetic: batch 1 to 8 (the fastest measured) image(s) per UNet call (default)"),
        "{lines:?}"
    );
}

/// Runs the graph with `discl run`, the test hook refusing calls on more than `limit` images.
fn run(dir: &Path, name: &str, generate: &str, limit: Option<usize>) -> (Vec<String>, String) {
    let out = dir.join(name);
    let file = dir.join(format!("{name}.toml"));
    std::fs::write(&file, graph(&out, "sessions = 1", generate)).unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_discl"));
    command.args(["run", file.to_str().unwrap()]);
    if let Some(limit) = limit {
        command.env("DISCL_FAIL_ALLOC", limit.to_string());
    }
    let result = command.output().unwrap();
    let stderr = String::from_utf8_lossy(&result.stderr).into_owned();
    assert!(result.status.success(), "{stderr}");
    let mut digests: Vec<String> = read_jsonl(&out, "out", "synthetic")
        .iter()
        .map(|r| format!("{} {}", r["key"], r["digest"]))
        .collect();
    digests.sort();
    (digests, stderr)
}

#[test]
fn a_call_out_of_memory_is_made_again_at_half_the_batch() {
    let dir = tempfile::tempdir().unwrap();
    let (one, quiet) = run(dir.path(), "one", "batch_size = 1", None);
    assert!(!quiet.contains("ran out of memory"), "{quiet}");
    let (shrunk, said) = run(dir.path(), "shrunk", "batch_size = 8", Some(2));
    assert!(!one.is_empty());
    assert_eq!(shrunk, one, "the same images at any batch");
    assert!(
        said.contains("a call on 8 images ran out of memory")
            && said.contains("continuing at 4 per call")
            && said.contains("continuing at 2 per call"),
        "{said}"
    );
    assert!(said.contains("simulated: DISCL_FAIL_ALLOC"), "{said}");
    // A single image that cannot be made is an error record, not a crash.
    let (none, said) = run(dir.path(), "none", "batch_size = 1", Some(0));
    assert!(none.is_empty(), "{none:?}");
    assert!(said.is_empty() || !said.contains("panicked"), "{said}");
}
