//! The file as a buffer that grows to hold the record being parsed, the faults a walk can end
//! with, and bounds-checked integer reads in either byte order. Every other module reads the
//! file only through these.

use std::io::{self, Read};
use std::path::Path;

use crate::PcapFileError;

/// How much is read from the file at a time.
pub(crate) const READ_CHUNK: usize = 64 << 10;

/// An error before the file's path and packet count are attached.
#[derive(Debug)]
pub(crate) enum Fault {
    NotPcap,
    UnsupportedLinkType(u32),
    Truncated,
    Damaged(String),
    Io(io::Error),
}

impl Fault {
    pub(crate) fn into_error(self, path: &Path, packets: u64) -> PcapFileError {
        let path = path.to_path_buf();
        match self {
            Fault::NotPcap => PcapFileError::NotPcap { path },
            Fault::UnsupportedLinkType(link_type) => {
                PcapFileError::UnsupportedLinkType { path, link_type }
            }
            Fault::Truncated => PcapFileError::Truncated { path, packets },
            Fault::Damaged(detail) => PcapFileError::Damaged {
                path,
                packets,
                detail,
            },
            Fault::Io(error) => PcapFileError::Io { path, error },
        }
    }
}

impl From<io::Error> for Fault {
    fn from(error: io::Error) -> Self {
        Fault::Io(error)
    }
}

pub(crate) fn damaged(detail: impl Into<String>) -> Fault {
    Fault::Damaged(detail.into())
}

/// The file, read in chunks into a buffer that holds at least the record being parsed.
pub(crate) struct Input {
    pub(crate) reader: Box<dyn Read + Send>,
    pub(crate) buf: Vec<u8>,
    /// Bytes of `buf` already parsed.
    pub(crate) start: usize,
    /// File offset of `buf[0]`.
    pub(crate) base: u64,
}

impl Input {
    pub(crate) fn new(reader: Box<dyn Read + Send>) -> Self {
        Input {
            reader,
            buf: Vec::new(),
            start: 0,
            base: 0,
        }
    }

    /// The bytes read but not yet parsed.
    pub(crate) fn available(&self) -> &[u8] {
        self.buf.get(self.start..).unwrap_or_default()
    }

    pub(crate) fn consume(&mut self, len: usize) {
        self.start = self.start.saturating_add(len).min(self.buf.len());
    }

    /// File offset of the first unparsed byte.
    pub(crate) fn offset(&self) -> u64 {
        self.base + self.start as u64
    }

    /// Reads until at least `need` unparsed bytes are buffered; `false` if the file ends first.
    /// Only this moves bytes within the buffer, so ranges into it stay valid until it is called.
    pub(crate) fn ensure(&mut self, need: usize) -> io::Result<bool> {
        while self.available().len() < need {
            if self.start > 0 {
                self.buf.drain(..self.start);
                self.base += self.start as u64;
                self.start = 0;
            }
            let filled = self.buf.len();
            self.buf.resize(filled + READ_CHUNK.max(need - filled), 0);
            let spare = self.buf.get_mut(filled..).unwrap_or_default();
            let read = read_retrying(&mut self.reader, spare);
            self.buf
                .truncate(filled + read.as_ref().map_or(0, |&len| len));
            if read? == 0 {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

pub(crate) fn read_retrying(reader: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match reader.read(buf) {
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            result => return result,
        }
    }
}

pub(crate) fn read_u16(bytes: &[u8], at: usize, big_endian: bool) -> Option<u16> {
    let raw: [u8; 2] = bytes.get(at..at.checked_add(2)?)?.try_into().ok()?;
    Some(if big_endian {
        u16::from_be_bytes(raw)
    } else {
        u16::from_le_bytes(raw)
    })
}

pub(crate) fn read_u32(bytes: &[u8], at: usize, big_endian: bool) -> Option<u32> {
    let raw: [u8; 4] = bytes.get(at..at.checked_add(4)?)?.try_into().ok()?;
    Some(if big_endian {
        u32::from_be_bytes(raw)
    } else {
        u32::from_le_bytes(raw)
    })
}

pub(crate) fn read_u64(bytes: &[u8], at: usize, big_endian: bool) -> Option<u64> {
    let raw: [u8; 8] = bytes.get(at..at.checked_add(8)?)?.try_into().ok()?;
    Some(if big_endian {
        u64::from_be_bytes(raw)
    } else {
        u64::from_le_bytes(raw)
    })
}
