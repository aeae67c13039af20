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
use pulih_stream::window::WindowConfig;

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
    let agg_config = AggregatorConfig {
        brokers: config.kafka.brokers.clone(),
        topic: config.kafka.topic.clone(),
        group_id: a.group_id.clone(),
        window: WindowConfig {
            window_ms: i64::from(a.window_secs) * 1000,
            allowed_lateness_ms: i64::from(a.allowed_lateness_secs) * 1000,
        },
        emit_interval: Duration::from_millis(u64::from(a.emit_interval_ms)),
        exit_at_end,
        kafka_options: config.kafka.options.clone(),
    };
    config.kafka().ensure_topic().await?;
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let stats = aggregator::run(agg_config, store, shutdown).await?;
    println!(
        "aggregated records={} applied={} late={} undecodable={} rows_written={}",
        stats.records, stats.applied, stats.late, stats.undecodable, stats.rows_written
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
