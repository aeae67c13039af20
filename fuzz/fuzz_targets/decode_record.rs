//! The aggregator's record decoder on arbitrary bytes: it never panics,
//! and its fast path, when it answers, agrees with the general one.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pulih_event::Reference;
use pulih_stream::decode::{decode, decode_fast, decode_serde};

fuzz_target!(|bytes: &[u8]| {
    let reference = Reference::jakarta();
    let _ = decode(bytes, &reference);
    if let Some(fast) = decode_fast(bytes, &reference) {
        assert_eq!(Ok(fast), decode_serde(bytes, &reference));
    }
});
