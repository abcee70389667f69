//! Report pictures drawn by a sink: a snapshot with StageItem rows gets one contact sheet per
//! stage with synthetic images, and scored Synthetic rows (kept and `.rejected`) get a
//! histogram per λ with a JSON sidecar; each picture is redrawn only when what it shows
//! changes.

use differential_dataflow::input::{Input, InputSession};
use discl::operators::sink::{Publish, SinkExt, SinkLog, SinkParams};
use discl::operators::NodeStats;
use discl::record::{Digest, GenKey, StageItem, Synthetic, Value, REAL_LEVEL};
use discl::store::manifest::{ManifestFormat, Row, TableKind};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use timely::dataflow::operators::probe::Handle;
use timely::dataflow::operators::Probe;
use timely::worker::Worker;

type Rows = InputSession<u64, (usize, Row), isize>;

fn sink(worker: &mut Worker, params: SinkParams) -> (Rows, Handle<u64>) {
    worker.dataflow::<u64, _, _>(|scope| {
        let (input, rows) = scope.new_collection::<(usize, Row), isize>();
        let (probe, _) = rows.sink_manifests(params).probe();
        (input, probe)
    })
}

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

/// A 16×16 PNG of one colour at `out/rel`.
fn png(out: &Path, rel: &str, shade: u8) -> PathBuf {
    let path = out.join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    image::RgbImage::from_pixel(16, 16, image::Rgb([shade, 255 - shade, 128]))
        .save(&path)
        .unwrap();
    path
}

fn stage_item(stage: u32, sample: u64, level: u16, path: &Path) -> Row {
    Row::StageItem(StageItem {
        stage,
        epoch: 0,
        sample,
        level,
        seed: (level != REAL_LEVEL).then_some(0),
        prompt: (level != REAL_LEVEL).then(|| "a coat".into()),
        label: "coat".into(),
        path: path.to_string_lossy().into_owned(),
        copies: 1,
    })
}

