//! Making what was folded durable, in the order the exactly-once argument
//! needs (`docs/semantics.md`): raw records, merchants' producers and links,
//! fingerprints, merchant-days,
//! windows, dead letters, the producers' clocks, and only then the
//! checkpoints. Nothing is
//! committed to Kafka: consumption resumes from the checkpoints.

use std::time::{Duration, Instant};

use pulih_store::{ActivityRow, DailyRow, SeenRow};

use pulih_event::calendar::DAY_MS;

use crate::core::{Flush, Outcome};

use super::watermark::{is_idle, operator_watermark, Input, PartitionClock};
use super::{now_secs, Failure, Shared, State, Taken, STORE_TIMEOUT};

/// Hours of windows and days of merchant-days read back in one batch:
/// one query a table (pulih-store), the runs of consecutive hours and
/// days in one condition.
pub(super) const READBACK_RANGES: usize = 512;

/// How long one read-back batch of `ranges` hours and days may take: the
/// store's timeout, and 100 ms more per range.
fn readback_deadline(ranges: usize) -> Duration {
    STORE_TIMEOUT + Duration::from_millis(100) * ranges as u32
}

impl Shared {
    /// Takes a flush from every partition unless one is already pending,
    /// then tries to make it durable once. The open merchant-days that
    /// changed are taken with it every `daily_emit_interval`, or when
    /// `all_days`.
    pub(super) fn try_flush(&self, all_final: bool, all_days: bool) -> Result<bool, Failure> {
        let mut st = self.state();
        if st.pending.is_none() {
            self.advance_watermarks(&mut st);
            let ids: Vec<i32> = st.parts.keys().copied().collect();
            // Rows that late records need, read back in batches of a
            // bounded size, each under a deadline that grows with it; what
            // a batch decided stays decided when a later one fails, so a
            // retry goes on from there.
            for id in &ids {
                while let Some(part) = st.parts.get_mut(id) {
                    let batch = part.core.wanted_batch(READBACK_RANGES);
                    if batch.is_empty() {
                        break;
                    }
                    let hours: Vec<u32> = batch.hours.iter().map(|h| (h / 1000) as u32).collect();
                    let days: Vec<u16> = batch.days.iter().map(|d| *d as u16).collect();
                    let limit = readback_deadline(hours.len() + days.len());
                    let (a, d, seen): (Vec<ActivityRow>, Vec<DailyRow>, Vec<SeenRow>) = self
                        .block_on_for(limit, async {
                            tokio::try_join!(
                                self.store.activity_in(*id, &hours),
                                self.store.daily_in(*id, &days),
                                self.store.seen_in(&self.config.topic, *id, &hours),
                            )
                        })?;
                    for (offset, outcome) in part.core.supply_batch(&batch, a, d, seen) {
                        let Some(label) = st.stats.count(outcome) else {
                            continue;
                        };
                        self.metrics.records.with_label_values(&[label]).inc();
                        let row = st.pending_payments.remove(&(*id, offset));
                        if let (Some(row), Outcome::Late | Outcome::Replayed) = (row, outcome) {
                            st.payments.push(row);
                        }
                    }
                }
            }
            st.flush_now = false;
            let now_s = now_secs();
            let days =
                all_final || all_days || st.days_taken.elapsed() >= self.config.daily_emit_interval;
            if days {
                st.days_taken = Instant::now();
            }
            let mut flush = Flush::default();
            for id in &ids {
                if let Some(part) = st.parts.get_mut(id) {
                    let (topic, group_id) = (&self.config.topic, &self.config.group_id);
                    flush.append(if days {
                        part.core.take(topic, group_id, all_final, now_s)
                    } else {
                        part.core.take_holding_days(topic, group_id, now_s)
                    });
                }
            }
            st.pending = Some(Taken {
                flush,
                dead: std::mem::take(&mut st.dead),
                payments: std::mem::take(&mut st.payments),
                producers: std::mem::take(&mut st.producers),
                links: std::mem::take(&mut st.links),
            });
        }
        let taken = st.pending.as_ref().expect("set above");
        let (flush, payments) = (&taken.flush, &taken.payments);
        if flush.is_empty()
            && taken.dead.is_empty()
            && payments.is_empty()
            && taken.producers.is_empty()
            && taken.links.is_empty()
        {
            st.pending = None;
            return Ok(false);
        }
        let started = Instant::now();
        self.write(taken)?;
        self.metrics
            .flush_seconds
            .observe(started.elapsed().as_secs_f64());
        let rows = (flush.activity.len() + flush.daily.len()) as u64;
        for (table, n) in [
            ("activity_1m_by_producer", flush.activity.len()),
            ("merchant_activity_daily_by_time", flush.daily.len()),
            ("payments", payments.len()),
        ] {
            self.metrics
                .rows_written
                .with_label_values(&[table])
                .inc_by(n as u64);
        }
        st.stats.rows_written += rows;
        st.stats.flushes += 1;
        st.pending = None;
        Ok(true)
    }

    /// Makes everything folded so far durable: a flush that was already
    /// pending (taken before the latest records) and then a new one.
    pub(super) fn flush_fully(&self, all_final: bool, all_days: bool) -> Result<(), Failure> {
        let had_pending = self.state().pending.is_some();
        self.try_flush(all_final, all_days)?;
        if had_pending {
            self.try_flush(all_final, all_days)?;
        }
        Ok(())
    }

