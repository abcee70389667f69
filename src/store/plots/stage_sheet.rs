//! Stage contact sheets: for one stage of a StageItem input, a grid of its synthetic images
//! grouped by level (up to 8 × 8 in all, chosen by BLAKE3 of the path, so the same images are
//! shown every time), then a row of the real images they were guided by (the hard images) when
//! the stage holds those too. Images are read from the rows' `path`, as the trainer would.

use super::font::{draw_text, text_height, text_width};
use crate::record::{Level, StageItem, REAL_LEVEL};
use image::{imageops, Rgb, RgbImage};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Columns of the grid, and the rows the synthetic images share between levels.
pub const COLS: usize = 8;
const ROWS: usize = 8;
const GAP: u32 = 2;
/// Extra space between one level's rows and the next.
const GROUP_GAP: u32 = 6;
const PAD: u32 = 6;
const MIN_TILE: u32 = 64;
const MAX_TILE: u32 = 128;
const INK: Rgb<u8> = Rgb([0x20, 0x20, 0x20]);

/// What a stage's sheet shows: images by level, and the real images they were guided by.
#[derive(Debug, PartialEq)]
pub struct Chosen<'a> {
    pub stage: u32,
    /// Synthetic images in the stage, all levels together (each path counted once).
    pub synthetic: usize,
    pub levels: Vec<(Level, Vec<&'a StageItem>)>,
    pub real: Vec<&'a StageItem>,
}

impl Chosen<'_> {
    /// A digest of what is drawn, for the redraw memo.
    pub fn digest(&self) -> crate::record::Digest {
        let mut h = blake3::Hasher::new();
        h.update(&self.stage.to_le_bytes());
        h.update(&(self.synthetic as u64).to_le_bytes());
        let real = [(REAL_LEVEL, self.real.clone())];
        for (level, items) in self.levels.iter().chain(&real) {
            h.update(&level.to_le_bytes());
            h.update(&(items.len() as u64).to_le_bytes());
            for item in items {
                h.update(item.path.as_bytes());
                h.update(&[0]);
            }
        }
        crate::record::Digest(*h.finalize().as_bytes())
    }
}

/// Sorts by BLAKE3 of the path, dropping repeated paths (epochs and copies).
fn by_hash<'a>(items: impl Iterator<Item = &'a StageItem>) -> Vec<&'a StageItem> {
    let keyed: BTreeMap<[u8; 32], &StageItem> = items
        .map(|i| (*blake3::hash(i.path.as_bytes()).as_bytes(), i))
        .collect();
    keyed.into_values().collect()
}

/// Per stage with synthetic images, what its sheet shows. Real-only stages get no sheet.
pub fn choose<'a>(items: &[&'a StageItem]) -> Vec<Chosen<'a>> {
    let mut stages: BTreeMap<u32, Vec<&StageItem>> = BTreeMap::new();
    for item in items {
        stages.entry(item.stage).or_default().push(item);
    }
    let mut out = Vec::new();
    for (stage, items) in stages {
        let mut by_level: BTreeMap<Level, Vec<&StageItem>> = BTreeMap::new();
        for item in items.iter().filter(|i| i.level != REAL_LEVEL) {
            by_level.entry(item.level).or_default().push(item);
        }
        if by_level.is_empty() {
            continue;
        }
        let per_level = COLS * (ROWS / by_level.len()).max(1);
        let mut synthetic = 0;
        let levels: Vec<_> = by_level
            .into_iter()
            .map(|(level, items)| {
                let mut items = by_hash(items.into_iter());
                synthetic += items.len();
                items.truncate(per_level);
                (level, items)
            })
            .collect();
        let shown: BTreeSet<u64> = levels
            .iter()
            .flat_map(|(_, items)| items.iter().map(|i| i.sample))
            .collect();
        let mut real = by_hash(
            items
                .iter()
                .copied()
                .filter(|i| i.level == REAL_LEVEL && shown.contains(&i.sample)),
        );
        real.truncate(COLS);
        out.push(Chosen {
            stage,
            synthetic,
            levels,
            real,
        });
    }
    out
}

