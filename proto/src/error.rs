//! The crate's error type.

/// Why a message could not be decoded or a stream could not be framed.
#[derive(Debug, thiserror::Error)]
pub enum ProtoError {
    /// The body is not valid JSON, or does not match the message's schema.
    #[error("invalid JSON for {message}: {reason}")]
    Json {
        /// Full name of the message being decoded.
        message: String,
        /// What was wrong.
        reason: String,
    },
    /// The body is not a valid protobuf encoding of the message.
    #[error("invalid protobuf for {message}: {source}")]
    Protobuf {
        /// Full name of the message being decoded.
        message: String,
        /// The decoder's error.
        #[source]
        source: prost::DecodeError,
    },
    /// A `required` field is absent.
    #[error("missing required field '{field}' in {message}")]
    MissingRequired {
        /// Full name of the message that lacks the field.
        message: String,
        /// Path of the field from the top-level message, e.g. `subscribe.framework_info.user`.
        field: String,
    },
    /// A RecordIO length line is not a decimal number.
    #[error("invalid recordio length line: {0:?}")]
    RecordIoLength(String),
    /// A RecordIO record is larger than the decoder accepts.
    #[error("recordio record of {size} bytes exceeds the limit of {max} bytes")]
    RecordIoTooLarge {
        /// Announced size of the record.
        size: usize,
        /// The decoder's limit.
        max: usize,
    },
}
