//! `deepstack-bench`: how fast deepstackd is, against onnxruntime and face_recognition (dlib).
//!
//! ```text
//! cargo run --release -p deepstackd --bin deepstack-bench [-- stages] [--repeat 10] [PHOTO...]
//! cargo run --release -p deepstackd --bin deepstack-bench -- targets [--repeat 20] [--duration 10] [--load 20]
//! ```
//! `stages` (also what runs without a subcommand): per-stage latency of the vision pipeline
//! in-process, one thread, next to `daemon/benches/ort_pipeline.py` on the same photos; see
//! `stages.rs`.
//!
//! `targets`: the performance targets of the project, measured through the real release
//! daemon over HTTP with the onnxruntime and dlib references run in the same invocation; prints
//! measured / target / ratio / pass for each and exits 0 (it is a report); see `targets.rs`
//! and BENCHMARKS.md.

#[path = "../../../dev-support/mod.rs"]
mod dev_support;
mod http;
mod pylib;
mod rss;
mod stages;
mod targets;

use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::time::Instant;

type Error = Box<dyn std::error::Error>;

fn workspace() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    dir.canonicalize().unwrap_or(dir)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Median milliseconds of `f` over `repeat` runs after one warm-up.
fn time<T>(repeat: usize, mut f: impl FnMut() -> T) -> (f64, T) {
    let mut out = f();
    let mut v = Vec::with_capacity(repeat);
    for _ in 0..repeat {
        let t = Instant::now();
        out = f();
        v.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    (median(v), out)
}

/// `target/testdata`, made by `daemon/tests/data/setup.py` if missing.
fn testdata() -> Result<PathBuf, Error> {
    let dir = workspace().join("target/testdata");
    if !dir.exists() {
        let ok = Command::new("python3")
            .arg(workspace().join("daemon/tests/data/setup.py"))
            .arg(&dir)
            .status()?
            .success();
        if !ok {
            return Err("daemon/tests/data/setup.py failed".into());
        }
    }
    Ok(dir)
}

fn main() -> ExitCode {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("targets") => targets::run(&args[1..]),
        Some("stages") => stages::run(&args[1..]),
        _ => {
            args.retain(|a| a != "--bench"); // passed by `cargo bench`
            stages::run(&args)
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("deepstack-bench: {e}");
            ExitCode::FAILURE
        }
    }
}
