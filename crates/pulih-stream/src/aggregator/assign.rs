//! Which partitions this process owns, and taking them over.
//!
//! Ownership is static: with `instances` processes, the one with index
//! `instance` owns every partition `p` with `p % instances == instance`
//! (a StatefulSet ordinal is a natural index). No consumer-group
//! coordinator is involved, so a crashed process's partitions come back
//! as soon as it restarts, whatever state the broker kept of the group.
//! Where to resume comes from the checkpoints in ClickHouse, as before;
//! two processes that own the same partition by mistake (or during a
//! rolling restart) still write exactly-once rows (`docs/semantics.md`).

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};

use crate::core::{self, Partition};

use super::{AggregateError, Ctx, Failure, Part, Shared, STORE_TIMEOUT};

/// The partitions of a topic with `partition_count` partitions that
/// instance `instance` of `instances` owns.
pub fn owned_partitions(partition_count: i32, instance: u32, instances: u32) -> Vec<i32> {
    (0..partition_count)
        .filter(|&p| instances > 0 && (p as u32) % instances == instance)
        .collect()
}

impl Shared {
    /// The topic's partition count as the broker reports it now.
    pub(super) fn partition_count(
        &self,
        consumer: &BaseConsumer<Ctx>,
        timeout: Duration,
    ) -> Result<i32, String> {
        let md = consumer
            .fetch_metadata(Some(&self.config.topic), timeout)
            .map_err(|e| e.to_string())?;
        let Some(t) = md.topics().first() else {
            return Err("the broker returned no metadata for the topic".into());
        };
        if let Some(e) = t.error() {
            return Err(rdkafka::error::RDKafkaErrorCode::from(e).to_string());
        }
        match t.partitions().len() {
            0 => Err("the topic has no partitions".into()),
            n => Ok(n as i32),
        }
    }

