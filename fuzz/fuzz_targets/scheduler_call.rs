//! The master's `POST /api/v1/scheduler` body: `mesos.v1.scheduler.Call` in
//! JSON or protobuf, decoded as the handler does, then round-tripped.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mezzo_proto::mesos::v1::scheduler::Call;

fuzz_target!(|data: &[u8]| {
    mezzo_fuzz::proto_round_trip::<Call>(data);
});
