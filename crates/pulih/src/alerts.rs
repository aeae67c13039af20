//! `pulih alerts`: evaluates the sector-downturn rule (docs/alerting.md)
//! once per complete, final day; writes each state change to Kafka
//! (`alerts.topic`) and then to `pulih_analytics.alert_events`; keeps
//! Alertmanager told of every active alert; and exports per-sector gauges.
//! `pulih alerts backtest` replays the rule over stored history.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use pulih_alert::alertmanager::Alertmanager;
use pulih_alert::message::AlertEvent;
use pulih_alert::{Active, Names, Rule, Transition};
use pulih_metrics::{format_day, parse_day, Day, Level};
use pulih_store::Store;
use pulih_telemetry::prometheus::{Gauge, GaugeVec, IntCounterVec};
use pulih_telemetry::{Component, LastRound};

use crate::config::Config;
use crate::{now_ms, BoxError};

/// What `pulih alerts` exports, under `pulih_alerts_`.
struct AlertMetrics {
    component: Component,
    /// `/readyz`: whether the last round succeeded.
    last_round: LastRound,
    rounds: IntCounterVec,
    last_success: Gauge,
    evaluated_day: Gauge,
    changes: IntCounterVec,
    active: GaugeVec,
    posts: IntCounterVec,
    revenue_yoy: GaugeVec,
    revenue_chg4w: GaugeVec,
}

impl AlertMetrics {
    fn new() -> Result<AlertMetrics, pulih_telemetry::prometheus::Error> {
        let component = Component::new("pulih_alerts");
        let c = &component;
        let opts = |name: &str, help: &str| c.opts(name, help);
        let m = AlertMetrics {
            component: component.clone(),
            last_round: LastRound::default(),
            rounds: c.register(IntCounterVec::new(
                opts("rounds_total", "Evaluation rounds, by outcome (succeeded, failed)."),
                &["outcome"],
            )?),
            last_success: c.register(Gauge::with_opts(opts(
                "last_success_timestamp_seconds",
                "When the last successful round ended (Unix seconds).",
            ))?),
            evaluated_day: c.register(Gauge::with_opts(opts(
                "evaluated_day_timestamp_seconds",
                "Start (Asia/Jakarta midnight, Unix seconds) of the last day the rule evaluated.",
            ))?),
            changes: c.register(IntCounterVec::new(
                opts("changes_total", "Alert state changes raised, by state (firing, resolved)."),
                &["state"],
            )?),
            active: c.register(GaugeVec::new(
                opts("active", "Active downturn alerts, by severity."),
                &["severity"],
            )?),
            posts: c.register(IntCounterVec::new(
                opts(
                    "alertmanager_posts_total",
                    "POSTs to Alertmanager's /api/v2/alerts, by outcome (succeeded, failed).",
                ),
                &["outcome"],
            )?),
            revenue_yoy: c.register(GaugeVec::new(
                opts(
                    "sector_revenue_yoy",
                    "28-day revenue of a sector against the holiday-aligned days a year before, less 1, rounded to 0.01, on the last evaluated day; kota=\"all\" is the whole city. Absent where the cell is withheld or incomplete.",
                ),
                &["kota", "sector"],
            )?),
            revenue_chg4w: c.register(GaugeVec::new(
                opts(
                    "sector_revenue_chg4w",
                    "28-day revenue of a sector against the 28 days before, less 1, rounded to 0.01, on the last evaluated day; kota=\"all\" is the whole city. Absent where the cell is withheld or incomplete.",
                ),
                &["kota", "sector"],
            )?),
        };
        for outcome in ["succeeded", "failed"] {
            m.rounds.with_label_values(&[outcome]);
            m.posts.with_label_values(&[outcome]);
        }
        for state in ["firing", "resolved"] {
            m.changes.with_label_values(&[state]);
        }
        for severity in ["warning", "critical"] {
            m.active.with_label_values(&[severity]);
        }
        Ok(m)
    }

