//! Validation of untrusted payment events, the Rust twin of
//! `schemas/payment_event.v1.json`.
//!
//! Checks run in a fixed order and the first failure is reported: size,
//! UTF-8, JSON syntax, object shape, unknown and duplicate fields, missing
//! fields (in schema order), then each field in schema order. A detail names
//! the field and the rule, and never repeats a value that could be personal
//! data: unknown field names are shown only when they are plain identifiers,
//! and field values only when they are short codes of the expected shape.

use std::fmt;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde_json::Value;

use crate::reference::Reference;
use crate::{is_token, Channel, MerchantSize, PaymentEvent, Sector, Timestamp};

/// Why an event was rejected. The snake_case code ([`Reason::code`]) is a
/// stable interface: producers and dashboards match on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// The record is larger than the configured maximum.
    TooLarge,
    /// The bytes are not valid UTF-8.
    InvalidUtf8,
    /// The text is not JSON (or is empty, or nests too deeply).
    InvalidJson,
    /// The JSON is valid but not an object.
    NotAnObject,
    /// A field the contract does not define (the guard against personal data).
    UnknownField,
    /// The same field twice.
    DuplicateField,
    /// A required field is absent.
    MissingField,
    /// A field has the wrong JSON type (for example a number for `event_id`).
    WrongType,
    BadEventId,
    BadTimestamp,
    BadMerchantId,
    UnknownDistrict,
    BadSector,
    BadKbliCode,
    KbliSectorMismatch,
    AmountOutOfRange,
    BadChannel,
    BadMerchantSize,
    /// `occurred_at` is further in the future than the clock allowance.
    InFuture,
    /// `occurred_at` is older than the gateway's maximum age.
    TooOld,
    /// `occurred_at` is older than the de-duplication retention, in a
    /// backfill not allowed to count events again.
    BeyondDedupRetention,
}

impl Reason {
    pub const ALL: [Reason; 21] = [
        Reason::TooLarge,
        Reason::InvalidUtf8,
        Reason::InvalidJson,
        Reason::NotAnObject,
        Reason::UnknownField,
        Reason::DuplicateField,
        Reason::MissingField,
        Reason::WrongType,
        Reason::BadEventId,
        Reason::BadTimestamp,
        Reason::BadMerchantId,
        Reason::UnknownDistrict,
        Reason::BadSector,
        Reason::BadKbliCode,
        Reason::KbliSectorMismatch,
        Reason::AmountOutOfRange,
        Reason::BadChannel,
        Reason::BadMerchantSize,
        Reason::InFuture,
        Reason::TooOld,
        Reason::BeyondDedupRetention,
    ];

    pub fn code(self) -> &'static str {
        match self {
            Reason::TooLarge => "too_large",
            Reason::InvalidUtf8 => "invalid_utf8",
            Reason::InvalidJson => "invalid_json",
            Reason::NotAnObject => "not_an_object",
            Reason::UnknownField => "unknown_field",
            Reason::DuplicateField => "duplicate_field",
            Reason::MissingField => "missing_field",
            Reason::WrongType => "wrong_type",
            Reason::BadEventId => "bad_event_id",
            Reason::BadTimestamp => "bad_timestamp",
            Reason::BadMerchantId => "bad_merchant_id",
            Reason::UnknownDistrict => "unknown_district",
            Reason::BadSector => "bad_sector",
            Reason::BadKbliCode => "bad_kbli_code",
            Reason::KbliSectorMismatch => "kbli_sector_mismatch",
            Reason::AmountOutOfRange => "amount_out_of_range",
            Reason::BadChannel => "bad_channel",
            Reason::BadMerchantSize => "bad_merchant_size",
            Reason::InFuture => "in_future",
            Reason::TooOld => "too_old",
            Reason::BeyondDedupRetention => "beyond_dedup_retention",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// A rejected event: a stable reason, the field concerned (if any) and a
/// sentence for humans.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub reason: Reason,
    pub field: Option<&'static str>,
    pub detail: String,
}

impl Rejection {
    fn new(reason: Reason, field: Option<&'static str>, detail: impl Into<String>) -> Self {
        Rejection {
            reason,
            field,
            detail: detail.into(),
        }
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.reason, self.detail)
    }
}

impl std::error::Error for Rejection {}

/// How far from the receiver's clock an event time may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimePolicy {
    /// Largest allowed lead of `occurred_at` over the clock (clock skew).
    pub max_future_ms: i64,
    /// Largest allowed age; `None` lifts the check (backfills).
    pub max_age_ms: Option<i64>,
    /// Events older than this are refused: their fingerprints would be
    /// dropped by the de-duplication retention, so the same events sent
    /// again would count again. `None`: no such check (the gateway, whose
    /// age limit is shorter, and backfills allowed to count again).
    pub dedup_retention_ms: Option<i64>,
}

