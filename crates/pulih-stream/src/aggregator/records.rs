//! One consumed record: decode it, fold it into its partition's core, and
//! count what became of it under exactly one outcome.

use std::time::Instant;

use rdkafka::message::BorrowedMessage;
use rdkafka::Message;

use crate::core::{Event, Outcome};
use crate::decode::decode;

use pulih_store::{MerchantLinkRow, MerchantProducerRow};

use super::{archive, dead_letter, now_secs, Shared};

impl Shared {
    pub(super) fn handle(&self, m: &BorrowedMessage<'_>) {
        let mut st = self.state();
        let st = &mut *st;
        let p = m.partition();
        let Some(part) = st.parts.get_mut(&p) else {
            return;
        };
        part.last_record = Instant::now();
        part.at_end = false;
        st.stats.records += 1;
        let payload = m.payload().unwrap_or(&[]);
        let topic = &self.config.topic;
        match decode(payload, &self.reference) {
            Ok(event) if !in_its_partition(m, &event, st.partition_count) => {
                part.core.skip(m.offset());
                st.stats.wrong_partition += 1;
                tracing::warn!(
                    message = "Record in the wrong partition dead-lettered.",
                    partition = p,
                    offset = m.offset()
                );
                let detail = "the record's key is not its district|sector, or does not map to this partition (CRC32 of the key modulo the partition count, librdkafka's partitioner): it was produced with another partitioner or an outdated partition count";
                st.dead.push((
                    p,
                    dead_letter::payload(topic, m, "wrong_partition", detail.into()),
                ));
                for counter in [&self.metrics.records, &self.metrics.dead_lettered] {
                    counter.with_label_values(&["wrong_partition"]).inc();
                }
            }
            Ok(event) => {
                // Forgetting only costs a row written again (the table
                // keeps one per key), so the sets are bounded.
                if st.producers_known.len() >= super::KNOWN_MERCHANTS_CAP {
                    st.producers_known.clear();
                }
                if st.links_known.len() >= super::KNOWN_MERCHANTS_CAP {
                    st.links_known.clear();
                }
                if st.producers_known.insert(event.merchant) {
                    st.producers.push(MerchantProducerRow {
                        merchant_key: event.merchant,
                        producer_id: event.producer.as_str().to_owned(),
                        first_seen: now_secs(),
                    });
                }
                if let Some(previous) = event.previous_merchant {
                    if st.links_known.insert(event.merchant) {
                        st.links.push(MerchantLinkRow {
                            merchant_key: event.merchant,
                            previous_key: previous,
                            first_seen: now_secs(),
                        });
                    }
                }
                let ts = m.timestamp().to_millis().unwrap_or(event.occurred_ms);
                let outcome = part.core.fold(m.offset(), ts, &event);
                if outcome == Outcome::Pending && part.core.pending_len() >= super::PENDING_CAP {
                    st.flush_now = true;
                }
                let label = st.stats.count(outcome);
                let counted = matches!(
                    outcome,
                    Outcome::Applied | Outcome::Late | Outcome::Replayed | Outcome::Pending
                );
                if self.config.archive_payments && counted {
                    match archive::payment_row(payload, p, m.offset(), ts) {
                        Some(row) if outcome == Outcome::Pending => {
                            st.pending_payments.insert((p, m.offset()), row);
                        }
                        Some(row) => st.payments.push(row),
                        None => tracing::warn!(
                            message = "Counted record not archived: it does not parse as a payment record.",
                            partition = p,
                            offset = m.offset()
                        ),
                    }
                }
                if outcome == Outcome::TooOld {
                    let detail = format!(
                        "occurred_at is more than {} s older than the record's Kafka timestamp, and the record is not a backfill",
                        self.config.core.max_age_ms / 1000
                    );
                    st.dead
                        .push((p, dead_letter::payload(topic, m, "too_old", detail)));
                    self.metrics
                        .dead_lettered
                        .with_label_values(&["too_old"])
                        .inc();
                }
                if let Some(label) = label {
                    self.metrics.records.with_label_values(&[label]).inc();
                }
            }
            Err(error) => {
                part.core.skip(m.offset());
                st.stats.undecodable += 1;
                tracing::warn!(
                    message = "Undecodable record dead-lettered.",
                    partition = p,
                    offset = m.offset(),
                    reason = error.code()
                );
                st.dead.push((
                    p,
                    dead_letter::payload(topic, m, error.code(), error.to_string()),
                ));
                self.metrics
                    .dead_lettered
                    .with_label_values(&[error.code()])
                    .inc();
                self.metrics
                    .records
                    .with_label_values(&["undecodable"])
                    .inc();
            }
        }
    }
}

/// Whether the record's key is its cell (`district|sector`) and maps to its
/// partition the way the intake's producer partitions (librdkafka's
/// `consistent_random`: CRC32 of the key modulo the partition count). A cell
/// must live in one partition: a record anywhere else would be counted
/// into rows another partition owns.
fn in_its_partition(m: &BorrowedMessage<'_>, event: &Event, partition_count: i32) -> bool {
    let mut key = [0u8; 10];
    key[..8].copy_from_slice(&event.district);
    key[8] = b'|';
    key[9] = event.sector.as_str().as_bytes()[0];
    m.key() == Some(&key[..])
        && partition_count > 0
        && (crc32fast::hash(&key) % partition_count as u32) as i32 == m.partition()
}
