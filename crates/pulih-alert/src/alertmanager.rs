//! A client of Alertmanager's v2 API: `POST /api/v2/alerts`.
//!
//! Alertmanager keeps an alert active until its `endsAt`; a client re-sends
//! active alerts before then (as Prometheus does) and sends `endsAt` = now
//! to resolve one. Routing, grouping, inhibition, silences and receivers
//! are Alertmanager's configuration (`deploy/alertmanager/`).

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;

/// Why a POST failed.
#[derive(Debug)]
pub struct Error(pub String);

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

/// Posts alerts to one Alertmanager.
#[derive(Clone)]
pub struct Alertmanager {
    url: String,
    client: Client<HttpConnector, Full<Bytes>>,
    timeout: Duration,
}

impl Alertmanager {
    /// `base` is Alertmanager's URL, e.g. `http://127.0.0.1:9093`; only
    /// plain HTTP (put TLS in a proxy next to the service, as the gateway
    /// does).
    pub fn new(base: &str, timeout: Duration) -> Result<Alertmanager, Error> {
        let base = base.trim_end_matches('/');
        if !base.starts_with("http://") {
            return Err(Error(format!("{base:?} is not an http:// URL")));
        }
        let url = format!("{base}/api/v2/alerts");
        url.parse::<hyper::Uri>()
            .map_err(|e| Error(format!("{base:?} is not a URL: {e}")))?;
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(timeout));
        Ok(Alertmanager {
            url,
            client: Client::builder(TokioExecutor::new()).build(connector),
            timeout,
        })
    }

    /// Posts `alerts` (Alertmanager v2 `postableAlerts`) in one request.
    pub async fn post(&self, alerts: &[serde_json::Value]) -> Result<(), Error> {
        if alerts.is_empty() {
            return Ok(());
        }
        let body = serde_json::to_vec(alerts).map_err(|e| Error(e.to_string()))?;
        let request = hyper::Request::post(&self.url)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| Error(e.to_string()))?;
        let response = tokio::time::timeout(self.timeout, self.client.request(request))
            .await
            .map_err(|_| Error(format!("{}: no answer within {:?}", self.url, self.timeout)))?
            .map_err(|e| Error(format!("{}: {e}", self.url)))?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let text = response
            .into_body()
            .collect()
            .await
            .map(|b| String::from_utf8_lossy(&b.to_bytes()).into_owned())
            .unwrap_or_default();
        Err(Error(format!("{}: {status}: {}", self.url, text.trim())))
    }
}