impl Default for TimePolicy {
    fn default() -> Self {
        TimePolicy {
            max_future_ms: 5 * 60_000,
            max_age_ms: Some(7 * 86_400_000),
            dedup_retention_ms: None,
        }
    }
}

impl TimePolicy {
    /// Checks an event time against `now_ms`, the clock of the receiver
    /// that accepts it. The gateway checks with its own clock and stamps
    /// the Kafka record with that same time; the aggregator repeats the age
    /// check with the record's Kafka timestamp as the clock, so what the
    /// gateway accepted is never dropped later as too old
    /// (`docs/semantics.md`, "Time policy").
    pub fn check(&self, occurred_ms: i64, now_ms: i64) -> Result<(), Rejection> {
        if occurred_ms > now_ms.saturating_add(self.max_future_ms) {
            return Err(Rejection::new(
                Reason::InFuture,
                Some("occurred_at"),
                format!(
                    "`occurred_at` is more than {} s ahead of the receiver's clock",
                    self.max_future_ms / 1000
                ),
            ));
        }
        if self.too_old(occurred_ms, now_ms) {
            return Err(Rejection::new(
                Reason::TooOld,
                Some("occurred_at"),
                format!(
                    "`occurred_at` is more than {} s old; load history with `pulih produce`",
                    self.max_age_ms.unwrap_or(0) / 1000
                ),
            ));
        }
        if let Some(retention) = self.dedup_retention_ms {
            if occurred_ms < now_ms.saturating_sub(retention) {
                return Err(Rejection::new(
                    Reason::BeyondDedupRetention,
                    Some("occurred_at"),
                    format!(
                        "`occurred_at` is more than {} days old, beyond aggregate.dedup_retention_days: its fingerprint is not kept, so the same event sent again would count again; pass --may-count-again to load it anyway",
                        retention / 86_400_000
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Whether an event time is older than the age limit at `now_ms`.
    pub fn too_old(&self, occurred_ms: i64, now_ms: i64) -> bool {
        self.max_age_ms
            .is_some_and(|age| occurred_ms < now_ms.saturating_sub(age))
    }
}

/// Checks a validated event's time against the clock `now_ms`.
pub fn check_time(event: &PaymentEvent, now_ms: i64, policy: &TimePolicy) -> Result<(), Rejection> {
    policy.check(event.occurred_at.unix_millis(), now_ms)
}

/// Limits applied before parsing.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest accepted record in bytes.
    pub max_record_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_record_bytes: 16 * 1024,
        }
    }
}

/// Largest accepted amount in whole rupiah.
pub const MAX_AMOUNT_IDR: u64 = 1_000_000_000;

const FIELDS: [&str; 9] = [
    "event_id",
    "occurred_at",
    "merchant_id",
    "district_code",
    "sector",
    "kbli_code",
    "amount_idr",
    "channel",
    "merchant_size",
];
const OPTIONAL: [bool; 9] = [false, false, false, false, false, true, false, false, false];

/// Validates one event. Never panics, whatever the bytes.
pub fn validate(
    bytes: &[u8],
    reference: &Reference,
    limits: &Limits,
) -> Result<PaymentEvent, Rejection> {
    match validate_fast(bytes, reference, limits) {
        Some(event) => Ok(event),
        None => validate_general(bytes, reference, limits),
    }
}

/// The fast path for the events producers send: a scanner that accepts a
/// flat object of the contract's fields, each once, with strings of
/// printable ASCII without escapes and a plain integer amount, in any
/// order and with any JSON whitespace, and then applies every rule.
/// It returns an event only when [`validate_general`] would return the
/// same one (a property test holds the two to that), and `None` for
/// anything else, which the general path then answers with its reason.
pub fn validate_fast(bytes: &[u8], reference: &Reference, limits: &Limits) -> Option<PaymentEvent> {
    validate_in_place(bytes, reference, limits).map(|e| e.to_owned())
}

/// [`validate_fast`] without copying: the event's strings borrow `bytes`.
/// For the gateway, which writes the Kafka record straight from them
/// ([`crate::record::write_record`]).
pub fn validate_in_place<'a>(
    bytes: &'a [u8],
    reference: &Reference,
    limits: &Limits,
) -> Option<EventRef<'a>> {
    if bytes.len() > limits.max_record_bytes {
        return None;
    }
    // Once for the record, not once per field.
    let text = std::str::from_utf8(bytes).ok()?;
    let mut s = FastScanner {
        b: bytes,
        text,
        i: 0,
    };
    let mut values: [Option<&str>; 9] = [None; 9];
    let mut amount = None;
    s.ws();
    s.eat(b'{')?;
    loop {
        s.ws();
        let i = field_index(s.string()?)?;
        s.ws();
        s.eat(b':')?;
        s.ws();
        if values[i].is_some() || (i == 6 && amount.is_some()) {
            return None;
        }
        if i == 6 {
            amount = Some(s.integer()?);
        } else {
            values[i] = Some(s.string()?);
        }
        s.ws();
        match s.next()? {
            b',' => continue,
            b'}' => break,
            _ => return None,
        }
    }
    s.ws();
    if s.i != bytes.len() {
        return None;
    }
    let [event_id, occurred_at, merchant_id, district_code, sector, kbli_code, _, channel, merchant_size] =
        values;
    let (event_id, merchant_id, district_code) = (event_id?, merchant_id?, district_code?);
    let amount_idr = amount.filter(|a| (1..=MAX_AMOUNT_IDR).contains(a))?;
    if !is_token(event_id, 1, 64) || !is_token(merchant_id, 8, 64) {
        return None;
    }
    let occurred_at = Timestamp::parse_rfc3339(occurred_at?)?;
    reference.district(district_code)?;
    let sector = Sector::from_letter(sector?)?;
    if let Some(kbli) = kbli_code {
        if reference.kbli_sector(kbli)? != sector {
            return None;
        }
    }
    Some(EventRef {
        event_id,
        occurred_at,
        merchant_id,
        district_code,
        sector,
        kbli_code,
        amount_idr,
        channel: Channel::parse(channel?)?,
        merchant_size: MerchantSize::parse(merchant_size?)?,
    })
}

/// A valid event whose strings borrow the bytes it was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventRef<'a> {
    pub event_id: &'a str,
    pub occurred_at: Timestamp,
    pub merchant_id: &'a str,
    pub district_code: &'a str,
    pub sector: Sector,
    pub kbli_code: Option<&'a str>,
    pub amount_idr: u64,
    pub channel: Channel,
    pub merchant_size: MerchantSize,
}

