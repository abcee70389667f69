//! The `sink` operator alone in a small timely dataflow: only complete versions are written,
//! a version's probe passes only once its snapshot is on disk, files say what the rows say,
//! an empty input gets its kind's Parquet columns, a failed write is logged without hanging
//! the run, and the writer thread ends with the dataflow.

use differential_dataflow::input::{Input, InputSession};
use discl::operators::sink::{Publish, SinkExt, SinkLog, SinkParams};
use discl::operators::NodeStats;
use discl::record::{Digest, Sample, Score, Value};
use discl::store::manifest::{ManifestFormat, Row, TableKind};
use parquet::basic::{ConvertedType, FieldRepetitionType, Type as Physical};
use parquet::file::reader::{FileReader, SerializedFileReader};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use timely::dataflow::operators::probe::Handle;
use timely::dataflow::operators::Probe;
use timely::worker::Worker;

fn params(node: &str, folder: PathBuf, inputs: &[(&str, TableKind)]) -> SinkParams {
    SinkParams {
        node: node.into(),
        folder,
        inputs: inputs.iter().map(|(name, _)| name.to_string()).collect(),
        kinds: inputs.iter().map(|(_, kind)| *kind).collect(),
        formats: vec![ManifestFormat::Jsonl, ManifestFormat::Parquet],
        keep_versions: 5,
        first_version: 0,
        report: None,
        stats: Arc::new(NodeStats::default()),
        written: Arc::new(Mutex::new(SinkLog::default())),
        provenance: serde_json::json!({ "graph": { "digest": "abc" } })
            .as_object()
            .unwrap()
            .clone(),
        publish: Publish::Itself,
    }
}

type Rows = InputSession<u64, (usize, Row), isize>;

/// Builds the sink alone, fed by an input session of (input index, row).
fn sink(worker: &mut Worker, params: SinkParams) -> (Rows, Handle<u64>) {
    worker.dataflow::<u64, _, _>(|scope| {
        let (input, rows) = scope.new_collection::<(usize, Row), isize>();
        let (probe, _) = rows.sink_manifests(params).probe();
        (input, probe)
    })
}

/// Steps until the probe passes `version`; a sink that never lets it pass fails the test.
fn step_past(worker: &mut Worker, probe: &Handle<u64>, version: u64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while probe.less_equal(&version) {
        assert!(
            Instant::now() < deadline,
            "version {version} never completed"
        );
        worker.step_or_park(Some(Duration::from_millis(1)));
    }
}

fn sample(name: &str) -> Row {
    Row::Sample(Sample {
        id: discl::record::sample_id(name),
        name: name.into(),
        label: name.split('/').next().unwrap().into(),
        path: format!("/data/{name}"),
        digest: Digest::of(name.as_bytes()),
    })
}

fn score(sample: u64, p_true: f32) -> Row {
    Row::Score(Score {
        sample,
        checkpoint: 1,
        p_true: Value(p_true),
        loss: Value(-p_true.ln()),
        predicted: "coat".into(),
    })
}

