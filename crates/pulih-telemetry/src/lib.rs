//! The Prometheus plumbing shared by pulih's services. Each component keeps
//! a registry of its own, under its own prefix (`pulih_ingest_`,
//! `pulih_aggregate_`, `pulih_rollup_`), built with [`Component`]; this
//! crate renders a registry ([`render`]) and serves it on `/metrics`
//! ([`serve`]) the same way for all of them. The gateway serves its page
//! on its own HTTP port through [`render`]; `pulih aggregate` and
//! `pulih rollup --every` serve theirs with [`serve`] on
//! `metrics_addr`, next to `/healthz` (the process answers) and `/readyz`
//! (it does its work: a [`Readiness`] check of its own).

use std::sync::Arc;
use std::time::Duration;

use prometheus::core::Collector;
use prometheus::{Encoder, Opts, Registry, TextEncoder};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub use prometheus;

/// One component's registry, whose metrics all carry its prefix.
#[derive(Clone)]
pub struct Component {
    registry: Registry,
    namespace: &'static str,
}

impl Component {
    /// A registry for metrics named `<namespace>_<name>`.
    pub fn new(namespace: &'static str) -> Component {
        Component {
            registry: Registry::new(),
            namespace,
        }
    }

    /// Options for a metric of this component.
    pub fn opts(&self, name: &str, help: &str) -> Opts {
        Opts::new(name, help).namespace(self.namespace)
    }

    /// Registers `metric` and gives it back. Metric names are fixed in the
    /// code, so a clash is a programming error and panics at start.
    pub fn register<C: Collector + Clone + 'static>(&self, metric: C) -> C {
        self.registry
            .register(Box::new(metric.clone()))
            .unwrap_or_else(|e| panic!("metric of {} registered twice: {e}", self.namespace));
        metric
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The page `/metrics` answers with.
    pub fn render(&self) -> String {
        render(&self.registry)
    }
}

/// A registry in Prometheus' text format (version 0.0.4).
pub fn render(registry: &Registry) -> String {
    let mut buf = Vec::new();
    match TextEncoder::new().encode(&registry.gather(), &mut buf) {
        Ok(()) => String::from_utf8(buf).unwrap_or_default(),
        Err(e) => format!("# cannot encode metrics: {e}\n"),
    }
}

/// The content type of [`render`]'s page.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4";

/// What `/readyz` answers: ready, or not ready and why. Each service
/// says what ready means for it (the aggregator: every partition it owns
/// restored and ClickHouse answering; rollup and alerts: their last round
/// succeeded). An orchestrator holds a rolling update while a new process
/// is not ready; it does not restart it for that (that is `/healthz`).
#[derive(Clone)]
pub struct Readiness(Arc<dyn Fn() -> Result<(), String> + Send + Sync>);

impl Readiness {
    pub fn new(check: impl Fn() -> Result<(), String> + Send + Sync + 'static) -> Readiness {
        Readiness(Arc::new(check))
    }

    pub fn check(&self) -> Result<(), String> {
        (self.0)()
    }
}

/// The readiness of a service that works in rounds: not ready until a
/// round has succeeded, nor while the last one failed. Starts with no
/// round (0).
#[derive(Clone, Default)]
pub struct LastRound(Arc<std::sync::atomic::AtomicU8>);

impl LastRound {
    const SUCCEEDED: u8 = 1;
    const FAILED: u8 = 2;

    pub fn record(&self, succeeded: bool) {
        let v = if succeeded {
            Self::SUCCEEDED
        } else {
            Self::FAILED
        };
        self.0.store(v, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn readiness(&self) -> Readiness {
        let state = self.0.clone();
        Readiness::new(
            move || match state.load(std::sync::atomic::Ordering::Relaxed) {
                Self::SUCCEEDED => Ok(()),
                Self::FAILED => Err("the last round failed (see the log)".to_owned()),
                _ => Err("no round has finished yet".to_owned()),
            },
        )
    }
}

/// Answers `GET /metrics` with the registry, `GET /healthz` with `ok` and
/// `GET /readyz` with `ready` or 503 and the reason, one short HTTP/1.1
/// exchange per connection, until the task is dropped.
pub async fn serve(listener: tokio::net::TcpListener, registry: Registry, ready: Readiness) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            continue;
        };
        let registry = registry.clone();
        let ready = ready.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 1024];
            let n = match tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await
            {
                Ok(Ok(n)) => n,
                _ => return,
            };
            let response = respond(&buf[..n], &registry, &ready);
            let _ = stream.write_all(response.as_bytes()).await;
        });
    }
}

