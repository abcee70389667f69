//! ONNX Runtime: the process-wide environment and session creation with a chosen device.
//!
//! The library is loaded at run time (`load-dynamic`) from `ORT_DYLIB_PATH`, which
//! `.cargo/config.toml` points at the copy `scripts/setup.sh` installs; outside cargo, the same
//! copy is found relative to the working directory.

use super::device::Device;
use super::error::RuntimeError;
use super::shared_session::SharedSession;
use ort::session::Session;
pub use ort::value::TensorElementType;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// Where `scripts/setup.sh` puts the ONNX Runtime library, relative to the repository root.
pub const BUNDLED_LIBRARY: &str = "vendor/onnxruntime/libonnxruntime.so.1.31.1";

static ENVIRONMENT: OnceLock<Result<ort::environment::Environment, RuntimeError>> = OnceLock::new();

/// The variable that stops ONNX Runtime's telemetry before it starts.
pub const TELEMETRY_VARIABLE: &str = "ORT_DISABLE_TELEMETRY";

/// Turns ONNX Runtime's telemetry off for this process, unless the user's environment already
/// says `ORT_DISABLE_TELEMETRY` either way. Since 1.29 ONNX Runtime's Linux build has 1DS
/// telemetry: creating its environment writes a device id and an event database (SQLite,
/// `onnxruntime.db`) under `$XDG_CACHE_HOME` or `~/.cache/Microsoft/DeveloperTools/.onnxruntime/`
/// and may upload events. `DisableTelemetryEvents` (what `with_telemetry(false)` calls) comes
/// after the environment exists, too late for those files; only the variable, read when the
/// environment is created, stops all of it. Call it before other threads start (`discl` does so
/// first thing); [`environment`] calls it too, for programs that embed discl.
pub fn disable_telemetry() {
    if std::env::var_os(TELEMETRY_VARIABLE).is_none() {
        std::env::set_var(TELEMETRY_VARIABLE, "1");
    }
}

/// The process-wide ONNX Runtime environment, created on first use, with ONNX Runtime's
/// telemetry off ([`disable_telemetry`]).
pub fn environment() -> Result<&'static ort::environment::Environment, RuntimeError> {
    ENVIRONMENT
        .get_or_init(|| {
            disable_telemetry();
            let library = library_path()?;
            let builder = ort::init_from(&library).map_err(|e| RuntimeError::Library {
                path: library.clone(),
                message: e.to_string(),
            })?;
            builder
                .with_name("discl")
                .with_telemetry(false)
                .build()
                .map_err(|e| RuntimeError::Environment {
                    message: e.to_string(),
                })
        })
        .as_ref()
        .map_err(|e| {
            e.library_copy()
                .unwrap_or_else(|| RuntimeError::Environment {
                    message: e.to_string(),
                })
        })
}

fn library_path() -> Result<PathBuf, RuntimeError> {
    if let Some(path) = std::env::var_os("ORT_DYLIB_PATH") {
        return Ok(PathBuf::from(path));
    }
    let local = Path::new(BUNDLED_LIBRARY);
    if local.exists() {
        return Ok(local.to_path_buf());
    }
    Err(RuntimeError::LibraryNotFound)
}

/// How a session is built.
#[derive(Clone, Debug)]
pub struct SessionOptions {
    pub device: Device,
    /// Fall back to the CPU when the device asked for is not there (otherwise that is an error).
    pub fallback_to_cpu: bool,
    /// ONNX Runtime intra-op threads for this session.
    pub intra_threads: usize,
}

impl Default for SessionOptions {
    fn default() -> Self {
        SessionOptions {
            device: Device::Cpu,
            fallback_to_cpu: false,
            intra_threads: 1,
        }
    }
}

/// The device sessions built with `options` run on: the CUDA device asked for when the loaded
/// library has CUDA, else the CPU (a fallback; without one, opening is an error).
pub fn resolved_device(options: &SessionOptions) -> Device {
    match options.device {
        Device::Cuda(id)
            if <ort::ep::CUDA as ort::ep::ExecutionProvider>::is_available().unwrap_or(false) =>
        {
            Device::Cuda(id)
        }
        _ => Device::Cpu,
    }
}

