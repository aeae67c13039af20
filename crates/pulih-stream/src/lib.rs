//! Stream processing for pulih: payment records in, exactly-once
//! event-time aggregates in ClickHouse out (`docs/semantics.md`).
//!
//! - [`core`]: the pure core. Per Kafka partition it folds records into
//!   tumbling event-time windows and merchant-days, keeps the watermarks
//!   (the partition's, and each producer's for its own windows), remembers
//!   event ids for de-duplication, and hands out the rows, the producers'
//!   clocks and the checkpoint to make durable. No I/O and no clocks: it is driven by its
//!   inputs only, so it is property-tested through crashes and restores.
//! - [`decode`]: the hot-path decoder from the Kafka JSON record to the
//!   core's event.
//! - [`aggregator`]: the I/O edge. It consumes `pulih.payments.v1` with
//!   `rdkafka`, restores partitions from ClickHouse when they are assigned,
//!   upserts rows through `pulih-store`, dead-letters what it cannot count,
//!   and writes each partition's checkpoint only after what it covers is
//!   durable; consumption resumes from the checkpoints, and nothing is
//!   committed to Kafka.

pub mod aggregator;
pub mod core;
pub mod decode;
pub mod metrics;
