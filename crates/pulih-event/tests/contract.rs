//! The JSON Schemas in `schemas/` and the Rust validator enforce the same
//! contract: checked on a shared corpus and on generated events.

use proptest::prelude::*;
use pulih_event::{validate, Limits, PaymentRecord, Pseudonymiser, Reference, Secret};
use serde_json::{json, Value};

fn schema(name: &str) -> jsonschema::Validator {
    let path = format!("{}/../../schemas/{name}", env!("CARGO_MANIFEST_DIR"));
    let schema: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    jsonschema::options()
        .with_draft(jsonschema::Draft::Draft202012)
        .should_validate_formats(true)
        .build(&schema)
        .unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn event_schema() -> &'static jsonschema::Validator {
    static SCHEMA: std::sync::OnceLock<jsonschema::Validator> = std::sync::OnceLock::new();
    SCHEMA.get_or_init(|| schema("payment_event.v1.json"))
}

fn corpus(name: &str) -> Vec<Value> {
    let path = format!("{}/tests/corpus/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn rust_verdict(bytes: &[u8]) -> String {
    match validate(bytes, &Reference::jakarta(), &Limits::default()) {
        Ok(_) => "valid".into(),
        Err(r) => r.reason.code().into(),
    }
}

#[test]
fn schema_and_validator_agree_on_the_corpus() {
    let schema = schema("payment_event.v1.json");
    let cases = corpus("payment_event.v1.ndjson");
    assert!(cases.len() > 80);
    let mut valid = 0;
    for case in &cases {
        let name = case["name"].as_str().unwrap();
        let expect = case["expect"].as_str().unwrap();
        let event = &case["event"];
        let by_schema = schema.is_valid(event);
        let by_rust = rust_verdict(&serde_json::to_vec(event).unwrap());
        assert_eq!(by_rust, expect, "case {name:?}: Rust validator");
        assert_eq!(
            by_schema,
            expect == "valid",
            "case {name:?}: JSON Schema says valid={by_schema}"
        );
        valid += usize::from(by_schema);
    }
    assert!(
        valid >= 20 && valid < cases.len() - 40,
        "corpus must hold both kinds"
    );
}

#[test]
fn raw_inputs_get_their_reason() {
    for case in corpus("raw_inputs.ndjson") {
        let raw = case["raw"].as_str().unwrap();
        assert_eq!(
            rust_verdict(raw.as_bytes()),
            case["expect"].as_str().unwrap(),
            "case {}",
            case["name"]
        );
    }
}

#[test]
fn garbage_never_panics() {
    let valid = br#"{"event_id":"e1","occurred_at":"2024-03-01T09:15:02.123+07:00","merchant_id":"m-00000001","district_code":"31.74.09","sector":"I","amount_idr":25000,"channel":"qris","merchant_size":"micro"}"#;
    // Every truncation of a valid event.
    for n in 0..valid.len() {
        assert_ne!(rust_verdict(&valid[..n]), "valid", "truncated at {n}");
    }
    // Binary noise, a 64 MiB record, invalid UTF-8 inside a string.
    let noise: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    assert_ne!(rust_verdict(&noise), "valid");
    let huge = vec![b' '; 64 << 20];
    assert_eq!(rust_verdict(&huge), "too_large");
    let mut bad_utf8 = valid.to_vec();
    bad_utf8[15] = 0xC3;
    assert_eq!(rust_verdict(&bad_utf8), "invalid_utf8");
    let limits = Limits {
        max_record_bytes: 8 << 20,
    };
    let deep = format!("{}{}", "{\"a\":".repeat(200_000), "}".repeat(200_000));
    assert!(validate(deep.as_bytes(), &Reference::jakarta(), &limits).is_err());
}

#[test]
fn schema_district_enum_is_the_reference_table() {
    let path = format!(
        "{}/../../schemas/payment_event.v1.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let schema: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let in_schema: Vec<&str> = schema["properties"]["district_code"]["enum"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let reference = Reference::jakarta();
    let in_table: Vec<&str> = reference
        .districts()
        .iter()
        .map(|d| d.code.as_str())
        .collect();
    assert_eq!(in_schema, in_table);
}

fn field_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        (-10i64..2_000_000_000).prop_map(|n| json!(n)),
        "[A-Za-z0-9_ -]{0,70}".prop_map(Value::String),
        "[0-9]{5}".prop_map(Value::String),
        "3[0-2]\\.[07][0-5]\\.[01][0-9]".prop_map(Value::String),
        "[A-Z]".prop_map(Value::String),
        "20[0-9]{2}-[01][0-9]-[0-3][0-9]T[0-2][0-9]:[0-6][0-9]:[0-6][0-9]\\.[0-9]{2,4}(Z|[+-][0-2][0-9]:[0-5][0-9])"
            .prop_map(Value::String),
        prop::sample::select(vec!["qris", "ewallet", "cash", "micro", "small", "huge", "I", "G", "47111", "56101"])
            .prop_map(|s| Value::String(s.into())),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Take a valid event, then replace, drop or add fields at random:
    /// the schema and the validator must give the same verdict.
    #[test]
    fn schema_and_validator_agree_on_mutations(
        changes in prop::collection::vec(
            (prop::sample::select(vec![
                "event_id", "occurred_at", "merchant_id", "district_code", "sector",
                "kbli_code", "amount_idr", "channel", "merchant_size", "phone",
            ]), prop::option::of(field_value())),
            0..4,
        )
    ) {
        let schema = event_schema();
        let mut event = json!({"event_id":"evt-1","occurred_at":"2024-03-01T09:15:02.123+07:00","merchant_id":"m-00000001","district_code":"31.74.09","sector":"I","kbli_code":"56101","amount_idr":25000,"channel":"qris","merchant_size":"micro"});
        for (field, value) in changes {
            let obj = event.as_object_mut().unwrap();
            match value {
                Some(v) => { obj.insert(field.into(), v); }
                None => { obj.remove(field); }
            }
        }
        let by_rust = rust_verdict(&serde_json::to_vec(&event).unwrap());
        prop_assert_eq!(schema.is_valid(&event), by_rust == "valid", "event {} rust {}", event, by_rust);
    }
}

#[test]
fn records_match_the_record_schema() {
    let schema = schema("payment_record.v1.json");
    let p = Pseudonymiser::new("k2026a", &Secret::new("0123456789abcdef0123456789abcdef")).unwrap();
    for case in corpus("payment_event.v1.ndjson") {
        let bytes = serde_json::to_vec(&case["event"]).unwrap();
        if let Ok(ev) = validate(&bytes, &Reference::jakarta(), &Limits::default()) {
            let rec = PaymentRecord::from_event(ev, "bank-a", &p);
            let v: Value = serde_json::from_slice(&rec.to_json()).unwrap();
            assert!(schema.is_valid(&v), "{v}");
            assert!(v.get("merchant_id").is_none());
        }
    }
    let bad = json!({"event_id":"e","producer_id":"bank-a","occurred_at":"2024-03-01T02:15:02.123Z","merchant_key":"00","merchant_key_id":"k","district_code":"31.74.09","sector":"I","amount_idr":1,"channel":"qris","merchant_size":"micro"});
    assert!(!schema.is_valid(&bad), "a short merchant_key must fail");
}

/// Both writers of the dead-letter topic produce what
/// `schemas/dead_letter.v1.json` describes, and the schema holds each stage
/// to its own fields.
#[test]
fn dead_letters_of_both_stages_match_their_schema() {
    use pulih_event::dead_letter::{DeadLetter, Source, Stage};
    let schema = schema("dead_letter.v1.json");
    let mut gateway = DeadLetter::new(
        Stage::Gateway,
        "unknown_field",
        "unknown field `phone`",
        1_709_251_200_000,
        b"{\"phone\":\"0812\"}",
        8,
    );
    gateway.producer_id = Some("bank-a".into());
    gateway.index = Some(3);
    let mut aggregate = DeadLetter::new(Stage::Aggregate, "too_old", "old", 1, b"{}", 64);
    aggregate.source = Some(Source {
        topic: "pulih.payments.v1".into(),
        partition: 2,
        offset: 41,
    });
    for letter in [&gateway, &aggregate] {
        let v: Value = serde_json::from_slice(&letter.to_json()).unwrap();
        assert!(schema.is_valid(&v), "{v}");
        assert_eq!(&serde_json::from_value::<DeadLetter>(v).unwrap(), letter);
    }
    assert_eq!(
        (gateway.raw.as_str(), gateway.raw_truncated),
        ("{\"phone\"", true)
    );
    let mut v: Value = serde_json::from_slice(&gateway.to_json()).unwrap();
    v.as_object_mut().unwrap().remove("index");
    assert!(
        !schema.is_valid(&v),
        "a gateway letter names the record's index"
    );
    let mut v: Value = serde_json::from_slice(&aggregate.to_json()).unwrap();
    v.as_object_mut().unwrap().remove("source");
    assert!(
        !schema.is_valid(&v),
        "an aggregate letter names the record's offset"
    );
}
