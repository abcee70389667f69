//! Where a model runs: the CPU, or a CUDA device through ONNX Runtime's CUDA execution provider.

use std::fmt;
use std::str::FromStr;

/// An execution device named in a graph file (`"cpu"`, `"cuda"`, `"cuda:1"`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Device {
    #[default]
    Cpu,
    Cuda(i32),
}

impl FromStr for Device {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "cpu" => Ok(Device::Cpu),
            "cuda" => Ok(Device::Cuda(0)),
            other => match other.strip_prefix("cuda:").map(str::parse::<i32>) {
                Some(Ok(id)) if id >= 0 => Ok(Device::Cuda(id)),
                _ => Err(format!(
                    "unknown device `{other}` (expected \"cpu\", \"cuda\" or \"cuda:N\")"
                )),
            },
        }
    }
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Device::Cpu => f.write_str("cpu"),
            Device::Cuda(id) => write!(f, "cuda:{id}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_devices() {
        assert_eq!("cpu".parse(), Ok(Device::Cpu));
        assert_eq!("cuda".parse(), Ok(Device::Cuda(0)));
        assert_eq!("cuda:2".parse(), Ok(Device::Cuda(2)));
        assert!("gpu"
            .parse::<Device>()
            .unwrap_err()
            .contains("unknown device `gpu`"));
        assert!("cuda:-1".parse::<Device>().is_err());
    }
}
