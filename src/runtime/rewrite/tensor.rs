//! ONNX `TensorProto`s as the rewrites need them: a constant's name, type, shape and float
//! values (inline as `raw_data` or `float_data`, or in an external data file beside the model),
//! small integer and scalar constants (shapes, scales), and new tensors written inline or
//! appended to a new data file.

use super::wire::{self, Field, Value};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// `TensorProto` field numbers.
pub const DIMS: u32 = 1;
pub const DATA_TYPE: u32 = 2;
pub const FLOAT_DATA: u32 = 4;
pub const INT32_DATA: u32 = 5;
pub const INT64_DATA: u32 = 7;
pub const NAME: u32 = 8;
pub const RAW_DATA: u32 = 9;
pub const EXTERNAL_DATA: u32 = 13;
pub const DATA_LOCATION: u32 = 14;

/// `TensorProto.DataType` values.
pub const FLOAT: u64 = 1;
pub const INT8: u64 = 3;
pub const INT32: u64 = 6;
pub const INT64: u64 = 7;
pub const FLOAT16: u64 = 10;
pub const DOUBLE: u64 = 11;

/// Where an external tensor's bytes are.
#[derive(Clone, Debug, PartialEq)]
pub struct External {
    pub location: String,
    pub offset: u64,
    pub length: Option<u64>,
}

/// A constant tensor of the graph, its fields kept as read.
pub struct Tensor<'a> {
    pub fields: Vec<Field<'a>>,
    pub name: &'a str,
    pub data_type: u64,
    pub dims: Vec<u64>,
    pub external: Option<External>,
}

impl<'a> Tensor<'a> {
    pub fn parse(bytes: &'a [u8]) -> Result<Self, String> {
        let fields = wire::fields(bytes)?;
        let name = fields
            .iter()
            .find(|f| f.number == NAME)
            .and_then(Field::text)
            .unwrap_or("");
        let data_type = fields
            .iter()
            .find(|f| f.number == DATA_TYPE)
            .and_then(Field::varint)
            .unwrap_or(0);
        let dims = wire::repeated_varints(&fields, DIMS)?;
        let external = if fields
            .iter()
            .any(|f| f.number == DATA_LOCATION && f.varint() == Some(1))
        {
            Some(external(&fields, name)?)
        } else {
            None
        };
        Ok(Tensor {
            fields,
            name,
            data_type,
            dims,
            external,
        })
    }

    /// Values in the tensor.
    pub fn values(&self) -> u64 {
        self.dims.iter().product()
    }

    /// The values of a float tensor; external data is read from `folder`.
    pub fn floats(&self, folder: &Path) -> Result<Vec<f32>, String> {
        let expected =
            usize::try_from(self.values()).map_err(|_| "tensor too large".to_string())?;
        let bytes: Vec<u8> = if let Some(ext) = &self.external {
            read_external(folder, ext, expected as u64 * 4, self.name)?
        } else if let Some(raw) = self.fields.iter().find(|f| f.number == RAW_DATA) {
            raw.bytes().unwrap_or_default().to_vec()
        } else {
            let mut out = Vec::with_capacity(expected * 4);
            for field in self.fields.iter().filter(|f| f.number == FLOAT_DATA) {
                match field.value {
                    Value::Bytes(packed) => out.extend_from_slice(packed),
                    Value::Fixed32(v) => out.extend_from_slice(&v.to_le_bytes()),
                    _ => return Err(format!("tensor `{}`: float_data is not floats", self.name)),
                }
            }
            out
        };
        if bytes.len() != expected * 4 {
            return Err(format!(
                "tensor `{}` has {} bytes of data for {expected} floats",
                self.name,
                bytes.len()
            ));
        }
        Ok(bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
            .collect())
    }

