//! `pulih rollup`: recomputes the recovery metrics once, or as a service
//! (`--every SECS`) with Prometheus metrics that tell an operator whether
//! the published numbers are current.

use std::time::{Duration, Instant};

use pulih_metrics::{format_day, parse_day, Day};
use pulih_store::{RollupReport, Store};
use pulih_telemetry::prometheus::{Gauge, GaugeVec, IntCounter, IntCounterVec};
use pulih_telemetry::{Component, LastRound};

use crate::config::Config;
use crate::{now_ms, BoxError};

/// What `pulih rollup --every` exports, under `pulih_rollup_`.
struct RollupMetrics {
    component: Component,
    /// `/readyz`: whether the last round succeeded.
    last_round: LastRound,
    rounds: IntCounterVec,
    last_success: Gauge,
    latest_day: Gauge,
    duration: Gauge,
    rows: IntCounter,
    suppressed: IntCounter,
    public_releases: IntCounter,
    producer_coverage: GaugeVec,
    producer_outage: GaugeVec,
}

impl RollupMetrics {
    fn new() -> Result<RollupMetrics, pulih_telemetry::prometheus::Error> {
        let component = Component::new("pulih_rollup");
        let c = &component;
        let opts = |name: &str, help: &str| c.opts(name, help);
        let m = RollupMetrics {
            component: component.clone(),
            last_round: LastRound::default(),
            rounds: c.register(IntCounterVec::new(
                opts("rounds_total", "Rollup rounds, by outcome (succeeded, failed)."),
                &["outcome"],
            )?),
            last_success: c.register(Gauge::with_opts(opts(
                "last_success_timestamp_seconds",
                "When the last successful round ended (Unix seconds).",
            ))?),
            latest_day: c.register(Gauge::with_opts(opts(
                "latest_day_timestamp_seconds",
                "Start (Asia/Jakarta midnight, Unix seconds) of the newest day the last successful round computed.",
            ))?),
            duration: c.register(Gauge::with_opts(opts(
                "last_round_duration_seconds",
                "How long the last round took, succeeded or not.",
            ))?),
            rows: c.register(IntCounter::with_opts(opts(
                "rows_total",
                "Rows written to the analytics table.",
            ))?),
            suppressed: c.register(IntCounter::with_opts(opts(
                "suppressed_rows_total",
                "Rows written whose day the public release withholds.",
            ))?),
            public_releases: c.register(IntCounter::with_opts(opts(
                "public_releases_total",
                "Public releases made (at most one a Jakarta day).",
            ))?),
            producer_coverage: c.register(GaugeVec::new(
                opts(
                    "producer_coverage_ratio",
                    "Each producer's transactions against its norm, relative to the median producer's, on the newest day the last successful round computed; absent while a producer is not judged (docs/data-model.md, coverage).",
                ),
                &["producer"],
            )?),
            producer_outage: c.register(GaugeVec::new(
                opts(
                    "producer_outage",
                    "1 when a producer had an outage on the newest day the last successful round computed, else 0.",
                ),
                &["producer"],
            )?),
        };
        for outcome in ["succeeded", "failed"] {
            m.rounds.with_label_values(&[outcome]);
        }
        Ok(m)
    }

    fn round(&self, took: Duration, report: Option<&RollupReport>) {
        self.duration.set(took.as_secs_f64());
        self.last_round.record(report.is_some());
        let Some(r) = report else {
            self.rounds.with_label_values(&["failed"]).inc();
            return;
        };
        self.rounds.with_label_values(&["succeeded"]).inc();
        self.last_success.set(now_ms() as f64 / 1000.0);
        self.rows.inc_by(r.rows as u64);
        self.suppressed.inc_by(r.suppressed as u64);
        if let Some((_, last)) = r.days {
            self.latest_day.set(jakarta_midnight(last) as f64);
        }
    }

