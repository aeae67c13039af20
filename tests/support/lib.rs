//! Helpers for the end-to-end tests: where the services are, and names that
//! keep concurrent tests apart (each test gets its own topic, consumer group
//! and ClickHouse database).

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Kafka bootstrap address (`PULIH_TEST_KAFKA`, default 127.0.0.1:9092).
pub fn kafka_brokers() -> String {
    std::env::var("PULIH_TEST_KAFKA").unwrap_or_else(|_| "127.0.0.1:9092".into())
}

/// ClickHouse HTTP URL (`PULIH_TEST_CLICKHOUSE`, default http://127.0.0.1:8123).
pub fn clickhouse_url() -> String {
    std::env::var("PULIH_TEST_CLICKHOUSE").unwrap_or_else(|_| "http://127.0.0.1:8123".into())
}

/// A name unique to this test run: `prefix_<time>_<pid>_<n>`.
pub fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis();
    format!(
        "{prefix}_{t}_{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Store settings for a fresh database named after the test.
pub fn store_config(test: &str) -> pulih_store::StoreConfig {
    pulih_store::StoreConfig {
        url: clickhouse_url(),
        database: unique(&format!("it_{test}")),
        user: "default".into(),
        password: String::new(),
    }
}

/// Kafka settings for a fresh topic named after the test.
pub fn kafka_config(test: &str, partitions: i32) -> pulih_ingest::KafkaConfig {
    pulih_ingest::KafkaConfig {
        brokers: kafka_brokers(),
        topic: unique(&format!("it.{test}")),
        partitions,
        options: Default::default(),
    }
}

/// Consumer settings that make group joins fast.
pub fn fast_group_options() -> std::collections::BTreeMap<String, String> {
    [
        ("session.timeout.ms", "6000"),
        ("heartbeat.interval.ms", "500"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}