    /// The first value of a small inline float tensor (float, float16 or double), as f32.
    pub fn scalar(&self) -> Option<f32> {
        if self.external.is_some() {
            return None;
        }
        let raw = self
            .fields
            .iter()
            .find(|f| f.number == RAW_DATA)
            .and_then(Field::bytes);
        match (self.data_type, raw) {
            (FLOAT, _) => self.floats(Path::new("")).ok()?.first().copied(),
            (FLOAT16, Some(raw)) => {
                let bits = u16::from_le_bytes(raw.get(..2)?.try_into().ok()?);
                Some(half::f16::from_bits(bits).to_f32())
            }
            // float16 values listed in `int32_data`, one per entry.
            (FLOAT16, None) => {
                let bits = *wire::repeated_varints(&self.fields, INT32_DATA)
                    .ok()?
                    .first()?;
                Some(half::f16::from_bits(bits as u16).to_f32())
            }
            (DOUBLE, Some(raw)) => Some(f64::from_le_bytes(raw.get(..8)?.try_into().ok()?) as f32),
            _ => None,
        }
    }

    /// The values of a small inline integer tensor (int64 or int32: shapes, indices, axes);
    /// `None` for other types and external data.
    pub fn ints(&self) -> Option<Vec<i64>> {
        let (width, listed) = match self.data_type {
            INT64 => (8, INT64_DATA),
            INT32 => (4, INT32_DATA),
            _ => return None,
        };
        if self.external.is_some() {
            return None;
        }
        let values = match self.fields.iter().find(|f| f.number == RAW_DATA) {
            Some(raw) => raw
                .bytes()?
                .chunks_exact(width)
                .map(|c| match c.try_into() {
                    Ok(eight) => i64::from_le_bytes(eight),
                    Err(_) => i64::from(i32::from_le_bytes(c.try_into().expect("4 bytes"))),
                })
                .collect(),
            // Negative numbers are ten-byte varints of their two's complement (int32 too).
            None => wire::repeated_varints(&self.fields, listed)
                .ok()?
                .into_iter()
                .map(|v| {
                    if width == 4 {
                        i64::from(v as i32)
                    } else {
                        v as i64
                    }
                })
                .collect::<Vec<i64>>(),
        };
        (values.len() as u64 == self.values()).then_some(values)
    }
}

