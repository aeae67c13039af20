//! The generator: a panel of merchants and, for each Jakarta day, their
//! payments in the order a producer would send them.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use pulih_event::calendar::{day_start_ms, DAY_MS};
use pulih_event::holidays::{date_of, CalendarDay, Holidays};
use pulih_event::{MerchantSize, Reference, Sector, Timestamp};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::city;
use crate::scenario::Scenario;

/// What a simulated event is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A payment, sent once: it should be counted once.
    Payment,
    /// A second send of a payment with the same event id (a client retry).
    Duplicate,
    /// A malformed event, to be rejected with a reason code.
    Invalid,
}

/// One event ready to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimEvent {
    /// When the producer sends it (Unix ms): the time it happened, or
    /// later for late, out-of-order and duplicate sends.
    pub send_ms: i64,
    pub occurred_ms: i64,
    /// Index into `Simulation::producers()`.
    pub producer: usize,
    pub kind: Kind,
    pub amount_idr: u64,
    /// The event, JSON of `schemas/payment_event.v1.json`.
    pub json: Vec<u8>,
}

impl Ord for SimEvent {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.send_ms, &self.json).cmp(&(other.send_ms, &other.json))
    }
}

impl PartialOrd for SimEvent {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

#[derive(Debug, Clone)]
struct Merchant {
    district: u16,
    sector: Sector,
    size: MerchantSize,
    producer: u8,
    opens: i32,
    closes: i32,
    /// Position among its cell's merchants in closing order when trade
    /// falls: below the level's open share, it trades.
    resilience: f32,
    /// A second draw, for the mudik days.
    homebound: f32,
    /// Usual transactions on a trading day.
    rate: f32,
    /// Median ticket, IDR.
    ticket: f32,
    /// The weekday (Monday = 0) it rests, if it rests one.
    rest_day: Option<u8>,
    kbli: Option<&'static str>,
}

/// A scenario's merchants and their payments, day by day.
pub struct Simulation {
    scenario: Scenario,
    districts: Vec<String>,
    merchants: Vec<Merchant>,
    calendar: Vec<CalendarDay>,
    calendar_first: i32,
    /// Events generated but not yet sent (late, out-of-order, retries).
    pending: BinaryHeap<Reverse<SimEvent>>,
}

/// A day's level for a merchant's cell: trade relative to 2019.
fn interpolate(points: &[(i32, f64)], day: i32) -> f64 {
    match points.iter().position(|&(d, _)| d > day) {
        None => points.last().map_or(1.0, |p| p.1),
        Some(0) => points[0].1,
        Some(i) => {
            let (d0, v0) = points[i - 1];
            let (d1, v1) = points[i];
            v0 + (v1 - v0) * f64::from(day - d0) / f64::from(d1 - d0)
        }
    }
}

fn standard_normal(rng: &mut SmallRng) -> f64 {
    // Box-Muller.
    let u1: f64 = rng.gen_range(f64::EPSILON..1.0);
    let u2: f64 = rng.gen();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

fn poisson(rng: &mut SmallRng, lambda: f64) -> u32 {
    if lambda <= 0.0 {
        return 0;
    }
    if lambda > 30.0 {
        return (lambda + lambda.sqrt() * standard_normal(rng))
            .round()
            .max(0.0) as u32;
    }
    let limit = (-lambda).exp();
    let mut p = 1.0;
    let mut k = 0;
    loop {
        p *= rng.gen::<f64>();
        if p <= limit {
            return k;
        }
        k += 1;
    }
}

fn pick(weights: &[f64], u: f64) -> usize {
    let total: f64 = weights.iter().sum();
    let mut x = u * total;
    for (i, w) in weights.iter().enumerate() {
        if x < *w {
            return i;
        }
        x -= w;
    }
    weights.iter().rposition(|w| *w > 0.0).unwrap_or(0)
}

impl Simulation {
    pub fn new(scenario: Scenario, reference: &Reference, holidays: &Holidays) -> Simulation {
        let mut rng = SmallRng::seed_from_u64(scenario.seed);
        let districts: Vec<String> = reference
            .districts()
            .iter()
            .map(|d| d.code.clone())
            .collect();
        let kota: Vec<String> = districts
            .iter()
            .map(|c| c.rsplit_once('.').map_or(c.clone(), |(k, _)| k.to_owned()))
            .collect();
        // A district's weight: its kota's population over its kecamatan;
        // kota not in the table weigh as the smallest.
        let district_weights: Vec<f64> = kota
            .iter()
            .map(|k| {
                let population = city::KOTA_POPULATION
                    .iter()
                    .find(|(c, _)| c == k)
                    .map_or(city::KOTA_POPULATION[0].1, |p| p.1);
                population / kota.iter().filter(|o| *o == k).count() as f64
            })
            .collect();
        let p = &scenario.population;
        let months = f64::from(scenario.end - scenario.start + 1) / 30.44;
        let born = f64::from(p.merchants) * p.opening_per_month * months;
        let count = p.merchants as usize + born.round() as usize;
        let producer_weights: Vec<f64> = scenario.producers.iter().map(|p| p.1).collect();
        let span = scenario.end - scenario.start + 1;
        let merchants = (0..count)
            .map(|i| {
                let opens = if i < p.merchants as usize {
                    scenario.start
                } else {
                    scenario.start + rng.gen_range(0..span)
                };
                let life_draw: f64 = rng.gen_range(f64::EPSILON..1.0);
                let sector_index = pick(&city::SECTOR_SHARE, rng.gen());
                let sector = Sector::all().nth(sector_index).expect("21 categories");
                let size = match rng.gen::<f64>() {
                    u if u < p.micro => MerchantSize::Micro,
                    u if u < p.micro + p.small => MerchantSize::Small,
                    _ => MerchantSize::Medium,
                };
                // Exponential life at the closing rate; small and medium
                // firms close less often than micro ones.
                let hazard = p.closing_per_month
                    * match size {
                        MerchantSize::Micro => 1.0,
                        MerchantSize::Small => 0.5,
                        MerchantSize::Medium => 0.25,
                    };
                let life = if hazard > 0.0 {
                    (-life_draw.ln() / hazard * 30.44) as i64
                } else {
                    i64::MAX
                };
                let closes = (i64::from(opens) + life).min(i64::from(i32::MAX)) as i32;
                let rate = match size {
                    MerchantSize::Micro => p.transactions_micro,
                    MerchantSize::Small => p.transactions_small,
                    MerchantSize::Medium => p.transactions_medium,
                } * (0.4 * standard_normal(&mut rng)).exp();
                let ticket = city::median_ticket(sector)
                    * city::size_ticket_factor(size)
                    * (0.3 * standard_normal(&mut rng)).exp();
                Merchant {
                    district: pick(&district_weights, rng.gen()) as u16,
                    sector,
                    size,
                    producer: pick(&producer_weights, rng.gen()) as u8,
                    opens,
                    closes,
                    resilience: rng.gen(),
                    homebound: rng.gen(),
                    rate: rate as f32,
                    ticket: ticket as f32,
                    rest_day: (size == MerchantSize::Micro && rng.gen_bool(0.6))
                        .then(|| rng.gen_range(0..7)),
                    kbli: city::kbli_code(sector).filter(|_| rng.gen_bool(0.5)),
                }
            })
            .collect();
        let calendar = holidays.days();
        let calendar_first = calendar.first().map_or(0, |d| d.day);
        Simulation {
            scenario,
            districts,
            merchants,
            calendar,
            calendar_first,
            pending: BinaryHeap::new(),
        }
    }

    pub fn scenario(&self) -> &Scenario {
        &self.scenario
    }

    /// Producer ids, indexed by `SimEvent::producer`.
    pub fn producers(&self) -> Vec<&str> {
        self.scenario
            .producers
            .iter()
            .map(|p| p.0.as_str())
            .collect()
    }

    /// Merchants in the panel over the whole scenario (open or not).
    pub fn merchant_count(&self) -> usize {
        self.merchants.len()
    }

    fn calendar_day(&self, day: i32) -> CalendarDay {
        let i = day - self.calendar_first;
        if i >= 0 && (i as usize) < self.calendar.len() {
            return self.calendar[i as usize].clone();
        }
        let payday = date_of(day).is_some_and(|d| d.day() >= 25 || d.day() == 1);
        CalendarDay {
            day,
            payday,
            ..CalendarDay::default()
        }
    }

    /// The level of a cell on a day (1 = its 2019 trade): the timeline,
    /// its lags and its downturns.
    pub fn level(&self, district: &str, sector: Sector, day: i32) -> f64 {
        let s = &self.scenario;
        let points: Vec<(i32, f64)> = s
            .timeline
            .iter()
            .map(|(d, l)| (*d, l[sector.index()]))
            .collect();
        let mut level = interpolate(&points, day);
        for (area, points) in &s.lags {
            if area.holds(district, sector) {
                level *= interpolate(points, day);
            }
        }
        for d in &s.downturns {
            if !d.area.holds(district, sector) || day < d.start {
                continue;
            }
            if d.recover.is_some_and(|r| day >= r) {
                continue;
            }
            let progress = (f64::from(day - d.start + 1) / f64::from(d.ramp_days)).min(1.0);
            level *= 1.0 - d.depth * progress;
        }
        level
    }

    fn qris_share(&self, day: i32) -> f64 {
        let p = &self.scenario.population;
        let last = self
            .scenario
            .timeline
            .last()
            .map_or(self.scenario.end, |t| t.0);
        let span = f64::from((last - self.scenario.start).max(1));
        let x = (f64::from(day - self.scenario.start) / span).clamp(0.0, 1.0);
        p.qris_share_start + (p.qris_share_end - p.qris_share_start) * x
    }

    /// Per merchant, its expected transactions on `day` (0 when closed).
    /// When a cell's level falls, its least resilient merchants close and
    /// the rest carry the cell's trade, scaled so that the cell's expected
    /// revenue follows its level whichever merchants stay open (a cell has
    /// few large merchants: left to chance, one of them staying open would
    /// hide a downturn).
    fn day_rates(&self, day: i32) -> Vec<f64> {
        let cal = self.calendar_day(day);
        let weekday = (day + 3).rem_euclid(7) as usize; // 1970-01-01 was a Thursday
        let outage: Vec<bool> =
            self.scenario
                .producers
                .iter()
                .map(|(id, _)| {
                    self.scenario.outages.iter().any(|o| {
                        &o.producer == id && day >= o.start && day < o.start + o.days as i32
                    })
                })
                .collect();
        let cells = self.districts.len() * 21;
        let mut level = vec![f64::NAN; cells];
        let mut weight_all = vec![0.0; cells];
        let mut weight_open = vec![0.0; cells];
        let cell = |m: &Merchant| usize::from(m.district) * 21 + m.sector.index();
        let mut base: Vec<(f64, bool)> = Vec::with_capacity(self.merchants.len());
        for m in &self.merchants {
            let c = cell(m);
            if level[c].is_nan() {
                level[c] = self.level(&self.districts[usize::from(m.district)], m.sector, day);
            }
            if day < m.opens
                || day >= m.closes
                || m.rest_day.is_some_and(|r| usize::from(r) == weekday)
            {
                base.push((0.0, false));
                continue;
            }
            let (calendar, open_today) = city::calendar_effect(m.sector, &cal, weekday);
            let rate = f64::from(m.rate) * calendar;
            let open = f64::from(m.resilience) < level[c].powf(0.7).min(1.0)
                && f64::from(m.homebound) < open_today;
            let w = rate * f64::from(m.ticket);
            weight_all[c] += w;
            if open {
                weight_open[c] += w;
            }
            // An outage loses the payments: it does not move them to others.
            let sent = !outage[usize::from(m.producer)];
            base.push((rate, open && sent));
        }
        self.merchants
            .iter()
            .zip(base)
            .map(|(m, (rate, open))| {
                let c = cell(m);
                if !open || weight_open[c] <= 0.0 {
                    return 0.0;
                }
                rate * level[c] * weight_all[c] / weight_open[c]
            })
            .collect()
    }

    fn stopped(&self, district: usize, sector: Sector, at_ms: i64) -> bool {
        self.scenario.sudden_stops.iter().any(|s| {
            let from = day_start_ms(i64::from(s.day)) + i64::from(s.from_hour) * 3_600_000;
            s.sector == sector
                && self.districts[district] == s.district
                && at_ms >= from
                && at_ms < from + i64::from(s.hours) * 3_600_000
        })
    }

    /// Every event sent during Jakarta day `day`, in send order: the day's
    /// payments and faults, and earlier days' late and retried sends that
    /// fall on it. The payments of a day are the same whichever days were
    /// generated before (the generator of a day is seeded by the day).
    pub fn day(&mut self, day: i32) -> Vec<SimEvent> {
        let rates = self.day_rates(day);
        let mut rng =
            SmallRng::seed_from_u64(self.scenario.seed ^ (u64::from(day as u32) << 20) ^ 0x5eed);
        let cal = self.calendar_day(day);
        let qris = self.qris_share(day);
        let start_ms = day_start_ms(i64::from(day));
        let faults = self.scenario.faults;
        let mut out = Vec::new();
        for (i, (m, &rate)) in self.merchants.iter().zip(&rates).enumerate() {
            let n = poisson(&mut rng, rate);
            let profile = city::hour_profile(m.sector, cal.ramadan);
            for k in 0..n {
                let hour = pick(profile, rng.gen()) as i64;
                let at = start_ms + hour * 3_600_000 + rng.gen_range(0..3_600_000);
                let amount = (f64::from(m.ticket) * (0.6 * standard_normal(&mut rng)).exp())
                    .clamp(1_000.0, 500_000_000.0);
                let amount = (amount as u64) / 100 * 100;
                let channel = city::channel(m.size, qris, rng.gen());
                if self.stopped(usize::from(m.district), m.sector, at) {
                    continue;
                }
                let json = event_json(
                    &format!("{}-{day}-{i}-{k}", self.scenario.name),
                    at,
                    &format!("{}-m{i:06}", self.scenario.name),
                    &self.districts[usize::from(m.district)],
                    m,
                    amount,
                    channel,
                );
                let mut send_ms = at;
                let u: f64 = rng.gen();
                if u < faults.late {
                    send_ms = at + rng.gen_range(3_600_000..12 * 3_600_000);
                } else if u < faults.late + faults.out_of_order {
                    send_ms = at + rng.gen_range(30_000..300_000);
                }
                if rng.gen::<f64>() < faults.duplicates {
                    out.push(SimEvent {
                        send_ms: send_ms + rng.gen_range(1_000..60_000),
                        occurred_ms: at,
                        producer: usize::from(m.producer),
                        kind: Kind::Duplicate,
                        amount_idr: amount,
                        json: json.clone(),
                    });
                }
                if rng.gen::<f64>() < faults.invalid {
                    let bad = corrupt(&json, rng.gen_range(0..5), &format!("{day}-{i}-{k}"));
                    out.push(SimEvent {
                        send_ms: at,
                        occurred_ms: at,
                        producer: usize::from(m.producer),
                        kind: Kind::Invalid,
                        amount_idr: 0,
                        json: bad,
                    });
                }
                out.push(SimEvent {
                    send_ms,
                    occurred_ms: at,
                    producer: usize::from(m.producer),
                    kind: Kind::Payment,
                    amount_idr: amount,
                    json,
                });
            }
        }
        for e in out {
            self.pending.push(Reverse(e));
        }
        let end = start_ms + DAY_MS;
        let mut sent = Vec::new();
        while self.pending.peek().is_some_and(|e| e.0.send_ms < end) {
            sent.push(self.pending.pop().expect("peeked").0);
        }
        sent
    }

    /// Events still waiting to be sent after the last generated day.
    pub fn finish(&mut self) -> Vec<SimEvent> {
        let mut rest = Vec::with_capacity(self.pending.len());
        while let Some(Reverse(e)) = self.pending.pop() {
            rest.push(e);
        }
        rest
    }

    /// A sampler of live events at a target rate: merchants drawn in
    /// proportion to their trade on `day` at `hour`.
    pub fn live(&self, day: i32, hour: usize, run_id: &str) -> Live {
        let cal = self.calendar_day(day);
        let rates = self.day_rates(day);
        let mut cumulative = Vec::with_capacity(rates.len());
        let mut total = 0.0;
        for (m, r) in self.merchants.iter().zip(&rates) {
            total += r * city::hour_profile(m.sector, cal.ramadan)[hour % 24];
            cumulative.push(total);
        }
        Live {
            cumulative,
            qris: self.qris_share(day),
            rng: SmallRng::seed_from_u64(self.scenario.seed ^ 0x11fe),
            run_id: run_id.to_owned(),
            seq: 0,
        }
    }

    /// The next live event at `at_ms`; `None` when nobody trades then.
    pub fn live_event(&self, live: &mut Live, at_ms: i64) -> Option<SimEvent> {
        let total = *live.cumulative.last()?;
        if total <= 0.0 {
            return None;
        }
        let x = live.rng.gen::<f64>() * total;
        let i = live
            .cumulative
            .partition_point(|&c| c <= x)
            .min(self.merchants.len() - 1);
        let m = &self.merchants[i];
        let amount = (f64::from(m.ticket) * (0.6 * standard_normal(&mut live.rng)).exp())
            .clamp(1_000.0, 500_000_000.0) as u64
            / 100
            * 100;
        let seq = live.seq;
        live.seq += 1;
        let channel = city::channel(m.size, live.qris, live.rng.gen());
        let json = event_json(
            &format!("{}-{seq}", live.run_id),
            at_ms,
            &format!("{}-m{i:06}", self.scenario.name),
            &self.districts[usize::from(m.district)],
            m,
            amount,
            channel,
        );
        Some(SimEvent {
            send_ms: at_ms,
            occurred_ms: at_ms,
            producer: usize::from(m.producer),
            kind: Kind::Payment,
            amount_idr: amount,
            json,
        })
    }

    /// The fault copies the scenario asks for (`[faults]`, `--duplicates`,
    /// `--invalid`) of a live event: the same event sent again, as a
    /// client's retry does, and a malformed copy with an id of its own.
    /// Late and out-of-order sends have no meaning for events sent now.
    pub fn live_faults(&self, live: &mut Live, e: &SimEvent) -> Vec<SimEvent> {
        let f = self.scenario.faults;
        let mut out = Vec::new();
        if f.duplicates > 0.0 && live.rng.gen::<f64>() < f.duplicates {
            out.push(SimEvent {
                kind: Kind::Duplicate,
                ..e.clone()
            });
        }
        if f.invalid > 0.0 && live.rng.gen::<f64>() < f.invalid {
            let how = live.rng.gen_range(0..5);
            out.push(SimEvent {
                kind: Kind::Invalid,
                amount_idr: 0,
                json: corrupt(&e.json, how, &format!("{}-{}", live.run_id, live.seq)),
                ..e.clone()
            });
        }
        out
    }
}

/// State of a live sampler (`Simulation::live`).
pub struct Live {
    cumulative: Vec<f64>,
    qris: f64,
    rng: SmallRng,
    run_id: String,
    seq: u64,
}

/// A malformed copy of `event`, with its own event id: each kind is one a
/// careless producer sends.
fn corrupt(event: &[u8], how: u32, suffix: &str) -> Vec<u8> {
    let mut e: serde_json::Value = serde_json::from_slice(event).expect("made by event_json");
    e["event_id"] = format!("invalid-{suffix}").into();
    match how {
        0 => e["district_code"] = "31.99.99".into(),
        1 => e["amount_idr"] = (-5000).into(),
        2 => {
            if let Some(o) = e.as_object_mut() {
                o.remove("merchant_id");
            }
        }
        3 => e["occurred_at"] = "2021-13-45T25:00:00+07:00".into(),
        _ => e["sector"] = "Z".into(),
    }
    serde_json::to_vec(&e).expect("JSON values serialise")
}

/// The JSON of a payment event. Every string here is made of letters,
/// digits, `-`, `.`, `:` and `+` (ids from the scenario name, which
/// `Scenario::parse` checks, and reference codes), so nothing needs escaping.
fn event_json(
    event_id: &str,
    at_ms: i64,
    merchant_id: &str,
    district: &str,
    m: &Merchant,
    amount: u64,
    channel: pulih_event::Channel,
) -> Vec<u8> {
    use std::io::Write;
    let mut out = Vec::with_capacity(256);
    let _ = write!(
        out,
        r#"{{"event_id":"{event_id}","occurred_at":"{}","merchant_id":"{merchant_id}","district_code":"{district}","sector":"{}","amount_idr":{amount},"channel":"{}","merchant_size":"{}""#,
        crate::jakarta_time(Timestamp::from_unix_millis(at_ms)),
        m.sector.as_str(),
        channel.as_str(),
        m.size.as_str(),
    );
    if let Some(code) = m.kbli {
        let _ = write!(out, r#","kbli_code":"{code}""#);
    }
    out.push(b'}');
    out
}
