//! Decoding a Kafka record (`schemas/payment_record.v1.json`) into the
//! core's [`Event`], on the hot path: fields are borrowed from the input,
//! and the only allocations are for strings with JSON escapes.

use std::borrow::Cow;
use std::fmt;

use pulih_event::{Channel, MerchantSize, Reference, Sector, Timestamp};
use serde::Deserialize;

use crate::core::{fingerprint, fingerprint_bytes, Event, Producer};

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
    #[serde(default, borrow)]
    merchant_key_previous: Option<Cow<'a, str>>,
    #[serde(borrow)]
    district_code: Cow<'a, str>,
    sector: Sector,
    #[serde(default, borrow, rename = "kbli_code")]
    _kbli_code: Option<Cow<'a, str>>,
    amount_idr: u64,
    channel: Channel,
    merchant_size: MerchantSize,
    #[serde(default)]
    backfill: bool,
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
    match decode_fast(bytes, reference) {
        Some(e) => Ok(e),
        None => decode_serde(bytes, reference),
    }
}

/// The general decoder: `serde_json`, with its precise error messages.
pub fn decode_serde(bytes: &[u8], reference: &Reference) -> Result<Event, DecodeError> {
    let r: RecordRef<'_> =
        serde_json::from_slice(bytes).map_err(|e| DecodeError::BadRecord(e.to_string()))?;
    let mut merchant = [0u8; 32];
    hex::decode_to_slice(r.merchant_key.as_bytes(), &mut merchant)
        .map_err(|_| DecodeError::BadMerchantKey)?;
    let previous_merchant = match &r.merchant_key_previous {
        None => None,
        Some(k) => {
            let mut previous = [0u8; 32];
            hex::decode_to_slice(k.as_bytes(), &mut previous)
                .map_err(|_| DecodeError::BadMerchantKey)?;
            Some(previous)
        }
    };
    let district = reference
        .district(&r.district_code)
        .and_then(|_| r.district_code.as_bytes().try_into().ok())
        .ok_or(DecodeError::UnknownDistrict)?;
    Ok(Event {
        producer: Producer::new(&r.producer_id)
            .ok_or_else(|| DecodeError::BadRecord("producer_id is empty or too long".into()))?,
        fingerprint: fingerprint(&r.producer_id, &r.event_id),
        occurred_ms: r.occurred_at.unix_millis(),
        district,
        sector: r.sector,
        merchant,
        previous_merchant,
        amount: r.amount_idr,
        channel: r.channel,
        size: r.merchant_size,
        backfill: r.backfill,
    })
}

