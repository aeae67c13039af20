//! The HTTP gateway (`pulih ingest`): `POST /v1/events` for authenticated
//! producers, plus `/healthz`, `/readyz` and `/metrics`. Producer docs are
//! in `docs/ingest.md`.
//!
//! A request's records are validated one by one; valid ones are
//! pseudonymised and produced to the payments topic, invalid ones go to the
//! dead-letter topic with their reason. The answer is sent only after Kafka
//! acknowledged every record of the request, so a 2xx means durable; if any
//! acknowledgement fails the answer is 503 and the client retries the whole
//! request, which is safe because the aggregator drops re-delivered event
//! ids.

use std::collections::HashMap;
use std::io::Read;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use pulih_event::calendar::now_ms;
use pulih_event::dead_letter::{DeadLetter, Stage};
use pulih_telemetry::prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGauge};
use pulih_telemetry::Component;
use serde::Serialize;
use sha2::{Digest, Sha256};
use tracing::Instrument;

use crate::{Accepted, Acks, Intake};

/// A producer allowed to post events.
#[derive(Debug, Clone)]
pub struct ProducerAuth {
    pub id: String,
    /// SHA-256 of the bearer token; the token itself is never stored.
    pub token_sha256: [u8; 32],
    pub enabled: bool,
}

/// Settings of the gateway.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    pub max_body_bytes: usize,
    /// Limit on a gzip body once decompressed (gzip bombs).
    pub max_decompressed_bytes: usize,
    pub max_records: usize,
    pub dlq_topic: String,
    /// The raw record on the dead-letter topic is cut to this many bytes.
    pub dlq_raw_max_bytes: usize,
    /// Records per second per producer; 0 turns the limit off.
    pub rate_limit_per_sec: u32,
    pub rate_limit_burst: u32,
    /// How long to wait for Kafka to acknowledge a request's records.
    pub ack_timeout: Duration,
    pub producers: Vec<ProducerAuth>,
    /// A request's headers must have arrived this long after the
    /// connection was opened or its previous answer sent; otherwise the
    /// connection is closed. Bounds slow and idle clients.
    pub header_read_timeout: Duration,
    /// A request's whole body must have arrived this long after its
    /// headers (408 otherwise).
    pub body_read_timeout: Duration,
    /// Connections served at once; more wait in the listen backlog until
    /// one closes. With the timeouts, a client that holds connections open
    /// without sending holds them for a bounded time only.
    pub max_connections: usize,
    /// After this long with every acknowledgement failing, the gateway
    /// replaces its Kafka producer (see `producer_health`).
    pub renew_producer_after: Duration,
}

/// The gateway's metrics (`pulih_ingest_` prefix, bounded labels).
#[derive(Clone)]
pub struct Metrics {
    /// The registry `/metrics` serves.
    pub component: Component,
    pub requests: IntCounterVec,
    pub records: IntCounterVec,
    pub request_seconds: HistogramVec,
    pub ack_seconds: HistogramVec,
    pub queue_depth: IntGauge,
    pub open_connections: IntGauge,
    pub closed_connections: IntCounterVec,
    pub producer_renewals: pulih_telemetry::prometheus::IntCounter,
}

