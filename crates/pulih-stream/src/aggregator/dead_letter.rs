//! Records that cannot be counted: their dead-letter payload, and sending
//! them so that the checkpoint never passes one the broker did not take.

use std::time::Duration;

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::BorrowedMessage;
use rdkafka::producer::{BaseRecord, Producer};
use rdkafka::Message;
use serde::Serialize;

use super::Shared;

/// A dead-letter record to produce: (source partition, JSON payload).
pub(super) type DeadRecord = (i32, Vec<u8>);

/// A record on the dead-letter topic.
#[derive(Debug, Serialize)]
struct DeadLetter<'a> {
    reason: &'a str,
    detail: String,
    topic: &'a str,
    partition: i32,
    offset: i64,
    /// The record as it was, lossy UTF-8.
    record: String,
}

/// The dead-letter payload of a record (the record itself is cut at 64 KiB).
pub(super) fn payload(
    topic: &str,
    m: &BorrowedMessage<'_>,
    reason: &str,
    detail: String,
) -> Vec<u8> {
    let raw = m.payload().unwrap_or(&[]);
    let raw = &raw[..raw.len().min(64 * 1024)];
    serde_json::to_vec(&DeadLetter {
        reason,
        detail,
        topic,
        partition: m.partition(),
        offset: m.offset(),
        record: String::from_utf8_lossy(raw).into_owned(),
    })
    .unwrap_or_default()
}

impl Shared {
    /// Produces the dead letters and waits until the broker has them all.
    pub(super) fn send_dead_letters(&self, dead: &[DeadRecord]) -> Result<(), String> {
        for (partition, payload) in dead {
            let key = partition.to_string();
            let mut record = BaseRecord::to(&self.config.dlq_topic)
                .key(&key)
                .payload(payload);
            // A full queue: let it drain.
            loop {
                match self.dlq.send(record) {
                    Ok(()) => break,
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                        record = r;
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    Err((e, _)) => return Err(format!("dead-letter topic: {e}")),
                }
            }
        }
        self.dlq
            .flush(Duration::from_secs(30))
            .map_err(|e| format!("dead-letter topic: {e}"))
    }
}