/// The `name` (or `sample`) field of every line of `<version>/<file>.jsonl`.
fn jsonl(folder: &Path, version: &str, file: &str) -> Vec<serde_json::Value> {
    let path = folder.join(version).join(format!("{file}.jsonl"));
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn parquet_rows(path: &Path) -> i64 {
    let reader = SerializedFileReader::new(std::fs::File::open(path).unwrap()).unwrap();
    reader.metadata().file_metadata().num_rows()
}

#[test]
fn only_complete_versions_are_written_and_their_files_say_what_the_rows_say() {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("manifests");
    let params = params(
        "alone",
        folder.clone(),
        &[("hard", TableKind::Sample), ("scores", TableKind::Score)],
    );
    let log = Arc::clone(&params.written);
    timely::execute_directly(move |worker| {
        let (mut input, probe) = sink(worker, params);
        let (coat, bag) = (sample("coat/a.png"), sample("bag/b.png"));
        input.update_at((0, coat.clone()), 0, 2);
        input.update_at((1, score(7, 0.25)), 0, 1);
        input.update_at((0, coat.clone()), 1, -2);
        input.update_at((0, bag.clone()), 1, 1);
        input.advance_to(1);
        input.flush();
        step_past(worker, &probe, 0);
        // The probe passed 0 only once its snapshot was on disk and logged.
        assert!(folder.join("v000000").is_dir());
        assert_eq!(log.lock().unwrap().versions, vec![0]);
        assert_eq!(log.lock().unwrap().last_rows, 3);
        for _ in 0..100 {
            worker.step();
        }
        assert!(
            !folder.join("v000001").exists(),
            "version 1 may still change"
        );
        let hard = jsonl(&folder, "v000000", "hard");
        assert_eq!(hard.len(), 2, "a count of 2 is two rows");
        assert!(hard.iter().all(|r| r["name"] == "coat/a.png"));
        let scores = jsonl(&folder, "v000000", "scores");
        assert_eq!(scores.len(), 1);
        assert_eq!(scores[0]["sample"], 7);
        assert_eq!(scores[0]["p_true"], 0.25);

        input.advance_to(2);
        input.flush();
        step_past(worker, &probe, 1);
        let hard = jsonl(&folder, "v000001", "hard");
        assert_eq!(hard.len(), 1);
        assert_eq!(hard[0]["name"], "bag/b.png");
        assert_eq!(jsonl(&folder, "v000001", "scores").len(), 1);
        assert_eq!(parquet_rows(&folder.join("v000001/hard.parquet")), 1);
        assert_eq!(parquet_rows(&folder.join("v000000/hard.parquet")), 2);
        assert_eq!(
            std::fs::read_link(folder.join("current")).unwrap(),
            Path::new("v000001")
        );
        let log = log.lock().unwrap();
        assert_eq!(log.versions, vec![0, 1]);
        assert_eq!(log.last_rows, 2);
        assert_eq!(log.error, None);
    });
}

#[test]
fn an_empty_input_writes_its_kinds_columns() {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("out");
    let mut params = params(
        "empty",
        folder.clone(),
        &[
            ("synthetic", TableKind::Synthetic),
            ("scores", TableKind::Score),
        ],
    );
    params.first_version = 3;
    let log = Arc::clone(&params.written);
    timely::execute_directly(move |worker| {
        let (mut input, probe) = sink(worker, params);
        input.advance_to(4);
        input.flush();
        step_past(worker, &probe, 3);
    });
    assert_eq!(log.lock().unwrap().versions, vec![3]);
    let current = folder.join("current");
    assert_eq!(std::fs::read_link(&current).unwrap(), Path::new("v000003"));
    assert_eq!(
        std::fs::read_to_string(current.join("synthetic.jsonl")).unwrap(),
        ""
    );
    let schema = |file: &str| -> Vec<(String, Physical, ConvertedType, FieldRepetitionType)> {
        let reader =
            SerializedFileReader::new(std::fs::File::open(current.join(file)).unwrap()).unwrap();
        assert_eq!(reader.metadata().file_metadata().num_rows(), 0);
        let descr = reader.metadata().file_metadata().schema_descr_ptr();
        descr
            .columns()
            .iter()
            .map(|c| {
                let repetition = c.self_type().get_basic_info().repetition();
                (
                    c.name().to_string(),
                    c.physical_type(),
                    c.converted_type(),
                    repetition,
                )
            })
            .collect()
    };
    let synthetic = schema("synthetic.parquet");
    let names: Vec<&str> = synthetic.iter().map(|c| c.0.as_str()).collect();
    assert_eq!(
        names,
        [
            "sample",
            "level",
            "seed",
            "prompt",
            "label",
            "path",
            "digest",
            "source",
            "text_score",
            "image_score"
        ]
    );
    assert_eq!(
        synthetic[1],
        (
            "level".into(),
            Physical::INT32,
            ConvertedType::UINT_16,
            FieldRepetitionType::REQUIRED
        )
    );
    for c in &synthetic[8..] {
        assert_eq!(
            (c.1, c.3),
            (Physical::FLOAT, FieldRepetitionType::OPTIONAL),
            "{}",
            c.0
        );
    }
    let scores: Vec<String> = schema("scores.parquet").into_iter().map(|c| c.0).collect();
    assert_eq!(
        scores,
        ["sample", "checkpoint", "p_true", "loss", "predicted"]
    );
    let mut info: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(current.join("_snapshot.json")).unwrap())
            .unwrap();
    // The content digest of the tables (what makes an unchanged rerun write nothing).
    let content = info.as_object_mut().unwrap().remove("content").unwrap();
    assert_eq!(content.as_str().unwrap().len(), 64);
    assert_eq!(
        info,
        serde_json::json!({"version": 3, "rows": {"synthetic": 0, "scores": 0}, "graph": {"digest": "abc"}})
    );
}

