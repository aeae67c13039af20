//! Records that cannot be counted: their dead-letter payload, and sending
//! them so that the checkpoint never passes one the broker did not take.

use std::time::Duration;

use pulih_event::dead_letter::{DeadLetter, Source, Stage};

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::BorrowedMessage;
use rdkafka::producer::FutureRecord;
use rdkafka::Message;

use super::{Failure, Shared};

/// A dead-letter record to produce: (source partition, JSON payload).
pub(super) type DeadRecord = (i32, Vec<u8>);

/// The dead letter of a record the aggregator could not count
/// (`pulih_event::DeadLetter`, `schemas/dead_letter.v1.json`); the record is
/// cut at 64 KiB.
pub(super) fn payload(
    topic: &str,
    m: &BorrowedMessage<'_>,
    reason: &str,
    detail: String,
) -> Vec<u8> {
    let now_ms = pulih_event::calendar::now_ms();
    let mut letter = DeadLetter::new(
        Stage::Aggregate,
        reason,
        detail,
        now_ms,
        m.payload().unwrap_or(&[]),
        64 * 1024,
    );
    letter.source = Some(Source {
        topic: topic.to_owned(),
        partition: m.partition(),
        offset: m.offset(),
    });
    letter.to_json()
}

impl Shared {
    /// Produces the dead letters and waits for the broker's acknowledgement
    /// of each one. A record the broker did not take is an error, so the
    /// checkpoint never moves past a record whose dead letter is lost.
    pub(super) fn send_dead_letters(&self, dead: &[DeadRecord]) -> Result<(), Failure> {
        let mut pending = Vec::with_capacity(dead.len());
        for (partition, payload) in dead {
            let key = partition.to_string();
            let mut record = FutureRecord::to(&self.config.dlq_topic)
                .key(&key)
                .payload(payload);
            // A full queue: let it drain.
            loop {
                match self.dlq.send_result(record) {
                    Ok(delivery) => {
                        pending.push(delivery);
                        break;
                    }
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                        record = r;
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    Err((e, _)) => return Err(refused(e)),
                }
            }
        }
        let acknowledged = self.rt.block_on(tokio::time::timeout(ACK_TIMEOUT, async {
            for delivery in pending {
                match delivery.await {
                    Ok(Ok(_)) => {}
                    Ok(Err((e, _))) => return Err(e),
                    Err(_) => return Err(KafkaError::Canceled),
                }
            }
            Ok(())
        }));
        match acknowledged {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(refused(e)),
            Err(_) => Err(Failure::retryable(format!(
                "the dead-letter topic did not acknowledge within {} s; the checkpoint stays before the records",
                ACK_TIMEOUT.as_secs()
            ))),
        }
    }
}

/// How long the dead letters of one flush may take to be acknowledged.
const ACK_TIMEOUT: Duration = Duration::from_secs(60);

/// A dead letter the broker or the client refused. A record too large for
/// the topic, or a topic this account may not write, will be refused again:
/// that stops the process; anything else (timeouts, a broker away) is
/// retried.
fn refused(e: KafkaError) -> Failure {
    let code = match &e {
        KafkaError::MessageProduction(code) => Some(*code),
        _ => None,
    };
    let fatal = matches!(
        code,
        Some(
            RDKafkaErrorCode::MessageSizeTooLarge
                | RDKafkaErrorCode::InvalidMessageSize
                | RDKafkaErrorCode::TopicAuthorizationFailed
                | RDKafkaErrorCode::ClusterAuthorizationFailed
                | RDKafkaErrorCode::InvalidRecord
        )
    );
    Failure {
        retryable: !fatal,
        message: format!(
            "the dead-letter topic did not take a record ({e}); the checkpoint stays before it"
        ),
    }
}
