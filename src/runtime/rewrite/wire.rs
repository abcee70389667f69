//! Protocol Buffers' wire format, just enough to edit an ONNX file without a schema compiler:
//! a message is read as its fields in order (byte fields borrowed, never copied) and written
//! back field by field, so every field discl does not touch survives unchanged.

/// One field's value as the wire carries it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Value<'a> {
    Varint(u64),
    Fixed64(u64),
    /// Strings, bytes, embedded messages and packed repeated numbers.
    Bytes(&'a [u8]),
    Fixed32(u32),
}

/// One field of a message.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Field<'a> {
    pub number: u32,
    pub value: Value<'a>,
}

impl<'a> Field<'a> {
    /// The field's bytes, when it is length-delimited.
    pub fn bytes(&self) -> Option<&'a [u8]> {
        match self.value {
            Value::Bytes(b) => Some(b),
            _ => None,
        }
    }

    /// The field as text (strings are UTF-8 in ONNX files).
    pub fn text(&self) -> Option<&'a str> {
        self.bytes().and_then(|b| std::str::from_utf8(b).ok())
    }

    /// The field as an integer, when it is a varint.
    pub fn varint(&self) -> Option<u64> {
        match self.value {
            Value::Varint(v) => Some(v),
            _ => None,
        }
    }
}

fn read_varint(bytes: &[u8], at: &mut usize) -> Result<u64, String> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *bytes
            .get(*at)
            .ok_or_else(|| format!("a varint runs past the end at byte {at}"))?;
        *at += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(format!("a varint longer than 10 bytes ends at byte {at}"))
}

fn take<'a>(bytes: &'a [u8], at: &mut usize, len: usize) -> Result<&'a [u8], String> {
    let end = at
        .checked_add(len)
        .filter(|end| *end <= bytes.len())
        .ok_or_else(|| {
            format!(
                "a field of {len} bytes at byte {at} runs past the end ({})",
                bytes.len()
            )
        })?;
    let out = &bytes[*at..end];
    *at = end;
    Ok(out)
}

/// The fields of one message, in the order they appear.
pub fn fields(bytes: &[u8]) -> Result<Vec<Field<'_>>, String> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let tag = read_varint(bytes, &mut at)?;
        let number =
            u32::try_from(tag >> 3).map_err(|_| format!("field number {} too large", tag >> 3))?;
        let value = match tag & 7 {
            0 => Value::Varint(read_varint(bytes, &mut at)?),
            1 => Value::Fixed64(u64::from_le_bytes(
                take(bytes, &mut at, 8)?.try_into().expect("8"),
            )),
            2 => {
                let len = read_varint(bytes, &mut at)?;
                let len =
                    usize::try_from(len).map_err(|_| format!("field length {len} too large"))?;
                Value::Bytes(take(bytes, &mut at, len)?)
            }
            5 => Value::Fixed32(u32::from_le_bytes(
                take(bytes, &mut at, 4)?.try_into().expect("4"),
            )),
            other => {
                return Err(format!(
                    "wire type {other} (field {number}) is not one ONNX uses"
                ))
            }
        };
        out.push(Field { number, value });
    }
    Ok(out)
}

/// The integers of a repeated integer field, packed or not (`dims`, `int64_data`).
pub fn repeated_varints(all: &[Field<'_>], number: u32) -> Result<Vec<u64>, String> {
    let mut out = Vec::new();
    for field in all.iter().filter(|f| f.number == number) {
        match field.value {
            Value::Varint(v) => out.push(v),
            Value::Bytes(packed) => {
                let mut at = 0;
                while at < packed.len() {
                    out.push(read_varint(packed, &mut at)?);
                }
            }
            _ => return Err(format!("field {number} is not a list of integers")),
        }
    }
    Ok(out)
}

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// Appends one field.
pub fn put(out: &mut Vec<u8>, field: &Field<'_>) {
    let wire = match field.value {
        Value::Varint(_) => 0,
        Value::Fixed64(_) => 1,
        Value::Bytes(_) => 2,
        Value::Fixed32(_) => 5,
    };
    put_varint(out, (u64::from(field.number) << 3) | wire);
    match field.value {
        Value::Varint(v) => put_varint(out, v),
        Value::Fixed64(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::Bytes(b) => {
            put_varint(out, b.len() as u64);
            out.extend_from_slice(b);
        }
        Value::Fixed32(v) => out.extend_from_slice(&v.to_le_bytes()),
    }
}

/// Appends a length-delimited field.
pub fn put_bytes(out: &mut Vec<u8>, number: u32, bytes: &[u8]) {
    put(
        out,
        &Field {
            number,
            value: Value::Bytes(bytes),
        },
    );
}

/// Appends a varint field.
pub fn put_varint_field(out: &mut Vec<u8>, number: u32, value: u64) {
    put(
        out,
        &Field {
            number,
            value: Value::Varint(value),
        },
    );
}

/// Appends `all` to `out` in order, with every field numbered `number` holding `bytes` instead.
pub fn put_replacing(out: &mut Vec<u8>, all: &[Field<'_>], number: u32, bytes: &[u8]) {
    for field in all {
        match field.number {
            n if n == number => put_bytes(out, number, bytes),
            _ => put(out, field),
        }
    }
}

/// A message made of `all`, in order.
pub fn message(all: &[Field<'_>]) -> Vec<u8> {
    let mut out = Vec::new();
    all.iter().for_each(|f| put(&mut out, f));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_round_trip_byte_for_byte() {
        let mut bytes = Vec::new();
        put_varint_field(&mut bytes, 1, 300);
        put_bytes(&mut bytes, 7, b"graph");
        put(
            &mut bytes,
            &Field {
                number: 3,
                value: Value::Fixed32(0x3f80_0000),
            },
        );
        put(
            &mut bytes,
            &Field {
                number: 20,
                value: Value::Fixed64(u64::MAX),
            },
        );
        put_varint_field(&mut bytes, 2, u64::MAX);
        let parsed = fields(&bytes).unwrap();
        assert_eq!(parsed.len(), 5);
        assert_eq!(parsed[0].varint(), Some(300));
        assert_eq!(parsed[1].text(), Some("graph"));
        assert_eq!(parsed[4].varint(), Some(u64::MAX));
        assert_eq!(message(&parsed), bytes);
    }

    #[test]
    fn packed_and_unpacked_integers_read_alike() {
        let mut packed = Vec::new();
        [2u64, 160, 768]
            .iter()
            .for_each(|v| put_varint(&mut packed, *v));
        let mut bytes = Vec::new();
        put_bytes(&mut bytes, 1, &packed);
        put_varint_field(&mut bytes, 1, 5);
        assert_eq!(
            repeated_varints(&fields(&bytes).unwrap(), 1).unwrap(),
            [2, 160, 768, 5]
        );
    }

    #[test]
    fn truncated_input_is_an_error_not_a_panic() {
        let mut bytes = Vec::new();
        put_bytes(&mut bytes, 7, b"a longer field");
        for cut in 1..bytes.len() {
            assert!(fields(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        assert!(fields(&[0x0b]).unwrap_err().contains("wire type 3"));
    }
}