    /// Runs `attempt` until it succeeds (`Some`), fails in a way retrying
    /// cannot fix (`Err`), or the process is asked to stop (`None`), with
    /// backoff from 100 ms to 5 s. Each retried failure is logged under
    /// `what` and passed to `failed`.
    fn retry<T>(
        &self,
        what: &'static str,
        mut attempt: impl FnMut() -> Result<T, Failure>,
        mut failed: impl FnMut(&Failure),
    ) -> Result<Option<T>, Failure> {
        let mut backoff = Duration::from_millis(100);
        loop {
            match attempt() {
                Ok(v) => return Ok(Some(v)),
                Err(error) if !error.retryable => return Err(error),
                Err(error) => {
                    failed(&error);
                    tracing::warn!(message = what, %error, backoff_ms = backoff.as_millis() as u64);
                }
            }
            if self.shutdown.load(Ordering::Relaxed) {
                return Ok(None);
            }
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }

    /// Waits until the broker reports the topic, or the process is asked to
    /// stop.
    pub(super) fn wait_for_partition_count(&self, consumer: &BaseConsumer<Ctx>) -> Option<i32> {
        self.retry(
            "Cannot read the topic's partitions from the broker; no partition is assigned until it answers; retrying.",
            || {
                self.partition_count(consumer, Duration::from_secs(10))
                    .map_err(Failure::retryable)
            },
            |_| {},
        )
        .ok()
        .flatten()
    }

    /// Checks the topic's partition count against the one recorded the
    /// first time an aggregator ran on it (and records it on that first
    /// run). A different count means cells moved to other partitions: that
    /// is an error. `Ok(false)` when asked to stop first.
    pub(super) fn check_layout(&self, partition_count: i32) -> Result<bool, AggregateError> {
        let recorded = self
            .retry(
                "Cannot check the topic's recorded partition count; retrying.",
                || {
                    self.block_on(
                        self.store
                            .record_layout(&self.config.topic, partition_count),
                    )
                },
                |_| self.metrics.store_errors.inc(),
            )
            .map_err(|e| AggregateError::Fatal(e.message))?;
        match recorded {
            None => Ok(false),
            Some(was) if was == partition_count => Ok(true),
            Some(was) => Err(AggregateError::PartitionCountChanged {
                topic: self.config.topic.clone(),
                was,
                now: partition_count,
            }),
        }
    }

    /// Restores the owned partitions from ClickHouse and starts consuming
    /// each at its checkpoint. Returns `Ok(false)` when asked to stop first.
    pub(super) fn take_over(
        &self,
        consumer: &BaseConsumer<Ctx>,
        owned: &[i32],
    ) -> Result<bool, AggregateError> {
        let started = Instant::now();
        let mut tpl = TopicPartitionList::new();
        let Some(restored) = self
            .restore(owned)
            .map_err(|e| AggregateError::Fatal(e.message))?
        else {
            return Ok(false);
        };
        for (id, core) in &restored {
            let offset = core.next_offset();
            tpl.add_partition_offset(
                &self.config.topic,
                *id,
                if offset > 0 {
                    Offset::Offset(offset)
                } else {
                    Offset::Beginning
                },
            )
            .map_err(|source| self.kafka_error(source))?;
        }
        {
            let mut st = self.state();
            for (id, core) in restored {
                st.parts.insert(
                    id,
                    Part {
                        core,
                        last_record: Instant::now(),
                        at_end: false,
                        hi_offset: -1,
                    },
                );
            }
            self.metrics.assigned_partitions.set(st.parts.len() as i64);
        }
        consumer
            .assign(&tpl)
            .map_err(|source| self.kafka_error(source))?;
        tracing::info!(
            message = "Partitions assigned.",
            partitions = ?owned,
            restore_ms = started.elapsed().as_millis() as u64
        );
        Ok(true)
    }

    /// Restores the owned partitions, retrying until ClickHouse answers
    /// (or the process is asked to stop: `None`), unless retrying cannot
    /// help. While it fails, `pulih_aggregate_stalled` is 1.
    fn restore(&self, owned: &[i32]) -> Result<Option<Vec<(i32, Partition)>>, Failure> {
        let restored = self.retry(
            "Cannot restore the partitions from ClickHouse; retrying.",
            // A restore reads every open window and merchant-day: give it longer.
            || self.block_on_for(STORE_TIMEOUT * 20, self.try_restore(owned)),
            |_| {
                self.metrics.store_errors.inc();
                self.metrics.stalled.set(1);
            },
        );
        if matches!(restored, Ok(Some(_))) {
            self.metrics.stalled.set(0);
        }
        restored
    }

    /// Reads the checkpoints of `owned`, then their open state in one scan
    /// of each table ([`pulih_store::Store::restore_open`]).
    async fn try_restore(
        &self,
        owned: &[i32],
    ) -> Result<Vec<(i32, Partition)>, pulih_store::StoreError> {
        let c = &self.config;
        let mut checkpoints = Vec::with_capacity(owned.len());
        for &partition in owned {
            checkpoints.push((
                partition,
                self.store.checkpoint(&c.topic, partition).await?,
                self.store.clocks(&c.topic, partition).await?,
            ));
        }
        let scopes: Vec<_> = checkpoints
            .iter()
            .filter_map(|(p, cp, clocks)| core::restore_scope(*p, &c.core, cp.as_ref(), clocks))
            .collect();
        let started = Instant::now();
        let state = self
            .store
            .restore_open(&c.topic, &scopes, c.core.window_ms / 1000)
            .await?;
        // Each partition's rows, in one pass over what was read.
        let mut parts: HashMap<i32, pulih_store::Restored> = HashMap::new();
        for r in state.activity {
            parts
                .entry(r.source_partition)
                .or_default()
                .activity
                .push(r);
        }
        for r in state.daily {
            parts.entry(r.source_partition).or_default().daily.push(r);
        }
        for r in state.seen {
            parts.entry(r.partition).or_default().seen.push(r);
        }
        let mut out = Vec::with_capacity(owned.len());
        for (partition, checkpoint, clocks) in checkpoints {
            let pulih_store::Restored {
                activity,
                daily,
                seen,
            } = parts.remove(&partition).unwrap_or_default();
            tracing::info!(
                message = "Partition restored.",
                partition,
                next_offset = checkpoint.as_ref().map_or(0, |c| c.next_offset),
                windows = activity.len(),
                merchant_days = daily.len(),
                counted_rows = seen.len()
            );
            out.push((
                partition,
                Partition::restore(
                    partition,
                    c.core,
                    checkpoint.as_ref(),
                    &clocks,
                    activity,
                    daily,
                    seen,
                ),
            ));
        }
        tracing::info!(
            message = "Open state read.",
            partitions = ?owned,
            read_ms = started.elapsed().as_millis() as u64
        );
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instances_split_the_partitions_without_overlap_or_gap() {
        for count in 1..20 {
            for instances in 1..8u32 {
                let mut all: Vec<i32> = (0..instances)
                    .flat_map(|i| owned_partitions(count, i, instances))
                    .collect();
                all.sort_unstable();
                assert_eq!(all, (0..count).collect::<Vec<_>>(), "{count} {instances}");
            }
        }
        assert_eq!(owned_partitions(6, 1, 4), vec![1, 5]);
        assert_eq!(owned_partitions(2, 3, 4), Vec::<i32>::new());
    }
}
