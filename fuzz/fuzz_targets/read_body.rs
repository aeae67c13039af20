//! The gateway's body reader on arbitrary headers and bytes: gunzip, split
//! into records, validate each. It never panics, never reads past its
//! decompressed limit, and every record it splits off comes from the body.
#![no_main]

use std::io::Write;

use libfuzzer_sys::fuzz_target;
use pulih_event::{validate, Limits, Reference};
use pulih_ingest::gateway::read_body;

const MAX_DECOMPRESSED: usize = 1 << 16;

fuzz_target!(|input: &[u8]| {
    let Some((&choice, body)) = input.split_first() else {
        return;
    };
    let content_type: Option<&[u8]> = match choice & 0b111 {
        0 => None,
        1 => Some(b"application/x-ndjson"),
        2 => Some(b"application/json"),
        3 => Some(b"application/jsonl; charset=utf-8"),
        4 => Some(b"text/plain"),
        _ => Some(b"APPLICATION/JSON ; x=\xff"),
    };
    // Half the time a real gzip stream of the bytes, so that what follows
    // gunzipping is reached; otherwise the bytes as they are, as gzip or not.
    let (encoding, sent): (Option<&[u8]>, Vec<u8>) = match (choice >> 3) & 0b11 {
        0 => (None, body.to_vec()),
        1 => (Some(b"gzip"), body.to_vec()),
        2 => {
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            gz.write_all(body).unwrap();
            (Some(b" GZIP "), gz.finish().unwrap())
        }
        _ => (Some(b"br"), body.to_vec()),
    };
    let reference = Reference::jakarta();
    let limits = Limits::default();
    let mut total = 0;
    let read = read_body(content_type, encoding, &sent, MAX_DECOMPRESSED, |record| {
        total += record.len();
        let _ = validate(record, &reference, &limits);
    });
    if read.is_ok() {
        assert!(total <= MAX_DECOMPRESSED);
    }
});
