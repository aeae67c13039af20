//! `pulih simulate`: the scenario's events (crates/pulih-sim) sent to Kafka
//! through the intake path of `pulih produce`, to the HTTP gateway with
//! each producer's token, or to NDJSON files, one per producer.
//!
//! Modes: the scenario's days as fast as the sink takes them (a backfill),
//! paced at `--speed` times real time (a time-compressed replay), or in
//! real time from the past into the present (`--follow`); and `--rate`, a
//! load at a target rate with the scenario's merchants at the current hour.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use pulih_event::calendar::{day_of, now_ms};
use pulih_event::holidays::{date_of, day_number};
use pulih_event::Limits;
use pulih_event::Timestamp;
use pulih_ingest::{Accepted, Intake};
use pulih_sim::{Faults, Kind, Scenario, SimEvent, Simulation};

use crate::config::Config;
use crate::BoxError;

/// Where the events go.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// Kafka (`kafka.topic`), through validation and pseudonymisation.
    Kafka,
    /// The HTTP gateway (`simulate.gateway_url`), with each producer's token.
    Gateway,
    /// NDJSON files under --dir, one per producer, for `pulih produce`.
    Ndjson,
}

#[derive(clap::Args)]
pub struct Args {
    /// Scenario file (default: `simulate.scenario`, else the shipped
    /// deploy/scenarios/jakarta.toml).
    #[arg(long)]
    scenario: Option<PathBuf>,
    /// First Jakarta day to send: YYYY-MM-DD, `today`, or `-Nd` (N days
    /// before today); default: the scenario's start.
    #[arg(long, allow_hyphen_values = true)]
    from: Option<String>,
    /// Last Jakarta day, as --from (default: today). Events that have not
    /// happened yet are held back, unless --follow.
    #[arg(long, allow_hyphen_values = true)]
    to: Option<String>,
    /// Take this instant as now, in the form of the contract's
    /// `occurred_at` (2026-11-30T12:00:00.000Z): `today`, `-Nd` and which
    /// events have happened (the rest are held back) are reckoned from it,
    /// so that runs at different times send the same events. Not with
    /// --follow or --rate.
    #[arg(long)]
    as_of: Option<String>,
    /// Send at this many times real time (3600: an hour a second).
    #[arg(long)]
    speed: Option<f64>,
    /// Keep going in real time: each event is sent when it happens, past
    /// ones at once, until interrupted (or --duration).
    #[arg(long)]
    follow: bool,
    /// Instead of the scenario's days: events now, at this many a second,
    /// from the merchants trading at this hour (for load tests).
    #[arg(long)]
    rate: Option<u32>,
    /// Seconds to run with --rate (default 10) or --follow (default: until interrupted).
    #[arg(long)]
    duration: Option<u64>,
    #[arg(long, value_enum, default_value_t = Output::Kafka)]
    output: Output,
    /// Directory for --output ndjson.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Gzip the NDJSON files.
    #[arg(long)]
    gzip: bool,
    /// With --output gateway: requests of 500 events in flight at once,
    /// over all producers. Above 1, a producer's events may reach the
    /// gateway a few requests out of order.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
    in_flight: u16,
    /// Share of events sent twice (overrides the scenario's `faults`).
    #[arg(long)]
    duplicates: Option<f64>,
    /// Share of events sent after later ones.
    #[arg(long)]
    out_of_order: Option<f64>,
    /// Share of events sent one to twelve hours late.
    #[arg(long)]
    late: Option<f64>,
    /// Share of extra, malformed events.
    #[arg(long)]
    invalid: Option<f64>,
}

/// What was sent, for the closing line.
#[derive(Default)]
struct Tally {
    payments: u64,
    amount_idr: u64,
    duplicates: u64,
    invalid: u64,
    rejected: u64,
    held: u64,
    reasons: BTreeMap<String, u64>,
}

