//! The faces and embeddings of a labelled folder, kept in a file between runs
//! (`--embeddings FILE`): the open-set table and the calibration then take seconds instead of
//! re-running the models on every photo. The file names the models and mode it came from and
//! is ignored (and rewritten) when they or the folder's photos change.

use std::io::{BufRead, BufWriter, Write};
use std::path::{Path, PathBuf};

use deepstackd::vision::quality::Quality;
use deepstackd::vision::{BBox, Embedding, Face};

use super::Photo;

type Error = Box<dyn std::error::Error>;

fn floats(v: &[f32]) -> String {
    v.iter().map(f32::to_string).collect::<Vec<_>>().join(" ")
}

fn face_field(face: &Option<(Face, Embedding)>) -> String {
    match face {
        None => "-".into(),
        Some((f, e)) => {
            let b = f.bbox;
            let mut v = vec![f.score, b.x_min, b.y_min, b.x_max, b.y_max];
            v.extend(f.landmarks.iter().flatten());
            v.extend(&e.0);
            floats(&v)
        }
    }
}

fn quality_field(q: &Option<Quality>) -> String {
    match q {
        None => "-".into(),
        Some(q) => floats(&[
            q.score,
            q.face_px as f32,
            q.sharpness,
            q.det_score,
            q.yaw,
            q.pitch,
        ]),
    }
}

fn parse_floats(s: &str) -> Result<Vec<f32>, Error> {
    Ok(s.split(' ').map(str::parse).collect::<Result<_, _>>()?)
}

fn parse_face(s: &str) -> Result<Option<(Face, Embedding)>, Error> {
    if s == "-" {
        return Ok(None);
    }
    let v = parse_floats(s)?;
    if v.len() != 15 + deepstackd::gallery::EMBEDDING_DIM {
        return Err("a face with the wrong number of values".into());
    }
    let mut landmarks = [[0f32; 2]; 5];
    for (i, l) in landmarks.iter_mut().enumerate() {
        *l = [v[5 + 2 * i], v[6 + 2 * i]];
    }
    let face = Face {
        bbox: BBox {
            x_min: v[1],
            y_min: v[2],
            x_max: v[3],
            y_max: v[4],
        },
        landmarks,
        score: v[0],
    };
    Ok(Some((face, Embedding(v[15..].to_vec()))))
}

fn parse_quality(s: &str) -> Result<Option<Quality>, Error> {
    if s == "-" {
        return Ok(None);
    }
    let v = parse_floats(s)?;
    let [score, face_px, sharpness, det_score, yaw, pitch] = v[..] else {
        return Err("a quality with the wrong number of values".into());
    };
    Ok(Some(Quality {
        score,
        face_px: face_px as u32,
        sharpness,
        det_score,
        yaw,
        pitch,
    }))
}

/// Writes `photos` under `header` (models and mode).
pub fn save(path: &Path, header: &str, photos: &[Photo]) -> Result<(), Error> {
    let tmp = path.with_extension("tmp");
    let mut out = BufWriter::new(std::fs::File::create(&tmp)?);
    writeln!(out, "{header}")?;
    for p in photos {
        writeln!(
            out,
            "{}\t{}\t{}\t{}\t{}",
            p.person,
            p.path.display(),
            face_field(&p.face),
            quality_field(&p.quality),
            face_field(&p.gray)
        )?;
    }
    out.into_inner()?.sync_all()?;
    std::fs::rename(tmp, path)?;
    Ok(())
}

/// The photos kept in `path`, if it was written under `header` for exactly `wanted`.
pub fn load(path: &Path, header: &str, wanted: &[(usize, PathBuf)]) -> Option<Vec<Photo>> {
    let file = std::fs::File::open(path).ok()?;
    let mut lines = std::io::BufReader::new(file).lines();
    if lines.next()?.ok()? != header {
        return None;
    }
    let mut photos = Vec::with_capacity(wanted.len());
    for line in lines {
        let line = line.ok()?;
        let fields: Vec<&str> = line.split('\t').collect();
        let [person, file, face, quality, gray] = fields[..] else {
            return None;
        };
        photos.push(Photo {
            person: person.parse().ok()?,
            path: PathBuf::from(file),
            face: parse_face(face).ok()?,
            quality: parse_quality(quality).ok()?,
            gray: parse_face(gray).ok()?,
        });
    }
    let mut kept: Vec<(usize, &PathBuf)> = photos.iter().map(|p| (p.person, &p.path)).collect();
    let mut asked: Vec<(usize, &PathBuf)> = wanted.iter().map(|(i, p)| (*i, p)).collect();
    kept.sort();
    asked.sort();
    (kept == asked).then_some(photos)
}
