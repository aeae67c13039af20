//! The gateway's event validator on arbitrary bytes: it never panics, its
//! fast path accepts only what the general path accepts, with the same
//! result, and every event it accepts becomes a record, written exactly as
//! serde_json writes it (and as the gateway writes it in place, from the
//! request's bytes), that the aggregator decodes into the same cell, time
//! and amount. An accepted event that the aggregator could not count
//! would break the promise of a 2xx.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pulih_event::record::write_record;
use pulih_event::{
    validate, validate_fast, validate_general, validate_in_place, Limits, PaymentRecord,
    Pseudonymiser, Reference, Secret,
};

fuzz_target!(|bytes: &[u8]| {
    let reference = Reference::jakarta();
    let limits = Limits::default();
    if let Some(fast) = validate_fast(bytes, &reference, &limits) {
        assert_eq!(validate_general(bytes, &reference, &limits), Ok(fast));
    }
    let Ok(event) = validate(bytes, &reference, &limits) else {
        return;
    };
    let (district, sector, amount, at) = (
        event.district_code.clone(),
        event.sector,
        event.amount_idr,
        event.occurred_at.unix_millis(),
    );
    let pseudonymiser =
        Pseudonymiser::new("k1", &Secret::new("fuzz-secret-0123456789abcdef0123456789")).unwrap();
    let record = PaymentRecord::from_event(event, "fuzz", &pseudonymiser);
    assert_eq!(record.to_json(), serde_json::to_vec(&record).unwrap());
    if let Some(in_place) = validate_in_place(bytes, &reference, &limits) {
        let mut written = Vec::new();
        write_record(&mut written, &in_place, "fuzz", &pseudonymiser, false);
        assert_eq!(written, record.to_json());
    }
    let decoded = pulih_stream::decode::decode(&record.to_json(), &reference)
        .expect("the aggregator decodes every record of an accepted event");
    assert_eq!(std::str::from_utf8(&decoded.district).unwrap(), district);
    assert_eq!(decoded.sector, sector);
    assert_eq!(decoded.amount, amount);
    assert_eq!(decoded.occurred_ms, at);
});
