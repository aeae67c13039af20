//! `pulih ui`: a read-only web page of what pulih publishes. It reads the
//! public database (`<database>_public`) with the public account, never
//! anything else, so it shows exactly what anyone may see: indices and
//! changes, withheld cells as withheld, the downturn alerts, and how fresh
//! the release is. The page, its script and the kecamatan boundaries
//! (`schemas/reference/kecamatan.geojson`, MIT, from
//! cahyadsn/wilayah_boundaries) ship inside the binary: no CDN, it works
//! offline.
//!
//! Routes: `/` (the page), `/boundaries.geojson`, `/api/meta`,
//! `/api/map?sector=S`, `/api/series?sector=S&kota=K`, `/api/heatmap`,
//! `/api/alerts`, `/healthz`. Every answer is JSON built from a fixed query
//! with bound parameters; a sector or kota outside the reference tables is
//! a 400.
//!
//! The queries read `recovery_vintages` with the definition of the view
//! `recovery_daily` (each row's latest released vintage) and their filter
//! inside it: ClickHouse 18.16 does not push a filter through the view's
//! `LIMIT 1 BY`, and on the demo's 3.1 M vintage rows each answer took 8 s
//! through the view and 0.1 s this way.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use pulih_event::{Reference, Sector};
use serde::{Deserialize, Serialize};

const PAGE: &str = include_str!("page.html");
const BOUNDARIES: &str = include_str!("../../../schemas/reference/kecamatan.geojson");
const BOUNDARIES_LICENCE: &str =
    include_str!("../../../schemas/reference/kecamatan.geojson.LICENSE");

/// Where the published metrics are and who reads them.
#[derive(Clone)]
pub struct UiConfig {
    pub clickhouse_url: String,
    pub user: String,
    pub password: String,
    /// The public database, e.g. `pulih_public`.
    pub database: String,
}

#[derive(Clone)]
struct App {
    client: clickhouse::Client,
    reference: Arc<Reference>,
}

/// An error answered as JSON, with a status.
struct Failure(StatusCode, String);

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        (self.0, Json(serde_json::json!({ "error": self.1 }))).into_response()
    }
}

fn unavailable(e: clickhouse::error::Error) -> Failure {
    tracing::warn!(message = "ClickHouse query failed.", error = %e);
    Failure(
        StatusCode::SERVICE_UNAVAILABLE,
        "the published metrics cannot be read right now".into(),
    )
}

/// Serves the page on `listener` until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    config: UiConfig,
    reference: Arc<Reference>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let client = clickhouse::Client::default()
        .with_url(&config.clickhouse_url)
        .with_user(&config.user)
        .with_password(&config.password)
        .with_database(&config.database)
        // ClickHouse 18.16 lacks the settings the row validation uses.
        .with_validation(false);
    axum::serve(listener, router(App { client, reference }))
        .with_graceful_shutdown(shutdown)
        .await
}

fn router(app: App) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/boundaries.geojson", get(boundaries))
        .route("/boundaries.LICENSE", get(|| async { BOUNDARIES_LICENCE }))
        .route("/healthz", get(|| async { "ok" }))
        .route("/api/meta", get(meta))
        .route("/api/map", get(map))
        .route("/api/series", get(series))
        .route("/api/heatmap", get(heatmap))
        .route("/api/alerts", get(alerts))
        .with_state(app)
}

async fn page() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            // Everything the page needs is here: nothing else may load.
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; style-src 'self' 'unsafe-inline'; script-src 'self' 'unsafe-inline'; img-src 'self' data:",
            ),
        ],
        PAGE,
    )
        .into_response()
}

async fn boundaries() -> Response {
    ([(header::CONTENT_TYPE, "application/geo+json")], BOUNDARIES).into_response()
}

#[derive(Serialize, Deserialize, clickhouse::Row)]
struct Release {
    vintage: String,
    released_at: String,
    data_through: String,
}

async fn latest_release(app: &App) -> Result<Option<Release>, Failure> {
    let rows = app
        .client
        .query(
            "SELECT toString(vintage), toString(released_at), toString(data_through) \
             FROM releases FINAL ORDER BY vintage DESC LIMIT 1",
        )
        .fetch_all::<Release>()
        .await
        .map_err(unavailable)?;
    Ok(rows.into_iter().next())
}

#[derive(Serialize)]
struct Named {
    code: String,
    name: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    kota: String,
}

async fn meta(State(app): State<App>) -> Result<Json<serde_json::Value>, Failure> {
    let release = latest_release(&app).await?;
    let r = &app.reference;
    let sectors: Vec<Named> = r
        .categories()
        .iter()
        .map(|c| Named {
            code: c.sector.as_str().to_owned(),
            name: c.name_id.clone(),
            kota: String::new(),
        })
        .collect();
    let mut kota: Vec<Named> = Vec::new();
    for d in r.districts() {
        if !kota.iter().any(|k| k.code == d.regency_code) {
            kota.push(Named {
                code: d.regency_code.clone(),
                name: d.regency_name.clone(),
                kota: String::new(),
            });
        }
    }
    let districts: Vec<Named> = r
        .districts()
        .iter()
        .map(|d| Named {
            code: d.code.clone(),
            name: d.name.clone(),
            kota: d.regency_code.clone(),
        })
        .collect();
    Ok(Json(serde_json::json!({
        "release": release,
        "sectors": sectors,
        "kota": kota,
        "districts": districts,
    })))
}

#[derive(Deserialize)]
struct SectorQuery {
    sector: String,
    #[serde(default)]
    kota: String,
}

fn checked_sector(s: &str) -> Result<Sector, Failure> {
    Sector::from_letter(s).ok_or_else(|| {
        Failure(
            StatusCode::BAD_REQUEST,
            format!("sector must be a KBLI 2020 category A..U, not {s:?}"),
        )
    })
}

