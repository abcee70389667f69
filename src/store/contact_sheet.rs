//! Contact sheets of the λ spectrum: for each source image, one PNG under
//! `<output>/report/spectrum/` with the real image in the top row, then one row per guidance
//! level (ascending λ, so from "text only" down to "almost the real image"), one column per
//! seed (a quality filter's retry in its first seed's column). Small images are scaled up
//! (nearest neighbour) so a person can see them.

use super::atomic::write_file;
use super::error::StoreError;
use crate::record::{Digest, Synthetic};
use image::{imageops, DynamicImage, RgbImage};
use std::collections::BTreeMap;
use std::collections::HashMap;
use std::path::Path;

const GAP: u32 = 2;

/// One source's synthetic images by (level, seed).
type Spectrum<'a> = BTreeMap<(u16, u32), &'a Synthetic>;
const MIN_TILE: u32 = 64;

/// Writes a sheet for every source image among `synthetic` (paths relative to `output`).
/// `drawn` remembers what each sheet showed, so only sheets whose images changed are redrawn.
pub fn write_contact_sheets<'a>(
    output: &Path,
    synthetic: impl Iterator<Item = &'a Synthetic>,
    drawn: &mut HashMap<(String, u64), Digest>,
) -> Result<(), StoreError> {
    let mut by_source: BTreeMap<(&str, u64), Spectrum> = BTreeMap::new();
    for s in synthetic {
        by_source
            .entry((s.source.as_str(), s.key.sample))
            .or_default()
            .insert((s.key.level, column_seed(s)), s);
    }
    for ((source, sample), images) in by_source {
        let mut content = blake3::Hasher::new();
        content.update(source.as_bytes());
        for ((level, seed), s) in &images {
            content.update(&level.to_le_bytes());
            content.update(&seed.to_le_bytes());
            content.update(&s.digest.0);
        }
        let content = Digest(*content.finalize().as_bytes());
        if drawn.get(&(source.to_string(), sample)) == Some(&content) {
            continue;
        }
        let stem = Path::new(source)
            .file_stem()
            .map_or("sample".into(), |s| s.to_string_lossy().into_owned());
        let target = output
            .join("report/spectrum")
            .join(format!("{stem}-{sample:016x}.png"));
        let sheet = sheet(output, source, &images)?;
        let mut bytes = Vec::new();
        sheet
            .write_to(
                &mut std::io::Cursor::new(&mut bytes),
                image::ImageFormat::Png,
            )
            .map_err(StoreError::Encode)?;
        write_file(&target, &bytes)?;
        drawn.insert((source.to_string(), sample), content);
    }
    Ok(())
}

/// The seed index whose column shows an image: a quality filter's retry stands in the column
/// of the seed its chain started from (its own seed is a large derived one).
fn column_seed(image: &Synthetic) -> u32 {
    image.retry.map_or(image.key.seed, |r| r.first_seed)
}

fn load(path: &Path) -> Result<RgbImage, StoreError> {
    image::open(path)
        .map(|i| i.to_rgb8())
        .map_err(|source| StoreError::Image {
            path: path.to_path_buf(),
            source,
        })
}

fn sheet(
    output: &Path,
    source: &str,
    images: &BTreeMap<(u16, u32), &Synthetic>,
) -> Result<RgbImage, StoreError> {
    let levels: Vec<u16> = images
        .keys()
        .map(|(l, _)| *l)
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let seeds = images.keys().map(|(_, s)| *s + 1).max().unwrap_or(1);
    let first = load(&output.join(&images.values().next().expect("non-empty").path))?;
    let (w, h) = first.dimensions();
    let scale = (MIN_TILE / w.max(h)).max(1);
    let (tw, th) = (w * scale, h * scale);
    let cols = seeds;
    let rows = levels.len() as u32 + 1;
    let mut sheet = RgbImage::from_pixel(
        cols * (tw + GAP) + GAP,
        rows * (th + GAP) + GAP,
        image::Rgb([255, 255, 255]),
    );
    let mut place = |img: &RgbImage, row: u32, col: u32| {
        let tile = imageops::resize(img, tw, th, imageops::FilterType::Nearest);
        imageops::replace(
            &mut sheet,
            &tile,
            (GAP + col * (tw + GAP)) as i64,
            (GAP + row * (th + GAP)) as i64,
        );
    };
    let real = image::open(source)
        .map(DynamicImage::into_rgb8)
        .map_err(|e| StoreError::Image {
            path: source.into(),
            source: e,
        })?;
    place(&real, 0, 0);
    for ((level, seed), s) in images {
        let row = 1 + levels.iter().position(|l| l == level).expect("listed") as u32;
        place(&load(&output.join(&s.path))?, row, *seed);
    }
    Ok(sheet)
}
