//! A CPU session run from several threads at once. ONNX Runtime documents `Run` on one
//! session from many threads as supported; the `ort` crate still asks for `&mut` (some
//! execution providers' allocators are not thread-safe), so one session per thread used to mean
//! one copy of the weights per thread. discl shares only sessions on the CPU execution provider:
//! every thread's call runs inline on that thread (one intra-op thread), reads the same weights
//! and takes its activations from the session's arena. A CUDA session is never shared (each
//! CUDA runner opens its own), and [`SharedSession::get_mut`] is how its IO binding reaches it.

use ort::session::Session;
use ort::value::{DynValue, DynValueRef};
use ort::AsPointer;
use std::ffi::{c_char, CString};
use std::ptr::{self, NonNull};

/// A session whose [`SharedSession::run`] takes `&self`.
pub struct SharedSession {
    session: Session,
    shareable: bool,
}

impl SharedSession {
    /// Wraps `session`; `on_cpu` says it runs on the CPU execution provider only, the one
    /// case where calls from several threads at once are made.
    pub fn new(session: Session, on_cpu: bool) -> Self {
        SharedSession {
            session,
            shareable: on_cpu,
        }
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
        let values: Vec<*const ort::sys::OrtValue> = inputs.iter().map(|(_, v)| v.ptr()).collect();
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
            .map(|value| {
                let value = NonNull::new(value)
                    .ok_or_else(|| ort::Error::new("the session gave no value for an output"))?;
                // SAFETY: `Run` allocated `value` with the session's allocator and gave it to us.
                Ok(unsafe { DynValue::from_ptr(value, Some(self.session.allocator())) })
            })
            .collect()
    }
}
