//! `deepstack-bench`: how fast deepstackd is, against onnxruntime, OpenCV's face API and
//! face_recognition (dlib).
//!
//! ```text
//! cargo run --release -p deepstackd --bin deepstack-bench [-- stages] [--repeat 10] [PHOTO...]
//! cargo run --release -p deepstackd --bin deepstack-bench -- targets [--repeat 20] [--duration 10] [--load 20]
//! ```
//! `stages` (also what runs without a subcommand): per-stage latency of the vision pipeline
//! in-process, one thread, next to the two references of `daemon/benches/ort_pipeline.py`
//! (onnxruntime and OpenCV's FaceDetectorYN + FaceRecognizerSF, one thread each, on FP32
//! files folded from our int8 ones) on the same photos; see `stages.rs`.
//!
//! `profile`: YuNet's time by op kind with tract's kernels only and with ours; see
//! `profile.rs`.
//!
//! `shared-gallery`: the shared PostgreSQL gallery's targets against SQLite, with two
//! release daemons on a throwaway PostgreSQL cluster; see `shared.rs`.
//!
//! `targets`: the performance targets of the project, measured through the real release
//! daemon over HTTP with the references run in the same invocation; prints
//! measured / target / ratio / pass for each and exits 0 (it is a report); see `targets.rs`
//! and BENCHMARKS.md.

#[path = "../../../dev-support/mod.rs"]
mod dev_support;
mod http;
mod profile;
mod pylib;
mod rss;
mod shared;
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

const USAGE: &str = "\
deepstack-bench: how fast deepstackd is, against onnxruntime, OpenCV and dlib

usage:
  deepstack-bench [stages] [--repeat N] [PHOTO...]
      per-stage latency (decode, detect, align, embed per face, total) in-process on one
      thread, next to onnxruntime and OpenCV's FaceDetectorYN + FaceRecognizerSF (FP32, one
      thread each) on the same photos; default photos: the per-photo set of `targets` and
      obama_12mp.jpg from target/testdata (made by daemon/tests/data/setup.py when missing).
      --repeat N     timed runs per stage, median reported (default 10)
  deepstack-bench targets [--repeat N] [--duration S] [--load S]
      every performance target, through the release deepstackd over HTTP, with the
      references run in the same invocation (onnxruntime, for the per-photo rows, in
      turns with the daemon's requests); prints measured / target / ratio / result.
      --repeat N     requests per latency median, and onnxruntime runs (default 20)
      --duration S   seconds of each throughput run (default 10)
      --load S       seconds of the mixed load for peak memory (default 20)
  deepstack-bench recent-faces [--repeat N]
      only the recent-faces row of `targets`: recognize of the 4-face 720p photo on a daemon
      keeping recent faces (filled to RECENT_FACES_MAX, all strangers, grouped) minus one
      not keeping them, requests alternating (default 20 each way, x 2)
  deepstack-bench profile [--repeat N] [--size WxH] [--model yunet|sface] [--by-node] [--only ours|tract]
      a model's time by op kind, with tract's kernels only and with ours (conv_ops), on
      one thread, and the largest difference between the two plans' outputs; then ours
      whole on one thread and with the other cores as helpers (as a lone request); SFace
      also on a pool of every core with tract's ops split (a lone request's one face)
      --repeat N     timed runs (default 20)
      --size WxH     detector input, multiples of 32 (default 640x480)
      --model M      yunet (default) or sface (one 112x112 face, without its final
                     layer, which runs outside tract)
      --by-node      time by node instead of by op kind
      --only P       one plan only, ours or tract, on one thread (no helper runs): for a
                     profiler, or an instruction count under qemu
  deepstack-bench shared-gallery [--registrations N] [--outage S]
      the shared PostgreSQL gallery (GALLERY_URL) against SQLite, on a PostgreSQL cluster
      started in a temp dir (Debian's postgresql): register and READY on 100k samples,
      cross-node visibility with two writers, and the database stopped under load
      --registrations N   registrations for the visibility p99, half per node (default 200)
      --outage S          seconds PostgreSQL stays stopped (default 30)
  deepstack-bench --help
      this text

The Python references install once with pip into target/bench-pylib/ (and
target/bench-pylib-dlib/); their FP32 ONNX files are built once into target/bench-fp32/.
See BENCHMARKS.md.
";

/// A photo of the per-photo targets (issue 14), in `target/testdata`: no face, one face in a
/// 1-2 MP photo, four faces in a 720p frame.
pub struct SetPhoto {
    pub file: &'static str,
    /// Faces that both deepstackd and the references find in it.
    pub faces: usize,
}

pub const PHOTO_SET: [SetPhoto; 3] = [
    SetPhoto {
        file: "rocket.jpg",
        faces: 0,
    },
    SetPhoto {
        file: "obama.jpg",
        faces: 1,
    },
    SetPhoto {
        file: "group_1280x720.jpg",
        faces: 4,
    },
];

/// The 12 MP one-face photo (4000x3000) of `stages` and of "12 MP vs 720p".
pub const BIG_PHOTO: &str = "obama_12mp.jpg";

/// `target/testdata`, made by `daemon/tests/data/setup.py` when it or a photo of the bench is
/// missing (the script rebuilds a stale set and is a quick no-op on a current one).
fn testdata() -> Result<PathBuf, Error> {
    let dir = workspace().join("target/testdata");
    let needed = PHOTO_SET.iter().map(|p| p.file).chain([BIG_PHOTO]);
    if needed.into_iter().any(|f| !dir.join(f).is_file()) {
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
    // In-process figures (stages, profile) with the daemon's allocators: jemalloc comes with
    // the library (memory.rs), glibc's malloc (the C libraries') is set up as in the daemon.
    deepstackd::memory::tune_allocator();
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--help" || a == "-h") || args.first().is_some_and(|a| a == "help")
    {
        print!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    let result = match args.first().map(String::as_str) {
        Some("targets") => targets::run(&args[1..]),
        Some("stages") => stages::run(&args[1..]),
        Some("profile") => profile::run(&args[1..]),
        Some("shared-gallery") => shared::run(&args[1..]),
        Some("recent-faces") => targets::run_recent_faces(&args[1..]),
        _ => {
            args.retain(|a| a != "--bench"); // passed by `cargo bench`
            stages::run(&args)
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("deepstack-bench: {e}\n(deepstack-bench --help for usage)");
            ExitCode::FAILURE
        }
    }
}
