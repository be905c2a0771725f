//! RecordIO framing of the Mesos v1 streaming responses:
//! `<decimal byte length>\n<record bytes>`, records back to back.

use crate::ProtoError;

/// Longest length line accepted; a u64 has at most 20 digits.
const MAX_LENGTH_DIGITS: usize = 20;

/// Frames one record.
pub fn encode(record: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(record.len() + 12);
    out.extend_from_slice(record.len().to_string().as_bytes());
    out.push(b'\n');
    out.extend_from_slice(record);
    out
}

/// Incremental RecordIO decoder: feed it bytes as they arrive, in chunks of
/// any size, and take out whole records.
#[derive(Debug)]
pub struct Decoder {
    buffer: Vec<u8>,
    /// Start of the unconsumed part of `buffer`.
    position: usize,
    /// Length of the record being read, once its length line is complete.
    pending: Option<usize>,
    max_record_size: usize,
    /// Set after an error: the stream cannot be resynchronised.
    failed: bool,
}

impl Decoder {
    /// A decoder that rejects records longer than `max_record_size` bytes.
    pub fn new(max_record_size: usize) -> Decoder {
        Decoder {
            buffer: Vec::new(),
            position: 0,
            pending: None,
            max_record_size,
            failed: false,
        }
    }

    /// Appends received bytes.
    pub fn feed(&mut self, data: &[u8]) {
        // Drop what was consumed before growing, so memory stays bounded by
        // one record plus one chunk.
        if self.position > 0 && self.position == self.buffer.len() {
            self.buffer.clear();
            self.position = 0;
        } else if self.position > 4096 && self.position * 2 > self.buffer.len() {
            self.buffer.drain(..self.position);
            self.position = 0;
        }
        self.buffer.extend_from_slice(data);
    }

    /// The next complete record, `Ok(None)` if more bytes are needed. After an
    /// error every later call fails too: a broken length desynchronises the
    /// stream for good.
    pub fn next_record(&mut self) -> Result<Option<Vec<u8>>, ProtoError> {
        if self.failed {
            return Err(ProtoError::RecordIoLength(
                "stream already failed".to_owned(),
            ));
        }
        let result = self.try_next();
        if result.is_err() {
            self.failed = true;
        }
        result
    }

    /// Whether bytes of an unfinished record (or length line) are buffered;
    /// a stream that ends while this is true was truncated.
    pub fn has_partial(&self) -> bool {
        self.pending.is_some() || self.position < self.buffer.len()
    }

    fn try_next(&mut self) -> Result<Option<Vec<u8>>, ProtoError> {
        let length = match self.pending {
            Some(length) => length,
            None => {
                let unread = &self.buffer[self.position..];
                let Some(newline) = unread.iter().position(|&b| b == b'\n') else {
                    if unread.len() > MAX_LENGTH_DIGITS || !unread.iter().all(u8::is_ascii_digit) {
                        return Err(ProtoError::RecordIoLength(
                            String::from_utf8_lossy(unread).into_owned(),
                        ));
                    }
                    return Ok(None);
                };
                let line = &unread[..newline];
                let length = parse_length(line)?;
                if length > self.max_record_size {
                    return Err(ProtoError::RecordIoTooLarge {
                        size: length,
                        max: self.max_record_size,
                    });
                }
                self.position += newline + 1;
                self.pending = Some(length);
                length
            }
        };
        if self.buffer.len() - self.position < length {
            return Ok(None);
        }
        let record = self.buffer[self.position..self.position + length].to_vec();
        self.position += length;
        self.pending = None;
        Ok(Some(record))
    }
}

fn parse_length(line: &[u8]) -> Result<usize, ProtoError> {
    let invalid = || ProtoError::RecordIoLength(String::from_utf8_lossy(line).into_owned());
    if line.is_empty() || line.len() > MAX_LENGTH_DIGITS || !line.iter().all(u8::is_ascii_digit) {
        return Err(invalid());
    }
    // All digits, so the only failure left is overflow.
    std::str::from_utf8(line)
        .ok()
        .and_then(|s| s.parse::<usize>().ok())
        .ok_or_else(invalid)
}