/// `λ` in per mille as a short decimal: 300 → "0.3", 0 → "0".
pub fn lambda(level: Level) -> String {
    let s = format!("{}.{:03}", level / 1000, level % 1000);
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

fn load(path: &str) -> Result<RgbImage, String> {
    image::open(Path::new(path))
        .map(|i| i.to_rgb8())
        .map_err(|e| format!("cannot read stage image {path}: {e}"))
}

/// Draws a chosen stage: a title line, then one labelled row group per level and the real row.
pub fn draw(chosen: &Chosen) -> Result<RgbImage, String> {
    let mut groups: Vec<(String, Vec<RgbImage>)> = Vec::new();
    for (level, items) in &chosen.levels {
        let images = items
            .iter()
            .map(|i| load(&i.path))
            .collect::<Result<_, _>>()?;
        groups.push((format!("λ{}", lambda(*level)), images));
    }
    if !chosen.real.is_empty() {
        let images = chosen
            .real
            .iter()
            .map(|i| load(&i.path))
            .collect::<Result<_, _>>()?;
        groups.push(("REAL".into(), images));
    }
    let largest = groups
        .iter()
        .flat_map(|(_, imgs)| imgs.iter().map(|i| i.width().max(i.height())))
        .max()
        .unwrap_or(MIN_TILE)
        .max(1);
    let tile = (largest * (MIN_TILE / largest).max(1)).min(MAX_TILE);
    let cols = groups
        .iter()
        .map(|(_, imgs)| imgs.len())
        .max()
        .unwrap_or(1)
        .min(COLS) as u32;
    let label_w = groups
        .iter()
        .map(|(label, _)| text_width(label, 2))
        .max()
        .unwrap_or(0)
        + 2 * PAD;
    let shown: usize = chosen.levels.iter().map(|(_, items)| items.len()).sum();
    let title = if shown < chosen.synthetic {
        format!(
            "STAGE {}: {shown} OF {} SYNTHETIC IMAGES",
            chosen.stage, chosen.synthetic
        )
    } else {
        format!("STAGE {}: {shown} SYNTHETIC IMAGES", chosen.stage)
    };
    let header = text_height(2) + 2 * PAD;
    let grid_rows: Vec<u32> = groups
        .iter()
        .map(|(_, imgs)| imgs.len().div_ceil(cols as usize) as u32)
        .collect();
    let width = (label_w + cols * (tile + GAP) + GAP).max(text_width(&title, 2) + 2 * PAD);
    let height = header
        + grid_rows.iter().map(|r| r * (tile + GAP)).sum::<u32>()
        + GROUP_GAP * (groups.len() as u32 - 1)
        + GAP;
    let mut sheet = RgbImage::from_pixel(width, height, Rgb([255, 255, 255]));
    draw_text(&mut sheet, (i64::from(PAD), i64::from(PAD)), 2, &title, INK);
    let mut y = header;
    for ((label, images), rows) in groups.iter().zip(grid_rows) {
        let label_y = y + (tile.saturating_sub(text_height(2))) / 2;
        draw_text(
            &mut sheet,
            (i64::from(PAD), i64::from(label_y)),
            2,
            label,
            INK,
        );
        for (i, img) in images.iter().enumerate() {
            let (row, col) = ((i as u32) / cols, (i as u32) % cols);
            let fitted = fit(img, tile);
            let x = label_w + GAP + col * (tile + GAP) + (tile - fitted.width()) / 2;
            let top = y + GAP + row * (tile + GAP) + (tile - fitted.height()) / 2;
            imageops::replace(&mut sheet, &fitted, i64::from(x), i64::from(top));
        }
        y += rows * (tile + GAP) + GROUP_GAP;
    }
    Ok(sheet)
}

/// Scales an image to fit a `tile`-pixel square, keeping its aspect (nearest neighbour when
/// enlarging, so small images stay crisp).
fn fit(img: &RgbImage, tile: u32) -> RgbImage {
    let (w, h) = img.dimensions();
    let side = w.max(h).max(1);
    let (nw, nh) = ((w * tile / side).max(1), (h * tile / side).max(1));
    let filter = if side <= tile {
        imageops::FilterType::Nearest
    } else {
        imageops::FilterType::Triangle
    };
    imageops::resize(img, nw, nh, filter)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(stage: u32, sample: u64, level: Level, path: &str) -> StageItem {
        StageItem {
            stage,
            epoch: 0,
            sample,
            level,
            seed: (level != REAL_LEVEL).then_some(0),
            prompt: None,
            label: "coat".into(),
            path: path.into(),
            copies: 1,
        }
    }

    #[test]
    fn choice_is_by_hash_per_level_with_the_real_images_of_the_shown_samples() {
        let mut items = Vec::new();
        for s in 0..100u64 {
            items.push(item(0, s, 100, &format!("syn/{s}-100.png")));
            items.push(item(0, s, 300, &format!("syn/{s}-300.png")));
            // Repeated across epochs: counted once.
            items.push(item(0, s, 300, &format!("syn/{s}-300.png")));
            items.push(item(0, s, REAL_LEVEL, &format!("real/{s}.png")));
        }
        items.push(item(1, 7, REAL_LEVEL, "real/7.png"));
        let refs: Vec<&StageItem> = items.iter().collect();
        let chosen = choose(&refs);
        assert_eq!(chosen.len(), 1, "the real-only stage 1 gets no sheet");
        let c = &chosen[0];
        assert_eq!(c.synthetic, 200);
        assert_eq!(c.levels.len(), 2);
        for (_, shown) in &c.levels {
            assert_eq!(shown.len(), COLS * ROWS / 2);
            let hashes: Vec<_> = shown
                .iter()
                .map(|i| blake3::hash(i.path.as_bytes()))
                .collect();
            assert!(hashes.windows(2).all(|p| p[0].as_bytes() < p[1].as_bytes()));
        }
        assert_eq!(c.real.len(), COLS);
        let samples: BTreeSet<u64> = c
            .levels
            .iter()
            .flat_map(|(_, v)| v.iter().map(|i| i.sample))
            .collect();
        assert!(c.real.iter().all(|r| samples.contains(&r.sample)));
        // The same rows in another order choose the same images.
        let mut reversed = refs.clone();
        reversed.reverse();
        assert_eq!(choose(&reversed)[0].digest(), c.digest());
        assert_eq!(lambda(300), "0.3");
        assert_eq!(lambda(0), "0");
        assert_eq!(lambda(1000), "1");
        assert_eq!(lambda(125), "0.125");
    }
}