    fn gauges(&self, rule: &Rule, day: Day) {
        self.revenue_yoy.reset();
        self.revenue_chg4w.reset();
        for cell in rule.gauge_cells() {
            let Some(s) = rule.assess(&cell, day).stats else {
                continue;
            };
            let kota = if cell.level == Level::Sector {
                "all"
            } else {
                &cell.kota
            };
            let labels = [kota, &cell.sector];
            self.revenue_yoy
                .with_label_values(&labels)
                .set(pulih_metrics::round_public(s.yoy));
            self.revenue_chg4w
                .with_label_values(&labels)
                .set(pulih_metrics::round_public(s.chg4w));
        }
    }

    fn set_active(&self, active: &HashMap<String, (Active, AlertEvent)>) {
        for severity in [
            pulih_alert::Severity::Warning,
            pulih_alert::Severity::Critical,
        ] {
            let n = active
                .values()
                .filter(|(a, _)| a.severity == severity)
                .count();
            self.active
                .with_label_values(&[severity.name()])
                .set(n as f64);
        }
    }
}

/// The rule's inputs from the configuration.
struct Setup {
    settings: pulih_alert::Settings,
    params: pulih_metrics::Params,
    guards: Vec<(Day, Day)>,
    names: Names,
    public_database: String,
    /// The `deployment` label of every alert: the ClickHouse database.
    deployment: String,
    rows_url: String,
    first_run_days: Day,
    stop: pulih_alert::stop::StopSettings,
    /// Each district's kota code.
    kota_of: HashMap<String, String>,
}

fn setup(config: &Config) -> Result<Setup, BoxError> {
    let reference = config.reference()?;
    let mut names = Names::default();
    let mut kota_of = HashMap::new();
    for d in reference.districts() {
        kota_of.insert(d.code.clone(), d.regency_code.clone());
        names.district.insert(d.code.clone(), d.name.clone());
        names
            .kota
            .insert(d.regency_code.clone(), d.regency_name.clone());
    }
    for c in reference.categories() {
        names
            .sector
            .insert(c.sector.as_str().to_owned(), c.name_id.clone());
    }
    Ok(Setup {
        settings: config.alert_settings()?,
        params: config.metric_params()?,
        guards: config.alert_guards()?,
        names,
        public_database: pulih_store::public_database(&config.clickhouse.database),
        deployment: config.clickhouse.database.clone(),
        rows_url: config.alerts.rows_url.clone(),
        first_run_days: Day::from(config.alerts.first_run_days),
        stop: config.stop_settings()?,
        kota_of,
    })
}

fn day_arg(flag: &str, v: Option<String>) -> Result<Option<Day>, BoxError> {
    v.map(|s| parse_day(&s).map_err(|e| format!("{flag}: {e}").into()))
        .transpose()
}

/// Reads the history the rule needs to evaluate `from..=to`.
async fn history(
    store: &Store,
    settings: &pulih_alert::Settings,
    from: Day,
    to: Day,
) -> Result<pulih_alert::History, BoxError> {
    let first = store
        .activity_days()
        .await?
        .map_or(from, |(first, _)| first);
    let start = (from - settings.lookback()).max(first);
    Ok(store.alert_history(start, to).await?)
}

/// `pulih alerts backtest`: the changes the rule makes over `from..=to`
/// of stored history, starting with no alert active; writes nothing.
pub(crate) async fn backtest(
    config: &Config,
    from: String,
    to: Option<String>,
) -> Result<(), BoxError> {
    let s = setup(config)?;
    let from = day_arg("--from", Some(from))?.unwrap_or_default();
    let store = Store::new(&config.store());
    store.ping().await?;
    let last = store.final_through().await?;
    let to = match (day_arg("--to", to)?, last) {
        (Some(t), _) => t,
        (None, Some(l)) => l,
        (None, None) => return Err("no complete day yet: run `pulih rollup` first".into()),
    };
    if to < from {
        return Err(format!(
            "--to {} is before --from {}",
            format_day(to),
            format_day(from)
        )
        .into());
    }
    let h = history(&store, &s.settings, from, to).await?;
    let rule = Rule::new(&s.settings, &s.params, &s.guards, &h);
    let changes = rule.run(from, to, &HashMap::new());
    print!("{}", backtest_table(&changes, &s.names, from, to));
    Ok(())
}

