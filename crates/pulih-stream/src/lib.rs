//! Stream processing for pulih.
//!
//! - [`window`]: the pure windowing core. It folds payment records into
//!   tumbling event-time windows keyed by (district, sector), tracks a
//!   watermark, and hands out the rows that changed. No I/O, no clocks: it is
//!   driven entirely by its inputs, so it can be property-tested.
//! - [`aggregator`]: the I/O edge. It consumes `pulih.payments.v1` with
//!   `rdkafka`, feeds the core, upserts changed windows into ClickHouse
//!   through `pulih-store`, and commits Kafka offsets only after the rows
//!   that cover them are written.

pub mod aggregator;
pub mod window;
