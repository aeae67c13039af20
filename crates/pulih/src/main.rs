//! `pulih`: the one binary of the platform. It owns the command line, the
//! configuration (`config.rs`, defaults in `default.toml`) and the telemetry
//! wiring, and calls into the crates that do the work.
//!
//! `clap` parses the command line; `figment` layers defaults, file and
//! environment with errors that name the key; `tracing-subscriber` writes
//! logs (human-readable by default, JSON with `--log-format json`).

mod alerts;
mod config;
mod rollup;
mod simulate;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand, ValueEnum};
use pulih_event::calendar::now_ms;
use pulih_event::{Limits, Timestamp};
use pulih_ingest::{delivered, Accepted, Intake, Offer};
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

#[derive(Subcommand)]
enum TokenCommand {
    /// Print a new bearer token for PRODUCER and the config lines that
    /// authorise it (only the token's SHA-256 goes in the config).
    New { producer: String },
}

#[derive(Subcommand)]
enum AlertsCommand {
    /// Replay the rule over stored history, with no alert active at
    /// --from, and print when each alert would have fired and cleared.
    /// Writes and sends nothing.
    Backtest {
        #[arg(long)]
        from: String,
        /// Default: the last final day.
        #[arg(long)]
        to: Option<String>,
    },
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
    /// Simulate Jakarta's MSMEs (docs/simulator.md): the scenario's
    /// payments to Kafka, the gateway or NDJSON files, as a fast backfill,
    /// a time-compressed replay, in real time, or at a target rate.
    Simulate(simulate::Args),
    /// Consume payment records and write windowed activity to ClickHouse.
    Aggregate {
        /// Stop once every assigned partition is read to its end.
        #[arg(long)]
        exit_at_end: bool,
    },
    /// Print what landed in ClickHouse: per-sector totals of activity_1m_by_producer.
    Report,
    /// Compute the recovery metrics (docs/data-model.md) from
    /// merchant_activity_daily_by_time into <database>_analytics.recovery_daily, and
    /// make the day's public release (<database>_public.recovery_daily) if
    /// none was made today.
    Rollup {
        /// First Jakarta day to compute (YYYY-MM-DD); default: the first day with data.
        #[arg(long)]
        from: Option<String>,
        /// Last day to compute; default: the last day with data.
        #[arg(long)]
        to: Option<String>,
        /// Keep running: every SECS seconds recompute the last
        /// `metrics.refresh_days` days, and from any older day whose
        /// merchant-days changed (after a first run over --from..--to).
        #[arg(long, value_name = "SECS")]
        every: Option<u64>,
    },
    /// Evaluate the sector-downturn rule (docs/alerting.md) on every
    /// complete, final day not yet evaluated; send state changes to Kafka
    /// (`alerts.topic`) and pulih_analytics.alert_events, and active alerts
    /// to Alertmanager; repeat every `alerts.resend_secs` unless --once.
    Alerts {
        #[command(subcommand)]
        command: Option<AlertsCommand>,
        /// One round, then exit.
        #[arg(long)]
        once: bool,
        /// First day to evaluate (YYYY-MM-DD) on the first round; default:
        /// the day after the last evaluated one, or the last final day.
        #[arg(long)]
        from: Option<String>,
        /// Last day to evaluate; default: the last final day.
        #[arg(long)]
        to: Option<String>,
    },
    /// Run the HTTP gateway: POST /v1/events for authenticated producers
    /// (docs/ingest.md), /healthz, /readyz, /metrics.
    Ingest,
    /// Load a file of events (NDJSON, optionally .gz) through the same
    /// validation and pseudonymisation, without the age check: backfills.
    Produce {
        /// The file; `-` reads standard input.
        #[arg(long)]
        file: PathBuf,
        /// The producer the events come from.
        #[arg(long)]
        producer: String,
        /// Load events older than `aggregate.dedup_retention_days` too.
        /// Their fingerprints are dropped with the retention, so these
        /// events, sent again after that, count again. Without it they are
        /// rejected (`beyond_dedup_retention`).
        #[arg(long)]
        may_count_again: bool,
        /// Send at most this many events a second, in ten bursts a
        /// second. A history loaded into
        /// the topic that live traffic uses is read in offset order: live
        /// events queued behind a backlog wait for all of it. Loaded below
        /// the rate the aggregators count (docs/benchmarks.md, "Backfills
        /// loaded at once"), it leaves no backlog in front of them.
        #[arg(long)]
        rate: Option<u32>,
    },
    /// Serve the read-only page of the published metrics (map, series,
    /// heatmap, alerts) at `ui.listen`, reading the public database with
    /// the public account.
    Ui,
    /// Summarise the dead-letter topic (`kafka.dlq_topic`) from its start:
    /// letters by stage and reason, and how many distinct records they
    /// hold (a request retried after a failure dead-letters its
    /// rejections again).
    DeadLetters,
    /// Check the configuration SERVICE would start with (defaults, the
    /// file, the environment), without connecting to anything, and print
    /// what it would connect to and listen on. Exits 2 naming the key of
    /// the first bad setting.
    CheckConfig {
        #[arg(value_enum)]
        service: config::Service,
    },
    /// Producer tokens.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Measure freshness: send marker events one at a time and time how
    /// long each takes from intake to `activity_1m_by_producer FINAL`. Needs a running
    /// `pulih aggregate`. The markers use the cell (31.01.01, U), which
    /// the simulator never uses. Stopped (SIGINT, SIGTERM) before the last
    /// marker, it reports those timed so far.
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
    if let Command::CheckConfig { service } = cli.command {
        return match config.check_for(service) {
            Ok(lines) => {
                for l in lines {
                    println!("{l}");
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("pulih: {e}");
                ExitCode::from(2)
            }
        };
    }
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
        Command::Simulate(args) => simulate::simulate(&config, args).await,
        Command::Aggregate { exit_at_end } => aggregate(&config, exit_at_end).await,
        Command::Report => report(&config).await,
        Command::Rollup { from, to, every } => rollup::rollup(&config, from, to, every).await,
        Command::Alerts {
            command: Some(AlertsCommand::Backtest { from, to }),
            ..
        } => alerts::backtest(&config, from, to).await,
        Command::Alerts {
            command: None,
            once,
            from,
            to,
        } => alerts::alerts(&config, once, from, to).await,
        Command::Probe { count, interval_ms } => probe(&config, count, interval_ms).await,
        Command::Ingest => ingest(&config).await,
        Command::Ui => ui(&config).await,
        Command::Produce {
            file,
            producer,
            may_count_again,
            rate,
        } => produce(&config, &file, &producer, may_count_again, rate).await,
        Command::Token {
            command: TokenCommand::New { producer },
        } => token_new(&producer),
        Command::DeadLetters => dead_letters(&config).await,
        // Answered in main, before the runtime starts.
        Command::CheckConfig { .. } => Err("check-config runs without the async runtime".into()),
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
    let holidays = config.holidays()?;
    let reference = config.reference()?;
    let applied = store.migrate().await?;
    if applied.is_empty() {
        println!("database {} is up to date", store.database());
    } else {
        for name in applied {
            println!("applied {name}");
        }
    }
    let days = holidays.days();
    store.load_calendar(&days).await?;
    println!("calendar: {} days", days.len());
    store.load_cell_names(&reference).await?;
    println!(
        "cell names: {} districts, {} sectors",
        reference.districts().len(),
        reference.categories().len()
    );
    Ok(())
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM (what Kubernetes and Docker send
/// to stop a container): the services then stop as they would on Ctrl-C,
/// the gateway answering in-flight requests, the aggregator flushing.
pub(crate) async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

/// How long to wait before trying a failed round of `pulih rollup` or
/// `pulih alerts` again, if it is worth trying: `None` after the last of
/// [`ROUND_TRIES`], or when the error is not one that passes (only
/// ClickHouse being unreachable, overloaded or dropping a connection does;
/// a replica that restarts breaks the connections the other servers of a
/// cluster keep to it). A round is safe to repeat: what it writes is
/// replaced, or recorded last.
pub(crate) fn retry_round(
    error: &(dyn std::error::Error + 'static),
    tries: u32,
) -> Option<std::time::Duration> {
    let transient = error
        .downcast_ref::<pulih_store::StoreError>()
        .is_some_and(pulih_store::StoreError::is_retryable);
    (transient && tries < ROUND_TRIES).then(|| std::time::Duration::from_secs(1 << tries))
}

/// Runs one round of `pulih rollup` or `pulih alerts`, trying it again
/// after the waits [`retry_round`] gives, and logging `message` (with the
/// error) before each wait. The round's result is the last try's.
pub(crate) async fn run_round<T, F, Fut>(message: &'static str, mut round: F) -> Result<T, BoxError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, BoxError>>,
{
    let mut tries = 1;
    loop {
        let result = round().await;
        if let Err(e) = &result {
            if let Some(wait) = retry_round(e.as_ref(), tries) {
                tracing::warn!(message = %message, error = %e, tries, wait_secs = wait.as_secs());
                tokio::time::sleep(wait).await;
                tries += 1;
                continue;
            }
        }
        return result;
    }
}

/// Tries of one round before it counts as failed: the waits between them
/// (2, 4, 8, 16, 32 s) outlast a replica restarting.
pub(crate) const ROUND_TRIES: u32 = 6;

/// Serves `component`'s metrics at http://ADDR/metrics, with `/healthz`
/// and `/readyz` (`ready`), in the background, unless `addr` (the setting
/// `key`, checked at load) is empty.
async fn serve_metrics(
    key: &str,
    addr: &str,
    component: &pulih_telemetry::Component,
    ready: pulih_telemetry::Readiness,
) -> Result<(), BoxError> {
    if addr.is_empty() {
        return Ok(());
    }
    let addr: std::net::SocketAddr = addr.parse()?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("`{key}`: cannot listen on {addr}: {e}"))?;
    tracing::info!(message = "Serving metrics.", url = %format!("http://{addr}/metrics"));
    tokio::spawn(pulih_telemetry::serve(
        listener,
        component.registry().clone(),
        ready,
    ));
    Ok(())
}

async fn aggregate(config: &Config, exit_at_end: bool) -> Result<(), BoxError> {
    let store = Store::new(&config.store());
    store.ping().await?;
    // Writing to a database without its tables would fail on every flush:
    // say so now, once.
    let pending: Vec<String> = store
        .migration_status()
        .await?
        .into_iter()
        .filter_map(|m| match m {
            MigrationStatus::Pending { name, .. } => Some(name),
            MigrationStatus::Applied { .. } => None,
        })
        .collect();
    if !pending.is_empty() {
        return Err(format!(
            "ClickHouse database `{}` lacks migrations {}: run `pulih migrate` first",
            config.clickhouse.database,
            pending.join(", ")
        )
        .into());
    }
    let a = &config.aggregate;
    let secs = |s: u32| i64::from(s) * 1000;
    let agg_config = AggregatorConfig {
        brokers: config.kafka.brokers.clone(),
        topic: config.kafka.topic.clone(),
        dlq_topic: config.kafka.dlq_topic.clone(),
        group_id: a.group_id.clone(),
        instance: a.instance,
        instances: a.instances,
        core: CoreConfig {
            window_ms: secs(a.window_secs),
            allowed_lateness_ms: secs(a.allowed_lateness_secs),
            max_age_ms: secs(config.time.max_age_secs),
            producer_idle_ms: secs(a.idle_timeout_secs),
            ..CoreConfig::default()
        },
        emit_interval: Duration::from_millis(u64::from(a.emit_interval_ms)),
        daily_emit_interval: Duration::from_millis(u64::from(a.daily_emit_interval_ms)),
        idle_timeout: Duration::from_secs(u64::from(a.idle_timeout_secs)),
        exit_at_end,
        kafka_options: config.kafka.options.clone(),
        archive_payments: config.aggregate.archive_payments,
        dedup_retention_days: config.dedup_retention_days(),
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
    serve_metrics(
        "aggregate.metrics_addr",
        &a.metrics_addr,
        &metrics.component,
        metrics.readiness(),
    )
    .await?;
    let shutdown = async {
        shutdown_signal().await;
    };
    let reference = Arc::new(config.reference()?);
    let stats = aggregator::run(agg_config, store, reference, metrics, shutdown).await?;
    println!(
        "aggregated records={} applied={} late={} replayed={} duplicates={} too_old={} undecodable={} rows_written={}",
        stats.records,
        stats.applied,
        stats.late,
        stats.replayed,
        stats.duplicates,
        stats.too_old,
        stats.undecodable,
        stats.rows_written
    );
    Ok(())
}

async fn dead_letters(config: &Config) -> Result<(), BoxError> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::Message;
    let (brokers, topic) = (config.kafka.brokers.clone(), config.kafka.dlq_topic.clone());
    let options = config.kafka.options.clone();
    // A blocking read from the beginning to the end of every partition.
    let letters = tokio::task::spawn_blocking(move || -> Result<Vec<Vec<u8>>, String> {
        let mut cc = rdkafka::ClientConfig::new();
        cc.set("bootstrap.servers", &brokers)
            .set("group.id", "pulih-dead-letters")
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "true");
        for (k, v) in &options {
            cc.set(k, v);
        }
        let fail = |e: rdkafka::error::KafkaError| format!("{topic}: {e}");
        let consumer: BaseConsumer = cc.create().map_err(fail)?;
        let md = consumer
            .fetch_metadata(Some(&topic), Duration::from_secs(10))
            .map_err(fail)?;
        let parts = md.topics().first().map_or(0, |t| t.partitions().len());
        let mut tpl = rdkafka::TopicPartitionList::new();
        for p in 0..parts {
            tpl.add_partition_offset(&topic, p as i32, rdkafka::Offset::Beginning)
                .map_err(fail)?;
        }
        consumer.assign(&tpl).map_err(fail)?;
        let (mut at_end, mut out) = (std::collections::BTreeSet::new(), Vec::new());
        let mut quiet = Instant::now();
        while at_end.len() < parts {
            match consumer.poll(Duration::from_millis(200)) {
                Some(Ok(m)) => {
                    out.push(m.payload().unwrap_or_default().to_vec());
                    quiet = Instant::now();
                }
                Some(Err(rdkafka::error::KafkaError::PartitionEOF(p))) => {
                    at_end.insert(p);
                }
                Some(Err(e)) => return Err(fail(e)),
                None if quiet.elapsed() > Duration::from_secs(30) => {
                    return Err(format!("{topic}: no answer from the broker for 30 s"))
                }
                None => {}
            }
        }
        Ok(out)
    })
    .await??;
    let mut by_reason = std::collections::BTreeMap::<(String, String), u64>::new();
    let mut distinct = std::collections::HashSet::new();
    let mut unreadable = 0u64;
    for bytes in &letters {
        match serde_json::from_slice::<pulih_event::DeadLetter>(bytes) {
            Ok(d) => {
                let stage = serde_json::to_value(d.stage)?
                    .as_str()
                    .unwrap_or("?")
                    .to_owned();
                *by_reason.entry((stage.clone(), d.reason)).or_default() += 1;
                distinct.insert((
                    stage,
                    d.producer_id,
                    d.source.map(|s| format!("{s:?}")),
                    d.raw,
                ));
            }
            Err(_) => unreadable += 1,
        }
    }
    println!(
        "dead letters: {} ({} distinct records, {unreadable} unreadable)",
        letters.len(),
        distinct.len()
    );
    for ((stage, reason), n) in by_reason {
        println!("{stage} {reason} {n}");
    }
    Ok(())
}

async fn ingest(config: &Config) -> Result<(), BoxError> {
    let gateway = config.gateway()?;
    let addr = config.listen_addr()?;
    if gateway.producers.is_empty() {
        tracing::warn!(message = "No producers are configured: every request will get 401. Add one with `pulih token new PRODUCER`.");
    }
    let reference = Arc::new(config.reference()?);
    let kafka = config.kafka();
    kafka.ensure_topic().await?;
    pulih_ingest::KafkaConfig {
        topic: config.kafka.dlq_topic.clone(),
        ..kafka.clone()
    }
    .ensure_topic()
    .await?;
    let intake = Intake::new(kafka, reference, config.pseudonymiser()?, Limits::default())?
        .with_time_policy(config.time_policy(false));
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("`ingest.listen`: cannot listen on {addr}: {e}"))?;
    let shutdown = async {
        shutdown_signal().await;
        tracing::info!(message = "Shutting down: draining in-flight requests.");
    };
    pulih_ingest::gateway::serve(
        listener,
        intake,
        gateway,
        pulih_ingest::gateway::Metrics::new(),
        shutdown,
    )
    .await?;
    Ok(())
}

async fn ui(config: &Config) -> Result<(), BoxError> {
    let addr: std::net::SocketAddr = config.ui.listen.parse()?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("`ui.listen`: cannot listen on {addr}: {e}"))?;
    let reference = Arc::new(config.reference()?);
    let ui = pulih_ui::UiConfig {
        clickhouse_url: config.clickhouse.url.clone(),
        user: config.ui.clickhouse_user.clone(),
        password: config.ui.clickhouse_password.expose().to_owned(),
        database: pulih_store::public_database(&config.clickhouse.database),
    };
    tracing::info!(message = "Serving the page.", url = %format!("http://{addr}/"), database = %ui.database);
    println!("pulih ui: http://{addr}/");
    let shutdown = async {
        shutdown_signal().await;
    };
    pulih_ui::serve(listener, ui, reference, shutdown).await?;
    Ok(())
}

fn token_new(producer: &str) -> Result<(), BoxError> {
    if !pulih_event::is_producer_id(producer) {
        return Err("PRODUCER must be 1-64 characters of [A-Za-z0-9_-]".into());
    }
    let (token, digest) = pulih_ingest::gateway::new_token()?;
    println!("token for {producer} (give it to the producer; it is not stored anywhere):");
    println!("{token}");
    println!();
    println!("add to the gateway's config file:");
    println!("[ingest.producers.{producer}]");
    println!("token_sha256 = \"{digest}\"");
    Ok(())
}

async fn produce(
    config: &Config,
    file: &std::path::Path,
    producer: &str,
    may_count_again: bool,
    rate: Option<u32>,
) -> Result<(), BoxError> {
    use std::io::{BufRead, IsTerminal, Read};
    if !pulih_event::is_producer_id(producer) {
        return Err("--producer must be 1-64 characters of [A-Za-z0-9_-]".into());
    }
    if rate == Some(0) {
        return Err("--rate must be at least 1 event a second".into());
    }
    let reference = Arc::new(config.reference()?);
    let kafka = config.kafka();
    kafka.ensure_topic().await?;
    let retention_days = config.dedup_retention_days();
    let mut policy = config.time_policy(true);
    if !may_count_again && retention_days > 0 {
        policy.dedup_retention_ms = Some(i64::from(retention_days) * 86_400_000);
    }
    let intake = Intake::new(kafka, reference, config.pseudonymiser()?, Limits::default())?
        .with_time_policy(policy);
    let (reader, total_bytes): (Box<dyn Read>, u64) = if file.as_os_str() == "-" {
        (Box::new(std::io::stdin().lock()), 0)
    } else {
        let f = std::fs::File::open(file).map_err(|e| format!("--file {}: {e}", file.display()))?;
        let len = f.metadata().map_or(0, |m| m.len());
        (Box::new(f), len)
    };
    let counted = CountingReader {
        inner: reader,
        read: Arc::new(std::sync::atomic::AtomicU64::new(0)),
    };
    let progress = counted.read.clone();
    let gz = file.extension().is_some_and(|e| e == "gz");
    let reader: Box<dyn BufRead> = if gz {
        Box::new(std::io::BufReader::new(flate2::read::MultiGzDecoder::new(
            counted,
        )))
    } else {
        Box::new(std::io::BufReader::new(counted))
    };
    let tty = std::io::stderr().is_terminal();
    let mut loader = intake.loader();
    let start = Instant::now();
    let mut last_draw = Instant::now();
    let (mut lines, mut rejected) = (0u64, 0u64);
    let mut reasons: std::collections::BTreeMap<&'static str, u64> = Default::default();
    for (n, line) in reader.split(b'\n').enumerate() {
        let line = line.map_err(|e| format!("--file {}: {e}", file.display()))?;
        let line = line.strip_suffix(b"\r").unwrap_or(&line);
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        lines += 1;
        // Ten bursts a second, each one request per partition to the
        // broker: spread one by one, the records went in requests of one
        // or two, and the broker spent its time on requests.
        if let Some(rate) = rate {
            let burst = u64::from(rate.div_ceil(10));
            if (lines - 1) % burst == 0 {
                let due = Duration::from_secs_f64((lines - 1) as f64 / f64::from(rate));
                if let Some(wait) = due.checked_sub(start.elapsed()) {
                    tokio::time::sleep(wait).await;
                }
            }
        }
        match loader.offer(producer, line).await? {
            Accepted::Queued => {}
            Accepted::Rejected(r) => {
                rejected += 1;
                *reasons.entry(r.reason.code()).or_default() += 1;
                tracing::warn!(message = "Rejected line.", line = n + 1, reason = r.reason.code(), detail = %r.detail);
            }
        }
        if tty && last_draw.elapsed() > Duration::from_millis(200) {
            last_draw = Instant::now();
            let done = progress.load(std::sync::atomic::Ordering::Relaxed);
            let pct = if total_bytes > 0 {
                format!("{:5.1}% ", done as f64 * 100.0 / total_bytes as f64)
            } else {
                String::new()
            };
            eprint!(
                "\r{pct}{lines} lines, {rejected} rejected, {:.0} lines/s   ",
                lines as f64 / start.elapsed().as_secs_f64()
            );
        }
    }
    let acked = loader.finish().await?;
    if tty {
        eprintln!();
    }
    println!(
        "produced events={acked} rejected={rejected} lines={lines} seconds={:.1}",
        start.elapsed().as_secs_f64()
    );
    for (reason, n) in &reasons {
        println!("rejected reason={reason} count={n}");
    }
    if reasons.contains_key("beyond_dedup_retention") {
        eprintln!(
            "pulih produce: events older than aggregate.dedup_retention_days ({retention_days}) were rejected: \
             their fingerprints are not kept, so sent again they would count again. \
             Run again with --may-count-again to load them, knowing that."
        );
    } else if may_count_again && retention_days > 0 {
        eprintln!(
            "pulih produce: with --may-count-again, events older than {retention_days} days \
             (aggregate.dedup_retention_days) count again if this file is sent again."
        );
    }
    Ok(())
}

/// Counts the bytes read, for the progress display.
struct CountingReader<R> {
    inner: R,
    read: Arc<std::sync::atomic::AtomicU64>,
}

impl<R: std::io::Read> std::io::Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read
            .fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
        Ok(n)
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
    // Every marker's window starts after this; the count reads only them.
    let since_s = (run / 1000) as u32 - config.aggregate.window_secs;
    let mut seen = store.cell_txn_count(DISTRICT, SECTOR, since_s).await?;
    let mut latencies = Vec::with_capacity(count as usize);
    let stop = tokio::spawn(shutdown_signal());
    for i in 0..count {
        if stop.is_finished() {
            break;
        }
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
            Offer::Queued(f) => delivered(f, &config.kafka.brokers).await?,
            Offer::Rejected(r) => return Err(format!("probe event rejected: {r}").into()),
        }
        loop {
            let now = store.cell_txn_count(DISTRICT, SECTOR, since_s).await?;
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
    if latencies.is_empty() {
        return Err("stopped before the first marker was counted".into());
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

#[cfg(test)]
mod tests {
    use super::*;

    fn store_error(source: clickhouse::error::Error) -> BoxError {
        Box::new(pulih_store::StoreError {
            url: "http://127.0.0.1:8211".into(),
            action: "write the public release".into(),
            source,
        })
    }

    #[test]
    fn a_round_is_tried_again_only_after_errors_that_pass() {
        // What a Distributed insert answers when a shard's replica restarted
        // since the server last wrote to it.
        let broken = store_error(clickhouse::error::Error::BadResponse(
            "Code: 210, e.displayText() = DB::NetException: I/O error: Broken pipe, \
             while writing to socket (127.0.0.1:9221)"
                .into(),
        ));
        assert_eq!(
            retry_round(broken.as_ref(), 1),
            Some(std::time::Duration::from_secs(2))
        );
        assert_eq!(
            retry_round(broken.as_ref(), 5),
            Some(std::time::Duration::from_secs(32))
        );
        assert_eq!(retry_round(broken.as_ref(), ROUND_TRIES), None);
        let missing = store_error(clickhouse::error::Error::BadResponse(
            "Code: 60, e.displayText() = DB::Exception: Table x.releases doesn't exist.".into(),
        ));
        assert_eq!(retry_round(missing.as_ref(), 1), None);
        let kafka: BoxError =
            "send to Kafka topic pulih.alerts: no acknowledgement within 30 s".into();
        assert_eq!(retry_round(kafka.as_ref(), 1), None);
    }

    fn broken_pipe() -> BoxError {
        store_error(clickhouse::error::Error::BadResponse(
            "Code: 210, e.displayText() = DB::NetException: I/O error: Broken pipe".into(),
        ))
    }

    /// A round that fails its first `failures` tries with `error`, then
    /// succeeds; returns its result, its tries and the time they took.
    async fn round_failing(
        failures: u32,
        error: fn() -> BoxError,
    ) -> (Result<u32, BoxError>, u32, std::time::Duration) {
        let tries = std::cell::Cell::new(0);
        let started = tokio::time::Instant::now();
        let result = run_round("Test round failed; trying again.", || {
            tries.set(tries.get() + 1);
            let n = tries.get();
            async move {
                if n <= failures {
                    Err(error())
                } else {
                    Ok(n)
                }
            }
        })
        .await;
        (result, tries.get(), started.elapsed())
    }

    #[tokio::test(start_paused = true)]
    async fn a_round_runs_until_it_succeeds_or_its_error_stays() {
        let secs = std::time::Duration::from_secs;
        // Two broken connections, then success: waits of 2 and 4 s.
        let (result, tries, took) = round_failing(2, broken_pipe).await;
        assert_eq!(result.unwrap(), 3);
        assert_eq!((tries, took), (3, secs(6)));
        // Broken every time: it gives up after the last try.
        let (result, tries, took) = round_failing(u32::MAX, broken_pipe).await;
        assert!(result.unwrap_err().to_string().contains("Broken pipe"));
        assert_eq!((tries, took), (ROUND_TRIES, secs(2 + 4 + 8 + 16 + 32)));
        // An error that does not pass is returned at once.
        let missing = || -> BoxError { "no such table".into() };
        let (result, tries, took) = round_failing(1, missing).await;
        assert_eq!(result.unwrap_err().to_string(), "no such table");
        assert_eq!((tries, took), (1, secs(0)));
    }
}