#[derive(Serialize, Deserialize, clickhouse::Row)]
struct MapCell {
    district: String,
    withheld: u8,
    revenue_index: Option<f64>,
    revenue_yoy: Option<f64>,
    merchants_open_index: Option<f64>,
}

async fn map(
    State(app): State<App>,
    Query(q): Query<SectorQuery>,
) -> Result<Json<serde_json::Value>, Failure> {
    let sector = checked_sector(&q.sector)?;
    let Some(release) = latest_release(&app).await? else {
        return Ok(Json(serde_json::json!({ "day": null, "cells": [] })));
    };
    let cells = app
        .client
        .query(
            "SELECT district_code, withheld, amount_idr_index, amount_idr_yoy_aligned, merchants_open_index \
             FROM recovery_vintages \
             WHERE level = 'district_sector' AND sector = ? AND day = toDate(?) AND vintage <= (SELECT max(vintage) FROM releases) \
             ORDER BY district_code, vintage DESC LIMIT 1 BY district_code",
        )
        .bind(sector.as_str())
        .bind(&release.data_through)
        .fetch_all::<MapCell>()
        .await
        .map_err(unavailable)?;
    Ok(Json(
        serde_json::json!({ "day": release.data_through, "cells": cells }),
    ))
}

#[derive(Serialize, Deserialize, clickhouse::Row)]
struct Point {
    day: String,
    withheld: u8,
    revenue_index: Option<f64>,
    merchants_open_index: Option<f64>,
}

async fn series(
    State(app): State<App>,
    Query(q): Query<SectorQuery>,
) -> Result<Json<serde_json::Value>, Failure> {
    let sector = checked_sector(&q.sector)?;
    let (level, kota) = if q.kota.is_empty() {
        ("sector", String::new())
    } else if app
        .reference
        .districts()
        .iter()
        .any(|d| d.regency_code == q.kota)
    {
        ("kota_sector", q.kota.clone())
    } else {
        return Err(Failure(
            StatusCode::BAD_REQUEST,
            format!(
                "kota must be a kota code of the reference, not {:?}",
                q.kota
            ),
        ));
    };
    let points = app
        .client
        .query(
            "SELECT toString(day), withheld, amount_idr_index, merchants_open_index \
             FROM recovery_vintages \
             WHERE level = ? AND kota_code = ? AND district_code = '' AND sector = ? \
               AND vintage <= (SELECT max(vintage) FROM releases) \
             ORDER BY day, vintage DESC LIMIT 1 BY day",
        )
        .bind(level)
        .bind(&kota)
        .bind(sector.as_str())
        .fetch_all::<Point>()
        .await
        .map_err(unavailable)?;
    Ok(Json(
        serde_json::json!({ "level": level, "points": points }),
    ))
}

#[derive(Serialize, Deserialize, clickhouse::Row)]
struct HeatCell {
    district: String,
    sector: String,
    withheld: u8,
    revenue_index: Option<f64>,
}

async fn heatmap(State(app): State<App>) -> Result<Json<serde_json::Value>, Failure> {
    let Some(release) = latest_release(&app).await? else {
        return Ok(Json(serde_json::json!({ "day": null, "cells": [] })));
    };
    let cells = app
        .client
        .query(
            "SELECT district_code, sector, withheld, amount_idr_index \
             FROM recovery_vintages \
             WHERE level = 'district_sector' AND day = toDate(?) AND vintage <= (SELECT max(vintage) FROM releases) \
             ORDER BY district_code, sector, vintage DESC LIMIT 1 BY district_code, sector",
        )
        .bind(&release.data_through)
        .fetch_all::<HeatCell>()
        .await
        .map_err(unavailable)?;
    Ok(Json(
        serde_json::json!({ "day": release.data_through, "cells": cells }),
    ))
}

#[derive(Serialize, Deserialize, clickhouse::Row)]
struct AlertRow {
    alert_id: String,
    state: String,
    severity: String,
    since: String,
    day: String,
    summary: String,
}

/// Each downturn alert's latest state: the active ones, and those resolved
/// in the last 90 days of data.
async fn alerts(State(app): State<App>) -> Result<Json<serde_json::Value>, Failure> {
    let rows = app
        .client
        .query(
            "SELECT alert_id, toString(st), toString(sev), toString(first_day), toString(last_day), summ \
             FROM ( \
                 SELECT alert_id, argMax(state, day) AS st, argMax(severity, day) AS sev, \
                        argMax(since, day) AS first_day, max(day) AS last_day, argMax(summary, day) AS summ \
                 FROM alerts FINAL GROUP BY alert_id) \
             WHERE st = 'firing' OR last_day >= (SELECT max(day) FROM alerts) - 90 \
             ORDER BY st = 'firing' DESC, last_day DESC, alert_id",
        )
        .fetch_all::<AlertRow>()
        .await
        .map_err(unavailable)?;
    Ok(Json(serde_json::json!({ "alerts": rows })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_loads_nothing_from_elsewhere() {
        for needle in ["http://", "https://", "//cdn", "@import"] {
            let outside: Vec<&str> = PAGE
                .lines()
                .filter(|l| l.contains(needle) && !l.contains("www.w3.org/2000/svg"))
                .collect();
            assert!(outside.is_empty(), "{needle}: {outside:?}");
        }
    }

    #[test]
    fn sectors_outside_the_reference_are_refused() {
        assert!(checked_sector("I").is_ok());
        for bad in ["", "Z", "I'; DROP TABLE alerts --", "ii"] {
            assert!(checked_sector(bad).is_err(), "{bad}");
        }
    }
}
