//! Image references (`[registry/]repository[:tag][@digest]`) as they come in
//! `TaskInfo`s and on the command line. A reference that parses gives the same
//! reference when its canonical and short forms are parsed again.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mezzo_images::ImageReference;

fuzz_target!(|data: &[u8]| {
    let Ok(input) = std::str::from_utf8(data) else { return };
    let Ok(reference) = ImageReference::parse(input) else { return };
    let canonical = reference.to_string();
    let again = ImageReference::parse(&canonical)
        .unwrap_or_else(|e| panic!("canonical form '{canonical}' of '{input}' does not parse: {e}"));
    assert_eq!(again, reference, "canonical form '{canonical}' of '{input}'");
    let short = reference.short_name();
    let again = ImageReference::parse(&short)
        .unwrap_or_else(|e| panic!("short form '{short}' of '{input}' does not parse: {e}"));
    assert_eq!(again, reference, "short form '{short}' of '{input}'");
});
