//! `deepstack-bench`: per-stage latency of the vision pipeline, against onnxruntime.
//!
//! ```text
//! cargo run --release -p deepstackd --bin deepstack-bench [-- --repeat 10] [PHOTO...]
//! ```
//! Default photos: `target/testdata/group_1280x720.jpg` (4 faces) and `obama_12mp.jpg`
//! (4000x3000), made by `daemon/tests/data/setup.py`. For each photo it prints the median
//! milliseconds of decode, detect (every mode), align and embed (per face), then runs
//! `daemon/benches/ort_pipeline.py` (onnxruntime, 1 thread, same ONNX files, OpenCV for
//! decode/resize/warp) on the same photos in the same run and prints tract/ORT per stage.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Instant;

use deepstackd::vision::calibration::{detection_score_for, DEFAULT_DETECTION_CONFIDENCE};
use deepstackd::vision::{align, DecodeLimits, Mode, ModelFiles, Pipeline};

type Error = Box<dyn std::error::Error>;

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
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

#[derive(Default)]
struct Stages {
    decode: f64,
    detect: f64,
    align: f64,
    embed: f64,
    faces: usize,
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("deepstack-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), Error> {
    let mut repeat = 10;
    let mut photos = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--repeat" => repeat = args.next().ok_or("--repeat takes a number")?.parse()?,
            "--bench" => {} // passed by `cargo bench`
            _ => photos.push(PathBuf::from(a)),
        }
    }
    if photos.is_empty() {
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
        photos = vec![dir.join("group_1280x720.jpg"), dir.join("obama_12mp.jpg")];
    }
    println!(
        "deepstack-bench: median of {repeat} runs, 1 thread, {}",
        std::env::consts::ARCH
    );
    let t = Instant::now();
    let pipelines: Vec<Pipeline> = Mode::ALL
        .iter()
        .map(|&m| Pipeline::load(ModelFiles::embedded(), m))
        .collect::<Result<_, _>>()?;
    println!(
        "load: {:.0} ms for all three modes ({:.0} ms each)",
        t.elapsed().as_secs_f64() * 1000.0,
        t.elapsed().as_secs_f64() * 1000.0 / 3.0
    );
    let min_score = detection_score_for(DEFAULT_DETECTION_CONFIDENCE);
    let mut medium = Vec::new();
    for path in &photos {
        let bytes = std::fs::read(path)?;
        let p = &pipelines[1];
        let (decode_ms, img) = time(repeat, || p.decode(&bytes, DecodeLimits::default()));
        let img = img?;
        println!("\n{} ({}x{})", path.display(), img.width(), img.height());
        println!("  decode              {decode_ms:8.1} ms");
        let mut stages = Stages {
            decode: decode_ms,
            ..Default::default()
        };
        for (mode, pipeline) in Mode::ALL.iter().zip(&pipelines) {
            let (ms, faces) = time(repeat, || pipeline.detect(&img, min_score));
            let faces = faces?;
            println!(
                "  detect {:<6} ({:>4}) {ms:8.1} ms  {} faces",
                mode.name(),
                mode.input_size(),
                faces.len()
            );
            if *mode == Mode::Medium {
                stages.detect = ms;
                stages.faces = faces.len();
                let (align_ms, crops) = time(repeat, || {
                    faces
                        .iter()
                        .map(|f| align::align(&img, f))
                        .collect::<Vec<_>>()
                });
                let (embed_ms, _) = time(repeat, || p.embed_crops(&crops));
                let n = faces.len().max(1) as f64;
                stages.align = align_ms;
                stages.embed = embed_ms;
                println!("  align               {:8.2} ms per face", align_ms / n);
                println!(
                    "  embed ({} faces)     {:8.1} ms per face",
                    faces.len(),
                    embed_ms / n
                );
            }
        }
        let total = stages.decode + stages.detect + stages.align + stages.embed;
        println!("  total (Medium)      {total:8.1} ms");
        medium.push((path.clone(), stages));
    }
    small_faces(&pipelines, &photos[0])?;
    compare_with_onnxruntime(&medium, repeat)
}

