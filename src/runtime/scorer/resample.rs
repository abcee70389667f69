//! PIL's `Image.resize` for 8-bit RGB images, reproduced bit for bit: transformers' image
//! processors resize through PIL, so a CLIP export only sees the pixels it was trained on if we
//! resample the same way. PIL convolves separably (horizontal pass, then vertical), widens the
//! filter by the scale factor when shrinking, turns the weights into 22-bit fixed point and
//! rounds to 8 bits after each pass; the `image` crate's Catmull-Rom (also a = -0.5) works in
//! floating point, vertical first, and differs by one level on some pixels.

use image::RgbImage;

/// A PIL convolution filter, numbered as PIL and `preprocessor_config.json` number them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Filter {
    Lanczos,
    Bilinear,
    Bicubic,
    Box,
    Hamming,
}

impl Filter {
    /// The filter PIL numbers `code` (1 Lanczos, 2 bilinear, 3 bicubic, 4 box, 5 Hamming);
    /// `None` for nearest (0) and anything else.
    pub fn from_pil(code: i64) -> Option<Filter> {
        Some(match code {
            1 => Filter::Lanczos,
            2 => Filter::Bilinear,
            3 => Filter::Bicubic,
            4 => Filter::Box,
            5 => Filter::Hamming,
            _ => return None,
        })
    }

    fn support(self) -> f64 {
        match self {
            Filter::Box => 0.5,
            Filter::Bilinear | Filter::Hamming => 1.0,
            Filter::Bicubic => 2.0,
            Filter::Lanczos => 3.0,
        }
    }

    fn weight(self, x: f64) -> f64 {
        fn sinc(x: f64) -> f64 {
            if x == 0.0 {
                1.0
            } else {
                let x = x * std::f64::consts::PI;
                x.sin() / x
            }
        }
        match self {
            Filter::Box => f64::from(u8::from(x > -0.5 && x <= 0.5)),
            Filter::Bilinear => (1.0 - x.abs()).max(0.0),
            Filter::Hamming => {
                let x = x.abs();
                if x == 0.0 {
                    1.0
                } else if x >= 1.0 {
                    0.0
                } else {
                    let x = x * std::f64::consts::PI;
                    // PIL writes the constants as C floats.
                    x.sin() / x * (f64::from(0.54f32) + f64::from(0.46f32) * x.cos())
                }
            }
            Filter::Bicubic => {
                const A: f64 = -0.5;
                let x = x.abs();
                if x < 1.0 {
                    ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
                } else if x < 2.0 {
                    (((x - 5.0) * x + 8.0) * x - 4.0) * A
                } else {
                    0.0
                }
            }
            Filter::Lanczos => {
                if (-3.0..3.0).contains(&x) {
                    sinc(x) * sinc(x / 3.0)
                } else {
                    0.0
                }
            }
        }
    }
}

/// Fixed-point fraction bits of PIL's 8-bit resampling.
const PRECISION_BITS: u32 = 32 - 8 - 2;

/// For each output position: the first input position and the fixed-point weights.
struct Coefficients {
    first: Vec<usize>,
    weights: Vec<Vec<i64>>,
}

/// PIL's `precompute_coeffs` and `normalize_coeffs_8bpc` for the whole input range.
fn coefficients(in_size: usize, out_size: usize, filter: Filter) -> Coefficients {
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = filter.support() * filterscale;
    let ss = 1.0 / filterscale;
    let mut first = Vec::with_capacity(out_size);
    let mut weights = Vec::with_capacity(out_size);
    for xx in 0..out_size {
        let center = (xx as f64 + 0.5) * scale;
        // C's (int) casts truncate toward zero, as `as` does.
        let xmin = ((center - support + 0.5) as i64).max(0);
        let xmax = ((center + support + 0.5) as i64).min(in_size as i64);
        let raw: Vec<f64> = (xmin..xmax)
            .map(|x| filter.weight((x as f64 - center + 0.5) * ss))
            .collect();
        let total: f64 = raw.iter().sum();
        let fixed = raw
            .iter()
            .map(|&w| {
                let w = if total != 0.0 { w / total } else { w };
                let scaled = w * f64::from(1u32 << PRECISION_BITS);
                (if w < 0.0 { scaled - 0.5 } else { scaled + 0.5 }) as i64
            })
            .collect();
        first.push(xmin as usize);
        weights.push(fixed);
    }
    Coefficients { first, weights }
}

fn clip8(sum: i64) -> u8 {
    (sum >> PRECISION_BITS).clamp(0, 255) as u8
}