impl Tally {
    fn accepted(&mut self, e: &SimEvent) {
        match e.kind {
            Kind::Payment => {
                self.payments += 1;
                self.amount_idr += e.amount_idr;
            }
            Kind::Duplicate => self.duplicates += 1,
            Kind::Invalid => {
                tracing::error!(message = "A malformed event was accepted.", event = %String::from_utf8_lossy(&e.json));
            }
        }
    }

    fn rejected(&mut self, e: &SimEvent, reason: &str, detail: &str) {
        self.rejected += 1;
        *self.reasons.entry(reason.to_owned()).or_default() += 1;
        if e.kind == Kind::Invalid {
            self.invalid += 1;
        } else {
            tracing::warn!(message = "Event rejected.", reason, detail);
        }
    }
}

type Http = Client<HttpConnector, Full<Bytes>>;

enum Sink {
    Kafka(Box<pulih_ingest::Loader>),
    Gateway {
        gateway: Arc<Gateway>,
        batches: Vec<(Vec<SimEvent>, Option<Instant>)>,
        /// Requests sent and not yet answered, at most `max_in_flight`.
        in_flight: tokio::task::JoinSet<Result<Posted, SendError>>,
        max_in_flight: usize,
    },
    Ndjson {
        files: Vec<Box<dyn Write>>,
    },
}

const GATEWAY_BATCH: usize = 500;

/// An error a task of the runtime can return.
type SendError = Box<dyn std::error::Error + Send + Sync>;

/// Where --output gateway posts, as whom.
struct Gateway {
    client: Http,
    url: String,
    /// Each producer's token, in the order of the scenario's producers.
    tokens: Vec<String>,
}

/// A batch the gateway answered, with each event's rejection (reason,
/// detail), if any.
struct Posted {
    batch: Vec<SimEvent>,
    rejected: Vec<Option<(String, String)>>,
}

impl Gateway {
    /// Posts producer `p`'s batch until the gateway answers it: again
    /// after a wait while it is unreachable or answers 429 or 503 (the
    /// same event ids: nothing is counted twice).
    async fn post(self: Arc<Self>, p: usize, batch: Vec<SimEvent>) -> Result<Posted, SendError> {
        let url = &self.url;
        let mut body = Vec::with_capacity(batch.len() * 260);
        for e in &batch {
            body.extend_from_slice(&e.json);
            body.push(b'\n');
        }
        let body = Bytes::from(body);
        let mut backoff = Duration::from_millis(200);
        loop {
            let request = hyper::Request::post(url.as_str())
                .header("content-type", "application/x-ndjson")
                .header("authorization", format!("Bearer {}", self.tokens[p]))
                .body(Full::new(body.clone()))?;
            let response = self.client.request(request).await;
            let (status, text) = match response {
                Ok(r) => {
                    let status = r.status();
                    let bytes = r.into_body().collect().await?.to_bytes();
                    (status.as_u16(), bytes)
                }
                Err(e) => {
                    tracing::warn!(message = "Gateway unreachable; retrying.", url = %url, error = %e);
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                    continue;
                }
            };
            match status {
                200 | 422 => {
                    #[derive(serde::Deserialize)]
                    struct Rejection {
                        index: usize,
                        reason: String,
                        #[serde(default)]
                        detail: String,
                    }
                    #[derive(serde::Deserialize)]
                    struct Answer {
                        #[serde(default)]
                        rejections: Vec<Rejection>,
                    }
                    let answer: Answer = serde_json::from_slice(&text)
                        .map_err(|e| format!("{url}: unexpected answer to a {status}: {e}"))?;
                    let mut rejected = vec![None; batch.len()];
                    for r in answer.rejections {
                        if let Some(slot) = rejected.get_mut(r.index) {
                            *slot = Some((r.reason, r.detail));
                        }
                    }
                    return Ok(Posted { batch, rejected });
                }
                429 | 503 => {
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                }
                _ => {
                    return Err(format!(
                        "{url}: {status}: {}",
                        String::from_utf8_lossy(&text).trim()
                    )
                    .into())
                }
            }
        }
    }
}

