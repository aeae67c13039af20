//! The floor of any NDJSON pipeline, for bench/compare: read the files into
//! memory, then time (1) splitting them into lines and (2) splitting them and
//! parsing every line with `serde_json` into the event's fields, borrowed
//! where they can be. Nothing is validated, de-duplicated or counted.
//!
//! `cargo run --release -p pulih-event --example ndjson_floor -- FILE...`
//! prints one JSON object: per step the seconds of wall time and of CPU time
//! (this thread's, from /proc/self/schedstat), the lines, and the process's
//! peak resident memory in bytes.

use std::time::Instant;

#[derive(serde::Deserialize)]
#[allow(dead_code)] // read to be parsed, not used
struct Event<'a> {
    #[serde(borrow)]
    event_id: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    occurred_at: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    merchant_id: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    district_code: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    sector: std::borrow::Cow<'a, str>,
    amount_idr: u64,
    #[serde(borrow)]
    channel: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    merchant_size: std::borrow::Cow<'a, str>,
    #[serde(borrow, default)]
    kbli_code: Option<std::borrow::Cow<'a, str>>,
}

/// This thread's CPU time in seconds.
fn cpu_seconds() -> f64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(f64::NAN, |ns| ns as f64 / 1e9)
}

/// Peak resident memory of this process, in bytes.
fn peak_rss() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
            line.split_whitespace().nth(1)?.parse::<u64>().ok()
        })
        .map_or(0, |kib| kib * 1024)
}

fn timed(f: impl FnOnce() -> Result<u64, String>) -> Result<(u64, f64, f64), String> {
    let (wall, cpu) = (Instant::now(), cpu_seconds());
    let lines = f()?;
    Ok((lines, wall.elapsed().as_secs_f64(), cpu_seconds() - cpu))
}

fn main() -> Result<(), String> {
    let files: Vec<Vec<u8>> = std::env::args()
        .skip(1)
        .map(|p| std::fs::read(&p).map_err(|e| format!("{p}: {e}")))
        .collect::<Result<_, _>>()?;
    if files.is_empty() {
        return Err("usage: ndjson_floor FILE...".into());
    }
    let lines = || {
        files
            .iter()
            .flat_map(|f| f.split(|&b| b == b'\n'))
            .filter(|l| !l.is_empty())
    };
    let split = timed(|| {
        let (mut n, mut bytes) = (0u64, 0usize);
        for line in lines() {
            n += 1;
            bytes += line.len();
        }
        std::hint::black_box(bytes);
        Ok(n)
    })?;
    let parse = timed(|| {
        let (mut n, mut sum) = (0u64, 0u64);
        for line in lines() {
            let e: Event =
                serde_json::from_slice(line).map_err(|e| format!("line {}: {e}", n + 1))?;
            sum = sum.wrapping_add(e.amount_idr);
            n += 1;
        }
        std::hint::black_box(sum);
        Ok(n)
    })?;
    let step = |(lines, wall, cpu): (u64, f64, f64)| serde_json::json!({ "lines": lines, "seconds": wall, "cpu_seconds": cpu });
    println!(
        "{}",
        serde_json::json!({ "split": step(split), "parse": step(parse), "peak_rss": peak_rss() })
    );
    Ok(())
}
