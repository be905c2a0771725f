//! How the executor encodes its calls and decodes the agent's events: JSON
//! in Mesos's mapping, as Mesos's own HTTP executors speak it.

use mezzo_proto::codec::{decode, encode, ContentType};
use mezzo_proto::mesos::v1::executor::{Call, Event};
use mezzo_proto::ProtoError;

/// The content type of every request body and of the event stream.
pub const CONTENT_TYPE: ContentType = ContentType::Json;

/// Encodes a call as a request body.
pub fn encode_call(call: &Call) -> Vec<u8> {
    encode(call, CONTENT_TYPE)
}

/// Decodes one RecordIO record of the event stream.
pub fn decode_event(record: &[u8]) -> Result<Event, ProtoError> {
    decode(record, CONTENT_TYPE)
}
