//! The gallery page in a real headless Chromium: the real daemon (with an API key), Debian's
//! `chromium` driven by Playwright (`playwright-core` from npm, no browser download) running
//! `tests/web/gallery_page.mjs`: register a person from two photos (a third without a face
//! is shown as skipped), see two thumbnails, remove one, rename, drop a photo onto the
//! person, "try it", see a stranger tried on the page under "Who came by" and name them
//! there, delete. Screenshots of every step go to
//! `target/web-screenshots/` (CI keeps them as artifacts).
//!
//! Needs `chromium`, `node` and `npm` (`.ci/run` installs them). Without them the test fails,
//! saying what to install; `DEEPSTACK_SKIP_BROWSER=1` skips it explicitly.

mod common;
#[path = "api/harness.rs"]
mod harness;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use harness::Daemon;

const KEY: &str = "page-test-key";

fn chromium() -> String {
    std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".to_owned())
}

/// `npm ci` once, when `node_modules` is missing or older than the lock file.
fn install_playwright(dir: &Path) {
    let installed = dir.join("node_modules/playwright-core/package.json");
    let current = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    if installed.is_file() && current(&installed) >= current(&dir.join("package-lock.json")) {
        return;
    }
    let out = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund"])
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("cannot run npm (apt-get install nodejs npm): {e}"));
    assert!(
        out.status.success(),
        "npm ci in {} failed:\n{}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_gallery_page_in_headless_chromium() {
    if std::env::var("DEEPSTACK_SKIP_BROWSER").as_deref() == Ok("1") {
        eprintln!("DEEPSTACK_SKIP_BROWSER=1: the browser test is skipped");
        return;
    }
    assert!(
        Path::new(&chromium()).is_file(),
        "{} not found: apt-get install chromium (or set CHROMIUM, or DEEPSTACK_SKIP_BROWSER=1 to skip)",
        chromium()
    );
    let web = common::workspace().join("daemon/tests/web");
    install_playwright(&web);
    let photos = common::testdata();
    let shots = common::workspace().join("target/web-screenshots");
    let _ = std::fs::remove_dir_all(&shots);

    let tmp = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(
        &tmp.path().join("data"),
        &[("VISION-FACE", "True"), ("API-KEY", KEY)],
    );
    let started = Instant::now();
    let out = Command::new("node")
        .arg(web.join("gallery_page.mjs"))
        .current_dir(&web)
        .env("BASE_URL", format!("http://127.0.0.1:{}", daemon.port()))
        .env("API_KEY", KEY)
        .env("PHOTOS", &photos)
        .env("SCREENSHOTS", &shots)
        .env("CHROMIUM", chromium())
        .output()
        .unwrap_or_else(|e| panic!("cannot run node (apt-get install nodejs): {e}"));
    assert!(
        out.status.success(),
        "the page test failed ({}):\n{}{}\n--- daemon log ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        daemon.log_text()
    );
    eprintln!(
        "page test passed in {:.1} s: {}",
        started.elapsed().as_secs_f64(),
        String::from_utf8_lossy(&out.stdout).trim()
    );
    assert!(started.elapsed() < Duration::from_secs(300));
    for step in [
        "01-api-key",
        "02-two-thumbnails",
        "03-one-removed",
        "04-renamed",
        "05-dropped",
        "06-try-it",
        "07-stranger",
        "08-named",
        "09-not",
        "10-forgotten",
        "11-deleted",
    ] {
        let path = shots.join(format!("{step}.png"));
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(
            bytes.starts_with(b"\x89PNG"),
            "{} is no PNG",
            path.display()
        );
    }
    // What the page did went through the API: the gallery is empty again.
    assert_eq!(daemon.status()["users"], serde_json::json!(0));
}
