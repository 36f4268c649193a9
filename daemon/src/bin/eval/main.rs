//! `deepstack-eval`: accuracy of the vision pipeline on a folder of labelled photos (pairs,
//! rank-1, and the open-set table of `open_set`), and the derivation of the constants in
//! `vision/calibration.rs` from the calibration half of the set's people.
//!
//! ```text
//! deepstack-eval evaluate DIR [--mode Medium] [--negatives DIR] [--embeddings FILE]
//! deepstack-eval calibrate DIR [--negatives DIR] [--embeddings FILE]  # + the constants block
//! deepstack-eval detect FILE...                                    # faces found, one line each
//! ```
//! DIR holds one sub-folder per person (like celeba-dev); the labelled person of a photo is
//! its largest face. `--negatives` is a folder of photos with nobody in them. `--embeddings`
//! keeps the faces found in a file for the next run (`cache`).

mod cache;
mod grouping;
mod negatives;
mod open_set;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use deepstackd::config::DEFAULT_MIN_FACE_QUALITY;
use deepstackd::vision::calibration::{
    self, detection_confidence, recognition_confidence, recognition_cosine_for, Enrolment,
};
use deepstackd::vision::quality::Quality;
use deepstackd::vision::{DecodeLimits, Embedding, Face, Mode, ModelFiles, Pipeline};
use open_set::{LabelledFace, Probe};

/// Detection threshold while collecting faces: low, so that calibration sees the scores of
/// every labelled face, not only those above the current threshold.
const COLLECT_MIN_SCORE: f32 = 0.3;

pub struct Photo {
    person: usize,
    path: PathBuf,
    /// The largest face and its embedding, if any face was found.
    face: Option<(Face, Embedding)>,
    /// That face's registration quality (what MIN_FACE_QUALITY is compared with).
    quality: Option<Quality>,
    /// The largest face of the same photo converted to grayscale (what an IR camera sends).
    gray: Option<(Face, Embedding)>,
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut positional = Vec::new();
    let mut mode = Mode::Medium;
    let mut negatives = None;
    let mut embeddings = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--mode" => match it.next().and_then(|m| Mode::parse(m)) {
                Some(m) => mode = m,
                None => return usage("--mode takes High, Medium or Low"),
            },
            "--negatives" => match it.next() {
                Some(d) => negatives = Some(PathBuf::from(d)),
                None => return usage("--negatives takes a folder"),
            },
            "--embeddings" => match it.next() {
                Some(f) => embeddings = Some(PathBuf::from(f)),
                None => return usage("--embeddings takes a file"),
            },
            "-h" | "--help" => return usage(""),
            _ => positional.push(a.clone()),
        }
    }
    let Some((command, rest)) = positional.split_first() else {
        return usage("");
    };
    let started = Instant::now();
    let pipeline = match Pipeline::load(ModelFiles::embedded(), mode) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("deepstack-eval: {e}");
            return ExitCode::FAILURE;
        }
    };
    eprintln!(
        "models loaded in {} ms (mode {})",
        started.elapsed().as_millis(),
        mode.name()
    );
    let result = match (command.as_str(), rest) {
        ("detect", files) if !files.is_empty() => detect(&pipeline, files),
        ("evaluate" | "calibrate", [dir]) => evaluate(
            &pipeline,
            Path::new(dir),
            negatives.as_deref(),
            embeddings.as_deref(),
            command == "calibrate",
        ),
        _ => return usage("unknown command or wrong arguments"),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("deepstack-eval: {e}");
            ExitCode::FAILURE
        }
    }
}

fn usage(problem: &str) -> ExitCode {
    if !problem.is_empty() {
        eprintln!("deepstack-eval: {problem}");
    }
    eprintln!(
        "usage: deepstack-eval [--mode High|Medium|Low] [--negatives DIR] [--embeddings FILE] evaluate|calibrate DIR\n       deepstack-eval [--mode M] detect FILE..."
    );
    if problem.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    }
}

type Error = Box<dyn std::error::Error>;

