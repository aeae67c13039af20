//! Hot-path benchmark: decode the Kafka JSON record, validate it, check
//! it against the de-duplication memory and fold it into its window and
//! merchant-day, on one core, next to the physical floor of merely
//! splitting the same buffer into records.
//!
//! ```text
//! cargo run --release -p pulih-stream --example hotpath [RECORDS]
//! ```
//!
//! Records are generated like the simulator's: 44 districts × 6 sectors,
//! 5 000 merchants, one hour of event time in order with jitter, 1 % of
//! them re-deliveries (a copy of the record 50 records earlier). Results go in docs/benchmarks.md.

use std::hint::black_box;
use std::time::Instant;

use pulih_event::{
    Channel, MerchantSize, PaymentRecord, Pseudonymiser, Reference, Secret, Sector, Timestamp,
};
use pulih_stream::core::{CoreConfig, Outcome, Partition};
use pulih_stream::decode::decode;

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(2_000_000);
    let reference = Reference::jakarta();
    let districts: Vec<String> = reference
        .districts()
        .iter()
        .map(|d| d.code.clone())
        .collect();
    let sectors = ["G", "I", "C", "S", "H", "M"];
    let t0 = 1_709_251_200_000i64;
    let pseudonymiser = Pseudonymiser::new(
        "k1",
        &Secret::new("benchmark-secret-0123456789abcdef0123456789"),
    )
    .expect("valid secret");
    let keys: Vec<String> = (0..5_000)
        .map(|m| pseudonymiser.merchant_key("qris-acq-01", &format!("merchant-{m:05}")))
        .collect();
    let mut buf = Vec::with_capacity(n * 240);
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let mut rnd = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    // Where each record starts in `buf`, so a re-delivery can copy one.
    let mut starts: Vec<usize> = Vec::with_capacity(n + 1);
    for i in 0..n {
        let r = rnd();
        starts.push(buf.len());
        if i > 100 && r % 100 == 0 {
            // A re-delivery: the same record as 50 records earlier.
            let (from, to) = (starts[i - 50], starts[i - 49]);
            buf.extend_from_within(from..to);
            continue;
        }
        let id = i;
        let merchant = (r >> 8) % 5_000;
        let record = PaymentRecord {
            event_id: format!("evt-{id:010}"),
            producer_id: "qris-acq-01".into(),
            occurred_at: Timestamp::from_unix_millis(
                t0 + (i as i64 * 3_600_000 / n as i64) + ((r >> 20) % 30_000) as i64,
            ),
            merchant_key: keys[merchant as usize].clone(),
            merchant_key_id: "k1".into(),
            merchant_key_previous: None,
            district_code: districts[(merchant as usize) % districts.len()].clone(),
            sector: Sector::from_letter(sectors[(merchant as usize / 44) % sectors.len()]).unwrap(),
            kbli_code: None,
            amount_idr: 5_000 + (r >> 32) % 500_000,
            channel: Channel::ALL[(r >> 40) as usize % 6],
            merchant_size: MerchantSize::ALL[(r >> 44) as usize % 3],
            backfill: false,
        };
        buf.extend_from_slice(&record.to_json());
        buf.push(b'\n');
    }
    let avg = buf.len() as f64 / n as f64;
    let first = buf.split(|&b| b == b'\n').next().unwrap();
    println!("example record: {}", String::from_utf8_lossy(first));
    assert!(
        pulih_stream::decode::decode_fast(first, &reference).is_some(),
        "the fast path takes the benchmark's records"
    );
    println!("records={n} bytes={} avg_record_bytes={avg:.0}", buf.len());

    let mut best_split = f64::MAX;
    let mut best_fold = f64::MAX;
    let mut applied = 0;
    for _ in 0..3 {
        let t = Instant::now();
        let mut count = 0usize;
        let mut bytes = 0usize;
        for line in buf.split(|&b| b == b'\n') {
            count += 1;
            bytes += black_box(line).len();
        }
        black_box((count, bytes));
        best_split = best_split.min(t.elapsed().as_secs_f64());

        let mut p = Partition::new(0, CoreConfig::default());
        let t = Instant::now();
        let mut ok = 0usize;
        for (offset, line) in buf.split(|&b| b == b'\n').enumerate() {
            if line.is_empty() {
                continue;
            }
            let e = decode(line, &reference).expect("valid record");
            let ts = e.occurred_ms;
            if p.fold(offset as i64, ts, &e) == Outcome::Applied {
                ok += 1;
            }
            if offset % 100_000 == 0 {
                p.advance(None);
                black_box(p.take("t", "g", false, 0));
            }
        }
        best_fold = best_fold.min(t.elapsed().as_secs_f64());
        applied = ok;
    }
    let t = Instant::now();
    for line in buf.split(|&b| b == b'\n') {
        if !line.is_empty() {
            black_box(decode(line, &reference).ok());
        }
    }
    let decode_rate = n as f64 / t.elapsed().as_secs_f64();
    println!("decode+validate only:   {decode_rate:>12.0} records/s");
    let split_rate = n as f64 / best_split;
    let fold_rate = n as f64 / best_fold;
    println!(
        "split only:             {:>12.0} records/s ({:.0} MB/s)",
        split_rate,
        buf.len() as f64 / best_split / 1e6
    );
    println!(
        "decode+validate+dedup+fold: {:>8.0} records/s ({:.0} MB/s), applied={applied}",
        fold_rate,
        buf.len() as f64 / best_fold / 1e6
    );
    println!("hot path / floor: {:.3}", fold_rate / split_rate);
}
