//! The record on the Kafka topic `pulih.payments.v1`
//! (`schemas/payment_record.v1.json`).

use serde::{Deserialize, Serialize};

use crate::{Channel, EventRef, MerchantSize, PaymentEvent, Pseudonymiser, Sector, Timestamp};

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
        let mut out = Vec::with_capacity(320);
        self.write_json(&mut out);
        out
    }

    /// Appends the record's JSON to `out`.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        Fields {
            event_id: &self.event_id,
            producer_id: &self.producer_id,
            occurred_at: self.occurred_at,
            merchant_key: self.merchant_key.as_bytes(),
            merchant_key_id: &self.merchant_key_id,
            merchant_key_previous: self.merchant_key_previous.as_deref().map(str::as_bytes),
            district_code: &self.district_code,
            sector: self.sector,
            kbli_code: self.kbli_code.as_deref(),
            amount_idr: self.amount_idr,
            channel: self.channel,
            merchant_size: self.merchant_size,
            backfill: self.backfill,
        }
        .write_json(out);
    }

    pub fn from_json(bytes: &[u8]) -> Result<PaymentRecord, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}

/// Appends the Kafka record of `event`, sent by `producer_id`, to `out`:
/// byte for byte what [`PaymentRecord::from_event`] and
/// [`PaymentRecord::write_json`] write (a property test holds the two
/// together), without building either (the gateway writes one per event).
pub fn write_record(
    out: &mut Vec<u8>,
    event: &EventRef<'_>,
    producer_id: &str,
    pseudonymiser: &Pseudonymiser,
    backfill: bool,
) {
    let key = pseudonymiser.merchant_key_hex(producer_id, event.merchant_id);
    let previous = pseudonymiser
        .previous()
        .map(|p| p.merchant_key_hex(producer_id, event.merchant_id));
    Fields {
        event_id: event.event_id,
        producer_id,
        occurred_at: event.occurred_at,
        merchant_key: &key,
        merchant_key_id: pseudonymiser.key_id(),
        merchant_key_previous: previous.as_ref().map(|p| &p[..]),
        district_code: event.district_code,
        sector: event.sector,
        kbli_code: event.kbli_code,
        amount_idr: event.amount_idr,
        channel: event.channel,
        merchant_size: event.merchant_size,
        backfill,
    }
    .write_json(out);
}

/// The fields of a record, borrowed, in the order they are written.
struct Fields<'a> {
    event_id: &'a str,
    producer_id: &'a str,
    occurred_at: Timestamp,
    merchant_key: &'a [u8],
    merchant_key_id: &'a str,
    merchant_key_previous: Option<&'a [u8]>,
    district_code: &'a str,
    sector: Sector,
    kbli_code: Option<&'a str>,
    amount_idr: u64,
    channel: Channel,
    merchant_size: MerchantSize,
    backfill: bool,
}

impl Fields<'_> {
    fn write_json(&self, out: &mut Vec<u8>) {
        // Written by hand, byte for byte what `serde_json::to_vec` writes
        // (a property test holds the two together): the gateway writes one
        // per event, and serde's field-by-field path was a sixth of its CPU.
        out.extend_from_slice(b"{\"event_id\":");
        json_string(out, self.event_id.as_bytes());
        out.extend_from_slice(b",\"producer_id\":");
        json_string(out, self.producer_id.as_bytes());
        out.extend_from_slice(b",\"occurred_at\":\"");
        self.occurred_at.write_to(out);
        out.extend_from_slice(b"\",\"merchant_key\":");
        json_string(out, self.merchant_key);
        out.extend_from_slice(b",\"merchant_key_id\":");
        json_string(out, self.merchant_key_id.as_bytes());
        if let Some(previous) = self.merchant_key_previous {
            out.extend_from_slice(b",\"merchant_key_previous\":");
            json_string(out, previous);
        }
        out.extend_from_slice(b",\"district_code\":");
        json_string(out, self.district_code.as_bytes());
        out.extend_from_slice(b",\"sector\":");
        json_string(out, self.sector.as_str().as_bytes());
        if let Some(kbli) = self.kbli_code {
            out.extend_from_slice(b",\"kbli_code\":");
            json_string(out, kbli.as_bytes());
        }
        out.extend_from_slice(b",\"amount_idr\":");
        write_u64(out, self.amount_idr);
        out.extend_from_slice(b",\"channel\":");
        json_string(out, self.channel.as_str().as_bytes());
        out.extend_from_slice(b",\"merchant_size\":");
        json_string(out, self.merchant_size.as_str().as_bytes());
        if self.backfill {
            out.extend_from_slice(b",\"backfill\":true");
        }
        out.push(b'}');
    }
}

