//! The payment event contract of pulih.
//!
//! This crate owns everything a payment event must satisfy before it may
//! enter the platform, and nothing that does I/O beyond reading reference
//! files:
//!
//! - [`validate`]: the Rust twin of `schemas/payment_event.v1.json`, which turns
//!   untrusted bytes into a [`PaymentEvent`] or a [`Rejection`] with a stable
//!   [`Reason`] code and a human detail that names the field but never echoes
//!   a value that could be personal data;
//! - [`record`]: the record carried on the Kafka topic `pulih.payments.v1`
//!   (`schemas/payment_record.v1.json`), in which the merchant id is replaced
//!   by a keyed pseudonym;
//! - [`reference`]: the district (kecamatan) and KBLI 2020 reference tables;
//! - [`holidays`]: the Indonesian calendar (national holidays, cuti bersama,
//!   Ramadan, Jakarta restrictions) and the per-day table derived from it;
//! - [`pseudonym`]: the keyed HMAC-SHA256 pseudonymisation of merchant ids.
//!
//! Dependencies and why: `serde`/`serde_json` parse the JSON; `time` does the
//! calendar arithmetic of RFC 3339 timestamps (smaller than `chrono` and
//! without its historical soundness issues); `hmac` + `sha2` (RustCrypto,
//! audited, constant-time tag comparison) compute the pseudonyms; `hex`
//! encodes them.

pub mod calendar;
pub mod dead_letter;
pub mod holidays;
pub mod pseudonym;
pub mod record;
pub mod reference;
mod timestamp;
mod validate;

pub use dead_letter::DeadLetter;
pub use pseudonym::{Pseudonymiser, Secret};
pub use record::PaymentRecord;
pub use reference::Reference;
pub use timestamp::Timestamp;
pub use validate::{
    check_time, validate, validate_fast, validate_general, validate_in_place, EventRef, Limits,
    Reason, Rejection, TimePolicy,
};

use serde::{Deserialize, Serialize};

/// Name of the Kafka topic that carries accepted payment records.
pub const PAYMENTS_TOPIC: &str = "pulih.payments.v1";

/// A payment event that passed validation (`schemas/payment_event.v1.json`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentEvent {
    pub event_id: String,
    pub occurred_at: Timestamp,
    pub merchant_id: String,
    pub district_code: String,
    pub sector: Sector,
    pub kbli_code: Option<String>,
    pub amount_idr: u64,
    pub channel: Channel,
    pub merchant_size: MerchantSize,
}

/// A KBLI 2020 category letter, `A` to `U`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Sector(u8);

impl Sector {
    /// All 21 categories in order.
    pub fn all() -> impl Iterator<Item = Sector> {
        (b'A'..=b'U').map(Sector)
    }

    /// The category for a letter, if it is one of `A`..=`U`.
    pub fn from_letter(s: &str) -> Option<Sector> {
        match s.as_bytes() {
            [c] => Sector::from_byte(*c),
            _ => None,
        }
    }

    /// The category of letter `c` (`b'A'` to `b'U'`).
    pub fn from_byte(c: u8) -> Option<Sector> {
        c.is_ascii_uppercase()
            .then_some(c)
            .filter(|&c| c <= b'U')
            .map(Sector)
    }

    pub fn as_str(self) -> &'static str {
        const LETTERS: &str = "ABCDEFGHIJKLMNOPQRSTU";
        let i = usize::from(self.0 - b'A');
        &LETTERS[i..i + 1]
    }

    /// Position in `A`..=`U`, 0 to 20.
    pub fn index(self) -> usize {
        usize::from(self.0 - b'A')
    }
}

impl Serialize for Sector {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Sector {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Sector::from_letter(&s)
            .ok_or_else(|| serde::de::Error::custom("sector must be a KBLI 2020 category A-U"))
    }
}

/// How the payment was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    Qris,
    DebitCard,
    CreditCard,
    Ewallet,
    BankTransfer,
    Other,
}

