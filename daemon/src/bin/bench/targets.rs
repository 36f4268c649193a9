//! `deepstack-bench targets`: every performance target of the project, measured in one run.
//!
//! ```text
//! cargo run --release -p deepstackd --bin deepstack-bench -- targets [--repeat 20] [--duration 10] [--load 20]
//! ```
//! Runs the release `deepstackd` next to this executable on 127.0.0.1 (`--vision-face`,
//! Medium, THREADCOUNT = the machine's cores as shipped, and once with THREADCOUNT=1 for the
//! per-core rows) and talks HTTP to it; runs the references on the same photos in the same
//! run: `ort_pipeline.py` (onnxruntime and OpenCV's FaceDetectorYN + FaceRecognizerSF, FP32,
//! one thread each) on the per-photo set (`PHOTO_SET`: 0, 1 and 4 faces) and face_recognition/
//! dlib (`dlib_pipeline.py`) on the 720p group photo;
//! builds (once, cached in `target/bench-gallery-100k/`) a gallery of 1,000 users x 100
//! samples through the public `Gallery` API. Prints measured / target / ratio / pass for each
//! target and exits 0 whatever the results: it is a report (BENCHMARKS.md keeps the last one).

use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use deepstackd::gallery::{Gallery, NewSample, EMBEDDING_DIM};
use deepstackd::vision::calibration::{
    detection_score_for, recognition_cosine_for, DEFAULT_DETECTION_CONFIDENCE,
    DEFAULT_RECOGNITION_CONFIDENCE,
};
use deepstackd::vision::{decode, DecodeLimits, Mode, ModelFiles, Photo, Pipeline};
use image::codecs::jpeg::JpegEncoder;

use crate::http::{self, Daemon, LoggedStages, DELETE, RECOGNIZE, REGISTER};
use crate::pylib::ReferenceServer;
use crate::{median, pylib, rss, testdata, workspace, Error, BIG_PHOTO, PHOTO_SET};

const USERS: usize = 1_000;
const SAMPLES_PER_USER: usize = 100;
/// The samples of the gallery [`gallery_100k`] builds.
pub const SAMPLES_100K: usize = USERS * SAMPLES_PER_USER;
/// Register "stays O(1)": the 100k gallery's register median at most this times the empty one's.
const O1_THRESHOLD: f64 = 1.2;
/// The per-photo targets of issue 14, as ours / the FP32 onnxruntime pipeline: one
/// inference thread (the per-core speed) and THREADCOUNT = cores (as shipped).
const PER_CORE_VS_ORT: f64 = 1.0;
const SHIPPED_VS_ORT: f64 = 0.75;

struct Opts {
    repeat: usize,
    duration: Duration,
    load: Duration,
}

/// One line of the final table.
struct Row {
    target: String,
    measured: f64,
    limit: f64,
    unit: &'static str,
    /// true: pass when measured <= limit; false: when measured >= limit.
    at_most: bool,
    /// The references' milliseconds for the same photo, in `pylib::REFERENCES` order, printed
    /// next to ours (empty for the rows that have none).
    references: Vec<f64>,
}

impl Row {
    fn new(target: impl Into<String>, measured: f64, limit: f64, unit: &'static str) -> Row {
        Row {
            target: target.into(),
            measured,
            limit,
            unit,
            at_most: true,
            references: Vec::new(),
        }
    }
}

/// Prints one line of the final table.
fn print_row(r: &Row) {
    let pass = if r.at_most {
        r.measured <= r.limit
    } else {
        r.measured >= r.limit
    };
    let fmt = |v: f64| {
        if v >= 100.0 {
            format!("{v:.0} {}", r.unit)
        } else {
            format!("{v:.2} {}", r.unit)
        }
    };
    print!(
        "| {} | {} | {}{} | {:.2} | {} |",
        r.target,
        fmt(r.measured),
        if r.at_most { "<= " } else { ">= " },
        fmt(r.limit),
        r.measured / r.limit,
        if pass { "pass" } else { "FAIL" }
    );
    for k in 0..pylib::REFERENCES.len() {
        match r.references.get(k) {
            Some(&ms) => print!(" {} ({:.2}x) |", fmt(ms), r.measured / ms),
            None => print!(" |"),
        }
    }
    println!();
}

