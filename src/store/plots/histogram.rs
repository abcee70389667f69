//! Quality-score histograms: per scored `Synthetic` input (its `<node>.rejected` sibling
//! folded in) and guidance level, the `text_score`s in bins with the rejected ones stacked
//! under the kept ones, and the threshold as a vertical line. The bins are anchored on the
//! threshold, so no bin straddles it: each bin holds only kept or only rejected images.

use super::font::{draw_text, text_height, text_width};
use image::{Rgb, RgbImage};
use plotters::prelude::*;

/// About this many bins span the scores (the step is rounded to 1, 2 or 5 × 10ᵏ).
const TARGET_BINS: f64 = 20.0;
/// Picture size and the plot area's margins, in pixels.
const W: u32 = 640;
const H: u32 = 400;
const LEFT: u32 = 70;
const RIGHT: u32 = 24;
const TOP: u32 = 44;
const BOTTOM: u32 = 56;

const KEPT: RGBColor = RGBColor(0x1F, 0x5A, 0xA6);
const REJECTED: RGBColor = RGBColor(0xA9, 0xC8, 0xEB);
const LINE: RGBColor = RGBColor(0xD0, 0x1C, 0x1C);
const INK: Rgb<u8> = Rgb([0x20, 0x20, 0x20]);

/// Counts of kept and rejected scores in bins `[edges[i], edges[i + 1])` (the last bin also
/// holds its upper edge).
#[derive(Clone, Debug, PartialEq)]
pub struct Histogram {
    pub edges: Vec<f64>,
    pub kept: Vec<u64>,
    pub rejected: Vec<u64>,
}

/// 1, 2 or 5 × 10ᵏ: the smallest such number ≥ `x` (`x` > 0).
fn nice(x: f64) -> f64 {
    let p = 10f64.powf(x.log10().floor());
    let m = x / p;
    let m = if m <= 1.0 {
        1.0
    } else if m <= 2.0 {
        2.0
    } else if m <= 5.0 {
        5.0
    } else {
        10.0
    };
    m * p
}

/// Bins (score, weight) pairs; `None` when there is no score at all. With a threshold, one
/// edge lies exactly on it and the range reaches at least one bin past it.
pub fn histogram(
    kept: &[(f32, u64)],
    rejected: &[(f32, u64)],
    threshold: Option<f32>,
) -> Option<Histogram> {
    let scores = || kept.iter().chain(rejected).map(|(v, _)| f64::from(*v));
    let anchor = threshold.map(f64::from);
    let lo = scores().chain(anchor).fold(f64::INFINITY, f64::min);
    let hi = scores().chain(anchor).fold(f64::NEG_INFINITY, f64::max);
    if !lo.is_finite() || !hi.is_finite() || scores().next().is_none() {
        return None;
    }
    let span = hi - lo;
    let step = if span > 0.0 {
        nice(span / TARGET_BINS)
    } else {
        0.01
    };
    let anchor = anchor.unwrap_or(0.0);
    // Bin k holds [anchor + k·step, anchor + (k + 1)·step).
    let bin = |v: f64| ((v - anchor) / step).floor() as i64;
    let mut first = bin(lo);
    let mut last = bin(hi);
    if threshold.is_some() {
        first = first.min(0);
        last = last.max(0);
    }
    let n = (last - first + 1) as usize;
    let edges = (first..=last + 1)
        .map(|k| anchor + k as f64 * step)
        .collect();
    let count = |values: &[(f32, u64)]| {
        let mut counts = vec![0u64; n];
        for (v, weight) in values {
            let k = (bin(f64::from(*v)) - first).clamp(0, n as i64 - 1);
            counts[k as usize] += weight;
        }
        counts
    };
    Some(Histogram {
        edges,
        kept: count(kept),
        rejected: count(rejected),
    })
}

/// The fewest decimals (up to 4) that tell `values` apart as well as `step` does.
fn decimals(values: &[f64], step: f64) -> usize {
    (0..=4)
        .find(|d| {
            values.iter().all(|v| {
                let shown: f64 = format!("{v:.d$}", d = *d).parse().unwrap_or(f64::NAN);
                (shown - v).abs() <= step * 1e-3
            })
        })
        .unwrap_or(4)
}

/// A label and where it goes: pixel position and how it hangs from it.
struct Label {
    at: (i32, i32),
    text: String,
    /// Centre it horizontally below `at` (an x tick) rather than end it left of `at` (a y tick).
    below: bool,
}

