//! Content types of the Mesos HTTP APIs and decoding by content type.

use prost_reflect::{DynamicMessage, ReflectMessage};

use crate::{json, ProtoError};

/// A body encoding the Mesos v1 HTTP APIs accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ContentType {
    /// `application/json`, in Mesos's JSON mapping.
    Json,
    /// `application/x-protobuf`.
    Protobuf,
}

impl ContentType {
    /// Parses a `Content-Type` or `Accept` value such as
    /// `application/json; charset=utf-8`; `None` for anything else.
    pub fn from_header(value: &str) -> Option<ContentType> {
        let essence = value.split(';').next().unwrap_or_default().trim();
        if essence.eq_ignore_ascii_case("application/json") {
            Some(ContentType::Json)
        } else if essence.eq_ignore_ascii_case("application/x-protobuf") {
            Some(ContentType::Protobuf)
        } else {
            None
        }
    }

    /// The MIME type to put in a `Content-Type` header.
    pub fn mime(self) -> &'static str {
        match self {
            ContentType::Json => "application/json",
            ContentType::Protobuf => "application/x-protobuf",
        }
    }
}

impl std::fmt::Display for ContentType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.mime())
    }
}

/// Encodes `message` in the given content type.
pub fn encode<M: ReflectMessage>(message: &M, content_type: ContentType) -> Vec<u8> {
    match content_type {
        ContentType::Json => json::to_json_bytes(message),
        ContentType::Protobuf => message.encode_to_vec(),
    }
}

/// Decodes a message in the given content type, checking `required` fields.
pub fn decode<M: ReflectMessage + Default>(
    body: &[u8],
    content_type: ContentType,
) -> Result<M, ProtoError> {
    match content_type {
        ContentType::Json => json::from_json(body),
        ContentType::Protobuf => from_protobuf(body),
    }
}

/// Decodes protobuf bytes, failing when a `required` field is absent (prost
/// alone would fill it with a default).
pub fn from_protobuf<M: ReflectMessage + Default>(bytes: &[u8]) -> Result<M, ProtoError> {
    let desc = M::default().descriptor();
    let protobuf_error = |source| ProtoError::Protobuf {
        message: desc.full_name().to_owned(),
        source,
    };
    // Decode through the descriptor first: the typed message can no longer
    // tell an absent required field from a default one.
    let dynamic = DynamicMessage::decode(desc.clone(), bytes).map_err(protobuf_error)?;
    json::check_required(&dynamic)?;
    M::decode(bytes).map_err(protobuf_error)
}
