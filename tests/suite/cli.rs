//! The `discl` binary: validate, graph and run, with the error texts users see.

use crate::common;

use common::*;
use std::process::Command;

fn discl(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_discl"))
        .args(args)
        .current_dir(REPO)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[test]
fn validate_reports_three_mistakes_in_one_run() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    std::fs::write(
        &file,
        r#"[pipeline]
name = "bad"
output = "out/bad"

[models.cnn]
path = "models/fashion-cnn"

[nodes.train]
op = "source"
format = "image_folder"
path = "tests/fixtures/fashion-tiny"

[nodes.scores]
op = "clasify"
inputs = ["train"]
model = "cnn"

[nodes.hard]
op = "hard"
inputs = ["train", "scorez"]
rules = [{ misclassified = true }]

[nodes.out]
op = "sink"
inputs = ["hard"]
formats = ["jsonl"]
keep = 2
"#,
    )
    .unwrap();
    let (code, _, stderr) = discl(&["validate", file.to_str().unwrap()]);
    assert_eq!(code, 1);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 3, "{stderr}");
    let f = file.display();
    let ops = discl::graph::ops::names();
    assert!(
        ops.starts_with("source, classify, feedback, hard, generate, sink"),
        "{ops}"
    );
    assert_eq!(
        lines[0],
        format!("{f}:14: node `scores`: unknown op `clasify` (expected one of {ops})")
    );
    assert_eq!(
        lines[1],
        format!("{f}:20: node `hard`: input `scorez` is not a node")
    );
    assert_eq!(
        lines[2],
        format!("{f}:27: node `out`: unknown field `keep`, expected `formats` or `keep_versions`")
    );
}

#[test]
fn validate_loads_models_and_names_a_model_that_does_not_fit() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("wrong-cnn");
    std::fs::create_dir_all(&model).unwrap();
    std::fs::copy(classifier().join("model.onnx"), model.join("model.onnx")).unwrap();
    let meta = std::fs::read_to_string(classifier().join("discl.toml")).unwrap();
    std::fs::write(
        model.join("discl.toml"),
        meta.replace("input_shape = [1, 28, 28]", "input_shape = [1, 32, 32]"),
    )
    .unwrap();
    let images = copy_fixture(dir.path());
    let file = dir.path().join("p.toml");
    std::fs::write(
        &file,
        pipeline_text(dir.path(), &images, &model, "[{ misclassified = true }]"),
    )
    .unwrap();
    let (code, _, stderr) = discl(&["validate", file.to_str().unwrap()]);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains(&format!("{}:5: models.cnn:", file.display())),
        "{stderr}"
    );
    assert!(stderr.contains("wrong-cnn/model.onnx: input `input` has shape [-1, 1, 28, 28], expected [batch, 1, 32, 32]"), "{stderr}");
    assert!(stderr.contains("(used by node `scores`)"), "{stderr}");

    let shipped = dir.path().join("ok.toml");
    std::fs::write(
        &shipped,
        pipeline_text(
            dir.path(),
            &images,
            &classifier(),
            "[{ misclassified = true }]",
        ),
    )
    .unwrap();
    let (code, stdout, stderr) = discl(&["validate", shipped.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.ends_with("ok\n"));
}