impl Metrics {
    pub fn new() -> Metrics {
        let component = Component::new("pulih_ingest");
        let c = &component;
        let opts = |n: &str, h: &str| c.opts(n, h);
        let requests = c.register(
            IntCounterVec::new(
                opts(
                    "requests_total",
                    "HTTP requests to /v1/events by status code.",
                ),
                &["status"],
            )
            .expect("valid metric"),
        );
        let records = c.register(IntCounterVec::new(
            opts(
                "records_total",
                "Records by outcome (accepted, rejected) and reason code (empty when accepted).",
            ),
            &["outcome", "reason"],
        )
        .expect("valid metric"));
        let buckets = vec![
            0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
        ];
        let request_seconds = c.register(
            HistogramVec::new(
                HistogramOpts::new("request_duration_seconds", "Time to answer /v1/events.")
                    .namespace("pulih_ingest")
                    .buckets(buckets.clone()),
                &["status"],
            )
            .expect("valid metric"),
        );
        let ack_seconds = c.register(
            HistogramVec::new(
                HistogramOpts::new(
                    "kafka_ack_duration_seconds",
                    "Time from queueing a request's records to Kafka acknowledging all of them.",
                )
                .namespace("pulih_ingest")
                .buckets(buckets),
                &["result"],
            )
            .expect("valid metric"),
        );
        let queue_depth = c.register(
            IntGauge::with_opts(opts(
                "producer_queue_depth",
                "Records queued in the Kafka producer and not yet acknowledged.",
            ))
            .expect("valid metric"),
        );
        let open_connections = c.register(
            IntGauge::with_opts(opts(
                "open_connections",
                "HTTP connections being served (at most ingest.max_connections).",
            ))
            .expect("valid metric"),
        );
        let closed_connections = c.register(
            IntCounterVec::new(
                opts(
                    "connections_closed_total",
                    "HTTP connections closed, by how: done (the client or keep-alive ended it) or header_timeout (headers not received within ingest.header_read_timeout_secs).",
                ),
                &["how"],
            )
            .expect("valid metric"),
        );
        for how in ["done", "header_timeout"] {
            closed_connections.with_label_values(&[how]);
        }
        let producer_renewals = c.register(
            pulih_telemetry::prometheus::IntCounter::with_opts(opts(
                "producer_renewals_total",
                "Times the Kafka producer was replaced after every acknowledgement failed for 30 s.",
            ))
            .expect("valid metric"),
        );
        Metrics {
            component: component.clone(),
            requests,
            records,
            request_seconds,
            ack_seconds,
            queue_depth,
            open_connections,
            closed_connections,
            producer_renewals,
        }
    }

    pub fn render(&self) -> String {
        self.component.render()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

struct AppState {
    intake: Intake,
    config: GatewayConfig,
    metrics: Metrics,
    buckets: Mutex<HashMap<String, Bucket>>,
    ready: Mutex<Option<(Instant, bool)>>,
    /// Since when every request's acknowledgement has failed.
    failing_since: Mutex<Option<Instant>>,
    request_ids: AtomicU64,
    started_ms: u64,
}

/// The router: the gateway's routes, state and body limit.
pub fn router(intake: Intake, config: GatewayConfig, metrics: Metrics) -> Router {
    let limit = config.max_body_bytes;
    let state = Arc::new(AppState {
        intake,
        config,
        metrics,
        buckets: Mutex::new(HashMap::new()),
        ready: Mutex::new(None),
        failing_since: Mutex::new(None),
        request_ids: AtomicU64::new(0),
        started_ms: now_ms() as u64,
    });
    Router::new()
        .route("/v1/events", post(post_events))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_page))
        .layer(DefaultBodyLimit::max(limit.saturating_add(1)))
        .with_state(state)
}