/// `deepstack-bench recent-faces [--repeat N]`: only what keeping recent faces costs
/// recognize (the `targets` row), without the references.
pub fn run_recent_faces(args: &[String]) -> Result<(), Error> {
    let repeat = match args {
        [] => 20,
        [flag, n] if flag == "--repeat" => n.parse::<usize>()?.max(1),
        _ => return Err(format!("unknown arguments {args:?}").into()),
    };
    let bin = http::daemon_binary()?;
    let group = std::fs::read(testdata()?.join("group_1280x720.jpg"))?;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let work = workspace().join("target/bench-recent-faces");
    std::fs::create_dir_all(&work)?;
    let (on, off) = recent_faces_cost(&bin, &work, threads, &group, repeat)?;
    print_row(&Row::new(RECENT_FACES_ROW, on - off, 2.0, "ms"));
    Ok(())
}

/// The `targets` row of issue 18's latency target.
const RECENT_FACES_ROW: &str = "recognize 720p: recent faces on minus off (<= +2 ms)";

/// A photo of `PHOTO_SET`, loaded.
struct SetPhoto {
    path: PathBuf,
    bytes: Vec<u8>,
    faces: usize,
    label: String,
}

pub fn run(args: &[String]) -> Result<(), Error> {
    let mut opts = Opts {
        repeat: 20,
        duration: Duration::from_secs(10),
        load: Duration::from_secs(20),
    };
    let mut args = args.iter();
    while let Some(a) = args.next() {
        let mut value = || -> Result<u64, Error> {
            Ok(args.next().ok_or(format!("{a} takes a number"))?.parse()?)
        };
        match a.as_str() {
            "--repeat" => opts.repeat = value()?.max(1) as usize,
            "--duration" => opts.duration = Duration::from_secs(value()?.max(1)),
            "--load" => opts.load = Duration::from_secs(value()?.max(1)),
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    let started = Instant::now();
    let bin = http::daemon_binary()?;
    let data = testdata()?;
    let group_path = data.join("group_1280x720.jpg");
    let big_path = data.join(BIG_PHOTO);
    let group = std::fs::read(&group_path)?;
    let big = std::fs::read(&big_path)?;
    let one = std::fs::read(data.join("obama.jpg"))?;
    let set: Vec<SetPhoto> = PHOTO_SET
        .iter()
        .map(|p| -> Result<SetPhoto, Error> {
            let path = data.join(p.file);
            let (w, h) = image::image_dimensions(&path)?;
            Ok(SetPhoto {
                bytes: std::fs::read(&path)?,
                path,
                faces: p.faces,
                label: format!(
                    "{} ({} face{}, {w}x{h}, {:.1} MP)",
                    p.file,
                    p.faces,
                    if p.faces == 1 { "" } else { "s" },
                    f64::from(w) * f64::from(h) / 1e6
                ),
            })
        })
        .collect::<Result<_, _>>()?;
    let group_in_set = set
        .iter()
        .position(|p| p.path == group_path)
        .ok_or("the photo set has no group photo")?;
    // As shipped: THREADCOUNT defaults to the cores the daemon may use.
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let work = workspace().join("target/bench-targets");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work)?;
    let (cpu, cores) = machine();
    let load_start = load_average();
    println!(
        "deepstack-bench targets: {cpu}, {cores} cores, {}",
        std::env::consts::ARCH
    );
    println!(
        "daemon: {} (Medium, THREADCOUNT={threads} as shipped, and 1), repeat {}",
        bin.display(),
        opts.repeat
    );
    println!("idle cores: {}", idle_state());
    let mut rows = Vec::new();

    // The references first, with no daemon running.
    let paths: Vec<&Path> = set.iter().map(|p| p.path.as_path()).collect();
    let refs = pylib::references(Mode::Medium.input_size(), opts.repeat, &paths)?;
    // reference_ms[photo][reference]: decode to embeddings, median ms.
    let mut reference_ms = Vec::new();
    for p in &set {
        let mut row = Vec::new();
        for name in pylib::REFERENCES {
            let r = pylib::find(&refs, name, &p.path)
                .ok_or_else(|| format!("ort_pipeline.py did not report {name} on {}", p.label))?;
            if r.faces != p.faces {
                println!(
                    "(!) {name} found {} faces in {}, expected {}",
                    r.faces, p.label, p.faces
                );
            }
            row.push(r.ms[4]);
        }
        reference_ms.push(row);
    }
    for name in pylib::REFERENCES {
        println!("{}, decode to embeddings:", pylib::engine(&refs, name));
        for p in &set {
            if let Some(r) = pylib::find(&refs, name, &p.path) {
                println!(
                    "  {}: total {:.1} ms (decode {:.1}, detect {:.1}, align {:.1}, embed {:.1} per face), {} faces",
                    p.label, r.ms[4], r.ms[0], r.ms[1], r.ms[2], r.embed_per_face, r.faces
                );
            }
        }
    }
    let dlib = pylib::install(
        pylib::DLIB_REQS,
        pylib::DLIB_DIR,
        &["--no-deps", "--only-binary", "dlib-bin"],
    )
    .and_then(|dir| {
        let dlib_repeat = (opts.repeat / 2).max(3).to_string();
        pylib::run_script(
            "dlib_pipeline.py",
            &dir,
            &[
                "--repeat".into(),
                dlib_repeat,
                group_path.display().to_string(),
            ],
        )
    });
    let dlib_ms = match &dlib {
        Ok(lines) => {
            let ms = lines[0]["ms"]["total"]
                .as_f64()
                .ok_or("no total from dlib_pipeline.py")?;
            println!("face_recognition 1.3 / dlib 20 (HOG + ResNet, 1 thread), 720p: {ms:.1} ms, {} faces", lines[0]["faces"]);
            Some(ms)
        }
        Err(e) => {
            println!("face_recognition/dlib reference NOT measured: {e}");
            None
        }
    };

    // A small gallery: register timing on an empty one, then the photo's 4 people.
    let pipeline = Pipeline::load(ModelFiles::embedded(), Mode::Medium)?;
    let daemon = Daemon::start(
        &bin,
        &work.join("gallery-small"),
        threads,
        &work.join("small.log"),
    )?;
    let small_ready = rss::status_mb(daemon.pid(), "VmRSS").ok_or("no VmRSS")?;
    register_people(&daemon, &pipeline, &group)?;
    // The per-photo rows' reference is measured again, in turns with the daemon.
    let mut server = ReferenceServer::start(Mode::Medium.input_size(), &work.join("ort.log"))?;
    let (shipped, shipped_ort): (Vec<Spread>, Vec<Spread>) = set
        .iter()
        .map(|p| alongside(&daemon, &mut server, p, opts.repeat))
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .unzip();
    let r720 = shipped[group_in_set].median;
    let r12 = recognize_ms(&daemon, &big, opts.repeat, 1)?;
    println!(
        "recognize over HTTP, 1 client, THREADCOUNT={threads} (median, p10, p90 of {}):",
        opts.repeat
    );
    for ((p, spread), ort) in set.iter().zip(&shipped).zip(&shipped_ort) {
        println!("  {}: {spread}", p.label);
        println!("    onnxruntime in turns with it: {ort}");
    }
    println!("  {BIG_PHOTO} (12 MP): {r12}");
    if let Some(dlib_ms) = dlib_ms {
        rows.push(Row::new(
            "recognize 720p vs dlib (<= 0.1x)",
            r720,
            0.1 * dlib_ms,
            "ms",
        ));
    }
    rows.push(Row::new(
        "recognize 12 MP vs 720p (<= 2x)",
        r12.median,
        2.0 * r720,
        "ms",
    ));
    let small_idle = rss::status_mb(daemon.pid(), "VmRSS").ok_or("no VmRSS")?;
    println!("resident after those, 4-user gallery: {small_idle:.1} MiB");
    let request = http::request(daemon.port, RECOGNIZE, &[], Some(&group));
    let one_client = throughput(
        daemon.port,
        std::slice::from_ref(&request),
        1,
        opts.duration,
    )?;
    let two_clients = throughput(daemon.port, &[request], 2, opts.duration)?;
    drop(daemon);
    let (recent_on, recent_off) = recent_faces_cost(&bin, &work, threads, &group, opts.repeat)?;
    rows.push(Row::new(
        RECENT_FACES_ROW,
        recent_on - recent_off,
        2.0,
        "ms",
    ));

    // One core: a request alone embeds its faces on the idle inference threads too, so the
    // per-core speed and the scaling from one core to two are measured with THREADCOUNT=1.
    let daemon = Daemon::start(
        &bin,
        &work.join("gallery-small"),
        1,
        &work.join("small-1-thread.log"),
    )?;
    let (per_core, per_core_ort): (Vec<Spread>, Vec<Spread>) = set
        .iter()
        .map(|p| alongside(&daemon, &mut server, p, opts.repeat))
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .unzip();
    drop(server);
    let request = http::request(daemon.port, RECOGNIZE, &[], Some(&group));
    let one_core = throughput(daemon.port, &[request], 1, opts.duration)?;
    drop(daemon);
    println!(
        "recognize over HTTP, 1 client, THREADCOUNT=1 (median, p10, p90 of {}):",
        opts.repeat
    );
    for ((p, spread), ort) in set.iter().zip(&per_core).zip(&per_core_ort) {
        println!("  {}: {spread}", p.label);
        println!("    onnxruntime in turns with it: {ort}");
    }
    println!(
        "throughput 720p: THREADCOUNT=1, 1 client {one_core:.2} req/s; THREADCOUNT={threads}, 1 client {one_client:.2} req/s, 2 clients {two_clients:.2} req/s"
    );
    // Per photo, ours / the FP32 onnxruntime pipeline: per core, then as shipped.
    // The limit is onnxruntime's median in turns with the daemon; OpenCV's, printed next to
    // it, is from the run before the daemons.
    let per_photo = [
        (
            "per core (THREADCOUNT=1)".to_string(),
            &per_core,
            &per_core_ort,
            PER_CORE_VS_ORT,
        ),
        (
            format!("as shipped (THREADCOUNT={threads})"),
            &shipped,
            &shipped_ort,
            SHIPPED_VS_ORT,
        ),
    ];
    for (how, measured, ort, ratio) in per_photo {
        for (i, p) in set.iter().enumerate() {
            rows.push(Row {
                references: vec![ort[i].median, reference_ms[i][1]],
                ..Row::new(
                    format!("recognize {}, {how} vs onnxruntime (<= {ratio}x)", p.label),
                    measured[i].median,
                    ratio * ort[i].median,
                    "ms",
                )
            });
        }
    }
    rows.push(Row {
        at_most: false,
        ..Row::new(
            format!("2 clients on THREADCOUNT={threads} / 1 client on 1 (>= 1.8x)"),
            two_clients / one_core,
            1.8,
            "x",
        )
    });

    // The 100k gallery.
    let big_gallery = gallery_100k(&pipeline, &group)?;
    let (matching, reg_inproc) = in_process(&big_gallery, &work, &pipeline, &one)?;
    println!("matching in-process, 100k samples: {matching:.2} ms per face (median of 200)");
    println!(
        "Gallery::register in-process (1 sample): empty {:.2} ms, 100k {:.2} ms",
        reg_inproc.0, reg_inproc.1
    );
    rows.push(Row::new(
        "matching per face, 100k samples (<= 2 ms)",
        matching,
        2.0,
        "ms",
    ));
    let mut ready = Vec::new();
    for i in 0..3 {
        let d = Daemon::start(
            &bin,
            &big_gallery,
            threads,
            &work.join(format!("start-{i}.log")),
        )?;
        ready.push(d.ready_after.as_secs_f64());
    }
    let ready_s = median(ready.clone());
    println!("start-up to READY, 100k samples: {ready:.2?} s, median {ready_s:.2} s");
    rows.push(Row::new(
        "start-up to READY, 100k samples (<= 1.5 s)",
        ready_s,
        1.5,
        "s",
    ));

    let daemon = Daemon::start(&bin, &big_gallery, threads, &work.join("big.log"))?;
    let big_ready = rss::status_mb(daemon.pid(), "VmRSS").ok_or("no VmRSS")?;
    println!(
        "resident at READY (models loaded, no request yet): 4-user gallery {small_ready:.1} MiB, 100k gallery {big_ready:.1} MiB"
    );
    for _ in 0..3 {
        daemon.post(RECOGNIZE, &[], Some(&group))?;
    }
    // Idle: no request for 5 s (the daemon gives its heap back after 2 s idle, see memory.rs).
    let busy = rss::status_mb(daemon.pid(), "VmRSS").ok_or("no VmRSS")?;
    std::thread::sleep(Duration::from_secs(5));
    let idle = rss::status_mb(daemon.pid(), "VmRSS").ok_or("no VmRSS")?;
    println!(
        "resident right after 3 recognize {busy:.1} MiB; idle (5 s later), 100k samples: {idle:.1} MiB"
    );
    rows.push(Row::new(
        "idle RSS, 100k samples (<= 80 MB)",
        idle,
        80.0,
        "MiB",
    ));
    // Register on an empty gallery beside the 100k one, in turns: both in the same minutes.
    let empty = Daemon::start(
        &bin,
        &fresh_dir(&work.join("gallery-empty"))?,
        threads,
        &work.join("empty.log"),
    )?;
    let [register_empty, register_big] = register_ms([&empty, &daemon], &one, opts.repeat)?;
    drop(empty);
    println!(
        "register over HTTP, in turns, empty gallery / 100k gallery: {register_empty:.1} / {register_big:.1} ms (median)"
    );
    rows.push(Row::new(
        "register 100k / empty gallery (O(1): <= 1.2x)",
        register_big / register_empty,
        O1_THRESHOLD,
        "x",
    ));
    let reset = rss::reset_peak(daemon.pid());
    let mixed = [
        http::request(daemon.port, RECOGNIZE, &[], Some(&group)),
        http::request(daemon.port, RECOGNIZE, &[], Some(&big)),
    ];
    let rate = throughput(daemon.port, &mixed, 2, opts.load)?;
    let peak = rss::status_mb(daemon.pid(), "VmHWM").ok_or("no VmHWM")?;
    let after = rss::status_mb(daemon.pid(), "VmRSS").ok_or("no VmRSS")?;
    println!(
        "load {}s, 2 clients, 720p + 12 MP mixed: {rate:.2} req/s, peak resident {peak:.1} MiB{}, {after:.1} MiB after",
        opts.load.as_secs(),
        if reset { " (VmHWM reset before the load)" } else { " (VmHWM since start: clear_refs refused)" }
    );
    rows.push(Row::new(
        "peak RSS under load, 100k samples (<= 150 MB)",
        peak,
        150.0,
        "MiB",
    ));
    drop(daemon);

    println!(
        "\n{cpu}, {cores} cores, load average at the start {load_start}, at the end {}; targets took {:.0} s\n",
        load_average(),
        started.elapsed().as_secs_f64()
    );
    for name in pylib::REFERENCES {
        println!("{name}: {}", pylib::engine(&refs, name));
    }
    println!(
        "(ratio: measured / target value, <= 1 passes an at-most target; the reference columns: their decode-to-embeddings median and ours / theirs)\n"
    );
    print!("| target | measured | target value | ratio | result |");
    for name in pylib::REFERENCES {
        print!(" {name} |");
    }
    println!();
    println!(
        "| --- | --- | --- | --- | --- |{}",
        " --- |".repeat(pylib::REFERENCES.len())
    );
    for r in &rows {
        print_row(r);
    }
    if dlib_ms.is_none() {
        println!(
            "| recognize 720p vs dlib (<= 0.1x) | not measured | | | FAIL |{}",
            " |".repeat(pylib::REFERENCES.len())
        );
    }
    Ok(())
}

/// The 1-minute load average: other work on the machine skews the absolute times.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|t| t.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".into())
}

