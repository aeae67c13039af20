//! The record on the Kafka topic `pulih.payments.v1`
//! (`schemas/payment_record.v1.json`).

use serde::{Deserialize, Serialize};

use crate::{Channel, MerchantSize, PaymentEvent, Pseudonymiser, Sector, Timestamp};

/// An accepted, pseudonymised payment as carried on Kafka: the event's fields
/// with `merchant_id` replaced by `merchant_key` (+ `merchant_key_id`) and the
/// authenticated `producer_id` added. `occurred_at` is rendered in UTC.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PaymentRecord {
    pub event_id: String,
    pub producer_id: String,
    pub occurred_at: Timestamp,
    pub merchant_key: String,
    pub merchant_key_id: String,
    /// The key under the secret being retired, during a rotation of the
    /// pseudonymisation secret; absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merchant_key_previous: Option<String>,
    pub district_code: String,
    pub sector: Sector,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kbli_code: Option<String>,
    pub amount_idr: u64,
    pub channel: Channel,
    pub merchant_size: MerchantSize,
    /// Loaded by `pulih produce`, whose age limit is lifted on purpose: the
    /// aggregator counts it whatever its age. A record without it must pass
    /// the age limit against its Kafka timestamp, as it did at the gateway
    /// (`docs/semantics.md`, "Time policy"). Written only when true.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub backfill: bool,
}

impl PaymentRecord {
    /// Pseudonymises a validated event from an authenticated producer.
    pub fn from_event(
        event: PaymentEvent,
        producer_id: &str,
        pseudonymiser: &Pseudonymiser,
    ) -> PaymentRecord {
        PaymentRecord {
            merchant_key: pseudonymiser.merchant_key(producer_id, &event.merchant_id),
            merchant_key_id: pseudonymiser.key_id().to_owned(),
            merchant_key_previous: pseudonymiser
                .previous()
                .map(|p| p.merchant_key(producer_id, &event.merchant_id)),
            event_id: event.event_id,
            producer_id: producer_id.to_owned(),
            occurred_at: event.occurred_at,
            district_code: event.district_code,
            sector: event.sector,
            kbli_code: event.kbli_code,
            amount_idr: event.amount_idr,
            channel: event.channel,
            merchant_size: event.merchant_size,
            backfill: false,
        }
    }

    /// The Kafka message key, `district_code|sector`: every (district,
    /// sector) cell lives in exactly one partition.
    pub fn kafka_key(&self) -> String {
        cell_key(&self.district_code, self.sector)
    }

    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a record always serialises")
    }

    pub fn from_json(bytes: &[u8]) -> Result<PaymentRecord, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}

/// `district_code|sector`.
pub fn cell_key(district_code: &str, sector: Sector) -> String {
    format!("{district_code}|{}", sector.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{validate, Limits, Reference, Secret};

    #[test]
    fn round_trips_and_hides_the_merchant_id() {
        let ev = validate(
            br#"{"event_id":"e1","occurred_at":"2024-03-01T09:15:02.123+07:00","merchant_id":"warung-sri-0001","district_code":"31.74.09","sector":"I","amount_idr":25000,"channel":"qris","merchant_size":"micro"}"#,
            &Reference::jakarta(),
            &Limits::default(),
        )
        .unwrap();
        let p = Pseudonymiser::new("k1", &Secret::new("0123456789abcdef0123456789abcdef")).unwrap();
        let rec = PaymentRecord::from_event(ev, "bank-a", &p);
        let json = String::from_utf8(rec.to_json()).unwrap();
        assert!(!json.contains("warung-sri-0001"), "{json}");
        assert!(
            json.contains(r#""occurred_at":"2024-03-01T02:15:02.123Z""#),
            "{json}"
        );
        assert!(!json.contains("kbli_code"), "{json}");
        assert_eq!(rec.kafka_key(), "31.74.09|I");
        assert_eq!(PaymentRecord::from_json(json.as_bytes()).unwrap(), rec);
        let extra = json.replacen('{', r#"{"merchant_id":"x","#, 1);
        assert!(PaymentRecord::from_json(extra.as_bytes()).is_err());
    }
}