/// One separable pass over interleaved RGB rows: `along_x` resamples each row, otherwise each
/// column. `size` is the input's (width, height); returns the output pixels.
fn pass(src: &[u8], size: (usize, usize), coeffs: &Coefficients, along_x: bool) -> Vec<u8> {
    let (width, height) = size;
    let out_len = coeffs.first.len();
    let (out_w, out_h) = if along_x {
        (out_len, height)
    } else {
        (width, out_len)
    };
    let mut out = vec![0u8; out_w * out_h * 3];
    for y in 0..out_h {
        for x in 0..out_w {
            let (k, first) = if along_x {
                (&coeffs.weights[x], coeffs.first[x])
            } else {
                (&coeffs.weights[y], coeffs.first[y])
            };
            for c in 0..3 {
                let mut sum: i64 = 1 << (PRECISION_BITS - 1);
                for (i, &w) in k.iter().enumerate() {
                    let at = if along_x {
                        y * width + first + i
                    } else {
                        (first + i) * width + x
                    };
                    sum += i64::from(src[at * 3 + c]) * w;
                }
                out[(y * out_w + x) * 3 + c] = clip8(sum);
            }
        }
    }
    out
}

/// Resizes `image` to `width` x `height` exactly as PIL's `Image.resize(size, filter)` does for
/// an RGB image (no `box`, no `reducing_gap`).
pub fn resize(image: &RgbImage, width: u32, height: u32, filter: Filter) -> RgbImage {
    let (in_w, in_h) = (image.width() as usize, image.height() as usize);
    let (out_w, out_h) = (width as usize, height as usize);
    if (in_w, in_h) == (out_w, out_h) || in_w == 0 || in_h == 0 || out_w == 0 || out_h == 0 {
        return if (in_w, in_h) == (out_w, out_h) {
            image.clone()
        } else {
            RgbImage::new(width, height)
        };
    }
    let mut pixels = image.as_raw().clone();
    let mut current_w = in_w;
    if out_w != in_w {
        pixels = pass(
            &pixels,
            (in_w, in_h),
            &coefficients(in_w, out_w, filter),
            true,
        );
        current_w = out_w;
    }
    if out_h != in_h {
        let coeffs = coefficients(in_h, out_h, filter);
        pixels = pass(&pixels, (current_w, in_h), &coeffs, false);
    }
    RgbImage::from_raw(width, height, pixels).expect("buffer sized for the output")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_sum_to_one_in_fixed_point() {
        for filter in [
            Filter::Lanczos,
            Filter::Bilinear,
            Filter::Bicubic,
            Filter::Box,
            Filter::Hamming,
        ] {
            for (from, to) in [(28, 32), (50, 17), (41, 29), (7, 7)] {
                let c = coefficients(from, to, filter);
                for w in &c.weights {
                    let sum: i64 = w.iter().sum();
                    assert!(
                        (sum - (1 << PRECISION_BITS)).abs() <= w.len() as i64,
                        "{filter:?}"
                    );
                }
            }
        }
        assert_eq!(Filter::from_pil(3), Some(Filter::Bicubic));
        assert_eq!(Filter::from_pil(0), None);
        assert_eq!(Filter::from_pil(6), None);
    }

    #[test]
    fn flat_images_stay_flat_and_sizes_are_kept() {
        let flat = RgbImage::from_pixel(28, 28, image::Rgb([200, 10, 255]));
        for filter in [Filter::Bicubic, Filter::Lanczos, Filter::Box] {
            let out = resize(&flat, 32, 19, filter);
            assert_eq!(out.dimensions(), (32, 19));
            assert!(out.pixels().all(|p| p.0 == [200, 10, 255]), "{filter:?}");
        }
        assert_eq!(resize(&flat, 28, 28, Filter::Bicubic), flat);
    }

    #[test]
    fn a_hard_edge_rings_but_stays_monotone_once_clamped() {
        // A hard black/white edge: bicubic rings, and the ringing is clipped to 0..=255.
        let mut img = RgbImage::new(8, 1);
        for x in 4..8 {
            img.put_pixel(x, 0, image::Rgb([255, 255, 255]));
        }
        let out = resize(&img, 16, 1, Filter::Bicubic);
        let row: Vec<u8> = out.pixels().map(|p| p.0[0]).collect();
        assert_eq!(row[0], 0);
        assert_eq!(row[15], 255);
        assert!(row.windows(2).all(|w| w[0] <= w[1]), "{row:?}");
    }
}