fn detect(pipeline: &Pipeline, files: &[String]) -> Result<(), Error> {
    for file in files {
        let img = pipeline.decode(&std::fs::read(file)?, DecodeLimits::default())?;
        let t = Instant::now();
        let faces = pipeline.detect(&img, COLLECT_MIN_SCORE)?;
        println!(
            "{file}: {}x{}, {} faces ({} ms)",
            img.dimensions().0,
            img.dimensions().1,
            faces.len(),
            t.elapsed().as_millis()
        );
        for f in faces {
            let b = f.bbox;
            let marks: Vec<String> = f
                .landmarks
                .iter()
                .map(|p| format!("{:.1} {:.1}", p[0], p[1]))
                .collect();
            println!(
                "  score {:.3} box ({:.0},{:.0})-({:.0},{:.0}) landmarks {}",
                f.score,
                b.x_min,
                b.y_min,
                b.x_max,
                b.y_max,
                marks.join(" ")
            );
        }
    }
    Ok(())
}

/// Photos of `dir/<person>/*`, person folders and files in name order.
/// Person names, and (person index, photo path) pairs.
type People = (Vec<String>, Vec<(usize, PathBuf)>);

fn list_people(dir: &Path) -> Result<People, Error> {
    let mut people: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    people.sort();
    let mut photos = Vec::new();
    for (i, p) in people.iter().enumerate() {
        let mut files = list_files(p)?;
        files.sort();
        photos.extend(files.into_iter().map(|f| (i, f)));
    }
    let names = people
        .iter()
        .map(|p| {
            p.file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    Ok((names, photos))
}

fn list_files(dir: &Path) -> Result<Vec<PathBuf>, Error> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    Ok(files)
}

/// The largest face of a photo, its embedding and its registration quality.
fn largest_face(
    pipeline: &Pipeline,
    img: &deepstackd::vision::Photo,
) -> Result<Option<(Face, Embedding, Quality)>, Error> {
    let faces = pipeline.detect(img, COLLECT_MIN_SCORE)?;
    let Some(face) = faces
        .into_iter()
        .max_by(|a, b| a.bbox.area().total_cmp(&b.bbox.area()))
    else {
        return Ok(None);
    };
    let embedded = pipeline.embed(img, &[face])?;
    Ok(embedded.into_iter().next().map(|e| {
        let quality = Quality::measure(&e.face, &e.crop, detection_confidence(e.face.score));
        (e.face, e.embedding, quality)
    }))
}

/// The photo at `path` and its grayscale copy (luma in all three channels, as a camera's
/// night mode or a grey JPEG decodes).
fn colour_and_gray(
    pipeline: &Pipeline,
    path: &Path,
) -> Result<(deepstackd::vision::Photo, deepstackd::vision::Photo), Error> {
    let img = pipeline.decode(&std::fs::read(path)?, DecodeLimits::default())?;
    let luma = image::imageops::grayscale(img.pixels());
    let gray = image::DynamicImage::ImageLuma8(luma).to_rgb8();
    Ok((img, deepstackd::vision::Photo::from(gray)))
}

/// Run `largest_face` over many photos on every core, printing progress.
fn collect(pipeline: &Pipeline, photos: Vec<(usize, PathBuf)>) -> Result<Vec<Photo>, Error> {
    let total = photos.len();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let done = std::sync::atomic::AtomicUsize::new(0);
    let chunks: Vec<Vec<(usize, PathBuf)>> = {
        let mut c: Vec<Vec<_>> = (0..threads).map(|_| Vec::new()).collect();
        for (i, p) in photos.into_iter().enumerate() {
            c[i % threads].push(p);
        }
        c
    };
    let results: Vec<Result<Vec<Photo>, String>> = std::thread::scope(|s| {
        let handles: Vec<_> = chunks
            .into_iter()
            .map(|chunk| {
                let done = &done;
                s.spawn(move || {
                    chunk
                        .into_iter()
                        .map(|(person, path)| {
                            let faces = colour_and_gray(pipeline, &path).and_then(|(c, g)| {
                                Ok((largest_face(pipeline, &c)?, largest_face(pipeline, &g)?))
                            });
                            let (face, gray) =
                                faces.map_err(|e| format!("{}: {e}", path.display()))?;
                            let n = done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                            if n.is_multiple_of(100) || n == total {
                                eprintln!("  {n}/{total} photos");
                            }
                            let (face, quality) = match face {
                                Some((f, e, q)) => (Some((f, e)), Some(q)),
                                None => (None, None),
                            };
                            Ok(Photo {
                                person,
                                path,
                                face,
                                quality,
                                gray: gray.map(|(f, e, _)| (f, e)),
                            })
                        })
                        .collect()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("worker panicked"))
            .collect()
    });
    let mut all = Vec::with_capacity(total);
    for r in results {
        all.extend(r?);
    }
    all.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(all)
}

/// How many photos registration would skip at the default MIN_FACE_QUALITY, and why.
fn print_quality(photos: &[Photo]) {
    let qualities: Vec<&Quality> = photos.iter().filter_map(|p| p.quality.as_ref()).collect();
    let mut scores: Vec<f32> = qualities.iter().map(|q| q.score).collect();
    if scores.is_empty() {
        return;
    }
    scores.sort_by(f32::total_cmp);
    let min = DEFAULT_MIN_FACE_QUALITY;
    let below: Vec<&&Quality> = qualities.iter().filter(|q| q.score < min).collect();
    println!(
        "face quality (registration)     median {:.2}, 5% below {:.2}; {} of {} faces below \
         MIN_FACE_QUALITY {min}",
        quantile(&scores, 0.5),
        quantile(&scores, 0.05),
        below.len(),
        scores.len()
    );
    let mut reasons: std::collections::BTreeMap<&str, usize> = Default::default();
    for q in below {
        *reasons.entry(q.weakest().describe()).or_default() += 1;
    }
    for (reason, n) in reasons {
        println!("  skipped for {reason:<28} {n}");
    }
}

/// Value below which a fraction `q` of the sorted `v` lies.
fn quantile(sorted: &[f32], q: f64) -> f32 {
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn fraction_at_least(v: &[f32], t: f32) -> f64 {
    v.iter().filter(|&&x| x >= t).count() as f64 / v.len().max(1) as f64
}

fn evaluate(
    pipeline: &Pipeline,
    dir: &Path,
    negatives: Option<&Path>,
    embeddings: Option<&Path>,
    print_constants: bool,
) -> Result<(), Error> {
    let (names, photos) = list_people(dir)?;
    eprintln!(
        "{} people, {} photos in {}",
        names.len(),
        photos.len(),
        dir.display()
    );
    let started = Instant::now();
    let models = pipeline.models();
    let header = format!(
        "deepstack-eval faces v1, mode {}, detector {}, recognizer {}",
        pipeline.mode().name(),
        models.detector.sha256,
        models.recognizer.sha256
    );
    let kept = embeddings.and_then(|f| cache::load(f, &header, &photos));
    let photos = match kept {
        Some(kept) => {
            eprintln!(
                "faces and embeddings read from {}",
                embeddings.expect("some").display()
            );
            kept
        }
        None => {
            let photos = collect(pipeline, photos)?;
            if let Some(f) = embeddings {
                cache::save(f, &header, &photos)?;
                eprintln!("faces and embeddings kept in {}", f.display());
            }
            photos
        }
    };
    let secs = started.elapsed().as_secs_f64();
    let with_face: Vec<&Photo> = photos.iter().filter(|p| p.face.is_some()).collect();
    let no_face = photos.len() - with_face.len();

    // Every pair of photos: same person (genuine) or not (impostor).
    let (mut genuine, mut impostor) = (Vec::new(), Vec::new());
    for (i, a) in with_face.iter().enumerate() {
        let ea = &a.face.as_ref().expect("filtered").1;
        for b in &with_face[i + 1..] {
            let c = ea.cosine(&b.face.as_ref().expect("filtered").1);
            if a.person == b.person {
                genuine.push(c)
            } else {
                impostor.push(c)
            }
        }
    }
    genuine.sort_by(f32::total_cmp);
    impostor.sort_by(f32::total_cmp);

    // Verification accuracy: the best balanced accuracy over all thresholds.
    let mut best = (0.0f64, 0.0f32);
    for step in 0..=1000 {
        let t = -0.2 + step as f32 * 0.001;
        let acc = (fraction_at_least(&genuine, t) + 1.0 - fraction_at_least(&impostor, t)) / 2.0;
        if acc > best.0 {
            best = (acc, t);
        }
    }
    let far_1e3 = quantile(&impostor, 1.0 - 1e-3);
    let tar_1e3 = fraction_at_least(&genuine, far_1e3);

    // Rank-1 identification: the first 3 photos of each person enrolled, the rest probe.
    let mut enrolled: Vec<(usize, &Embedding)> = Vec::new();
    let mut probes: Vec<(usize, &Embedding)> = Vec::new();
    let mut per_person = vec![0usize; names.len()];
    for p in &with_face {
        let e = &p.face.as_ref().expect("filtered").1;
        if per_person[p.person] < 3 {
            enrolled.push((p.person, e));
        } else {
            probes.push((p.person, e));
        }
        per_person[p.person] += 1;
    }
    // Scored as the daemon scores: against each person's template (the normalised mean of
    // the enrolled photos); the best single photo for comparison.
    let templates: Vec<[f32; deepstackd::gallery::EMBEDDING_DIM]> = (0..names.len())
        .map(|p| {
            open_set::template(enrolled.iter().filter(|(q, _)| *q == p).map(|(_, e)| {
                <&[f32; deepstackd::gallery::EMBEDDING_DIM]>::try_from(&e.0[..])
                    .expect("an SFace embedding")
            }))
        })
        .collect();
    let rank1_of = |score: &dyn Fn(&Embedding, usize) -> f32| {
        probes
            .iter()
            .filter(|(person, e)| {
                let best = (0..names.len())
                    .filter(|&p| per_person[p] > 0)
                    .max_by(|&a, &b| score(e, a).total_cmp(&score(e, b)));
                best == Some(*person)
            })
            .count() as f64
            / probes.len().max(1) as f64
    };
    let rank1 = rank1_of(&|e, p| e.0.iter().zip(&templates[p]).map(|(a, b)| a * b).sum());
    let rank1_single = rank1_of(&|e, p| {
        enrolled
            .iter()
            .filter(|(q, _)| *q == p)
            .map(|(_, s)| e.cosine(s))
            .fold(f32::NEG_INFINITY, f32::max)
    });

    let det_scores: Vec<f32> = {
        let mut v: Vec<f32> = with_face
            .iter()
            .map(|p| p.face.as_ref().unwrap().0.score)
            .collect();
        v.sort_by(f32::total_cmp);
        v
    };

    println!(
        "## {} (mode {}, {:.0} ms/photo on {} threads)",
        dir.display(),
        pipeline.mode().name(),
        secs * 1000.0 / photos.len().max(1) as f64
            * std::thread::available_parallelism().map_or(1, |n| n.get()) as f64,
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    println!("people                          {}", names.len());
    println!("photos                          {}", photos.len());
    println!("photos with no face             {no_face}");
    print_quality(&photos);
    println!(
        "genuine / impostor pairs        {} / {}",
        genuine.len(),
        impostor.len()
    );
    println!(
        "verification accuracy           {:.2}% (balanced, best cosine threshold {:.3})",
        best.0 * 100.0,
        best.1
    );
    println!(
        "TAR at FAR 1e-3                 {:.2}% (cosine {:.3})",
        tar_1e3 * 100.0,
        far_1e3
    );
    println!(
        "rank-1 identification (3 shots) {:.2}% ({} probes; best single photo instead of the template: {:.2}%)",
        rank1 * 100.0,
        probes.len(),
        rank1_single * 100.0
    );
    println!(
        "genuine cosine p10/p50/p90      {:.3} / {:.3} / {:.3}",
        quantile(&genuine, 0.1),
        quantile(&genuine, 0.5),
        quantile(&genuine, 0.9)
    );
    println!(
        "impostor cosine p50/p99/p99.9   {:.3} / {:.3} / {:.3}",
        quantile(&impostor, 0.5),
        quantile(&impostor, 0.99),
        quantile(&impostor, 0.999)
    );
    // One photo against one (what /match answers): the gallery of a single sample.
    for threshold in open_set::THRESHOLDS {
        let cosine = recognition_cosine_for(threshold, &Enrolment::ONE_SAMPLE) + 1e-4;
        println!(
            "one sample, confidence {threshold:.2} (cosine {cosine:.3}): FAR {:.3}%  TAR {:.2}%",
            fraction_at_least(&impostor, cosine) * 100.0,
            fraction_at_least(&genuine, cosine) * 100.0
        );
    }
    let genuine_conf: Vec<f32> = genuine
        .iter()
        .map(|&c| recognition_confidence(c, &Enrolment::ONE_SAMPLE))
        .collect();
    println!(
        "median same-person confidence   {:.3} (one sample)",
        quantile(&genuine_conf, 0.5)
    );
    println!(
        "detector score p1/p5/p10/p50    {:.3} / {:.3} / {:.3} / {:.3}",
        quantile(&det_scores, 0.01),
        quantile(&det_scores, 0.05),
        quantile(&det_scores, 0.1),
        quantile(&det_scores, 0.5)
    );

    let mut negative_scores = Vec::new();
    if let Some(neg) = negatives {
        for path in list_files(neg)? {
            let img = pipeline.decode(&std::fs::read(&path)?, DecodeLimits::default())?;
            let faces = pipeline.detect(&img, COLLECT_MIN_SCORE)?;
            let top = faces.first().map_or(0.0, |f| f.score);
            println!(
                "negative {}: {} detections >= {COLLECT_MIN_SCORE}, best score {top:.3}",
                path.display(),
                faces.len()
            );
            negative_scores.push(top);
        }
    }

    let (mut labelled, mut paths): (Vec<LabelledFace>, Vec<&Path>) = photos
        .iter()
        .filter_map(|p| {
            let (_, colour) = p.face.as_ref()?;
            let gray = p.gray.as_ref().map(|(_, e)| e.0.as_slice());
            let quality = p.quality.as_ref().map_or(0.0, |q| q.score);
            Some((
                LabelledFace::new(p.person, &colour.0, gray, quality),
                p.path.as_path(),
            ))
        })
        .unzip();
    let wrong = open_set::mislabelled(&labelled);
    if !wrong.is_empty() {
        println!();
        println!("labelled as the wrong person (left out of the open-set figures):");
        for &(i, other, theirs, own) in &wrong {
            println!(
                "  {}: median cosine {theirs:.3} to {}'s faces, {own:.3} to its own label's",
                paths[i].display(),
                names[other]
            );
        }
        for &(i, ..) in wrong.iter().rev() {
            labelled.remove(i);
            paths.remove(i);
        }
    }
    let match_score = print_match_detection(&photos, &negative_scores);
    for probe in [Probe::Colour, Probe::Gray] {
        let rows = open_set::report(&labelled, probe);
        open_set::print_report(&rows, probe);
    }
    grouping::print_report(&labelled);
    negatives::print_report(&labelled);
    if print_constants {
        print_calibration(&labelled, &det_scores, match_score, &negative_scores, dir);
    }
    Ok(())
}

/// The share of the labelled faces `/match` admits, colour and grayscale, with the shipped
/// MATCH_MIN_SCORE, and the score that would admit 99.5% of the calibration half's faces in
/// both (what `calibrate` prints).
fn print_match_detection(photos: &[Photo], negatives: &[f32]) -> f32 {
    let score = |f: &Option<(Face, Embedding)>| f.as_ref().map_or(0.0, |(f, _)| f.score);
    let admitted =
        |v: &[f32], t: f32| v.iter().filter(|&&s| s >= t).count() as f64 / v.len().max(1) as f64;
    let half = |calibration: bool, gray: bool| -> Vec<f32> {
        let mut v: Vec<f32> = photos
            .iter()
            .filter(|p| open_set::calibrates(p.person) == calibration)
            .map(|p| if gray { score(&p.gray) } else { score(&p.face) })
            .collect();
        v.sort_by(f32::total_cmp);
        v
    };
    let worst_negative = negatives.iter().copied().fold(0.0f32, f32::max);
    let derived = quantile(&half(true, false), 0.005)
        .min(quantile(&half(true, true), 0.005))
        .max(COLLECT_MIN_SCORE)
        .max(worst_negative + 0.025);
    let shipped = calibration::MATCH_MIN_SCORE;
    println!();
    println!("/match detection (largest face at YuNet score >= {shipped:.4}; photos with no face count as refused):");
    for (name, gray) in [("colour", false), ("grayscale", true)] {
        let (report, calib) = (half(false, gray), half(true, gray));
        let all = (admitted(&report, shipped) * report.len() as f64
            + admitted(&calib, shipped) * calib.len() as f64)
            / (report.len() + calib.len()).max(1) as f64;
        println!(
            "  {name:<9}  all {:.2}%, report half {:.2}%, calibration half {:.2}%",
            all * 100.0,
            admitted(&report, shipped) * 100.0,
            admitted(&calib, shipped) * 100.0
        );
    }
    if !negatives.is_empty() {
        println!(
            "  people-free negatives with a detection >= it: {} of {}",
            negatives.iter().filter(|&&s| s >= shipped).count(),
            negatives.len()
        );
    }
    derived
}
/// Derive the constants and print the Rust block for `vision/calibration.rs`.
///
/// Recognition: the stranger tails of 1 to 5-sample templates from the calibration half's people
/// (`open_set::derive`). Detection: DeepStack's 0.55 at the score 99% of labelled faces reach,
/// raised above the best detection on the negatives if needed; its strict 0.8 at the score 90%
/// reach; `/match` at the score 99.5% of the calibration half's faces reach, in colour and in
/// grayscale.
fn print_calibration(
    labelled: &[LabelledFace],
    det: &[f32],
    match_score: f32,
    negatives: &[f32],
    dir: &Path,
) {
    let derived = open_set::derive(labelled);
    let worst_negative = negatives.iter().copied().fold(0.0f32, f32::max);
    let t_normal = quantile(det, 0.01).max(worst_negative + 0.02).min(0.95);
    let t_strict = quantile(det, 0.10).max(t_normal + 0.02).min(0.97);
    println!();
    println!(
        "// Derived by `deepstack-eval calibrate` on {}, calibration half; per sample count, \
         (colour, grayscale) stranger scores:",
        dir.display()
    );
    for (k, (_, pairs)) in derived.tails.iter().enumerate() {
        println!("//   {} samples: {} / {}", k + 1, pairs[0], pairs[1]);
    }
    println!("pub const IMPOSTOR_TAILS: [&[(f32, f32)]; SAMPLE_TAILS] = [");
    for (tail, _) in &derived.tails {
        println!("    &[");
        for (c, l) in tail {
            println!("        ({c:.4}, {l:.3}),");
        }
        println!("    ],");
    }
    println!("];");
    println!("//   labelled-face YuNet score p1 = {:.4}, p10 = {:.4}; best score on negatives = {worst_negative:.4}", quantile(det, 0.01), quantile(det, 0.10));
    println!(
        "pub const DETECTION_KNOTS: [(f32, f32); 4] = [(0.0, 0.0), ({t_normal:.4}, {:.2}), ({t_strict:.4}, 0.80), (1.0, 1.0)];",
        calibration::DEFAULT_DETECTION_CONFIDENCE,
    );
    println!("pub const MATCH_MIN_SCORE: f32 = {match_score:.4};");
}