    /// Makes one flush durable, in the order the correctness argument
    /// needs: raw records (idempotent by key, so any time before the
    /// checkpoint), fingerprints and rows, dead letters, checkpoints, then
    /// how far each partition is complete.
    fn write(&self, taken: &Taken) -> Result<(), Failure> {
        let Taken {
            flush,
            dead,
            payments,
            producers,
            links,
        } = taken;
        self.block_on(self.store.insert_payments(payments))?;
        self.block_on(self.store.insert_merchant_producers(producers))?;
        self.block_on(self.store.insert_merchant_links(links))?;
        self.block_on(self.store.insert_seen(&flush.seen))?;
        self.faults.pass("after_seen");
        self.block_on(self.store.insert_daily(&flush.daily))?;
        self.faults.pass("after_daily");
        self.block_on(self.store.insert_activity(&flush.activity))?;
        self.faults.pass("after_activity");
        if !dead.is_empty() {
            self.send_dead_letters(dead)?;
            self.faults.pass("after_dead_letters");
        }
        self.block_on(self.store.insert_clocks(&flush.clocks))?;
        self.faults.pass("after_clocks");
        self.block_on(self.store.insert_checkpoints(&flush.checkpoints))?;
        self.faults.pass("after_checkpoint");
        self.block_on(self.store.insert_watermarks(&flush.watermarks))?;
        Ok(())
    }

    /// Raises every partition's watermark to the operator watermark and
    /// updates the gauges of what is held in memory.
    fn advance_watermarks(&self, st: &mut State) {
        let idle = self.config.idle_timeout;
        let paused = st.paused;
        let operator = operator_watermark(
            st.parts.values().map(|p| PartitionClock {
                watermark_ms: p.core.partition_watermark_ms(),
                idle: is_idle(Input {
                    at_end: p.at_end,
                    quiet: p.last_record.elapsed() >= idle,
                    next_offset: p.core.next_offset(),
                    hi_offset: p.hi_offset,
                    paused,
                }),
            }),
            super::fault::processing_ms(),
            self.config.core.allowed_lateness_ms,
        );
        let (mut windows, mut days, mut dedup, mut covered_hours, mut covered_days) =
            (0, 0, 0, 0, 0);
        for (id, p) in st.parts.iter_mut() {
            p.core.advance(operator);
            // Quiet for the idle timeout, not merely read to its end: a
            // history paced below the rate this process counts reaches the
            // end all the time, and its producer is not idle.
            let quiet = is_idle(Input {
                at_end: false,
                quiet: p.last_record.elapsed() >= idle,
                next_offset: p.core.next_offset(),
                hi_offset: p.hi_offset,
                paused,
            });
            if quiet {
                p.core.quiet();
            }
            let (w, d, e) = p.core.sizes();
            windows += w;
            days += d;
            dedup += e;
            let (h, c) = p.core.covered();
            covered_hours += h;
            covered_days += c;
            if p.core.watermark_ms() > i64::MIN {
                self.metrics
                    .partition_watermark_seconds
                    .with_label_values(&[&id.to_string()])
                    .set(p.core.watermark_ms() as f64 / 1000.0);
            }
        }
        if let Some(w) = operator {
            self.metrics.watermark_seconds.set(w as f64 / 1000.0);
        }
        self.metrics.resident_windows.set(windows as i64);
        self.metrics.resident_merchant_days.set(days as i64);
        self.metrics.dedup_entries.set(dedup as i64);
        self.metrics.covered_hours.set(covered_hours as i64);
        self.metrics.covered_days.set(covered_days as i64);
    }

    /// Drops the fingerprints of whole months that are more than
    /// `dedup_retention_days` behind every partition's checkpoint (and
    /// behind this host's clock: both must have passed), when a retention
    /// is set.
    pub(super) fn prune(&self) {
        let days = i64::from(self.config.dedup_retention_days);
        if days == 0 {
            return;
        }
        let result = self.block_on(async {
            let Some(checkpointed) = self
                .store
                .checkpointed_event_time(&self.config.topic)
                .await?
            else {
                return Ok(Vec::new());
            };
            let reference = checkpointed.min(i64::from(now_secs()) * 1000);
            let before = first_month_kept(reference - days * DAY_MS);
            self.store.prune_seen(before).await
        });
        match result {
            Ok(months) if months.is_empty() => {}
            Ok(months) => tracing::info!(
                message = "Dropped the de-duplication fingerprints of old months.",
                months = ?months
            ),
            Err(error) => {
                tracing::warn!(message = "Cannot drop old de-duplication fingerprints.", %error)
            }
        }
    }
}

/// `YYYYMM` of the month of `t_ms` (UTC, as the table's partitions): the
/// months before it hold only windows that started before `t_ms`.
fn first_month_kept(t_ms: i64) -> u32 {
    let date = pulih_store::iso_date(t_ms.div_euclid(DAY_MS));
    date[..4].parse::<u32>().unwrap_or(0) * 100 + date[5..7].parse::<u32>().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn months_before_the_horizon_only() {
        // 2024-03-01T00:00:00Z: February and earlier may go.
        assert_eq!(first_month_kept(1_709_251_200_000), 202_403);
        assert_eq!(first_month_kept(1_709_251_199_999), 202_402);
        assert_eq!(first_month_kept(0), 197_001);
    }
}