/// Draws the histogram with the threshold line, axis ticks and a title line of `title` parts
/// (each optionally led by a colour swatch).
pub fn draw(
    h: &Histogram,
    threshold: Option<f32>,
    title: &[(String, Option<Rgb<u8>>)],
) -> Result<RgbImage, String> {
    let n = h.kept.len();
    let (x0, x1) = (h.edges[0], h.edges[n]);
    let step = (x1 - x0) / n as f64;
    let tallest = (0..n)
        .map(|i| h.kept[i] + h.rejected[i])
        .max()
        .unwrap_or(0)
        .max(1);
    let y_step = nice(tallest as f64 / 5.0).max(1.0).round();
    let y_max = (tallest as f64 / y_step).ceil() * y_step;
    let mut labels = Vec::new();
    let mut buf = vec![255u8; (W * H * 3) as usize];
    {
        let e = |e: DrawingAreaErrorKind<_>| format!("drawing the histogram: {e}");
        let root = BitMapBackend::with_buffer(&mut buf, (W, H)).into_drawing_area();
        let mut chart = ChartBuilder::on(&root)
            .margin_left(LEFT)
            .margin_right(RIGHT)
            .margin_top(TOP)
            .margin_bottom(BOTTOM)
            .build_cartesian_2d(x0..x1, 0.0..y_max)
            .map_err(e)?;
        let bars = (0..n).flat_map(|i| {
            let (a, b) = (h.edges[i], h.edges[i + 1]);
            let (r, k) = (h.rejected[i] as f64, h.kept[i] as f64);
            [
                (r > 0.0).then(|| Rectangle::new([(a, 0.0), (b, r)], REJECTED.filled())),
                (k > 0.0).then(|| Rectangle::new([(a, r), (b, r + k)], KEPT.filled())),
                (r + k > 0.0).then(|| Rectangle::new([(a, 0.0), (b, r + k)], WHITE)),
            ]
            .into_iter()
            .flatten()
        });
        chart.draw_series(bars).map_err(e)?;
        let axes = [vec![(x0, 0.0), (x1, 0.0)], vec![(x0, 0.0), (x0, y_max)]];
        chart
            .draw_series(axes.into_iter().map(|p| PathElement::new(p, BLACK)))
            .map_err(e)?;
        if let Some(t) = threshold {
            let t = f64::from(t);
            let line = PathElement::new(vec![(t, 0.0), (t, y_max)], LINE.stroke_width(2));
            chart.draw_series(std::iter::once(line)).map_err(e)?;
        }
        // Ticks: every m-th edge on x (at most 9 labels), every y_step on y.
        let every = n.div_ceil(8).max(1);
        let ticks: Vec<f64> = h.edges.iter().copied().step_by(every).collect();
        let d = decimals(&ticks, step);
        let mut marks = Vec::new();
        for v in &ticks {
            let (px, py) = chart.backend_coord(&(*v, 0.0));
            marks.push(vec![(px, py), (px, py + 5)]);
            labels.push(Label {
                at: (px, py + 9),
                text: format!("{v:.d$}"),
                below: true,
            });
        }
        let mut y = 0.0;
        while y <= y_max + 0.5 {
            let (px, py) = chart.backend_coord(&(x0, y));
            marks.push(vec![(px - 5, py), (px, py)]);
            labels.push(Label {
                at: (px - 8, py),
                text: format!("{y}"),
                below: false,
            });
            y += y_step;
        }
        for mark in marks {
            root.draw(&PathElement::new(mark, BLACK)).map_err(e)?;
        }
        root.present().map_err(e)?;
    }
    let mut img = RgbImage::from_raw(W, H, buf).ok_or("histogram buffer of the wrong size")?;
    let th = text_height(1) as i32;
    for Label {
        at: (x, y),
        text,
        below,
    } in labels
    {
        let w = text_width(&text, 1) as i32;
        let at = if below {
            (x - w / 2, y)
        } else {
            (x - w, y - th / 2)
        };
        draw_text(&mut img, (i64::from(at.0), i64::from(at.1)), 1, &text, INK);
    }
    let axis = "TEXT SCORE";
    let x = (LEFT + (W - LEFT - RIGHT) / 2) as i64 - i64::from(text_width(axis, 1) / 2);
    draw_text(&mut img, (x, i64::from(H - 22)), 1, axis, INK);
    let mut x = 12i64;
    for (text, swatch) in title {
        if let Some(color) = swatch {
            for dy in 0..14 {
                for dx in 0..14 {
                    img.put_pixel(x as u32 + dx, 14 + dy, *color);
                }
            }
            x += 18;
        }
        draw_text(&mut img, (x, 14), 2, text, INK);
        x += i64::from(text_width(text, 2)) + 16;
    }
    Ok(img)
}

