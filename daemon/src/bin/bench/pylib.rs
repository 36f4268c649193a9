//! The Python references' packages, installed once with pip under target/.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

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
    let out = python(script, pylib).args(args).output()?;
    if !out.status.success() {
        return Err(format!("{script} failed: {}", String::from_utf8_lossy(&out.stderr)).into());
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).map_err(|e| format!("{script}: {e} in {l}").into()))
        .collect()
}

/// `python3 daemon/benches/SCRIPT` with `pylib` on PYTHONPATH and one thread for the libraries
/// that would start more.
fn python(script: &str, pylib: &Path) -> Command {
    let mut c = Command::new("python3");
    c.arg(workspace().join("daemon/benches").join(script))
        .env("PYTHONPATH", pylib)
        .env("OMP_NUM_THREADS", "1")
        .env("OPENBLAS_NUM_THREADS", "1");
    c
}

/// One reference's timings of one photo: a line of `ort_pipeline.py`.
pub struct RefTimes {
    /// `onnxruntime` or `opencv`.
    pub reference: String,
    /// Name, version and settings, as the script reports them.
    pub engine: String,
    /// The photo path as passed to the script.
    pub path: String,
    pub faces: usize,
    /// Median milliseconds: decode, detect, align (all faces), embed (all faces), total.
    pub ms: [f64; 5],
    pub embed_per_face: f64,
}

/// The rows of `deepstack-bench stages`, as [`RefTimes::stages`] gives them.
pub const STAGES: [&str; 5] = ["decode", "detect", "align (all)", "embed per face", "total"];

impl RefTimes {
    /// Decode, detect, align (all faces), embed per face and total, median ms.
    pub fn stages(&self) -> [f64; 5] {
        [
            self.ms[0],
            self.ms[1],
            self.ms[2],
            self.embed_per_face,
            self.ms[4],
        ]
    }
}

/// The references' names in `ort_pipeline.py`, in the order they run and are printed.
pub const REFERENCES: [&str; 2] = ["onnxruntime", "opencv"];

/// Runs `ort_pipeline.py` (both references, FP32 files built once into target/bench-fp32/)
/// on `photos` in one invocation, detector long side `size`, `repeat` timed runs each.
pub fn references(size: u32, repeat: usize, photos: &[&Path]) -> Result<Vec<RefTimes>, Error> {
    let pylib = install(ORT_REQS, ORT_DIR, &[])?;
    let mut args = vec![
        "--size".to_owned(),
        size.to_string(),
        "--repeat".to_owned(),
        repeat.to_string(),
        "--references".to_owned(),
        REFERENCES.join(","),
        "--models".to_owned(),
        workspace().join(FP32_DIR).display().to_string(),
    ];
    args.extend(photos.iter().map(|p| p.display().to_string()));
    let lines = run_script("ort_pipeline.py", &pylib, &args)?;
    lines.iter().map(parse_ref).collect()
}

/// `ort_pipeline.py --serve`: the references loaded once and measured when asked, so that a
/// reference's runs can alternate with the daemon's requests and both see the machine in the
/// same state (a VM's speed drifts by 10-30% over minutes: BENCHMARKS.md).
pub struct ReferenceServer {
    child: Child,
    asks: ChildStdin,
    answers: BufReader<ChildStdout>,
    log: PathBuf,
}

impl ReferenceServer {
    /// Starts the script with every reference of [`REFERENCES`], detector long side `size`,
    /// its stderr to `log`, and waits until they are loaded.
    pub fn start(size: u32, log: &Path) -> Result<ReferenceServer, Error> {
        let pylib = install(ORT_REQS, ORT_DIR, &[])?;
        let mut child = python("ort_pipeline.py", &pylib)
            .args(["--serve", "--size", &size.to_string(), "--references"])
            .arg(REFERENCES.join(","))
            .arg("--models")
            .arg(workspace().join(FP32_DIR))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(log)?)
            .spawn()?;
        let (Some(asks), Some(answers)) = (child.stdin.take(), child.stdout.take()) else {
            return Err("ort_pipeline.py --serve: no pipes".into());
        };
        let mut server = ReferenceServer {
            child,
            asks,
            answers: BufReader::new(answers),
            log: log.to_owned(),
        };
        server.answer()?;
        Ok(server)
    }

    /// `reference` on `photo`: one unmeasured run, then `repeat` measured; their stage
    /// medians and each run's total, ms.
    pub fn measure(
        &mut self,
        reference: &str,
        photo: &Path,
        repeat: usize,
    ) -> Result<(RefTimes, Vec<f64>), Error> {
        let ask = serde_json::json!({
            "reference": reference,
            "path": photo.display().to_string(),
            "repeat": repeat,
        });
        writeln!(self.asks, "{ask}")?;
        let line = self.answer()?;
        let totals = line["totals"]
            .as_array()
            .and_then(|v| v.iter().map(serde_json::Value::as_f64).collect())
            .ok_or_else(|| format!("no totals in {line}"))?;
        Ok((parse_ref(&line)?, totals))
    }

    fn answer(&mut self) -> Result<serde_json::Value, Error> {
        let mut line = String::new();
        if self.answers.read_line(&mut line)? == 0 {
            return Err(format!(
                "ort_pipeline.py --serve ended before answering; see {}",
                self.log.display()
            )
            .into());
        }
        Ok(serde_json::from_str(&line)?)
    }
}

impl Drop for ReferenceServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn parse_ref(line: &serde_json::Value) -> Result<RefTimes, Error> {
    let text = |k: &str| {
        line[k]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| format!("no {k} in {line}"))
    };
    let ms = |k: &str| {
        line["ms"][k]
            .as_f64()
            .ok_or_else(|| format!("no ms.{k} in {line}"))
    };
    Ok(RefTimes {
        reference: text("reference")?,
        engine: text("engine")?,
        path: text("path")?,
        faces: line["faces"].as_u64().ok_or("no faces")? as usize,
        ms: [
            ms("decode")?,
            ms("detect")?,
            ms("align")?,
            ms("embed")?,
            ms("total")?,
        ],
        embed_per_face: ms("embed_per_face")?,
    })
}

/// The timings of `reference` on `photo` (the path as passed to [`references`]).
pub fn find<'a>(all: &'a [RefTimes], reference: &str, photo: &Path) -> Option<&'a RefTimes> {
    let photo = photo.display().to_string();
    all.iter()
        .find(|r| r.reference == reference && r.path == photo)
}

/// The engine description of `reference`, from any of its lines.
pub fn engine<'a>(all: &'a [RefTimes], reference: &'a str) -> &'a str {
    all.iter()
        .find(|r| r.reference == reference)
        .map_or(reference, |r| r.engine.as_str())
}

/// onnxruntime + OpenCV (+ onnx for the FP32 files), for ort_pipeline.py.
pub const ORT_REQS: &str = "requirements.txt";
pub const ORT_DIR: &str = "bench-pylib";
/// Where `daemon/benches/fp32_models.py` writes the FP32 ONNX files, under the workspace.
pub const FP32_DIR: &str = "target/bench-fp32";
/// face_recognition + a prebuilt dlib, for dlib_pipeline.py; complete pins, so `--no-deps`.
pub const DLIB_REQS: &str = "requirements-dlib.txt";
pub const DLIB_DIR: &str = "bench-pylib-dlib";
