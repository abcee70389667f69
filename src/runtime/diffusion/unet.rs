//! The UNet's interface, discovered from the inputs and outputs its ONNX file declares and
//! checked against what the engine feeds it. Element types are compared as ONNX Runtime's
//! [`TensorElementType`], never as their debug text. Float inputs may be Float32 or Float16 (an
//! fp16 export; the session converts at its boundary, `runtime::shared_session`).

use crate::runtime::error::RuntimeError;
use crate::runtime::onnx::{TensorDecl, TensorElementType};
use std::path::Path;

/// How the UNet takes its timestep.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum TimestepShape {
    /// Rank-0: one timestep per call (optimum's Stable Diffusion export).
    Scalar,
    /// `[1]`: one timestep per call, older exports.
    One,
    /// `[batch]`: a timestep per item, so items at different steps can share a call.
    PerItem,
}

/// The UNet's interface, as discovered.
#[derive(Clone, Debug)]
pub struct UnetIo {
    pub sample: String,
    pub timestep: String,
    pub timestep_shape: TimestepShape,
    pub timestep_is_int: bool,
    /// `encoder_hidden_states` (text) or `class_labels` (class conditioning).
    pub condition: String,
    pub output: String,
}

/// The first declaration named one of `names`, in the order of `names`.
pub(super) fn find<'a>(decls: &'a [TensorDecl], names: &[&str]) -> Option<&'a TensorDecl> {
    names
        .iter()
        .find_map(|n| decls.iter().find(|d| d.name == *n))
}

pub(super) fn names(decls: &[TensorDecl]) -> Vec<&str> {
    decls.iter().map(|d| d.name.as_str()).collect()
}