#[test]
fn graph_prints_dot_and_run_writes_a_summary() {
    let dir = tempfile::tempdir().unwrap();
    let file = write_pipeline(dir.path(), "[{ misclassified = true }]");
    let (code, dot, _) = discl(&["graph", file.to_str().unwrap()]);
    assert_eq!(code, 0);
    assert!(dot.starts_with("digraph \"tiny\" {"));
    for edge in [
        "\"train\" -> \"scores\";",
        "\"scores\" -> \"hard\";",
        "\"trainer\" -> \"hard\";",
        "\"hard\" -> \"manifests\";",
    ] {
        assert!(dot.contains(edge), "{edge} missing from\n{dot}");
    }
    let summary = dir.path().join("summary.json");
    let (code, stdout, stderr) = discl(&[
        "run",
        file.to_str().unwrap(),
        "--summary-json",
        summary.to_str().unwrap(),
        "-w",
        "2",
    ]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("version(s) [0] written"), "{stdout}");
    assert!(
        stdout.contains("scores 120→120 (120 classified, 0 from the store)"),
        "{stdout}"
    );
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(summary).unwrap()).unwrap();
    assert_eq!(summary["versions_written"], serde_json::json!([0]));
    assert_eq!(summary["nodes"]["scores"]["records_out"], 120);
    // 120 images in calls of up to 16 from 2 workers, each spreading what it holds when the
    // version completes over the runners (one per core): from 8 calls to one more per worker
    // for each further runner.
    let calls = summary["nodes"]["scores"]["model_calls"].as_u64().unwrap() as usize;
    assert!((8..8 + 2 * runners()).contains(&calls), "{calls}");
    assert!(summary["nodes"]["scores"]["seconds"].as_f64().unwrap() > 0.0);

    // A second process with nothing changed: answers come from the output folder's store.
    let again = dir.path().join("again.json");
    let args = [
        "run",
        file.to_str().unwrap(),
        "--summary-json",
        again.to_str().unwrap(),
    ];
    let (code, stdout, stderr) = discl(&args);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("scores 120→120 (0 classified, 120 from the store)"),
        "{stdout}"
    );
    let again: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(again).unwrap()).unwrap();
    assert_eq!(again["versions_written"], serde_json::json!([]));
    assert_eq!(again["nodes"]["scores"]["model_calls"], 0);
    assert_eq!(again["nodes"]["scores"]["cache_hits"], 120);
}

