//! Fault injection for the crash tests: with `PULIH_TEST_HANG_AT=STEP:N`,
//! the N-th time (from 1) a flush passes STEP the process logs it and
//! hangs, so a test can kill -9 it at exactly that point. With
//! `PULIH_TEST_CLOCK_OFFSET_MS=N` the processing-time clock runs N ms
//! ahead of the wall clock (or behind, for a negative N), so a test can
//! put it just before midnight in Jakarta.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

/// The processing-time clock (the watermark of a topic whose partitions
/// are all idle), Unix milliseconds: the wall clock, shifted by
/// `PULIH_TEST_CLOCK_OFFSET_MS` when that is set.
pub(super) fn processing_ms() -> i64 {
    static OFFSET: OnceLock<i64> = OnceLock::new();
    let offset = *OFFSET.get_or_init(|| {
        std::env::var("PULIH_TEST_CLOCK_OFFSET_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    });
    pulih_event::calendar::now_ms().saturating_add(offset)
}

#[derive(Debug, Default)]
pub(super) struct FaultPoints {
    hang_at: Option<(String, u32)>,
    seen: AtomicU32,
}

impl FaultPoints {
    /// From `PULIH_TEST_HANG_AT`; none when it is unset or malformed.
    pub(super) fn from_env() -> FaultPoints {
        let hang_at = std::env::var("PULIH_TEST_HANG_AT").ok().and_then(|v| {
            let (step, n) = v.split_once(':').unwrap_or((v.as_str(), "1"));
            Some((step.to_owned(), n.parse().ok()?))
        });
        FaultPoints {
            hang_at,
            seen: AtomicU32::new(0),
        }
    }

    pub(super) fn pass(&self, step: &str) {
        let Some((at, n)) = &self.hang_at else {
            return;
        };
        if at != step {
            return;
        }
        let seen = self.seen.fetch_add(1, Ordering::Relaxed) + 1;
        if seen == *n {
            tracing::warn!(
                message = "Hanging at a fault point (PULIH_TEST_HANG_AT).",
                step
            );
            loop {
                std::thread::sleep(Duration::from_secs(3600));
            }
        }
    }
}
