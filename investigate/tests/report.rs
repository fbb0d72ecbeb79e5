//! `--report FILE.html` opened in headless Chromium (Debian's `chromium`, which
//! `scripts/with-chromium.sh` installs for `make test`): rendered to a PNG, and the DOM after
//! the page's own checks read back: the title, every chart drawn with marks and a non-zero
//! size, no error in the page or on Chromium's console. Without Chromium the test fails.

use std::path::{Path, PathBuf};
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_exfilwatch-investigate");

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn chromium() -> PathBuf {
    if let Some(p) = std::env::var_os("CHROMIUM") {
        return PathBuf::from(p);
    }
    for name in ["chromium", "chromium-browser", "google-chrome"] {
        let found = std::env::var_os("PATH")
            .map(|paths| std::env::split_paths(&paths).map(|d| d.join(name)).find(|p| p.is_file()))
            .unwrap_or(None);
        if let Some(p) = found {
            return p;
        }
    }
    panic!("chromium is not installed: run `bash scripts/with-chromium.sh` (make test does) or set CHROMIUM");
}

/// Runs headless Chromium on `page` with `extra` flags; (stdout, stderr).
fn headless(page: &Path, extra: &[&str], profile: &Path) -> (String, String) {
    let out = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--enable-logging=stderr",
            "--v=0",
            "--virtual-time-budget=5000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(extra)
        .arg(format!("file://{}", page.display()))
        .output()
        .expect("run chromium");
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "chromium failed: {stderr}");
    (String::from_utf8_lossy(&out.stdout).to_string(), stderr)
}

/// The value of `attr` on the element whose id is `id`, in a serialized DOM.
fn attr(dom: &str, id: &str, attr: &str) -> Option<String> {
    let at = dom.find(&format!("id=\"{id}\""))?;
    let start = dom[..at].rfind('<')?;
    let end = at + dom[at..].find('>')?;
    let tag = &dom[start..end];
    let key = format!("{attr}=\"");
    let v = tag.find(&key)? + key.len();
    Some(tag[v..v + tag[v..].find('"')?].to_string())
}

fn console_errors(stderr: &str) -> Vec<&str> {
    stderr.lines().filter(|l| l.contains("Uncaught") || (l.contains("CONSOLE") && l.contains("rror"))).collect()
}

#[test]
fn report_of_an_alert_renders_in_chromium_with_every_chart_drawn() {
    let dir = tempfile::tempdir().expect("tempdir");
    let page = dir.path().join("report.html");
    let alerts = root().join("tests/golden/sample-logs.alerts.jsonl");
    let text = std::fs::read_to_string(&alerts).expect("golden alerts");
    let first: serde_json::Value = serde_json::from_str(text.lines().next().expect("an alert")).expect("json");
    let id = first["id"].as_str().expect("id");
    let out = Command::new(BIN)
        .arg(root().join("sample-logs"))
        .args(["--alert", id, "--alerts"])
        .arg(&alerts)
        .arg("--report")
        .arg(&page)
        .output()
        .expect("run investigate");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let html = std::fs::read_to_string(&page).expect("report");
    // Self-contained: nothing fetched from elsewhere.
    for external in ["src=\"http", "href=\"http", "@import", "url(", "<link"] {
        assert!(!html.contains(external), "the report refers to something outside it: {external}");
    }

    let png = dir.path().join("report.png");
    let profile = dir.path().join("profile-shot");
    std::fs::create_dir(&profile).expect("profile dir");
    let (_, shot_log) = headless(
        &page,
        &[&format!("--screenshot={}", png.display()), "--window-size=1100,1400", "--hide-scrollbars"],
        &profile,
    );
    let bytes = std::fs::read(&png).expect("chromium wrote the screenshot");
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
    assert!(bytes.len() > 20_000, "a screenshot of {} bytes is too small to hold the charts", bytes.len());
    assert!(console_errors(&shot_log).is_empty(), "{:?}", console_errors(&shot_log));
    if let Some(keep) = std::env::var_os("REPORT_SCREENSHOT") {
        std::fs::copy(&png, keep).expect("copy the screenshot");
    }

    let profile = dir.path().join("profile-dom");
    std::fs::create_dir(&profile).expect("profile dir");
    let (dom, log) = headless(&page, &["--dump-dom"], &profile);
    assert!(console_errors(&log).is_empty(), "{:?}", console_errors(&log));
    assert!(dom.contains(&format!("<title>exfilwatch investigation: alert {id}</title>")), "title");
    // The page's load handler ran.
    assert!(dom.contains("data-checked=\"yes\""), "the page's checks did not run");
    // No error in the page.
    let errors_at = dom.find("id=\"page-errors\"").expect("error box");
    let inner = &dom[errors_at..];
    let inner = &inner[inner.find('>').expect("tag") + 1..];
    assert!(inner.starts_with("</div>"), "errors in the page: {}", &inner[..inner.len().min(300)]);
    for chart in ["chart-hourly", "chart-origins", "chart-credentials"] {
        let marks: usize = attr(&dom, chart, "data-marks").and_then(|v| v.parse().ok()).unwrap_or(0);
        let w: f64 = attr(&dom, chart, "data-drawn-width").and_then(|v| v.parse().ok()).unwrap_or(0.0);
        let h: f64 = attr(&dom, chart, "data-drawn-height").and_then(|v| v.parse().ok()).unwrap_or(0.0);
        assert!(marks > 0 && w > 10.0 && h > 5.0, "{chart}: {marks} marks drawn over {w}x{h}");
    }
    // The alert's window is shaded and the first-seen marks are there.
    assert!(dom.contains("class=\"alert-window\""));
    assert!(dom.contains("class=\"first-seen\""));
    // The tables are in the page.
    for t in ["table-credentials", "table-origins", "table-first_seen", "table-alert_window", "table-alert_reach"] {
        assert!(dom.contains(&format!("id=\"{t}\"")), "{t}");
    }
}