/// How an idle core waits here: the cpuidle driver and, under a hypervisor's `haltpoll`, how
/// long a guest polls before it halts its virtual CPU and hands it back to the host. At 0 a
/// core left idle may take milliseconds to run again, and a lone request that shares its
/// work with it waits (BENCHMARKS.md, Last results, 2026-12-05 night).
fn idle_state() -> String {
    let read = |path: &str| {
        std::fs::read_to_string(path)
            .ok()
            .map(|t| t.trim().to_owned())
    };
    let driver = read("/sys/devices/system/cpu/cpuidle/current_driver");
    let poll = read("/sys/module/haltpoll/parameters/guest_halt_poll_ns");
    match (driver, poll) {
        (Some(d), Some(ns)) if d == "haltpoll" => {
            format!("cpuidle haltpoll, guest_halt_poll_ns {ns}")
        }
        (Some(d), _) => format!("cpuidle {d}"),
        (None, _) => "cpuidle not reported".into(),
    }
}

/// CPU model and logical cores, from /proc/cpuinfo.
fn machine() -> (String, usize) {
    let text = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = text
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or("unknown CPU".to_owned(), |(_, v)| v.trim().to_owned());
    let cores = text.lines().filter(|l| l.starts_with("processor")).count();
    (model, cores)
}

