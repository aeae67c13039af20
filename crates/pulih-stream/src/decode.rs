//! Decoding a Kafka record (`schemas/payment_record.v1.json`) into the
//! core's [`Event`], on the hot path: fields are borrowed from the input,
//! and the only allocations are for strings with JSON escapes.

use std::borrow::Cow;
use std::fmt;

use pulih_event::{Channel, MerchantSize, Reference, Sector, Timestamp};
use serde::Deserialize;

use crate::core::{fingerprint, Event};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RecordRef<'a> {
    #[serde(borrow)]
    event_id: Cow<'a, str>,
    #[serde(borrow)]
    producer_id: Cow<'a, str>,
    occurred_at: Timestamp,
    #[serde(borrow)]
    merchant_key: Cow<'a, str>,
    #[serde(borrow, rename = "merchant_key_id")]
    _merchant_key_id: Cow<'a, str>,
    #[serde(borrow)]
    district_code: Cow<'a, str>,
    sector: Sector,
    #[serde(default, borrow, rename = "kbli_code")]
    _kbli_code: Option<Cow<'a, str>>,
    amount_idr: u64,
    channel: Channel,
    merchant_size: MerchantSize,
}

/// Why a record could not be decoded. Stable codes, used as metric labels
/// and dead-letter reasons.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// Not a payment record: bad JSON, a missing or unknown field, a wrong type.
    BadRecord(String),
    BadMerchantKey,
    UnknownDistrict,
}

impl DecodeError {
    pub fn code(&self) -> &'static str {
        match self {
            DecodeError::BadRecord(_) => "bad_record",
            DecodeError::BadMerchantKey => "bad_merchant_key",
            DecodeError::UnknownDistrict => "unknown_district",
        }
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::BadRecord(e) => write!(f, "not a payment record: {e}"),
            DecodeError::BadMerchantKey => f.write_str("merchant_key is not 64 hex digits"),
            DecodeError::UnknownDistrict => {
                f.write_str("district_code is not in the reference table")
            }
        }
    }
}

impl std::error::Error for DecodeError {}

/// Decodes and checks one record.
pub fn decode(bytes: &[u8], reference: &Reference) -> Result<Event, DecodeError> {
    let r: RecordRef<'_> =
        serde_json::from_slice(bytes).map_err(|e| DecodeError::BadRecord(e.to_string()))?;
    let mut merchant = [0u8; 32];
    hex::decode_to_slice(r.merchant_key.as_bytes(), &mut merchant)
        .map_err(|_| DecodeError::BadMerchantKey)?;
    let district = reference
        .district(&r.district_code)
        .and_then(|_| r.district_code.as_bytes().try_into().ok())
        .ok_or(DecodeError::UnknownDistrict)?;
    Ok(Event {
        fingerprint: fingerprint(&r.producer_id, &r.event_id),
        occurred_ms: r.occurred_at.unix_millis(),
        district,
        sector: r.sector,
        merchant,
        amount: r.amount_idr,
        channel: r.channel,
        size: r.merchant_size,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use pulih_event::PaymentRecord;

    fn record() -> PaymentRecord {
        PaymentRecord {
            event_id: "e-1".into(),
            producer_id: "bank-a".into(),
            occurred_at: Timestamp::from_unix_millis(1_709_251_200_250),
            merchant_key: "ab".repeat(32),
            merchant_key_id: "k1".into(),
            district_code: "31.74.09".into(),
            sector: Sector::from_letter("I").unwrap(),
            kbli_code: Some("56101".into()),
            amount_idr: 25_000,
            channel: Channel::Qris,
            merchant_size: MerchantSize::Micro,
        }
    }

    #[test]
    fn decodes_what_the_intake_writes() {
        let reference = Reference::jakarta();
        let e = decode(&record().to_json(), &reference).unwrap();
        assert_eq!(e.occurred_ms, 1_709_251_200_250);
        assert_eq!(&e.district, b"31.74.09");
        assert_eq!(e.merchant, [0xab; 32]);
        assert_eq!(e.amount, 25_000);
        assert_eq!(e.fingerprint, fingerprint("bank-a", "e-1"));
        assert_ne!(e.fingerprint, fingerprint("bank-b", "e-1"));
        assert_ne!(fingerprint("a", "bc"), fingerprint("ab", "c"));
    }

    #[test]
    fn rejects_what_is_not_a_record() {
        let reference = Reference::jakarta();
        let mut r = record();
        r.merchant_key = "zz".into();
        assert_eq!(
            decode(&r.to_json(), &reference),
            Err(DecodeError::BadMerchantKey)
        );
        let mut r = record();
        r.district_code = "31.76.01".into();
        assert_eq!(
            decode(&r.to_json(), &reference),
            Err(DecodeError::UnknownDistrict)
        );
        for bad in [&b"{}"[..], b"not json", b"", b"{\"event_id\":1}"] {
            assert_eq!(decode(bad, &reference).unwrap_err().code(), "bad_record");
        }
        let mut v: serde_json::Value = serde_json::from_slice(&record().to_json()).unwrap();
        v["phone"] = "0812".into();
        let e = decode(&serde_json::to_vec(&v).unwrap(), &reference).unwrap_err();
        assert_eq!(e.code(), "bad_record");
    }
}
