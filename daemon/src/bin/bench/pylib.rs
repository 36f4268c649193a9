//! The Python references' packages, installed once with pip under target/.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{workspace, Error};

/// `pip install --target target/DIR -r daemon/benches/REQS` unless a previous install left its
/// `.installed` stamp there; returns the directory to put on PYTHONPATH. `extra` goes to pip
/// (`--no-deps` for the dlib set, whose pins are complete).
pub fn install(reqs: &str, dir: &str, extra: &[&str]) -> Result<PathBuf, Error> {
    let dir = workspace().join("target").join(dir);
    let stamp = dir.join(".installed");
    if !stamp.exists() {
        let reqs: &Path = &workspace().join("daemon/benches").join(reqs);
        eprintln!("installing {} into {} ...", reqs.display(), dir.display());
        let ok = Command::new("python3")
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
            ])
            .args(extra)
            .arg("--target")
            .arg(&dir)
            .arg("-r")
            .arg(reqs)
            .status()?
            .success();
        if !ok {
            return Err(format!("pip install of {} failed", reqs.display()).into());
        }
        std::fs::write(&stamp, b"")?;
    }
    Ok(dir)
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
