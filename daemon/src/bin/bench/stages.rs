//! `deepstack-bench stages` (the default): per-stage latency of the vision pipeline, in-process,
//! against the two references of `daemon/benches/ort_pipeline.py`.
//!
//! ```text
//! cargo run --release -p deepstackd --bin deepstack-bench [-- stages] [--repeat 10] [PHOTO...]
//! ```
//! Default photos: the per-photo set of the targets (`rocket.jpg`, no face; `obama.jpg`, one
//! face, 910x1137; `group_1280x720.jpg`, 4 faces) and `obama_12mp.jpg` (4000x3000), made in
//! `target/testdata` by `daemon/tests/data/setup.py`. For each photo it prints the median
//! milliseconds of decode, detect (every mode), align and embed (per face), then runs
//! `ort_pipeline.py` on the same photos in the same run: onnxruntime (newest, FP32 files
//! folded from our int8 ones, 1 thread, ORT_ENABLE_ALL, OpenCV for decode/resize/warp) and
//! OpenCV's own FaceDetectorYN + FaceRecognizerSF (same FP32 files, 1 thread), and prints
//! ours next to each per stage, with ours / reference.

use std::path::{Path, PathBuf};
use std::time::Instant;

use deepstackd::vision::calibration::{detection_score_for, DEFAULT_DETECTION_CONFIDENCE};
use deepstackd::vision::{align, DecodeLimits, Mode, ModelFiles, Photo, Pipeline};

use crate::{pylib, testdata, time, Error, BIG_PHOTO, PHOTO_SET};

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
            "--repeat" => {
                repeat = args
                    .next()
                    .ok_or("--repeat takes a number")?
                    .parse::<usize>()?
                    .max(1)
            }
            flag if flag.starts_with('-') => return Err(format!("unknown option {flag}").into()),
            _ => photos.push(PathBuf::from(a)),
        }
    }
    if photos.is_empty() {
        let dir = testdata()?;
        photos = PHOTO_SET.iter().map(|p| dir.join(p.file)).collect();
        photos.push(dir.join(BIG_PHOTO));
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
                let embed_ms = if crops.is_empty() {
                    0.0
                } else {
                    time(repeat, || p.embed_crops(&crops)).0
                };
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
    // The photo with the most faces shows how small a face each mode still finds.
    if let Some((path, _)) = medium
        .iter()
        .filter(|(_, s)| s.faces > 0)
        .max_by_key(|(_, s)| s.faces)
    {
        small_faces(&pipelines, path)?;
    }
    compare_with_references(&medium, repeat)
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

/// Ours next to each reference of `ort_pipeline.py`, per photo and stage.
fn compare_with_references(ours: &[(PathBuf, Stages)], repeat: usize) -> Result<(), Error> {
    let paths: Vec<&Path> = ours.iter().map(|(p, _)| p.as_path()).collect();
    let refs = pylib::references(Mode::Medium.input_size(), repeat, &paths)?;
    println!("\nours / references (Medium, 1 thread each; ratio = ours / reference, < 1 means ours is faster)");
    for name in pylib::REFERENCES {
        println!("  {name:<12} {}", pylib::engine(&refs, name));
    }
    for (path, s) in ours {
        let found: Vec<Option<&pylib::RefTimes>> = pylib::REFERENCES
            .iter()
            .map(|r| pylib::find(&refs, r, path))
            .collect();
        let file = path.file_name().unwrap_or_default().to_string_lossy();
        let faces: Vec<String> = pylib::REFERENCES
            .iter()
            .zip(&found)
            .map(|(name, r)| match r {
                Some(r) => format!("{name} {}", r.faces),
                None => format!("{name} -"),
            })
            .collect();
        println!("\n  {file}: faces ours {}, {}", s.faces, faces.join(", "));
        print!("    {:<16} {:>9}", "ms", "ours");
        for name in pylib::REFERENCES {
            print!("  {name:>18}");
        }
        println!();
        let per_face = if s.faces == 0 {
            0.0
        } else {
            s.embed / s.faces as f64
        };
        let mine = [
            s.decode,
            s.detect,
            s.align,
            per_face,
            s.decode + s.detect + s.align + s.embed,
        ];
        for (k, stage) in pylib::STAGES.iter().enumerate() {
            let mine = mine[k];
            print!("    {stage:<16} {mine:>9.1}");
            for r in &found {
                let cell = match r {
                    Some(r) => {
                        let t = r.stages()[k];
                        // No ratio for a stage that did nothing (no face to align or embed).
                        if t >= 0.05 {
                            format!("{t:.1} ({:.2}x)", mine / t)
                        } else {
                            format!("{t:.1} (-)")
                        }
                    }
                    None => "not run".to_owned(),
                };
                print!("  {cell:>18}");
            }
            println!();
        }
    }
    Ok(())
}
