//! Properties shared by the fuzz targets in `fuzz_targets/`, and the agent's
//! flag parsers.

/// The agent's flag parsers and `--resources` parser, compiled from the
/// agent's own source files: depending on the whole agent would build the
/// containerizer (libcontainer, bollard) with fuzzing instrumentation for two
/// pure modules.
#[path = "../../agent/src/flags.rs"]
pub mod agent_flags;
/// See [`agent_flags`].
#[path = "../../agent/src/resources.rs"]
pub mod agent_resources;

use mezzo_proto::codec::{decode, encode, ContentType};
use prost_reflect::ReflectMessage;

/// Decodes `data` as `M` in both content types, as the HTTP handlers do, and
/// checks what every decoded message must satisfy:
///
/// - protobuf: encode -> decode gives a message that encodes to the same bytes;
/// - JSON (Mesos's mapping): our JSON of the message decodes again and gives the
///   same JSON (a fixpoint), and it is ASCII only.
///
/// NaN payloads do not survive JSON (`"NaN"`), so JSON is compared as JSON.
pub fn proto_round_trip<M>(data: &[u8])
where
    M: ReflectMessage + Default + PartialEq + std::fmt::Debug,
{
    if let Ok(message) = decode::<M>(data, ContentType::Protobuf) {
        check_message(&message);
    }
    if let Ok(message) = decode::<M>(data, ContentType::Json) {
        check_message(&message);
    }
}

fn check_message<M>(message: &M)
where
    M: ReflectMessage + Default + PartialEq + std::fmt::Debug,
{
    // Protobuf: what we send is what we read back.
    let bytes = message.encode_to_vec();
    let again: M = decode(&bytes, ContentType::Protobuf)
        .unwrap_or_else(|e| panic!("our own protobuf does not decode: {e}\n{message:?}"));
    assert_eq!(again.encode_to_vec(), bytes, "protobuf is not a fixpoint");

    // JSON: what we send (in events, /state, RecordIO streams) decodes again.
    let json = encode(message, ContentType::Json);
    assert!(json.is_ascii(), "our JSON is not ASCII");
    let from_json: M = decode(&json, ContentType::Json).unwrap_or_else(|e| {
        panic!(
            "our own JSON does not decode: {e}\n{}",
            String::from_utf8_lossy(&json)
        )
    });
    let json_again = encode(&from_json, ContentType::Json);
    assert_eq!(
        String::from_utf8_lossy(&json_again),
        String::from_utf8_lossy(&json),
        "JSON is not a fixpoint"
    );
}
