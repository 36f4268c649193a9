//! The test photo set-up itself: every photo is there, intact, and the OpenCV reference runs.

mod common;

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

/// Every file `daemon/tests/data/setup.py` makes.
const EXPECTED: &[&str] = &[
    // face_recognition 1.3.0's test photos
    "obama.jpg",
    "obama2.jpg",
    "obama3.jpg",
    "biden.jpg",
    "obama_partial_face.jpg",
    "obama_partial_face2.jpg",
    "32bit.png",
    // scikit-image 0.26.0's sample photos
    "chelsea.png",
    "coffee.png",
    "rocket.jpg",
    "astronaut.png",
    // derived from obama.jpg
    "obama_cmyk.jpg",
    "obama_progressive.jpg",
    "obama.webp",
    "obama_exif_rot90.jpg",
    "obama_gray.jpg",
    "obama_16bit.png",
    "obama_palette.png",
    "obama_rgba.png",
    "obama.bmp",
    "obama.gif",
    "obama.tiff",
    "obama_truncated.jpg",
    "not_an_image.jpg",
    "empty.jpg",
    "huge_header.png",
    "obama_1280x720.jpg",
    "obama_12mp.jpg",
    "obama_12mp_exif_rot90.jpg",
    "group_1280x720.jpg",
];

/// obama.jpg as shipped in face_recognition 1.3.0's sdist.
const OBAMA_JPG_SHA256: &str = "0930e3aa8cae5920329c0c8cbc6a2ab70f47b0e67b432875beaa95cbf7e741f6";

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// MANIFEST.txt in `sha256sum` format: name -> hex digest.
fn manifest() -> BTreeMap<String, String> {
    let text =
        std::fs::read_to_string(common::testdata().join("MANIFEST.txt")).expect("MANIFEST.txt");
    text.lines()
        .map(|line| {
            let (hash, name) = line
                .split_once("  ")
                .unwrap_or_else(|| panic!("bad manifest line {line:?}"));
            (name.to_string(), hash.to_string())
        })
        .collect()
}

#[test]
fn every_photo_exists_and_matches_the_manifest() {
    let manifest = manifest();
    let listed: Vec<&str> = manifest.keys().map(String::as_str).collect();
    let mut expected = EXPECTED.to_vec();
    expected.sort_unstable();
    assert_eq!(
        listed, expected,
        "MANIFEST.txt lists other files than expected"
    );

    for name in EXPECTED {
        let digest = sha256_hex(&common::photo_bytes(name));
        assert_eq!(digest, manifest[*name], "{name} changed since the set-up");
    }
    assert_eq!(
        manifest["obama.jpg"], OBAMA_JPG_SHA256,
        "obama.jpg is not the packaged photo"
    );
}

#[test]
fn opencv_reference_with_template_landmarks_is_the_identity() {
    let photo = common::photo("astronaut.png");
    let (crop, matrix) = common::opencv_align_with_matrix(&photo, &common::ARCFACE_112);

    for (row, want) in matrix.iter().zip([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]) {
        for (got, want) in row.iter().zip(want) {
            assert!(
                (got - want).abs() < 1e-6,
                "matrix {matrix:?} is not the identity"
            );
        }
    }
    // Also catches a red/blue swap between OpenCV's BGR and our RGB.
    let original = image::open(&photo).unwrap().to_rgb8();
    let corner = image::imageops::crop_imm(&original, 0, 0, 112, 112).to_image();
    assert_eq!(crop.dimensions(), (112, 112));
    assert!(
        crop == corner,
        "identity crop differs from the photo's top-left corner"
    );
}
