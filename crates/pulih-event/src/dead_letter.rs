//! The record on the dead-letter topic `pulih.payments.dlq.v1`
//! (`schemas/dead_letter.v1.json`): something that was not counted, and
//! why. The gateway writes one per rejected event; the aggregator one per
//! record on the payments topic it could not count. One format, so one
//! consumer can read both.

use serde::{Deserialize, Serialize};

/// Which component refused the record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// `pulih ingest` rejected an event of a request (the producer was told).
    Gateway,
    /// `pulih aggregate` could not count a record of the payments topic.
    Aggregate,
}

/// Where a record the aggregator refused is on the payments topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Source {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
}

/// One dead letter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeadLetter {
    pub stage: Stage,
    /// A stable reason code (`docs/reason-codes.md`).
    pub reason: String,
    /// What was wrong, for a person; never a value of the record.
    pub detail: String,
    /// When the record was refused, Unix milliseconds.
    pub at_ms: i64,
    /// The authenticated producer (gateway).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub producer_id: Option<String>,
    /// The record's index in its request, from 0 (gateway).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<u64>,
    /// The record's place on the payments topic (aggregate).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<Source>,
    /// The record as it was, lossy UTF-8, cut to a limit.
    pub raw: String,
    /// Whether `raw` was cut.
    pub raw_truncated: bool,
}

impl DeadLetter {
    /// A dead letter with `raw` cut to `max_raw` bytes; set the optional
    /// fields afterwards.
    pub fn new(
        stage: Stage,
        reason: &str,
        detail: impl Into<String>,
        at_ms: i64,
        raw: &[u8],
        max_raw: usize,
    ) -> DeadLetter {
        let cut = raw.len().min(max_raw);
        DeadLetter {
            stage,
            reason: reason.to_owned(),
            detail: detail.into(),
            at_ms,
            producer_id: None,
            index: None,
            source: None,
            raw: String::from_utf8_lossy(&raw[..cut]).into_owned(),
            raw_truncated: cut < raw.len(),
        }
    }

    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a dead letter serialises")
    }
}