/// One row per alert episode: when it fired and cleared.
fn backtest_table(changes: &[Transition], names: &Names, from: Day, to: Day) -> String {
    let mut out = format!(
        "Backtest of {} over {}..{}: {} alert(s)\n\n",
        pulih_alert::rule::SECTOR_DOWNTURN,
        format_day(from),
        format_day(to),
        changes.iter().filter(|t| t.firing).count()
    );
    out += "| alert | severity | fired | cleared | at firing |\n|---|---|---|---|---|\n";
    let mut open: BTreeMap<String, usize> = BTreeMap::new();
    let mut rows: Vec<[String; 5]> = Vec::new();
    for t in changes {
        if t.firing {
            open.insert(t.id(), rows.len());
            rows.push([
                t.id(),
                t.severity.name().to_owned(),
                format_day(t.day),
                "(active)".to_owned(),
                pulih_alert::rule::summary(t, names),
            ]);
        } else if let Some(i) = open.remove(&t.id()) {
            rows[i][3] = format_day(t.day);
        }
    }
    for r in rows {
        out += &format!("| {} |\n", r.join(" | "));
    }
    out
}

/// `pulih alerts`: one round (`--once`) or a service.
pub(crate) async fn alerts(
    config: &Config,
    once: bool,
    from: Option<String>,
    to: Option<String>,
) -> Result<(), BoxError> {
    let s = setup(config)?;
    let (from, to) = (day_arg("--from", from)?, day_arg("--to", to)?);
    let store = Store::new(&config.store());
    store.ping().await?;
    let a = &config.alerts;
    let kafka = pulih_ingest::KafkaConfig {
        topic: a.topic.clone(),
        ..config.kafka()
    };
    kafka.ensure_topic().await?;
    let producer = kafka.producer()?;
    let alertmanager = if a.alertmanager_url.is_empty() {
        None
    } else {
        Some(Alertmanager::new(
            &a.alertmanager_url,
            Duration::from_secs(10),
        )?)
    };
    let metrics = AlertMetrics::new()?;
    if !once {
        crate::serve_metrics(
            "alerts.metrics_addr",
            &a.metrics_addr,
            &metrics.component,
            metrics.last_round.readiness(),
        )
        .await?;
    }
    let resend = Duration::from_secs(u64::from(a.resend_secs));
    let mut first_round = true;
    // The last hour the sudden-stop rule evaluated.
    let mut stop_hour: Option<pulih_alert::stop::Hour> = None;
    loop {
        let round = crate::run_round("Alert round failed; trying again.", || async {
            let stored = store.alert_changes().await?;
            let now = now_ms() / 1000;
            let mut new = downturns(&store, &s, &metrics, &stored, first_round, from, to).await?;
            // Hours are only evaluated live, not over a chosen range, and
            // each hour once.
            let mut hour = None;
            if to.is_none() {
                let (stops, at) =
                    sudden_stops(&store, &s, &stored, &config.kafka.topic, stop_hour, now).await?;
                new.extend(stops);
                hour = at;
            }
            // Kafka first: a crash before the table write re-sends the
            // change on the next round (consumers key on alert_id, day
            // and state), and never loses it.
            let acks = pulih_ingest::Acks::new();
            for e in &new {
                let payload = serde_json::to_vec(e)?;
                acks.send_raw(&producer, &a.topic, &e.alert_id, &payload)
                    .map_err(|e| format!("send to Kafka topic {}: {e}", a.topic))?;
            }
            tokio::time::timeout(Duration::from_secs(30), acks.wait())
                .await
                .map_err(|_| {
                    format!(
                        "send to Kafka topic {}: no acknowledgement within 30 s",
                        a.topic
                    )
                })?
                .map_err(|e| format!("send to Kafka topic {}: {e}", a.topic))?;
            store.insert_alert_events(&new).await?;
            for e in &new {
                metrics.changes.with_label_values(&[&e.state]).inc();
                println!("{} {} {}: {}", e.day, e.state, e.alert_id, e.summary);
            }
            // Resolved alerts end when they resolved; Alertmanager keeps
            // the start it already has (the earlier of the two).
            if let Some(am) = &alertmanager {
                let posts: Vec<serde_json::Value> = new
                    .iter()
                    .filter(|e| !e.firing())
                    .map(|e| {
                        let since = e.active().since;
                        let starts = pulih_event::calendar::day_start_ms(i64::from(since)) / 1000;
                        e.to_alertmanager(starts, e.raised_at_secs(), &s.deployment)
                    })
                    .collect();
                post(am, &metrics, &posts).await;
            }
            Ok((store.active_alerts(Day::MAX).await?, hour))
        })
        .await;
        first_round = false;
        match round {
            Ok((active, hour)) => {
                stop_hour = hour.or(stop_hour);
                metrics.rounds.with_label_values(&["succeeded"]).inc();
                metrics.last_round.record(true);
                metrics.last_success.set(now_ms() as f64 / 1000.0);
                metrics.set_active(&active);
                if let Some(am) = &alertmanager {
                    // Every active alert, re-sent each round so that it
                    // stays active in Alertmanager while it is here.
                    let ends = now_ms() / 1000 + 4 * i64::from(a.resend_secs);
                    let posts: Vec<serde_json::Value> = active
                        .values()
                        .map(|(_, e)| e.to_alertmanager(e.raised_at_secs(), ends, &s.deployment))
                        .collect();
                    post(am, &metrics, &posts).await;
                }
            }
            Err(e) if !once => {
                metrics.rounds.with_label_values(&["failed"]).inc();
                metrics.last_round.record(false);
                tracing::warn!(message = "Alert round failed; retrying next round.", error = %e);
            }
            Err(e) => return Err(e),
        }
        if once {
            return Ok(());
        }
        tokio::select! {
            _ = tokio::time::sleep(resend) => {}
            _ = crate::shutdown_signal() => return Ok(()),
        }
    }
}

