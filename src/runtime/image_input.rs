//! Decoding image files into normalised CHW tensors for a model's image input.

use super::error::RuntimeError;
use image::imageops::FilterType;

/// How a model wants its image input.
#[derive(Clone, Debug)]
pub struct ImageSpec {
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
}

impl ImageSpec {
    /// Number of floats in one image.
    pub fn len(&self) -> usize {
        self.channels * self.height * self.width
    }
    /// Whether an image has no pixels (never for a checked spec).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Decodes `bytes` (PNG or JPEG), converts to the spec's channels, resizes if needed, scales to
/// [0, 1], normalises and appends the CHW floats to `out`. Errors say what was wrong with the image.
pub fn decode_into(bytes: &[u8], spec: &ImageSpec, out: &mut Vec<f32>) -> Result<(), RuntimeError> {
    let img = image::load_from_memory(bytes)?;
    let (w, h) = (spec.width as u32, spec.height as u32);
    let img = if img.width() != w || img.height() != h {
        img.resize_exact(w, h, FilterType::Triangle)
    } else {
        img
    };
    let plane = spec.height * spec.width;
    let start = out.len();
    out.resize(start + spec.len(), 0.0);
    let dst = &mut out[start..];
    if spec.channels == 1 {
        for (i, p) in img.to_luma8().pixels().enumerate() {
            dst[i] = (p.0[0] as f32 / 255.0 - spec.mean[0]) / spec.std[0];
        }
    } else {
        for (i, p) in img.to_rgb8().pixels().enumerate() {
            for c in 0..3 {
                dst[c * plane + i] = (p.0[c] as f32 / 255.0 - spec.mean[c]) / spec.std[c];
            }
        }
    }
    Ok(())
}

/// Checks that `bytes` decode as an image, without converting it.
pub fn check_decodes(bytes: &[u8]) -> Result<(u32, u32), RuntimeError> {
    let img = image::load_from_memory(bytes)?;
    Ok((img.width(), img.height()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(w: u32, h: u32, value: u8) -> Vec<u8> {
        let img = image::GrayImage::from_pixel(w, h, image::Luma([value]));
        let mut bytes = Vec::new();
        img.write_to(
            &mut std::io::Cursor::new(&mut bytes),
            image::ImageFormat::Png,
        )
        .unwrap();
        bytes
    }

    #[test]
    fn normalises_and_resizes() {
        let spec = ImageSpec {
            channels: 1,
            height: 4,
            width: 4,
            mean: vec![0.5],
            std: vec![0.5],
        };
        let mut out = Vec::new();
        decode_into(&png(8, 8, 255), &spec, &mut out).unwrap();
        assert_eq!(out.len(), 16);
        assert!(out.iter().all(|v| (*v - 1.0).abs() < 1e-6));
        let rgb = ImageSpec {
            channels: 3,
            height: 2,
            width: 2,
            mean: vec![0.0; 3],
            std: vec![1.0; 3],
        };
        decode_into(&png(2, 2, 0), &rgb, &mut out).unwrap();
        assert_eq!(out.len(), 16 + 12);
    }

    #[test]
    fn corrupt_bytes_are_an_error() {
        let spec = ImageSpec {
            channels: 1,
            height: 4,
            width: 4,
            mean: vec![0.0],
            std: vec![1.0],
        };
        let mut bytes = png(4, 4, 9);
        bytes.truncate(20);
        let err = decode_into(&bytes, &spec, &mut Vec::new()).unwrap_err();
        assert!(matches!(err, RuntimeError::Decode(_)), "{err:?}");
        assert!(err.to_string().starts_with("cannot decode image"), "{err}");
        assert!(check_decodes(b"not an image").is_err());
    }
}