/// Reads the UNet's interface from what its `file` declares; errors say what does not fit.
pub fn unet_io(
    file: &Path,
    inputs: &[TensorDecl],
    outputs: &[TensorDecl],
) -> Result<UnetIo, RuntimeError> {
    use TensorElementType::{Float16, Float32, Int64};
    let fail = |message: String| RuntimeError::interface(file, message);
    let float = |d: &TensorDecl| d.is(Float32) || d.is(Float16);
    let sample = find(inputs, &["sample"]).ok_or_else(|| {
        fail(format!(
            "UNet has no `sample` input (its inputs: {:?})",
            names(inputs)
        ))
    })?;
    if !float(sample) || sample.shape.len() != 4 {
        return Err(fail(format!(
            "UNet input `sample` is {} {:?}, expected Float32 or Float16 [batch, channels, height, width]",
            sample.element, sample.shape
        )));
    }
    let timestep = find(inputs, &["timestep", "timesteps", "t"]).ok_or_else(|| {
        fail(format!(
            "UNet has no `timestep` input (its inputs: {:?})",
            names(inputs)
        ))
    })?;
    let timestep_shape = match timestep.shape.as_slice() {
        [] => TimestepShape::Scalar,
        [1] => TimestepShape::One,
        [_] => TimestepShape::PerItem,
        other => {
            return Err(fail(format!(
                "UNet input `{}` has shape {other:?}, expected a scalar, [1] or [batch]",
                timestep.name
            )))
        }
    };
    let timestep_is_int = match timestep.element_type {
        Some(Int64) => true,
        Some(Float32 | Float16) => false,
        _ => {
            return Err(fail(format!(
                "UNet input `{}` is {}, expected Int64, Float32 or Float16",
                timestep.name, timestep.element
            )))
        }
    };
    let condition = if let Some(c) = find(inputs, &["encoder_hidden_states"]) {
        if !float(c) || c.shape.len() != 3 {
            return Err(fail(format!("UNet input `encoder_hidden_states` is {} {:?}, expected Float32 or Float16 [batch, seq, hidden]", c.element, c.shape)));
        }
        c.name.clone()
    } else if let Some(c) = find(inputs, &["class_labels"]) {
        if !c.is(Int64) {
            return Err(fail(format!(
                "UNet input `class_labels` is {}, expected Int64",
                c.element
            )));
        }
        c.name.clone()
    } else {
        return Err(fail(format!(
            "UNet has neither `encoder_hidden_states` nor `class_labels` (its inputs: {:?})",
            names(inputs)
        )));
    };
    let known = [
        sample.name.as_str(),
        timestep.name.as_str(),
        condition.as_str(),
    ];
    if let Some(extra) = inputs.iter().find(|i| !known.contains(&i.name.as_str())) {
        return Err(fail(format!(
            "UNet input `{}` is not one discl can feed (inputs: {:?})",
            extra.name,
            names(inputs)
        )));
    }
    let output = find(outputs, &["out_sample", "sample"])
        .or(outputs.first())
        .ok_or_else(|| fail("UNet has no outputs".into()))?;
    Ok(UnetIo {
        sample: sample.name.clone(),
        timestep: timestep.name.clone(),
        timestep_shape,
        timestep_is_int,
        condition,
        output: output.name.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use TensorElementType::{Float16, Float32, Int32, Int64};

    /// A declaration whose debug text says nothing: only the element type can decide.
    fn decl(name: &str, ty: TensorElementType, shape: &[i64]) -> TensorDecl {
        TensorDecl {
            name: name.into(),
            element: "?".into(),
            element_type: Some(ty),
            shape: shape.to_vec(),
        }
    }

    fn unet(
        sample: TensorElementType,
        t: TensorElementType,
        labels: TensorElementType,
    ) -> Vec<TensorDecl> {
        vec![
            decl("sample", sample, &[-1, 1, 32, 32]),
            decl("timestep", t, &[-1]),
            decl("class_labels", labels, &[-1]),
        ]
    }

    /// What does not fit, from an interface error naming the UNet file.
    fn mismatch(result: Result<UnetIo, RuntimeError>) -> String {
        match result.unwrap_err() {
            RuntimeError::Interface { file, message } => {
                assert_eq!(file, Path::new("unet/model.onnx"));
                message
            }
            other => panic!("expected an interface error, got {other:?}"),
        }
    }

    #[test]
    fn element_types_are_compared_as_values() {
        let file = Path::new("unet/model.onnx");
        let out = [decl("out_sample", Float32, &[-1, 1, 32, 32])];
        let io = unet_io(file, &unet(Float32, Int64, Int64), &out).unwrap();
        assert!(io.timestep_is_int);
        assert_eq!(io.timestep_shape, TimestepShape::PerItem);
        assert_eq!(
            (io.condition.as_str(), io.output.as_str()),
            ("class_labels", "out_sample")
        );
        assert!(
            !unet_io(file, &unet(Float32, Float32, Int64), &out)
                .unwrap()
                .timestep_is_int
        );

        // An fp16 export's sample and timestep are Float16.
        let io = unet_io(file, &unet(Float16, Float16, Int64), &out).unwrap();
        assert!(!io.timestep_is_int);
        let err = mismatch(unet_io(file, &unet(Int32, Int64, Int64), &out));
        assert!(err.starts_with("UNet input `sample` is ?"), "{err}");
        let err = mismatch(unet_io(file, &unet(Float32, Int32, Int64), &out));
        assert!(err.contains("expected Int64, Float32 or Float16"), "{err}");
        let err = mismatch(unet_io(file, &unet(Float32, Int64, Int32), &out));
        assert!(err.contains("`class_labels` is ?, expected Int64"), "{err}");
        let shown = unet_io(file, &unet(Float32, Int64, Int32), &out)
            .unwrap_err()
            .to_string();
        assert!(
            shown.starts_with("unet/model.onnx: UNet input `class_labels`"),
            "{shown}"
        );

        let mut not_a_tensor = unet(Float32, Int64, Int64);
        not_a_tensor[1].element_type = None;
        assert!(unet_io(file, &not_a_tensor, &out).is_err());
    }
}
