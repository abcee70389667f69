//! A CLIP export's `preprocessor_config.json` and the image preparation it describes, step for
//! step as transformers' (slow, PIL-based) `CLIPImageProcessor` does it: convert to RGB, resize
//! (shortest edge or exact size) with PIL's filter, centre crop (zero padding where the image
//! is smaller), rescale in f64 then cast to f32, normalise in f32. Keys the file leaves out take
//! `CLIPImageProcessor`'s defaults, as transformers fills them in (older exports write neither
//! `do_rescale` nor `do_convert_rgb`).

use super::error::{read_json, ScorerError};
use super::resample::{self, Filter};
use image::{DynamicImage, RgbImage};
use serde_json::Value as Json;
use std::path::Path;

/// The preprocessor file's name inside a CLIP export.
pub const PREPROCESSOR_FILE: &str = "preprocessor_config.json";

const OPENAI_CLIP_MEAN: [f64; 3] = [0.48145466, 0.4578275, 0.40821073];
const OPENAI_CLIP_STD: [f64; 3] = [0.26862954, 0.26130258, 0.27577711];
const PROCESSOR_TYPES: [&str; 3] = [
    "CLIPImageProcessor",
    "CLIPImageProcessorFast",
    "CLIPFeatureExtractor",
];

/// How the resize step sizes its output.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResizeTo {
    /// The shorter side becomes this; the longer keeps the aspect ratio (rounded down).
    ShortestEdge(usize),
    /// Exactly this height and width.
    Exact { height: usize, width: usize },
}

/// The image steps of a CLIP processor.
#[derive(Clone, Debug, PartialEq)]
pub struct ClipImageConfig {
    /// `do_resize`: the target size and PIL filter.
    pub resize: Option<(ResizeTo, Filter)>,
    /// `do_center_crop`: (height, width).
    pub crop: Option<(usize, usize)>,
    /// `do_rescale`: the factor pixel values are multiplied by.
    pub rescale: Option<f64>,
    /// `do_normalize`: per-channel mean and standard deviation.
    pub normalize: Option<([f32; 3], [f32; 3])>,
}

fn flag(json: &Json, file: &Path, key: &str, default: bool) -> Result<bool, ScorerError> {
    match &json[key] {
        Json::Null => Ok(default),
        Json::Bool(b) => Ok(*b),
        other => Err(ScorerError::bad(
            file,
            format!("`{key}` is {other}, expected true or false"),
        )),
    }
}

fn positive(value: &Json, file: &Path, key: &str) -> Result<usize, ScorerError> {
    value
        .as_u64()
        .filter(|&n| (1..=65_536).contains(&n))
        .map(|n| n as usize)
        .ok_or_else(|| {
            ScorerError::bad(
                file,
                format!("`{key}` is {value}, expected a size in pixels"),
            )
        })
}

/// `{"height": h, "width": w}`, or a plain number for a square.
fn height_width(json: &Json, file: &Path, key: &str) -> Result<(usize, usize), ScorerError> {
    let value = &json[key];
    if value.is_number() {
        let side = positive(value, file, key)?;
        return Ok((side, side));
    }
    Ok((
        positive(&value["height"], file, &format!("{key}.height"))?,
        positive(&value["width"], file, &format!("{key}.width"))?,
    ))
}

fn triple(json: &Json, file: &Path, key: &str, default: [f64; 3]) -> Result<[f32; 3], ScorerError> {
    let values: Vec<f64> = match &json[key] {
        Json::Null => default.to_vec(),
        Json::Number(n) => vec![n.as_f64().unwrap_or(f64::NAN); 3],
        Json::Array(a) => a.iter().map(|v| v.as_f64().unwrap_or(f64::NAN)).collect(),
        other => {
            return Err(ScorerError::bad(
                file,
                format!("`{key}` is {other}, expected 3 numbers"),
            ))
        }
    };
    if values.len() != 3 || values.iter().any(|v| !v.is_finite()) {
        return Err(ScorerError::bad(
            file,
            format!("`{key}` must hold 3 numbers, one per RGB channel"),
        ));
    }
    // transformers builds the array with the image's dtype (f32) before normalising.
    Ok([values[0] as f32, values[1] as f32, values[2] as f32])
}

