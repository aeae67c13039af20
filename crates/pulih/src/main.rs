//! `pulih`: the one binary of the platform. It owns the command line, the
//! configuration (`config.rs`, defaults in `default.toml`) and the telemetry
//! wiring, and calls into the crates that do the work.
//!
//! `clap` parses the command line; `figment` layers defaults, file and
//! environment with errors that name the key; `tracing-subscriber` writes
//! logs (human-readable by default, JSON with `--log-format json`).

mod config;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::{Parser, Subcommand, ValueEnum};
use pulih_event::{Limits, Timestamp};
use pulih_ingest::{delivered, Intake, Offer};
use pulih_store::{MigrationStatus, Store};
use pulih_stream::aggregator::{self, AggregatorConfig};
use pulih_stream::core::CoreConfig;
use pulih_stream::metrics::Metrics;

use crate::config::Config;

#[derive(Parser)]
#[command(
    name = "pulih",
    version,
    about = "Near-real-time MSME recovery metrics from payment events"
)]
struct Cli {
    /// Config file (TOML); see crates/pulih/src/default.toml for every key.
    #[arg(long, global = true, env = "PULIH_CONFIG")]
    config: Option<PathBuf>,
    /// Log format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Apply pending ClickHouse migrations from schemas/clickhouse/.
    Migrate {
        /// Only list applied and pending migrations.
        #[arg(long)]
        status: bool,
    },
    /// Produce synthetic payment events to Kafka through validation and pseudonymisation.
    Simulate {
        /// Events per second.
        #[arg(long, default_value_t = 1000)]
        rate: u32,
        /// How long to run, in seconds.
        #[arg(long, default_value_t = 10)]
        duration: u32,
    },
    /// Consume payment records and write windowed activity to ClickHouse.
    Aggregate {
        /// Stop once every assigned partition is read to its end.
        #[arg(long)]
        exit_at_end: bool,
    },
    /// Print what landed in ClickHouse: per-sector totals of activity_1m.
    Report,
    /// Measure freshness: send marker events one at a time and time how
    /// long each takes from intake to `activity_1m FINAL`. Needs a running
    /// `pulih aggregate`. The markers use the cell (31.01.01, U), which
    /// the simulator never uses.
    Probe {
        /// Number of markers.
        #[arg(long, default_value_t = 100)]
        count: u32,
        /// Time between markers, in milliseconds.
        #[arg(long, default_value_t = 250)]
        interval_ms: u64,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.log_format);
    let config = match Config::load(cli.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("pulih: {e}");
            return ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("pulih: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli.command, config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pulih: {e}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("PULIH_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,rdkafka=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

type BoxError = Box<dyn std::error::Error>;

async fn run(command: Command, config: Config) -> Result<(), BoxError> {
    match command {
        Command::Migrate { status } => migrate(&config, status).await,
        Command::Simulate { rate, duration } => simulate(&config, rate, duration).await,
        Command::Aggregate { exit_at_end } => aggregate(&config, exit_at_end).await,
        Command::Report => report(&config).await,
        Command::Probe { count, interval_ms } => probe(&config, count, interval_ms).await,
    }
}

async fn migrate(config: &Config, status: bool) -> Result<(), BoxError> {
    let store = Store::new(&config.store());
    store.ping().await?;
    if status {
        for s in store.migration_status().await? {
            match s {
                MigrationStatus::Applied { name, .. } => println!("applied  {name}"),
                MigrationStatus::Pending { name, .. } => println!("pending  {name}"),
            }
        }
        return Ok(());
    }
    let applied = store.migrate().await?;
    if applied.is_empty() {
        println!("database {} is up to date", store.database());
    } else {
        for name in applied {
            println!("applied {name}");
        }
    }
    Ok(())
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

async fn simulate(config: &Config, rate: u32, duration: u32) -> Result<(), BoxError> {
    if rate == 0 {
        return Err("--rate must be at least 1".into());
    }
    let reference = Arc::new(config.reference()?);
    let kafka = config.kafka();
    kafka.ensure_topic().await?;
    let intake = Intake::new(
        kafka,
        reference.clone(),
        config.pseudonymiser()?,
        Limits::default(),
    )?;
    let run_id = format!("sim{}", now_ms());
    let mut sim = pulih_sim::Simulator::new(
        &reference,
        config.simulate.merchants as usize,
        config.simulate.seed,
        &run_id,
    );
    let total = u64::from(rate) * u64::from(duration);
    let producer_id = config.simulate.producer_id.clone();
    let brokers = config.kafka.brokers.clone();
    tracing::info!(message = "Simulating.", rate, duration, total, topic = %config.kafka.topic);

    let (tx, mut rx) = tokio::sync::mpsc::channel(100_000);
    let acks = tokio::spawn(async move {
        let mut ok = 0u64;
        while let Some(f) = rx.recv().await {
            delivered(f, &brokers).await?;
            ok += 1;
        }
        Ok::<u64, pulih_ingest::KafkaFailure>(ok)
    });
    let start = Instant::now();
    let mut amount_sum = 0u64;
    let mut rejected = 0u64;
    for i in 0..total {
        // Pace: event i is due at i / rate seconds.
        let due = Duration::from_secs_f64(i as f64 / f64::from(rate));
        if let Some(wait) = due.checked_sub(start.elapsed()) {
            if wait > Duration::from_millis(2) {
                tokio::time::sleep(wait).await;
            }
        }
        let raw = sim.next_event(Timestamp::from_unix_millis(now_ms()));
        match intake.offer(&producer_id, &raw).await? {
            Offer::Queued(f, record) => {
                amount_sum += record.amount_idr;
                if tx.send(f).await.is_err() {
                    break;
                }
            }
            Offer::Rejected(r) => {
                rejected += 1;
                tracing::error!(message = "Simulator made an invalid event.", reason = %r);
            }
        }
    }
    drop(tx);
    let acked = acks.await??;
    let secs = start.elapsed().as_secs_f64();
    println!(
        "simulated events={acked} amount_idr={amount_sum} rejected={rejected} seconds={secs:.1} rate={:.0}/s",
        acked as f64 / secs
    );
    Ok(())
}

async fn aggregate(config: &Config, exit_at_end: bool) -> Result<(), BoxError> {
    let store = Store::new(&config.store());
    store.ping().await?;
    let a = &config.aggregate;
    let secs = |s: u32| i64::from(s) * 1000;
    let agg_config = AggregatorConfig {
        brokers: config.kafka.brokers.clone(),
        topic: config.kafka.topic.clone(),
        dlq_topic: config.kafka.dlq_topic.clone(),
        group_id: a.group_id.clone(),
        core: CoreConfig {
            window_ms: secs(a.window_secs),
            allowed_lateness_ms: secs(a.allowed_lateness_secs),
            correction_horizon_ms: secs(a.correction_horizon_secs),
            dedup_horizon_ms: secs(a.dedup_horizon_secs),
        },
        emit_interval: Duration::from_millis(u64::from(a.emit_interval_ms)),
        idle_timeout: Duration::from_secs(u64::from(a.idle_timeout_secs)),
        exit_at_end,
        kafka_options: config.kafka.options.clone(),
    };
    let kafka = config.kafka();
    kafka.ensure_topic().await?;
    pulih_ingest::KafkaConfig {
        topic: config.kafka.dlq_topic.clone(),
        ..kafka
    }
    .ensure_topic()
    .await?;
    let metrics = Metrics::new();
    if !a.metrics_addr.is_empty() {
        let addr: std::net::SocketAddr = a.metrics_addr.parse()?;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| format!("`aggregate.metrics_addr`: cannot listen on {addr}: {e}"))?;
        tracing::info!(message = "Serving metrics.", url = %format!("http://{addr}/metrics"));
        tokio::spawn(serve_metrics(listener, metrics.clone()));
    }
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let reference = Arc::new(config.reference()?);
    let stats = aggregator::run(agg_config, store, reference, metrics, shutdown).await?;
    println!(
        "aggregated records={} applied={} late={} replayed={} duplicates={} too_late={} undecodable={} rows_written={}",
        stats.records,
        stats.applied,
        stats.late,
        stats.replayed,
        stats.duplicates,
        stats.too_late,
        stats.undecodable,
        stats.rows_written
    );
    Ok(())
}

/// A minimal HTTP/1.1 responder for `GET /metrics` (and `/healthz`).
async fn serve_metrics(listener: tokio::net::TcpListener, metrics: Metrics) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            continue;
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 1024];
            let n = match tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await
            {
                Ok(Ok(n)) => n,
                _ => return,
            };
            let request = String::from_utf8_lossy(&buf[..n]);
            let path = request.split_whitespace().nth(1).unwrap_or("");
            let (status, ctype, body) = match path {
                "/metrics" => ("200 OK", "text/plain; version=0.0.4", metrics.render()),
                "/healthz" => ("200 OK", "text/plain", "ok\n".to_owned()),
                _ => ("404 Not Found", "text/plain", "not found\n".to_owned()),
            };
            let response = format!(
                "HTTP/1.1 {status}\r\ncontent-type: {ctype}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(response.as_bytes()).await;
        });
    }
}