impl Sink {
    async fn send(
        &mut self,
        producers: &[String],
        e: SimEvent,
        tally: &mut Tally,
    ) -> Result<(), BoxError> {
        match self {
            Sink::Kafka(loader) => match loader.offer(&producers[e.producer], &e.json).await? {
                Accepted::Queued => tally.accepted(&e),
                Accepted::Rejected(r) => tally.rejected(&e, r.reason.code(), &r.detail),
            },
            Sink::Gateway { batches, .. } => {
                let p = e.producer;
                let (batch, since) = &mut batches[p];
                since.get_or_insert_with(Instant::now);
                batch.push(e);
                if batch.len() >= GATEWAY_BATCH {
                    self.flush_producer(p, tally).await?;
                }
            }
            Sink::Ndjson { files } => {
                let f = &mut files[e.producer];
                f.write_all(&e.json)?;
                f.write_all(b"\n")?;
                if e.kind == Kind::Invalid {
                    tally.invalid += 1;
                } else {
                    tally.accepted(&e);
                }
            }
        }
        Ok(())
    }

    /// Posts batches held longer than `age` (all with `Duration::ZERO`).
    async fn flush_older(&mut self, age: Duration, tally: &mut Tally) -> Result<(), BoxError> {
        if let Sink::Gateway { batches, .. } = self {
            let due: Vec<usize> = batches
                .iter()
                .enumerate()
                .filter(|(_, (b, since))| {
                    !b.is_empty() && since.is_some_and(|s| s.elapsed() >= age)
                })
                .map(|(i, _)| i)
                .collect();
            for p in due {
                self.flush_producer(p, tally).await?;
            }
        }
        Ok(())
    }

    /// Sends producer `p`'s batch, once fewer than `max_in_flight`
    /// requests wait for an answer (counting those answered meanwhile).
    async fn flush_producer(&mut self, p: usize, tally: &mut Tally) -> Result<(), BoxError> {
        let Sink::Gateway {
            gateway,
            batches,
            in_flight,
            max_in_flight,
        } = self
        else {
            return Ok(());
        };
        let (batch, _) = std::mem::take(&mut batches[p]);
        if batch.is_empty() {
            return Ok(());
        }
        while in_flight.len() >= *max_in_flight {
            Self::count_answer(in_flight, tally).await?;
        }
        in_flight.spawn(gateway.clone().post(p, batch));
        Ok(())
    }

    /// Waits for one request in flight and counts its events.
    async fn count_answer(
        in_flight: &mut tokio::task::JoinSet<Result<Posted, SendError>>,
        tally: &mut Tally,
    ) -> Result<(), BoxError> {
        let Some(joined) = in_flight.join_next().await else {
            return Ok(());
        };
        let Posted { batch, rejected } = joined?.map_err(|e| -> BoxError { e })?;
        for (e, r) in batch.iter().zip(rejected) {
            match r {
                None => tally.accepted(e),
                Some((reason, detail)) => tally.rejected(e, &reason, &detail),
            }
        }
        Ok(())
    }

    async fn finish(self, tally: &mut Tally) -> Result<(), BoxError> {
        match self {
            Sink::Kafka(loader) => {
                let queued = loader.queued();
                let acked = loader.finish().await?;
                if acked != queued {
                    return Err(format!("{queued} records queued but {acked} acknowledged").into());
                }
            }
            mut sink @ Sink::Gateway { .. } => {
                sink.flush_older(Duration::ZERO, tally).await?;
                if let Sink::Gateway { mut in_flight, .. } = sink {
                    while !in_flight.is_empty() {
                        Self::count_answer(&mut in_flight, tally).await?;
                    }
                }
            }
            Sink::Ndjson { files } => {
                for mut f in files {
                    f.flush()?;
                }
            }
        }
        Ok(())
    }
}