/// Milliseconds of one request repeated: the median, which the targets use, and the tenth
/// fastest and slowest, printed so that a run shows when its times split in two (a lone
/// request's second core slow to wake: BENCHMARKS.md, Last results, 2026-12-05 night).
#[derive(Debug, Clone, Copy)]
struct Spread {
    median: f64,
    p10: f64,
    p90: f64,
    /// The medians of the daemon's own stage times for those requests (queue, decode,
    /// detect, embed, ms), from its log.
    in_daemon: Option<[f64; 4]>,
}

impl Spread {
    fn of(mut v: Vec<f64>) -> Spread {
        v.sort_by(f64::total_cmp);
        let at = |q: usize| v[(v.len() * q / 10).min(v.len() - 1)];
        Spread {
            median: at(5),
            p10: at(1),
            p90: at(9),
            in_daemon: None,
        }
    }

    /// With the medians of the daemon's logged stage times of the same requests.
    fn with_stages(self, stages: Option<Vec<LoggedStages>>) -> Spread {
        let in_daemon = stages
            .filter(|s| !s.is_empty())
            .map(|s| std::array::from_fn(|i| crate::median(s.iter().map(|r| r[i]).collect())));
        Spread { in_daemon, ..self }
    }
}

impl std::fmt::Display for Spread {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:.1} ms (p10 {:.1}, p90 {:.1})",
            self.median, self.p10, self.p90
        )?;
        if let Some([queue, decode, detect, embed]) = self.in_daemon {
            // Medians do not add up exactly: the rest is an estimate of the HTTP layer's part
            // (upload, form, hand-offs, matching, answer).
            let rest = self.median - (queue + decode + detect + embed);
            write!(
                f,
                "; daemon's log: queue {queue:.2}, decode {decode:.2}, detect {detect:.2}, embed {embed:.2}, the rest ~{rest:.2} ms"
            )?;
        }
        Ok(())
    }
}

