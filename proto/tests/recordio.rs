//! RecordIO framing as Mesos streams use it.

use mezzo_proto::recordio::{encode, Decoder};
use mezzo_proto::ProtoError;

fn drain(decoder: &mut Decoder) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while let Some(record) = decoder.next_record().unwrap() {
        out.push(record);
    }
    out
}

#[test]
fn encode_frames_with_decimal_length() {
    assert_eq!(
        encode(b"{\"type\":\"HEARTBEAT\"}"),
        b"20\n{\"type\":\"HEARTBEAT\"}"
    );
    assert_eq!(encode(b""), b"0\n");
    // Length counts bytes, not characters.
    assert_eq!(encode("\u{e9}".as_bytes()), b"2\n\xc3\xa9");
}

#[test]
fn records_split_at_every_byte() {
    let records: Vec<Vec<u8>> = vec![
        b"{\"type\":\"SUBSCRIBED\"}".to_vec(),
        Vec::new(),
        vec![b'x'; 1234],
        b"{\"type\":\"HEARTBEAT\"}".to_vec(),
    ];
    let stream: Vec<u8> = records.iter().flat_map(|r| encode(r)).collect();
    for split in 0..=stream.len() {
        let mut decoder = Decoder::new(4096);
        decoder.feed(&stream[..split]);
        let mut got = drain(&mut decoder);
        decoder.feed(&stream[split..]);
        got.extend(drain(&mut decoder));
        assert_eq!(got, records, "split at {split}");
        assert!(!decoder.has_partial());
    }
    // And one byte at a time.
    let mut decoder = Decoder::new(4096);
    let mut got = Vec::new();
    for byte in &stream {
        decoder.feed(std::slice::from_ref(byte));
        got.extend(drain(&mut decoder));
    }
    assert_eq!(got, records);
}

#[test]
fn partial_record_is_reported() {
    let mut decoder = Decoder::new(100);
    decoder.feed(b"10\nabc");
    assert_eq!(decoder.next_record().unwrap(), None);
    assert!(decoder.has_partial());
}

#[test]
fn non_numeric_length_is_rejected() {
    for stream in [&b"abc\nxyz"[..], b"-1\n", b"\n", b"1 2\nab", b"12a"] {
        let mut decoder = Decoder::new(100);
        decoder.feed(stream);
        let err = decoder.next_record().unwrap_err();
        assert!(
            matches!(err, ProtoError::RecordIoLength(_)),
            "{stream:?}: {err}"
        );
        // The stream stays failed.
        assert!(decoder.next_record().is_err());
    }
    // A length line that never ends is rejected once it is too long to be a number.
    let mut decoder = Decoder::new(100);
    decoder.feed(b"123456789012345678901234");
    assert!(matches!(
        decoder.next_record(),
        Err(ProtoError::RecordIoLength(_))
    ));
}

#[test]
fn oversized_record_is_rejected_before_buffering_it() {
    let mut decoder = Decoder::new(10);
    decoder.feed(b"11\n");
    let err = decoder.next_record().unwrap_err();
    assert!(
        matches!(err, ProtoError::RecordIoTooLarge { size: 11, max: 10 }),
        "{err}"
    );
    assert_eq!(
        err.to_string(),
        "recordio record of 11 bytes exceeds the limit of 10 bytes"
    );

    let mut decoder = Decoder::new(10);
    decoder.feed(b"10\n0123456789");
    assert_eq!(decoder.next_record().unwrap(), Some(b"0123456789".to_vec()));
}
