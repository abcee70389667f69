//! im2col for the learner's 3×3 convolutions (stride 1, zero padding 1), as one candle op with
//! its own gradient (col2im). Built from candle's pad, narrow and stack instead, every one of
//! the nine taps cost a full-size zero tensor, a concatenation and an addition in the backward
//! pass: an epoch took 1.37× as long (`cargo bench --bench learner`, 5.0 → 3.6 s).

use candle_core::{bail, CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};

/// (c, n, h, w) → (c·9, n·h·w): row c·9 + 3·dy + dx holds every pixel's neighbour at
/// (dy − 1, dx − 1), zero outside the image — the layout of a (c_out, c, 3, 3) weight's rows.
pub fn im2col3x3(x: &Tensor) -> Result<Tensor> {
    x.contiguous()?.apply_op1(Im2col)
}

struct Im2col;

/// The gradient of [`Im2col`]: each tap's row added back onto the pixels it was read from.
struct Col2im {
    dims: (usize, usize, usize, usize),
}

fn f32_slice<'a>(storage: &'a CpuStorage, layout: &Layout, op: &str) -> Result<&'a [f32]> {
    let CpuStorage::F32(values) = storage else {
        bail!("{op}: f32 tensors only")
    };
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&values[start..end]),
        None => bail!("{op}: a contiguous tensor only"),
    }
}

/// Calls `f(tap offset, source offset, dx, w)` for every row of every tap whose source row
/// lies inside the image: the row's offset in the (c·9, n·h·w) patches, the offset of the
/// (c, n, h, w) input row it reads, the tap's column `dx` (shift dx − 1) and the row length.
fn each_row(dims: (usize, usize, usize, usize), mut f: impl FnMut(usize, usize, usize, usize)) {
    let (c, n, h, w) = dims;
    let plane = n * h * w;
    for ci in 0..c {
        for dy in 0..3 {
            for dx in 0..3 {
                let tap = (ci * 9 + dy * 3 + dx) * plane;
                for image in 0..n {
                    let source = (ci * n + image) * h * w;
                    for y in 0..h {
                        let sy = y + dy;
                        if sy == 0 || sy > h {
                            continue;
                        }
                        f(tap + (image * h + y) * w, source + (sy - 1) * w, dx, w);
                    }
                }
            }
        }
    }
}

impl CustomOp1 for Im2col {
    fn name(&self) -> &'static str {
        "im2col3x3"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let dims = layout.shape().dims4()?;
        let src = f32_slice(storage, layout, self.name())?;
        let (c, n, h, w) = dims;
        let mut out = vec![0f32; c * 9 * n * h * w];
        each_row(dims, |to, from, dx, w| {
            let (out, src) = (&mut out[to..to + w], &src[from..from + w]);
            match dx {
                0 => out[1..].copy_from_slice(&src[..w - 1]),
                1 => out.copy_from_slice(src),
                _ => out[..w - 1].copy_from_slice(&src[1..]),
            }
        });
        Ok((CpuStorage::F32(out), Shape::from((c * 9, n * h * w))))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        let dims = arg.dims4()?;
        Ok(Some(
            grad_res.contiguous()?.apply_op1_no_bwd(&Col2im { dims })?,
        ))
    }
}

impl CustomOp1 for Col2im {
    fn name(&self) -> &'static str {
        "col2im3x3"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let (c, n, h, w) = self.dims;
        if layout.shape().dims() != [c * 9, n * h * w] {
            bail!("{}: a gradient of shape {:?}", self.name(), layout.shape());
        }
        let grad = f32_slice(storage, layout, self.name())?;
        let mut out = vec![0f32; c * n * h * w];
        each_row(self.dims, |from, to, dx, w| {
            let (out, grad) = (&mut out[to..to + w], &grad[from..from + w]);
            let (out, grad) = match dx {
                0 => (&mut out[..w - 1], &grad[1..]),
                1 => (&mut out[..], grad),
                _ => (&mut out[1..], &grad[..w - 1]),
            };
            for (o, g) in out.iter_mut().zip(grad) {
                *o += g;
            }
        });
        Ok((CpuStorage::F32(out), Shape::from(self.dims)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    /// The same patches from candle's pad, narrow and stack.
    fn reference(x: &Tensor) -> Result<Tensor> {
        let (c, n, h, w) = x.dims4()?;
        let padded = x.pad_with_zeros(2, 1, 1)?.pad_with_zeros(3, 1, 1)?;
        let mut taps = Vec::new();
        for dy in 0..3 {
            for dx in 0..3 {
                taps.push(padded.narrow(2, dy, h)?.narrow(3, dx, w)?);
            }
        }
        Tensor::stack(&taps, 1)?.reshape((c * 9, n * h * w))
    }

    fn input(dims: (usize, usize, usize, usize)) -> Tensor {
        let len = dims.0 * dims.1 * dims.2 * dims.3;
        let values: Vec<f32> = (0..len)
            .map(|i| ((i * 37 % 101) as f32) / 10.0 - 5.0)
            .collect();
        Tensor::from_vec(values, dims, &Device::Cpu).unwrap()
    }

    #[test]
    fn patches_and_gradients_equal_candles_pad_narrow_stack() {
        for dims in [(2, 3, 5, 4), (1, 1, 1, 1), (3, 2, 1, 6), (2, 2, 7, 1)] {
            let x = Var::from_tensor(&input(dims)).unwrap();
            let ours = im2col3x3(x.as_tensor()).unwrap();
            let theirs = reference(x.as_tensor()).unwrap();
            assert_eq!(
                ours.to_vec2::<f32>().unwrap(),
                theirs.to_vec2::<f32>().unwrap()
            );
            // A weighted sum, so each patch entry's gradient differs.
            let weights = input(ours.dims2().map(|(r, m)| (1, 1, r, m)).unwrap())
                .reshape(ours.shape())
                .unwrap();
            let loss = |t: &Tensor| t.mul(&weights).unwrap().sum_all().unwrap();
            let ours = loss(&ours).backward().unwrap();
            let theirs = loss(&theirs).backward().unwrap();
            let grad = |g: &candle_core::backprop::GradStore| {
                g.get(x.as_tensor())
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .to_vec1::<f32>()
                    .unwrap()
            };
            let (a, b) = (grad(&ours), grad(&theirs));
            for (p, q) in a.iter().zip(&b) {
                assert!(
                    (p - q).abs() <= 1e-4 * q.abs().max(1.0),
                    "{dims:?}: {a:?} != {b:?}"
                );
            }
        }
    }
}