/// Recognize over HTTP, sequential, one client, after one warm-up; checks that `faces` faces
/// come back.
fn recognize_ms(d: &Daemon, photo: &[u8], repeat: usize, faces: usize) -> Result<Spread, Error> {
    let (times, stages) = recognize_times(d, photo, repeat, faces)?;
    Ok(Spread::of(times).with_stages(stages))
}

/// The times of [`recognize_ms`], ms, and the daemon's logged stage times of those requests.
fn recognize_times(
    d: &Daemon,
    photo: &[u8],
    repeat: usize,
    faces: usize,
) -> Result<(Vec<f64>, Option<Vec<LoggedStages>>), Error> {
    let request = http::request(d.port, RECOGNIZE, &[], Some(photo));
    let answer = http::send(d.port, &request)?;
    let found = answer["predictions"].as_array().map_or(0, Vec::len);
    if found != faces {
        return Err(format!("recognize found {found} faces, expected {faces}: {answer}").into());
    }
    let mut v = Vec::new();
    for _ in 0..repeat {
        let t = Instant::now();
        http::send(d.port, &request)?;
        v.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    Ok((v, d.logged_stages(RECOGNIZE, repeat)))
}

/// Rounds of [`alongside`]: each side's runs of a photo are split into this many blocks.
const ROUNDS: usize = 4;

/// Recognize of `photo` over HTTP (as [`recognize_ms`]) and the FP32 onnxruntime pipeline on
/// it, in [`ROUNDS`] alternating blocks of `repeat / ROUNDS` runs (each after one unmeasured
/// run; which side goes first alternates too), so that both are measured in the same minutes
/// of the machine. Ours, and the reference's totals.
fn alongside(
    d: &Daemon,
    server: &mut ReferenceServer,
    photo: &SetPhoto,
    repeat: usize,
) -> Result<(Spread, Spread), Error> {
    let block = repeat.div_ceil(ROUNDS);
    let (mut ours, mut stages, mut reference) = (Vec::new(), Some(Vec::new()), Vec::new());
    for round in 0..ROUNDS {
        for ours_now in [round % 2 == 1, round % 2 == 0] {
            if ours_now {
                let (times, logged) = recognize_times(d, &photo.bytes, block, photo.faces)?;
                ours.extend(times);
                stages = stages.zip(logged).map(|(mut all, new)| {
                    all.extend(new);
                    all
                });
            } else {
                let (r, totals) = server.measure(pylib::REFERENCES[0], &photo.path, block)?;
                if r.faces != photo.faces {
                    return Err(format!(
                        "{} found {} faces in {}, expected {}",
                        r.reference, r.faces, photo.label, photo.faces
                    )
                    .into());
                }
                reference.extend(totals);
            }
        }
    }
    Ok((Spread::of(ours).with_stages(stages), Spread::of(reference)))
}

/// Median recognize ms of the 4-face photo from a daemon that keeps recent faces (the
/// default) and one that does not, side by side, requests alternating. Both have an empty
/// gallery, so every face is a stranger and is grouped; the keeping one is first filled to
/// its RECENT_FACES_MAX (2000 by default), so that every batch also prunes: the steady state
/// of a camera that has run for days.
fn recent_faces_cost(
    bin: &Path,
    work: &Path,
    threads: usize,
    group: &[u8],
    repeat: usize,
) -> Result<(f64, f64), Error> {
    let empty = |name: &str| fresh_dir(&work.join(name));
    let on = Daemon::start(
        bin,
        &empty("recent-on")?,
        threads,
        &work.join("recent-on.log"),
    )?;
    let off = Daemon::start_with(
        bin,
        &empty("recent-off")?,
        threads,
        &work.join("recent-off.log"),
        &[("RECENT_FACES_HOURS", "0")],
    )?;
    let max_faces = deepstackd::config::DEFAULT_RECENT_FACES_MAX;
    let request = http::request(on.port, RECOGNIZE, &[], Some(group));
    let started = Instant::now();
    while on.get("/v1/gallery/recent?limit=1")?["total"].as_u64() < Some(max_faces as u64) {
        for _ in 0..20 {
            http::send(on.port, &request)?;
        }
        if started.elapsed() > Duration::from_secs(600) {
            return Err("recent faces never reached RECENT_FACES_MAX".into());
        }
    }
    let filled_in = started.elapsed().as_secs_f64();
    let (mut on_ms, mut off_ms) = (Vec::new(), Vec::new());
    for i in 0..=2 * repeat {
        for (d, v) in [(&on, &mut on_ms), (&off, &mut off_ms)] {
            let request = http::request(d.port, RECOGNIZE, &[], Some(group));
            let t = Instant::now();
            http::send(d.port, &request)?;
            if i > 0 {
                v.push(t.elapsed().as_secs_f64() * 1000.0);
            }
        }
    }
    let strangers = on.get("/v1/gallery/strangers?limit=1")?["total"].clone();
    let (on_ms, off_ms) = (median(on_ms), median(off_ms));
    println!(
        "recent faces: filled to {max_faces} in {:.0} s, {strangers} stranger groups at the end",
        filled_in
    );
    println!(
        "recognize 720p, 4 strangers, recent faces kept (store full, grouping) / not \
         (RECENT_FACES_HOURS=0), alternating, median of {}: {on_ms:.2} / {off_ms:.2} ms",
        2 * repeat
    );
    Ok((on_ms, off_ms))
}

/// Median ms of registering a one-face photo (`bench-probe`, deleted afterwards) on each of
/// two daemons, after one unmeasured register, requests alternating (which goes first too).
fn register_ms(daemons: [&Daemon; 2], photo: &[u8], repeat: usize) -> Result<[f64; 2], Error> {
    let requests =
        daemons.map(|d| http::request(d.port, REGISTER, &[("userid", "bench-probe")], Some(photo)));
    let mut times = [Vec::new(), Vec::new()];
    for i in 0..=repeat {
        let order = if i % 2 == 0 { [0, 1] } else { [1, 0] };
        for k in order {
            let t = Instant::now();
            http::send(daemons[k].port, &requests[k])?;
            if i > 0 {
                times[k].push(t.elapsed().as_secs_f64() * 1000.0);
            }
        }
    }
    for d in daemons {
        d.post(DELETE, &[("userid", "bench-probe")], None)?;
    }
    Ok(times.map(median))
}

/// `dir`, emptied.
fn fresh_dir(dir: &Path) -> Result<PathBuf, Error> {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir)?;
    Ok(dir.to_owned())
}

