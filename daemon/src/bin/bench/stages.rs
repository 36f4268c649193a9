//! `deepstack-bench stages` (the default): per-stage latency of the vision pipeline, in-process,
//! against onnxruntime.
//!
//! ```text
//! cargo run --release -p deepstackd --bin deepstack-bench [-- stages] [--repeat 10] [PHOTO...]
//! ```
//! Default photos: `target/testdata/group_1280x720.jpg` (4 faces) and `obama_12mp.jpg`
//! (4000x3000), made by `daemon/tests/data/setup.py`. For each photo it prints the median
//! milliseconds of decode, detect (every mode), align and embed (per face), then runs
//! `daemon/benches/ort_pipeline.py` (onnxruntime, 1 thread, same ONNX files, OpenCV for
//! decode/resize/warp) on the same photos in the same run and prints tract/ORT per stage.

use std::path::{Path, PathBuf};
use std::time::Instant;

use deepstackd::vision::calibration::{detection_score_for, DEFAULT_DETECTION_CONFIDENCE};
use deepstackd::vision::{align, DecodeLimits, Mode, ModelFiles, Photo, Pipeline};

use crate::{pylib, testdata, time, Error};

#[derive(Default)]
struct Stages {
    decode: f64,
    detect: f64,
    align: f64,
    embed: f64,
    faces: usize,
}

/// `deepstack-bench [stages] [--repeat N] [PHOTO...]`.
pub fn run(args: &[String]) -> Result<(), Error> {
    let mut repeat = 10;
    let mut photos = Vec::new();
    let mut args = args.iter();
    while let Some(a) = args.next() {
        match a.as_str() {
            "--repeat" => repeat = args.next().ok_or("--repeat takes a number")?.parse()?,
            _ => photos.push(PathBuf::from(a)),
        }
    }
    if photos.is_empty() {
        let dir = testdata()?;
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
        let (width, height) = img.dimensions();
        println!("\n{} ({width}x{height})", path.display());
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
                        .map(|f| align::align(img.pixels(), &f.scaled(1.0 / img.scale())))
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
    let photo = p.decode(&std::fs::read(group)?, DecodeLimits::default())?;
    let min_score = detection_score_for(DEFAULT_DETECTION_CONFIDENCE);
    let faces = p.detect(&photo, min_score)?;
    let img = photo.pixels();
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
            img,
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
        let frame = Photo::from(frame);
        for pipeline in pipelines {
            let found = pipeline.detect(&frame, min_score)?.len();
            print!("  {:>12}", format!("{found}/{placed}"));
        }
        println!();
    }
    Ok(())
}

fn compare_with_onnxruntime(ours: &[(PathBuf, Stages)], repeat: usize) -> Result<(), Error> {
    let pylib = pylib::install(pylib::ORT_REQS, pylib::ORT_DIR, &[])?;
    let mut args = vec![
        "--size".to_owned(),
        Mode::Medium.input_size().to_string(),
        "--repeat".to_owned(),
        repeat.to_string(),
    ];
    args.extend(ours.iter().map(|(p, _)| p.display().to_string()));
    let lines = pylib::run_script("ort_pipeline.py", &pylib, &args)?;
    println!("\ntract / onnxruntime (Medium, 1 thread; ratio < 1 means tract is faster)");
    println!(
        "  {:<22} {:>16} {:>16} {:>16} {:>16} {:>16}",
        "photo", "decode", "detect", "align", "embed", "total"
    );
    for (line, (path, s)) in lines.iter().zip(ours) {
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
        if line["faces"].as_u64() != Some(s.faces as u64) {
            println!(
                "  (onnxruntime found {} faces, tract {})",
                line["faces"], s.faces
            );
        }
    }
    Ok(())
}

/// The five stage timings of one `ort_pipeline.py` JSON line, in our order.
fn parse_ms(line: &serde_json::Value) -> Result<[f64; 5], Error> {
    let ms = &line["ms"];
    let get = |k: &str| ms[k].as_f64().ok_or_else(|| format!("no {k} in {line}"));
    Ok([
        get("decode")?,
        get("detect")?,
        get("align")?,
        get("embed")?,
        get("total")?,
    ])
}