/// The fast path: a scanner for the records the intake writes (ASCII
/// strings without escapes, integers, any field order and JSON
/// whitespace). It accepts only input that [`decode_serde`] accepts, with
/// the same result, and returns `None` for anything else, which then takes
/// the general path. A property test holds the two to that.
#[inline]
pub fn decode_fast(bytes: &[u8], reference: &Reference) -> Option<Event> {
    let mut s = Scanner { b: bytes, i: 0 };
    s.ws();
    s.eat(b'{')?;
    let mut seen = 0u16;
    let mut f = Fields::default();
    s.ws();
    if s.peek()? == b'}' {
        return None;
    }
    // The keys in the order the intake writes them: each is first tried
    // where that order expects it, whole with its quotes and colon (a
    // comparison of known length, inlined), before the key is read as a
    // string. Its bit, or `None` past the last.
    fn at<const N: usize>(rest: &[u8], key: &[u8; N], bit: u8) -> Option<(usize, u8)> {
        (rest.len() >= N && rest[..N] == key[..]).then_some((N, bit))
    }
    let predicted = |rest: &[u8], i: usize| -> Option<Option<(usize, u8)>> {
        Some(match i {
            0 => at(rest, b"\"event_id\":", 0),
            1 => at(rest, b"\"producer_id\":", 1),
            2 => at(rest, b"\"occurred_at\":", 2),
            3 => at(rest, b"\"merchant_key\":", 3),
            4 => at(rest, b"\"merchant_key_id\":", 4),
            5 => at(rest, b"\"merchant_key_previous\":", 12),
            6 => at(rest, b"\"district_code\":", 5),
            7 => at(rest, b"\"sector\":", 6),
            8 => at(rest, b"\"kbli_code\":", 7),
            9 => at(rest, b"\"amount_idr\":", 8),
            10 => at(rest, b"\"channel\":", 9),
            11 => at(rest, b"\"merchant_size\":", 10),
            12 => at(rest, b"\"backfill\":", 11),
            _ => return None,
        })
    };
    let mut expect = 0;
    loop {
        s.ws();
        let rest = &bytes[s.i..];
        let mut bit = None;
        while let Some(hit) = predicted(rest, expect) {
            expect += 1;
            if let Some((len, b)) = hit {
                s.i += len;
                bit = Some(b);
                break;
            }
        }
        let bit = match bit {
            Some(b) => b,
            None => {
                let key = s.string()?;
                s.ws();
                s.eat(b':')?;
                match key {
                    b"event_id" => 0,
                    b"producer_id" => 1,
                    b"occurred_at" => 2,
                    b"merchant_key" => 3,
                    b"merchant_key_id" => 4,
                    b"district_code" => 5,
                    b"sector" => 6,
                    b"kbli_code" => 7,
                    b"amount_idr" => 8,
                    b"channel" => 9,
                    b"merchant_size" => 10,
                    b"backfill" => 11,
                    b"merchant_key_previous" => 12,
                    _ => return None,
                }
            }
        };
        s.ws();
        match bit {
            0 => f.event_id = s.string()?,
            1 => f.producer_id = s.string()?,
            // Strings of a known length in the form the intake writes
            // them are taken whole when their closing quote is where that
            // length puts it: what reads them next (the timestamp parser,
            // the district table, the sector letters) accepts only
            // printable ASCII, as the scanner would. Anything else is
            // scanned.
            2 => f.occurred_at = s.fixed::<24>().or_else(|| s.string())?,
            // 64 hex digits, read as they are decoded below.
            3 => {
                let key = s.b.get(s.i..s.i + 66)?;
                if key[0] != b'"' || key[65] != b'"' {
                    return None;
                }
                f.merchant_key = &key[1..65];
                s.i += 66;
            }
            4 => {
                s.string()?;
            }
            5 => f.district_code = s.fixed::<8>().or_else(|| s.string())?,
            6 => f.sector = s.fixed::<1>().or_else(|| s.string())?,
            7 => {
                if s.peek()? == b'n' {
                    s.literal(b"null")?;
                } else {
                    s.string()?;
                }
            }
            8 => f.amount = s.integer()?,
            9 => f.channel = s.string()?,
            10 => f.size = s.string()?,
            11 => {
                s.literal(b"true")?;
                f.backfill = true;
            }
            _ => f.merchant_key_previous = Some(s.string()?),
        }
        if seen & (1 << bit) != 0 {
            return None;
        }
        seen |= 1 << bit;
        s.ws();
        match s.next()? {
            b',' => continue,
            b'}' => break,
            _ => return None,
        }
    }
    s.ws();
    // kbli_code (bit 7), backfill (bit 11) and merchant_key_previous (bit
    // 12) are optional.
    if s.i != bytes.len() || seen | (1 << 7) | (1 << 11) | (1 << 12) != 0x1fff {
        return None;
    }
    // Every string the scanner returns is printable ASCII: no `str` is
    // needed to read them.
    let occurred = Timestamp::parse_rfc3339_bytes(f.occurred_at)?;
    let merchant = hex32(f.merchant_key)?;
    let previous_merchant = match f.merchant_key_previous {
        None => None,
        Some(k) => Some(hex32(k)?),
    };
    let district: [u8; 8] = f.district_code.try_into().ok()?;
    reference.district8(&district)?;
    let channel = match f.channel {
        b"qris" => Channel::Qris,
        b"debit_card" => Channel::DebitCard,
        b"credit_card" => Channel::CreditCard,
        b"ewallet" => Channel::Ewallet,
        b"bank_transfer" => Channel::BankTransfer,
        b"other" => Channel::Other,
        _ => return None,
    };
    let size = match f.size {
        b"micro" => MerchantSize::Micro,
        b"small" => MerchantSize::Small,
        b"medium" => MerchantSize::Medium,
        _ => return None,
    };
    Some(Event {
        producer: Producer::from_ascii(f.producer_id)?,
        fingerprint: fingerprint_bytes(f.producer_id, f.event_id),
        occurred_ms: occurred.unix_millis(),
        district,
        sector: match f.sector {
            [c] => Sector::from_byte(*c)?,
            _ => return None,
        },
        merchant,
        previous_merchant,
        amount: f.amount,
        channel,
        size,
        backfill: f.backfill,
    })
}

