//! Prometheus metrics of the aggregator. Every name has the
//! `pulih_aggregate_` prefix; labels are bounded (an outcome, a table, a
//! partition number), never a district, merchant or event id.

use prometheus::{
    Gauge, GaugeVec, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
    Opts, Registry,
};

/// The aggregator's metrics, registered in their own registry.
#[derive(Clone)]
pub struct Metrics {
    pub registry: Registry,
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
    /// Records in Kafka not yet consumed, over the assigned partitions.
    pub consumer_lag: IntGauge,
    pub partition_lag: IntGaugeVec,
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let opts = |name: &str, help: &str| Opts::new(name, help).namespace("pulih_aggregate");
        let records = IntCounterVec::new(
            opts("records_total", "Records consumed, by what became of them."),
            &["outcome"],
        )
        .expect("valid metric");
        let watermark_seconds = Gauge::with_opts(opts(
            "watermark_seconds",
            "Operator watermark (event time, Unix seconds): the minimum over assigned, non-idle partitions.",
        ))
        .expect("valid metric");
        let partition_watermark_seconds = GaugeVec::new(
            opts(
                "partition_watermark_seconds",
                "Watermark of each assigned partition (event time, Unix seconds).",
            ),
            &["partition"],
        )
        .expect("valid metric");
        let stalled = IntGauge::with_opts(opts(
            "stalled",
            "1 while ClickHouse calls fail (a flush, or restoring a partition) and consumption is paused.",
        ))
        .expect("valid metric");
        let store_errors = IntCounter::with_opts(opts(
            "store_errors_total",
            "Failed ClickHouse calls (each is retried).",
        ))
        .expect("valid metric");
        let rows_written = IntCounterVec::new(
            opts(
                "rows_written_total",
                "Rows written to ClickHouse, by table.",
            ),
            &["table"],
        )
        .expect("valid metric");
        let dead_lettered = IntCounterVec::new(
            opts(
                "dead_lettered_total",
                "Records written to the dead-letter topic, by reason.",
            ),
            &["reason"],
        )
        .expect("valid metric");
        let flush_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "flush_seconds",
                "Time to make one flush durable (loads, inserts, checkpoint).",
            )
            .namespace("pulih_aggregate")
            .buckets(vec![
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ]),
        )
        .expect("valid metric");
        let gauge =
            |name: &str, help: &str| IntGauge::with_opts(opts(name, help)).expect("valid metric");
        let m = Metrics {
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
            consumer_lag: gauge(
                "consumer_lag_records",
                "Records not yet consumed on the assigned partitions (the broker's high watermark from librdkafka statistics, every second).",
            ),
            partition_lag: IntGaugeVec::new(
                opts(
                    "partition_lag_records",
                    "Records not yet consumed, per assigned partition.",
                ),
                &["partition"],
            )
            .expect("valid metric"),
            registry,
        };
        for c in [
            Box::new(m.records.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(m.watermark_seconds.clone()),
            Box::new(m.partition_watermark_seconds.clone()),
            Box::new(m.stalled.clone()),
            Box::new(m.store_errors.clone()),
            Box::new(m.rows_written.clone()),
            Box::new(m.dead_lettered.clone()),
            Box::new(m.flush_seconds.clone()),
            Box::new(m.topic_partitions.clone()),
            Box::new(m.owned_partitions.clone()),
            Box::new(m.assigned_partitions.clone()),
            Box::new(m.resident_windows.clone()),
            Box::new(m.resident_merchant_days.clone()),
            Box::new(m.dedup_entries.clone()),
            Box::new(m.consumer_lag.clone()),
            Box::new(m.partition_lag.clone()),
        ] {
            m.registry.register(c).expect("metric names are unique");
        }
        m
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}
