//! The master's resource arithmetic (offers, ACCEPT, task launches) on
//! `Resource` lists as schedulers and agents send them (protobuf). Lists that
//! validate must add, subtract and compare without panicking, and obey:
//! a + b contains a and b, (a + b) - b has a's scalars, a - a is empty.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mezzo_master::resources::Resources;
use mezzo_proto::mesos::v1::Resource;
use prost::Message;

/// Two resource lists, as one protobuf message.
#[derive(Clone, PartialEq, Message)]
struct Two {
    #[prost(message, repeated, tag = "1")]
    a: Vec<Resource>,
    #[prost(message, repeated, tag = "2")]
    b: Vec<Resource>,
}

fuzz_target!(|data: &[u8]| {
    let Ok(two) = Two::decode(data) else { return };
    let Ok(a) = Resources::from_protos(&two.a) else { return };
    let Ok(b) = Resources::from_protos(&two.b) else { return };

    // What the master sends back out validates again and means the same.
    let back = Resources::from_protos(&a.to_protos()).expect("our own resources validate");
    assert_eq!(back, a);
    let _ = a.to_state_json();
    let _ = a.to_string();

    assert!(a.contains(&a));
    assert!(a.minus(&a).is_empty(), "a - a = {}", a.minus(&a));
    let mut sum = a.clone();
    sum.add(&b);
    assert!(sum.contains(&a) && sum.contains(&b), "{a} + {b} = {sum}");
    let diff = sum.minus(&b);
    for r in a.to_protos() {
        if r.scalar.is_some() {
            assert_eq!(diff.scalar(&r.name), a.scalar(&r.name), "({a} + {b}) - {b} = {diff}");
        }
    }
    let _ = a.minus(&b).contains(&b);
});