/// 64 hex digits (either case) as 32 bytes. The eight words are decoded
/// without a branch between them, and checked once at the end.
fn hex32(s: &[u8]) -> Option<[u8; 32]> {
    let s: &[u8; 64] = s.try_into().ok()?;
    let mut out = [0u8; 32];
    let mut bad = 0;
    for (o, chunk) in out.chunks_exact_mut(4).zip(s.chunks_exact(8)) {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let (value, not_hex) = hex8(u64::from_le_bytes(word));
        bad |= not_hex;
        o.copy_from_slice(&value.to_le_bytes());
    }
    (bad == 0).then_some(out)
}

/// Eight hex digits (either case, the first in the lowest byte) as four
/// bytes, eight at a time, and a mask that is not zero if any is not a
/// hex digit (the value is then meaningless).
fn hex8(v: u64) -> (u32, u64) {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    // Below 0x80 each byte's sums stay in the byte: bit 7 of x + (0x80 -
    // lo) is x >= lo, and of x + (0x7f - hi) is x > hi. Bytes of 0x80 and
    // above are marked bad on their own.
    let within = |x: u64, lo: u64, hi: u64| {
        (x.wrapping_add(ONES * (0x80 - lo)) & !x.wrapping_add(ONES * (0x7f - hi))) & HIGH
    };
    let ascii = v & !HIGH;
    let lower = ascii | (ONES * 0x20); // 'A'-'F' to 'a'-'f'; digits unchanged
    let digit = within(ascii, u64::from(b'0'), u64::from(b'9'));
    let letter = within(lower, u64::from(b'a'), u64::from(b'f'));
    let not_hex = (v & HIGH) | ((digit | letter) ^ HIGH);
    // Each byte's value, then two bytes (high digit first) into one.
    let nibbles = (v & (ONES * 0x0f)) + (letter >> 7) * 9;
    let pairs = ((nibbles & 0x00ff_00ff_00ff_00ff) << 4) | ((nibbles >> 8) & 0x00ff_00ff_00ff_00ff);
    let packed = (pairs | (pairs >> 8)) & 0x0000_ffff_0000_ffff;
    ((packed | (packed >> 16)) as u32, not_hex)
}

#[derive(Default)]
struct Fields<'a> {
    event_id: &'a [u8],
    producer_id: &'a [u8],
    occurred_at: &'a [u8],
    merchant_key: &'a [u8],
    district_code: &'a [u8],
    sector: &'a [u8],
    amount: u64,
    channel: &'a [u8],
    size: &'a [u8],
    backfill: bool,
    merchant_key_previous: Option<&'a [u8]>,
}

