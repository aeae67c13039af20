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
        cluster: String::new(),
        insert_quorum: 1,
    }
}

/// A config file for the `pulih` binary: the topic (its dead letters on
/// `<topic>.dlq`) and database of a test, group joins that take seconds,
/// and the consumer group, followed by `aggregate` (more `[aggregate]`
/// keys) and `rest` (further sections).
pub fn pulih_toml(
    kafka: &pulih_ingest::KafkaConfig,
    store: &pulih_store::StoreConfig,
    group: &str,
    aggregate: &str,
    rest: &str,
) -> String {
    format!(
        r#"[kafka]
brokers = "{brokers}"
topic = "{topic}"
dlq_topic = "{topic}.dlq"
partitions = {partitions}
[kafka.options]
"session.timeout.ms" = "6000"
"heartbeat.interval.ms" = "500"
[clickhouse]
url = "{url}"
database = "{db}"
cluster = "{cluster}"
insert_quorum = {quorum}
[aggregate]
group_id = "{group}"
idle_timeout_secs = 2
{aggregate}
{rest}
"#,
        brokers = kafka.brokers,
        topic = kafka.topic,
        partitions = kafka.partitions,
        url = store.url,
        db = store.database,
        cluster = store.cluster,
        quorum = store.insert_quorum,
    )
}

/// Runs an aggregator in this process until it has read `kafka.topic` to
/// its end (at most two minutes), with fast group joins, and returns what
/// it did.
pub async fn aggregate_to_end(
    kafka: &pulih_ingest::KafkaConfig,
    dlq_topic: &str,
    group: &str,
    core: pulih_stream::core::CoreConfig,
    archive_payments: bool,
    store: &pulih_store::Store,
) -> pulih_stream::aggregator::RunStats {
    let config = pulih_stream::aggregator::AggregatorConfig {
        brokers: kafka.brokers.clone(),
        topic: kafka.topic.clone(),
        dlq_topic: dlq_topic.to_owned(),
        group_id: unique(group),
        instance: 0,
        instances: 1,
        core,
        emit_interval: std::time::Duration::from_millis(200),
        daily_emit_interval: std::time::Duration::from_millis(600),
        idle_timeout: std::time::Duration::from_secs(30),
        exit_at_end: true,
        kafka_options: fast_group_options(),
        archive_payments,
        dedup_retention_days: 0,
    };
    tokio::time::timeout(
        std::time::Duration::from_secs(120),
        pulih_stream::aggregator::run(
            config,
            store.clone(),
            std::sync::Arc::new(pulih_event::Reference::jakarta()),
            pulih_stream::metrics::Metrics::new(),
            std::future::pending(),
        ),
    )
    .await
    .expect("the aggregator reaches the end of the topic within 120 s")
    .expect("the aggregator runs")
}

