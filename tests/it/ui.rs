//! The page `pulih ui` serves, in headless Chromium (Debian's `chromium`),
//! reading seeded public rows with the shipped public account on a private
//! ClickHouse: the map, the series, the heatmap and the alerts render with
//! data, and withheld cells show as withheld, never as zero.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use pulih_event::Reference;
use pulih_tests::{free_port, pulih_bin, repo_root, unique};
use serde::Serialize;

use crate::access::{with_roles, writer_store, PUBLIC, WRITER};

#[derive(clickhouse::Row, Serialize)]
struct Vintage {
    day: u16,
    level: i8,
    kota_code: String,
    district_code: String,
    sector: String,
    vintage: u16,
    withheld: u8,
    incomplete: Option<u8>,
    amount_idr_index: Option<f64>,
    merchants_open_index: Option<f64>,
    amount_idr_yoy_aligned: Option<f64>,
}

#[derive(clickhouse::Row, Serialize)]
struct Release {
    vintage: u16,
    released_at: u32,
    data_through: u16,
    provisional_from: u16,
}

#[derive(clickhouse::Row, Serialize)]
struct Alert {
    alert_id: String,
    state: i8,
    level: i8,
    kota_code: String,
    district_code: String,
    sector: String,
    severity: i8,
    day: u16,
    since: u16,
    summary: String,
    raised_at: u32,
}

fn day(s: &str) -> u16 {
    pulih_metrics::parse_day(s).unwrap() as u16
}

/// A revenue index with a pandemic's shape: 1.0 in January 2020, down to
/// 0.4 in April, back above 1 by mid-2021; `tilt` spreads cells apart.
fn index(d: u16, tilt: f64) -> f64 {
    let t = f64::from(d - day("2020-01-01"));
    let shape = if t < 90.0 {
        1.0 - 0.6 * (t / 90.0).powi(3)
    } else {
        0.4 + 0.7 * ((t - 90.0) / 456.0).min(1.0)
    };
    ((shape * tilt) * 100.0).round() / 100.0
}