/// The colours of the two kinds of bar, for a title's swatches.
pub fn colors() -> (Rgb<u8>, Rgb<u8>) {
    let rgb = |c: RGBColor| Rgb([c.0, c.1, c.2]);
    (rgb(KEPT), rgb(REJECTED))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(values: &[f32]) -> Vec<(f32, u64)> {
        values.iter().map(|v| (*v, 1)).collect()
    }

    #[test]
    fn bins_are_anchored_on_the_threshold_and_split_kept_from_rejected() {
        let kept = w(&[0.25, 0.26, 0.31, 0.31]);
        let rejected = w(&[0.1, 0.2, 0.24]);
        let h = histogram(&kept, &rejected, Some(0.25)).unwrap();
        // Span 0.21 over 20 bins → step 0.0105 → 0.02; 0.25 is an edge.
        let step = 0.02;
        assert!(h.edges.iter().any(|e| *e == f64::from(0.25f32)));
        assert!(h
            .edges
            .windows(2)
            .all(|p| (p[1] - p[0] - step).abs() < 1e-12));
        assert_eq!(h.edges.len(), h.kept.len() + 1);
        assert_eq!(h.kept.iter().sum::<u64>(), 4);
        assert_eq!(h.rejected.iter().sum::<u64>(), 3);
        assert!(h.edges[0] <= 0.1 && *h.edges.last().unwrap() > 0.31);
        // Every kept score sits in a bin at or above the threshold, every rejected one below.
        let t = h
            .edges
            .iter()
            .position(|e| *e == f64::from(0.25f32))
            .unwrap();
        assert_eq!(h.rejected[t..].iter().sum::<u64>(), 0);
        assert_eq!(h.kept[..t].iter().sum::<u64>(), 0);
        // 0.25 and 0.26 share the first kept bin; 0.31 (twice) is three bins up.
        assert_eq!(h.kept[t], 2);
        assert_eq!(h.kept[t + 3], 2);
        assert_eq!(h.rejected[t - 1], 1);
    }

    #[test]
    fn weights_count_and_the_threshold_is_always_in_range() {
        let h = histogram(&[(0.5, 3)], &[], Some(0.25)).unwrap();
        assert_eq!(h.kept.iter().sum::<u64>(), 3);
        assert!(h.edges[0] <= f64::from(0.25f32));
        // All below the threshold: one bin past it still shows where the line is.
        let h = histogram(&[], &w(&[0.1, 0.12]), Some(0.3)).unwrap();
        assert!(*h.edges.last().unwrap() > f64::from(0.3f32));
        assert_eq!(histogram(&[], &[], Some(0.3)), None);
        // One value and no threshold: a single bin of the default width.
        let h = histogram(&w(&[0.3]), &[], None).unwrap();
        assert_eq!(h.kept, vec![1]);
        assert!((h.edges[1] - h.edges[0] - 0.01).abs() < 1e-12);
    }

    #[test]
    fn the_picture_has_its_size_and_the_threshold_line() {
        let h = histogram(&w(&[0.25, 0.3]), &w(&[0.1]), Some(0.25)).unwrap();
        let img = draw(&h, Some(0.25), &[("λ0.3".into(), None)]).unwrap();
        assert_eq!(img.dimensions(), (W, H));
        let red = img
            .pixels()
            .filter(|p| p.0 == [LINE.0, LINE.1, LINE.2])
            .count();
        assert!(
            red > (H - TOP - BOTTOM) as usize,
            "a vertical threshold line"
        );
        let kept = img
            .pixels()
            .filter(|p| p.0 == [KEPT.0, KEPT.1, KEPT.2])
            .count();
        assert!(kept > 100);
        assert_eq!(decimals(&[0.15, 0.25], 0.1), 2);
        assert_eq!(decimals(&[0.2, 0.4], 0.2), 1);
    }
}