impl EventRef<'_> {
    pub fn to_owned(&self) -> PaymentEvent {
        PaymentEvent {
            event_id: self.event_id.to_owned(),
            occurred_at: self.occurred_at,
            merchant_id: self.merchant_id.to_owned(),
            district_code: self.district_code.to_owned(),
            sector: self.sector,
            kbli_code: self.kbli_code.map(str::to_owned),
            amount_idr: self.amount_idr,
            channel: self.channel,
            merchant_size: self.merchant_size,
        }
    }
}

/// The position of `key` in [`FIELDS`]: by length and first letter, then
/// compared whole.
fn field_index(key: &str) -> Option<usize> {
    let i = match (key.len(), *key.as_bytes().first()?) {
        (8, b'e') => 0,
        (11, b'o') => 1,
        (11, b'm') => 2,
        (13, b'd') => 3,
        (6, b's') => 4,
        (9, b'k') => 5,
        (10, b'a') => 6,
        (7, b'c') => 7,
        (13, b'm') => 8,
        _ => return None,
    };
    (FIELDS[i] == key).then_some(i)
}

struct FastScanner<'a> {
    b: &'a [u8],
    /// `b`, known to be UTF-8.
    text: &'a str,
    i: usize,
}

impl<'a> FastScanner<'a> {
    fn next(&mut self) -> Option<u8> {
        let c = *self.b.get(self.i)?;
        self.i += 1;
        Some(c)
    }

    fn eat(&mut self, c: u8) -> Option<()> {
        (self.next()? == c).then_some(())
    }

    fn ws(&mut self) {
        while matches!(self.b.get(self.i), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.i += 1;
        }
    }

    /// A string of printable ASCII without escapes.
    fn string(&mut self) -> Option<&'a str> {
        self.eat(b'"')?;
        let start = self.i;
        let len = crate::plain_string_len(self.b.get(start..)?)?;
        self.i = start + len + 1;
        self.text.get(start..start + len)
    }

    /// A JSON integer without sign, fraction or exponent, of at most ten
    /// digits (every accepted amount has fewer).
    fn integer(&mut self) -> Option<u64> {
        let start = self.i;
        let mut n = 0u64;
        while let Some(d @ b'0'..=b'9') = self.b.get(self.i).copied() {
            n = n * 10 + u64::from(d - b'0');
            self.i += 1;
            if self.i - start > 10 {
                return None;
            }
        }
        let digits = &self.b[start..self.i];
        if digits.is_empty()
            || (digits[0] == b'0')
            || matches!(self.b.get(self.i), Some(b'.' | b'e' | b'E'))
        {
            return None;
        }
        Some(n)
    }
}

