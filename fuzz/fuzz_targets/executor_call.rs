//! The agent's `POST /api/v1/executor` body (`mesos.v1.executor.Call`) and the
//! events an executor reads back from the agent (`mesos.v1.executor.Event`),
//! in JSON or protobuf, decoded and round-tripped.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mezzo_proto::mesos::v1::executor::{Call, Event};

fuzz_target!(|data: &[u8]| {
    mezzo_fuzz::proto_round_trip::<Call>(data);
    mezzo_fuzz::proto_round_trip::<Event>(data);
});
