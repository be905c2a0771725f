//! Flag values: durations (`--executor_shutdown_grace_period=5secs`, stout's
//! form as executors get it in their environment), booleans, `--resources` in
//! Mesos's text and JSON forms, and whole agent command lines.
#![no_main]

use clap::Parser;
use libfuzzer_sys::fuzz_target;
use mezzo_fuzz::agent_flags::{format_duration, parse_bool, parse_duration, Flags};
use mezzo_proto::mesos::v1::value;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };

    if let Ok(d) = parse_duration(text) {
        // What the agent writes for executors reads back, to the millisecond
        // (stout's text goes through an f64 of nanoseconds: allow its rounding).
        let written = format_duration(d);
        let read = mezzo_proto::duration::parse(&written)
            .unwrap_or_else(|e| panic!("'{written}' (from '{text}') does not parse: {e}"));
        let want = d.as_millis() * 1_000_000;
        assert!(
            read.as_nanos().abs_diff(want) < 1_000,
            "'{text}' -> {d:?} -> '{written}' -> {read:?}"
        );
    }
    let _ = mezzo_proto::duration::parse(text);
    let _ = parse_bool(text);

    if let Ok(resources) = mezzo_fuzz::agent_resources::parse(Some(text)) {
        for r in &resources {
            assert!(!r.name.is_empty(), "'{text}' gave a resource without a name");
            if let Some(s) = &r.scalar {
                assert!(s.value.is_finite() && s.value >= 0.0, "'{text}' gave {} = {}", r.name, s.value);
            }
            if r.r#type == value::Type::Ranges as i32 {
                for range in &r.ranges.as_ref().expect("a ranges resource has ranges").range {
                    assert!(range.begin <= range.end, "'{text}' gave {} [{}-{}]", r.name, range.begin, range.end);
                }
            }
        }
    }

    // A whole command line, one argument per line.
    let args = std::iter::once("mezzo-agent").chain(text.split('\n'));
    let _ = Flags::try_parse_from(args);
});