/// Appends `n` in decimal.
fn write_u64(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// Appends UTF-8 `bytes` as a JSON string, escaped as `serde_json`
/// escapes it.
fn json_string(out: &mut Vec<u8>, bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    // Nearly every string has nothing to escape: one pass without branches
    // per byte (it vectorises), then a single copy.
    let plain = bytes.iter().fold(true, |plain, &b| {
        plain & (b >= 0x20) & (b != b'"') & (b != b'\\')
    });
    if plain {
        out.extend_from_slice(bytes);
        out.push(b'"');
        return;
    }
    let mut start = 0;
    let mut unicode = *b"\\u0000";
    for (i, &b) in bytes.iter().enumerate() {
        let escape: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0..=0x1f => {
                unicode[4] = HEX[usize::from(b >> 4)];
                unicode[5] = HEX[usize::from(b & 0xf)];
                &unicode
            }
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        out.extend_from_slice(escape);
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

pub fn cell_key(district_code: &str, sector: Sector) -> String {
    let mut key = String::with_capacity(district_code.len() + 2);
    write_cell_key(&mut key, district_code, sector);
    key
}

/// [`cell_key`] into a buffer of the caller's.
pub fn write_cell_key(out: &mut String, district_code: &str, sector: Sector) {
    out.push_str(district_code);
    out.push('|');
    out.push_str(sector.as_str());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{validate, Limits, Reference, Secret};
    use proptest::prelude::*;

    fn record() -> impl Strategy<Value = PaymentRecord> {
        let text = prop_oneof![any::<String>(), "[a-z0-9_.|-]{0,20}", "[\\x00-\\x7f]{0,12}"];
        (
            (
                text.clone(),
                text.clone(),
                any::<i64>(),
                text.clone(),
                text.clone(),
            ),
            (
                proptest::option::of(text.clone()),
                text.clone(),
                0..21u8,
                proptest::option::of(text),
            ),
            (any::<u64>(), 0..6usize, 0..3usize, any::<bool>()),
        )
            .prop_map(
                |(
                    (event_id, producer_id, ms, merchant_key, merchant_key_id),
                    (previous, district_code, sector, kbli_code),
                    (amount_idr, channel, size, backfill),
                )| PaymentRecord {
                    event_id,
                    producer_id,
                    occurred_at: Timestamp::from_unix_millis(ms),
                    merchant_key,
                    merchant_key_id,
                    merchant_key_previous: previous,
                    district_code,
                    sector: Sector::all().nth(usize::from(sector)).unwrap(),
                    kbli_code,
                    amount_idr,
                    channel: Channel::ALL[channel],
                    merchant_size: MerchantSize::ALL[size],
                    backfill,
                },
            )
    }

    proptest! {
        #[test]
        fn the_record_is_written_as_serde_json_writes_it(r in record()) {
            prop_assert_eq!(
                String::from_utf8(r.to_json()).unwrap(),
                serde_json::to_string(&r).unwrap()
            );
        }

        #[test]
        fn timestamps_are_written_as_displayed(
            ms in prop_oneof![-62_167_219_200_000i64..=253_402_300_799_999, any::<i64>()]
        ) {
            let t = Timestamp::from_unix_millis(ms);
            let mut out = Vec::new();
            t.write_to(&mut out);
            prop_assert_eq!(String::from_utf8(out).unwrap(), t.to_string());
        }
    }

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