fn scored(out: &Path, sample: u64, level: u16, score: f32) -> Row {
    let rel = format!("syn/{sample}-{level}.png");
    let bytes = std::fs::read(out.join(&rel)).unwrap();
    Row::Synthetic(Synthetic {
        key: GenKey {
            sample,
            level,
            seed: 0,
            prompt: "a coat".into(),
        },
        label: "coat".into(),
        path: rel,
        digest: Digest::of(&bytes),
        source: out
            .join(format!("real/{sample}.png"))
            .to_string_lossy()
            .into_owned(),
        text_score: Some(Value(score)),
        image_score: Some(Value(0.5)),
        retry: None,
    })
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

#[test]
fn stage_sheets_and_quality_histograms_are_drawn_and_redrawn_only_on_change() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().to_path_buf();
    for s in 0..4u64 {
        png(&out, &format!("real/{s}.png"), 10 * s as u8);
        for level in [100u16, 300] {
            png(
                &out,
                &format!("syn/{s}-{level}.png"),
                50 + s as u8 + level as u8,
            );
        }
    }
    let inputs = [
        ("stages", TableKind::StageItem),
        ("quality", TableKind::Synthetic),
        ("quality.rejected", TableKind::Synthetic),
    ];
    let mut provenance = serde_json::Map::new();
    provenance.insert("thresholds".into(), serde_json::json!({ "quality": 0.25 }));
    let params = SinkParams {
        node: "manifests".into(),
        folder: out.join("manifests"),
        inputs: inputs.iter().map(|(n, _)| n.to_string()).collect(),
        kinds: inputs.iter().map(|(_, k)| *k).collect(),
        formats: vec![ManifestFormat::Jsonl],
        keep_versions: 5,
        first_version: 0,
        report: Some(out.clone()),
        stats: Arc::new(NodeStats::default()),
        written: Arc::new(Mutex::new(SinkLog::default())),
        provenance,
        publish: Publish::Itself,
    };
    let log = Arc::clone(&params.written);
    let out2 = out.clone();
    timely::execute_directly(move |worker| {
        let out = out2;
        let report = out.join("report");
        let sheet = |n: u32| report.join(format!("stages/manifests-stages-stage-{n}.png"));
        let hist = |level: &str, ext: &str| {
            report.join(format!("quality/manifests-quality-lambda-{level}.{ext}"))
        };
        let (mut input, probe) = sink(worker, params);
        // Stage 0: λ 0.1 for samples 0..3 (sample 3 is not hard: no synthetic image), stage 1:
        // λ 0.3 for samples 0 and 1, stage 2: real only.
        for s in 0..4u64 {
            let real = out.join(format!("real/{s}.png"));
            for stage in 0..3 {
                input.update_at((0, stage_item(stage, s, REAL_LEVEL, &real)), 0, 1);
            }
            if s < 3 {
                let syn = out.join(format!("syn/{s}-100.png"));
                input.update_at((0, stage_item(0, s, 100, &syn)), 0, 1);
            }
            if s < 2 {
                let syn = out.join(format!("syn/{s}-300.png"));
                input.update_at((0, stage_item(1, s, 300, &syn)), 0, 2);
            }
        }
        // Scores at λ 0.1: kept 0.25, 0.3, 0.31; rejected 0.1. At λ 0.3: kept 0.4 only.
        for (s, score) in [(0u64, 0.25f32), (1, 0.3), (2, 0.31)] {
            input.update_at((1, scored(&out, s, 100, score)), 0, 1);
        }
        input.update_at((2, scored(&out, 3, 100, 0.1)), 0, 1);
        input.update_at((1, scored(&out, 0, 300, 0.4)), 0, 1);
        input.advance_to(1);
        input.flush();
        step_past(worker, &probe, 0);

        let decoded = |p: &Path| image::open(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        // Stage 0: 3 synthetic images and their 3 real ones, 16 px tiles shown at 64 px.
        let s0 = decoded(&sheet(0));
        // Width: the title "STAGE 0: 3 SYNTHETIC IMAGES" at 2× (27 glyphs of 6 px, less one
        // blank column) and 6 px padding each side; height: title line, two rows of tiles.
        assert_eq!(s0.width(), (27 * 6 - 1) * 2 + 12);
        assert_eq!(s0.height(), (14 + 12) + 2 * (64 + 2) + 6 + 2);
        let s1 = decoded(&sheet(1));
        assert_eq!(s1.height(), (14 + 12) + 2 * (64 + 2) + 6 + 2);
        assert!(!sheet(2).exists(), "a real-only stage gets no sheet");

        let h = json(&hist("0100", "json"));
        assert_eq!(h["threshold"], 0.25);
        assert_eq!(h["input"], "quality");
        assert_eq!(h["rejected_input"], "quality.rejected");
        assert_eq!(h["level"], 100);
        let counts = |key: &str| -> Vec<u64> {
            h[key]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap())
                .collect()
        };
        let (kept, rejected) = (counts("kept"), counts("rejected"));
        let edges: Vec<f64> = h["edges"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        assert_eq!(edges.len(), kept.len() + 1);
        // Scores span 0.1..0.31: bins of 0.02 from 0.09 to 0.33, written as short decimals.
        assert_eq!((edges[0], edges[12], edges.len()), (0.09, 0.33, 13));
        assert_eq!(kept.iter().sum::<u64>(), 3);
        assert_eq!(rejected.iter().sum::<u64>(), 1);
        // The threshold is an edge: kept counts start there, rejected ones end there.
        let t = edges
            .iter()
            .position(|e| *e == 0.25)
            .expect("0.25 is an edge");
        assert_eq!(kept[..t].iter().sum::<u64>(), 0);
        assert_eq!(rejected[t..].iter().sum::<u64>(), 0);
        assert_eq!(
            decoded(&hist("0100", "png")).to_rgb8().dimensions(),
            (640, 400)
        );
        assert_eq!(
            json(&hist("0300", "json"))["kept"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap())
                .sum::<u64>(),
            1
        );

        // Version 1: one more score at λ 0.3, stages unchanged: the stage sheets are not
        // redrawn (a deleted one stays deleted), the λ 0.1 histogram neither.
        std::fs::remove_file(sheet(0)).unwrap();
        std::fs::remove_file(hist("0100", "png")).unwrap();
        input.update_at((2, scored(&out, 1, 300, 0.2)), 1, 1);
        input.advance_to(2);
        input.flush();
        step_past(worker, &probe, 1);
        assert!(!sheet(0).exists() && !hist("0100", "png").exists());
        let h3 = json(&hist("0300", "json"));
        assert_eq!(
            h3["rejected"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap())
                .sum::<u64>(),
            1
        );
        assert!(hist("0300", "png").exists());

        // Version 2: sample 3 gets a λ 0.1 image in stage 0: that sheet is redrawn, wider.
        let syn = out.join("syn/3-100.png");
        input.update_at((0, stage_item(0, 3, 100, &syn)), 2, 1);
        input.advance_to(3);
        input.flush();
        step_past(worker, &probe, 2);
        assert_eq!(decoded(&sheet(0)).height(), s0.height());
        assert!(!hist("0100", "png").exists());
    });
    let log = log.lock().unwrap();
    assert_eq!(log.versions, vec![0, 1, 2]);
    assert_eq!(log.error, None);
}
