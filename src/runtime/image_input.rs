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

/// Pixels an image may have unless a source sets its own budget: 4096 × 4096.
pub const DEFAULT_MAX_PIXELS: u64 = 4096 * 4096;

/// The most bytes an image file within `max_pixels` may take: 8 bytes a pixel (16-bit RGBA
/// stored uncompressed) and 1 MiB of headers and metadata.
pub fn max_file_bytes(max_pixels: u64) -> u64 {
    max_pixels.saturating_mul(8).saturating_add(1 << 20)
}

/// Checks that `bytes` decode as an image of at most `max_pixels` pixels, without converting
/// it. The size is read from the header first, so an over-budget image is refused before any
/// pixel is decoded.
pub fn check_decodes(bytes: &[u8], max_pixels: u64) -> Result<(u32, u32), RuntimeError> {
    let reader = || {
        image::ImageReader::new(std::io::Cursor::new(bytes))
            .with_guessed_format()
            .map_err(|e| RuntimeError::Decode(image::ImageError::IoError(e)))
    };
    let (width, height) = reader()?.into_dimensions()?;
    let pixels = u64::from(width) * u64::from(height);
    if pixels > max_pixels {
        return Err(RuntimeError::TooManyPixels {
            width,
            height,
            max_pixels,
        });
    }
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(width);
    limits.max_image_height = Some(height);
    let mut decoder = reader()?;
    decoder.limits(limits);
    let img = decoder.decode()?;
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
        assert!(check_decodes(b"not an image", DEFAULT_MAX_PIXELS).is_err());
    }

    /// PNG's chunk checksum (CRC-32, polynomial 0xEDB88320).
    fn crc32(bytes: &[u8]) -> u32 {
        let mut crc = !0u32;
        for byte in bytes {
            crc ^= u32::from(*byte);
            for _ in 0..8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ 0xEDB8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }

    #[test]
    fn an_image_over_the_pixel_budget_is_refused_from_its_header() {
        assert_eq!(check_decodes(&png(8, 4, 1), 32).unwrap(), (8, 4));
        let error = check_decodes(&png(8, 4, 1), 31).unwrap_err();
        assert_eq!(
            error.to_string(),
            "image is 8×4 pixels (32), over the budget of 31 pixels (the source's `max_pixels`)"
        );
        // A PNG header claiming 20000×20000 with no pixel data at all: refused by its header.
        let mut header = png(1, 1, 0);
        header[16..20].copy_from_slice(&20000u32.to_be_bytes());
        header[20..24].copy_from_slice(&20000u32.to_be_bytes());
        let crc = crc32(&header[12..29]);
        header[29..33].copy_from_slice(&crc.to_be_bytes());
        let error = check_decodes(&header, DEFAULT_MAX_PIXELS).unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("image is 20000×20000 pixels (400000000), over"),
            "{error}"
        );
    }
}