/// Opens `file` as a session on the requested device; errors name the file.
pub fn open_session(file: &Path, options: &SessionOptions) -> Result<Session, RuntimeError> {
    let env = environment()?;
    let fail = |source: ort::Error| RuntimeError::Session {
        file: file.to_path_buf(),
        source,
    };
    if !file.exists() {
        return Err(RuntimeError::Missing {
            path: file.to_path_buf(),
            what: "no such model file",
        });
    }
    let mut builder = Session::builder(env)
        .map_err(fail)?
        .with_intra_threads(options.intra_threads.max(1))
        .map_err(|e| fail(e.into()))?
        .with_intra_op_spinning(false)
        .map_err(|e| fail(e.into()))?;
    if let Device::Cuda(id) = options.device {
        use ort::ep::ExecutionProvider;
        // Arenas grow by what is asked, not to the next power of two: a UNet and a VAE decoder
        // at large batches otherwise reserve far more device memory than they use.
        let cuda = ort::ep::CUDA::default()
            .with_device_id(id)
            .with_arena_extend_strategy(ort::ep::ArenaExtendStrategy::SameAsRequested);
        let available = ort::ep::CUDA::is_available().unwrap_or(false);
        match (available, options.fallback_to_cpu) {
            (true, _) => {
                builder = builder
                    .with_execution_providers([cuda.build().error_on_failure()])
                    .map_err(|source| RuntimeError::Cuda {
                        file: file.to_path_buf(),
                        device: id,
                        source: source.into(),
                    })?;
            }
            (false, true) => {}
            (false, false) => {
                return Err(RuntimeError::NoCuda {
                    file: file.to_path_buf(),
                    device: id,
                })
            }
        }
    }
    // Inline weights are read where they lie in the file, once (`rewrite::in_place`). The file is
    // mapped, not read, to build the view: only its protobuf headers are touched, so the
    // weights are not held in memory beside the tensors ONNX Runtime makes of them.
    let view = map_file(file).and_then(|bytes| {
        let name = file.file_name()?.to_str()?;
        super::rewrite::in_place::weights_in_place(&bytes, name)
            .ok()
            .flatten()
    });
    let folder = match file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    match view {
        Some(view) => builder
            .with_config_entry(EXTERNAL_FOLDER, folder.to_string_lossy())
            .map_err(|e| fail(e.into()))?
            .commit_from_memory(&view)
            .map_err(fail),
        None => builder.commit_from_file(file).map_err(fail),
    }
}

/// `file` mapped read-only, while a view of it is built.
fn map_file(file: &Path) -> Option<memmap2::Mmap> {
    let opened = std::fs::File::open(file).ok()?;
    // SAFETY: the map is only read, for the moment the view takes, and dropped with it. A file
    // truncated by another process meanwhile would fault that read, as it would fault ONNX
    // Runtime's own reading of a model changed under it.
    unsafe { memmap2::Mmap::map(&opened) }.ok()
}

/// The session option naming the folder external data is read from, for a model loaded from
/// memory.
const EXTERNAL_FOLDER: &str = "session.model_external_initializers_file_folder_path";

/// Opens `file` as [`open_session`] does, as a session several threads may run at once when
/// it runs on the CPU.
pub fn open_shared(file: &Path, options: &SessionOptions) -> Result<SharedSession, RuntimeError> {
    let session = open_session(file, options)?;
    Ok(SharedSession::new(
        session,
        resolved_device(options) == Device::Cpu,
    ))
}

/// A tensor's element type and shape as an ONNX file declares them (-1 for a dynamic dimension).
#[derive(Clone, Debug, PartialEq)]
pub struct TensorDecl {
    pub name: String,
    /// The element type, for messages (`Float32`); compare [`TensorDecl::element_type`].
    pub element: String,
    /// The element type; `None` when the value is not a tensor (a sequence or a map).
    pub element_type: Option<TensorElementType>,
    pub shape: Vec<i64>,
}

impl TensorDecl {
    /// Whether this is a tensor of `ty`.
    pub fn is(&self, ty: TensorElementType) -> bool {
        self.element_type == Some(ty)
    }
}

fn declare(outlet: &ort::value::Outlet) -> TensorDecl {
    let dtype = outlet.dtype();
    TensorDecl {
        name: outlet.name().to_string(),
        element_type: dtype.tensor_type(),
        element: dtype
            .tensor_type()
            .map(|t| format!("{t:?}"))
            .unwrap_or_else(|| format!("{dtype:?}")),
        shape: dtype
            .tensor_shape()
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default(),
    }
}

/// The inputs a session declares.
pub fn inputs(session: &Session) -> Vec<TensorDecl> {
    session.inputs().iter().map(declare).collect()
}

/// The outputs a session declares.
pub fn outputs(session: &Session) -> Vec<TensorDecl> {
    session.outputs().iter().map(declare).collect()
}
