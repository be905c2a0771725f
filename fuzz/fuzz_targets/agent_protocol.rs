//! mezzo's agent <-> master protocol (proto/proto/mezzo/agent.proto): every
//! message a master or an agent decodes from the other side, in protobuf and
//! JSON, decoded and round-tripped.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mezzo_proto::mezzo::agent::{
    AgentRegistered, MasterToAgent, Ping, RegisterAgent, StatusUpdate, StatusUpdateRecord,
};

fuzz_target!(|data: &[u8]| {
    // The first byte picks the message, so one corpus serves all of them.
    let Some((&which, body)) = data.split_first() else { return };
    match which % 6 {
        0 => mezzo_fuzz::proto_round_trip::<MasterToAgent>(body),
        1 => mezzo_fuzz::proto_round_trip::<RegisterAgent>(body),
        2 => mezzo_fuzz::proto_round_trip::<StatusUpdate>(body),
        3 => mezzo_fuzz::proto_round_trip::<Ping>(body),
        4 => mezzo_fuzz::proto_round_trip::<AgentRegistered>(body),
        _ => mezzo_fuzz::proto_round_trip::<StatusUpdateRecord>(body),
    }
});