/// Registers each face of `group` as `person-N`, from a crop of the photo around that face.
fn register_people(d: &Daemon, p: &Pipeline, group: &[u8]) -> Result<(), Error> {
    // Full scale: the crops are cut in the photo's own pixels.
    let photo = Photo::from(decode::decode(group, DecodeLimits::default())?);
    let faces = p.detect(&photo, detection_score_for(DEFAULT_DETECTION_CONFIDENCE))?;
    let img = photo.pixels();
    for (i, f) in faces.iter().enumerate() {
        let b = f.bbox;
        let (w, h) = (b.x_max - b.x_min, b.y_max - b.y_min);
        let x0 = (b.x_min - 0.4 * w).max(0.0) as u32;
        let y0 = (b.y_min - 0.4 * h).max(0.0) as u32;
        let x1 = ((b.x_max + 0.4 * w) as u32).min(img.width());
        let y1 = ((b.y_max + 0.4 * h) as u32).min(img.height());
        let crop = image::imageops::crop_imm(img, x0, y0, x1 - x0, y1 - y0).to_image();
        let userid = format!("person-{i}");
        d.post(REGISTER, &[("userid", &userid)], Some(&jpeg(&crop)?))
            .map_err(|e| format!("register {userid}: {e}"))?;
    }
    Ok(())
}