/// The changes already raised: (alert id, day, firing).
type Stored = std::collections::HashSet<(String, Day, bool)>;

/// The downturn rule over the final days not evaluated yet (or
/// `from..=to`): its changes, and the round recorded in `alert_runs`.
async fn downturns(
    store: &Store,
    s: &Setup,
    metrics: &AlertMetrics,
    stored: &Stored,
    first_round: bool,
    from: Option<Day>,
    to: Option<Day>,
) -> Result<Vec<AlertEvent>, BoxError> {
    let now = now_ms() / 1000;
    let Some(last) = store.final_through().await? else {
        println!("no final day to evaluate yet (run `pulih rollup`)");
        return Ok(Vec::new());
    };
    let last = to.map_or(last, |t| t.min(last));
    let done = store.alerts_evaluated_through().await?;
    let start = match (first_round, from, done) {
        (true, Some(f), _) => f,
        (_, _, Some(d)) => d + 1,
        // A new deployment raises the alerts that hold now, not a replay
        // of history (that is `pulih alerts backtest`).
        (_, _, None) => return first_run(store, s, metrics, stored, last, now).await,
    };
    if start > last {
        // Nothing new; a service just started still shows the gauges of
        // the last evaluated day.
        if first_round {
            let shown = done.unwrap_or(last).min(last);
            let h = store
                .alert_history(
                    shown - pulih_metrics::MAX_ALIGNED_LAG - 2 * s.settings.window_days,
                    shown,
                )
                .await?;
            metrics.gauges(&Rule::new(&s.settings, &s.params, &s.guards, &h), shown);
        }
        return Ok(Vec::new());
    }
    let h = history(store, &s.settings, start, last).await?;
    let rule = Rule::new(&s.settings, &s.params, &s.guards, &h);
    let states: HashMap<String, Active> = store
        .active_alerts(start)
        .await?
        .into_iter()
        .map(|(id, (a, _))| (id, a))
        .collect();
    let transitions = rule.run(start, last, &states);
    let new = unraised(&transitions, s, stored, now);
    end_round(store, metrics, &rule, last, new.len()).await?;
    println!(
        "evaluated {}..{}: {} change(s)",
        format_day(start),
        format_day(last),
        new.len()
    );
    Ok(new)
}