/// Serves until `shutdown` resolves, then finishes in-flight requests (for
/// at most 30 s) and flushes the producer. Each connection is HTTP/1.1 with
/// the header timeout of `config`, and at most `config.max_connections`
/// are served at once.
pub async fn serve(
    listener: tokio::net::TcpListener,
    intake: Intake,
    config: GatewayConfig,
    metrics: Metrics,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioIo, TokioTimer};
    use hyper_util::server::graceful::GracefulShutdown;
    use hyper_util::service::TowerToHyperService;

    let addr = listener.local_addr()?;
    tracing::info!(message = "Gateway listening.", %addr);
    let (header_timeout, max_connections) = (config.header_read_timeout, config.max_connections);
    let app = router(intake.clone(), config, metrics.clone());
    let permits = Arc::new(tokio::sync::Semaphore::new(max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let stream = tokio::select! {
            r = listener.accept() => match r {
                Ok((stream, _)) => stream,
                Err(error) => {
                    // Out of file descriptors, say: wait, do not spin.
                    tracing::warn!(message = "Cannot accept a connection.", %error);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(header_timeout)
            .serve_connection(TokioIo::new(stream), TowerToHyperService::new(app.clone()));
        let conn = graceful.watch(conn);
        let metrics = metrics.clone();
        metrics.open_connections.inc();
        tokio::spawn(async move {
            let how = match conn.await {
                Err(e) if e.is_timeout() => "header_timeout",
                _ => "done",
            };
            metrics.closed_connections.with_label_values(&[how]).inc();
            metrics.open_connections.dec();
            drop(permit);
        });
    }
    drop(listener);
    tracing::info!(message = "Gateway stopped accepting; answering requests in flight.");
    if tokio::time::timeout(Duration::from_secs(30), graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(message = "Requests still in flight after 30 s; closing their connections.");
    }
    tracing::info!(message = "Flushing the producer.");
    if let Err(error) = intake.flush(Duration::from_secs(30)) {
        tracing::error!(message = "Records left unacknowledged at shutdown.", %error);
    }
    Ok(())
}

/// One rejected record in a response.
#[derive(Debug, Serialize)]
struct RecordError {
    index: usize,
    reason: &'static str,
    detail: String,
}

#[derive(Debug, Serialize)]
struct Answer {
    accepted: usize,
    rejected: usize,
    rejections: Vec<RecordError>,
}

/// A request-level error.
#[derive(Debug, Serialize)]
struct Failure {
    error: &'static str,
    detail: String,
}

fn failure(status: StatusCode, error: &'static str, detail: impl Into<String>) -> Response {
    let mut r = (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::to_vec(&Failure {
            error,
            detail: detail.into(),
        })
        .unwrap_or_default(),
    )
        .into_response();
    if matches!(
        status,
        StatusCode::SERVICE_UNAVAILABLE | StatusCode::TOO_MANY_REQUESTS
    ) && !r.headers().contains_key(header::RETRY_AFTER)
    {
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    r
}

async fn post_events(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
    let started = Instant::now();
    let id = st.request_ids.fetch_add(1, Ordering::Relaxed);
    let request_id = format!("{:x}-{id:x}", st.started_ms);
    let span = tracing::info_span!("request", request_id = %request_id);
    let mut response = handle(&st, &headers, body).instrument(span).await;
    let status = response.status();
    st.metrics
        .requests
        .with_label_values(&[status.as_str()])
        .inc();
    st.metrics
        .request_seconds
        .with_label_values(&[status.as_str()])
        .observe(started.elapsed().as_secs_f64());
    st.metrics.queue_depth.set(i64::from(st.intake.in_flight()));
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert("x-request-id", v);
    }
    response
}

async fn handle(st: &AppState, headers: &HeaderMap, body: axum::body::Body) -> Response {
    let producer = match authenticate(&st.config.producers, headers) {
        Ok(p) => p,
        Err(r) => return r,
    };
    // A declared length over the limit is refused before any of it is read.
    let max = st.config.max_body_bytes;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let too_large = || {
        failure(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("the body is larger than {max} bytes"),
        )
    };
    if declared.is_some_and(|n| n > max as u64) {
        return too_large();
    }
    let body =
        match tokio::time::timeout(st.config.body_read_timeout, axum::body::to_bytes(body, max))
            .await
        {
            Ok(Ok(b)) => b,
            Ok(Err(_)) => return too_large(),
            Err(_) => {
                let mut r = failure(
                    StatusCode::REQUEST_TIMEOUT,
                    "body_timeout",
                    format!(
                        "the body did not arrive within {} s; nothing was accepted",
                        st.config.body_read_timeout.as_secs()
                    ),
                );
                // The rest of the body is not read: the connection ends here.
                r.headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
                return r;
            }
        };
    let body = match decode_body(headers, body, st.config.max_decompressed_bytes) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let records = match split_records(headers, &body) {
        Ok(r) => r,
        Err(r) => return r,
    };
    if records.len() > st.config.max_records {
        return failure(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_many_records",
            format!(
                "{} records in one request; at most {} are accepted",
                records.len(),
                st.config.max_records
            ),
        );
    }
    if let Err(wait) = take_tokens(st, &producer, records.len()) {
        let mut r = failure(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!(
                "producer {producer} is over its limit of {} records/s",
                st.config.rate_limit_per_sec
            ),
        );
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(wait.max(1)));
        return r;
    }

    let now = now_ms();
    // One acknowledgement for the request's records, dead letters included.
    let acks = Acks::new();
    let mut sender = st.intake.sender();
    let mut rejections = Vec::new();
    for (index, raw) in records.iter().enumerate() {
        match sender.accept(&acks, &producer, raw, now) {
            Ok(Accepted::Queued) => {}
            Err(error) => {
                tracing::warn!(message = "Cannot queue records for Kafka; asking the client to retry.", %error);
                return failure(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "the Kafka producer queue is full or the broker is unreachable; retry the whole request later",
                );
            }
            Ok(Accepted::Rejected(rejection)) => {
                st.metrics
                    .records
                    .with_label_values(&["rejected", rejection.reason.code()])
                    .inc();
                let letter = dead_letter(st, &producer, index, raw, &rejection, now);
                if let Err(error) = sender.send_raw(&acks, &st.config.dlq_topic, &producer, &letter)
                {
                    tracing::warn!(message = "Cannot queue a dead letter; asking the client to retry.", %error);
                    return failure(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "unavailable",
                        "the Kafka producer queue is full or the broker is unreachable; retry the whole request later",
                    );
                }
                rejections.push(RecordError {
                    index,
                    reason: rejection.reason.code(),
                    detail: rejection.detail,
                });
            }
        }
    }
    drop(sender);
    let accepted = records.len() - rejections.len();

    let acked = Instant::now();
    let result = match tokio::time::timeout(st.config.ack_timeout, acks.wait()).await {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(_) => Err(format!(
            "no acknowledgement within {} s",
            st.config.ack_timeout.as_secs()
        )),
    };
    let label = if result.is_ok() { "ok" } else { "failed" };
    st.metrics
        .ack_seconds
        .with_label_values(&[label])
        .observe(acked.elapsed().as_secs_f64());
    producer_health(st, result.is_ok());
    if let Err(error) = result {
        tracing::warn!(message = "Kafka did not acknowledge every record; asking the client to retry.", error = %error, records = records.len());
        return failure(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "Kafka did not acknowledge every record; retry the whole request (re-sent event ids are counted once)",
        );
    }
    st.metrics
        .records
        .with_label_values(&["accepted", ""])
        .inc_by(accepted as u64);
    tracing::info!(
        message = "Events received.",
        producer = %producer,
        accepted,
        rejected = rejections.len()
    );
    let status = if accepted == 0 {
        StatusCode::UNPROCESSABLE_ENTITY
    } else {
        StatusCode::OK
    };
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::to_vec(&Answer {
            accepted,
            rejected: rejections.len(),
            rejections,
        })
        .unwrap_or_default(),
    )
        .into_response()
}

/// The dead letter of a rejected record. The detail never carries a value
/// (the validator's details name fields only); the raw record, cut to
/// `dlq_raw_max_bytes`, is kept for the producer's support staff.
fn dead_letter(
    st: &AppState,
    producer: &str,
    index: usize,
    raw: &[u8],
    rejection: &pulih_event::Rejection,
    now: i64,
) -> Vec<u8> {
    let mut letter = DeadLetter::new(
        Stage::Gateway,
        rejection.reason.code(),
        rejection.detail.clone(),
        now,
        raw,
        st.config.dlq_raw_max_bytes,
    );
    letter.producer_id = Some(producer.to_owned());
    letter.index = Some(index as u64);
    letter.to_json()
}

/// The producer behind the bearer token.
// The error is the finished response, built once per refused request.
#[allow(clippy::result_large_err)]
fn authenticate(producers: &[ProducerAuth], headers: &HeaderMap) -> Result<String, Response> {
    let unauthorized = |detail: &str| {
        let mut r = failure(StatusCode::UNAUTHORIZED, "unauthorized", detail);
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"pulih\""),
        );
        r
    };
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Err(unauthorized("missing Authorization: Bearer <token> header"));
    };
    let token = value
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty());
    let Some(token) = token else {
        return Err(unauthorized(
            "malformed Authorization header; expected Bearer <token>",
        ));
    };
    let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
    // Compare with every producer, in constant time per comparison.
    let mut found: Option<&ProducerAuth> = None;
    for p in producers {
        if constant_time_eq(&digest, &p.token_sha256) {
            found = Some(p);
        }
    }
    match found {
        None => Err(unauthorized("unknown token")),
        Some(p) if !p.enabled => Err(failure(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("producer {} is disabled", p.id),
        )),
        Some(p) => Ok(p.id.clone()),
    }
}

fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let mut diff = 0u8;
    for (x, y) in a.iter().zip(b) {
        diff |= x ^ y;
    }
    std::hint::black_box(diff) == 0
}

/// Reads a body as `POST /v1/events` does up to its records: gunzips it
/// (within `max_decompressed` bytes) and splits it by content type, then
/// hands each record to `each`. Returns how many there were, or the
/// status the gateway answers with. The fuzz target `read_body` (fuzz/)
/// drives it with arbitrary headers and bytes.
pub fn read_body(
    content_type: Option<&[u8]>,
    content_encoding: Option<&[u8]>,
    body: &[u8],
    max_decompressed: usize,
    mut each: impl FnMut(&[u8]),
) -> Result<usize, u16> {
    let mut headers = HeaderMap::new();
    for (name, value) in [
        (header::CONTENT_TYPE, content_type),
        (header::CONTENT_ENCODING, content_encoding),
    ] {
        if let Some(v) = value {
            let v = HeaderValue::from_bytes(v).map_err(|_| 400u16)?;
            headers.insert(name, v);
        }
    }
    let body = decode_body(&headers, Bytes::copy_from_slice(body), max_decompressed)
        .map_err(|r| r.status().as_u16())?;
    let records = split_records(&headers, &body).map_err(|r| r.status().as_u16())?;
    for r in &records {
        each(r);
    }
    Ok(records.len())
}