/// The general path: `serde_json` field by field, so that every problem
/// gets its reason, its field and a precise detail.
pub fn validate_general(
    bytes: &[u8],
    reference: &Reference,
    limits: &Limits,
) -> Result<PaymentEvent, Rejection> {
    if bytes.len() > limits.max_record_bytes {
        return Err(Rejection::new(
            Reason::TooLarge,
            None,
            format!(
                "record is {} bytes, more than the limit of {}",
                bytes.len(),
                limits.max_record_bytes
            ),
        ));
    }
    let text = std::str::from_utf8(bytes).map_err(|e| {
        Rejection::new(
            Reason::InvalidUtf8,
            None,
            format!("record is not valid UTF-8 (at byte {})", e.valid_up_to()),
        )
    })?;
    let fields = parse_fields(text)?;
    check_fields(fields, reference)
}

/// The top-level fields of an object, by position in [`FIELDS`].
type Fields = [Option<Value>; 9];

fn parse_fields(text: &str) -> Result<Fields, Rejection> {
    let mut de = serde_json::Deserializer::from_str(text);
    let parsed = de.deserialize_any(TopLevel).map_err(|e| {
        Rejection::new(
            Reason::InvalidJson,
            None,
            format!("record is not valid JSON: {}", json_error(&e)),
        )
    })?;
    de.end().map_err(|e| {
        Rejection::new(
            Reason::InvalidJson,
            None,
            format!("record is not valid JSON: {}", json_error(&e)),
        )
    })?;
    match parsed {
        TopLevelResult::Fields(f) => Ok(*f),
        TopLevelResult::Reject(r) => Err(r),
    }
}

/// serde_json errors say where, never what the bytes were.
fn json_error(e: &serde_json::Error) -> String {
    use serde_json::error::Category;
    let what = match e.classify() {
        Category::Eof => "unexpected end of input",
        Category::Syntax => "syntax error",
        Category::Io => "read error",
        Category::Data => "unexpected value",
    };
    if e.to_string().contains("recursion limit") {
        return format!(
            "nesting too deep at line {} column {}",
            e.line(),
            e.column()
        );
    }
    format!("{what} at line {} column {}", e.line(), e.column())
}

enum TopLevelResult {
    Fields(Box<Fields>),
    Reject(Rejection),
}

struct TopLevel;

impl<'de> Visitor<'de> for TopLevel {
    type Value = TopLevelResult;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut fields: Fields = Default::default();
        let mut first_problem: Option<Rejection> = None;
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            let value: Value = map.next_value()?;
            if first_problem.is_some() {
                continue; // keep consuming so JSON syntax errors still win
            }
            match FIELDS.iter().position(|f| *f == key) {
                Some(i) if fields[i].is_some() => {
                    first_problem = Some(Rejection::new(
                        Reason::DuplicateField,
                        Some(FIELDS[i]),
                        format!("field `{}` appears more than once", FIELDS[i]),
                    ));
                }
                Some(i) => fields[i] = Some(value),
                None => {
                    first_problem = Some(Rejection::new(
                        Reason::UnknownField,
                        None,
                        format!(
                            "unknown field {}; only the fields of payment_event.v1 are accepted",
                            describe_key(&key)
                        ),
                    ));
                }
            }
        }
        Ok(match first_problem {
            Some(r) => TopLevelResult::Reject(r),
            None => TopLevelResult::Fields(Box::new(fields)),
        })
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok(not_an_object("a boolean"))
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
        Ok(not_an_object("a number"))
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
        Ok(not_an_object("a number"))
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Ok(not_an_object("a number"))
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
        Ok(not_an_object("a string"))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(not_an_object("null"))
    }
    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<de::IgnoredAny>()?.is_some() {}
        Ok(not_an_object("an array"))
    }
}

fn not_an_object(what: &str) -> TopLevelResult {
    TopLevelResult::Reject(Rejection::new(
        Reason::NotAnObject,
        None,
        format!("record must be a JSON object, found {what}"),
    ))
}