fn jpeg(img: &image::RgbImage) -> Result<Vec<u8>, Error> {
    let mut out = Cursor::new(Vec::new());
    JpegEncoder::new_with_quality(&mut out, 90).encode_image(img)?;
    Ok(out.into_inner())
}

/// Requests per second of `clients` concurrent clients for `duration`, client k sending
/// `requests[k % len]`, then the next one, in turn.
fn throughput(
    port: u16,
    requests: &[Vec<u8>],
    clients: usize,
    duration: Duration,
) -> Result<f64, Error> {
    let start = Instant::now();
    let counts: Vec<Result<usize, String>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..clients)
            .map(|k| {
                s.spawn(move || {
                    let mut n = 0;
                    while start.elapsed() < duration {
                        http::send(port, &requests[(k + n) % requests.len()])
                            .map_err(|e| e.to_string())?;
                        n += 1;
                    }
                    Ok(n)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err("client panicked".into())))
            .collect()
    });
    let elapsed = start.elapsed().as_secs_f64();
    let mut total = 0;
    for c in counts {
        total += c?;
    }
    Ok(total as f64 / elapsed)
}

/// Tiny deterministic generator (xorshift64*), for the random embeddings.
struct Rng(u64);

impl Rng {
    fn next_f32(&mut self) -> f32 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let x = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D);
        (x >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    }

    fn unit(&mut self) -> Vec<f32> {
        let v: Vec<f32> = (0..EMBEDDING_DIM).map(|_| self.next_f32()).collect();
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.into_iter().map(|x| x / norm).collect()
    }
}