struct Scanner<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> Scanner<'a> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let c = self.peek()?;
        self.i += 1;
        Some(c)
    }

    fn eat(&mut self, c: u8) -> Option<()> {
        (self.next()? == c).then_some(())
    }

    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.i += 1;
        }
    }

    fn literal(&mut self, lit: &[u8]) -> Option<()> {
        let end = self.i + lit.len();
        (self.b.get(self.i..end)? == lit).then(|| self.i = end)
    }

    /// A string of exactly `N` bytes, whatever they are, if its closing
    /// quote follows them; its contents. The caller checks them.
    fn fixed<const N: usize>(&mut self) -> Option<&'a [u8]> {
        let b = self.b.get(self.i..self.i + N + 2)?;
        if b[0] != b'"' || b[N + 1] != b'"' {
            return None;
        }
        self.i += N + 2;
        Some(&b[1..=N])
    }

    /// A string of printable ASCII without escapes; its contents.
    fn string(&mut self) -> Option<&'a [u8]> {
        self.eat(b'"')?;
        let start = self.i;
        let len = pulih_event::plain_string_len(self.b.get(start..)?)?;
        self.i = start + len + 1;
        Some(&self.b[start..start + len])
    }

    /// A non-negative integer without leading zeros that fits in u64.
    fn integer(&mut self) -> Option<u64> {
        let start = self.i;
        let mut v: u64 = 0;
        while let Some(c @ b'0'..=b'9') = self.peek() {
            v = v.checked_mul(10)?.checked_add(u64::from(c - b'0'))?;
            self.i += 1;
        }
        let n = self.i - start;
        if n == 0 || (n > 1 && self.b[start] == b'0') {
            return None;
        }
        // A fraction or exponent: the general path decides.
        if matches!(self.peek(), Some(b'.' | b'e' | b'E')) {
            return None;
        }
        Some(v)
    }
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
            merchant_key_previous: None,
            district_code: "31.74.09".into(),
            sector: Sector::from_letter("I").unwrap(),
            kbli_code: Some("56101".into()),
            amount_idr: 25_000,
            channel: Channel::Qris,
            merchant_size: MerchantSize::Micro,
            backfill: false,
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
    fn strings_taken_whole_are_still_checked() {
        let reference = Reference::jakarta();
        let json = String::from_utf8(record().to_json()).unwrap();
        for (from, to) in [
            // The closing quote where the length puts it, but a quote or
            // an escape inside: not a string of that length.
            (
                "\"2024-03-01T00:00:00.250Z\"",
                "\"2024-03-01T00:00:00.25\"Z\"",
            ),
            (
                "\"2024-03-01T00:00:00.250Z\"",
                "\"2024-03-01T00:00:00.25\\u005a\"",
            ),
            ("\"31.74.09\"", "\"31.74\\u002e9\""),
            ("\"sector\":\"I\"", "\"sector\":\"\"\""),
            ("\"sector\":\"I\"", "\"sector\":\"\\\""),
        ] {
            assert!(json.contains(from), "{from}");
            let bad = json.replacen(from, to, 1);
            assert_eq!(decode_fast(bad.as_bytes(), &reference), None, "{bad}");
            assert!(decode(bad.as_bytes(), &reference).is_err(), "{bad}");
        }
        // An escape the general path reads is still read by it.
        let escaped = json.replacen("\"31.74.09\"", "\"31.74.0\\u0039\"", 1);
        assert_eq!(decode_fast(escaped.as_bytes(), &reference), None);
        assert_eq!(
            decode(escaped.as_bytes(), &reference).unwrap().district,
            *b"31.74.09"
        );
    }

    #[test]
    fn hex_digits() {
        assert_eq!(hex32(&[b'a'; 64]), Some([0xaa; 32]));
        assert_eq!(hex32(&[b'F'; 64]), Some([0xff; 32]));
        assert_eq!(hex32(&[b'g'; 64]), None);
        assert_eq!(hex32(&[b'0'; 62]), None);
        let mut k = [b'0'; 64];
        k[63] = b'x';
        assert_eq!(hex32(&k), None);
    }

    #[test]
    fn the_fast_path_takes_what_the_intake_writes() {
        let reference = Reference::jakarta();
        let json = record().to_json();
        assert_eq!(
            decode_fast(&json, &reference),
            Some(decode_serde(&json, &reference).unwrap())
        );
        let mut r = record();
        r.kbli_code = None;
        assert!(decode_fast(&r.to_json(), &reference).is_some());
        r.backfill = true;
        let json = r.to_json();
        let fast = decode_fast(&json, &reference).expect("a backfill record takes the fast path");
        assert!(fast.backfill);
        assert_eq!(fast, decode_serde(&json, &reference).unwrap());
        // During a rotation of the pseudonymisation secret.
        r.merchant_key_previous = Some("cd".repeat(32));
        let json = r.to_json();
        let fast = decode_fast(&json, &reference).expect("a rotating record takes the fast path");
        assert_eq!(fast.previous_merchant, Some([0xcd; 32]));
        assert_eq!(fast, decode_serde(&json, &reference).unwrap());
        r.merchant_key_previous = Some("zz".repeat(32));
        assert_eq!(
            decode(&r.to_json(), &reference),
            Err(DecodeError::BadMerchantKey)
        );
        let spaced = b" { \"event_id\" : \"e-1\" ,\"producer_id\":\"bank-a\",\"occurred_at\":\"2024-03-01T00:00:00.250Z\",\"merchant_key\":\"abababababababababababababababababababababababababababababababab\",\"merchant_key_id\":\"k1\",\"district_code\":\"31.74.09\",\"sector\":\"I\",\"kbli_code\":null,\"amount_idr\":25000,\"channel\":\"qris\",\"merchant_size\":\"micro\"}\n";
        assert_eq!(
            decode_fast(spaced, &reference),
            Some(decode_serde(spaced, &reference).unwrap())
        );
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(3000))]

        /// The eight-at-a-time hex reader gives what `hex` gives, for
        /// digits and the bytes next to their ranges.
        #[test]
        fn hex_digits_eight_at_a_time(
            picks in proptest::collection::vec(0usize..36, 64),
            bad in proptest::option::of((0usize..64, 0usize..14)),
        ) {
            const DIGITS: &[u8] = b"0123456789abcdefABCDEF0123456789abcd";
            const NEAR: &[u8] = b"/:@G`g\x00\x7f\x80\xc1\xff\x10\x2a\x3f";
            let mut key: Vec<u8> = picks.iter().map(|&i| DIGITS[i]).collect();
            if let Some((at, i)) = bad {
                key[at] = NEAR[i];
            }
            let mut expected = [0u8; 32];
            let expected = hex::decode_to_slice(&key, &mut expected).ok().map(|()| expected);
            proptest::prop_assert_eq!(hex32(&key), expected);
        }

        /// Whatever the fast path accepts, the general decoder accepts
        /// with the same result.
        #[test]
        fn the_fast_path_agrees_with_serde(
            edits in proptest::collection::vec((0usize..400, 0u8..8, proptest::prelude::any::<u8>()), 0..4),
            backfill in proptest::prelude::any::<bool>(),
            rotating in proptest::prelude::any::<bool>(),
        ) {
            let reference = Reference::jakarta();
            let mut base = record();
            base.backfill = backfill;
            if rotating {
                base.merchant_key_previous = Some("cd".repeat(32));
            }
            let mut bytes = base.to_json();
            for (pos, op, byte) in edits {
                let pos = pos % (bytes.len() + 1);
                let pick = b" \"{},:0123456789.-eE\\nulA\t"[usize::from(byte) % 25];
                match op {
                    0 => bytes.insert(pos, pick),
                    1 => bytes.insert(pos, byte),
                    2 if pos < bytes.len() => { bytes.remove(pos); }
                    3 if pos < bytes.len() => bytes[pos] = pick,
                    4 => bytes.truncate(pos),
                    5 => {
                        // Repeat a field (before the closing brace, if
                        // an earlier edit left one).
                        let dup = b",\"sector\":\"G\"";
                        let at = bytes.len().saturating_sub(1);
                        bytes.splice(at..at, dup.iter().copied());
                    }
                    _ => {}
                }
            }
            if let Some(fast) = decode_fast(&bytes, &reference) {
                proptest::prop_assert_eq!(Ok(fast), decode_serde(&bytes, &reference));
            }
        }
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
