//! Stream processing for pulih: payment records in, exactly-once
//! event-time aggregates in ClickHouse out (`docs/semantics.md`).
//!
//! - [`core`]: the pure core. Per Kafka partition it folds records into
//!   tumbling event-time windows and merchant-days, keeps the watermark,
//!   remembers event ids for de-duplication, and hands out the rows and the
//!   checkpoint to make durable. No I/O and no clocks: it is driven by its
//!   inputs only, so it is property-tested through crashes and restores.
//! - [`decode`]: the hot-path decoder from the Kafka JSON record to the
//!   core's event.
//! - [`aggregator`]: the I/O edge. It consumes `pulih.payments.v1` with
//!   `rdkafka`, restores partitions from ClickHouse when they are assigned,
//!   upserts rows through `pulih-store`, dead-letters what it cannot count,
//!   and commits Kafka offsets only after what they cover is durable.

pub mod aggregator;
pub mod core;
pub mod decode;
pub mod metrics;