#[test]
fn cuda_without_a_gpu_is_a_clear_error_unless_fallback_is_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let images = copy_fixture(dir.path());
    let text = pipeline_text(
        dir.path(),
        &images,
        &classifier(),
        "[{ misclassified = true }]",
    );
    let file = dir.path().join("cuda.toml");
    std::fs::write(
        &file,
        text.replace("[models.cnn]\n", "[models.cnn]\ndevice = \"cuda:0\"\n"),
    )
    .unwrap();
    let (code, _, stderr) = discl(&["validate", file.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(
        stderr.contains("device cuda:0 asked for, but the loaded ONNX Runtime has no CUDA support"),
        "{stderr}"
    );
    let file = dir.path().join("fallback.toml");
    std::fs::write(
        &file,
        text.replace(
            "[models.cnn]\n",
            "[models.cnn]\ndevice = \"cuda:0\"\nfallback = \"cpu\"\n",
        ),
    )
    .unwrap();
    let (code, _, stderr) = discl(&["validate", file.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
}

#[test]
fn watch_mode_writes_a_snapshot_per_change_and_stops_cleanly_on_ctrl_c() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let file = write_pipeline(dir.path(), "[{ misclassified = true }]");
    let mut child = Command::new(env!("CARGO_BIN_EXE_discl"))
        .args([
            "run",
            file.to_str().unwrap(),
            "--watch",
            "--interval",
            "0.2",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    assert!(
        first.starts_with("version 0: tiny: version(s) [0]"),
        "{first}"
    );
    // A trainer checkpoint arrives: the next refresh writes a new version.
    std::fs::create_dir_all(dir.path().join("feedback")).unwrap();
    std::fs::write(
        dir.path().join("feedback/checkpoint-1.jsonl"),
        "{\"sample\": \"bag/none.png\", \"p_true\": 0.5, \"predicted\": \"bag\"}\n",
    )
    .unwrap();
    let second = lines.next().unwrap().unwrap();
    assert!(second.contains("version(s) [0, "), "{second}");
    assert!(
        second.ends_with("1 error record(s)"),
        "the unknown sample is reported: {second}"
    );
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let last = lines.last().unwrap().unwrap();
    assert!(last.starts_with("tiny: version(s) [0, "), "{last}");
    assert!(child.wait().unwrap().success());
    let errors =
        std::fs::read_to_string(dir.path().join("out/errors/current/errors.jsonl")).unwrap();
    assert!(errors.contains("feedback names unknown sample"), "{errors}");
}

#[test]
fn a_watch_interval_that_is_not_a_positive_finite_number_is_a_usage_error() {
    // A real pipeline: before intervals were checked, `inf` ran it and then panicked.
    let dir = tempfile::tempdir().unwrap();
    let file = write_pipeline(dir.path(), "[{ misclassified = true }]");
    for (value, why) in [
        ("inf", "expected a positive, finite number of seconds"),
        ("-inf", "expected a positive, finite number of seconds"),
        ("NaN", "expected a positive, finite number of seconds"),
        ("-1", "expected a positive, finite number of seconds"),
        ("0", "expected a positive, finite number of seconds"),
        ("1e300", "too many seconds"),
        ("soon", "expected a number of seconds"),
    ] {
        let interval = format!("--interval={value}");
        let (code, stdout, stderr) = discl(&["run", file.to_str().unwrap(), "--watch", &interval]);
        assert_eq!(code, 2, "--interval {value}: {stderr}");
        assert!(stdout.is_empty(), "nothing ran: {stdout}");
        assert!(
            stderr.contains(&format!(
                "invalid value '{value}' for '--interval <INTERVAL>': {why}"
            )),
            "--interval {value}: {stderr}"
        );
    }
    assert!(!dir.path().join("out").exists(), "nothing was written");
}

#[test]
fn run_prints_the_configuration_it_chose() {
    let dir = tempfile::tempdir().unwrap();
    let images = copy_fixture(dir.path());
    let text = pipeline_text(
        dir.path(),
        &images,
        &classifier(),
        "[{ misclassified = true }]",
    )
    .replace(
        "[models.cnn]\n",
        "[models.cnn]\ndevice = \"cuda:0\"\nfallback = \"cpu\"\n",
    );
    let file = dir.path().join("fallback.toml");
    std::fs::write(&file, &text).unwrap();
    let (code, _, stderr) = discl(&["run", file.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let expected =
        format!("model cnn: cpu, 1 session run by {cores} runner(s) at once (default) × 1 thread(s) (used by");
    assert!(stderr.contains(&expected), "{stderr}");
    assert!(
        stderr.contains("timely: 1 worker(s) in this process"),
        "{stderr}"
    );

    let generate = |extra: &str| {
        let nodes = format!(
            "[models.gen]\npath = \"{REPO}/models/tiny-pixel-unet\"\n{extra}\n\
             [nodes.gen]\nop = \"generate\"\ninputs = [\"train\"]\nmodel = \"gen\"\n\
             classes_from = \"cnn\"\nlevels = [0.5]\n{}",
            if extra.is_empty() {
                ""
            } else {
                "batch_size = 4\n"
            }
        );
        let graph = scored_graph(&dir.path().join("out"), &images, &nodes);
        let lines = discl::Pipeline::from_toml("g.toml", &graph)
            .unwrap()
            .configuration();
        // Each CPU model's line ends with its memory budget, which depends on the machine.
        lines
            .into_iter()
            .map(|l| {
                let budget = l.find("; memory budget ").map_or(l.len(), |at| {
                    assert!(l.ends_with(" for the session"), "{l}");
                    at
                });
                l[..budget].to_string()
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(
        generate(""),
        [
            format!("model cnn: cpu, 1 session run by {cores} runner(s) at once (default) × 1 thread(s) (used by node `scores`)"),
            format!("model gen: cpu, 1 session run by {cores} runner(s) at once (default) × 1 thread(s) (used by node `gen`)"),
            "node gen: batch 1 to 8 (the fastest measured) image(s) per UNet call (default)".to_string(),
        ]
    );
    assert_eq!(
        generate("sessions = 3\nthreads = 2")[1..],
        [
            "model gen: cpu, 1 session run by 3 runner(s) at once × 2 thread(s) (used by node `gen`)".to_string(),
            "node gen: batch 4 image(s) per UNet call".to_string(),
        ]
    );
}

#[test]
fn sigterm_stops_a_watch_run_like_ctrl_c_and_writes_the_summary() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let file = write_pipeline(dir.path(), "[{ misclassified = true }]");
    let summary = dir.path().join("summary.json");
    let mut child = Command::new(env!("CARGO_BIN_EXE_discl"))
        .args([
            "run",
            file.to_str().unwrap(),
            "--watch",
            "--interval",
            "0.2",
        ])
        .arg("--summary-json")
        .arg(&summary)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    assert!(
        first.starts_with("version 0: tiny: version(s) [0]"),
        "{first}"
    );
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let last = lines.last().unwrap().unwrap();
    assert!(last.starts_with("tiny: version(s) [0]"), "{last}");
    let exit = child.wait().unwrap();
    assert_eq!(exit.code(), Some(0), "SIGTERM exits 0 like Ctrl-C: {exit}");
    let written: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&summary).unwrap()).unwrap();
    assert_eq!(
        written["versions_written"],
        serde_json::json!([0]),
        "{written}"
    );
}