impl ClipImageConfig {
    /// Reads `file` (a `preprocessor_config.json`).
    pub fn load(file: &Path) -> Result<ClipImageConfig, ScorerError> {
        let json = read_json(file)?;
        if !json.is_object() {
            return Err(ScorerError::bad(file, "expected a JSON object"));
        }
        for key in ["image_processor_type", "feature_extractor_type"] {
            if let Some(kind) = json[key].as_str() {
                if !PROCESSOR_TYPES.contains(&kind) {
                    return Err(ScorerError::bad(
                        file,
                        format!("`{key}` is {kind:?}; only CLIP's image processor is supported ({PROCESSOR_TYPES:?})"),
                    ));
                }
            }
        }
        let resize = if flag(&json, file, "do_resize", true)? {
            let size = &json["size"];
            let to = if size.is_null() {
                ResizeTo::ShortestEdge(224)
            } else if size.is_number() {
                ResizeTo::ShortestEdge(positive(size, file, "size")?)
            } else if !size["shortest_edge"].is_null() {
                ResizeTo::ShortestEdge(positive(
                    &size["shortest_edge"],
                    file,
                    "size.shortest_edge",
                )?)
            } else if !size["height"].is_null() && !size["width"].is_null() {
                let (height, width) = height_width(&json, file, "size")?;
                ResizeTo::Exact { height, width }
            } else {
                return Err(ScorerError::bad(
                    file,
                    format!("`size` is {size}, expected {{\"shortest_edge\": n}} or {{\"height\": h, \"width\": w}}"),
                ));
            };
            let filter = match &json["resample"] {
                Json::Null => Filter::Bicubic,
                value => value.as_i64().and_then(Filter::from_pil).ok_or_else(|| {
                    ScorerError::UnknownResample {
                        file: file.to_path_buf(),
                        value: value.to_string(),
                    }
                })?,
            };
            Some((to, filter))
        } else {
            None
        };
        let crop = if flag(&json, file, "do_center_crop", true)? {
            Some(if json["crop_size"].is_null() {
                (224, 224)
            } else {
                height_width(&json, file, "crop_size")?
            })
        } else {
            None
        };
        let rescale = if flag(&json, file, "do_rescale", true)? {
            Some(match &json["rescale_factor"] {
                Json::Null => 1.0 / 255.0,
                value => value
                    .as_f64()
                    .filter(|f| f.is_finite() && *f > 0.0)
                    .ok_or_else(|| {
                        ScorerError::bad(
                            file,
                            format!("`rescale_factor` is {value}, expected a positive number"),
                        )
                    })?,
            })
        } else {
            None
        };
        let normalize = if flag(&json, file, "do_normalize", true)? {
            let mean = triple(&json, file, "image_mean", OPENAI_CLIP_MEAN)?;
            let std = triple(&json, file, "image_std", OPENAI_CLIP_STD)?;
            if std.iter().any(|s| *s <= 0.0) {
                return Err(ScorerError::bad(
                    file,
                    "`image_std` values must be positive",
                ));
            }
            Some((mean, std))
        } else {
            None
        };
        // Images are always converted to RGB (the model takes 3 channels), so `do_convert_rgb`
        // is read only to check its type.
        flag(&json, file, "do_convert_rgb", true)?;
        Ok(ClipImageConfig {
            resize,
            crop,
            rescale,
            normalize,
        })
    }

    /// The (height, width) every prepared image has, when that does not depend on the input:
    /// the crop size, else an exact resize. `None` means images cannot share a batch.
    pub fn output_size(&self) -> Option<(usize, usize)> {
        match (self.crop, self.resize) {
            (Some(crop), _) => Some(crop),
            (None, Some((ResizeTo::Exact { height, width }, _))) => Some((height, width)),
            _ => None,
        }
    }

    /// The resize and crop steps on 8-bit RGB pixels (before rescaling).
    pub fn resize_and_crop(&self, rgb: &RgbImage) -> RgbImage {
        let resized = match self.resize {
            Some((to, filter)) => {
                let (height, width) = resized_size(to, rgb.height() as usize, rgb.width() as usize);
                resample::resize(rgb, width as u32, height as u32, filter)
            }
            None => rgb.clone(),
        };
        match self.crop {
            Some((height, width)) => center_crop(&resized, height, width),
            None => resized,
        }
    }

    /// Converts `image` to RGB, prepares it and appends its CHW floats to `out`.
    pub fn prepare(&self, image: &DynamicImage, out: &mut Vec<f32>) {
        let rgb = self.resize_and_crop(&image.to_rgb8());
        let plane = (rgb.width() * rgb.height()) as usize;
        let start = out.len();
        out.resize(start + 3 * plane, 0.0);
        let dst = &mut out[start..];
        for (i, pixel) in rgb.pixels().enumerate() {
            for c in 0..3 {
                let value = match self.rescale {
                    Some(factor) => (f64::from(pixel.0[c]) * factor) as f32,
                    None => f32::from(pixel.0[c]),
                };
                dst[c * plane + i] = match self.normalize {
                    Some((mean, std)) => (value - mean[c]) / std[c],
                    None => value,
                };
            }
        }
    }
}

/// transformers' `get_resize_output_image_size`: (height, width).
fn resized_size(to: ResizeTo, height: usize, width: usize) -> (usize, usize) {
    match to {
        ResizeTo::Exact { height, width } => (height, width),
        ResizeTo::ShortestEdge(short) => {
            let (small, large) = (height.min(width), height.max(width));
            // Python's int(size * long / short): a float division, truncated.
            let long = ((short * large) as f64 / small.max(1) as f64) as usize;
            if width <= height {
                (long, short)
            } else {
                (short, long)
            }
        }
    }
}