/// A Jakarta day given as YYYY-MM-DD, `today` or `-Nd` (N days before
/// `today`), as scripts and containers that cannot compute dates say it.
fn parse_day(key: &str, s: &str, today: i32) -> Result<i32, BoxError> {
    let days_back = s
        .strip_prefix('-')
        .and_then(|r| r.strip_suffix('d'))
        .and_then(|n| n.parse::<u16>().ok());
    match (s, days_back) {
        ("today", _) => Ok(today),
        (_, Some(n)) => Ok(today - i32::from(n)),
        _ => day_number(s)
            .ok_or_else(|| format!("{key}: `{s}` is not a date (YYYY-MM-DD, today or -Nd)").into()),
    }
}

pub async fn simulate(config: &Config, args: Args) -> Result<(), BoxError> {
    let reference = Arc::new(config.reference()?);
    let holidays = config.holidays()?;
    let as_of = match &args.as_of {
        None => None,
        Some(_) if args.follow || args.rate.is_some() => {
            return Err("--as-of fixes what has happened: it takes no --follow or --rate".into())
        }
        Some(s) => Some(
            Timestamp::parse_rfc3339(s)
                .ok_or_else(|| {
                    format!("--as-of: `{s}` is not a time as occurred_at writes it (2026-11-30T12:00:00.000Z)")
                })?
                .unix_millis(),
        ),
    };
    // Now, or the instant --as-of fixes.
    let now = || as_of.unwrap_or_else(now_ms);
    let today = day_of(now()) as i32;
    if args.follow && args.to.is_some() {
        return Err("--follow runs into the present: drop --to".into());
    }
    if args.rate.is_some()
        && (args.from.is_some() || args.to.is_some() || args.speed.is_some() || args.follow)
    {
        return Err(
            "--rate sends events now: it takes no --from, --to, --speed or --follow".into(),
        );
    }
    if args.speed.is_some_and(|s| !(s.is_finite() && s > 0.0)) {
        return Err("--speed must be above 0".into());
    }
    let end = match &args.to {
        Some(s) => parse_day("--to", s, today)?,
        None => today,
    };
    let path = args
        .scenario
        .clone()
        .unwrap_or_else(|| config.simulate.scenario.clone());
    let scenario = if path.as_os_str().is_empty() {
        Scenario::jakarta(end, &reference)
    } else {
        let text = std::fs::read_to_string(&path)
            .map_err(|e| format!("scenario {}: {e}", path.display()))?;
        Scenario::parse(&path.display().to_string(), &text, end, &reference)?
    };
    let f = scenario.faults;
    let scenario = scenario.with_faults(Faults {
        duplicates: args.duplicates.unwrap_or(f.duplicates),
        out_of_order: args.out_of_order.unwrap_or(f.out_of_order),
        late: args.late.unwrap_or(f.late),
        invalid: args.invalid.unwrap_or(f.invalid),
    })?;
    let from = match &args.from {
        Some(s) => parse_day("--from", s, today)?,
        None => scenario.start,
    };
    if from > end {
        return Err("--from is after --to".into());
    }
    let mut sim = Simulation::new(scenario, &reference, &holidays);
    let producers: Vec<String> = sim.producers().iter().map(|p| p.to_string()).collect();

    let mut sink = match args.output {
        Output::Kafka => {
            let kafka = config.kafka();
            kafka.ensure_topic().await?;
            let intake = Intake::new(
                kafka,
                reference.clone(),
                config.pseudonymiser()?,
                Limits::default(),
            )?
            .with_time_policy(config.time_policy(args.rate.is_none()));
            Sink::Kafka(Box::new(intake.loader()))
        }
        Output::Gateway => {
            let mut tokens = Vec::new();
            for p in &producers {
                let t = config.simulate.tokens.get(p).ok_or_else(|| {
                    format!(
                        "`simulate.tokens.{p}` is not set: --output gateway needs a token for every producer of the scenario (PULIH_SIMULATE__TOKENS__{})",
                        p.to_uppercase().replace('-', "_")
                    )
                })?;
                tokens.push(t.expose().to_owned());
            }
            let url = format!(
                "{}/v1/events",
                config.simulate.gateway_url.trim_end_matches('/')
            );
            url.parse::<hyper::Uri>()
                .map_err(|e| format!("`simulate.gateway_url`: {e}"))?;
            Sink::Gateway {
                gateway: Arc::new(Gateway {
                    client: Client::builder(TokioExecutor::new()).build(HttpConnector::new()),
                    url,
                    tokens,
                }),
                batches: producers.iter().map(|_| (Vec::new(), None)).collect(),
                in_flight: tokio::task::JoinSet::new(),
                max_in_flight: usize::from(args.in_flight),
            }
        }
        Output::Ndjson => {
            let dir = args.dir.clone().ok_or("--output ndjson needs --dir")?;
            std::fs::create_dir_all(&dir).map_err(|e| format!("--dir {}: {e}", dir.display()))?;
            let mut files: Vec<Box<dyn Write>> = Vec::new();
            for p in &producers {
                let name = if args.gzip {
                    format!("{p}.ndjson.gz")
                } else {
                    format!("{p}.ndjson")
                };
                let file = std::fs::File::create(dir.join(&name))
                    .map_err(|e| format!("--dir {}: {name}: {e}", dir.display()))?;
                let file = std::io::BufWriter::new(file);
                files.push(if args.gzip {
                    Box::new(flate2::write::GzEncoder::new(
                        file,
                        flate2::Compression::default(),
                    ))
                } else {
                    Box::new(file)
                });
            }
            Sink::Ndjson { files }
        }
    };

    let mut tally = Tally::default();
    let started = Instant::now();
    let stop = crate::shutdown_signal();
    tokio::pin!(stop);
    let deadline = args.duration.map(|s| started + Duration::from_secs(s));
    let bar = indicatif::ProgressBar::new(0);

    if let Some(rate) = args.rate {
        if rate == 0 {
            return Err("--rate must be at least 1".into());
        }
        let seconds = args.duration.unwrap_or(10);
        let total = u64::from(rate) * seconds;
        bar.set_length(total);
        bar.set_style(style("{bar:30} {pos}/{len} events  {per_sec}  {msg}"));
        let run_id = format!("{}-live{}", sim.scenario().name, now_ms());
        let mut hour_key = -1i64;
        let mut live = None;
        tracing::info!(message = "Simulating at a rate.", rate, seconds, total);
        for i in 0..total {
            let due = Duration::from_secs_f64(i as f64 / f64::from(rate));
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                if wait > Duration::from_millis(2) {
                    sink.flush_older(Duration::from_millis(100), &mut tally)
                        .await?;
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = &mut stop => break,
                    }
                }
            }
            let now = now_ms();
            let key = now.div_euclid(3_600_000);
            if key != hour_key {
                hour_key = key;
                let local_hour = ((now + pulih_event::calendar::OFFSET_MS).rem_euclid(86_400_000)
                    / 3_600_000) as usize;
                live = Some(sim.live(day_of(now) as i32, local_hour, &run_id));
            }
            let Some(l) = live.as_mut() else {
                continue;
            };
            let Some(e) = sim.live_event(l, now) else {
                continue;
            };
            let faults = sim.live_faults(l, &e);
            sink.send(&producers, e, &mut tally).await?;
            for f in faults {
                sink.send(&producers, f, &mut tally).await?;
            }
            bar.inc(1);
        }
    } else {
        let last = if args.follow { i32::MAX } else { end };
        if !args.follow {
            bar.set_length(u64::try_from(end - from + 1).unwrap_or(0));
        }
        bar.set_style(style("{bar:30} {msg}"));
        tracing::info!(
            message = "Simulating the scenario's days.",
            scenario = %sim.scenario().name,
            from = %show_day(from),
            to = %if args.follow { "(follow)".to_owned() } else { show_day(end) },
        );
        let mut anchor: Option<(i64, Instant)> = None;
        let mut day = from;
        'days: while day <= last {
            let events = sim.day(day);
            for e in events {
                if let Some(speed) = args.speed {
                    let (t0, w0) = *anchor.get_or_insert((e.send_ms, Instant::now()));
                    let due =
                        Duration::from_secs_f64((e.send_ms - t0).max(0) as f64 / 1000.0 / speed);
                    if let Some(wait) = due.checked_sub(w0.elapsed()) {
                        if wait > Duration::from_millis(2) {
                            sink.flush_older(Duration::from_millis(100), &mut tally)
                                .await?;
                            tokio::select! {
                                _ = tokio::time::sleep(wait) => {}
                                _ = &mut stop => break 'days,
                            }
                        }
                    }
                }
                let ahead = e.send_ms - now();
                if ahead > 0 {
                    if !args.follow {
                        tally.held += 1;
                        continue;
                    }
                    sink.flush_older(Duration::ZERO, &mut tally).await?;
                    let wait = Duration::from_millis(ahead as u64);
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = &mut stop => break 'days,
                    }
                }
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    break 'days;
                }
                sink.send(&producers, e, &mut tally).await?;
            }
            bar.inc(1);
            bar.set_message(format!(
                "{}  {} payments, {:.0}/s",
                show_day(day),
                tally.payments,
                tally.payments as f64 / started.elapsed().as_secs_f64().max(1e-3)
            ));
            day += 1;
        }
        if !args.follow {
            for e in sim.finish() {
                if e.send_ms > now() {
                    tally.held += 1;
                } else {
                    sink.send(&producers, e, &mut tally).await?;
                }
            }
        }
    }
    sink.finish(&mut tally).await?;
    bar.finish_and_clear();
    let secs = started.elapsed().as_secs_f64();
    println!(
        "simulated events={} amount_idr={} duplicates={} invalid={} rejected={} held={} seconds={secs:.1} rate={:.0}/s",
        tally.payments,
        tally.amount_idr,
        tally.duplicates,
        tally.invalid,
        tally.rejected,
        tally.held,
        (tally.payments + tally.duplicates) as f64 / secs.max(1e-3)
    );
    for (reason, n) in &tally.reasons {
        println!("rejected reason={reason} count={n}");
    }
    let unexpected = tally.rejected - tally.invalid;
    if unexpected > 0 {
        return Err(
            format!("{unexpected} valid events were rejected (see the reasons above)").into(),
        );
    }
    Ok(())
}