/// The body, gunzipped when `Content-Encoding: gzip`, within `max` bytes.
// The error is the finished response, built once per refused request.
#[allow(clippy::result_large_err)]
fn decode_body(headers: &HeaderMap, body: Bytes, max: usize) -> Result<Bytes, Response> {
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_ascii_lowercase());
    let body = match encoding.as_deref() {
        None | Some("identity") => body,
        Some("gzip") => {
            let mut out = Vec::new();
            let mut reader = flate2::read::GzDecoder::new(&body[..]).take(max as u64 + 1);
            if let Err(e) = reader.read_to_end(&mut out) {
                return Err(failure(
                    StatusCode::BAD_REQUEST,
                    "bad_gzip",
                    format!("the body is not valid gzip: {e}"),
                ));
            }
            if out.len() > max {
                return Err(failure(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "too_large",
                    format!("the body is larger than {max} bytes once decompressed"),
                ));
            }
            Bytes::from(out)
        }
        Some(_) => {
            return Err(failure(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_encoding",
                "Content-Encoding must be gzip or absent",
            ))
        }
    };
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(failure(
            StatusCode::BAD_REQUEST,
            "empty_body",
            "the body holds no event",
        ));
    }
    Ok(body)
}

/// The raw records of a body: NDJSON lines, the elements of a JSON array,
/// or one JSON object.
// The error is the finished response, built once per refused request.
#[allow(clippy::result_large_err)]
fn split_records<'a>(headers: &HeaderMap, body: &'a [u8]) -> Result<Vec<&'a [u8]>, Response> {
    let ctype = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .unwrap_or_default();
    match ctype.as_str() {
        "application/x-ndjson" | "application/jsonl" => {
            // memchr finds the line ends many bytes at a time.
            let mut lines = Vec::new();
            let mut start = 0;
            for end in memchr::memchr_iter(b'\n', body).chain([body.len()]) {
                let line = &body[start..end];
                start = end + 1;
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                if !line.iter().all(u8::is_ascii_whitespace) {
                    lines.push(line);
                }
            }
            Ok(lines)
        }
        "application/json" | "" => {
            let first = body.iter().find(|b| !b.is_ascii_whitespace());
            if first == Some(&b'[') {
                match serde_json::from_slice::<Vec<&serde_json::value::RawValue>>(body) {
                    Ok(items) => Ok(items.into_iter().map(|r| r.get().as_bytes()).collect()),
                    Err(e) => Err(failure(
                        StatusCode::BAD_REQUEST,
                        "invalid_json",
                        format!(
                            "the body is not a JSON array of events (line {}, column {}); send NDJSON to have each line judged on its own",
                            e.line(),
                            e.column()
                        ),
                    )),
                }
            } else {
                Ok(vec![body])
            }
        }
        _ => Err(failure(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "Content-Type must be application/json or application/x-ndjson",
        )),
    }
}