/// `target/bench-gallery-100k/`: 1,000 users x 100 samples, random unit embeddings and the
/// real aligned JPEG crops of the group photo's faces; built once (a `.complete` stamp).
pub fn gallery_100k(p: &Pipeline, group: &[u8]) -> Result<PathBuf, Error> {
    let dir = workspace().join("target/bench-gallery-100k");
    let stamp = dir.join(".complete");
    if stamp.exists() {
        return Ok(dir);
    }
    let _ = std::fs::remove_dir_all(&dir);
    let t = Instant::now();
    let img = p.decode(group, DecodeLimits::default())?;
    let faces = p.detect(&img, detection_score_for(DEFAULT_DETECTION_CONFIDENCE))?;
    let crops: Vec<Vec<u8>> = p
        .embed(&img, &faces)?
        .iter()
        .map(|f| jpeg(&f.crop))
        .collect::<Result<_, _>>()?;
    let model = p.models().recognizer.sha256.clone();
    let gallery = Gallery::open(&dir)?;
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for u in 0..USERS {
        let samples = (0..SAMPLES_PER_USER)
            .map(|s| NewSample {
                embedding: rng.unit(),
                model: model.clone(),
                crop: crops[(u + s) % crops.len()].clone(),
                source: "image".into(),
                det_score: 0.9,
                quality: None,
                negative: false,
            })
            .collect();
        gallery.register(&format!("user-{u:04}"), samples)?;
    }
    drop(gallery);
    std::fs::write(&stamp, b"")?;
    println!(
        "built {} ({USERS} users x {SAMPLES_PER_USER} samples) in {:.0} s",
        dir.display(),
        t.elapsed().as_secs_f64()
    );
    Ok(dir)
}

/// Matching per face on the 100k gallery (median ms over 200 random unit queries) and
/// `Gallery::register` of one sample on an empty gallery vs the 100k one (median ms each).
fn in_process(
    big: &Path,
    work: &Path,
    p: &Pipeline,
    one: &[u8],
) -> Result<(f64, (f64, f64)), Error> {
    let gallery = Gallery::open(big)?;
    let (_, samples) = gallery.stats();
    if samples != SAMPLES_100K {
        return Err(format!(
            "{} has {samples} samples; remove it to rebuild",
            big.display()
        )
        .into());
    }
    let matching = matching_median(&gallery);
    let sample = probe_sample(p, one)?;
    let on_big = register_median(&gallery, &sample, 20)?;
    drop(gallery);
    let empty = Gallery::open(&work.join("gallery-empty"))?;
    let on_empty = register_median(&empty, &sample, 20)?;
    Ok((matching, (on_empty, on_big)))
}

/// Median ms of matching one face against `gallery` over 200 random unit queries, at the
/// cosine recognize asks for at DeepStack's default confidence 0.67.
pub fn matching_median(gallery: &Gallery) -> f64 {
    let mut rng = Rng(42);
    let min_cosine = recognition_cosine_for(DEFAULT_RECOGNITION_CONFIDENCE, &gallery.enrolment());
    let mut v = Vec::new();
    for _ in 0..200 {
        let q = rng.unit();
        let t = Instant::now();
        std::hint::black_box(gallery.best_matches(&q, min_cosine, 4));
        v.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    median(v)
}

/// The first face of `photo` as a sample to register, as the register route makes it.
pub fn probe_sample(p: &Pipeline, photo: &[u8]) -> Result<NewSample, Error> {
    let img = p.decode(photo, DecodeLimits::default())?;
    let faces = p.detect(&img, detection_score_for(DEFAULT_DETECTION_CONFIDENCE))?;
    let face = p.embed(&img, &faces[..1])?.remove(0);
    Ok(NewSample {
        embedding: face.embedding.0,
        model: p.models().recognizer.sha256.clone(),
        crop: jpeg(&face.crop)?,
        source: "image".into(),
        det_score: 0.9,
        quality: None,
        negative: false,
    })
}

/// Median ms of `Gallery::register` of `sample` under one userid, `times` times (the user is
/// deleted afterwards).
pub fn register_median(g: &Gallery, sample: &NewSample, times: usize) -> Result<f64, Error> {
    let mut v = Vec::new();
    for _ in 0..times {
        let t = Instant::now();
        g.register("bench-probe", vec![sample.clone()])?;
        v.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    g.delete_user("bench-probe")?;
    Ok(median(v))
}
