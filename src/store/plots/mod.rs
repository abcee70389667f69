//! Report pictures of a sink's snapshot, under `<output>/report/`:
//!
//! - `stages/<sink>-<input>-stage-N.png`: per stage of a StageItem input, a contact sheet of
//!   its synthetic images by level, and the real (hard) images they were guided by;
//! - `quality/<sink>-<input>-lambda-LLLL.png` (λ in per mille, four digits) and a `.json`
//!   sidecar beside it: per scored Synthetic input and level, a histogram of `text_score`, the
//!   rejected images (input `<input>.rejected`) stacked under the kept ones, and the threshold
//!   as a vertical line. The sidecar holds what the picture shows: bin edges, counts, threshold.
//!
//! Thresholds come from the snapshot provenance: `"thresholds": {"<quality node>": 0.25}`.
//! Each picture is redrawn only when what it shows changes; the memo shares the contact
//! sheets' map, under keys (path below the output folder, [`MEMO`]).

mod font;
pub mod histogram;
pub mod stage_sheet;

use super::atomic::write_file;
use crate::record::{Digest, Level, StageItem};
use crate::store::manifest::Row;
use histogram::{colors, histogram, Histogram};
use image::RgbImage;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// The second half of these pictures' keys in the redraw memo (the contact sheets use sample
/// ids there, with a source image's path as the first half).
pub const MEMO: u64 = u64::MAX;

/// The redraw memo shared with the contact sheets.
pub type Drawn = HashMap<(String, u64), Digest>;

/// Quality thresholds by quality node, from the provenance's `thresholds` object.
pub fn thresholds(
    provenance: &serde_json::Map<String, serde_json::Value>,
) -> BTreeMap<String, f32> {
    provenance
        .get("thresholds")
        .and_then(|t| t.as_object())
        .into_iter()
        .flatten()
        .filter_map(|(node, t)| Some((node.clone(), t.as_f64()? as f32)))
        .collect()
}

/// Draws every report picture of one snapshot: `inputs[i]` names `tables[i]`. Pictures are a
/// report: a failure is a warning on stderr, and that picture is tried again next version.
pub fn write_plots(
    output: &Path,
    sink: &str,
    inputs: &[String],
    provenance: &serde_json::Map<String, serde_json::Value>,
    tables: &[Vec<(&Row, isize)>],
    drawn: &mut Drawn,
) {
    let mut errors = write_stage_sheets(output, sink, inputs, tables, drawn);
    errors.extend(write_histograms(
        output,
        sink,
        inputs,
        tables,
        &thresholds(provenance),
        drawn,
    ));
    for e in errors {
        eprintln!("warning: sink `{sink}`: report picture not written: {e}");
    }
}

fn png(img: &RgbImage) -> Result<Vec<u8>, String> {
    let mut bytes = Vec::new();
    img.write_to(
        &mut std::io::Cursor::new(&mut bytes),
        image::ImageFormat::Png,
    )
    .map_err(|e| format!("encoding a PNG: {e}"))?;
    Ok(bytes)
}

/// Writes `report/<rel>` unless the memo says it already shows `content`; `draw` makes it.
fn redraw(
    output: &Path,
    rel: String,
    content: Digest,
    drawn: &mut Drawn,
    draw: impl FnOnce() -> Result<Vec<(String, Vec<u8>)>, String>,
) -> Result<(), String> {
    let key = (format!("report/{rel}"), MEMO);
    if drawn.get(&key) == Some(&content) {
        return Ok(());
    }
    for (rel, bytes) in draw()? {
        let target = output.join("report").join(&rel);
        write_file(&target, &bytes).map_err(|e| format!("{}: {e}", target.display()))?;
    }
    drawn.insert(key, content);
    Ok(())
}