async fn probe(config: &Config, count: u32, interval_ms: u64) -> Result<(), BoxError> {
    const DISTRICT: &str = "31.01.01";
    const SECTOR: &str = "U";
    if count == 0 {
        return Err("--count must be at least 1".into());
    }
    let store = Store::new(&config.store());
    let reference = Arc::new(config.reference()?);
    let kafka = config.kafka();
    kafka.ensure_topic().await?;
    let intake = Intake::new(kafka, reference, config.pseudonymiser()?, Limits::default())?;
    let run = now_ms();
    let mut seen = store.cell_txn_count(DISTRICT, SECTOR).await?;
    let mut latencies = Vec::with_capacity(count as usize);
    for i in 0..count {
        let started = Instant::now();
        let event = serde_json::json!({
            "event_id": format!("probe-{run}-{i}"),
            "occurred_at": Timestamp::from_unix_millis(now_ms()).to_string(),
            "merchant_id": "probe-merchant-0001",
            "district_code": DISTRICT,
            "sector": SECTOR,
            "amount_idr": 1,
            "channel": "other",
            "merchant_size": "micro",
        });
        match intake.offer("probe", &serde_json::to_vec(&event)?).await? {
            Offer::Queued(f, _) => delivered(f, &config.kafka.brokers).await?,
            Offer::Rejected(r) => return Err(format!("probe event rejected: {r}").into()),
        }
        loop {
            let now = store.cell_txn_count(DISTRICT, SECTOR).await?;
            if now > seen {
                seen = now;
                break;
            }
            if started.elapsed() > Duration::from_secs(60) {
                return Err(format!(
                    "marker {i} not visible after 60 s: is `pulih aggregate` running?"
                )
                .into());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        latencies.push(started.elapsed());
        if let Some(rest) = Duration::from_millis(interval_ms).checked_sub(started.elapsed()) {
            tokio::time::sleep(rest).await;
        }
    }
    latencies.sort();
    let q = |p: f64| {
        let i = ((latencies.len() as f64 * p).ceil() as usize).clamp(1, latencies.len()) - 1;
        latencies[i].as_millis()
    };
    println!(
        "probe markers={} p50_ms={} p90_ms={} p99_ms={} max_ms={}",
        latencies.len(),
        q(0.50),
        q(0.90),
        q(0.99),
        latencies.last().map_or(0, |d| d.as_millis())
    );
    Ok(())
}

async fn report(config: &Config) -> Result<(), BoxError> {
    let store = Store::new(&config.store());
    let totals = store.sector_totals().await?;
    let reference = config.reference()?;
    println!(
        "{:<6} {:<40} {:>8} {:>12} {:>18}",
        "sector", "name", "windows", "transactions", "amount_idr"
    );
    let (mut txn, mut amount) = (0u64, 0u64);
    for t in &totals {
        let name = reference
            .categories()
            .iter()
            .find(|c| c.sector.as_str() == t.sector)
            .map_or("?", |c| c.name_en.as_str());
        println!(
            "{:<6} {:<40} {:>8} {:>12} {:>18}",
            t.sector, name, t.windows, t.txn_count, t.amount_idr_sum
        );
        txn += t.txn_count;
        amount += t.amount_idr_sum;
    }
    println!("total events={txn} amount_idr={amount}");
    Ok(())
}
