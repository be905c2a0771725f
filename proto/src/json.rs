//! Mesos's JSON mapping of protobuf messages.
//!
//! Mesos (stout's `jsonify` and `protobuf::parse`) differs from the proto3
//! canonical mapping: field names are the proto names (`framework_id`, not
//! `frameworkId`), 64-bit integers are plain JSON numbers, and unknown
//! fields are ignored on input. Output is compact and ASCII-only because some
//! clients slice RecordIO streams by characters and split them on newlines.

use std::io::{self, Write};

use prost_reflect::{
    Cardinality, DeserializeOptions, DynamicMessage, Kind, MessageDescriptor, ReflectMessage,
    SerializeOptions, Value,
};
use serde::Serialize;

use crate::ProtoError;

const SERIALIZE: SerializeOptions = SerializeOptions::new()
    .use_proto_field_name(true)
    .stringify_64_bit_integers(false)
    .use_enum_numbers(false)
    .skip_default_fields(true);

const DESERIALIZE: DeserializeOptions = DeserializeOptions::new().deny_unknown_fields(false);

/// Encodes `message` as compact, ASCII-only JSON in Mesos's mapping.
pub fn to_json<M: ReflectMessage>(message: &M) -> String {
    let bytes = to_json_bytes(message);
    // The formatter writes ASCII only, so the bytes are valid UTF-8.
    String::from_utf8(bytes).expect("ascii json is utf-8")
}

/// Like [`to_json`], as bytes ready for an HTTP body.
pub fn to_json_bytes<M: ReflectMessage>(message: &M) -> Vec<u8> {
    let dynamic = message.transcode_to_dynamic();
    let mut out = Vec::with_capacity(128);
    let mut serializer = serde_json::Serializer::with_formatter(&mut out, AsciiFormatter);
    dynamic
        .serialize_with_options(&mut serializer, &SERIALIZE)
        .expect("a message always serializes to json");
    out
}

/// Encodes `message` as a [`serde_json::Value`] in Mesos's mapping, e.g. to
/// embed it in a larger JSON document such as `/state`.
pub fn to_json_value<M: ReflectMessage>(message: &M) -> serde_json::Value {
    let dynamic = message.transcode_to_dynamic();
    dynamic
        .serialize_with_options(serde_json::value::Serializer, &SERIALIZE)
        .expect("a message always serializes to a json value")
}

/// Decodes a message from JSON in Mesos's mapping.
///
/// Unknown fields (and unknown enum names) are ignored, as Mesos does; 64-bit
/// integers may be numbers or strings; bytes are base64. Malformed JSON and
/// absent `required` fields are errors.
pub fn from_json<M: ReflectMessage + Default>(json: &[u8]) -> Result<M, ProtoError> {
    let desc = M::default().descriptor();
    let dynamic = dynamic_from_json(&desc, json)?;
    check_required(&dynamic)?;
    dynamic
        .transcode_to::<M>()
        .map_err(|source| ProtoError::Protobuf {
            message: desc.full_name().to_owned(),
            source,
        })
}

/// Decodes a message from a [`serde_json::Value`], with the rules of [`from_json`].
pub fn from_json_value<M: ReflectMessage + Default>(
    value: &serde_json::Value,
) -> Result<M, ProtoError> {
    // Re-serializing is cheap next to a network round trip and keeps one
    // decoding path.
    let bytes = serde_json::to_vec(value).expect("a json value always serializes");
    from_json(&bytes)
}

fn dynamic_from_json(desc: &MessageDescriptor, json: &[u8]) -> Result<DynamicMessage, ProtoError> {
    let json_error = |reason: String| ProtoError::Json {
        message: desc.full_name().to_owned(),
        reason,
    };
    let mut deserializer = serde_json::Deserializer::from_slice(json);
    let dynamic =
        DynamicMessage::deserialize_with_options(desc.clone(), &mut deserializer, &DESERIALIZE)
            .map_err(|err| json_error(err.to_string()))?;
    deserializer
        .end()
        .map_err(|err| json_error(err.to_string()))?;
    Ok(dynamic)
}

/// Fails when a `required` field of `message`, or of any message set inside
/// it, is absent. prost does not check this for proto2, Mesos does.
pub fn check_required(message: &DynamicMessage) -> Result<(), ProtoError> {
    let mut path = Vec::new();
    check_required_at(message, &mut path)
}

fn check_required_at(message: &DynamicMessage, path: &mut Vec<String>) -> Result<(), ProtoError> {
    let desc = message.descriptor();
    for field in desc.fields() {
        if field.cardinality() == Cardinality::Required && !message.has_field(&field) {
            path.push(field.name().to_owned());
            return Err(ProtoError::MissingRequired {
                message: desc.full_name().to_owned(),
                field: path.join("."),
            });
        }
        if !matches!(field.kind(), Kind::Message(_)) || !message.has_field(&field) {
            continue;
        }
        path.push(field.name().to_owned());
        match &*message.get_field(&field) {
            Value::Message(inner) => check_required_at(inner, path)?,
            Value::List(items) => {
                for (index, item) in items.iter().enumerate() {
                    if let Value::Message(inner) = item {
                        path.push(index.to_string());
                        check_required_at(inner, path)?;
                        path.pop();
                    }
                }
            }
            Value::Map(entries) => {
                for (key, value) in entries {
                    if let Value::Message(inner) = value {
                        path.push(format!("{key:?}"));
                        check_required_at(inner, path)?;
                        path.pop();
                    }
                }
            }
            _ => {}
        }
        path.pop();
    }
    Ok(())
}

/// Compact JSON whose strings escape every non-ASCII character as `\uXXXX`
/// (UTF-16, so astral characters become surrogate pairs), as Mesos's
/// clients that count characters instead of bytes need.
#[derive(Debug, Clone, Copy, Default)]
pub struct AsciiFormatter;

impl serde_json::ser::Formatter for AsciiFormatter {
    fn write_string_fragment<W>(&mut self, writer: &mut W, fragment: &str) -> io::Result<()>
    where
        W: ?Sized + Write,
    {
        let mut start = 0;
        for (index, ch) in fragment.char_indices() {
            if ch.is_ascii() {
                continue;
            }
            writer.write_all(&fragment.as_bytes()[start..index])?;
            let mut units = [0u16; 2];
            for unit in ch.encode_utf16(&mut units) {
                write!(writer, "\\u{unit:04x}")?;
            }
            start = index + ch.len_utf8();
        }
        writer.write_all(&fragment.as_bytes()[start..])
    }
}

/// Serializes any serde value (not only messages) as compact ASCII-only JSON,
/// e.g. for hand-built `/state` documents that embed messages.
pub fn to_ascii_json<T: Serialize + ?Sized>(value: &T) -> Result<String, serde_json::Error> {
    let mut out = Vec::with_capacity(128);
    let mut serializer = serde_json::Serializer::with_formatter(&mut out, AsciiFormatter);
    value.serialize(&mut serializer)?;
    Ok(String::from_utf8(out).expect("ascii json is utf-8"))
}
