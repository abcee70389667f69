//! Reading input files the user points discl at (images, feedback, manifests) so that no input
//! can hang a run or exhaust its memory: only regular files are read (a FIFO, a device such as
//! `/dev/zero` behind a symlink, or a socket is refused before a byte is read), a whole-file
//! read has a byte limit, and lines are read one at a time with a length limit.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

/// The byte limit of reads that follow a source's checks (a model reading a sample's image):
/// the source already refused what is too large, so this only bounds a file swapped since.
pub const MAX_CHECKED_INPUT_BYTES: u64 = 1 << 32;

/// Why an input file was not read. The messages name no path: the error records that carry
/// them name the file in their location.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InputFileError {
    /// The file could not be opened or read.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The path is not a regular file; `kind` says what it is.
    #[error("not a regular file ({kind}); only regular files are read")]
    NotRegular { kind: &'static str },
    /// The file holds more bytes than this kind of input may.
    #[error("{size} bytes, over the limit of {limit} bytes")]
    TooLarge { size: u64, limit: u64 },
}

/// Why one line of a file was not read.
#[derive(Clone, Debug, thiserror::Error, PartialEq)]
#[non_exhaustive]
pub enum LineError {
    /// The line is longer than the limit; it was skipped without being kept in memory.
    #[error("line longer than {limit} bytes")]
    TooLong { limit: usize },
    /// The line's bytes are not UTF-8.
    #[error("line is not valid UTF-8 (byte {at})")]
    NotUtf8 { at: usize },
}

/// What a path (symlinks followed) is, in words, unless it is a regular file.
fn irregular(kind: std::fs::FileType) -> Option<&'static str> {
    if kind.is_file() {
        None
    } else if kind.is_fifo() {
        Some("a FIFO")
    } else if kind.is_char_device() {
        Some("a character device")
    } else if kind.is_block_device() {
        Some("a block device")
    } else if kind.is_socket() {
        Some("a socket")
    } else if kind.is_dir() {
        Some("a folder")
    } else {
        Some("not a file")
    }
}

/// Opens `path` for reading if it is a regular file. The type is checked before opening (a
/// socket cannot be opened) and again on the open handle, which is opened non-blocking so a
/// FIFO swapped in between cannot block.
pub fn open_regular(path: &Path) -> Result<File, InputFileError> {
    if let Some(kind) = irregular(std::fs::metadata(path)?.file_type()) {
        return Err(InputFileError::NotRegular { kind });
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    if let Some(kind) = irregular(file.metadata()?.file_type()) {
        return Err(InputFileError::NotRegular { kind });
    }
    Ok(file)
}

/// Reads a regular file whole, refusing one of more than `limit` bytes.
pub fn read_regular(path: &Path, limit: u64) -> Result<Vec<u8>, InputFileError> {
    let file = open_regular(path)?;
    let size = file.metadata()?.len();
    if size > limit {
        return Err(InputFileError::TooLarge { size, limit });
    }
    let mut bytes = Vec::with_capacity(size as usize);
    // A file that grows while it is read still stops one byte past the limit.
    file.take(limit.saturating_add(1)).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        let size = bytes.len() as u64;
        return Err(InputFileError::TooLarge { size, limit });
    }
    Ok(bytes)
}

/// The lines of a regular file: (1-based line number, the line or why it was not read).
/// Blank lines are kept (callers skip them); an I/O error ends the iteration with that error.
pub fn regular_lines(path: &Path, max_line: usize) -> Result<Lines, InputFileError> {
    Ok(Lines {
        reader: BufReader::new(open_regular(path)?),
        max_line,
        number: 0,
        done: false,
    })
}

/// See [`regular_lines`].
pub struct Lines {
    reader: BufReader<File>,
    max_line: usize,
    number: usize,
    done: bool,
}

/// One item of [`Lines`]: a line's number and its text, or why it was not read.
pub type NumberedLine = (usize, Result<String, LineError>);

impl Lines {
    /// Reads up to the next newline, keeping at most `max_line` bytes: `None` at the end,
    /// `Some(None)` for a line that was too long (the rest of it is read and dropped).
    fn next_bytes(&mut self) -> std::io::Result<Option<Option<Vec<u8>>>> {
        let mut line = Vec::new();
        let mut too_long = false;
        let mut any = false;
        loop {
            let chunk = self.reader.fill_buf()?;
            if chunk.is_empty() {
                return Ok(any.then_some((!too_long).then_some(line)));
            }
            any = true;
            let (used, end) = match chunk.iter().position(|b| *b == b'\n') {
                Some(at) => (at + 1, true),
                None => (chunk.len(), false),
            };
            let content = &chunk[..if end { used - 1 } else { used }];
            if !too_long && line.len() + content.len() > self.max_line {
                too_long = true;
                line = Vec::new();
            }
            if !too_long {
                line.extend_from_slice(content);
            }
            self.reader.consume(used);
            if end {
                return Ok(Some((!too_long).then_some(line)));
            }
        }
    }
}

impl Iterator for Lines {
    type Item = Result<NumberedLine, std::io::Error>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let read = match self.next_bytes() {
            Ok(read) => read?,
            Err(e) => {
                self.done = true;
                return Some(Err(e));
            }
        };
        self.number += 1;
        let line = match read {
            None => Err(LineError::TooLong {
                limit: self.max_line,
            }),
            Some(mut bytes) => {
                if bytes.last() == Some(&b'\r') {
                    bytes.pop();
                }
                String::from_utf8(bytes).map_err(|e| LineError::NotUtf8 {
                    at: e.utf8_error().valid_up_to(),
                })
            }
        };
        Some(Ok((self.number, line)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_what_is_not_a_regular_file_without_reading_it() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo.png");
        let status = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(status.success());
        let zero = dir.path().join("zero.png");
        std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
        let socket = dir.path().join("socket.png");
        let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
        for (path, kind) in [
            (&fifo, "a FIFO"),
            (&zero, "a character device"),
            (&socket, "a socket"),
            (&dir.path().to_path_buf(), "a folder"),
        ] {
            let error = read_regular(path, 1 << 20).unwrap_err().to_string();
            assert_eq!(
                error,
                format!("not a regular file ({kind}); only regular files are read")
            );
            assert!(regular_lines(path, 10).is_err());
        }
    }

    #[test]
    fn a_whole_file_read_has_a_limit() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, b"0123456789").unwrap();
        assert_eq!(read_regular(&file, 10).unwrap(), b"0123456789");
        assert_eq!(
            read_regular(&file, 9).unwrap_err().to_string(),
            "10 bytes, over the limit of 9 bytes"
        );
    }

    #[test]
    fn lines_are_numbered_and_bad_ones_reported_alone() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        let mut text = b"one\r\n".to_vec();
        text.extend(b"tw\xffo\n");
        text.extend(vec![b'x'; 25]);
        text.extend(b"\n\nlast");
        std::fs::write(&file, &text).unwrap();
        let lines: Vec<NumberedLine> = regular_lines(&file, 8)
            .unwrap()
            .map(|l| l.unwrap())
            .collect();
        assert_eq!(
            lines,
            vec![
                (1, Ok("one".into())),
                (2, Err(LineError::NotUtf8 { at: 2 })),
                (3, Err(LineError::TooLong { limit: 8 })),
                (4, Ok(String::new())),
                (5, Ok("last".into())),
            ]
        );
        assert_eq!(
            lines[1].1.clone().unwrap_err().to_string(),
            "line is not valid UTF-8 (byte 2)"
        );
    }
}