/// Kafka settings for a fresh topic named after the test.
pub fn kafka_config(test: &str, partitions: i32) -> pulih_ingest::KafkaConfig {
    pulih_ingest::KafkaConfig {
        brokers: kafka_brokers(),
        topic: unique(&format!("it.{test}")),
        partitions,
        replication_factor: 1,
        topic_config: Default::default(),
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

/// The repository root.
pub fn repo_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

/// The `pulih` binary: `PULIH_BIN`, or `target/debug/pulih` next to this
/// test executable. `deploy/local/test.sh` builds it before the tests.
pub fn pulih_bin() -> std::path::PathBuf {
    if let Ok(p) = std::env::var("PULIH_BIN") {
        return p.into();
    }
    let exe = std::env::current_exe().expect("test executable path");
    let bin = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(|dir| dir.join("pulih"))
        .expect("target directory");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build -p pulih` first (deploy/local/test.sh does)",
        bin.display()
    );
    bin
}

/// A free TCP port on 127.0.0.1 (free when this returns).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A TCP proxy to `upstream` that holds each request a client sends (its
/// first chunk on a connection, or after the server's last answer) for
/// `delay` before passing it on: a slow network or an overloaded server, as ClickHouse's clients
/// see it. It stops when dropped.
pub struct SlowProxy {
    pub port: u16,
    task: tokio::task::JoinHandle<()>,
}

impl SlowProxy {
    pub async fn start(upstream: &str, delay: std::time::Duration) -> SlowProxy {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the proxy");
        let port = listener.local_addr().expect("its address").port();
        let upstream = upstream.to_owned();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let upstream = upstream.clone();
                tokio::spawn(async move {
                    let Ok(server) = tokio::net::TcpStream::connect(&upstream).await else {
                        return;
                    };
                    let (mut from_client, mut to_client) = client.into_split();
                    let (mut from_server, mut to_server) = server.into_split();
                    // Set when the server has answered: the client's next
                    // chunk starts a new request.
                    let answered = std::sync::atomic::AtomicBool::new(true);
                    let up = async {
                        let mut buf = vec![0u8; 64 * 1024];
                        loop {
                            let n = match from_client.read(&mut buf).await {
                                Ok(0) | Err(_) => break,
                                Ok(n) => n,
                            };
                            if answered.swap(false, std::sync::atomic::Ordering::Relaxed) {
                                tokio::time::sleep(delay).await;
                            }
                            if to_server.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                        let _ = to_server.shutdown().await;
                    };
                    let down = async {
                        let mut buf = vec![0u8; 64 * 1024];
                        loop {
                            let n = match from_server.read(&mut buf).await {
                                Ok(0) | Err(_) => break,
                                Ok(n) => n,
                            };
                            answered.store(true, std::sync::atomic::Ordering::Relaxed);
                            if to_client.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                        let _ = to_client.shutdown().await;
                    };
                    tokio::join!(up, down);
                });
            }
        });
        SlowProxy { port, task }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for SlowProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A ClickHouse server of its own, for tests that stop and start it:
/// the project's local config, on free ports, with data in a temporary
/// folder under `target/`.
pub struct PrivateClickHouse {
    pub http_port: u16,
    dir: std::path::PathBuf,
    child: Option<std::process::Child>,
    /// Server environment (e.g. password digests for `from_env`).
    env: Vec<(String, String)>,
}

impl PrivateClickHouse {
    pub fn start(name: &str) -> PrivateClickHouse {
        Self::start_with_users(name, &[], &[])
    }

    /// A server whose users are the local `users.xml` plus `extra` files
    /// in its `users.d/`, with `env` set for the server process.
    pub fn start_with_users(
        name: &str,
        extra: &[&std::path::Path],
        env: &[(&str, &str)],
    ) -> PrivateClickHouse {
        let dir = repo_root().join("target/test-services").join(unique(name));
        std::fs::create_dir_all(dir.join("users.d")).unwrap();
        std::fs::copy(
            repo_root().join("deploy/clickhouse/local/users.xml"),
            dir.join("users.xml"),
        )
        .unwrap();
        for f in extra {
            std::fs::copy(f, dir.join("users.d").join(f.file_name().unwrap())).unwrap();
        }
        let mut ch = PrivateClickHouse {
            http_port: free_port(),
            dir,
            child: None,
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        ch.resume();
        ch
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    /// Starts the server (again) on the same data and waits until it answers.
    pub fn resume(&mut self) {
        let server = ["/usr/sbin/clickhouse-server", "/usr/bin/clickhouse-server"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
            .expect("clickhouse-server is installed (deploy/local/services.sh install)");
        let data = self.dir.join("data/");
        let log = std::fs::File::create(self.dir.join("stdout.log")).unwrap();
        let child = std::process::Command::new(server)
            .arg(format!(
                "--config-file={}",
                repo_root()
                    .join("deploy/clickhouse/local/config.xml")
                    .display()
            ))
            .arg("--")
            .arg(format!("--path={}", data.display()))
            .arg(format!("--tmp_path={}tmp/", data.display()))
            .arg(format!("--user_files_path={}user_files/", data.display()))
            .arg(format!(
                "--format_schema_path={}format_schemas/",
                data.display()
            ))
            .arg(format!(
                "--users_config={}",
                self.dir.join("users.xml").display()
            ))
            .arg(format!("--http_port={}", self.http_port))
            .arg(format!("--tcp_port={}", free_port()))
            .arg(format!(
                "--logger.log={}",
                self.dir.join("server.log").display()
            ))
            .arg(format!(
                "--logger.errorlog={}",
                self.dir.join("server.err.log").display()
            ))
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start clickhouse-server");
        self.child = Some(child);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            let ok =
                std::net::TcpStream::connect(("127.0.0.1", self.http_port)).is_ok_and(|mut s| {
                    use std::io::{Read, Write};
                    let _ = s.set_read_timeout(Some(std::time::Duration::from_secs(2)));
                    s.write_all(b"GET /ping HTTP/1.0\r\n\r\n").is_ok() && {
                        let mut buf = String::new();
                        let _ = s.read_to_string(&mut buf);
                        buf.contains("Ok.")
                    }
                });
            if ok {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "private ClickHouse did not start; see {}",
                self.dir.display()
            );
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    }

    /// Stops the server hard (SIGKILL), as a crash or a pulled cable would.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for PrivateClickHouse {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A Tansu broker of its own, for tests that stop and start it: SQLite
/// storage in a temporary folder under `target/`, on a free port.
pub struct PrivateKafka {
    pub port: u16,
    dir: std::path::PathBuf,
    child: Option<std::process::Child>,
}

impl PrivateKafka {
    pub fn start(name: &str) -> PrivateKafka {
        let dir = repo_root().join("target/test-services").join(unique(name));
        std::fs::create_dir_all(&dir).unwrap();
        let mut k = PrivateKafka {
            port: free_port(),
            dir,
            child: None,
        };
        k.resume();
        k
    }

    pub fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Starts the broker (again) on the same log and waits for its port.
    pub fn resume(&mut self) {
        let home = std::env::var("CARGO_HOME")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|_| {
                std::path::PathBuf::from(std::env::var("HOME").unwrap()).join(".cargo")
            });
        let tansu = [home.join("bin/tansu"), "/usr/local/bin/tansu".into()]
            .into_iter()
            .find(|p| p.exists())
            .expect("tansu is installed (deploy/local/services.sh install)");
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let log = std::fs::File::create(self.dir.join("tansu.log")).unwrap();
        let child = std::process::Command::new(tansu)
            .current_dir(&self.dir)
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args(["--storage-engine", "sqlite://broker.db"])
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start tansu");
        self.child = Some(child);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "private broker did not start; see {}",
                self.dir.display()
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }

    /// Stops the broker hard (SIGKILL).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for PrivateKafka {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One HTTP/1.1 exchange over a fresh connection: (status, headers, body).
pub async fn http(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String, Vec<u8>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let mut req = format!("{method} {path} HTTP/1.1\r\nhost: test\r\nconnection: close\r\n");
    let mut has_length = false;
    for (k, v) in headers {
        has_length |= k.eq_ignore_ascii_case("content-length");
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if !has_length {
        req.push_str(&format!("content-length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let _ = s.write_all(body).await;
    let mut out = Vec::new();
    let read =
        tokio::time::timeout(std::time::Duration::from_secs(20), s.read_to_end(&mut out)).await;
    assert!(
        read.is_ok(),
        "no complete answer to {method} {path} within 20 s: {}",
        String::from_utf8_lossy(&out)
    );
    let split = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("an HTTP response");
    let head = String::from_utf8_lossy(&out[..split]).into_owned();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status code");
    (status, head, out[split + 4..].to_vec())
}

/// Every message on a topic, read from the beginning to the end.
pub fn read_topic(brokers: &str, topic: &str) -> Vec<Vec<u8>> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::Message;
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", unique("reader"))
        .set("enable.partition.eof", "true")
        .create()
        .unwrap();
    let md = consumer
        .fetch_metadata(Some(topic), std::time::Duration::from_secs(10))
        .unwrap();
    let parts = md.topics()[0].partitions().len();
    let mut tpl = rdkafka::TopicPartitionList::new();
    for p in 0..parts {
        tpl.add_partition_offset(topic, p as i32, rdkafka::Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let mut eof = std::collections::BTreeSet::new();
    let mut out = Vec::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while eof.len() < parts && std::time::Instant::now() < deadline {
        match consumer.poll(std::time::Duration::from_millis(200)) {
            Some(Ok(m)) => out.push(m.payload().unwrap_or_default().to_vec()),
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(p))) => {
                eof.insert(p);
            }
            _ => {}
        }
    }
    out
}

/// A child process that is killed when dropped, so that a test that fails
/// (panics) while a `pulih` service runs leaves no process behind.
pub struct KillOnDrop(pub std::process::Child);

impl std::ops::Deref for KillOnDrop {
    type Target = std::process::Child;
    fn deref(&self) -> &std::process::Child {
        &self.0
    }
}

impl std::ops::DerefMut for KillOnDrop {
    fn deref_mut(&mut self) -> &mut std::process::Child {
        &mut self.0
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The `<component>_*` metric names (e.g. `pulih_aggregate`) that the
/// Prometheus rules under deploy/prometheus/rules/ and the Grafana
/// dashboards under deploy/grafana/dashboards/ use, and of those, the ones
/// a `/metrics` page does not declare (`# TYPE <name> ...`). A histogram's
/// `_bucket`, `_sum` and `_count` series count as its name.
pub fn rule_metrics_missing(component: &str, page: &str) -> (Vec<String>, Vec<String>) {
    let mut names = std::collections::BTreeSet::new();
    let files = ["deploy/prometheus/rules", "deploy/grafana/dashboards"]
        .into_iter()
        .flat_map(|dir| {
            std::fs::read_dir(repo_root().join(dir))
                .unwrap_or_else(|e| panic!("{dir}: {e}"))
                .map(|entry| entry.unwrap().path())
        });
    for path in files {
        let text: String = std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .filter(|l| !l.trim_start().starts_with('#'))
            .map(|l| format!("{l}\n"))
            .collect();
        let prefix = format!("{component}_");
        let mut rest = text.as_str();
        while let Some(i) = rest.find(&prefix) {
            let tail = &rest[i..];
            let end = tail
                .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
                .unwrap_or(tail.len());
            names.insert(tail[..end].to_owned());
            rest = &tail[end..];
        }
    }
    let declared: std::collections::BTreeSet<&str> = page
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.split(' ').next())
        .collect();
    let is_declared = |name: &str| {
        declared.contains(name)
            || ["_bucket", "_sum", "_count"].iter().any(|suffix| {
                name.strip_suffix(suffix)
                    .is_some_and(|base| page.contains(&format!("# TYPE {base} histogram")))
            })
    };
    let missing = names.iter().filter(|n| !is_declared(n)).cloned().collect();
    (names.into_iter().collect(), missing)
}

/// The metric names a `/metrics` page declares that docs/operations.md
/// ("Metrics reference") does not list.
pub fn undocumented_metrics(page: &str) -> Vec<String> {
    let doc = std::fs::read_to_string(repo_root().join("docs/operations.md")).unwrap();
    page.lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.split(' ').next())
        .filter(|name| !doc.contains(&format!("| `{name}` |")))
        .map(str::to_owned)
        .collect()
}
