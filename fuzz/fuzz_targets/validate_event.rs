//! The gateway's event validator on arbitrary bytes: it never panics, and
//! every event it accepts becomes a record that the aggregator decodes
//! into the same cell, time and amount. An accepted event that the
//! aggregator could not count would break the promise of a 2xx.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pulih_event::{validate, Limits, PaymentRecord, Pseudonymiser, Reference, Secret};

fuzz_target!(|bytes: &[u8]| {
    let reference = Reference::jakarta();
    let Ok(event) = validate(bytes, &reference, &Limits::default()) else {
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
    let decoded = pulih_stream::decode::decode(&record.to_json(), &reference)
        .expect("the aggregator decodes every record of an accepted event");
    assert_eq!(std::str::from_utf8(&decoded.district).unwrap(), district);
    assert_eq!(decoded.sector, sector);
    assert_eq!(decoded.amount, amount);
    assert_eq!(decoded.occurred_ms, at);
});