    /// The coverage of each producer on the newest day computed.
    fn coverage(&self, producers: &[(String, Option<f64>, bool)]) {
        self.producer_coverage.reset();
        self.producer_outage.reset();
        for (producer, ratio, outage) in producers {
            if let Some(r) = ratio {
                self.producer_coverage
                    .with_label_values(&[producer])
                    .set(*r);
            }
            self.producer_outage
                .with_label_values(&[producer])
                .set(f64::from(u8::from(*outage)));
        }
    }
}

/// Unix seconds at the start of Jakarta day `day`.
fn jakarta_midnight(day: Day) -> i64 {
    pulih_event::calendar::day_start_ms(i64::from(day)) / 1000
}

pub(crate) async fn rollup(
    config: &Config,
    from: Option<String>,
    to: Option<String>,
    every: Option<u64>,
) -> Result<(), BoxError> {
    let params = config.metric_params()?;
    let reference = config.reference()?;
    let kota = pulih_store::kota_map(
        reference
            .districts()
            .iter()
            .map(|d| (d.code.as_str(), d.regency_code.as_str())),
    );
    let sectors: Vec<String> = reference
        .categories()
        .iter()
        .map(|c| c.sector.as_str().to_owned())
        .collect();
    let cells = pulih_metrics::reference_cells(&kota, &sectors);
    let day = |flag: &str, v: Option<String>| -> Result<Option<Day>, BoxError> {
        v.map(|s| parse_day(&s).map_err(|e| format!("{flag}: {e}").into()))
            .transpose()
    };
    let (mut from, to) = (day("--from", from)?, day("--to", to)?);
    if every == Some(0) {
        return Err("--every must be at least 1 second".into());
    }
    let store = Store::new(&config.store());
    store.ping().await?;
    let metrics = RollupMetrics::new()?;
    let addr = &config.metrics.rollup_metrics_addr;
    if every.is_some() {
        crate::serve_metrics(
            "metrics.rollup_metrics_addr",
            addr,
            &metrics.component,
            metrics.last_round.readiness(),
        )
        .await?;
    }
    let refresh = config.metrics.refresh_days as Day;
    let release_hour = i64::from(config.metrics.public_release_hour);
    // Days younger than the age limit may still be corrected by events the
    // gateway accepts: they are released as provisional.
    let provisional = config.time.max_age_secs.div_ceil(86_400) as Day;
    let topic = &config.kafka.topic;
    let mut released: Option<Day> = None;
    // Merchant-days written since this time are not yet rolled up. It moves
    // to the start of each round that succeeds, less a margin for the
    // aggregator's clock being a little behind.
    let mut since = 0u32;
    loop {
        let started = Instant::now();
        let round_start = u32::try_from((now_ms() / 1000).saturating_sub(600)).unwrap_or(0);
        // Only complete days: those every partition's watermark has passed.
        let result = crate::run_round("Rollup round failed; trying again.", || async {
            let Some(watermark) = store.complete_through(topic).await? else {
                return Ok((None, RollupReport::default(), false));
            };
            let through = (pulih_event::calendar::day_of(watermark) - 1) as Day;
            // Through the last day with merchant-days unless --to says
            // otherwise, and never past the last complete one.
            let last = match to {
                Some(t) => Some(t),
                None => store.activity_days().await?.map(|(_, last)| last),
            }
            .map_or(through, |t| t.min(through));
            let report = store
                .rollup(&params, &kota, &cells, from, Some(last))
                .await?;
            if let Some((_, newest)) = report.days {
                metrics.coverage(&store.producer_coverage_on(newest).await?);
            }
            if released != Some(through) {
                store
                    .record_release(through, through - provisional + 1)
                    .await?;
            }
            // The public release: once a Jakarta day, the rows computed
            // since the one before; as soon as yesterday is complete, or
            // from metrics.public_release_hour with what is complete then.
            let now = now_ms();
            let today = pulih_event::calendar::day_of(now) as Day;
            let hour = (now - pulih_event::calendar::day_start_ms(i64::from(today))) / 3_600_000;
            let public = if through >= today - 1 || hour >= release_hour {
                store
                    .release_public(today, through, through - provisional + 1)
                    .await?
            } else {
                false
            };
            if public {
                metrics.public_releases.inc();
            }
            Ok((Some(through), report, public))
        })
        .await;
        metrics.round(started.elapsed(), result.as_ref().ok().map(|(_, r, _)| r));
        match result {
            Ok((through, r, public)) => {
                since = round_start;
                released = through;
                match (through, r.days) {
                    (None, _) => println!(
                        "nothing to roll up: no day of topic {topic} is complete yet (aggregator_watermark)"
                    ),
                    (Some(t), None) => println!(
                        "nothing to roll up through {}, the last complete day",
                        format_day(t)
                    ),
                    (Some(t), Some((a, b))) => println!(
                        "rolled up {}..{}: {} rows, {} suppressed, in {:.1} s; complete through {}",
                        format_day(a),
                        format_day(b),
                        r.rows,
                        r.suppressed,
                        started.elapsed().as_secs_f64(),
                        format_day(t)
                    ),
                }
                if public {
                    println!(
                        "public release made: through {}",
                        through.map(format_day).unwrap_or_default()
                    );
                }
            }
            // A service keeps going: the next round covers these days too.
            Err(e) if every.is_some() => {
                tracing::warn!(message = "Rollup failed; retrying next round.", error = %e)
            }
            Err(e) => return Err(e),
        }
        let Some(secs) = every else { return Ok(()) };
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(secs)) => {}
            _ = crate::shutdown_signal() => return Ok(()),
        }
        // Next: the last refresh_days days, or from the first day whose
        // merchant-days changed since (a backfill of older days).
        let next = async {
            let last = store.activity_days().await?.map(|(_, last)| last - refresh);
            let changed = store.first_day_changed_since(since).await?;
            Ok::<_, pulih_store::StoreError>(match (last, changed) {
                (Some(l), Some(c)) => Some(l.min(c)),
                (l, c) => l.or(c),
            })
        };
        match next.await {
            Ok(Some(day)) => from = Some(day),
            Ok(None) => {}
            Err(e) => tracing::warn!(message = "Cannot tell which days changed.", error = %e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_jakarta_day_starts_at_17_00_utc_the_day_before() {
        // 2021-03-01 00:00 +07:00 is 2021-02-28 17:00 UTC.
        assert_eq!(
            jakarta_midnight(parse_day("2021-03-01").unwrap()),
            1_614_531_600
        );
    }

    #[test]
    fn producer_gauges_show_the_newest_day_only() {
        let m = RollupMetrics::new().unwrap();
        m.coverage(&[
            ("bank-a".into(), Some(1.02), false),
            ("bank-b".into(), Some(0.0), true),
        ]);
        m.coverage(&[
            ("bank-a".into(), Some(0.97), false),
            ("qris-c".into(), None, false),
        ]);
        let text = m.component.render();
        for line in [
            "pulih_rollup_producer_coverage_ratio{producer=\"bank-a\"} 0.97",
            "pulih_rollup_producer_outage{producer=\"bank-a\"} 0",
            "pulih_rollup_producer_outage{producer=\"qris-c\"} 0",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line} missing from\n{text}"
            );
        }
        assert!(!text.contains("bank-b"), "{text}");
        assert!(!text.contains("pulih_rollup_producer_coverage_ratio{producer=\"qris-c\"}"));
    }

    #[test]
    fn rounds_are_counted_by_outcome() {
        let m = RollupMetrics::new().unwrap();
        m.round(Duration::from_millis(1500), None);
        let report = RollupReport {
            days: Some((
                parse_day("2021-02-27").unwrap(),
                parse_day("2021-03-01").unwrap(),
            )),
            rows: 40,
            suppressed: 7,
        };
        m.round(Duration::from_secs(2), Some(&report));
        let text = m.component.render();
        for line in [
            "pulih_rollup_rounds_total{outcome=\"failed\"} 1",
            "pulih_rollup_rounds_total{outcome=\"succeeded\"} 1",
            "pulih_rollup_rows_total 40",
            "pulih_rollup_suppressed_rows_total 7",
            "pulih_rollup_latest_day_timestamp_seconds 1614531600",
            "pulih_rollup_last_round_duration_seconds 2",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line} missing from\n{text}"
            );
        }
    }
}
