//! RecordIO streams (`<length>\n<bytes>` records) as the executor and the
//! scheduler clients read them. Properties: the records do not depend on how
//! the stream is cut into chunks, no record exceeds the limit, and encoding
//! the decoded records decodes to the same records.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mezzo_proto::recordio::{encode, Decoder};

#[derive(Debug, PartialEq)]
struct Outcome {
    records: Vec<Vec<u8>>,
    failed: bool,
    partial: bool,
}

/// Feeds `stream` in chunks whose sizes cycle through `cuts` (1..=256 bytes).
fn decode_all(stream: &[u8], max: usize, cuts: &[u8]) -> Outcome {
    let mut decoder = Decoder::new(max);
    let mut records = Vec::new();
    let mut rest = stream;
    let mut cut = cuts.iter().cycle();
    let mut failed = false;
    while !rest.is_empty() && !failed {
        let n = match cut.next() {
            Some(&c) => (c as usize + 1).min(rest.len()),
            None => rest.len(),
        };
        decoder.feed(&rest[..n]);
        rest = &rest[n..];
        loop {
            match decoder.next_record() {
                Ok(Some(record)) => {
                    assert!(record.len() <= max, "record of {} bytes over the limit {max}", record.len());
                    records.push(record);
                }
                Ok(None) => break,
                Err(_) => {
                    assert!(decoder.next_record().is_err(), "a failed stream recovered");
                    failed = true;
                    break;
                }
            }
        }
    }
    Outcome { records, failed, partial: !failed && decoder.has_partial() }
}

fuzz_target!(|data: &[u8]| {
    let [max, ncuts, rest @ ..] = data else { return };
    let max = *max as usize * 8;
    let (cuts, stream) = rest.split_at((*ncuts as usize % 8).min(rest.len()));

    let whole = decode_all(stream, max, &[]);
    let chunked = decode_all(stream, max, cuts);
    assert_eq!(whole, chunked, "chunking changed the records");

    let encoded: Vec<u8> = whole.records.iter().flat_map(|r| encode(r)).collect();
    let again = decode_all(&encoded, max, cuts);
    assert_eq!(
        again,
        Outcome { records: whole.records, failed: false, partial: false },
        "encode -> decode is not the identity"
    );
});