fn write_stage_sheets(
    output: &Path,
    sink: &str,
    inputs: &[String],
    tables: &[Vec<(&Row, isize)>],
    drawn: &mut Drawn,
) -> Vec<String> {
    let mut errors = Vec::new();
    for (input, rows) in inputs.iter().zip(tables) {
        let items: Vec<&StageItem> = rows
            .iter()
            .filter_map(|(row, count)| match row {
                Row::StageItem(i) if *count > 0 => Some(i),
                _ => None,
            })
            .collect();
        for chosen in stage_sheet::choose(&items) {
            let rel = format!("stages/{sink}-{input}-stage-{}.png", chosen.stage);
            let drawn_ok = redraw(output, rel.clone(), chosen.digest(), drawn, || {
                Ok(vec![(rel, png(&stage_sheet::draw(&chosen)?)?)])
            });
            errors.extend(drawn_ok.err());
        }
    }
    errors
}

/// Scored images of one quality input by level: (kept, rejected) as (score, count).
type Scores = BTreeMap<Level, (Vec<(f32, u64)>, Vec<(f32, u64)>)>;

fn write_histograms(
    output: &Path,
    sink: &str,
    inputs: &[String],
    tables: &[Vec<(&Row, isize)>],
    thresholds: &BTreeMap<String, f32>,
    drawn: &mut Drawn,
) -> Vec<String> {
    let mut groups: BTreeMap<&str, Scores> = BTreeMap::new();
    for (input, rows) in inputs.iter().zip(tables) {
        let (group, rejected) = match input.strip_suffix(".rejected") {
            Some(node) => (node, true),
            None => (input.as_str(), false),
        };
        for (row, count) in rows {
            let Row::Synthetic(s) = row else { continue };
            let (Some(score), true) = (s.text_score, *count > 0) else {
                continue;
            };
            let entry = groups
                .entry(group)
                .or_default()
                .entry(s.key.level)
                .or_default();
            let side = if rejected { &mut entry.1 } else { &mut entry.0 };
            side.push((score.0, *count as u64));
        }
    }
    let mut errors = Vec::new();
    for (group, levels) in groups {
        let threshold = thresholds.get(group).copied();
        let has_rejected = inputs.iter().any(|i| *i == format!("{group}.rejected"));
        for (level, (kept, rejected)) in levels {
            let Some(h) = histogram(&kept, &rejected, threshold) else {
                continue;
            };
            let stem = format!("quality/{sink}-{group}-lambda-{level:04}");
            let json = sidecar(sink, group, has_rejected, level, threshold, &h);
            let json = serde_json::to_vec_pretty(&json).expect("JSON values serialise");
            let rel = format!("{stem}.png");
            let done = redraw(output, rel.clone(), Digest::of(&json), drawn, || {
                let (kept_color, rejected_color) = colors();
                let mut title = vec![(format!("λ{}", stage_sheet::lambda(level)), None)];
                if let Some(t) = threshold {
                    title.push((format!("THRESHOLD {t}"), None));
                }
                title.push((
                    format!("KEPT {}", h.kept.iter().sum::<u64>()),
                    Some(kept_color),
                ));
                if has_rejected {
                    let n = h.rejected.iter().sum::<u64>();
                    title.push((format!("REJECTED {n}"), Some(rejected_color)));
                }
                let img = histogram::draw(&h, threshold, &title)?;
                Ok(vec![(format!("{stem}.json"), json), (rel, png(&img)?)])
            });
            errors.extend(done.err());
        }
    }
    errors
}

/// The shortest decimal that reads back as `v` (so 0.3f32 is written 0.3, not 0.30000001…).
fn short(v: f32) -> f64 {
    v.to_string().parse().unwrap_or(f64::from(v))
}

/// What a histogram picture shows, as JSON.
fn sidecar(
    sink: &str,
    input: &str,
    has_rejected: bool,
    level: Level,
    threshold: Option<f32>,
    h: &Histogram,
) -> serde_json::Value {
    serde_json::json!({
        "sink": sink,
        "input": input,
        "rejected_input": has_rejected.then(|| format!("{input}.rejected")),
        "level": level,
        "lambda": f64::from(level) / 1000.0,
        "threshold": threshold.map(short),
        "score": "text_score",
        "edges": h.edges.iter().map(|e| short(*e as f32)).collect::<Vec<_>>(),
        "kept": h.kept,
        "rejected": h.rejected,
    })
}
