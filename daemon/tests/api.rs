//! The DeepStack face API over real HTTP: the real `deepstackd` binary on 127.0.0.1, real
//! photos, every row of the contract (`shared/deepstack-face-api.md`) that a client can see.
//!
//! Each test starts its own daemon on its own temporary DATA_DIR, so tests run in parallel
//! without seeing each other's galleries.

mod common;
#[path = "api/harness.rs"]
mod harness;

use std::path::PathBuf;
use std::process::Command;

use harness::{fields, urlencoded, Body, Daemon, Multipart, Response, Server};
use serde_json::{json, Value};

use harness::routes::*;

/// Every face route, each behind the API key and the VISION-FACE switch.
const FACE_ROUTES: [&str; 7] = [
    DETECT,
    DETECT_SLASH,
    RECOGNIZE,
    REGISTER,
    MATCH,
    LIST,
    DELETE,
];

const FACES_ON: (&str, &str) = ("VISION-FACE", "True");

fn photo(name: &str) -> Vec<u8> {
    common::photo_bytes(name)
}

fn image_dims(name: &str) -> (u64, u64) {
    let img = image::load_from_memory(&photo(name)).expect("test photo decodes");
    (u64::from(img.width()), u64::from(img.height()))
}

/// A form with one file `image` and the given text fields.
fn image_form(name: &str, extra: &[(&str, &str)]) -> Body {
    Multipart::new()
        .file("image", &photo(name))
        .texts(extra)
        .body()
}