/// Notes whether a request's records were acknowledged, and replaces the
/// producer once none has been for `renew_producer_after`. A broker that
/// restarts without the idempotent producers' state can refuse every
/// later record of a producer it forgot (seen with the local broker): the
/// clients retry forever and nothing lands. A new producer starts afresh;
/// while the broker is simply down, a new one fails as the old one did.
fn producer_health(st: &AppState, acknowledged: bool) {
    let mut since = st.failing_since.lock().unwrap_or_else(|e| e.into_inner());
    if acknowledged {
        *since = None;
        return;
    }
    let first = *since.get_or_insert_with(Instant::now);
    let after = st.config.renew_producer_after;
    if first.elapsed() < after {
        return;
    }
    *since = Some(Instant::now());
    match st.intake.renew_producer() {
        Ok(()) => {
            st.metrics.producer_renewals.inc();
            tracing::warn!(
                message =
                    "Every acknowledgement failed for a while; the Kafka producer was replaced.",
                seconds = after.as_secs()
            );
        }
        Err(error) => {
            tracing::error!(message = "Cannot replace the Kafka producer.", %error);
        }
    }
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Token bucket per producer; `Err(seconds to wait)` when over the limit.
fn take_tokens(st: &AppState, producer: &str, n: usize) -> Result<(), u64> {
    let rate = f64::from(st.config.rate_limit_per_sec);
    if rate <= 0.0 {
        return Ok(());
    }
    let burst = f64::from(st.config.rate_limit_burst.max(1));
    // A request larger than the burst is allowed from a full bucket.
    let need = (n as f64).min(burst);
    let mut buckets = st.buckets.lock().unwrap_or_else(|e| e.into_inner());
    let b = buckets.entry(producer.to_owned()).or_insert(Bucket {
        tokens: burst,
        at: Instant::now(),
    });
    let now = Instant::now();
    b.tokens = (b.tokens + now.duration_since(b.at).as_secs_f64() * rate).min(burst);
    b.at = now;
    if b.tokens >= need {
        b.tokens -= n as f64;
        Ok(())
    } else {
        Err(((need - b.tokens) / rate).ceil() as u64)
    }
}

async fn readyz(State(st): State<Arc<AppState>>) -> Response {
    let cached = *st.ready.lock().unwrap_or_else(|e| e.into_inner());
    let ok = match cached {
        Some((at, ok)) if at.elapsed() < Duration::from_secs(5) => ok,
        _ => {
            let intake = st.intake.clone();
            let ok = tokio::task::spawn_blocking(move || {
                intake
                    .fetch_metadata(Duration::from_secs(2))
                    .is_ok_and(|n| n > 0)
            })
            .await
            .unwrap_or(false);
            *st.ready.lock().unwrap_or_else(|e| e.into_inner()) = Some((Instant::now(), ok));
            ok
        }
    };
    if ok {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: the Kafka broker does not answer or the topic has no partitions\n",
        )
            .into_response()
    }
}

async fn metrics_page(State(st): State<Arc<AppState>>) -> Response {
    st.metrics.queue_depth.set(i64::from(st.intake.in_flight()));
    (
        [(header::CONTENT_TYPE, pulih_telemetry::CONTENT_TYPE)],
        st.metrics.render(),
    )
        .into_response()
}

/// A new bearer token and the SHA-256 the config holds for it.
pub fn new_token() -> std::io::Result<(String, String)> {
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    let token = format!("pulih_{}", hex::encode(bytes));
    let digest = hex::encode(Sha256::digest(token.as_bytes()));
    Ok((token, digest))
}

