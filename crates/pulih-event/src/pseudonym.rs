//! Keyed pseudonymisation of merchant ids.
//!
//! `merchant_key = hex(HMAC-SHA256(secret, producer_id || 0x00 || merchant_id))`.
//! Both ids are restricted to `[A-Za-z0-9_-]`, so the NUL separator makes the
//! input unambiguous, and the same merchant id from two producers gives two
//! unrelated keys. Without the secret a key cannot be linked back to the
//! producer's merchant id, even by trying every plausible id. The key id
//! travels with every record (`merchant_key_id`) so the secret can be
//! rotated: keys made under different secrets never compare equal. During
//! a rotation the pseudonymiser also holds the secret being retired
//! ([`Pseudonymiser::with_previous`]), and every record carries the key
//! under it too (`merchant_key_previous`): the link that lets the metrics
//! count a merchant once across the change (docs/operations.md).

use std::fmt;

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// A secret that never prints itself.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl<'de> serde::Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Secret)
    }
}

/// Minimum secret length in bytes: 128 bits of a random hex or base64 string.
pub const MIN_SECRET_BYTES: usize = 32;

/// Turns (producer, merchant id) into a keyed pseudonym.
#[derive(Clone)]
pub struct Pseudonymiser {
    key_id: String,
    mac: Hmac<Sha256>,
    /// The secret being retired, during a rotation.
    previous: Option<Box<Pseudonymiser>>,
}

impl fmt::Debug for Pseudonymiser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pseudonymiser")
            .field("key_id", &self.key_id)
            .field("previous", &self.previous.as_ref().map(|p| &p.key_id))
            .finish_non_exhaustive()
    }
}

impl Pseudonymiser {
    /// `key_id` is 1-32 characters of `[A-Za-z0-9_-]`; the secret at least
    /// [`MIN_SECRET_BYTES`] bytes. The error says which rule failed.
    pub fn new(key_id: &str, secret: &Secret) -> Result<Pseudonymiser, String> {
        if !crate::is_token(key_id, 1, 32) {
            return Err("key_id must be 1-32 characters of [A-Za-z0-9_-]".into());
        }
        if secret.0.len() < MIN_SECRET_BYTES {
            return Err(format!(
                "secret must be at least {MIN_SECRET_BYTES} bytes (it is {}); generate one with `python3 -c 'import secrets; print(secrets.token_hex(32))'`",
                secret.0.len()
            ));
        }
        let mac = Hmac::<Sha256>::new_from_slice(secret.0.as_bytes())
            .map_err(|e| format!("secret cannot key HMAC-SHA256: {e}"))?;
        Ok(Pseudonymiser {
            key_id: key_id.to_owned(),
            mac,
            previous: None,
        })
    }

    /// The same, during a rotation away from `previous`: records carry the
    /// key under both. The two must have different key ids.
    pub fn with_previous(mut self, previous: Pseudonymiser) -> Result<Pseudonymiser, String> {
        if previous.key_id == self.key_id {
            return Err(format!(
                "the previous key id must differ from the current one ({})",
                self.key_id
            ));
        }
        self.previous = Some(Box::new(Pseudonymiser {
            previous: None,
            ..previous
        }));
        Ok(self)
    }

    /// The pseudonymiser of the secret being retired, during a rotation.
    pub fn previous(&self) -> Option<&Pseudonymiser> {
        self.previous.as_deref()
    }

    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// The 64-character lowercase hex pseudonym of `merchant_id` as sent by
    /// `producer_id`.
    pub fn merchant_key(&self, producer_id: &str, merchant_id: &str) -> String {
        let hex = self.merchant_key_hex(producer_id, merchant_id);
        hex.iter().map(|&b| char::from(b)).collect()
    }

    /// [`Pseudonymiser::merchant_key`] as ASCII bytes, without allocating
    /// (the gateway computes one per event).
    pub fn merchant_key_hex(&self, producer_id: &str, merchant_id: &str) -> [u8; 64] {
        let mut mac = self.mac.clone();
        mac.update(producer_id.as_bytes());
        mac.update(&[0]);
        mac.update(merchant_id.as_bytes());
        let mut out = [0u8; 64];
        lower_hex(&mac.finalize().into_bytes(), &mut out);
        out
    }
}

/// Lowercase hex of `bytes` into `out` (twice as long), without a
/// character iterator.
fn lower_hex(bytes: &[u8], out: &mut [u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (b, pair) in bytes.iter().zip(out.chunks_exact_mut(2)) {
        pair[0] = DIGITS[usize::from(b >> 4)];
        pair[1] = DIGITS[usize::from(b & 0x0f)];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_is_lowercase_and_matches_the_hex_crate() {
        let bytes: Vec<u8> = (0..=255).collect();
        let mut out = vec![0u8; 512];
        lower_hex(&bytes, &mut out);
        assert_eq!(out, hex::encode(&bytes).into_bytes());
    }

    fn p(secret: &str) -> Pseudonymiser {
        Pseudonymiser::new("k1", &Secret::new(secret)).unwrap()
    }

    #[test]
    fn matches_a_known_hmac_vector() {
        // python3 -c 'import hmac,hashlib;print(hmac.new(b"0123456789abcdef0123456789abcdef",
        //   b"bank-a\x00merchant-0001", hashlib.sha256).hexdigest())'
        assert_eq!(
            p("0123456789abcdef0123456789abcdef").merchant_key("bank-a", "merchant-0001"),
            "096229df54913d130e0c7c285c7026d9a90cc2c1f4bd8eed6871b5e7a46b2c55"
        );
    }

    #[test]
    fn depends_on_secret_producer_and_merchant() {
        let a = p("0123456789abcdef0123456789abcdef");
        let b = p("fedcba9876543210fedcba9876543210");
        let k = a.merchant_key("bank-a", "merchant-0001");
        assert_eq!(k.len(), 64);
        assert_eq!(k, a.merchant_key("bank-a", "merchant-0001"));
        assert_ne!(k, b.merchant_key("bank-a", "merchant-0001"));
        assert_ne!(k, a.merchant_key("bank-b", "merchant-0001"));
        assert_ne!(k, a.merchant_key("bank-a", "merchant-0002"));
        // The separator keeps ("ab", "c...") and ("a", "bc...") apart.
        assert_ne!(
            a.merchant_key("ab", "cdefghij"),
            a.merchant_key("a", "bcdefghij")
        );
    }

    #[test]
    fn a_rotation_keys_under_both_secrets() {
        let old = p("0123456789abcdef0123456789abcdef");
        let new = Pseudonymiser::new("k2", &Secret::new("fedcba9876543210fedcba9876543210"))
            .unwrap()
            .with_previous(old.clone())
            .unwrap();
        assert_eq!(new.key_id(), "k2");
        assert_eq!(
            new.previous().unwrap().merchant_key("bank-a", "m-1"),
            old.merchant_key("bank-a", "m-1")
        );
        assert_ne!(
            new.merchant_key("bank-a", "m-1"),
            old.merchant_key("bank-a", "m-1")
        );
        assert!(p("0123456789abcdef0123456789abcdef")
            .with_previous(old)
            .unwrap_err()
            .contains("must differ"));
    }

    #[test]
    fn refuses_weak_secrets_and_bad_key_ids() {
        assert!(Pseudonymiser::new("k1", &Secret::new("short"))
            .unwrap_err()
            .contains("at least 32 bytes"));
        assert!(Pseudonymiser::new("k 1", &Secret::new("x".repeat(32))).is_err());
        assert_eq!(format!("{:?}", Secret::new("hunter2")), "Secret(***)");
    }
}