/// The exact bytes of a DeepStack error answer.
fn assert_error(res: &Response, status: u16, error: &str) {
    let expected = format!(r#"{{"success":false,"error":"{error}","duration":0}}"#);
    assert_eq!(
        (res.status, res.text()),
        (status, expected),
        "expected {status} {error:?}"
    );
    assert_eq!(res.header("content-type"), Some("application/json"));
}

fn assert_invalid_image_with_reason(res: &Response, reason_mentions: &str) {
    assert_eq!(res.status, 400, "{}", res.text());
    let body = res.json();
    assert_eq!(body["success"], json!(false));
    assert_eq!(body["error"], json!("invalid image"));
    assert_eq!(body["duration"], json!(0));
    let reason = body["reason"].as_str().expect("a reason");
    assert!(reason.contains(reason_mentions), "{reason}");
}

/// The keys appear in this order in `text` (DeepStack's order; JSON parsers forget it).
fn assert_keys_in_order(text: &str, keys: &[&str]) {
    let positions: Vec<Option<usize>> = keys
        .iter()
        .map(|k| text.find(&format!("\"{k}\":")))
        .collect();
    assert!(
        positions.iter().all(Option::is_some) && positions.windows(2).all(|w| w[0] < w[1]),
        "keys {keys:?} not in this order in {text}"
    );
}

fn ok_json(res: Response) -> Value {
    assert_eq!(res.status, 200, "{}", res.text());
    let body = res.json();
    assert_eq!(body["success"], json!(true), "{body}");
    assert_eq!(body["duration"], json!(0), "{body}");
    body
}

fn register(d: &Daemon, userid: &str, photos: &[&str]) -> Value {
    let form = photos
        .iter()
        .fold(Multipart::new(), |m, p| m.file("image", &photo(p)))
        .text("userid", userid);
    ok_json(d.post(REGISTER, &form.body()))
}

fn recognize(d: &Daemon, name: &str, extra: &[(&str, &str)]) -> Vec<Value> {
    let body = ok_json(d.post(RECOGNIZE, &image_form(name, extra)));
    body["predictions"].as_array().expect("predictions").clone()
}

fn userids(predictions: &[Value]) -> Vec<&str> {
    predictions
        .iter()
        .map(|p| p["userid"].as_str().expect("userid"))
        .collect()
}

fn list(d: &Daemon) -> Value {
    ok_json(d.post(LIST, &fields(&[]).body()))["faces"].clone()
}

fn samples(d: &Daemon) -> u64 {
    d.status()["samples"].as_u64().expect("samples")
}

/// Every box is whole pixels inside the image, with DeepStack's keys.
fn assert_boxes_in(predictions: &[Value], (w, h): (u64, u64)) {
    for p in predictions {
        let v = |k: &str| {
            p[k].as_u64()
                .unwrap_or_else(|| panic!("{k} not an integer: {p}"))
        };
        assert!(v("x_min") < v("x_max") && v("x_max") <= w, "{p}");
        assert!(v("y_min") < v("y_max") && v("y_max") <= h, "{p}");
        let c = p["confidence"].as_f64().expect("confidence");
        assert!((0.0..=1.0).contains(&c), "{p}");
    }
}

#[test]
fn deepstacks_documented_scenario() {
    let d = Server::start(&[FACES_ON]);

    // The docs' register call: several files as image1..imageN.
    let form = Multipart::new()
        .file("image1", &photo("obama.jpg"))
        .file("image2", &photo("obama3.jpg"))
        .text("userid", "Barack Obama");
    let res = d.post(REGISTER, &form.body());
    assert_eq!(res.status, 200);
    assert_eq!(
        res.text(),
        r#"{"success":true,"message":"face added","duration":0}"#
    );
    register(&d, "Biden", &["biden.jpg"]);
    register(&d, "astronaut", &["astronaut.png"]);
    assert_eq!(samples(&d), 4);

    // Bytewise: capitals first (a locale-aware sort would put "astronaut" first).
    assert_eq!(list(&d), json!(["Barack Obama", "Biden", "astronaut"]));

    // Default threshold (0.67), then Home Assistant's call: min_confidence=0.45, empty key.
    for extra in [&[][..], &[("min_confidence", "0.45"), ("api_key", "")][..]] {
        let predictions = recognize(&d, "obama2.jpg", extra);
        assert_eq!(userids(&predictions), ["Barack Obama"], "{extra:?}");
        assert!(predictions[0]["confidence"].as_f64().unwrap() >= 0.67);
        assert_boxes_in(&predictions, image_dims("obama2.jpg"));
    }
    let res = d.post(RECOGNIZE, &image_form("obama2.jpg", &[]));
    assert_keys_in_order(
        &res.text(),
        &[
            "success",
            "predictions",
            "confidence",
            "userid",
            "y_min",
            "x_min",
            "y_max",
            "x_max",
            "duration",
        ],
    );

    // Nobody reaches a threshold of 1: unknown, confidence 0.
    let predictions = recognize(&d, "obama2.jpg", &[("min_confidence", "1")]);
    assert_eq!(userids(&predictions), ["unknown"]);
    assert_eq!(predictions[0]["confidence"], json!(0.0));

    // The group holds two Obamas, Biden and the astronaut: each user goes to one face only.
    let predictions = recognize(&d, "group_1280x720.jpg", &[]);
    assert_eq!(predictions.len(), 4);
    let mut names = userids(&predictions);
    names.sort_unstable();
    assert_eq!(names, ["Barack Obama", "Biden", "astronaut", "unknown"]);
    assert_boxes_in(&predictions, (1280, 720));

    // No face: an empty list, success true.
    assert_eq!(recognize(&d, "coffee.png", &[]), Vec::<Value>::new());

    // Match, same and different people (DeepStack's own test thresholds).
    let similarity = |a: &str, b: &str| {
        let form = Multipart::new()
            .file("image1", &photo(a))
            .file("image2", &photo(b));
        ok_json(d.post(MATCH, &form.body()))["similarity"]
            .as_f64()
            .unwrap()
    };
    assert!(similarity("obama.jpg", "obama2.jpg") > 0.65);
    assert!(similarity("obama.jpg", "biden.jpg") < 0.55);

    // Delete, effective for the very next request.
    let res = d.post(DELETE, &fields(&[("userid", "Barack Obama")]).body());
    assert_eq!(res.text(), r#"{"success":true,"duration":0}"#);
    assert_eq!(userids(&recognize(&d, "obama2.jpg", &[])), ["unknown"]);
    assert_eq!(list(&d), json!(["Biden", "astronaut"]));
    assert_eq!(samples(&d), 2);

    // Deleting an unknown user succeeds too; registering an existing one updates it.
    ok_json(d.post(DELETE, &fields(&[("userid", "nobody")]).body()));
    assert_eq!(
        register(&d, "Biden", &["biden.jpg"])["message"],
        json!("face updated")
    );
}

#[test]
fn detection_on_both_paths() {
    let d = Server::start(&[FACES_ON]);
    for path in [DETECT, DETECT_SLASH] {
        let body = ok_json(d.post(path, &image_form("obama.jpg", &[])));
        let predictions = body["predictions"].as_array().unwrap();
        assert_eq!(predictions.len(), 1, "{path}: {body}");
        assert!(predictions[0]["confidence"].as_f64().unwrap() >= 0.55);
        assert_boxes_in(predictions, image_dims("obama.jpg"));
        assert_keys_in_order(
            &String::from_utf8_lossy(&d.post(path, &image_form("obama.jpg", &[])).body),
            &[
                "success",
                "predictions",
                "confidence",
                "y_min",
                "x_min",
                "y_max",
                "x_max",
                "duration",
            ],
        );
    }

    let confidences = |extra: &[(&str, &str)]| -> Vec<f64> {
        let body = ok_json(d.post(DETECT, &image_form("group_1280x720.jpg", extra)));
        let predictions = body["predictions"].as_array().unwrap().clone();
        assert_boxes_in(&predictions, (1280, 720));
        predictions
            .iter()
            .map(|p| p["confidence"].as_f64().unwrap())
            .collect()
    };
    let default = confidences(&[]);
    assert_eq!(default.len(), 4, "{default:?}");
    assert!(default.windows(2).all(|w| w[0] >= w[1]), "{default:?}");
    // A threshold above every face leaves none; a lower one keeps at least these four.
    let strictest = default[0] + 0.001;
    assert!(confidences(&[("min_confidence", &strictest.to_string())]).is_empty());
    let lower = confidences(&[("min_confidence", "0.3")]);
    assert!(
        lower.len() >= 4 && lower.iter().all(|c| *c >= 0.3),
        "{lower:?}"
    );

    let body = ok_json(d.post(DETECT, &image_form("rocket.jpg", &[])));
    assert_eq!(body["predictions"], json!([]));

    // Not multipart: a JSON 400 (DeepStack crashed with an empty 500).
    let json_body = Body::Raw {
        content_type: "application/json".into(),
        bytes: br#"{"image":"obama.jpg"}"#.to_vec(),
    };
    assert_error(
        &d.post(DETECT, &json_body),
        400,
        "No valid image file found",
    );
    assert_error(
        &d.post(DETECT, &Body::Empty),
        400,
        "No valid image file found",
    );
}

#[test]
fn error_table_and_validation_order() {
    let d = Server::start(&[FACES_ON, ("API-KEY", "secret"), ("ADMIN-KEY", "admin")]);
    let key = ("api_key", "secret");

    // The API key comes first, on every face route, whatever else is wrong with the request.
    for route in FACE_ROUTES {
        let full = || {
            Multipart::new()
                .file("image", &photo("obama.jpg"))
                .text("userid", "x")
        };
        assert_error(&d.post(route, &full().body()), 401, "Incorrect api key");
        for wrong in ["", "SECRET", "secret ", "admin"] {
            let res = d.post(route, &full().text("api_key", wrong).body());
            assert_error(&res, 401, "Incorrect api key");
        }
        assert_error(&d.post(route, &Body::Empty), 401, "Incorrect api key");
        let res = d.post(route, &urlencoded(&[("api_key", "wrong"), ("userid", "x")]));
        assert_error(&res, 401, "Incorrect api key");
    }
    for route in [BACKUP, RESTORE] {
        assert_error(
            &d.post(route, &fields(&[]).body()),
            401,
            "Incorrect admin key",
        );
        for wrong in [
            ("admin_key", "wrong"),
            ("admin_key", ""),
            ("api_key", "secret"),
        ] {
            let res = d.post(route, &fields(&[wrong]).body());
            assert_error(&res, 401, "Incorrect admin key");
        }
    }

    // Detection and recognition: no file, then min_confidence, then the image itself.
    for route in [DETECT, RECOGNIZE] {
        let no_file = fields(&[key, ("min_confidence", "abc")]).body();
        assert_error(&d.post(route, &no_file), 400, "No valid image file found");
        let wrong_name = Multipart::new()
            .file("photo", &photo("obama.jpg"))
            .text("api_key", "secret")
            .body();
        assert_error(
            &d.post(route, &wrong_name),
            400,
            "No valid image file found",
        );
        let json_body = Body::Raw {
            content_type: "application/json".into(),
            bytes: br#"{"api_key":"secret","image":"obama.jpg"}"#.to_vec(),
        };
        // An API key in JSON is no key at all: DeepStack read form fields only.
        assert_error(&d.post(route, &json_body), 401, "Incorrect api key");
        let urlencoded_only = urlencoded(&[key]);
        assert_error(
            &d.post(route, &urlencoded_only),
            400,
            "No valid image file found",
        );
        for bad in ["abc", "0.5.1", ""] {
            let res = d.post(
                route,
                &image_form("not_an_image.jpg", &[key, ("min_confidence", bad)]),
            );
            if bad.is_empty() {
                // Empty means the default: the next check is the image.
                assert_error(&res, 400, "invalid image");
            } else {
                assert_error(&res, 400, "Invalid value for min_confidence");
            }
        }
        let res = d.post(
            route,
            &image_form("obama.jpg", &[key, ("min_confidence", "1.5")]),
        );
        assert_error(&res, 400, "min_confidence cannot be greater than 1");
        for broken in ["not_an_image.jpg", "empty.jpg", "obama_truncated.jpg"] {
            let res = d.post(route, &image_form(broken, &[key]));
            assert_error(&res, 400, "invalid image");
        }
        ok_json(d.post(route, &image_form("obama.jpg", &[key])));
    }

    // Registration: no file wins over no userid; then userid; then images; then faces.
    let res = d.post(REGISTER, &fields(&[key]).body());
    assert_error(&res, 400, "No valid image file found");
    let res = d.post(REGISTER, &urlencoded(&[key, ("userid", "x")]));
    assert_error(&res, 400, "No valid image file found");
    for userid in [&[][..], &[("userid", "")][..]] {
        let res = d.post(
            REGISTER,
            &image_form("not_an_image.jpg", &[&[key][..], userid].concat()),
        );
        assert_error(&res, 400, "userid not specified");
    }
    let res = d.post(
        REGISTER,
        &image_form("not_an_image.jpg", &[key, ("userid", "x")]),
    );
    assert_error(&res, 400, "invalid image");
    let res = d.post(REGISTER, &image_form("coffee.png", &[key, ("userid", "x")]));
    assert_error(&res, 400, "no face detected");
    // A file that is not an image fails the request even after a usable photo.
    let form = Multipart::new()
        .file("image1", &photo("obama.jpg"))
        .file("image2", &photo("empty.jpg"))
        .texts(&[key, ("userid", "x")]);
    assert_error(&d.post(REGISTER, &form.body()), 400, "invalid image");
    assert_eq!(
        ok_json(d.post(LIST, &fields(&[key]).body()))["faces"],
        json!([])
    );

    // Match: counts file field names.
    let match_form = |files: &[(&str, &str)]| {
        files
            .iter()
            .fold(Multipart::new().text("api_key", "secret"), |m, (n, p)| {
                m.file(n, &photo(p))
            })
            .body()
    };
    assert_error(
        &d.post(MATCH, &match_form(&[])),
        400,
        "No valid image file found",
    );
    let one = match_form(&[("image1", "obama.jpg")]);
    assert_error(
        &d.post(MATCH, &one),
        400,
        "expected two image files, only one found",
    );
    let same_name = match_form(&[("image", "obama.jpg"), ("image", "obama2.jpg")]);
    assert_error(
        &d.post(MATCH, &same_name),
        400,
        "expected two image files, only one found",
    );
    let three = match_form(&[("a", "obama.jpg"), ("b", "obama2.jpg"), ("c", "biden.jpg")]);
    assert_error(&d.post(MATCH, &three), 400, "only two images allowed");
    let broken = match_form(&[("image1", "obama.jpg"), ("image2", "not_an_image.jpg")]);
    assert_error(&d.post(MATCH, &broken), 400, "invalid image");
    let no_face = match_form(&[("image1", "obama.jpg"), ("image2", "coffee.png")]);
    assert_error(&d.post(MATCH, &no_face), 200, "no face found");

    // Delete needs a userid.
    for form in [fields(&[key]).body(), urlencoded(&[key, ("userid", "")])] {
        assert_error(&d.post(DELETE, &form), 400, "userid not specified");
    }

    // Restore: no file, then a file that is not a backup.
    let admin = ("admin_key", "admin");
    let res = d.post(RESTORE, &fields(&[admin]).body());
    assert_error(&res, 400, "No valid backup file found");
    let res = d.post(
        RESTORE,
        &Multipart::new()
            .file("file", b"this is no backup")
            .text("admin_key", "admin")
            .body(),
    );
    assert_error(&res, 200, "Invalid backup file");

    // Unknown paths and methods are plain 404s, as with DeepStack's router.
    assert_eq!(
        d.post("/v1/vision/face/unknown", &fields(&[key]).body())
            .status,
        404
    );
    assert_eq!(d.get(RECOGNIZE).status, 404);

    // The status page tells what runs and never a key.
    let res = d.get("/v1/status");
    let status = ok_json(d.get("/v1/status"));
    let text = res.text();
    assert!(
        !text.contains("secret") && !text.contains("admin\""),
        "{text}"
    );
    assert_eq!(status["version"], json!(env!("CARGO_PKG_VERSION")));
    assert_eq!(status["faces_enabled"], json!(true));
    assert!(["High", "Medium", "Low"].contains(&status["mode"].as_str().unwrap()));
    let models = status["models"].as_array().unwrap();
    assert_eq!(models.len(), 2);
    for m in models {
        assert_eq!(m["sha256"].as_str().unwrap().len(), 64, "{m}");
        assert_eq!(m["origin"], json!("embedded"));
        assert_eq!(m["shipped"], json!(true));
    }
    assert!(status["uptime_seconds"].is_u64() && status["threadcount"].as_u64() >= Some(1));
}

#[test]
fn faces_disabled_gives_403_but_a_wrong_key_401_first() {
    // "true" is not "True": DeepStack leaves the face endpoints off.
    let d = Server::start(&[("VISION_FACE", "true"), ("API_KEY", "secret")]);
    for route in FACE_ROUTES {
        let res = d.post(route, &image_form("obama.jpg", &[("api_key", "wrong")]));
        assert_error(&res, 401, "Incorrect api key");
        let res = d.post(route, &image_form("obama.jpg", &[("api_key", "secret")]));
        assert_error(&res, 403, "Face endpoints not activated");
        let res = d.post(route, &urlencoded(&[("api_key", "secret")]));
        assert_error(&res, 403, "Face endpoints not activated");
    }
    assert_eq!(d.status()["faces_enabled"], json!(false));
    // Backup is not a face route; without an admin key it is open.
    let res = d.post(BACKUP, &fields(&[]).body());
    assert_eq!(res.status, 200);
}

#[test]
fn registration_adds_a_sample_per_file_part() {
    let d = Server::start(&[FACES_ON]);

    // Repeated `image` fields all count (DeepStack kept the first of each name).
    let body = register(&d, "obama", &["obama.jpg", "obama2.jpg"]);
    assert_eq!(
        body,
        json!({"success": true, "message": "face added", "duration": 0})
    );
    assert_eq!(samples(&d), 2);

    // image1..imageN, appended to the same user.
    let form = Multipart::new()
        .file("image1", &photo("obama3.jpg"))
        .file("image2", &photo("obama_1280x720.jpg"))
        .file("image3", &photo("obama.webp"))
        .text("userid", "obama");
    let body = ok_json(d.post(REGISTER, &form.body()));
    assert_eq!(body["message"], json!("face updated"));
    assert_eq!(samples(&d), 5);

    // Unusable photos are skipped and named; the usable one is stored.
    let form = Multipart::new()
        .file("image", &photo("group_1280x720.jpg"))
        .file("image", &photo("obama_gray.jpg"))
        .file("extra", &photo("coffee.png"))
        .text("userid", "obama");
    let body = ok_json(d.post(REGISTER, &form.body()));
    assert_eq!(
        body,
        json!({
            "success": true,
            "message": "face updated",
            "skipped": [
                {"file": "image", "reason": "several faces of similar size"},
                {"file": "extra", "reason": "no face detected"},
            ],
            "duration": 0,
        })
    );
    assert_eq!(samples(&d), 6);

    // Nothing usable: 400 and no user created.
    let form = Multipart::new()
        .file("image", &photo("group_1280x720.jpg"))
        .text("userid", "group");
    assert_error(&d.post(REGISTER, &form.body()), 400, "no face detected");

    // All or nothing: a broken file after a good one stores neither.
    let form = Multipart::new()
        .file("image", &photo("biden.jpg"))
        .file("image", &photo("obama_truncated.jpg"))
        .text("userid", "biden");
    assert_error(&d.post(REGISTER, &form.body()), 400, "invalid image");
    assert_eq!(list(&d), json!(["obama"]));
    assert_eq!(samples(&d), 6);

    // Userids are case-sensitive, any UTF-8.
    register(&d, "Obama", &["obama2.jpg"]);
    register(&d, "Zoë Ångström", &["biden.jpg"]);
    assert_eq!(list(&d), json!(["Obama", "Zoë Ångström", "obama"]));
    let predictions = recognize(&d, "biden.jpg", &[]);
    assert_eq!(userids(&predictions), ["Zoë Ångström"]);
}

#[test]
fn urlencoded_list_and_delete() {
    let d = Server::start(&[FACES_ON, ("API-KEY", "k")]);
    let form = Multipart::new()
        .file("image", &photo("obama.jpg"))
        .texts(&[("userid", "Barack Obama"), ("api_key", "k")]);
    ok_json(d.post(REGISTER, &form.body()));
    let body = ok_json(d.post(LIST, &urlencoded(&[("api_key", "k")])));
    assert_eq!(body["faces"], json!(["Barack Obama"]));
    let res = d.post(
        DELETE,
        &urlencoded(&[("api_key", "k"), ("userid", "Barack Obama")]),
    );
    assert_eq!(res.text(), r#"{"success":true,"duration":0}"#);
    let body = ok_json(d.post(LIST, &urlencoded(&[("api_key", "k")])));
    assert_eq!(body["faces"], json!([]));
}

#[test]
fn the_gallery_survives_a_crash_and_a_restart() {
    let s = Server::start(&[FACES_ON]);
    register(&s, "Barack Obama", &["obama.jpg", "obama3.jpg"]);
    let dir = s.data_dir();
    let Server { daemon, tmp } = s;
    daemon.kill(); // SIGKILL right after the answer: what was acknowledged must be on disk

    let d = Daemon::start(&dir, &[FACES_ON]);
    assert_eq!(samples(&d), 2);
    assert_eq!(userids(&recognize(&d, "obama2.jpg", &[])), ["Barack Obama"]);
    // SIGTERM: actix finishes and the process exits cleanly.
    assert!(d.terminate().success());
    drop(tmp);
}

#[test]
fn parallel_registers_and_recognizes_lose_nothing() {
    let d = Server::start(&[FACES_ON, ("THREADCOUNT", "2")]);
    let people: [(&str, &[&str]); 3] = [
        ("obama", &["obama.jpg", "obama3.jpg", "obama_1280x720.jpg"]),
        ("biden", &["biden.jpg", "biden.jpg", "biden.jpg"]),
        (
            "astronaut",
            &["astronaut.png", "astronaut.png", "astronaut.png"],
        ),
    ];
    std::thread::scope(|scope| {
        for (userid, photos) in people {
            let d = &d;
            scope.spawn(move || {
                for p in photos {
                    register(d, userid, &[p]);
                }
            });
        }
        for _ in 0..2 {
            let d = &d;
            scope.spawn(move || {
                for _ in 0..4 {
                    // Before obama is registered: unknown; after: obama. Never anyone else.
                    let predictions = recognize(d, "obama2.jpg", &[]);
                    let names = userids(&predictions);
                    assert!(names == ["unknown"] || names == ["obama"], "{names:?}");
                }
            });
        }
    });
    let status = d.status();
    assert_eq!(
        (status["users"].as_u64(), status["samples"].as_u64()),
        (Some(3), Some(9))
    );
    assert_eq!(list(&d), json!(["astronaut", "biden", "obama"]));
    assert_eq!(userids(&recognize(&d, "obama2.jpg", &[])), ["obama"]);
}

#[test]
fn backup_during_writes_restores_and_a_bad_restore_changes_nothing() {
    let admin = ("admin_key", "adm");
    let a = Server::start(&[FACES_ON, ("ADMIN-KEY", "adm")]);
    register(&a, "Barack Obama", &["obama.jpg"]);
    let writers: Vec<String> = (0..6).map(|i| format!("w{i}")).collect();

    let take_backup = |d: &Daemon| -> Vec<u8> {
        let res = d.post(BACKUP, &fields(&[admin]).body());
        assert_eq!(res.status, 200, "{}", res.text());
        assert_eq!(res.header("content-type"), Some("application/octet-stream"));
        let disposition = res.header("content-disposition").unwrap_or_default();
        assert!(
            disposition.starts_with("attachment; filename=\"Backup_")
                && disposition.ends_with(".backup\""),
            "{disposition}"
        );
        res.body
    };
    let mid_write = std::thread::scope(|scope| {
        let writer = scope.spawn(|| {
            for w in &writers {
                register(&a, w, &["biden.jpg"]);
            }
        });
        let mut backups = Vec::new();
        while !writer.is_finished() {
            backups.push(take_backup(&a));
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        writer.join().unwrap();
        backups
    });
    assert!(
        !mid_write.is_empty(),
        "no backup was taken during the writes"
    );
    eprintln!("{} backups taken during the writes", mid_write.len());
    let last = take_backup(&a);

    let b = Server::start(&[FACES_ON, ("ADMIN-KEY", "adm")]);
    let restore = |bytes: &[u8]| {
        b.post(
            RESTORE,
            &Multipart::new().file("file", bytes).texts(&[admin]).body(),
        )
    };
    for backup in &mid_write {
        ok_json(restore(backup));
        // A snapshot: Obama, then the writers in the order they were registered, no gaps.
        let faces: Vec<String> = serde_json::from_value(list(&b)).unwrap();
        let restored_writers: Vec<&String> = faces.iter().filter(|f| f.starts_with('w')).collect();
        assert!(faces.contains(&"Barack Obama".to_owned()), "{faces:?}");
        assert_eq!(
            restored_writers,
            writers
                .iter()
                .take(restored_writers.len())
                .collect::<Vec<_>>()
        );
        assert_eq!(samples(&b), faces.len() as u64);
    }
    ok_json(restore(&last));
    assert_eq!(samples(&b), 7);
    assert_eq!(userids(&recognize(&b, "obama2.jpg", &[])), ["Barack Obama"]);

    // Not a backup: garbage, a truncated backup, an SQLite file that is not ours.
    let foreign = {
        let path = b.tmp.path().join("foreign.sqlite3");
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(
            "CREATE TABLE users(id INTEGER, userid TEXT); INSERT INTO users VALUES (1, 'mallory');",
        )
        .unwrap();
        drop(conn);
        std::fs::read(&path).unwrap()
    };
    for bad in [&b"garbage"[..], &last[..last.len() / 2], &foreign[..]] {
        assert_error(&restore(bad), 200, "Invalid backup file");
    }
    assert_eq!(samples(&b), 7);
    assert_eq!(list(&b).as_array().unwrap().len(), 7);
    assert_eq!(userids(&recognize(&b, "obama2.jpg", &[])), ["Barack Obama"]);
}

#[test]
fn upload_and_pixel_limits_answer_invalid_image_with_a_reason() {
    // obama.jpg is 280 kB, obama.bmp 3.1 MB.
    let d = Server::start(&[FACES_ON, ("MAX_UPLOAD_BYTES", "1000000"), ("API-KEY", "k")]);
    // The key comes after the too-big file and is still read: not a 401.
    let form = Multipart::new()
        .file("image", &photo("obama.bmp"))
        .text("api_key", "k");
    assert_invalid_image_with_reason(&d.post(DETECT, &form.body()), "MAX_UPLOAD_BYTES");
    let res = d.post(
        RECOGNIZE,
        &image_form("huge_header.png", &[("api_key", "k")]),
    );
    assert_invalid_image_with_reason(&res, "MAX_PIXELS");

    let form = Multipart::new()
        .file("image", &photo("obama.jpg"))
        .file("image", &photo("obama.bmp"))
        .texts(&[("api_key", "k"), ("userid", "x")]);
    assert_invalid_image_with_reason(&d.post(REGISTER, &form.body()), "MAX_UPLOAD_BYTES");
    assert_eq!(samples(&d), 0);

    let body = ok_json(d.post(DETECT, &image_form("obama.jpg", &[("api_key", "k")])));
    assert_eq!(body["predictions"].as_array().unwrap().len(), 1);
}

#[test]
fn a_request_past_timeout_gets_deepstacks_timeout_error() {
    // One worker and a 1 ms deadline: decoding a 12 MP photo alone takes far longer.
    let d = Server::start(&[FACES_ON, ("TIMEOUT", "0.001"), ("THREADCOUNT", "1")]);
    for route in [DETECT, RECOGNIZE] {
        let res = d.post(route, &image_form("obama_12mp.jpg", &[]));
        assert_error(&res, 500, "failed to process request before timeout");
    }
    // Routes without inference are not affected, and the server goes on.
    assert_eq!(list(&d), json!([]));
    assert_eq!(d.status()["threadcount"], json!(1));
}

#[test]
fn bad_configuration_stops_with_exit_code_2_naming_the_variable() {
    let run = |args: &[&str], env: &[(&str, &str)]| {
        let out = Command::new(env!("CARGO_BIN_EXE_deepstackd"))
            .args(args)
            .envs(env.iter().copied())
            .output()
            .expect("run deepstackd");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    for (var, value) in [
        ("PORT", "http"),
        ("THREADCOUNT", "0"),
        ("TIMEOUT", "-1"),
        ("MODE", "Turbo"),
    ] {
        let (code, _, err) = run(&[], &[(var, value)]);
        assert_eq!(code, Some(2), "{var}={value}: {err}");
        assert!(err.contains(var), "{var}: {err}");
    }
    let (code, _, err) = run(&["--no-such-flag"], &[]);
    assert_eq!(code, Some(2), "{err}");

    let (code, out, _) = run(&["--help"], &[]);
    assert_eq!(code, Some(0));
    for name in [
        "--vision-face",
        "VISION-FACE",
        "API-KEY",
        "THREADCOUNT",
        "DATA_DIR",
    ] {
        assert!(out.contains(name), "{name} missing from --help");
    }
    let (code, out, _) = run(&["--version"], &[]);
    assert_eq!(code, Some(0));
    assert_eq!(
        out.trim(),
        format!("deepstackd {}", env!("CARGO_PKG_VERSION"))
    );
}

/// `<workspace>/target/client-pylib`: deepstack-python 0.9 and its pinned dependencies.
fn client_pylib() -> PathBuf {
    common::pip_install(
        "daemon/tests/client/requirements.txt",
        "client-pylib",
        &["--no-deps", "--no-compile"],
    )
}

#[test]
fn deepstack_python_drives_the_daemon() {
    let pylib = client_pylib();
    common::testdata(); // the photos, and the pinned Pillow that deepstack.core imports
    let d = Server::start(&[FACES_ON, ("API-KEY", "py-secret")]);
    let script = common::workspace().join("daemon/tests/client/deepstack_python_check.py");
    let pythonpath = std::env::join_paths([pylib, common::pylib()]).unwrap();
    let out = Command::new("python3")
        .arg(&script)
        .arg(d.port().to_string())
        .arg("py-secret")
        .arg(common::testdata())
        .env("PYTHONPATH", pythonpath)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .expect("run python3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{} failed:\n{stdout}\n{}",
        script.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("deepstack-python 0.9: all checks passed"),
        "{stdout}"
    );
}

/// The stage times of a request's log line (`queue=0.04ms decode=...`), by name.
fn stage_times(line: &str) -> Vec<(String, f64)> {
    line.split_whitespace()
        .filter_map(|word| word.split_once('='))
        .filter(|(name, _)| ["queue", "decode", "detect", "embed"].contains(name))
        .map(|(name, ms)| {
            let ms = ms.strip_suffix("ms").and_then(|v| v.parse().ok());
            (name.to_owned(), ms.unwrap_or_else(|| panic!("{line}")))
        })
        .collect()
}

#[test]
fn the_request_log_says_where_the_time_went() {
    let d = Server::start(&[FACES_ON]);
    register(&d, "Barack Obama", &["obama.jpg"]);
    assert_eq!(recognize(&d, "obama2.jpg", &[]).len(), 1);
    let log = d.log_text();
    let line = log
        .lines()
        .find(|l| l.contains("POST /v1/vision/face/recognize 200 faces=1"))
        .unwrap_or_else(|| panic!("no recognize line in\n{log}"));
    let times = stage_times(line);
    let names: Vec<&str> = times.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["queue", "decode", "detect", "embed"], "{line}");
    // A real photo is decoded, searched and its face embedded: none of it takes no time.
    for (name, ms) in &times[1..] {
        assert!(*ms > 0.0, "{name} in {line}");
    }
    // The stages are parts of the request, whose total is the line's whole milliseconds.
    let total: u64 = line
        .split_whitespace()
        .find_map(|w| {
            w.strip_suffix("ms")
                .filter(|v| !v.contains('='))?
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("{line}"));
    let stages: f64 = times.iter().map(|(_, ms)| ms).sum();
    assert!(
        stages < total as f64 + 1.0,
        "{stages} ms of stages in {line}"
    );
    // A route that runs no job has no stage times; an answer without faces has them all.
    d.post(LIST, &urlencoded(&[]));
    assert_eq!(recognize(&d, "rocket.jpg", &[]).len(), 0);
    let log = d.log_text();
    let list = log
        .lines()
        .find(|l| l.contains("POST /v1/vision/face/list 200"));
    assert_eq!(stage_times(list.expect("a list line")), []);
    let empty = log
        .lines()
        .find(|l| l.contains("POST /v1/vision/face/recognize 200 faces=0"))
        .expect("the empty frame's line");
    assert_eq!(stage_times(empty).len(), 4, "{empty}");
    assert_eq!(
        stage_times(empty)[3].1,
        0.0,
        "no face, no embedding: {empty}"
    );
}