/// Names an unknown key without repeating anything that is not a plain
/// identifier (a key could itself be a name or a phone number).
fn describe_key(key: &str) -> String {
    let plain = (1..=64).contains(&key.len())
        && key
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        && key.bytes().any(|b| b.is_ascii_lowercase());
    if plain {
        format!("`{key}`")
    } else {
        format!(
            "({} characters, not shown because it is not a lowercase identifier)",
            key.chars().count()
        )
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn string_field(fields: &mut Fields, i: usize) -> Result<Option<String>, Rejection> {
    match fields[i].take() {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(Rejection::new(
            Reason::WrongType,
            Some(FIELDS[i]),
            format!(
                "`{}` must be a string, found {}",
                FIELDS[i],
                type_name(&other)
            ),
        )),
    }
}

fn check_fields(mut fields: Fields, reference: &Reference) -> Result<PaymentEvent, Rejection> {
    if let Some(i) = (0..FIELDS.len()).find(|&i| !OPTIONAL[i] && fields[i].is_none()) {
        return Err(Rejection::new(
            Reason::MissingField,
            Some(FIELDS[i]),
            format!("required field `{}` is missing", FIELDS[i]),
        ));
    }
    // Types first, in schema order, so one record gets one stable answer.
    let amount = fields[6].take();
    if let Some(v) = &amount {
        if !v.is_number() {
            return Err(Rejection::new(
                Reason::WrongType,
                Some("amount_idr"),
                format!("`amount_idr` must be an integer, found {}", type_name(v)),
            ));
        }
    }
    let mut strings: [Option<String>; 9] = Default::default();
    for i in [0, 1, 2, 3, 4, 5, 7, 8] {
        strings[i] = string_field(&mut fields, i)?;
    }
    let [event_id, occurred_at, merchant_id, district_code, sector, kbli_code, _, channel, merchant_size] =
        strings;
    let (event_id, occurred_at, merchant_id, district_code, sector, channel, merchant_size) = (
        event_id.unwrap_or_default(),
        occurred_at.unwrap_or_default(),
        merchant_id.unwrap_or_default(),
        district_code.unwrap_or_default(),
        sector.unwrap_or_default(),
        channel.unwrap_or_default(),
        merchant_size.unwrap_or_default(),
    );

    if !is_token(&event_id, 1, 64) {
        return Err(Rejection::new(
            Reason::BadEventId,
            Some("event_id"),
            format!(
                "`event_id` must be 1-64 characters of [A-Za-z0-9_-] (got {} characters)",
                event_id.chars().count()
            ),
        ));
    }
    let occurred_at = Timestamp::parse_rfc3339(&occurred_at).ok_or_else(|| {
        Rejection::new(
            Reason::BadTimestamp,
            Some("occurred_at"),
            "`occurred_at` must be an RFC 3339 date-time with a UTC offset and at least millisecond precision, e.g. 2024-03-01T09:15:02.123+07:00",
        )
    })?;
    if !is_token(&merchant_id, 8, 64) {
        return Err(Rejection::new(
            Reason::BadMerchantId,
            Some("merchant_id"),
            format!(
                "`merchant_id` must be a producer-side pseudonym of 8-64 characters of [A-Za-z0-9_-] (got {} characters)",
                merchant_id.chars().count()
            ),
        ));
    }
    if reference.district(&district_code).is_none() {
        let shown = if crate::reference::is_code(&district_code, 3) {
            format!(" `{district_code}`")
        } else {
            String::new()
        };
        return Err(Rejection::new(
            Reason::UnknownDistrict,
            Some("district_code"),
            format!(
                "`district_code`{shown} is not a kecamatan code in the district reference table"
            ),
        ));
    }
    let sector = Sector::from_letter(&sector).ok_or_else(|| {
        Rejection::new(
            Reason::BadSector,
            Some("sector"),
            "`sector` must be a KBLI 2020 category letter A-U",
        )
    })?;
    if let Some(kbli) = &kbli_code {
        let kbli_sector = reference.kbli_sector(kbli).ok_or_else(|| {
            Rejection::new(
                Reason::BadKbliCode,
                Some("kbli_code"),
                "`kbli_code` must be a 5-digit KBLI 2020 code of an existing division",
            )
        })?;
        if kbli_sector != sector {
            return Err(Rejection::new(
                Reason::KbliSectorMismatch,
                Some("kbli_code"),
                format!(
                    "`kbli_code` {kbli} belongs to category {}, but `sector` is {}",
                    kbli_sector.as_str(),
                    sector.as_str()
                ),
            ));
        }
    }
    let amount_idr = amount
        .as_ref()
        .and_then(integral_u64)
        .filter(|a| (1..=MAX_AMOUNT_IDR).contains(a))
        .ok_or_else(|| {
            Rejection::new(
                Reason::AmountOutOfRange,
                Some("amount_idr"),
                format!("`amount_idr` must be a whole number of rupiah from 1 to {MAX_AMOUNT_IDR}"),
            )
        })?;
    let channel = Channel::parse(&channel).ok_or_else(|| {
        Rejection::new(
            Reason::BadChannel,
            Some("channel"),
            "`channel` must be one of qris, debit_card, credit_card, ewallet, bank_transfer, other",
        )
    })?;
    let merchant_size = MerchantSize::parse(&merchant_size).ok_or_else(|| {
        Rejection::new(
            Reason::BadMerchantSize,
            Some("merchant_size"),
            "`merchant_size` must be one of micro, small, medium",
        )
    })?;
    Ok(PaymentEvent {
        event_id,
        occurred_at,
        merchant_id,
        district_code,
        sector,
        kbli_code,
        amount_idr,
        channel,
        merchant_size,
    })
}

/// JSON Schema's `integer`: any number with no fractional part (`5`, `5.0`,
/// `5e2`), as a `u64` if it is a non-negative one that fits.
fn integral_u64(v: &Value) -> Option<u64> {
    let n = v.as_number()?;
    if let Some(u) = n.as_u64() {
        return Some(u);
    }
    let f = n.as_f64()?;
    (f.fract() == 0.0 && (0.0..=u64::MAX as f64).contains(&f)).then_some(f as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const VALID: &str = r#"{"event_id":"evt-1","occurred_at":"2024-03-01T09:15:02.123+07:00","merchant_id":"m-00000001","district_code":"31.74.09","sector":"I","kbli_code":"56101","amount_idr":25000,"channel":"qris","merchant_size":"micro"}"#;

    fn check(s: &str) -> Result<PaymentEvent, Rejection> {
        validate(s.as_bytes(), &Reference::jakarta(), &Limits::default())
    }

    fn reason(s: &str) -> &'static str {
        check(s).unwrap_err().reason.code()
    }

    fn with(field: &str, json_value: &str) -> String {
        let mut v: serde_json::Map<String, Value> = serde_json::from_str(VALID).unwrap();
        v.insert(field.into(), serde_json::from_str(json_value).unwrap());
        Value::Object(v).to_string()
    }

    /// Records built from fields that are each valid or not in some way,
    /// in any order, with any whitespace, sometimes a field twice, an
    /// unknown one, or a value of another type.
    fn record() -> impl Strategy<Value = String> {
        let pick = |xs: &'static [&'static str]| proptest::sample::select(xs);
        // Mostly valid values, so that many records pass and the fast path
        // is compared where it answers.
        let field = |valid: &'static [&'static str], invalid: &'static [&'static str]| prop_oneof![6 => proptest::sample::select(valid), 1 => proptest::sample::select(invalid)];
        let fields = (
            field(
                &["\"evt-1\"", "\"E_2\""],
                &["\"\"", "\"e v\"", "\"evt\\u002d1\"", "12", "\"évt\""],
            ),
            field(
                &[
                    "\"2024-03-01T09:15:02.123+07:00\"",
                    "\"2024-03-01T02:15:02.123Z\"",
                ],
                &["\"2024-03-01 09:15:02\"", "\"2024-02-30T09:15:02.123Z\""],
            ),
            field(
                &["\"m-00000001\""],
                &["\"m-1\"", "\"merchant\\\"x\"", "null"],
            ),
            field(
                &["\"31.74.09\"", "\"31.71.01\""],
                &["\"31.99.99\"", "\"3174\""],
            ),
            field(&["\"I\""], &["\"G\"", "\"Z\"", "\"i\""]),
            field(&["\"56101\"", ""], &["\"47111\"", "\"99999\"", "null"]),
            field(
                &["25000", "1000000000", "1"],
                &[
                    "0",
                    "025",
                    "1000000001",
                    "25000.0",
                    "2.5e4",
                    "-5",
                    "\"25000\"",
                    "99999999999",
                ],
            ),
            field(&["\"qris\"", "\"ewallet\""], &["\"cash\""]),
            field(&["\"micro\""], &["\"huge\""]),
        );
        (
            fields,
            proptest::sample::subsequence((0..9usize).collect::<Vec<_>>(), 7..=9).prop_shuffle(),
            proptest::collection::vec(pick(&["", "", " ", "\n", "\t ", "\r\n"]), 40),
            pick(&["", "", "", "dup", "unknown", "trailing"]),
        )
            .prop_map(|(f, order, ws, extra)| {
                let values = [f.0, f.1, f.2, f.3, f.4, f.5, f.6, f.7, f.8];
                let mut parts: Vec<String> = order
                    .iter()
                    .filter(|&&i| !values[i].is_empty())
                    .enumerate()
                    .map(|(n, &i)| {
                        format!(
                            "{}\"{}\"{}:{}{}",
                            ws[n],
                            FIELDS[i],
                            ws[n + 10],
                            ws[n + 20],
                            values[i]
                        )
                    })
                    .collect();
                match extra {
                    "dup" => parts.push(format!("\"channel\":{}", values[7])),
                    "unknown" => parts.push("\"customer_name\":\"Budi\"".into()),
                    _ => {}
                }
                let tail = if extra == "trailing" { " x" } else { ws[39] };
                format!("{}{{{}{}}}{}", ws[30], parts.join(","), ws[31], tail)
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2048))]
        #[test]
        fn the_fast_path_accepts_only_what_the_general_path_accepts(r in record()) {
            let (reference, limits) = (Reference::jakarta(), Limits::default());
            let general = validate_general(r.as_bytes(), &reference, &limits);
            match validate_fast(r.as_bytes(), &reference, &limits) {
                Some(e) => prop_assert_eq!(general, Ok(e), "{}", r),
                // Without escapes, fractions or exponents, whatever the
                // general path accepts, the fast path does too.
                None => prop_assert!(
                    general.is_err() || r.contains('\\') || r.contains("25000.0") || r.contains("2.5e4"),
                    "{}", r
                ),
            }
        }

        #[test]
        fn the_record_written_in_place_is_the_record_built_and_written(
            r in record(),
            producer in prop_oneof!["[a-z0-9-]{1,12}", any::<String>()],
            rotating in any::<bool>(),
            backfill in any::<bool>(),
        ) {
            use crate::{record::write_record, PaymentRecord, Pseudonymiser, Secret};
            let (reference, limits) = (Reference::jakarta(), Limits::default());
            let Some(event) = validate_in_place(r.as_bytes(), &reference, &limits) else {
                return Ok(());
            };
            let mut p = Pseudonymiser::new("k2", &Secret::new("0123456789abcdef0123456789abcdef")).unwrap();
            if rotating {
                let old = Pseudonymiser::new("k1", &Secret::new("fedcba9876543210fedcba9876543210")).unwrap();
                p = p.with_previous(old).unwrap();
            }
            let mut built = PaymentRecord::from_event(event.to_owned(), &producer, &p);
            built.backfill = backfill;
            let mut written = b"left as it was".to_vec();
            write_record(&mut written, &event, &producer, &p, backfill);
            prop_assert_eq!(&written[..14], b"left as it was");
            prop_assert_eq!(String::from_utf8(written[14..].to_vec()).unwrap(), String::from_utf8(built.to_json()).unwrap());
        }
    }

    #[test]
    fn the_fast_path_takes_the_events_producers_send() {
        let (reference, limits) = (Reference::jakarta(), Limits::default());
        let e = validate_fast(VALID.as_bytes(), &reference, &limits).expect("fast path");
        assert_eq!(
            Ok(e),
            validate_general(VALID.as_bytes(), &reference, &limits)
        );
        let spaced = VALID.replace("\":", "\" : ").replace(",\"", ",\n \"");
        assert!(validate_fast(spaced.as_bytes(), &reference, &limits).is_some());
        let escaped = VALID.replace("evt-1", "evt\\u002d1");
        assert!(validate_fast(escaped.as_bytes(), &reference, &limits).is_none());
        assert_eq!(check(&escaped).unwrap().event_id, "evt-1");
    }

    #[test]
    fn accepts_a_valid_event() {
        let e = check(VALID).unwrap();
        assert_eq!(e.event_id, "evt-1");
        assert_eq!(e.sector.as_str(), "I");
        assert_eq!(e.amount_idr, 25_000);
        assert_eq!(e.occurred_at.to_string(), "2024-03-01T02:15:02.123Z");
        assert_eq!(e.channel, Channel::Qris);
    }

    #[test]
    fn codes_are_unique_snake_case() {
        let mut codes: Vec<_> = Reason::ALL.iter().map(|r| r.code()).collect();
        assert!(codes.iter().all(|c| c
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')));
        codes.sort();
        codes.dedup();
        assert_eq!(codes.len(), Reason::ALL.len());
    }

    #[test]
    fn each_rule_has_its_reason() {
        assert_eq!(reason(""), "invalid_json");
        assert_eq!(reason("{"), "invalid_json");
        assert_eq!(reason(&format!("{VALID} {{}}")), "invalid_json");
        assert_eq!(reason("[1,2]"), "not_an_object");
        assert_eq!(reason("\"x\""), "not_an_object");
        assert_eq!(reason("null"), "not_an_object");
        assert_eq!(reason(&with("customer_name", "\"Budi\"")), "unknown_field");
        assert_eq!(
            reason(&VALID.replace(
                "\"channel\":\"qris\"",
                "\"channel\":\"qris\",\"channel\":\"qris\""
            )),
            "duplicate_field"
        );
        assert_eq!(
            reason(&VALID.replace("\"event_id\":\"evt-1\",", "")),
            "missing_field"
        );
        assert_eq!(reason(&with("event_id", "12")), "wrong_type");
        assert_eq!(reason(&with("amount_idr", "\"25000\"")), "wrong_type");
        assert_eq!(reason(&with("kbli_code", "null")), "wrong_type");
        assert_eq!(reason(&with("event_id", "\"has space\"")), "bad_event_id");
        assert_eq!(reason(&with("event_id", "\"\"")), "bad_event_id");
        assert_eq!(
            reason(&with("occurred_at", "\"2024-03-01T09:15:02+07:00\"")),
            "bad_timestamp"
        );
        assert_eq!(
            reason(&with("occurred_at", "\"2024-03-01T09:15:02.123\"")),
            "bad_timestamp"
        );
        assert_eq!(reason(&with("merchant_id", "\"short\"")), "bad_merchant_id");
        assert_eq!(
            reason(&with("district_code", "\"31.76.01\"")),
            "unknown_district"
        );
        assert_eq!(reason(&with("sector", "\"V\"")), "bad_sector");
        assert_eq!(reason(&with("sector", "\"i\"")), "bad_sector");
        assert_eq!(reason(&with("kbli_code", "\"5610\"")), "bad_kbli_code");
        assert_eq!(reason(&with("kbli_code", "\"34000\"")), "bad_kbli_code");
        assert_eq!(
            reason(&with("kbli_code", "\"47111\"")),
            "kbli_sector_mismatch"
        );
        assert_eq!(reason(&with("amount_idr", "0")), "amount_out_of_range");
        assert_eq!(reason(&with("amount_idr", "-5")), "amount_out_of_range");
        assert_eq!(
            reason(&with("amount_idr", "1000000001")),
            "amount_out_of_range"
        );
        assert_eq!(reason(&with("amount_idr", "2.5")), "amount_out_of_range");
        assert_eq!(reason(&with("channel", "\"cash\"")), "bad_channel");
        assert_eq!(
            reason(&with("merchant_size", "\"large\"")),
            "bad_merchant_size"
        );
        assert_eq!(reason(&format!("{VALID}\u{0}")), "invalid_json");
    }

    #[test]
    fn integral_floats_are_integers_like_json_schema_says() {
        assert_eq!(
            check(&with("amount_idr", "25000.0")).unwrap().amount_idr,
            25_000
        );
        assert_eq!(
            check(&with("amount_idr", "1e9")).unwrap().amount_idr,
            1_000_000_000
        );
    }

    #[test]
    fn details_never_echo_personal_values() {
        let r = check(&with("Budi Santoso 0812-3456-7890", "1")).unwrap_err();
        assert_eq!(r.reason, Reason::UnknownField);
        assert!(
            !r.detail.contains("Budi") && !r.detail.contains("0812"),
            "{}",
            r.detail
        );
        let r = check(&with("phone", "\"0812-3456-7890\"")).unwrap_err();
        assert!(
            r.detail.contains("`phone`") && !r.detail.contains("0812"),
            "{}",
            r.detail
        );
        let r = check(&with("merchant_id", "\"Budi Santoso\"")).unwrap_err();
        assert!(!r.detail.contains("Budi"), "{}", r.detail);
        let r = check(&with("district_code", "\"Jl. Melati 5\"")).unwrap_err();
        assert!(!r.detail.contains("Melati"), "{}", r.detail);
    }

    #[test]
    fn bytes_that_are_not_text_or_too_big() {
        let r = validate(
            b"{\"event_id\":\"\xff\"}",
            &Reference::jakarta(),
            &Limits::default(),
        )
        .unwrap_err();
        assert_eq!(r.reason, Reason::InvalidUtf8);
        let limits = Limits {
            max_record_bytes: 100,
        };
        let r = validate(VALID.as_bytes(), &Reference::jakarta(), &limits).unwrap_err();
        assert_eq!(r.reason, Reason::TooLarge);
        let deep = "[".repeat(100_000);
        assert_eq!(
            validate(
                deep.as_bytes(),
                &Reference::jakarta(),
                &Limits {
                    max_record_bytes: 1 << 20
                }
            )
            .unwrap_err()
            .reason,
            Reason::InvalidJson
        );
    }
}