/// The address the gateway listens on, for logs and errors.
pub fn describe(addr: &SocketAddr) -> String {
    format!("http://{addr}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_is_read_as_the_gateway_reads_it() {
        use std::io::Write;
        let ndjson = b"{\"a\":1}\r\n\n  \n{\"b\":2}\n";
        let mut seen = Vec::new();
        let n = read_body(Some(b"application/x-ndjson"), None, ndjson, 1 << 10, |r| {
            seen.push(r.to_vec())
        });
        assert_eq!(n, Ok(2));
        assert_eq!(seen, [b"{\"a\":1}".to_vec(), b"{\"b\":2}".to_vec()]);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&[b' '; 2048]).unwrap();
        let bomb = gz.finish().unwrap();
        let read = |ct: Option<&[u8]>, ce: Option<&[u8]>, body: &[u8]| {
            read_body(ct, ce, body, 1 << 10, |_| {})
        };
        assert_eq!(read(None, Some(b"gzip"), &bomb), Err(413));
        assert_eq!(read(None, Some(b"gzip"), b"not gzip"), Err(400));
        assert_eq!(read(None, Some(b"br"), b"{}"), Err(415));
        assert_eq!(read(Some(b"text/plain"), None, b"{}"), Err(415));
        assert_eq!(read(Some(b"application/json"), None, b" \n"), Err(400));
        assert_eq!(read(Some(b"application/json"), None, b"[{},{}]"), Ok(2));
        assert_eq!(read(Some(b"application/json\n"), None, b"{}"), Err(400));
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn producers() -> Vec<ProducerAuth> {
        vec![
            ProducerAuth {
                id: "bank-a".into(),
                token_sha256: Sha256::digest(b"tok-a").into(),
                enabled: true,
            },
            ProducerAuth {
                id: "bank-b".into(),
                token_sha256: Sha256::digest(b"tok-b").into(),
                enabled: false,
            },
        ]
    }

    #[test]
    fn tokens_map_to_producers() {
        let p = producers();
        assert_eq!(
            authenticate(&p, &headers(&[("authorization", "Bearer tok-a")])).unwrap(),
            "bank-a"
        );
        let status = |h| authenticate(&p, &h).unwrap_err().status();
        assert_eq!(status(headers(&[])), StatusCode::UNAUTHORIZED);
        assert_eq!(
            status(headers(&[("authorization", "Basic abc")])),
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            status(headers(&[("authorization", "Bearer ")])),
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            status(headers(&[("authorization", "Bearer nope")])),
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            status(headers(&[("authorization", "Bearer tok-b")])),
            StatusCode::FORBIDDEN
        );
    }

    #[test]
    fn bodies_split_into_records() {
        let nd = headers(&[("content-type", "application/x-ndjson")]);
        let body = b"{\"a\":1}\n\n{\"b\":2}\r\n  \n{oops\n";
        assert_eq!(
            split_records(&nd, body).unwrap(),
            vec![&b"{\"a\":1}"[..], b"{\"b\":2}", b"{oops"]
        );
        let js = headers(&[("content-type", "application/json; charset=utf-8")]);
        assert_eq!(
            split_records(&js, b" [ {\"a\":1} , {\"b\": [2]} ]").unwrap(),
            vec![&b"{\"a\":1}"[..], b"{\"b\": [2]}"]
        );
        assert_eq!(split_records(&js, b"{\"a\":1}").unwrap().len(), 1);
        assert_eq!(
            split_records(&js, b"[{\"a\":1},").unwrap_err().status(),
            StatusCode::BAD_REQUEST
        );
        let xml = headers(&[("content-type", "application/xml")]);
        assert_eq!(
            split_records(&xml, b"<a/>").unwrap_err().status(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE
        );
    }

    #[test]
    fn gzip_is_bounded() {
        use flate2::write::GzEncoder;
        use std::io::Write;
        let gz = headers(&[("content-encoding", "gzip")]);
        let mut e = GzEncoder::new(Vec::new(), flate2::Compression::best());
        e.write_all(&vec![b' '; 1 << 20]).unwrap();
        e.write_all(b"{}").unwrap();
        let bomb = Bytes::from(e.finish().unwrap());
        assert!(
            bomb.len() < 4096,
            "a megabyte of spaces compresses to {}",
            bomb.len()
        );
        assert_eq!(
            decode_body(&gz, bomb.clone(), 64 * 1024)
                .unwrap_err()
                .status(),
            StatusCode::PAYLOAD_TOO_LARGE
        );
        assert_eq!(
            decode_body(&gz, bomb, 2 << 20).unwrap().len(),
            (1 << 20) + 2
        );
        assert_eq!(
            decode_body(&gz, Bytes::from_static(b"not gzip"), 1024)
                .unwrap_err()
                .status(),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            decode_body(&headers(&[]), Bytes::from_static(b" \n "), 1024)
                .unwrap_err()
                .status(),
            StatusCode::BAD_REQUEST
        );
    }

    #[test]
    fn new_tokens_are_random_and_hashed() {
        let (a, ha) = new_token().unwrap();
        let (b, _) = new_token().unwrap();
        assert_ne!(a, b);
        assert!(a.starts_with("pulih_") && a.len() == 70);
        assert_eq!(ha, hex::encode(Sha256::digest(a.as_bytes())));
    }
}
