//! The Python references' packages, installed once with pip under target/.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{dev_support, workspace, Error};

/// `pip install --target target/DIR -r daemon/benches/REQS` with `extra` pip flags (`--no-deps`
/// for the dlib set, whose pins are complete), once (`dev_support::pip_install_once`, as the
/// tests do). Returns the directory to put on PYTHONPATH.
pub fn install(reqs: &str, dir: &str, extra: &[&str]) -> Result<PathBuf, Error> {
    let reqs = workspace().join("daemon/benches").join(reqs);
    let target = workspace().join("target").join(dir);
    if !target.join(".stamp").exists() {
        eprintln!(
            "installing {} into {} ...",
            reqs.display(),
            target.display()
        );
    }
    Ok(dev_support::pip_install_once(&reqs, &target, extra)?)
}

/// `python3 daemon/benches/SCRIPT ARGS` with `pylib` on PYTHONPATH; one JSON line per photo.
pub fn run_script(
    script: &str,
    pylib: &Path,
    args: &[String],
) -> Result<Vec<serde_json::Value>, Error> {
    let out = Command::new("python3")
        .arg(workspace().join("daemon/benches").join(script))
        .args(args)
        .env("PYTHONPATH", pylib)
        .env("OMP_NUM_THREADS", "1")
        .env("OPENBLAS_NUM_THREADS", "1")
        .output()?;
    if !out.status.success() {
        return Err(format!("{script} failed: {}", String::from_utf8_lossy(&out.stderr)).into());
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).map_err(|e| format!("{script}: {e} in {l}").into()))
        .collect()
}

/// onnxruntime + OpenCV, for ort_pipeline.py.
pub const ORT_REQS: &str = "requirements.txt";
pub const ORT_DIR: &str = "bench-pylib";
/// face_recognition + a prebuilt dlib, for dlib_pipeline.py; complete pins, so `--no-deps`.
pub const DLIB_REQS: &str = "requirements-dlib.txt";
pub const DLIB_DIR: &str = "bench-pylib-dlib";
