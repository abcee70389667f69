//! A CPU session run from several threads at once. ONNX Runtime documents `Run` on one
//! session from many threads as supported; the `ort` crate still asks for `&mut` (some
//! execution providers' allocators are not thread-safe), so one session per thread used to mean
//! one copy of the weights per thread. discl shares only sessions on the CPU execution provider:
//! every thread's call runs inline on that thread (one intra-op thread), reads the same weights
//! and takes its activations from the session's arena. A CUDA session is never shared (each
//! CUDA runner opens its own), and [`SharedSession::get_mut`] is how its IO binding reaches it.
//!
//! discl computes in f32. A file that declares Float16 inputs or outputs (an fp16 export, such
//! as optimum's `--dtype fp16`) is fed and read through the same calls: its Float16 inputs are
//! converted from the f32 tensors given, its Float16 outputs to f32 tensors, at this boundary.

use half::f16;
use ort::session::Session;
use ort::value::{DynValue, DynValueRef, Tensor, TensorElementType};
use ort::AsPointer;
use std::ffi::{c_char, CString};
use std::ptr::{self, NonNull};

/// A session whose [`SharedSession::run`] takes `&self`.
pub struct SharedSession {
    session: Session,
    shareable: bool,
    /// The inputs and outputs the file declares as Float16.
    half_inputs: Vec<String>,
    half_outputs: Vec<String>,
}

impl SharedSession {
    /// Wraps `session`; `on_cpu` says it runs on the CPU execution provider only, the one
    /// case where calls from several threads at once are made.
    pub fn new(session: Session, on_cpu: bool) -> Self {
        let half = |outlets: &[ort::value::Outlet]| -> Vec<String> {
            outlets
                .iter()
                .filter(|o| o.dtype().tensor_type() == Some(TensorElementType::Float16))
                .map(|o| o.name().to_string())
                .collect()
        };
        SharedSession {
            half_inputs: half(session.inputs()),
            half_outputs: half(session.outputs()),
            session,
            shareable: on_cpu,
        }
    }

    /// Whether the file declares any Float16 input or output (an fp16 export).
    pub fn is_half(&self) -> bool {
        !self.half_inputs.is_empty() || !self.half_outputs.is_empty()
    }

    /// `value` as the input `name` takes it: an f32 tensor given for a Float16 input becomes a
    /// Float16 tensor (`Some`); anything else is passed as it is (`None`).
    pub fn as_declared(
        &self,
        name: &str,
        value: &DynValueRef<'_>,
    ) -> Result<Option<DynValue>, ort::Error> {
        if !self.half_inputs.iter().any(|n| n == name) {
            return Ok(None);
        }
        let Ok((shape, data)) = value.try_extract_tensor::<f32>() else {
            return Ok(None);
        };
        let halves: Vec<f16> = data.iter().map(|&v| f16::from_f32(v)).collect();
        Ok(Some(
            Tensor::from_array((shape.to_vec(), halves))?.into_dyn(),
        ))
    }

    /// `value`, the output `name`, as an f32 tensor when the file declares it Float16.
    pub fn as_f32(&self, name: &str, value: DynValue) -> Result<DynValue, ort::Error> {
        if !self.half_outputs.iter().any(|n| n == name) {
            return Ok(value);
        }
        let (shape, data) = value.try_extract_tensor::<f16>()?;
        let floats: Vec<f32> = data.iter().map(|v| v.to_f32()).collect();
        Ok(Tensor::from_array((shape.to_vec(), floats))?.into_dyn())
    }

    /// Whether several threads may run this session at once.
    pub fn shareable(&self) -> bool {
        self.shareable
    }

    /// The session, for its declared inputs and outputs.
    pub fn session(&self) -> &Session {
        &self.session
    }

    /// The session for `&mut` calls (IO binding), when the caller holds it alone.
    pub fn get_mut(&mut self) -> &mut Session {
        &mut self.session
    }

    /// One call: `inputs` by name, and the value of the output named `output`.
    pub fn run(
        &self,
        inputs: &[(&str, &DynValueRef<'_>)],
        output: &str,
    ) -> Result<DynValue, ort::Error> {
        let mut values = self.run_outputs(inputs, &[output])?;
        Ok(values.remove(0))
    }

    /// One call: `inputs` by name, and the values of the outputs named `outputs`, in order.
    /// Callers on several threads at once must hold a [`SharedSession::shareable`] session
    /// (the model loaders share no other kind).
    pub fn run_outputs(
        &self,
        inputs: &[(&str, &DynValueRef<'_>)],
        outputs: &[&str],
    ) -> Result<Vec<DynValue>, ort::Error> {
        let c = |s: &&str| {
            CString::new(*s).map_err(|_| ort::Error::new(format!("the name `{s}` holds a NUL")))
        };
        let input_names: Vec<CString> =
            inputs.iter().map(|(n, _)| c(n)).collect::<Result<_, _>>()?;
        let output_names: Vec<CString> = outputs.iter().map(c).collect::<Result<_, _>>()?;
        let input_name_ptrs: Vec<*const c_char> = input_names.iter().map(|n| n.as_ptr()).collect();
        let output_name_ptrs: Vec<*const c_char> =
            output_names.iter().map(|n| n.as_ptr()).collect();
        let converted: Vec<Option<DynValue>> = inputs
            .iter()
            .map(|(name, value)| self.as_declared(name, value))
            .collect::<Result<_, _>>()?;
        let values: Vec<*const ort::sys::OrtValue> = inputs
            .iter()
            .zip(&converted)
            .map(|((_, given), half)| half.as_ref().map_or_else(|| given.ptr(), |h| h.ptr()))
            .collect();
        let mut out: Vec<*mut ort::sys::OrtValue> = vec![ptr::null_mut(); outputs.len()];
        // SAFETY: every pointer lives until `Run` returns (names and values are borrowed above,
        // `out` has one slot per output name); ONNX Runtime's `InferenceSession::Run` is a
        // const method, safe to call from several threads on the CPU execution provider.
        let status = unsafe {
            (ort::api().Run)(
                self.session.ptr().cast_mut(),
                ptr::null(),
                input_name_ptrs.as_ptr(),
                values.as_ptr(),
                values.len(),
                output_name_ptrs.as_ptr(),
                output_name_ptrs.len(),
                out.as_mut_ptr(),
            )
        };
        // SAFETY: `status` is what `Run` returned (null on success).
        unsafe { ort::Error::result_from_status(status) }?;
        out.into_iter()
            .zip(outputs)
            .map(|(value, name)| {
                let value = NonNull::new(value)
                    .ok_or_else(|| ort::Error::new("the session gave no value for an output"))?;
                // SAFETY: `Run` allocated `value` with the session's allocator and gave it to us.
                let value = unsafe { DynValue::from_ptr(value, Some(self.session.allocator())) };
                self.as_f32(name, value)
            })
            .collect()
    }
}