#[tokio::test]
async fn the_page_shows_the_map_series_heatmap_and_alerts_with_withheld_cells_as_withheld() {
    let chromium = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect("chromium is installed (deploy/local/services.sh install)");
    let ch = with_roles("ch_ui");
    let store = writer_store(&ch);
    store.migrate().await.unwrap();
    let writer = clickhouse::Client::default()
        .with_url(ch.url())
        .with_user(WRITER.0)
        .with_password(WRITER.1)
        .with_database("pulih_public")
        .with_validation(false);

    // Seeded public rows: 2020-01-01..2021-06-30 for the city, three
    // sectors city-wide and per kota, and per kecamatan. Kepulauan
    // Seribu's cells are withheld (too few merchants), as is every other
    // kecamatan's manufacturing.
    let reference = Reference::jakarta();
    let (first, last) = (day("2020-01-01"), day("2021-06-30"));
    let vintage = last + 1;
    let mut rows = Vec::new();
    let mut kota: Vec<String> = reference
        .districts()
        .iter()
        .map(|d| d.regency_code.clone())
        .collect();
    kota.dedup();
    for d in first..=last {
        let row =
            |level: i8, k: &str, district: &str, sector: &str, withheld: bool, tilt: f64| Vintage {
                day: d,
                level,
                kota_code: k.into(),
                district_code: district.into(),
                sector: sector.into(),
                vintage,
                withheld: u8::from(withheld),
                incomplete: (!withheld).then_some(0),
                amount_idr_index: (!withheld).then(|| index(d, tilt)),
                merchants_open_index: (!withheld).then(|| index(d, 0.5 + tilt / 2.0)),
                amount_idr_yoy_aligned: None,
            };
        rows.push(row(4, "", "", "", false, 1.0));
        for s in ["C", "G", "I"] {
            rows.push(row(3, "", "", s, false, 1.0));
            for k in &kota {
                rows.push(row(2, k, "", s, k == "31.01", 1.05));
            }
        }
        for (i, district) in reference.districts().iter().enumerate() {
            let tilt = 0.75 + 0.5 * i as f64 / 44.0;
            for s in ["C", "G", "I"] {
                let withheld = district.regency_code == "31.01" || (s == "C" && i % 2 == 0);
                rows.push(row(
                    1,
                    &district.regency_code,
                    &district.code,
                    s,
                    withheld,
                    tilt,
                ));
            }
        }
    }
    let mut insert = writer.insert::<Vintage>("recovery_vintages").await.unwrap();
    for r in &rows {
        insert.write(r).await.unwrap();
    }
    insert.end().await.unwrap();
    let mut insert = writer.insert::<Release>("releases").await.unwrap();
    insert
        .write(&Release {
            vintage,
            released_at: 1_625_115_600,
            data_through: last,
            provisional_from: last - 6,
        })
        .await
        .unwrap();
    insert.end().await.unwrap();
    let summary = "Penyediaan Akomodasi dan Penyediaan Makan Minum in Kota Administrasi Jakarta Utara: \
                   revenue \u{2212}22 % year on year, \u{2212}14 % over 4 weeks, 9 points worse than the city; 2 weeks";
    let mut insert = writer.insert::<Alert>("alerts").await.unwrap();
    insert
        .write(&Alert {
            alert_id: "sector_downturn/kota_sector/31.72/I".into(),
            state: 1,
            level: 2,
            kota_code: "31.72".into(),
            district_code: String::new(),
            sector: "I".into(),
            severity: 1,
            day: day("2021-06-10"),
            since: day("2021-06-10"),
            summary: summary.into(),
            raised_at: 0,
        })
        .await
        .unwrap();
    insert.end().await.unwrap();

    // `pulih ui` with the public account.
    let dir = repo_root().join("target/test-ui").join(unique("ui"));
    std::fs::create_dir_all(&dir).unwrap();
    let port = free_port();
    let config = dir.join("pulih.toml");
    std::fs::write(
        &config,
        format!(
            "[clickhouse]\nurl = \"{}\"\ndatabase = \"pulih\"\n[ui]\nlisten = \"127.0.0.1:{port}\"\nclickhouse_user = \"{}\"\nclickhouse_password = \"{}\"\n",
            ch.url(),
            PUBLIC.0,
            PUBLIC.1
        ),
    )
    .unwrap();
    let log = std::fs::File::create(dir.join("ui.log")).unwrap();
    let mut ui = Command::new(pulih_bin())
        .arg("--config")
        .arg(&config)
        .arg("ui")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}/");
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let started = Instant::now();
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "pulih ui did not start; see {}",
            dir.join("ui.log").display()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The API answers with the public account, and refuses what is not in
    // the reference.
    let (status, _, body) = pulih_tests::http(addr, "GET", "/api/map?sector=I", &[], b"").await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let (status, _, _) = pulih_tests::http(addr, "GET", "/api/map?sector=Z", &[], b"").await;
    assert_eq!(status, 400);

    let browse = |args: &[&str]| {
        let out = Command::new(chromium)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--hide-scrollbars",
            ])
            .arg(format!(
                "--user-data-dir={}",
                dir.join("chromium").display()
            ))
            .args(["--virtual-time-budget=20000", "--window-size=1400,1500"])
            .args(args)
            .arg(&url)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "chromium: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    };
    let dom = String::from_utf8(browse(&["--dump-dom"])).unwrap();
    let shot = dir.join("ui.png");
    browse(&[&format!("--screenshot={}", shot.display())]);
    let _ = ui.kill();
    let _ = ui.wait();
    assert!(
        dom.contains(r#"data-ready="1""#),
        "the page did not finish loading:\n{dom}"
    );
    assert!(dom.contains("Data through 2021-06-30"), "freshness missing");

    // The map: all 44 kecamatan, 42 coloured by their food index, the two
    // of Kepulauan Seribu withheld (hatched), none drawn as a zero.
    let count = |needle: &str| dom.matches(needle).count();
    assert_eq!(
        count("<path d=\"M"),
        44 + 2,
        "44 kecamatan and two chart lines"
    );
    assert_eq!(count(r#"data-state="value"><title>"#), 42);
    let map_withheld = dom.matches(r#"fill="url(#hatch)""#).count();
    assert_eq!(
        map_withheld, 2,
        "Kepulauan Seribu's two kecamatan are withheld"
    );
    assert!(dom.contains("Kepulauan Seribu Utara (31.01.01): withheld"));
    assert!(dom.contains("Penjaringan (31.72.01): revenue index"));
    // The series: both lines drawn over many days.
    for series in ["revenue_index", "merchants_open_index"] {
        let at = dom.find(&format!(r#"data-series="{series}""#)).unwrap();
        let start = dom[..at].rfind("<path d=\"").unwrap();
        let points = dom[start..at].matches('L').count();
        assert!(points > 500, "{series}: {points} points");
    }
    // The heatmap: 44 kecamatan × 21 sectors; withheld cells as withheld.
    let withheld_cells = count("class=\"cell hatch\"");
    assert_eq!(
        withheld_cells,
        2 * 3 + 21,
        "2 × 3 in Kepulauan Seribu, 21 other kecamatan's C"
    );
    let cells = count("<td class=\"cell");
    assert_eq!(cells, 44 * 21);
    // The alert, as the public sees it.
    assert!(dom.contains(r#"data-alert="sector_downturn/kota_sector/31.72/I""#));
    assert!(dom.contains("active, warning, since 2021-06-10"));

    // The screenshot has the page drawn, not a blank.
    let png = std::fs::read(&shot).unwrap();
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 50_000,
        "{} bytes",
        png.len()
    );
    let _ = std::fs::remove_dir_all(&dir);
}
