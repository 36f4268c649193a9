//! Open-set recognition over real HTTP: a confidence measured against the gallery as it is
//! (a stranger's falls as the gallery grows), and `/match` on the grayscale frames an IR
//! camera sends. The real daemon, the real test photos.

mod common;
#[path = "api/harness.rs"]
mod harness;

use harness::routes::*;
use harness::{Body, Daemon, Multipart, Server};
use serde_json::{json, Value};

const FACES_ON: (&str, &str) = ("VISION-FACE", "True");

fn ok_json(d: &Daemon, route: &str, body: &Body) -> Value {
    let res = d.post(route, body);
    assert_eq!(res.status, 200, "{}", res.text());
    let body = res.json();
    assert_eq!(body["success"], json!(true), "{body}");
    body
}

fn register(d: &Daemon, userid: &str, photo: &str) {
    let form = Multipart::new()
        .file("image", &common::photo_bytes(photo))
        .text("userid", userid);
    ok_json(d, REGISTER, &form.body());
}

/// The one prediction for a one-face photo: (userid, confidence).
fn recognize(d: &Daemon, photo: &str, min_confidence: &str) -> (String, f64) {
    let form = Multipart::new()
        .file("image", &common::photo_bytes(photo))
        .text("min_confidence", min_confidence);
    let body = ok_json(d, RECOGNIZE, &form.body());
    let predictions = body["predictions"].as_array().expect("predictions");
    assert_eq!(predictions.len(), 1, "{body}");
    (
        predictions[0]["userid"]
            .as_str()
            .expect("userid")
            .to_owned(),
        predictions[0]["confidence"].as_f64().expect("confidence"),
    )
}

#[test]
fn a_strangers_confidence_falls_as_the_gallery_grows() {
    let d = Server::start(&[FACES_ON]);
    register(&d, "Obama", "obama.jpg");
    // min_confidence 0 names anyone: Biden is given the one user there is.
    let (who, alone) = recognize(&d, "biden.jpg", "0");
    assert_eq!(who, "Obama");
    assert!(alone > 0.0 && alone < 0.45, "a stranger at {alone}");
    let (who, enrolled) = recognize(&d, "obama2.jpg", "");
    assert_eq!(who, "Obama");
    assert!(enrolled >= 0.8, "the enrolled person at {enrolled}");

    // Nine more people, each with the same photo: Biden's best cosine is the same, but now he
    // has ten chances to resemble someone, and the same resemblance means less.
    for i in 1..10 {
        register(&d, &format!("Obama {i}"), "obama.jpg");
    }
    let (who, among_ten) = recognize(&d, "biden.jpg", "0");
    assert!(who.starts_with("Obama"), "{who}");
    assert!(
        among_ten < alone,
        "one user: {alone}, ten users: {among_ten}"
    );
    // The enrolled person is still named, with a confidence that fell less than the
    // stranger's (relatively), and above DeepStack's default.
    let (_, enrolled_among_ten) = recognize(&d, "obama2.jpg", "");
    assert!(enrolled_among_ten >= 0.67 && enrolled_among_ten <= enrolled);
    assert!(enrolled_among_ten / enrolled > among_ten / alone);
}

/// A grayscale copy (luma in one channel, as an IR camera's JPEG) of a test photo.
fn gray_jpeg(name: &str) -> Vec<u8> {
    let img = image::load_from_memory(&common::photo_bytes(name)).expect("test photo");
    let mut out = std::io::Cursor::new(Vec::new());
    img.to_luma8()
        .write_to(&mut out, image::ImageFormat::Jpeg)
        .expect("encode");
    out.into_inner()
}

fn similarity(d: &Daemon, a: &[u8], b: &[u8]) -> f64 {
    let form = Multipart::new().file("image1", a).file("image2", b);
    ok_json(d, MATCH, &form.body())["similarity"]
        .as_f64()
        .expect("similarity")
}

#[test]
fn match_finds_grayscale_faces_and_keeps_people_apart() {
    let d = Server::start(&[FACES_ON]);
    let colour = |n: &str| common::photo_bytes(n);
    for (a, b) in [("obama.jpg", "obama2.jpg"), ("obama.jpg", "obama3.jpg")] {
        let gray = similarity(&d, &gray_jpeg(a), &gray_jpeg(b));
        let night_vs_day = similarity(&d, &gray_jpeg(a), &colour(b));
        assert!(gray >= 0.67, "{a} vs {b} in grayscale: {gray}");
        assert!(night_vs_day >= 0.67, "{a} grayscale vs {b}: {night_vs_day}");
    }
    for (a, b) in [("obama.jpg", "biden.jpg"), ("biden.jpg", "astronaut.png")] {
        let gray = similarity(&d, &gray_jpeg(a), &gray_jpeg(b));
        assert!(gray < 0.45, "{a} vs {b} in grayscale: {gray}");
    }
}
