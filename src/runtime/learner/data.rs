//! The rows a learner trains on, the decoded-image cache (images are tiny: a 28×28 grey image
//! is 3 KiB as floats) and the augmentation of train_cnn.py (a random horizontal flip and a
//! random shift of up to 2 pixels with background padding), keyed rather than drawn in order.

use super::error::LearnerError;
use super::keyed::{hash_bytes, Stream};
use crate::runtime::image_input::{decode_into, ImageSpec};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// An image to train on or score: a file (PNG or JPEG, decoded and normalised by the learner's
/// [`ImageSpec`], then cached by path) or pixels already normalised, CHW.
#[derive(Clone, Debug, PartialEq)]
pub enum LearnerImage {
    File(PathBuf),
    Pixels(Arc<[f32]>),
}

impl LearnerImage {
    /// A key naming the image by content of its reference (the path's bytes, or the pixels),
    /// so an epoch's order does not depend on the order rows are listed in.
    pub fn key(&self) -> u64 {
        match self {
            LearnerImage::File(path) => hash_bytes(path.as_os_str().as_encoded_bytes()),
            LearnerImage::Pixels(pixels) => pixel_key(pixels),
        }
    }
    fn describe(&self) -> String {
        match self {
            LearnerImage::File(path) => path.display().to_string(),
            LearnerImage::Pixels(p) => format!("pixels ({} values)", p.len()),
        }
    }
}

impl From<PathBuf> for LearnerImage {
    fn from(path: PathBuf) -> Self {
        LearnerImage::File(path)
    }
}

/// A key naming normalised pixels by their bytes.
pub fn pixel_key(pixels: &[f32]) -> u64 {
    let bytes: Vec<u8> = pixels.iter().flat_map(|v| v.to_le_bytes()).collect();
    hash_bytes(&bytes)
}

/// One manifest row: an image, its class index, and how many times it counts in an epoch
/// (a stage manifest's repeat count; 0 leaves it out).
#[derive(Clone, Debug, PartialEq)]
pub struct TrainRow {
    pub image: LearnerImage,
    pub label: usize,
    pub copies: u32,
}

impl TrainRow {
    /// A row of one copy.
    pub fn new(image: impl Into<LearnerImage>, label: usize) -> TrainRow {
        TrainRow {
            image: image.into(),
            label,
            copies: 1,
        }
    }
}

/// Decoded images by path. Files are assumed not to change under a path while a learner
/// lives (the curriculum writes each image once, under a content-derived name).
pub struct ImageCache {
    spec: ImageSpec,
    map: Mutex<HashMap<PathBuf, Arc<[f32]>>>,
}

impl ImageCache {
    pub fn new(spec: ImageSpec) -> ImageCache {
        ImageCache {
            spec,
            map: Mutex::new(HashMap::new()),
        }
    }

    /// Number of decoded images held.
    pub fn len(&self) -> usize {
        self.map.lock().expect("cache lock").len()
    }
    /// Whether no image is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The normalised CHW pixels of `image`.
    pub fn get(&self, image: &LearnerImage) -> Result<Arc<[f32]>, LearnerError> {
        let fail = |source| LearnerError::Image {
            image: image.describe(),
            source: Box::new(source),
        };
        match image {
            LearnerImage::Pixels(pixels) => {
                if pixels.len() != self.spec.len() {
                    return Err(fail(crate::runtime::RuntimeError::request(format!(
                        "{} values, expected {} ({}×{}×{})",
                        pixels.len(),
                        self.spec.len(),
                        self.spec.channels,
                        self.spec.height,
                        self.spec.width
                    ))));
                }
                Ok(pixels.clone())
            }
            LearnerImage::File(path) => {
                if let Some(hit) = self.map.lock().expect("cache lock").get(path) {
                    return Ok(hit.clone());
                }
                let bytes = std::fs::read(path).map_err(|e| LearnerError::io(path, e))?;
                let mut out = Vec::with_capacity(self.spec.len());
                decode_into(&bytes, &self.spec, &mut out).map_err(fail)?;
                let pixels: Arc<[f32]> = out.into();
                let mut map = self.map.lock().expect("cache lock");
                map.insert(path.clone(), pixels.clone());
                Ok(pixels)
            }
        }
    }
}

/// Appends `src` (CHW) to `out`, flipped horizontally and shifted by up to 2 pixels each way
/// as drawn from `key`; uncovered pixels take the value a black pixel normalises to.
pub fn augment_into(src: &[f32], spec: &ImageSpec, key: u64, out: &mut Vec<f32>) {
    let mut stream = Stream::new(key);
    let flip = stream.below(2) == 1;
    let dx = stream.below(5) as isize - 2;
    let dy = stream.below(5) as isize - 2;
    let (h, w) = (spec.height as isize, spec.width as isize);
    for c in 0..spec.channels {
        let background = -spec.mean[c] / spec.std[c];
        let plane = &src[c * spec.height * spec.width..(c + 1) * spec.height * spec.width];
        for y in 0..h {
            for x in 0..w {
                let (sy, sx) = (y + dy, x + dx);
                let value = if (0..h).contains(&sy) && (0..w).contains(&sx) {
                    let sx = if flip { w - 1 - sx } else { sx };
                    plane[(sy * w + sx) as usize]
                } else {
                    background
                };
                out.push(value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn augmentation_keeps_size_and_values() {
        let spec = ImageSpec {
            channels: 1,
            height: 4,
            width: 4,
            mean: vec![0.5],
            std: vec![0.5],
        };
        let src: Vec<f32> = (0..16).map(|v| v as f32).collect();
        let mut seen_flip = false;
        for key in 0..50 {
            let mut out = Vec::new();
            augment_into(&src, &spec, key, &mut out);
            assert_eq!(out.len(), 16);
            assert!(out.iter().all(|v| *v == -1.0 || src.contains(v)));
            let mut again = Vec::new();
            augment_into(&src, &spec, key, &mut again);
            assert_eq!(out, again);
            seen_flip |= out[..4].windows(2).any(|p| p[0] > p[1] && p[1] >= 0.0);
        }
        assert!(seen_flip);
    }
}
