//! How the executor encodes its calls and decodes the agent's events:
//! protobuf (`application/x-protobuf`), as Mesos's own command executor
//! speaks it.
//!
//! Plain prost, on purpose: mezzo's JSON mapping and its required-field
//! checks go through `mezzo_proto::DESCRIPTOR_POOL`, which costs every
//! process that builds it about 5 MB of heap, and the agent runs one
//! executor per task. The executor trusts its own agent's encoding; what it
//! reads out of an event it checks where it uses it (a LAUNCH without a
//! task, a SUBSCRIBED for another executor).

use mezzo_proto::codec::ContentType;
use mezzo_proto::mesos::v1::executor::{Call, Event};
use mezzo_proto::ProtoError;
use prost::Message;

/// The content type of every request body and of the event stream.
pub const CONTENT_TYPE: ContentType = ContentType::Protobuf;

/// Encodes a call as a request body.
pub fn encode_call(call: &Call) -> Vec<u8> {
    call.encode_to_vec()
}

/// Decodes one RecordIO record of the event stream.
pub fn decode_event(record: &[u8]) -> Result<Event, ProtoError> {
    Event::decode(record).map_err(|source| ProtoError::Protobuf { message: "mesos.v1.executor.Event".to_string(), source })
}

#[cfg(test)]
mod tests {
    use super::*;
    use mezzo_proto::mesos::v1::executor::{call, event};
    use mezzo_proto::mesos::v1::{ExecutorId, FrameworkId};

    #[test]
    fn calls_and_events_round_trip_through_the_agents_codec() {
        let call = Call {
            executor_id: ExecutorId { value: "e1".into() },
            framework_id: FrameworkId { value: "f1".into() },
            r#type: Some(call::Type::Subscribe as i32),
            subscribe: Some(call::Subscribe::default()),
            ..Default::default()
        };
        let decoded: Call = mezzo_proto::codec::decode(&encode_call(&call), CONTENT_TYPE).unwrap();
        assert_eq!(decoded, call);
        let event = Event { r#type: Some(event::Type::Heartbeat as i32), ..Default::default() };
        assert_eq!(decode_event(&mezzo_proto::codec::encode(&event, CONTENT_TYPE)).unwrap(), event);
        assert!(decode_event(b"\xff\xff\xff").is_err());
    }
}
