//! Prometheus metrics of the aggregator. Every name has the
//! `pulih_aggregate_` prefix; labels are bounded (an outcome, a table, a
//! partition number), never a district, merchant or event id.

use pulih_telemetry::prometheus::{
    Gauge, GaugeVec, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
};
use pulih_telemetry::{Component, Readiness};

/// The aggregator's metrics, registered in their own registry.
#[derive(Clone)]
pub struct Metrics {
    /// The registry `/metrics` serves.
    pub component: Component,
    /// Records by outcome: applied, late, replayed, duplicate, too_old,
    /// wrong_partition, undecodable.
    pub records: IntCounterVec,
    /// The operator watermark: minimum over assigned, non-idle partitions.
    pub watermark_seconds: Gauge,
    pub partition_watermark_seconds: GaugeVec,
    /// 1 while ClickHouse calls fail (a flush, or restoring a partition)
    /// and consumption is paused.
    pub stalled: IntGauge,
    pub store_errors: IntCounter,
    pub rows_written: IntCounterVec,
    pub dead_lettered: IntCounterVec,
    pub flush_seconds: Histogram,
    /// Partitions of the topic, as the broker reported them at start.
    pub topic_partitions: IntGauge,
    /// Partitions this instance owns by its index.
    pub owned_partitions: IntGauge,
    /// Owned partitions restored and being consumed.
    pub assigned_partitions: IntGauge,
    pub resident_windows: IntGauge,
    pub resident_merchant_days: IntGauge,
    pub dedup_entries: IntGauge,
    /// Hours and days read back and held in memory.
    pub covered_hours: IntGauge,
    pub covered_days: IntGauge,
    /// Records in Kafka not yet consumed, over the assigned partitions.
    pub consumer_lag: IntGauge,
    pub partition_lag: IntGaugeVec,
}

impl Metrics {
    /// Ready once every partition this instance owns is restored and being
    /// consumed, and while ClickHouse answers.
    pub fn readiness(&self) -> Readiness {
        let (owned, assigned, stalled) = (
            self.owned_partitions.clone(),
            self.assigned_partitions.clone(),
            self.stalled.clone(),
        );
        Readiness::new(move || {
            let (owned, assigned) = (owned.get(), assigned.get());
            if stalled.get() != 0 {
                Err("ClickHouse calls fail; consumption is paused".to_owned())
            } else if owned == 0 {
                Err("no partition owned yet".to_owned())
            } else if assigned < owned {
                Err(format!("{assigned} of {owned} owned partitions restored"))
            } else {
                Ok(())
            }
        })
    }

    pub fn new() -> Metrics {
        let component = Component::new("pulih_aggregate");
        let c = &component;
        let opts = |name: &str, help: &str| c.opts(name, help);
        let records = c.register(
            IntCounterVec::new(
                opts("records_total", "Records consumed, by what became of them."),
                &["outcome"],
            )
            .expect("valid metric"),
        );
        let watermark_seconds = c.register(Gauge::with_opts(opts(
            "watermark_seconds",
            "Operator watermark (event time, Unix seconds): the minimum over assigned, non-idle partitions.",
        ))
        .expect("valid metric"));
        let partition_watermark_seconds = c.register(
            GaugeVec::new(
                opts(
                    "partition_watermark_seconds",
                    "Watermark of each assigned partition (event time, Unix seconds).",
                ),
                &["partition"],
            )
            .expect("valid metric"),
        );
        let stalled = c.register(IntGauge::with_opts(opts(
            "stalled",
            "1 while ClickHouse calls fail (a flush, or restoring a partition) and consumption is paused.",
        ))
        .expect("valid metric"));
        let store_errors = c.register(
            IntCounter::with_opts(opts(
                "store_errors_total",
                "Failed ClickHouse calls (each is retried).",
            ))
            .expect("valid metric"),
        );
        let rows_written = c.register(
            IntCounterVec::new(
                opts(
                    "rows_written_total",
                    "Rows written to ClickHouse, by table.",
                ),
                &["table"],
            )
            .expect("valid metric"),
        );
        let dead_lettered = c.register(
            IntCounterVec::new(
                opts(
                    "dead_lettered_total",
                    "Records written to the dead-letter topic, by reason.",
                ),
                &["reason"],
            )
            .expect("valid metric"),
        );
        // Every reason at 0 from the start, so that rates and alerts over
        // them (deploy/prometheus/rules) see the series before the first one.
        for reason in [
            "bad_record",
            "bad_merchant_key",
            "unknown_district",
            "too_old",
            "wrong_partition",
        ] {
            dead_lettered.with_label_values(&[reason]);
        }
        let flush_seconds = c.register(
            Histogram::with_opts(
                HistogramOpts::new(
                    "flush_seconds",
                    "Time to make one flush durable (loads, inserts, checkpoint).",
                )
                .namespace("pulih_aggregate")
                .buckets(vec![
                    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                ]),
            )
            .expect("valid metric"),
        );
        let gauge = |name: &str, help: &str| {
            c.register(IntGauge::with_opts(opts(name, help)).expect("valid metric"))
        };
        Metrics {
            component: component.clone(),
            records,
            watermark_seconds,
            partition_watermark_seconds,
            stalled,
            store_errors,
            rows_written,
            dead_lettered,
            flush_seconds,
            topic_partitions: gauge(
                "topic_partitions",
                "Partitions of the topic, as the broker reported them when the process started.",
            ),
            owned_partitions: gauge(
                "owned_partitions",
                "Partitions this process owns by its instance index (aggregate.instance of aggregate.instances).",
            ),
            assigned_partitions: gauge(
                "assigned_partitions",
                "Owned partitions restored from ClickHouse and being consumed; below owned_partitions while a restore waits.",
            ),
            resident_windows: gauge("resident_windows", "Windows held in memory."),
            resident_merchant_days: gauge(
                "resident_merchant_days",
                "Merchant-days held in memory.",
            ),
            dedup_entries: gauge("dedup_entries", "Event fingerprints held in memory for de-duplication (those of resident windows)."),
            covered_hours: gauge(
                "covered_hours",
                "Hours behind the watermark read back and held in memory with all their windows (docs/semantics.md, \"Read-backs by range\").",
            ),
            covered_days: gauge(
                "covered_days",
                "Days behind the watermark read back and held in memory with all their merchant-days.",
            ),
            consumer_lag: gauge(
                "consumer_lag_records",
                "Records not yet consumed on the assigned partitions (the broker's high watermark from librdkafka statistics, every second).",
            ),
            partition_lag: c.register(
                IntGaugeVec::new(
                    opts(
                        "partition_lag_records",
                        "Records not yet consumed, per assigned partition.",
                    ),
                    &["partition"],
                )
                .expect("valid metric"),
            ),
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}