fn external(fields: &[Field<'_>], name: &str) -> Result<External, String> {
    let (mut location, mut offset, mut length) = (None, 0, None);
    for entry in fields.iter().filter(|f| f.number == EXTERNAL_DATA) {
        let entry = wire::fields(entry.bytes().unwrap_or_default())?;
        let text = |n: u32| entry.iter().find(|f| f.number == n).and_then(Field::text);
        let (key, value) = (text(1).unwrap_or(""), text(2).unwrap_or(""));
        let number = || {
            value
                .parse::<u64>()
                .map_err(|_| format!("tensor `{name}`: external {key} `{value}` is not a number"))
        };
        match key {
            "location" => location = Some(value.to_string()),
            "offset" => offset = number()?,
            "length" => length = Some(number()?),
            _ => {}
        }
    }
    let location =
        location.ok_or_else(|| format!("tensor `{name}` is external but names no location"))?;
    if Path::new(&location).is_absolute() || location.split('/').any(|p| p == "..") {
        return Err(format!(
            "tensor `{name}`: external location `{location}` leaves the model's folder"
        ));
    }
    Ok(External {
        location,
        offset,
        length,
    })
}

/// An external tensor's bytes (`expected` of them), read from its file beside the model.
pub fn read_external(
    folder: &Path,
    ext: &External,
    expected: u64,
    name: &str,
) -> Result<Vec<u8>, String> {
    let length = ext.length.unwrap_or(expected);
    if length != expected {
        return Err(format!(
            "tensor `{name}`: external length {length}, expected {expected} bytes"
        ));
    }
    let path = folder.join(&ext.location);
    let file = std::fs::File::open(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut bytes = vec![0u8; usize::try_from(length).map_err(|_| "tensor too large".to_string())?];
    file.read_exact_at(&mut bytes, ext.offset).map_err(|e| {
        format!(
            "{}: tensor `{name}` at offset {}: {e}",
            path.display(),
            ext.offset
        )
    })?;
    Ok(bytes)
}

/// A new data file being written beside the rewritten model.
pub struct DataFile<W: Write> {
    pub name: String,
    pub out: W,
    pub written: u64,
}

impl<W: Write> DataFile<W> {
    fn append(&mut self, bytes: &[u8]) -> Result<u64, String> {
        // 64-byte alignment, as ONNX's own writer is free to choose; readers only follow offsets.
        let pad = (64 - self.written % 64) % 64;
        self.out
            .write_all(&vec![0u8; pad as usize])
            .and_then(|_| self.out.write_all(bytes))
            .map_err(|e| format!("{}: {e}", self.name))?;
        let offset = self.written + pad;
        self.written = offset + bytes.len() as u64;
        Ok(offset)
    }
}

fn put_external<W: Write>(
    out: &mut Vec<u8>,
    data: &mut DataFile<W>,
    bytes: &[u8],
) -> Result<(), String> {
    let offset = data.append(bytes)?;
    put_location(out, &data.name, offset, bytes.len() as u64);
    Ok(())
}

/// Marks a tensor's bytes as `length` bytes at `offset` in the file `location` (beside the
/// model): its external-data entries and data location.
pub fn put_location(out: &mut Vec<u8>, location: &str, offset: u64, length: u64) {
    for (key, value) in [
        ("location", location.to_string()),
        ("offset", offset.to_string()),
        ("length", length.to_string()),
    ] {
        let mut entry = Vec::new();
        wire::put_bytes(&mut entry, 1, key.as_bytes());
        wire::put_bytes(&mut entry, 2, value.as_bytes());
        wire::put_bytes(out, EXTERNAL_DATA, &entry);
    }
    wire::put_varint_field(out, DATA_LOCATION, 1);
}

/// A new tensor: inline, or its bytes appended to `data` when given.
pub fn encode<W: Write>(
    name: &str,
    data_type: u64,
    dims: &[u64],
    bytes: &[u8],
    data: Option<&mut DataFile<W>>,
) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    dims.iter()
        .for_each(|d| wire::put_varint_field(&mut out, DIMS, *d));
    wire::put_varint_field(&mut out, DATA_TYPE, data_type);
    wire::put_bytes(&mut out, NAME, name.as_bytes());
    match data {
        Some(data) => put_external(&mut out, data, bytes)?,
        None => wire::put_bytes(&mut out, RAW_DATA, bytes),
    }
    Ok(out)
}

/// An existing external tensor, its bytes copied into `data` and its location rewritten.
pub fn relocate<W: Write>(
    tensor: &Tensor<'_>,
    folder: &Path,
    data: &mut DataFile<W>,
) -> Result<Vec<u8>, String> {
    let ext = tensor.external.as_ref().expect("an external tensor");
    let size = element_size(tensor.data_type)
        .map(|s| s * tensor.values())
        .or(ext.length)
        .ok_or_else(|| format!("tensor `{}`: external data of unknown length", tensor.name))?;
    let bytes = read_external(folder, ext, size, tensor.name)?;
    let mut out = Vec::new();
    tensor
        .fields
        .iter()
        .filter(|f| f.number != EXTERNAL_DATA && f.number != DATA_LOCATION)
        .for_each(|f| wire::put(&mut out, f));
    put_external(&mut out, data, &bytes)?;
    Ok(out)
}

/// Bytes per element of the fixed-size ONNX element types.
fn element_size(data_type: u64) -> Option<u64> {
    match data_type {
        1 | 6 | 12 => Some(4),      // float, int32, uint32
        2 | 3 | 9 => Some(1),       // uint8, int8, bool
        4 | 5 | 10 | 16 => Some(2), // uint16, int16, float16, bfloat16
        7 | 11 | 13 => Some(8),     // int64, double, uint64
        _ => None,
    }
}