/// transformers' `center_crop`: the window starts at floor((size - crop) / 2) on each axis;
/// where it falls outside a small image, the pixels are zero.
fn center_crop(image: &RgbImage, height: usize, width: usize) -> RgbImage {
    let (in_w, in_h) = (image.width() as i64, image.height() as i64);
    let top = (in_h - height as i64).div_euclid(2);
    let left = (in_w - width as i64).div_euclid(2);
    RgbImage::from_fn(width as u32, height as u32, |x, y| {
        let (sx, sy) = (left + i64::from(x), top + i64::from(y));
        if (0..in_w).contains(&sx) && (0..in_h).contains(&sy) {
            *image.get_pixel(sx as u32, sy as u32)
        } else {
            image::Rgb([0, 0, 0])
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(dir: &Path, text: &str) -> Result<ClipImageConfig, ScorerError> {
        let file = dir.join(PREPROCESSOR_FILE);
        std::fs::write(&file, text).unwrap();
        ClipImageConfig::load(&file)
    }

    #[test]
    fn sizes_follow_transformers() {
        assert_eq!(resized_size(ResizeTo::ShortestEdge(32), 41, 50), (32, 39));
        assert_eq!(resized_size(ResizeTo::ShortestEdge(32), 28, 28), (32, 32));
        assert_eq!(
            resized_size(ResizeTo::ShortestEdge(224), 500, 375),
            (298, 224)
        );
        let exact = ResizeTo::Exact {
            height: 5,
            width: 7,
        };
        assert_eq!(resized_size(exact, 100, 1), (5, 7));
    }

    #[test]
    fn crops_the_centre_and_pads_small_images_with_zeros() {
        let img = RgbImage::from_fn(5, 4, |x, y| image::Rgb([x as u8 + 1, y as u8 + 1, 9]));
        let crop = center_crop(&img, 2, 3);
        assert_eq!(crop.get_pixel(0, 0).0, [2, 2, 9]);
        // Larger than the image: transformers centres it with ceil((crop - size) / 2) zeros first.
        let padded = center_crop(&img, 6, 6);
        assert_eq!(padded.get_pixel(0, 0).0, [0, 0, 0]);
        assert_eq!(padded.get_pixel(1, 1).0, [1, 1, 9]);
        assert_eq!(padded.get_pixel(5, 4).0, [5, 4, 9]);
        assert_eq!(padded.get_pixel(5, 5).0, [0, 0, 0]);
    }

    #[test]
    fn reads_a_config_and_fills_in_clip_defaults() {
        let dir = tempfile::tempdir().unwrap();
        // openai/clip-vit-base-patch32's file: integer sizes, no rescale or RGB keys.
        let c = config(
            dir.path(),
            r#"{"crop_size": 224, "do_center_crop": true, "do_normalize": true, "do_resize": true,
               "feature_extractor_type": "CLIPFeatureExtractor", "image_mean": [0.5, 0.5, 0.5],
               "image_std": [0.25, 0.25, 0.25], "resample": 3, "size": 224}"#,
        )
        .unwrap();
        assert_eq!(
            c.resize,
            Some((ResizeTo::ShortestEdge(224), Filter::Bicubic))
        );
        assert_eq!(c.crop, Some((224, 224)));
        assert_eq!(c.rescale, Some(1.0 / 255.0));
        assert_eq!(c.normalize, Some(([0.5; 3], [0.25; 3])));
        assert_eq!(c.output_size(), Some((224, 224)));
        let white = DynamicImage::ImageRgb8(RgbImage::from_pixel(300, 250, image::Rgb([255; 3])));
        let mut out = Vec::new();
        c.prepare(&white, &mut out);
        assert_eq!(out.len(), 3 * 224 * 224);
        assert!(out.iter().all(|v| (v - 2.0).abs() < 1e-6));
    }

    #[test]
    fn refuses_what_it_cannot_reproduce_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let err = config(
            dir.path(),
            r#"{"resample": 0, "size": {"shortest_edge": 8}}"#,
        )
        .unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, ScorerError::UnknownResample { .. }), "{text}");
        assert!(
            text.contains(PREPROCESSOR_FILE) && text.contains("resample = 0"),
            "{text}"
        );
        let err = config(dir.path(), r#"{"resample": "bicubic"}"#).unwrap_err();
        assert!(matches!(err, ScorerError::UnknownResample { .. }), "{err}");
        let err = config(
            dir.path(),
            r#"{"image_processor_type": "SiglipImageProcessor"}"#,
        )
        .unwrap_err();
        assert!(err.to_string().contains("SiglipImageProcessor"), "{err}");
        let err = config(dir.path(), r#"{"image_mean": [0.5, 0.5]}"#).unwrap_err();
        assert!(err.to_string().contains("image_mean"), "{err}");
        let err = config(dir.path(), r#"{"size": {"longest_edge": 8}}"#).unwrap_err();
        assert!(err.to_string().contains("shortest_edge"), "{err}");
        let err = config(dir.path(), "{").unwrap_err();
        assert!(err.to_string().contains("not valid JSON"), "{err}");
        // Without a crop or an exact size, image shapes follow the inputs.
        let c = config(
            dir.path(),
            r#"{"do_center_crop": false, "size": {"shortest_edge": 8}}"#,
        )
        .unwrap();
        assert_eq!(c.output_size(), None);
    }
}