impl Channel {
    pub const ALL: [Channel; 6] = [
        Channel::Qris,
        Channel::DebitCard,
        Channel::CreditCard,
        Channel::Ewallet,
        Channel::BankTransfer,
        Channel::Other,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Qris => "qris",
            Channel::DebitCard => "debit_card",
            Channel::CreditCard => "credit_card",
            Channel::Ewallet => "ewallet",
            Channel::BankTransfer => "bank_transfer",
            Channel::Other => "other",
        }
    }

    pub fn parse(s: &str) -> Option<Channel> {
        Channel::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

/// Size class of the merchant under PP 7/2021.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MerchantSize {
    Micro,
    Small,
    Medium,
}

impl MerchantSize {
    pub const ALL: [MerchantSize; 3] = [
        MerchantSize::Micro,
        MerchantSize::Small,
        MerchantSize::Medium,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            MerchantSize::Micro => "micro",
            MerchantSize::Small => "small",
            MerchantSize::Medium => "medium",
        }
    }

    pub fn parse(s: &str) -> Option<MerchantSize> {
        MerchantSize::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

/// A valid producer id: 1-64 characters of `[A-Za-z0-9_-]`.
pub fn is_producer_id(s: &str) -> bool {
    is_token(s, 1, 64)
}

/// The length of the contents of a JSON string whose opening quote is
/// just before `b`, when they are printable ASCII without escapes and its
/// closing quote follows; `None` for anything else (a string that needs
/// the general JSON parser, or no string). The validator's and the
/// aggregator's fast paths read every string with it.
#[inline]
pub fn plain_string_len(b: &[u8]) -> Option<usize> {
    // Eight bytes at a time while none is a quote, a backslash or outside
    // printable ASCII.
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let zero = |x: u64| x.wrapping_sub(ONES) & !x & HIGH;
    let mut i = 0;
    while let Some(chunk) = b.get(i..i + 8) {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let v = u64::from_le_bytes(word);
        let special = zero(v ^ (ONES * u64::from(b'"')))
            | zero(v ^ (ONES * u64::from(b'\\')))
            | (v.wrapping_sub(ONES * 0x20) & !v & HIGH)
            | ((v.wrapping_add(ONES) | v) & HIGH);
        if special != 0 {
            // The lowest flagged byte is the first special one: a false
            // alarm only follows a true one (borrows and carries run up).
            let at = i + (special.trailing_zeros() / 8) as usize;
            return (b[at] == b'"').then_some(at);
        }
        i += 8;
    }
    loop {
        match *b.get(i)? {
            b'"' => return Some(i),
            b'\\' => return None,
            0x20..=0x7e => i += 1,
            _ => return None,
        }
    }
}

/// True for `min` to `max` characters of `[A-Za-z0-9_-]`.
pub(crate) fn is_token(s: &str, min: usize, max: usize) -> bool {
    (min..=max).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// One byte at a time, as the contract says.
    fn plain_string_len_bytewise(b: &[u8]) -> Option<usize> {
        for (i, &c) in b.iter().enumerate() {
            match c {
                b'"' => return Some(i),
                b'\\' => return None,
                0x20..=0x7e => {}
                _ => return None,
            }
        }
        None
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4096))]
        #[test]
        fn the_string_scanner_reads_as_one_byte_at_a_time_would(
            b in prop_oneof![
                proptest::collection::vec(any::<u8>(), 0..40),
                "[ -~]{0,30}\"[ -~]{0,5}".prop_map(String::into_bytes),
                "[a-z0-9 ._-]{0,30}[\\x00-\\x1f\\x7f-\\u{ff}\\\\\"][ -~]{0,5}\"".prop_map(String::into_bytes),
            ]
        ) {
            prop_assert_eq!(plain_string_len(&b), plain_string_len_bytewise(&b));
        }
    }

    #[test]
    fn the_string_scanner_stops_at_the_first_special_byte_at_any_offset() {
        for at in 0..24 {
            for special in [b'"', b'\\', 0x00, 0x1f, 0x7f, 0x80, 0xff] {
                let mut b = vec![b'a'; 24];
                b[at] = special;
                b.push(b'"');
                let expected = if special == b'"' { Some(at) } else { None };
                assert_eq!(plain_string_len(&b), expected, "{special:#x} at {at}");
            }
        }
        assert_eq!(plain_string_len(b"abcdefghijklmnop"), None);
        assert_eq!(plain_string_len(b""), None);
    }
}
