//! The UNet on a CUDA device through ONNX Runtime's IO binding. The condition rows of a group
//! (text states or class labels, unguided half first) are copied to the device once and stay
//! bound while the same group steps on; only the latents and the timestep cross the bus each
//! step, and the prediction comes back to host memory, where the scheduler steps every item.

use super::img2img::Condition;
use super::model::DiffusionModel;
use super::unet::UnetIo;
use crate::runtime::error::RuntimeError;
use crate::runtime::shared_session::SharedSession;
use half::f16;
use ort::memory::{AllocationDevice, AllocatorType, MemoryInfo, MemoryType};
use ort::session::{IoBinding, Session};
use ort::value::{DynTensorValueType, DynValueRef};
use std::sync::Arc;

/// The UNet session of a model its generator holds alone, as every CUDA model is (each CUDA
/// runner opens its own; IO binding is per session).
pub(super) fn unet_alone(
    model: &mut Arc<DiffusionModel>,
) -> Result<&mut SharedSession, RuntimeError> {
    Arc::get_mut(model)
        .map(|m| &mut m.unet)
        .ok_or_else(|| RuntimeError::request("a CUDA model is shared between generators"))
}

/// The condition a bound group carries: guided or not, and each item's condition in order.
pub(super) type ConditionKey = (bool, Vec<Condition>);

/// A UNet session's binding, with the condition it holds on the device.
pub(super) struct UnetBinding {
    binding: IoBinding,
    /// Host memory, where the prediction is put.
    host: MemoryInfo<'static>,
    device_id: i32,
    bound: Option<ConditionKey>,
    /// Conditions copied to the device, for the run summary and the tests of reuse.
    pub uploads: u64,
}

impl UnetBinding {
    /// A binding for `session` on CUDA device `device_id`.
    pub fn new(session: &Session, device_id: i32) -> Result<Self, ort::Error> {
        Ok(UnetBinding {
            binding: session.create_binding()?,
            host: MemoryInfo::new(
                AllocationDevice::CPU,
                0,
                AllocatorType::Device,
                MemoryType::CPUOutput,
            )?,
            device_id,
            bound: None,
            uploads: 0,
        })
    }

    /// One UNet call: `condition` is copied to the device only when `key` differs from the
    /// condition already bound. Returns the prediction. An fp16 export's inputs are converted
    /// from the f32 given, and its prediction back to f32.
    pub fn run(
        &mut self,
        session: &mut SharedSession,
        io: &UnetIo,
        inputs: [DynValueRef<'_>; 2],
        key: ConditionKey,
        condition: DynValueRef<'_>,
    ) -> Result<Vec<f32>, ort::Error> {
        if self.bound.as_ref() != Some(&key) {
            let half = session.as_declared(&io.condition, &condition)?;
            let condition = half.as_ref().map_or(condition, |h| h.view());
            let on_device = condition
                .downcast::<DynTensorValueType>()?
                .to(AllocationDevice::CUDA, self.device_id)?;
            self.binding.bind_input(io.condition.as_str(), &on_device)?;
            self.bound = Some(key);
            self.uploads += 1;
        }
        let [sample, timestep] = inputs;
        for (name, value) in [(&io.sample, sample), (&io.timestep, timestep)] {
            match session.as_declared(name, &value)? {
                Some(half) => self.binding.bind_input(name.as_str(), &half)?,
                None => self.binding.bind_input(name.as_str(), &value)?,
            }
        }
        // Bound afresh each call: a bound output keeps its first shape, and groups vary in size.
        self.binding
            .bind_output_to_device(io.output.as_str(), &self.host)?;
        let out = session.get_mut().run_binding(&self.binding)?;
        let eps = &out[io.output.as_str()];
        match eps.try_extract_tensor::<f32>() {
            Ok((_, eps)) => Ok(eps.to_vec()),
            Err(_) => Ok(eps
                .try_extract_tensor::<f16>()?
                .1
                .iter()
                .map(|v| v.to_f32())
                .collect()),
        }
    }
}