#[test]
fn a_failed_write_is_logged_and_never_holds_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let blocker = dir.path().join("a-file");
    std::fs::write(&blocker, b"not a folder").unwrap();
    let params = params(
        "broken",
        blocker.join("manifests"),
        &[("hard", TableKind::Sample)],
    );
    let log = Arc::clone(&params.written);
    let stats = Arc::clone(&params.stats);
    timely::execute_directly(move |worker| {
        let (mut input, probe) = sink(worker, params);
        input.update_at((0, sample("coat/a.png")), 0, 1);
        input.advance_to(1);
        input.flush();
        step_past(worker, &probe, 0);
        input.update_at((0, sample("bag/b.png")), 1, 1);
        input.advance_to(2);
        input.flush();
        step_past(worker, &probe, 1);
    });
    let log = log.lock().unwrap();
    assert!(log.versions.is_empty());
    let error = log.error.as_deref().expect("the error is logged");
    assert!(error.contains("a-file"), "{error}");
    assert_eq!(stats.summary(0.0).errors, 2, "both versions failed");
}

/// Names of this process's threads.
fn threads() -> Vec<String> {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .map(|name| name.trim_end().to_string())
        .collect()
}

#[test]
fn the_writer_thread_ends_with_the_dataflow() {
    let dir = tempfile::tempdir().unwrap();
    // Thread names are cut at 15 bytes: `sink:` and ten more.
    let params = params(
        "ends-3f9a",
        dir.path().join("out"),
        &[("hard", TableKind::Sample)],
    );
    let running = timely::execute_directly(move |worker| {
        let (mut input, probe) = sink(worker, params);
        input.update_at((0, sample("coat/a.png")), 0, 1);
        input.advance_to(1);
        input.flush();
        step_past(worker, &probe, 0);
        threads().contains(&"sink:ends-3f9a".to_string())
    });
    assert!(running, "the writer thread runs while the dataflow does");
    assert!(!threads().contains(&"sink:ends-3f9a".to_string()));
    assert!(dir.path().join("out/v000000/hard.jsonl").exists());
}

fn stage_item(stage: u32, epoch: u32, sample: u64, level: u16) -> Row {
    let real = level == discl::record::REAL_LEVEL;
    Row::StageItem(discl::record::StageItem {
        stage,
        epoch,
        sample,
        level,
        seed: (!real).then_some(0),
        prompt: (!real).then(|| "a bag".to_string()),
        label: "bag".into(),
        path: format!("x/{sample}-{level}.png"),
        copies: 1,
    })
}

#[test]
fn stage_items_land_in_one_file_per_stage_with_the_provenance() {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("manifests");
    let params = params("stages", folder.clone(), &[("mix", TableKind::StageItem)]);
    timely::execute_directly(move |worker| {
        let (mut input, probe) = sink(worker, params);
        input.update_at((0, stage_item(0, 0, 1, 1000)), 0, 1);
        input.update_at((0, stage_item(0, 1, 2, 100)), 0, 1);
        input.update_at((0, stage_item(2, 0, 1, 1000)), 0, 1);
        input.advance_to(1);
        input.flush();
        step_past(worker, &probe, 0);
    });
    let current = folder.join("current");
    let read = |file: &str| std::fs::read_to_string(current.join("mix").join(file)).unwrap();
    assert_eq!(read("stage-0.jsonl").lines().count(), 2);
    assert_eq!(read("stage-2.jsonl").lines().count(), 1);
    assert!(!current.join("mix/stage-1.jsonl").exists());
    let row: serde_json::Value =
        serde_json::from_str(read("stage-2.jsonl").lines().next().unwrap()).unwrap();
    assert_eq!(row["level"], 1000);
    assert!(
        row["seed"].is_null() && row["prompt"].is_null(),
        "a real image has no seed or prompt"
    );
    assert_eq!(parquet_rows(&current.join("mix/stage-0.parquet")), 2);
    let info: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(current.join("_snapshot.json")).unwrap())
            .unwrap();
    assert_eq!(info["rows"]["mix"]["stage-0"], 2);
    assert_eq!(info["graph"]["digest"], "abc");
}