/// The whole HTTP response to one request.
fn respond(request: &[u8], registry: &Registry, ready: &Readiness) -> String {
    let request = String::from_utf8_lossy(request);
    let mut words = request.split_whitespace();
    let (method, path) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let (status, ctype, body) = match (method, path) {
        ("GET", "/metrics") => ("200 OK", CONTENT_TYPE, render(registry)),
        ("GET", "/healthz") => ("200 OK", "text/plain", "ok\n".to_owned()),
        ("GET", "/readyz") => match ready.check() {
            Ok(()) => ("200 OK", "text/plain", "ready\n".to_owned()),
            Err(why) => (
                "503 Service Unavailable",
                "text/plain",
                format!("not ready: {why}\n"),
            ),
        },
        ("GET", _) => ("404 Not Found", "text/plain", "not found\n".to_owned()),
        _ => (
            "405 Method Not Allowed",
            "text/plain",
            "only GET\n".to_owned(),
        ),
    };
    format!(
        "HTTP/1.1 {status}\r\ncontent-type: {ctype}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus::IntCounterVec;

    #[test]
    fn a_component_renders_its_metrics_under_its_prefix() {
        let c = Component::new("pulih_test");
        let total =
            c.register(IntCounterVec::new(c.opts("things_total", "Things."), &["kind"]).unwrap());
        total.with_label_values(&["a"]).inc_by(3);
        let page = c.render();
        assert!(
            page.contains("# HELP pulih_test_things_total Things."),
            "{page}"
        );
        assert!(
            page.contains("pulih_test_things_total{kind=\"a\"} 3"),
            "{page}"
        );
    }

    #[test]
    fn answers_metrics_health_readiness_and_nothing_else() {
        let c = Component::new("pulih_test");
        let up = c.register(prometheus::IntGauge::with_opts(c.opts("up", "Up.")).unwrap());
        up.set(1);
        let gauge = up.clone();
        let ready = Readiness::new(move || match gauge.get() {
            1 => Ok(()),
            _ => Err("down".to_owned()),
        });
        let respond = |req: &[u8], reg: &Registry| respond(req, reg, &ready);
        let ok = respond(b"GET /metrics HTTP/1.1\r\n\r\n", c.registry());
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(
            ok.contains(CONTENT_TYPE) && ok.ends_with("pulih_test_up 1\n"),
            "{ok}"
        );
        let health = respond(b"GET /healthz HTTP/1.1\r\n\r\n", c.registry());
        assert!(health.ends_with("\r\n\r\nok\n"), "{health}");
        let readyz = respond(b"GET /readyz HTTP/1.1\r\n\r\n", c.registry());
        assert!(
            readyz.starts_with("HTTP/1.1 200 OK\r\n") && readyz.ends_with("\r\n\r\nready\n"),
            "{readyz}"
        );
        up.set(0);
        let not = respond(b"GET /readyz HTTP/1.1\r\n\r\n", c.registry());
        assert!(
            not.starts_with("HTTP/1.1 503 ") && not.ends_with("not ready: down\n"),
            "{not}"
        );
        assert!(respond(b"GET /x HTTP/1.1\r\n\r\n", c.registry()).starts_with("HTTP/1.1 404"));
        assert!(
            respond(b"POST /metrics HTTP/1.1\r\n\r\n", c.registry()).starts_with("HTTP/1.1 405")
        );
    }

    #[test]
    fn a_round_service_is_ready_while_its_last_round_succeeded() {
        let last = LastRound::default();
        let ready = last.readiness();
        assert_eq!(ready.check(), Err("no round has finished yet".to_owned()));
        last.record(true);
        assert_eq!(ready.check(), Ok(()));
        last.record(false);
        assert!(ready.check().unwrap_err().contains("failed"));
        last.record(true);
        assert_eq!(ready.check(), Ok(()));
    }

    #[test]
    #[should_panic(expected = "registered twice")]
    fn a_name_clash_is_caught_at_start() {
        let c = Component::new("pulih_test");
        c.register(prometheus::IntGauge::with_opts(c.opts("up", "Up.")).unwrap());
        c.register(prometheus::IntGauge::with_opts(c.opts("up", "Up.")).unwrap());
    }
}