/// How small a face each mode still finds in a 1920x1080 frame: the faces of `group` are
/// scaled so that their boxes are N pixels high and tiled over a grey 1080p frame.
fn small_faces(pipelines: &[Pipeline], group: &Path) -> Result<(), Error> {
    let p = &pipelines[1];
    let img = p.decode(&std::fs::read(group)?, DecodeLimits::default())?;
    let min_score = detection_score_for(DEFAULT_DETECTION_CONFIDENCE);
    let faces = p.detect(&img, min_score)?;
    if faces.is_empty() {
        return Ok(());
    }
    let box_h = faces.iter().map(|f| f.bbox.height()).sum::<f32>() / faces.len() as f32;
    println!(
        "
small faces: found / placed in a 1920x1080 frame, by face box height"
    );
    print!("  {:>6}", "px");
    for mode in Mode::ALL {
        print!(
            "  {:>12}",
            format!("{} ({})", mode.name(), mode.input_size())
        );
    }
    println!();
    for target in [12u32, 16, 20, 24, 32, 48] {
        let scale = target as f32 / box_h;
        let small = image::imageops::resize(
            &img,
            ((img.width() as f32 * scale).round() as u32).max(1),
            ((img.height() as f32 * scale).round() as u32).max(1),
            image::imageops::FilterType::Triangle,
        );
        let mut frame = image::RgbImage::from_pixel(1920, 1080, image::Rgb([110, 110, 110]));
        let mut placed = 0;
        let (sw, sh) = (small.width().max(1) as i64, small.height().max(1) as i64);
        let (cols, rows) = ((1920 / (sw * 2)).clamp(1, 6), (1080 / (sh * 2)).clamp(1, 4));
        for r in 0..rows {
            for c in 0..cols {
                let (x, y) = (c * 1920 / cols + 7 * r, r * 1080 / rows + 5 * c);
                image::imageops::overlay(&mut frame, &small, x, y);
                placed += faces.len();
            }
        }
        print!("  {target:>6}");
        for pipeline in pipelines {
            let found = pipeline.detect(&frame, min_score)?.len();
            print!("  {:>12}", format!("{found}/{placed}"));
        }
        println!();
    }
    Ok(())
}

/// Install the pinned reference packages once, under target/.
fn reference_pylib() -> Result<PathBuf, Error> {
    let dir = workspace().join("target/bench-pylib");
    if !dir.join(".installed").exists() {
        let ok = Command::new("python3")
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "--target",
            ])
            .arg(&dir)
            .arg("-r")
            .arg(workspace().join("daemon/benches/requirements.txt"))
            .status()?
            .success();
        if !ok {
            return Err("pip install of daemon/benches/requirements.txt failed".into());
        }
        std::fs::write(dir.join(".installed"), b"")?;
    }
    Ok(dir)
}

fn compare_with_onnxruntime(ours: &[(PathBuf, Stages)], repeat: usize) -> Result<(), Error> {
    let pylib = reference_pylib()?;
    let out = Command::new("python3")
        .arg(workspace().join("daemon/benches/ort_pipeline.py"))
        .args(["--size", &Mode::Medium.input_size().to_string()])
        .args(["--repeat", &repeat.to_string()])
        .args(ours.iter().map(|(p, _)| p.as_os_str()))
        .env("PYTHONPATH", &pylib)
        .output()?;
    if !out.status.success() {
        return Err(format!(
            "ort_pipeline.py failed: {}",
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    println!("\ntract / onnxruntime (Medium, 1 thread; ratio < 1 means tract is faster)");
    println!(
        "  {:<22} {:>16} {:>16} {:>16} {:>16} {:>16}",
        "photo", "decode", "detect", "align", "embed", "total"
    );
    for (line, (path, s)) in String::from_utf8_lossy(&out.stdout).lines().zip(ours) {
        let reference = parse_ms(line)?;
        let ours = [
            s.decode,
            s.detect,
            s.align,
            s.embed,
            s.decode + s.detect + s.align + s.embed,
        ];
        let cells: Vec<String> = ours
            .iter()
            .zip(reference)
            .map(|(a, b)| format!("{a:.1}/{b:.1}={:.2}", a / b.max(1e-6)))
            .collect();
        let name = Path::new(path)
            .file_name()
            .unwrap_or_default()
            .to_string_lossy();
        println!(
            "  {name:<22} {:>16} {:>16} {:>16} {:>16} {:>16}",
            cells[0], cells[1], cells[2], cells[3], cells[4]
        );
        let faces = line
            .split("\"faces\": ")
            .nth(1)
            .and_then(|r| r.split(',').next());
        if faces != Some(&s.faces.to_string()) {
            println!(
                "  (onnxruntime found {} faces, tract {})",
                faces.unwrap_or("?"),
                s.faces
            );
        }
    }
    Ok(())
}

/// The five stage timings of one `ort_pipeline.py` JSON line, in our order.
fn parse_ms(line: &str) -> Result<[f64; 5], Error> {
    let v: serde_json::Value = serde_json::from_str(line)?;
    let ms = &v["ms"];
    let get = |k: &str| ms[k].as_f64().ok_or_else(|| format!("no {k} in {line}"));
    Ok([
        get("decode")?,
        get("detect")?,
        get("align")?,
        get("embed")?,
        get("total")?,
    ])
}
