//! The page `pulih ui` serves, in headless Chromium (Debian's `chromium`),
//! reading seeded public rows with the shipped public account on a private
//! ClickHouse: the map, the series, the heatmap and the alerts render with
//! data, and withheld cells show as withheld, never as zero.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use pulih_tests::{free_port, pulih_bin, repo_root, unique};

use crate::access::{with_roles, writer_store, PUBLIC};
use crate::public_seed::PLANTED;

#[tokio::test]
async fn the_page_shows_the_map_series_heatmap_and_alerts_with_withheld_cells_as_withheld() {
    let chromium = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect("chromium is installed (deploy/local/services.sh install)");
    let ch = with_roles("ch_ui");
    let store = writer_store(&ch);
    store.migrate().await.unwrap();
    crate::public_seed::seed(&ch).await;

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
    let mut ui = pulih_tests::KillOnDrop(
        Command::new(pulih_bin())
            .arg("--config")
            .arg(&config)
            .arg("ui")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
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
    // Each row's latest released vintage, never a superseded or an
    // unreleased one.
    for path in [
        "/api/map?sector=G",
        "/api/series?sector=G&kota=",
        "/api/series?sector=G&kota=31.72",
        "/api/heatmap",
    ] {
        let (status, _, body) = pulih_tests::http(addr, "GET", path, &[], b"").await;
        let body = String::from_utf8_lossy(&body);
        assert_eq!(status, 200, "{path}: {body}");
        assert!(body.len() > 1000, "{path}: {body}");
        assert!(
            !body.contains(&PLANTED.to_string()),
            "{path} shows a superseded or unreleased vintage"
        );
    }

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