/// A new deployment: the rule replayed over `alerts.first_run_days` up to
/// `last`, in memory, from no alert active; the alerts active at its end
/// are raised with the day each fired. What fired and cleared within the
/// replay is history, which `pulih alerts backtest` shows, and is not sent.
async fn first_run(
    store: &Store,
    s: &Setup,
    metrics: &AlertMetrics,
    stored: &Stored,
    last: Day,
    now: i64,
) -> Result<Vec<AlertEvent>, BoxError> {
    let from = last - s.first_run_days + 1;
    let h = history(store, &s.settings, from, last).await?;
    let rule = Rule::new(&s.settings, &s.params, &s.guards, &h);
    let mut current: HashMap<String, Transition> = HashMap::new();
    for t in rule.run(from, last, &HashMap::new()) {
        if t.firing {
            current.insert(t.id(), t);
        } else {
            current.remove(&t.id());
        }
    }
    let mut active: Vec<Transition> = current.into_values().collect();
    active.sort_by_key(|t| (t.day, t.id()));
    let new = unraised(&active, s, stored, now);
    end_round(store, metrics, &rule, last, new.len()).await?;
    println!(
        "first evaluation: replayed {}..{}: {} alert(s) active",
        format_day(from),
        format_day(last),
        new.len()
    );
    Ok(new)
}

/// The changes among `transitions` not raised before, as alert events.
fn unraised(transitions: &[Transition], s: &Setup, stored: &Stored, now: i64) -> Vec<AlertEvent> {
    transitions
        .iter()
        .filter(|t| !stored.contains(&(t.id(), t.day, t.firing)))
        .map(|t| AlertEvent::new(t, &s.names, &s.public_database, &s.rows_url, now))
        .collect()
}

/// Records a round through `last` and shows its gauges.
async fn end_round(
    store: &Store,
    metrics: &AlertMetrics,
    rule: &Rule<'_>,
    last: Day,
    changes: usize,
) -> Result<(), BoxError> {
    store.record_alert_run(last, changes as u32).await?;
    metrics.gauges(rule, last);
    metrics
        .evaluated_day
        .set(pulih_event::calendar::day_start_ms(i64::from(last)) as f64 / 1000.0);
    Ok(())
}

/// The sudden-stop rule on the last hour every partition has passed,
/// unless it is `done`: new stops fire, active ones that no longer hold
/// resolve. Returns the changes and the hour evaluated.
async fn sudden_stops(
    store: &Store,
    s: &Setup,
    stored: &Stored,
    topic: &str,
    done: Option<pulih_alert::stop::Hour>,
    now: i64,
) -> Result<(Vec<AlertEvent>, Option<pulih_alert::stop::Hour>), BoxError> {
    let Some(watermark) = store.complete_through(topic).await? else {
        return Ok((Vec::new(), None));
    };
    let at = watermark.div_euclid(3_600_000) - 1;
    if done == Some(at) {
        return Ok((Vec::new(), None));
    }
    let hourly = store
        .hourly(at - s.stop.lookback(), at, &s.stop.merchant_hours(at))
        .await?;
    let active: HashMap<String, AlertEvent> = store
        .active_alerts(Day::MAX)
        .await?
        .into_iter()
        .filter(|(_, (_, e))| e.rule == pulih_alert::stop::SUDDEN_STOP)
        .map(|(id, (_, e))| (id, e))
        .collect();
    let mut out = Vec::new();
    let mut still = std::collections::HashSet::new();
    for stop in hourly.stops(at, &s.stop) {
        let Some(kota) = s.kota_of.get(&stop.cell.0) else {
            continue;
        };
        let e = AlertEvent::stop(&stop, kota, &s.names, &s.public_database, &s.rows_url, now);
        still.insert(e.alert_id.clone());
        if !active.contains_key(&e.alert_id) {
            out.push(e);
        }
    }
    for (id, fired) in &active {
        if !still.contains(id) {
            out.push(fired.stop_resolved(at, now));
        }
    }
    out.retain(|e: &AlertEvent| {
        let day = parse_day(&e.day).unwrap_or_default();
        !stored.contains(&(e.alert_id.clone(), day, e.firing()))
    });
    println!(
        "sudden stops at {}: {} silent cell(s)",
        pulih_alert::message::rfc3339(at * 3600),
        still.len()
    );
    Ok((out, Some(at)))
}

async fn post(am: &Alertmanager, metrics: &AlertMetrics, alerts: &[serde_json::Value]) {
    if alerts.is_empty() {
        return;
    }
    match am.post(alerts).await {
        Ok(()) => metrics.posts.with_label_values(&["succeeded"]).inc(),
        Err(e) => {
            metrics.posts.with_label_values(&["failed"]).inc();
            tracing::warn!(message = "Cannot post to Alertmanager; retrying next round.", error = %e);
        }
    }
}
