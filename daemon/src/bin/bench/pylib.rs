//! The Python references' packages, installed once with pip under target/.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{workspace, Error};

/// `pip install --target target/DIR -r daemon/benches/REQS` with `extra` pip flags (`--no-deps`
/// for the dlib set, whose pins are complete), once: a stamp holds the requirements and flags it
/// was made from, and a finished install is renamed into place, so an interrupted one is never
/// used and a changed file reinstalls (the same scheme as the tests' `common::pip_install`).
/// Returns the directory to put on PYTHONPATH.
pub fn install(reqs: &str, dir: &str, extra: &[&str]) -> Result<PathBuf, Error> {
    let reqs = workspace().join("daemon/benches").join(reqs);
    let wanted = format!("{}\n{}", extra.join(" "), std::fs::read_to_string(&reqs)?);
    let target = workspace().join("target").join(dir);
    if std::fs::read_to_string(target.join(".stamp"))
        .ok()
        .as_deref()
        == Some(wanted.as_str())
    {
        return Ok(target);
    }
    eprintln!(
        "installing {} into {} ...",
        reqs.display(),
        target.display()
    );
    let tmp = workspace().join(format!("target/{dir}.tmp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let ok = Command::new("python3")
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
        ])
        .arg("--root-user-action=ignore")
        .args(extra)
        .arg("--target")
        .arg(&tmp)
        .arg("-r")
        .arg(&reqs)
        .status()?
        .success();
    if !ok {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(format!("pip install of {} failed", reqs.display()).into());
    }
    std::fs::write(tmp.join(".stamp"), &wanted)?;
    let _ = std::fs::remove_dir_all(&target);
    std::fs::rename(&tmp, &target)?;
    Ok(target)
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