fn style(template: &str) -> indicatif::ProgressStyle {
    indicatif::ProgressStyle::with_template(template)
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
}

fn show_day(day: i32) -> String {
    date_of(day).map_or_else(|| day.to_string(), |d| d.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }

    #[test]
    fn days_back_are_values_on_the_command_line() {
        use clap::Parser;
        let cli = Cli::try_parse_from(["simulate", "--from", "-7d", "--to", "-1d"]).unwrap();
        assert_eq!(
            (cli.args.from.as_deref(), cli.args.to.as_deref()),
            (Some("-7d"), Some("-1d"))
        );
    }

    #[test]
    fn days_are_dates_today_or_days_back() {
        let today = day_number("2026-11-30").unwrap();
        assert_eq!(parse_day("--from", "today", today).unwrap(), today);
        assert_eq!(parse_day("--from", "-1d", today).unwrap(), today - 1);
        assert_eq!(
            parse_day("--to", "2026-01-01", today).unwrap(),
            day_number("2026-01-01").unwrap()
        );
        for bad in ["-d", "-1", "+1d", "yesterday", "2026-02-30", "--1d"] {
            let e = parse_day("--from", bad, today).unwrap_err().to_string();
            assert!(e.contains(&format!("`{bad}` is not a date")), "{bad}: {e}");
        }
    }
}
